import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from adpipes.lib.settings import PROD_REQUIRED_VARIABLES, ConfigurationError, load_settings
from adpipes_tests.fixtures.environ import prod_environ


def test_dev_defaults():
    settings = load_settings({})
    assert settings.env == "dev"
    assert settings.timezone == "Asia/Seoul"
    assert settings.product_retention_days == 90
    assert settings.data_dir.name == ".adpipes"


def test_dev_partitions_start_three_weeks_before_today_in_the_app_timezone():
    # Issue 14: in dev the UI opens on a few weeks of partitions, most of them seeded, not on every
    # day since 2026-01-01. Seoul and Los Angeles are on different dates for 17 hours a day.
    for timezone in ("Asia/Seoul", "America/Los_Angeles"):
        before = dt.datetime.now(ZoneInfo(timezone)).date()
        settings = load_settings({"ADPIPES_TIMEZONE": timezone})
        after = dt.datetime.now(ZoneInfo(timezone)).date()
        # Three weeks (21 days) before today, read twice in case the test straddles midnight.
        assert settings.start_date in {(day - dt.timedelta(days=21)).isoformat() for day in (before, after)}
        # The UI shows 21 daily partitions (the last one is yesterday's, the last complete day).
        days = dg.DailyPartitionsDefinition(start_date=settings.start_date, timezone=timezone)
        assert len(days.get_partition_keys()) == 21 or before != after
    # A start date that is set wins in dev too, and production keeps its fixed default.
    assert load_settings({"ADPIPES_START_DATE": "2026-03-01"}).start_date == "2026-03-01"
    assert load_settings(prod_environ()).start_date == "2026-01-01"


def test_prod_lists_every_missing_variable_in_one_message():
    with pytest.raises(ConfigurationError) as err:
        load_settings({"ADPIPES_ENV": "prod", "APPSFLYER_API_TOKEN": "x"})
    message = str(err.value)
    for name in PROD_REQUIRED_VARIABLES:
        if name != "APPSFLYER_API_TOKEN":
            assert name in message
    assert "APPSFLYER_API_TOKEN," not in message and not message.rstrip().endswith("APPSFLYER_API_TOKEN")


def test_prod_environ_covers_every_required_variable():
    assert set(PROD_REQUIRED_VARIABLES) <= set(prod_environ())


# A distinct canary per secret variable, so a leak of any one of them is seen.
CANARIES = {
    "APPSFLYER_API_TOKEN": "canary-appsflyer-token-5f1c",
    "AIRBRIDGE_API_TOKEN": "canary-airbridge-token-9b2e",
    "ADPIPES_PRODUCT_DSN": "postgresql://adpipes:canary-product-pw-77a1@product-db:5432/product",
    "ADPIPES_ARCHIVE_DSN": "postgresql://adpipes:canary-archive-pw-3c4d@archive-db:5432/archive",
}
CANARY_FRAGMENTS = ("canary-appsflyer-token-5f1c", "canary-airbridge-token-9b2e", "canary-product-pw-77a1",
                    "canary-archive-pw-3c4d")


def leaked(text: str) -> list[str]:
    return [fragment for fragment in CANARY_FRAGMENTS if fragment in text]


def test_prod_complete_is_accepted_and_no_resource_or_snapshot_holds_a_secret_value(monkeypatch):
    """The module docstring's promise: secrets reach the resources through dagster.EnvVar, so their
    values are in no resource and in nothing Dagster stores about the code location (the
    repository snapshot the daemon and the webserver read), even with every variable set."""
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._serdes import serialize_value

    from adpipes.definitions import build_definitions, build_resources

    environ = prod_environ(**CANARIES)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(environ)
    assert settings.env == "prod"
    for name, resource in build_resources(settings).items():
        assert leaked(repr(resource)) == [] and leaked(str(resource)) == [], name
    snapshot = serialize_value(RepositorySnap.from_def(build_definitions(settings).get_repository_def()))
    assert leaked(snapshot) == []
    # The resources name the variables instead.
    assert all(name in snapshot for name in CANARIES)


