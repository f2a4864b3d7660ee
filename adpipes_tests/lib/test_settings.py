import pytest

from adpipes.lib.settings import PROD_REQUIRED_VARIABLES, ConfigurationError, load_settings


def test_dev_defaults():
    settings = load_settings({})
    assert settings.env == "dev"
    assert settings.timezone == "Asia/Seoul"
    assert settings.product_retention_days == 90
    assert settings.data_dir.name == ".adpipes"


def test_prod_lists_every_missing_variable_in_one_message():
    with pytest.raises(ConfigurationError) as err:
        load_settings({"ADPIPES_ENV": "prod", "APPSFLYER_API_TOKEN": "x"})
    message = str(err.value)
    for name in PROD_REQUIRED_VARIABLES:
        if name != "APPSFLYER_API_TOKEN":
            assert name in message
    assert "APPSFLYER_API_TOKEN," not in message and not message.rstrip().endswith("APPSFLYER_API_TOKEN")


def test_prod_complete_is_accepted_and_secrets_are_not_kept_as_values():
    environ = {name: "secret-value" for name in PROD_REQUIRED_VARIABLES}
    settings = load_settings({**environ, "ADPIPES_ENV": "prod"})
    assert settings.env == "prod"
    assert "secret-value" not in repr(settings.timezone)


@pytest.mark.parametrize(
    "environ, fragment",
    [
        ({"ADPIPES_TIMEZONE": "+09:00"}, "IANA"),
        ({"ADPIPES_START_DATE": "2026/01/01"}, "ADPIPES_START_DATE"),
        ({"ADPIPES_PRODUCT_RETENTION_DAYS": "-3"}, "ADPIPES_PRODUCT_RETENTION_DAYS"),
        ({"ADPIPES_ENV": "staging"}, "ADPIPES_ENV"),
    ],
)
def test_invalid_values_are_named(environ, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        load_settings(environ)
