"""Settings read from the environment (see the configuration table in docs/configuration.md).

Only non-secret values are read here, at definition load time: the environment mode, the app
timezone, the first partition date, the retention and the data directory. Secrets (tokens, DSNs)
are never read here: resources receive them through ``dagster.EnvVar`` so that their values do not
land in config snapshots, logs or run config. This module only checks that they are *present*.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adpipes.lib.storage.dsn import dsn_problem

# The vendors' enums are facts of their clients; settings only check values against them.
from adpipes.appsflyer.cohort_api import ALWAYS_RETURNED, COHORT_TYPES, documented_kpi
from adpipes.appsflyer.raw_data_api import CURRENCIES as APPSFLYER_CURRENCIES
from adpipes.appsflyer.raw_data_api import RAW_REPORTS as APPSFLYER_RAW_REPORTS
from adpipes.appsflyer.raw_data_api import DEFAULT_DAILY_QUOTAS as RAW_DEFAULT_QUOTAS
from adpipes.appsflyer.aggregate_api import DEFAULT_DAILY_QUOTAS as AGGREGATE_DEFAULT_QUOTAS

DEV = "dev"
PROD = "prod"

DEFAULT_TIMEZONE = "Asia/Seoul"
# The first daily partition. Raw reports are only served for the last 90 days, so older
# partitions of raw assets can only come from the archive; aggregate reports have no limit.
DEFAULT_START_DATE = "2026-01-01"
# In dev mode (sandbox data, nothing to keep) the first partition is this many days before today
# in the app timezone when ADPIPES_START_DATE is unset: the dev seed fills the last 14, so the UI
# opens two-thirds filled instead of showing hundreds of empty days since DEFAULT_START_DATE.
DEV_START_DAYS_BEFORE_TODAY = 21
DEFAULT_PRODUCT_RETENTION_DAYS = 90
# Quality policy: no quarantined row is tolerated silently; row counts may halve or double.
DEFAULT_MAX_QUARANTINED_SHARE = 0.0
DEFAULT_VOLUME_BAND_FACTOR = 2.0
# The archive is never made worse: a raw delivery with fewer rows than the archived version of the
# day is refused unless the drop is within this share (0: any drop is refused).
DEFAULT_MAX_ROW_DROP = 0.0
DEFAULT_SCHEDULE_TIME = "06:00"
# AppsFlyer accepts S2S events for day D until 02:00 UTC on D+1 (appsflyer-s2s-events-api.ko.txt);
# raw reports are pulled again this many minutes after that, when nothing can arrive any more.
DEFAULT_LATE_EVENTS_MARGIN_MINUTES = 60
# Calls a day per app and Pull API report that backfills may not use: the scheduled runs' share
# (the daily pull and the late-events re-pull take one each, and a retry of each counts too).
DEFAULT_RESERVED_CALLS = 4
DEFAULT_APPSFLYER_BASE_URL = "https://hq1.appsflyer.com"
DEFAULT_AIRBRIDGE_BASE_URL = "https://api.airbridge.io"

# App ids the dev sandbox serves when none are configured.
SANDBOX_ANDROID_APP_ID = "com.adpipes.sandbox"
SANDBOX_IOS_APP_ID = "id1000000001"
# Airbridge app name (the unique id in Airbridge URLs) the dev sandbox serves.
SANDBOX_AIRBRIDGE_APP_NAME = "adpipes-sandbox"
# The currency set on the sandbox's apps (AppsFlyer and Airbridge): what their aggregate figures
# are in. Dev always uses these, like the sandbox's app ids.
SANDBOX_APP_CURRENCY = "KRW"

# APPSFLYER_CURRENCY is the Pull API's `currency` parameter of raw reports (`preferred`: the currency
# set on the app in AppsFlyer; `USD`). The Cohort API's `preferred_currency` follows the same
# setting (true for `preferred`, false = USD). Aggregate reports (daily_report) are always in the
# app's currency, whatever is asked (AppsFlyer's raw data OpenAPI file, parameter `currency`).
DEFAULT_APPSFLYER_CURRENCY = "USD"
# Cohort API defaults: the KPIs pulled (one call each), the cohort type, the smallest cohort.
DEFAULT_COHORT_KPIS = ("revenue",)
DEFAULT_COHORT_TYPES = ("user_acquisition",)
DEFAULT_COHORT_MIN_SIZE = 1
# Airbridge revenue report group-bys (groupBy.fields): the two a marketer asks for first.
DEFAULT_AIRBRIDGE_GROUP_BY = ("channel", "campaign")
# An ISO 4217 currency code (KRW, USD, ...).
ISO_CURRENCY = re.compile(r"[A-Z]{3}")
# Airbridge group-by keys are lowercase identifiers (channel, campaign, ad_group, ...), which the
# revenue table turns into column names.
_GROUP_BY_KEY = re.compile(r"[a-z][a-z0-9_]{0,62}")

# Variables that must be set when ADPIPES_ENV=prod (issue 2 covers AppsFlyer; Airbridge
# variables join this list with the Airbridge assets).
PROD_REQUIRED_VARIABLES = (
    "ADPIPES_PRODUCT_DSN",
    "ADPIPES_ARCHIVE_DSN",
    "APPSFLYER_API_TOKEN",
    "APPSFLYER_ANDROID_APP_ID",
    "APPSFLYER_IOS_APP_ID",
    "AIRBRIDGE_API_TOKEN",
    "AIRBRIDGE_APP_NAME",
    # What the money columns are in: never assumed (a KRW figure read as USD is off 1000x).
    "APPSFLYER_APP_CURRENCY",
    "AIRBRIDGE_CURRENCY",
)

# Every variable adpipes reads (docs/configuration.md's table, plus the test and benchmark
# databases and the dev helpers). A variable with one of adpipes' prefixes that is not here is a
# typo or a setting of an older version: it fails the load instead of being silently ignored.
KNOWN_VARIABLES = frozenset({
    "ADPIPES_ENV", "ADPIPES_PRODUCT_DSN", "ADPIPES_ARCHIVE_DSN", "ADPIPES_TIMEZONE",
    "ADPIPES_START_DATE", "ADPIPES_PRODUCT_RETENTION_DAYS", "ADPIPES_PRODUCT_RETENTION_OVERRIDES",
    "ADPIPES_SCHEDULE_TIME", "ADPIPES_DATA_DIR", "ADPIPES_MAX_QUARANTINED_SHARE",
    "ADPIPES_VOLUME_BAND_FACTOR", "ADPIPES_MAX_ROW_DROP", "ADPIPES_PG_BINDIR", "ADPIPES_SEED_DAYS",
    "ADPIPES_DAGSTER_PG_HOST", "ADPIPES_DAGSTER_PG_PORT", "ADPIPES_DAGSTER_PG_USER",
    "ADPIPES_DAGSTER_PG_PASSWORD", "ADPIPES_DAGSTER_PG_DB",
    "ADPIPES_TEST_PRODUCT_DSN", "ADPIPES_TEST_ARCHIVE_DSN",
    "ADPIPES_BENCH_PRODUCT_DSN", "ADPIPES_BENCH_ARCHIVE_DSN",
    "APPSFLYER_API_TOKEN", "APPSFLYER_ANDROID_APP_ID", "APPSFLYER_IOS_APP_ID", "APPSFLYER_BASE_URL",
    "APPSFLYER_DAILY_QUOTAS", "APPSFLYER_CURRENCY", "APPSFLYER_APP_CURRENCY",
    "APPSFLYER_COHORT_KPIS", "APPSFLYER_COHORT_TYPES", "APPSFLYER_COHORT_MIN_SIZE",
    "APPSFLYER_RAW_REPORTS", "APPSFLYER_RESERVED_CALLS", "APPSFLYER_LATE_EVENTS_MARGIN_MINUTES",
    "AIRBRIDGE_API_TOKEN", "AIRBRIDGE_APP_NAME", "AIRBRIDGE_BASE_URL", "AIRBRIDGE_GROUP_BY",
    "AIRBRIDGE_CURRENCY", "AIRBRIDGE_TOTAL_COUNT_MISMATCH",
})
VARIABLE_PREFIXES = ("ADPIPES_", "APPSFLYER_", "AIRBRIDGE_")
# Settings of earlier versions: what to set instead.
RETIRED_VARIABLES = {
    "ADPIPES_SCHEDULE_HOUR": "was renamed: set ADPIPES_SCHEDULE_TIME=HH:MM instead (e.g. '{hh}:00') "
    "and unset ADPIPES_SCHEDULE_HOUR",
}


# The AppsFlyer reports with a daily call quota per app (the Pull API's raw reports, and the
# aggregate daily_report for ranges of 3+ days).
APPSFLYER_QUOTA_REPORTS = (*APPSFLYER_RAW_REPORTS, "daily_report")


class ConfigurationError(Exception):
    """A user-fixable configuration problem; the message says what to set."""


@dataclass(frozen=True)
class Settings:
    env: str
    timezone: str
    start_date: str
    product_retention_days: int
    data_dir: Path
    max_quarantined_share: float
    volume_band_factor: float
    retention_overrides: dict[str, int]
    # Daily call quotas per app of the AppsFlyer plan, by report (only those that differ from the
    # usual plan's).
    appsflyer_daily_quotas: dict[str, int]
    # (hour, minute) of the daily schedule's tick in the app timezone.
    schedule_time: tuple[int, int]
    # The environment, read only for which variables are set (is_set): never shown, since it
    # holds the tokens and DSNs a repr in a log or traceback would print.
    environ: Mapping[str, str] = field(repr=False)
    # AppsFlyer `currency` asked for (preferred or USD) and the ISO code of the app's own currency.
    appsflyer_currency: str = DEFAULT_APPSFLYER_CURRENCY
    appsflyer_app_currency: str = SANDBOX_APP_CURRENCY
    # Cohort API: the KPIs every cohort_ltv run pulls (as the user spelled them: event names are
    # case-sensitive), the cohort types that coexist in the table, the smallest cohort returned.
    cohort_kpis: tuple[str, ...] = DEFAULT_COHORT_KPIS
    cohort_types: tuple[str, ...] = DEFAULT_COHORT_TYPES
    cohort_min_size: int = DEFAULT_COHORT_MIN_SIZE
    # Airbridge revenue report: groupBy.fields, and the ISO code of the app's currency.
    airbridge_group_by: tuple[str, ...] = DEFAULT_AIRBRIDGE_GROUP_BY
    airbridge_currency: str = SANDBOX_APP_CURRENCY
    # What a revenue report whose data.metadata.totalCount matches neither count of the rows
    # received does: fail (default) or warn (the document does not say what totalCount counts).
    airbridge_total_count_mismatch: str = "fail"
    # Share (0-1) by which a raw delivery may have fewer rows than the archived day it replaces.
    max_row_drop: float = DEFAULT_MAX_ROW_DROP
    # The apps (several per platform may be listed; each is called, metered and stored on its own).
    # In dev these are the sandbox's; in prod they are only checked here, and the resources read
    # the variables through EnvVar.
    android_app_ids: tuple[str, ...] = (SANDBOX_ANDROID_APP_ID,)
    ios_app_ids: tuple[str, ...] = (SANDBOX_IOS_APP_ID,)
    airbridge_app_names: tuple[str, ...] = (SANDBOX_AIRBRIDGE_APP_NAME,)
    # The Pull API raw reports pulled (AppsFlyer's report names), in the registry's order.
    appsflyer_raw_reports: tuple[str, ...] = tuple(APPSFLYER_RAW_REPORTS)
    # Calls a day per app and Pull API report kept for the scheduled runs (backfills may not use them).
    appsflyer_reserved_calls: int = DEFAULT_RESERVED_CALLS
    # Minutes after 02:00 UTC on D+1 (the end of AppsFlyer's late-arrival window) when day D's raw
    # reports are pulled again, and final.
    late_events_margin_minutes: int = DEFAULT_LATE_EVENTS_MARGIN_MINUTES

    @property
    def is_dev(self) -> bool:
        return self.env == DEV

    def is_set(self, name: str) -> bool:
        """True when an environment variable is present and non-empty (its value is not read)."""
        return bool(self.environ.get(name, "").strip())


def _project_root() -> Path | None:
    """The source checkout holding this package, if adpipes runs from one."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").exists() else None