@pytest.mark.parametrize("problem", [
    {"ADPIPES_TIMEZONE": "+09:00"},
    {"APPSFLYER_DAILY_QUOTAS": "installs=48"},
    {"AIRBRIDGE_APP_NAME": "../admin"},
    {"APPSFLYER_API_TOKEN": ""},  # a missing one among the set ones
])
def test_configuration_errors_never_echo_a_secret_value(problem):
    with pytest.raises(ConfigurationError) as caught:
        load_settings(prod_environ(**CANARIES) | problem)
    assert leaked(str(caught.value)) == [] and leaked(repr(caught.value)) == []


def test_the_settings_object_shows_no_secret_value():
    settings = load_settings(prod_environ(**CANARIES))
    assert leaked(repr(settings)) == [] and leaked(str(settings)) == []


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
        ({"APPSFLYER_CURRENCY": "KRW"}, "APPSFLYER_CURRENCY='KRW' must be 'preferred'"),
        ({"APPSFLYER_APP_CURRENCY": "won"}, "APPSFLYER_APP_CURRENCY='won' must be an ISO 4217"),
        ({"AIRBRIDGE_CURRENCY": "krw"}, "AIRBRIDGE_CURRENCY='krw' must be an ISO 4217"),
        ({"APPSFLYER_COHORT_KPIS": "revenue,ecpi"}, "APPSFLYER_COHORT_KPIS items \\['ecpi'\\]"),
        ({"APPSFLYER_COHORT_KPIS": "roas,ROAS"}, "the same documented KPI spelled twice"),
        ({"APPSFLYER_COHORT_TYPES": "organic"}, "APPSFLYER_COHORT_TYPES items \\['organic'\\]"),
        ({"APPSFLYER_COHORT_MIN_SIZE": "0"}, "APPSFLYER_COHORT_MIN_SIZE='0' must be a whole number of users >= 1"),
        ({"AIRBRIDGE_GROUP_BY": "channel,channel"}, "AIRBRIDGE_GROUP_BY names \\['channel'\\] more than once"),
        ({"AIRBRIDGE_GROUP_BY": "Channel"}, "AIRBRIDGE_GROUP_BY items \\['Channel'\\]"),
        ({"AIRBRIDGE_TOTAL_COUNT_MISMATCH": "ignore"}, "AIRBRIDGE_TOTAL_COUNT_MISMATCH='ignore' must be 'fail'"),
        ({"ADPIPES_START_DATE": "2999-01-01"}, "ADPIPES_START_DATE='2999-01-01' is in the future"),
        ({"ADPIPES_MAX_ROW_DROP": "1.5"}, "ADPIPES_MAX_ROW_DROP='1.5' must be a share between 0 and 1"),
        ({"APPSFLYER_IOS_APP_ID": "123456789"}, "APPSFLYER_IOS_APP_ID='123456789' must be 'id' followed by"),
        ({"APPSFLYER_ANDROID_APP_ID": "com.example/x"}, "must be an Android package name"),
        ({"AIRBRIDGE_APP_NAME": "../admin"}, "AIRBRIDGE_APP_NAME='../admin' must be the app name"),
        ({"ADPIPES_ARCHIVE_DSN": "postgresql://u:Pass@word@h/archive"},
         "ADPIPES_ARCHIVE_DSN is not a valid PostgreSQL DSN: its user name or password holds an unencoded @"),
    ],
)
def test_invalid_values_are_named(environ, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        load_settings(environ)


def test_plan_quotas_reach_the_appsflyer_client():
    from adpipes.definitions import build_resources

    settings = load_settings({"APPSFLYER_DAILY_QUOTAS": "installs_report=48, in_app_events_report=24"})
    resources = build_resources(settings)
    quotas = resources["appsflyer_raw_data_api"].daily_quotas
    assert quotas["installs_report"] == 48 and quotas["in_app_events_report"] == 24
    # Reports the plan does not name keep the usual plan's quotas (installs-like 24, events 12).
    assert quotas["installs-retarget"] == 24 and quotas["organic_in_app_events_report"] == 12
    assert resources["appsflyer_aggregate_api"].daily_quotas == {"daily_report": 24}
    defaults = build_resources(load_settings({"APPSFLYER_DAILY_QUOTAS": "daily_report=30"}))
    assert defaults["appsflyer_raw_data_api"].daily_quotas["installs_report"] == 24
    assert defaults["appsflyer_raw_data_api"].daily_quotas["in_app_events_report"] == 12
    assert defaults["appsflyer_aggregate_api"].daily_quotas == {"daily_report": 30}


def test_schedule_time_is_hour_and_minute():
    assert load_settings({}).schedule_time == (6, 0)
    assert load_settings({"ADPIPES_SCHEDULE_TIME": "05:30"}).schedule_time == (5, 30)


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("APPSFLYER_COHORT_KPI", "APPSFLYER_COHORT_KPI is not an adpipes setting \\(did you mean APPSFLYER_COHORT_KPIS\\?\\)"),
        ("AIRBRIDGE_GROUPBY", "did you mean AIRBRIDGE_GROUP_BY\\?"),
        ("ADPIPES_TIMEZONES", "did you mean ADPIPES_TIMEZONE\\?"),
        ("ADPIPES_WHATEVER", "ADPIPES_WHATEVER is not an adpipes setting \\(see the configuration table"),
    ],
)
def test_a_misspelled_or_unknown_setting_fails_the_load_naming_it(name, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        load_settings({name: "x"})


def test_event_names_differing_in_case_are_two_kpis():
    # AppsFlyer matches event names case-sensitively; only documented KPIs are case-insensitive.
    assert load_settings({"APPSFLYER_COHORT_KPIS": "Purchase,purchase"}).cohort_kpis == ("Purchase", "purchase")


def test_the_cohort_settings_reach_the_cohort_client_and_the_currencies_their_resources():
    from adpipes.definitions import build_resources

    environ = {"APPSFLYER_COHORT_KPIS": "revenue,ROAS,Checkout Start", "APPSFLYER_COHORT_TYPES": "retargeting,unified",
               "APPSFLYER_COHORT_MIN_SIZE": "25", "APPSFLYER_CURRENCY": "preferred",
               "AIRBRIDGE_GROUP_BY": "channel,ad_group"}
    resources = build_resources(load_settings(environ))
    cohort = resources["appsflyer_cohort_api"]
    assert list(cohort.kpis) == ["revenue", "ROAS", "Checkout Start"]
    assert list(cohort.cohort_types) == ["retargeting", "unified"]
    assert cohort.min_cohort_size == 25 and cohort.preferred_currency is True
    assert resources["appsflyer_raw_data_api"].currency == "preferred"
    assert resources["appsflyer_apps"].currency == "KRW"  # the sandbox's apps in dev
    airbridge = resources["airbridge_api"]
    assert list(airbridge.group_by) == ["channel", "ad_group"] and airbridge.currency == "KRW"
    usd = build_resources(load_settings({}))
    assert usd["appsflyer_cohort_api"].preferred_currency is False and usd["appsflyer_raw_data_api"].currency == "USD"


def test_in_prod_each_currency_reaches_its_own_resource():
    from adpipes.definitions import build_resources

    prod = prod_environ(APPSFLYER_APP_CURRENCY="JPY", AIRBRIDGE_CURRENCY="EUR", AIRBRIDGE_TOTAL_COUNT_MISMATCH="warn")
    resources = build_resources(load_settings(prod))
    assert resources["appsflyer_apps"].currency == "JPY"
    assert resources["airbridge_api"].currency == "EUR"
    assert resources["airbridge_api"].total_count_mismatch == "warn"
    assert load_settings({}).airbridge_total_count_mismatch == "fail"


def test_variables_of_other_tools_are_ignored():
    assert load_settings({"DAGSTER_HOME": "/x", "PGPASSWORD": "y", "APPSFLYERISH": "z"}).env == "dev"


def test_currencies_and_query_settings():
    prod = prod_environ() | {
        "APPSFLYER_APP_CURRENCY": "JPY", "AIRBRIDGE_CURRENCY": "EUR",
        "APPSFLYER_CURRENCY": "preferred", "APPSFLYER_COHORT_KPIS": "revenue, roas,Checkout Start",
        "APPSFLYER_COHORT_TYPES": "user_acquisition,retargeting", "APPSFLYER_COHORT_MIN_SIZE": "50",
        "AIRBRIDGE_GROUP_BY": "channel,campaign,ad_group",
    }
    settings = load_settings(prod)
    assert (settings.appsflyer_app_currency, settings.airbridge_currency, settings.appsflyer_currency) == (
        "JPY", "EUR", "preferred")
    # Event names are case-sensitive for AppsFlyer: kept as written, spaces inside included.
    assert settings.cohort_kpis == ("revenue", "roas", "Checkout Start")
    assert settings.cohort_types == ("user_acquisition", "retargeting") and settings.cohort_min_size == 50
    assert settings.airbridge_group_by == ("channel", "campaign", "ad_group")
    # Dev talks to the sandbox, whose apps are in its own currency, whatever is set.
    dev = load_settings({"APPSFLYER_APP_CURRENCY": "JPY", "AIRBRIDGE_CURRENCY": "EUR"})
    assert dev.appsflyer_app_currency == dev.airbridge_currency == "KRW"
    defaults = load_settings({})
    assert (defaults.appsflyer_currency, defaults.cohort_kpis, defaults.cohort_types, defaults.cohort_min_size,
            defaults.airbridge_group_by) == ("USD", ("revenue",), ("user_acquisition",), 1, ("channel", "campaign"))


def test_a_bad_dsn_is_refused_at_load_without_echoing_it():
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"ADPIPES_PRODUCT_DSN": "postgresql://adpipes:LeakCanary99@x@127.0.0.1/product"})
    assert "percent-encode" in str(caught.value) and "LeakCanary99" not in str(caught.value)


