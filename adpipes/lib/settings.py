"""Settings read from the environment (see the configuration table in the README).

Only non-secret values are read here, at definition load time: the environment mode, the app
timezone, the first partition date, the retention and the data directory. Secrets (tokens, DSNs)
are never read here: resources receive them through ``dagster.EnvVar`` so that their values do not
land in config snapshots, logs or run config. This module only checks that they are *present*.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEV = "dev"
PROD = "prod"

DEFAULT_TIMEZONE = "Asia/Seoul"
# The first daily partition. Raw reports are only served for the last 90 days, so older
# partitions of raw assets can only come from the archive; aggregate reports have no limit.
DEFAULT_START_DATE = "2026-01-01"
DEFAULT_PRODUCT_RETENTION_DAYS = 90
# Quality policy: no quarantined row is tolerated silently; row counts may halve or double.
DEFAULT_MAX_QUARANTINED_SHARE = 0.0
DEFAULT_VOLUME_BAND_FACTOR = 2.0
DEFAULT_SCHEDULE_TIME = "06:00"
DEFAULT_APPSFLYER_BASE_URL = "https://hq1.appsflyer.com"
DEFAULT_AIRBRIDGE_BASE_URL = "https://api.airbridge.io"

# App ids the dev sandbox serves when none are configured.
SANDBOX_ANDROID_APP_ID = "com.adpipes.sandbox"
SANDBOX_IOS_APP_ID = "id1000000001"
# Airbridge app name (the unique id in Airbridge URLs) the dev sandbox serves.
SANDBOX_AIRBRIDGE_APP_NAME = "adpipes-sandbox"

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
)


# The AppsFlyer reports with a daily call quota per app (the Pull API's raw reports, and the
# aggregate daily_report for ranges of 3+ days).
APPSFLYER_QUOTA_REPORTS = ("installs_report", "in_app_events_report", "daily_report")


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
    environ: Mapping[str, str]

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

    start_date = environ.get("ADPIPES_START_DATE", DEFAULT_START_DATE).strip() or DEFAULT_START_DATE
    try:
        dt.date.fromisoformat(start_date)
    except ValueError:
        problems.append(f"ADPIPES_START_DATE={start_date!r} is not a date in YYYY-MM-DD form")

    retention_raw = environ.get("ADPIPES_PRODUCT_RETENTION_DAYS", str(DEFAULT_PRODUCT_RETENTION_DAYS))
    try:
        retention = int(retention_raw)
        if retention < 1:
            raise ValueError
    except ValueError:
        retention = DEFAULT_PRODUCT_RETENTION_DAYS
        problems.append(
            f"ADPIPES_PRODUCT_RETENTION_DAYS={retention_raw!r} must be a positive whole number of days"
        )

    overrides = _positive_counts(
        environ, "ADPIPES_PRODUCT_RETENTION_OVERRIDES", problems, lambda table: "/" in table,
        "asset-key=days, e.g. 'appsflyer/raw_data=30,airbridge/revenue=400'",
    )
    quotas = _positive_counts(
        environ, "APPSFLYER_DAILY_QUOTAS", problems, lambda report: report in APPSFLYER_QUOTA_REPORTS,
        f"report=calls a day per app with report one of {', '.join(APPSFLYER_QUOTA_REPORTS)}, e.g. "
        "'installs_report=48,in_app_events_report=24'",
    )

    if environ.get("ADPIPES_SCHEDULE_HOUR", "").strip():
        # An earlier name: ignoring it would silently move the user's schedule back to 06:00.
        problems.append(
            "ADPIPES_SCHEDULE_HOUR was renamed: set ADPIPES_SCHEDULE_TIME=HH:MM instead (e.g. "
            f"'{environ['ADPIPES_SCHEDULE_HOUR'].strip().zfill(2)}:00') and unset ADPIPES_SCHEDULE_HOUR"
        )
    time_raw = environ.get("ADPIPES_SCHEDULE_TIME", "").strip() or DEFAULT_SCHEDULE_TIME
    try:
        moment = dt.datetime.strptime(time_raw, "%H:%M")
        schedule_time = (moment.hour, moment.minute)
    except ValueError:
        schedule_time = (6, 0)
        problems.append(f"ADPIPES_SCHEDULE_TIME={time_raw!r} must be a time HH:MM, e.g. '06:00' (app timezone)")

    share_raw = environ.get("ADPIPES_MAX_QUARANTINED_SHARE", "").strip() or str(DEFAULT_MAX_QUARANTINED_SHARE)
    try:
        max_share = float(share_raw)
        if not 0 <= max_share <= 1:
            raise ValueError
    except ValueError:
        max_share = DEFAULT_MAX_QUARANTINED_SHARE
        problems.append(
            f"ADPIPES_MAX_QUARANTINED_SHARE={share_raw!r} must be a share between 0 and 1 "
            "(0.01 = 1% of a partition's rows may be quarantined without blocking)"
        )

    band_raw = environ.get("ADPIPES_VOLUME_BAND_FACTOR", "").strip() or str(DEFAULT_VOLUME_BAND_FACTOR)
    try:
        band = float(band_raw)
        if band <= 1:
            raise ValueError
    except ValueError:
        band = DEFAULT_VOLUME_BAND_FACTOR
        problems.append(
            f"ADPIPES_VOLUME_BAND_FACTOR={band_raw!r} must be a number above 1 (2 = warn below half "
            "or above twice the trailing median)"
        )

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
            "see the configuration table in README.md."
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
    )