def default_data_dir() -> Path:
    root = _project_root()
    if root is not None:
        return root / ".adpipes"
    return Path.home() / ".local" / "share" / "adpipes"


def _positive_counts(environ: Mapping[str, str], variable: str, problems: list[str],
                     valid_name: Callable[[str], bool], form: str) -> dict[str, int]:
    """``name=count,name=count`` with positive whole counts; each bad item is a problem."""
    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in environ.get(variable, "").split(","))):
        name, _, count = (part.strip() for part in item.partition("="))
        try:
            counts[name] = int(count)
            if counts[name] < 1 or not valid_name(name):
                raise ValueError
        except ValueError:
            problems.append(f"{variable} item {item!r} must be {form}")
    return counts


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate settings; raise one ConfigurationError listing every problem."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []

    env = environ.get("ADPIPES_ENV", DEV).strip().lower() or DEV
    if env not in (DEV, PROD):
        problems.append(f"ADPIPES_ENV must be 'dev' or 'prod', got {env!r}")

    timezone = environ.get("ADPIPES_TIMEZONE", DEFAULT_TIMEZONE).strip() or DEFAULT_TIMEZONE
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(
            f"ADPIPES_TIMEZONE={timezone!r} is not an IANA timezone name; use the name set as the "
            "app's timezone in AppsFlyer, e.g. 'Asia/Seoul' (offsets like '+09:00' are not accepted "
            "by the AppsFlyer API)"
        )

    try:
        today = dt.datetime.now(ZoneInfo(timezone)).date()
    except (ZoneInfoNotFoundError, ValueError):
        today = dt.datetime.now(dt.timezone.utc).date()  # the timezone's own problem is reported
    default_start = DEFAULT_START_DATE
    if env == DEV:
        default_start = (today - dt.timedelta(days=DEV_START_DAYS_BEFORE_TODAY)).isoformat()
    start_date = environ.get("ADPIPES_START_DATE", "").strip() or default_start
    try:
        first_day = dt.date.fromisoformat(start_date)
        if first_day > today:
            # A schedule would tick for partitions that do not exist yet, and nothing could run.
            problems.append(f"ADPIPES_START_DATE={start_date!r} is in the future (today is {today} in "
                            f"{timezone}); set the first day that has data")
    except ValueError:
        problems.append(f"ADPIPES_START_DATE={start_date!r} is not a date in YYYY-MM-DD form")

    retention = _number(environ, "ADPIPES_PRODUCT_RETENTION_DAYS", DEFAULT_PRODUCT_RETENTION_DAYS, problems,
                        int, lambda days: days >= 1, "a positive whole number of days")

    overrides = _positive_counts(
        environ, "ADPIPES_PRODUCT_RETENTION_OVERRIDES", problems, lambda table: "/" in table,
        "asset-key=days, e.g. 'appsflyer/raw_data=30,airbridge/revenue=400'",
    )
    quotas = _positive_counts(
        environ, "APPSFLYER_DAILY_QUOTAS", problems, lambda report: report in APPSFLYER_QUOTA_REPORTS,
        f"report=calls a day per app with report one of {', '.join(APPSFLYER_QUOTA_REPORTS)}, e.g. "
        "'installs_report=48,in_app_events_report=24'",
    )

    problems.extend(_unknown_variables(environ))
    time_raw = environ.get("ADPIPES_SCHEDULE_TIME", "").strip() or DEFAULT_SCHEDULE_TIME
    try:
        moment = dt.datetime.strptime(time_raw, "%H:%M")
        schedule_time = (moment.hour, moment.minute)
    except ValueError:
        schedule_time = (6, 0)
        problems.append(f"ADPIPES_SCHEDULE_TIME={time_raw!r} must be a time HH:MM, e.g. '06:00' (app timezone)")

    max_share = _number(environ, "ADPIPES_MAX_QUARANTINED_SHARE", DEFAULT_MAX_QUARANTINED_SHARE, problems,
                        float, lambda share: 0 <= share <= 1,
                        "a share between 0 and 1 (0.01 = 1% of a partition's rows may be quarantined "
                        "without blocking)")
    max_row_drop = _number(environ, "ADPIPES_MAX_ROW_DROP", DEFAULT_MAX_ROW_DROP, problems,
                           float, lambda share: 0 <= share <= 1,
                           "a share between 0 and 1 (0.01 = a raw delivery may have 1% fewer rows than "
                           "the archived day it replaces)")
    band = _number(environ, "ADPIPES_VOLUME_BAND_FACTOR", DEFAULT_VOLUME_BAND_FACTOR, problems,
                   float, lambda factor: factor > 1,
                   "a number above 1 (2 = warn below half or above twice the trailing median)")

    appsflyer_currency = environ.get("APPSFLYER_CURRENCY", "").strip() or DEFAULT_APPSFLYER_CURRENCY
    if appsflyer_currency not in APPSFLYER_CURRENCIES:
        problems.append(
            f"APPSFLYER_CURRENCY={appsflyer_currency!r} must be 'preferred' (the currency set on the "
            "app in AppsFlyer) or 'USD' (AppsFlyer's two values, case as written)"
        )
    appsflyer_app_currency = _currency(environ, "APPSFLYER_APP_CURRENCY", problems,
                                       "the currency set on the app in AppsFlyer (App settings)")
    airbridge_currency = _currency(environ, "AIRBRIDGE_CURRENCY", problems,
                                   "the currency set on the app in Airbridge")
    cohort_kpis = _cohort_kpis(environ, problems)
    cohort_types = _names(environ, "APPSFLYER_COHORT_TYPES", DEFAULT_COHORT_TYPES, problems,
                          valid=lambda name: name in COHORT_TYPES,
                          form=f"one of {', '.join(COHORT_TYPES)}")
    cohort_min_size = _number(environ, "APPSFLYER_COHORT_MIN_SIZE", DEFAULT_COHORT_MIN_SIZE, problems,
                              int, lambda size: size >= 1,
                              "a whole number of users >= 1 (the Cohort API refuses 0; 1 returns every cohort)")
    group_by = _names(environ, "AIRBRIDGE_GROUP_BY", DEFAULT_AIRBRIDGE_GROUP_BY, problems,
                      valid=lambda name: bool(_GROUP_BY_KEY.fullmatch(name)),
                      form="an Airbridge group-by key in lowercase (channel, campaign, ad_group, ...)")

    total_count_mismatch = environ.get("AIRBRIDGE_TOTAL_COUNT_MISMATCH", "").strip() or "fail"
    if total_count_mismatch not in ("fail", "warn"):
        problems.append(
            f"AIRBRIDGE_TOTAL_COUNT_MISMATCH={total_count_mismatch!r} must be 'fail' (a revenue report "
            "whose rows do not add up to its totalCount fails the run) or 'warn' (it is loaded and "
            "the total_count check warns)"
        )

    app_ids = {variable: _app_ids(environ, variable, problems) for variable in APP_ID_FORMATS}
    raw_reports = _names(environ, "APPSFLYER_RAW_REPORTS", tuple(APPSFLYER_RAW_REPORTS), problems,
                         valid=lambda name: name in APPSFLYER_RAW_REPORTS,
                         form="an AppsFlyer raw report name: " + ", ".join(APPSFLYER_RAW_REPORTS))
    # The registry's order, whatever order they were listed in: asset order in the UI is stable.
    raw_reports = tuple(r for r in APPSFLYER_RAW_REPORTS if r in raw_reports)
    reserved = _number(environ, "APPSFLYER_RESERVED_CALLS", DEFAULT_RESERVED_CALLS, problems, int,
                       lambda calls: calls >= 0,
                       "a whole number of calls >= 0 (calls a day per app and report kept for the "
                       "scheduled runs; 0 lets backfills use the whole quota)")
    # Every quota the reserve is taken from: the usual plan's, as APPSFLYER_DAILY_QUOTAS changes them.
    effective = {**RAW_DEFAULT_QUOTAS, **AGGREGATE_DEFAULT_QUOTAS, **quotas}
    starved = {report: quota for report, quota in effective.items() if reserved >= quota}
    if starved:
        listed = ", ".join(f"{report} ({quota} a day)" for report, quota in starved.items())
        problems.append(f"APPSFLYER_RESERVED_CALLS={reserved} leaves no call to backfills of {listed} "
                        "(quotas: APPSFLYER_DAILY_QUOTAS or the usual plan's); reserve fewer")
    margin = _number(environ, "APPSFLYER_LATE_EVENTS_MARGIN_MINUTES", DEFAULT_LATE_EVENTS_MARGIN_MINUTES,
                     problems, int, lambda minutes: 0 <= minutes <= 1200,
                     "a whole number of minutes between 0 and 1200 after 02:00 UTC (when AppsFlyer "
                     "stops accepting late events for the day before)")
    for variable in ("ADPIPES_PRODUCT_DSN", "ADPIPES_ARCHIVE_DSN"):
        # Read to check its syntax only (never kept, never shown): an unencoded @ in a password
        # would otherwise surface later inside a driver error, password fragment included.
        dsn = environ.get(variable, "").strip()
        problem = dsn and dsn_problem(dsn)
        if problem:
            problems.append(f"{variable} is not a valid PostgreSQL DSN: {problem}")

    if env == PROD:
        missing = [name for name in PROD_REQUIRED_VARIABLES if not environ.get(name, "").strip()]
        if missing:
            problems.append(
                "ADPIPES_ENV=prod needs these variables, which are not set: " + ", ".join(missing)
            )

    if problems:
        raise ConfigurationError(
            "adpipes configuration is invalid:\n  - "
            + "\n  - ".join(problems)
            + "\nSet them in the environment (or in .env, which `dagster dev` reads); "
            "see the configuration table in docs/configuration.md."
        )

    data_dir = Path(environ.get("ADPIPES_DATA_DIR") or default_data_dir()).expanduser().resolve()
    return Settings(
        env=env,
        timezone=timezone,
        start_date=start_date,
        product_retention_days=retention,
        data_dir=data_dir,
        max_quarantined_share=max_share,
        volume_band_factor=band,
        retention_overrides=overrides,
        appsflyer_daily_quotas=quotas,
        schedule_time=schedule_time,
        environ=environ,
        appsflyer_currency=appsflyer_currency,
        # Dev talks to the sandbox, whose apps have their own currency.
        appsflyer_app_currency=SANDBOX_APP_CURRENCY if env == DEV else appsflyer_app_currency,
        cohort_kpis=cohort_kpis,
        cohort_types=cohort_types,
        cohort_min_size=cohort_min_size,
        airbridge_group_by=group_by,
        airbridge_currency=SANDBOX_APP_CURRENCY if env == DEV else airbridge_currency,
        airbridge_total_count_mismatch=total_count_mismatch,
        max_row_drop=max_row_drop,
        # Dev talks to the sandbox, which serves its own apps.
        **({} if env == DEV else dict(
            android_app_ids=app_ids["APPSFLYER_ANDROID_APP_ID"],
            ios_app_ids=app_ids["APPSFLYER_IOS_APP_ID"],
            airbridge_app_names=app_ids["AIRBRIDGE_APP_NAME"],
        )),
        appsflyer_raw_reports=raw_reports,
        appsflyer_reserved_calls=reserved,
        late_events_margin_minutes=margin,
    )