def test_several_apps_per_platform_and_raw_reports_are_read_in_prod():
    environ = {
        "ADPIPES_ENV": "prod", "ADPIPES_PRODUCT_DSN": "postgresql://u@h/p", "ADPIPES_ARCHIVE_DSN": "postgresql://u@h/a",
        "APPSFLYER_API_TOKEN": "t", "AIRBRIDGE_API_TOKEN": "t", "APPSFLYER_APP_CURRENCY": "KRW",
        "AIRBRIDGE_CURRENCY": "KRW",
        "APPSFLYER_ANDROID_APP_ID": "com.example.one, com.example.two",
        "APPSFLYER_IOS_APP_ID": "id123",
        "AIRBRIDGE_APP_NAME": "one,two",
        "APPSFLYER_RAW_REPORTS": "installs-retarget,installs_report",
        "APPSFLYER_RESERVED_CALLS": "3",
        "APPSFLYER_LATE_EVENTS_MARGIN_MINUTES": "30",
    }
    settings = load_settings(environ)
    assert settings.android_app_ids == ("com.example.one", "com.example.two")
    assert settings.ios_app_ids == ("id123",)
    assert settings.airbridge_app_names == ("one", "two")
    # The registry's order, not the listing's.
    assert settings.appsflyer_raw_reports == ("installs_report", "installs-retarget")
    assert settings.appsflyer_reserved_calls == 3
    assert settings.late_events_margin_minutes == 30


