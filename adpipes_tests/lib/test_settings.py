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
    environ.update(APPSFLYER_APP_CURRENCY="KRW", AIRBRIDGE_CURRENCY="KRW")
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
        ({"APPSFLYER_DAILY_QUOTAS": "installs=48"}, "APPSFLYER_DAILY_QUOTAS item 'installs=48'"),
        ({"APPSFLYER_DAILY_QUOTAS": "installs_report=0"}, "calls a day per app"),
        ({"ADPIPES_SCHEDULE_TIME": "6"}, "ADPIPES_SCHEDULE_TIME='6' must be a time HH:MM"),
        ({"ADPIPES_SCHEDULE_TIME": "24:00"}, "ADPIPES_SCHEDULE_TIME"),
        ({"ADPIPES_SCHEDULE_HOUR": "5"}, "ADPIPES_SCHEDULE_HOUR was renamed: set ADPIPES_SCHEDULE_TIME=HH:MM instead \\(e.g. '05:00'\\)"),
    ],
)
def test_invalid_values_are_named(environ, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        load_settings(environ)


def test_plan_quotas_reach_the_appsflyer_client():
    from adpipes.definitions import build_resources

    settings = load_settings({"APPSFLYER_DAILY_QUOTAS": "installs_report=48, in_app_events_report=24"})
    resources = build_resources(settings)
    assert resources["appsflyer_raw_data_api"].daily_quotas == {"installs_report": 48, "in_app_events_report": 24}
    assert resources["appsflyer_aggregate_api"].daily_quotas == {"daily_report": 24}
    defaults = build_resources(load_settings({"APPSFLYER_DAILY_QUOTAS": "daily_report=30"}))
    assert defaults["appsflyer_raw_data_api"].daily_quotas == {"installs_report": 24, "in_app_events_report": 12}
    assert defaults["appsflyer_aggregate_api"].daily_quotas == {"daily_report": 30}


def test_schedule_time_is_hour_and_minute():
    assert load_settings({}).schedule_time == (6, 0)
    assert load_settings({"ADPIPES_SCHEDULE_TIME": "05:30"}).schedule_time == (5, 30)
