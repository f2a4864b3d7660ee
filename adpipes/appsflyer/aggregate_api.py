"""AppsFlyer Pull API V2 aggregate reports: the client of
``GET /api/agg-data/export/app/{app_id}/{report}/v5`` (``daily_report``).

Aggregate reports are one call per range (history is unlimited) and always in the app's currency.
Their quota is one call per minute per app and report for ranges of <= 2 days, which the client
respects by spacing such calls in-process and across processes (the call ledger) and by waiting
out a 403 ``Limit reached`` (another tool called), and 24 calls a day for longer ranges, whose
quota answer fails at once.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
from pydantic import Field, field_validator

from adpipes.appsflyer.api import (
    QUOTA_VENDOR,
    TOKEN_VARIABLE,
    AppsFlyerApiBase,
    AppsFlyerQuotaError,
    default_log,
    fmt_window,
)
from adpipes.appsflyer.raw_data_api import parse_report_csv
from adpipes.lib.http import api_path, bearer_session
from adpipes.lib.quota import ApiCallLedger, QuotaMeter

AGGREGATE_EXPORT_PATH = "/api/agg-data/export/app/{app_id}/{report}/v5"
DAILY_REPORT = "daily_report"
# Daily call quota per app of the usual plans for aggregate ranges of 3+ days.
DEFAULT_DAILY_QUOTAS = {DAILY_REPORT: 24}
# Aggregate reports have two quota regimes: ranges of <= 2 days are limited to one call per
# minute per app and report, ranges of 3+ days to ~24 calls a day per app.
AGGREGATE_SHORT_RANGE_DAYS = 2
# Dagster concurrency pool of the steps calling the aggregate API (one <= 2-day call a minute).
AGGREGATE_API_POOL = "appsflyer_aggregate_api"


def is_short_aggregate_range(first_day: dt.date, last_day: dt.date) -> bool:
    """<= 2 days: limited to one call a minute, not counted against the daily quota."""
    return (last_day - first_day).days + 1 <= AGGREGATE_SHORT_RANGE_DAYS



class MinuteSpacing:
    """Keeps calls of one key (base URL, app, report) at least ``interval`` seconds apart.

    In-process, without a database round trip; other processes are waited out through the call
    ledger (``_wait_for_other_processes``) and, for calls made by other tools, the quota retry.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[tuple[str, ...], float] = {}

    def wait_turn(self, key: tuple[str, ...], interval: float) -> float:
        """Sleep until ``interval`` seconds after the key's previous call; returns seconds slept."""
        with self._lock:
            now = time.monotonic()
            last = self._last.get(key)
            pause = 0.0 if last is None else max(0.0, last + interval - now)
            # Reserve the slot before sleeping so concurrent callers queue behind this one.
            self._last[key] = now + pause
        if pause:
            time.sleep(pause)
        return pause

    def mark(self, key: tuple[str, ...]) -> None:
        with self._lock:
            self._last[key] = time.monotonic()



_AGGREGATE_SPACING = MinuteSpacing()


@dataclass
class AggregateReport:
    """One aggregate Pull API answer (e.g. ``daily_report``) covering ``first_day..last_day``."""

    app_id: str
    report: str
    first_day: dt.date
    last_day: dt.date
    # The CSV as delivered (header line included); aggregate answers are small.
    content: bytes = field(default=b"", repr=False)
    # HTTP requests made, including retried attempts.
    calls: int = 0
    quota: QuotaMeter | None = field(default=None, repr=False)

    @property
    def short_range(self) -> bool:
        return is_short_aggregate_range(self.first_day, self.last_day)

    def count_call(self) -> None:
        """Count a request about to be sent (against the daily quota for 3+-day ranges only)."""
        if self.quota is not None:
            self.quota.spend(counts_against_quota=not self.short_range)
        self.calls += 1

    def to_arrow(self) -> pa.Table:
        """Every column as text, by header name (``None``/``N/A`` are left to the caller)."""
        return parse_report_csv(self.content)