# AppsFlyer app ids (its OpenAPI file: "iOS apps must start with id"): an Android package name or
# id + the App Store id. Airbridge app names are the lowercase ids of its URLs.
APP_ID_FORMATS = {
    "APPSFLYER_ANDROID_APP_ID": (re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)+"),
                                 "an Android package name such as com.example.app"),
    "APPSFLYER_IOS_APP_ID": (re.compile(r"id\d+"), "'id' followed by the App Store id, such as id123456789"),
    "AIRBRIDGE_APP_NAME": (re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*"),
                           "the app name of your Airbridge URLs (letters, digits, - and _)"),
}


def split_app_ids(value: str) -> tuple[str, ...]:
    """A comma-separated list of app ids (one id is a list of one), blanks dropped."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _app_ids(environ: Mapping[str, str], variable: str, problems: list[str]) -> tuple[str, ...]:
    """App ids go into request paths: a malformed one is a 404 at best, another path at worst.
    Several apps of a platform are listed with commas; each must have its vendor's form."""
    pattern, form = APP_ID_FORMATS[variable]
    ids = split_app_ids(environ.get(variable, ""))
    bad = [i for i in ids if not pattern.fullmatch(i)]
    if bad:
        listed = ", ".join(repr(i) for i in bad)
        problems.append(f"{variable}={listed} must be {form} (several apps: a comma-separated list)")
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        problems.append(f"{variable} names {repeated} more than once")
    return tuple(dict.fromkeys(ids))