@pytest.mark.parametrize(
    "environ, fragment",
    [
        ({"APPSFLYER_ANDROID_APP_ID": "com.example.one,com.example.one"}, "names ['com.example.one'] more than once"),
        ({"APPSFLYER_ANDROID_APP_ID": "com.example.one,bad id"}, "APPSFLYER_ANDROID_APP_ID='bad id' must be"),
        ({"APPSFLYER_RAW_REPORTS": "installs_report,organic_installs"}, "APPSFLYER_RAW_REPORTS items ['organic_installs']"),
        ({"APPSFLYER_RESERVED_CALLS": "-1"}, "APPSFLYER_RESERVED_CALLS='-1' must be a whole number"),
        ({"APPSFLYER_RESERVED_CALLS": "12", "APPSFLYER_DAILY_QUOTAS": "installs_report=12"},
         "leaves no call to backfills of installs_report (12 a day)"),
        # The usual plan's quotas count too: in-app events reports have 12 calls a day.
        ({"APPSFLYER_RESERVED_CALLS": "20"}, "in_app_events_report (12 a day)"),
        ({"APPSFLYER_LATE_EVENTS_MARGIN_MINUTES": "soon"}, "APPSFLYER_LATE_EVENTS_MARGIN_MINUTES='soon' must be"),
        ({"APPSFLYER_DAILY_QUOTAS": "installs-retarget=48,organic_in_app_events_report=6"}, None),
    ],
)
def test_issue13_settings_are_checked(environ, fragment):
    if fragment is None:
        settings = load_settings(environ)
        assert settings.appsflyer_daily_quotas == {"installs-retarget": 48, "organic_in_app_events_report": 6}
        return
    with pytest.raises(ConfigurationError) as excinfo:
        load_settings(environ)
    assert fragment in str(excinfo.value)