class AppsFlyerAggregateApi(AppsFlyerApiBase):
    """AppsFlyer Pull API V2 aggregate reports (``daily_report``), in the app's currency."""

    aggregate_min_interval_seconds: float = Field(
        default=61.0,
        description="Aggregate reports allow one call per minute per app and report for ranges of "
        "<= 2 days: a second such call waits this long after the previous one, and a 403 'Limit "
        "reached' for such a range (another process called) is retried after this wait.",
    )
    aggregate_quota_retries: int = Field(
        default=2, description="Retries of a <= 2-day aggregate call answered 403 'Limit reached'."
    )
    daily_quotas: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_DAILY_QUOTAS),
        description="Calls a day per app your AppsFlyer plan allows for aggregate ranges of 3+ "
        "days (APPSFLYER_DAILY_QUOTAS daily_report=...; quotas reset at 00:00 UTC).",
    )

    @field_validator("daily_quotas")
    @classmethod
    def _with_default_quotas(cls, quotas: dict[str, int]) -> dict[str, int]:
        return {**DEFAULT_DAILY_QUOTAS, **quotas}

    def quota_meter(self, ledger: ApiCallLedger, app_id: str, report: str) -> QuotaMeter:
        """The ledger's meter of one app's report, with this plan's daily quota of that report."""
        return ledger.meter(QUOTA_VENDOR, app_id, report, self.daily_quotas.get(report))

    def fetch_aggregate_report(self, app_id: str, report: str, first_day: dt.date,
                               last_day: dt.date, log: Any = None,
                               quota: QuotaMeter | None = None) -> AggregateReport:
        """Fetch an aggregate report (e.g. ``daily_report``) for the days ``first_day..last_day``.

        Aggregate history is unlimited and a range is one call. Ranges of <= 2 days are limited to
        one call per minute per app and report: calls are spaced in-process, and a 403 ``Limit
        reached`` (another process called) is retried after the interval. A quota answer for a
        3+-day range (24 calls a day) fails at once, naming the reset time.

        With ``quota`` (the call ledger), requests are counted there first, 3+-day ranges against
        the daily quota, and a <= 2-day call also waits out the minute since any adpipes process
        last called the report.
        """
        if last_day < first_day:
            raise ValueError(f"empty range: {last_day} is before {first_day}")
        log = log or default_log
        base_url, token = self._connection()
        tz = ZoneInfo(self.timezone)
        start = dt.datetime.combine(first_day, dt.time(), tzinfo=tz)
        end = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), tzinfo=tz)
        window = fmt_window(start, end, self.timezone)
        url = base_url + api_path(AGGREGATE_EXPORT_PATH, app_id=app_id, report=report)
        # Aggregate ranges are whole days: `from`/`to` as dates, `to` inclusive.
        params = {"from": first_day.isoformat(), "to": last_day.isoformat(), "timezone": self.timezone}
        spacing_key = (base_url, app_id, report)
        result = AggregateReport(app_id=app_id, report=report, first_day=first_day, last_day=last_day,
                                 quota=quota)
        short_range = result.short_range
        with bearer_session(base_url, token, accept="text/csv", token_variable=TOKEN_VARIABLE) as session:
            for attempt in range(self.aggregate_quota_retries + 1):
                if short_range:
                    waited = _AGGREGATE_SPACING.wait_turn(spacing_key, self.aggregate_min_interval_seconds)
                    waited += self._wait_for_other_processes(quota)
                    if waited:
                        log.info(f"AppsFlyer {report} for app {app_id}: waited {waited:.1f} s to keep "
                                 "<= 2-day aggregate calls a minute apart (AppsFlyer's limit)")
                try:
                    content = self._call(session, "GET", url, token, log, app_id=app_id,
                                         report=report, window=window,
                                         on_attempt=result.count_call, params=params)
                    break
                except AppsFlyerQuotaError as exc:
                    if not short_range or exc.status != 403:
                        raise
                    if attempt == self.aggregate_quota_retries:
                        raise AppsFlyerQuotaError(
                            f"AppsFlyer {report} for app {app_id}, window {window}: the one-call-"
                            f"per-minute limit for <= 2-day ranges was still reached after "
                            f"{attempt + 1} calls spaced {self.aggregate_min_interval_seconds:g} s "
                            "apart; another process is probably pulling the same report. Re-run "
                            "the partition when it is done (or pull 3+ days at once, which uses "
                            "the daily quota instead).",
                            app_id=app_id, report=report, window=window, status=exc.status,
                        ) from None
                    log.warning(f"AppsFlyer {report} for app {app_id}: 403 'Limit reached' for a "
                                f"<= 2-day range; retrying after the one-minute limit passes")
                finally:
                    if short_range:
                        _AGGREGATE_SPACING.mark(spacing_key)
        result.content = content
        return result

    def _wait_for_other_processes(self, quota: QuotaMeter | None) -> float:
        """Sleep until ``aggregate_min_interval_seconds`` after the report's last call by any
        adpipes process (from the call ledger, on the database's clock); returns seconds slept.

        Short ranges of one report are often pulled by separate run processes (day-by-day
        backfill runs, a hand-made 1-day run beside a scheduled one); the vendor pool keeps them
        from calling at once, and this keeps them a minute apart instead of spending a 403
        'Limit reached' and a retry.
        """
        if quota is None or self.aggregate_min_interval_seconds <= 0:
            return 0.0
        since = quota.seconds_since_last_call()
        pause = 0.0 if since is None else max(0.0, self.aggregate_min_interval_seconds - since)
        if pause:
            time.sleep(pause)
        return pause