def _number(environ: Mapping[str, str], variable: str, default: float, problems: list[str],
            convert: Callable[[str], float], valid: Callable[[float], bool], form: str) -> Any:
    """``variable`` converted and checked (the default when unset); a bad value is a problem."""
    raw = environ.get(variable, "").strip() or str(default)
    try:
        value = convert(raw)
        if not valid(value):
            raise ValueError
    except ValueError:
        problems.append(f"{variable}={raw!r} must be {form}")
        return default
    return value


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A problem for each adpipes-prefixed variable adpipes does not read (typos, old names)."""
    problems = []
    for name in sorted(environ):
        if not name.startswith(VARIABLE_PREFIXES) or name in KNOWN_VARIABLES:
            continue
        if name in RETIRED_VARIABLES:
            # Ignoring it would silently fall back to a default the user meant to change.
            hh = environ[name].strip().zfill(2)
            problems.append(f"{name} {RETIRED_VARIABLES[name].format(hh=hh)}")
            continue
        close = difflib.get_close_matches(name, sorted(KNOWN_VARIABLES), n=1, cutoff=0.75)
        hint = f"did you mean {close[0]}?" if close else "see the configuration table in docs/configuration.md"
        problems.append(f"{name} is not an adpipes setting ({hint}); unset it or fix its name")
    return problems


def _currency(environ: Mapping[str, str], variable: str, problems: list[str], meaning: str) -> str:
    """An ISO 4217 code (upper case); empty is allowed here (prod requires it separately)."""
    value = environ.get(variable, "").strip()
    if value and not ISO_CURRENCY.fullmatch(value):
        problems.append(f"{variable}={value!r} must be an ISO 4217 currency code such as KRW or USD: {meaning}")
    return value or SANDBOX_APP_CURRENCY


def _names(environ: Mapping[str, str], variable: str, default: tuple[str, ...], problems: list[str],
           *, valid: Callable[[str], bool], form: str) -> tuple[str, ...]:
    """A comma-separated list (default when unset); each invalid or repeated item is a problem."""
    raw = environ.get(variable, "").strip()
    if not raw:
        return default
    names = [part.strip() for part in raw.split(",")]
    bad = [name for name in names if not name or not valid(name)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if bad:
        problems.append(f"{variable} items {bad} are not valid: each must be {form}")
    if repeated:
        problems.append(f"{variable} names {repeated} more than once")
    return tuple(dict.fromkeys(name for name in names if name))


def _cohort_kpis(environ: Mapping[str, str], problems: list[str]) -> tuple[str, ...]:
    """The Cohort API KPIs: documented ones (revenue, roas, roi, sessions, uninstalls) or in-app
    event names, which AppsFlyer matches case-sensitively, so they are kept as written."""
    kpis = _names(environ, "APPSFLYER_COHORT_KPIS", DEFAULT_COHORT_KPIS, problems,
                  valid=lambda name: name.lower() not in ALWAYS_RETURNED,
                  form="a KPI other than users, ecpi and cost (every Cohort API answer carries "
                  "those three): revenue, roas, roi, sessions, uninstalls or an in-app event name")
    # Documented KPIs are recognized in any case (the documents spell roas both ways); event names
    # are case-sensitive, so two events differing in case are two KPIs.
    documented = [documented_kpi(k) for k in kpis]
    clashes = sorted({k for k, d in zip(kpis, documented) if d is not None and documented.count(d) > 1})
    if clashes:
        problems.append(f"APPSFLYER_COHORT_KPIS names {clashes}, the same documented KPI spelled twice; keep one")
    return kpis
