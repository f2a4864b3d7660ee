"""AppsFlyer resources: the Pull API V2 client (raw data, aggregate reports, Cohort API) and the
configured app ids.

Aggregate reports (``fetch_aggregate_report``) are one call per range (history is unlimited); their
quota is one call per minute per app and report for ranges of <= 2 days, which the client respects
by spacing such calls in-process and by waiting out a 403 ``Limit reached`` (another process
called), and 24 calls a day for longer ranges, whose quota answer fails at once. Cohort API queries
(``fetch_cohort``) are paced to 60 calls a minute per account; a 422 names app, KPI and the API's
reason.

The Pull API has no paging and no truncation flag: a response with exactly ``maximum_rows`` data
rows has silently lost the rest. The client therefore halves such windows (down to
``min_split_seconds``) and fails loudly when a window cannot be split further. Calls count
against a small daily quota (about 24 a day per app for installs, 12 for in-app events), so daily
quota answers are never retried, while 429/5xx, connection errors and the known zero-byte 200 are
(and the 403 'Limit reached' of a <= 2-day aggregate range, once its minute has passed).

The token travels only in the ``Authorization`` header (the V1 ``?api_token=`` form put it in URLs
and therefore in proxy and server logs); it never appears in a URL, log line, error or repr.
"""

from __future__ import annotations

import csv
import datetime as dt
import shutil
import tempfile
import weakref
import json
import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from zoneinfo import ZoneInfo

import dagster as dg
import pyarrow as pa
import pyarrow.csv as pacsv
import requests
from pydantic import Field, field_validator

from adpipes.lib.quota import ApiCallLedger, QuotaMeter, describe_reset
from adpipes.lib.http import (
    RetriesExhausted,
    TransientError,
    VendorApiError,
    VendorApiResource,
    bearer_session,
    raise_for_transient_status,
    redact,
)

INSTALLS_REPORT = "installs_report"
IN_APP_EVENTS_REPORT = "in_app_events_report"

RAW_EXPORT_PATH = "/api/raw-data/export/app/{app_id}/{report}/v5"
# AppsFlyer serves raw data for the last 90 days only ("historical lookback is limited to 90
# days"), and one call covers at most 60 days of installs or 31 days of in-app events.
RAW_LOOKBACK_DAYS = 90
RAW_WINDOW_DAYS = {INSTALLS_REPORT: 60, IN_APP_EVENTS_REPORT: 31}
AGGREGATE_EXPORT_PATH = "/api/agg-data/export/app/{app_id}/{report}/v5"
COHORT_PATH = "/api/cohorts/v1/data/app/{app_id}"
DAILY_REPORT = "daily_report"
# Daily call quotas per app of the usual plans (AppsFlyer's support article "Report generation
# quotas"): raw installs 24, raw in-app events 12, aggregate ranges of 3+ days 24.
DEFAULT_DAILY_QUOTAS = {INSTALLS_REPORT: 24, IN_APP_EVENTS_REPORT: 12, DAILY_REPORT: 24}
QUOTA_VENDOR = "appsflyer"
# The sandbox's fault/call-log name of Cohort API calls (the API has no report name).
COHORT_REPORT = "cohort"
# Aggregate reports have two quota regimes: ranges of <= 2 days are limited to one call per
# minute per app and report, ranges of 3+ days to ~24 calls a day per app.
AGGREGATE_SHORT_RANGE_DAYS = 2
PARAM_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# Dagster concurrency pools, one per vendor API: the steps calling an API share its pool, and the
# shipped dagster.yaml limits every pool, so parallel runs and backfills cannot exceed the API's
# limits (one <= 2-day aggregate call a minute; raw exports are also the steps that need the most
# memory).
RAW_DATA_API_POOL = "appsflyer_raw_data_api"
AGGREGATE_API_POOL = "appsflyer_aggregate_api"
COHORT_API_POOL = "appsflyer_cohort_api"
# Tokens issued before this moment were revoked by AppsFlyer; a 401 most often means one of those.
TOKEN_REVOCATION_CUTOFF = "2026-03-10 19:00 UTC"
TOKEN_VARIABLE = "APPSFLYER_API_TOKEN"
# Quota answers vary in wording ("Your API call limit has been reached ...", "Limit reached for
# installs_report"): match loosely.
_QUOTA_PATTERN = re.compile(r"limit.*reached|reached.*limit", re.IGNORECASE | re.DOTALL)
_BODY_EXCERPT_CHARS = 300

_default_log = logging.getLogger("adpipes.appsflyer")


def is_short_aggregate_range(first_day: dt.date, last_day: dt.date) -> bool:
    """<= 2 days: limited to one call a minute, not counted against the daily quota."""
    return (last_day - first_day).days + 1 <= AGGREGATE_SHORT_RANGE_DAYS


# -- errors --------------------------------------------------------------------------------------

class AppsFlyerApiError(VendorApiError):
    """An AppsFlyer API call failed; the message names app, report and window."""

    app_id = report = window = ""


class AppsFlyerTransientError(AppsFlyerApiError):
    """429/5xx/connection problems/empty answers persisted through every attempt."""


class AppsFlyerQuotaError(AppsFlyerApiError):
    """The daily call quota is spent; it resets at 00:00 UTC."""


class AppsFlyerAuthError(AppsFlyerApiError):
    """401: the token is invalid or revoked."""


class AppsFlyerNotFoundError(AppsFlyerApiError):
    """404: unknown app id, or the token's account has no access to the app."""


class AppsFlyerLookbackError(AppsFlyerApiError):
    """400: the window is older than the 90 days of raw data AppsFlyer serves."""


class AppsFlyerTruncationError(AppsFlyerApiError):
    """A window that cannot be split further still returned ``maximum_rows`` rows."""


class AppsFlyerCohortRequestError(AppsFlyerApiError):
    """422: the Cohort API rejected the request body (a KPI, grouping or filter it does not accept)."""


# -- in-process pacing ---------------------------------------------------------------------------

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


class SlidingWindowLimiter:
    """At most ``limit`` calls per ``window`` seconds per key (the Cohort API's 60 calls/minute)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, deque[float]] = {}

    def acquire(self, key: str, limit: int, window: float) -> float:
        """Block until a call is allowed; returns seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                calls = self._calls.setdefault(key, deque())
                while calls and calls[0] <= now - window:
                    calls.popleft()
                if len(calls) < max(1, limit):
                    calls.append(now)
                    return waited
                pause = calls[0] + window - now
            time.sleep(pause)
            waited += pause


_AGGREGATE_SPACING = MinuteSpacing()
_COHORT_LIMITER = SlidingWindowLimiter()


# -- result --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpooledChunk:
    """One raw-report response, spooled to disk as delivered (header line first)."""

    path: Path
    header: tuple[str, ...]
    rows: int
    window: tuple[dt.datetime, dt.datetime]


@dataclass
class SpooledReport:
    """The raw-report responses that together cover the requested window, as files on disk.

    A raw day can be a million rows (600 MB of CSV): the responses are streamed to files and only
    counted here (truncation is detected from the row count), never held in memory. The files are
    removed with the directory passed to ``fetch_raw_report`` (its owner's job) or, when the client
    made the directory itself, when this object is garbage-collected.
    """

    app_id: str
    report: str
    timezone: str
    directory: Path
    chunks: list[SpooledChunk] = field(default_factory=list)
    # HTTP requests made, including retried attempts and discarded (truncated) answers.
    calls: int = 0
    # The app's raw-report quota in the call ledger (None: calls are not metered).
    quota: QuotaMeter | None = field(default=None, repr=False)

    def count_call(self) -> None:
        """Count a request about to be sent; the quota ledger refuses it once the quota is spent."""
        if self.quota is not None:
            self.quota.spend()
        self.calls += 1

    @property
    def windows(self) -> list[tuple[dt.datetime, dt.datetime]]:
        """The [start, end) windows actually fetched (after splitting), in order."""
        return [c.window for c in self.chunks]

    @property
    def row_count(self) -> int:
        return sum(c.rows for c in self.chunks)

    def to_arrow(self) -> pa.Table:
        """Every chunk parsed into one table of string columns (for inspection and tests)."""
        tables = [parse_report_csv(c.path) for c in self.chunks]
        if not tables:
            return pa.table({})
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")


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


@dataclass
class CohortResult:
    """The JSON records of one Cohort API query (one app, one KPI)."""

    app_id: str
    kpi: str
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)
    # HTTP requests made, including retried attempts.
    calls: int = 0

    def count_call(self) -> None:
        self.calls += 1


def read_header(source: bytes | Path) -> list[str]:
    """The header names of a report CSV (the first line; AppsFlyer may prefix a UTF-8 BOM)."""
    if isinstance(source, Path):
        with source.open("rb") as handle:
            first = handle.readline()
    else:
        first = source.split(b"\n", 1)[0]
    return next(csv.reader([first.decode("utf-8-sig").rstrip("\r\n")]), [])


def _csv_options(names: list[str]) -> dict[str, Any]:
    return dict(
        read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 24),
        # Campaign names and user agents may hold quoted newlines.
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def parse_report_csv(source: bytes | Path) -> pa.Table:
    """Parse one raw-report CSV reading every column as text, by header name.

    IDs read as numbers would come back as ``1000000186.0`` and lose leading zeros, and AppsFlyer
    adds columns over time, so no column is typed here.
    """
    data = str(source) if isinstance(source, Path) else pa.py_buffer(source)
    return pacsv.read_csv(data, **_csv_options(read_header(source)))


def count_report_rows(path: Path) -> tuple[list[str], int]:
    """Header names and data-row count of a spooled report, parsed a block at a time.

    Parsing (rather than counting line breaks) is what makes the count right when values hold
    quoted line breaks, and it fails on a malformed file before anything is loaded.
    """
    names = read_header(path)
    options = _csv_options(names)
    # Converting one column is enough to count rows; every row is still tokenized and checked.
    options["convert_options"].include_columns = names[:1]
    # Small blocks: the count needs no parallel read-ahead, and memory stays flat.
    options["read_options"].block_size = 4 << 20
    reader = pacsv.open_csv(str(path), **options)
    return names, sum(batch.num_rows for batch in reader)


def split_by_day(chunk: SpooledChunk, timezone: str) -> list[tuple[str, SpooledChunk]]:
    """A response covering several days as one file per day (partition key, chunk), by Event Time.

    A response within one day is returned as it is. Otherwise its rows are streamed into one file
    per local day next to it (header first, bytes of each row unchanged apart from CSV quoting)
    and the original is removed. Rows whose Event Time is empty or unreadable go to the window's
    first day: the archive keeps them and raw_data's parseable_values check quarantines them.
    """
    tz = ZoneInfo(timezone)
    first = chunk.window[0].astimezone(tz).date()
    last = (chunk.window[1] - dt.timedelta(seconds=1)).astimezone(tz).date()
    if first == last:
        return [(first.isoformat(), chunk)]
    if "Event Time" not in chunk.header:
        raise AppsFlyerApiError(
            f"AppsFlyer response {chunk.path.name} covers {first}..{last} but has no Event Time "
            "column, so its rows cannot be told apart by day; nothing was loaded. Materialize these "
            "partitions one day at a time.", window=f"{first}..{last}",
        )
    column = chunk.header.index("Event Time")
    outputs: dict[str, tuple[Any, Any, Path]] = {}
    counts: dict[str, int] = {}
    try:
        with chunk.path.open(newline="", encoding="utf-8") as source:
            reader = csv.reader(source)
            header = next(reader)
            for row in reader:
                stamp = row[column] if column < len(row) else ""
                day = stamp[:10] if _DAY_PREFIX.match(stamp) else first.isoformat()
                if not first.isoformat() <= day <= last.isoformat():
                    day = first.isoformat()
                if day not in outputs:
                    path = chunk.path.with_name(f"{chunk.path.stem}-{day}.csv")
                    handle = path.open("w", newline="", encoding="utf-8")
                    writer = csv.writer(handle, lineterminator="\n")
                    writer.writerow(header)
                    outputs[day] = (handle, writer, path)
                outputs[day][1].writerow(row)
                counts[day] = counts.get(day, 0) + 1
    finally:
        for handle, _, _ in outputs.values():
            handle.close()
    if sum(counts.values()) != chunk.rows:
        raise AppsFlyerApiError(
            f"AppsFlyer response {chunk.path.name}: split into days, it has {sum(counts.values())} "
            f"rows where {chunk.rows} were counted; nothing was loaded. Re-run the partitions."
        )
    chunk.path.unlink()
    return [
        (day, SpooledChunk(path, chunk.header, counts[day], chunk.window))
        for day, (_, _, path) in sorted(outputs.items())
    ]


_DAY_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}[ T]")


def raw_windows(partition_keys: list[str], report: str) -> list[tuple[str, str]]:
    """The partitions as (first, last) runs of consecutive days, each within one raw call's limit
    (RAW_WINDOW_DAYS): a 62-day in-app-events backfill is two calls, not 62."""
    days = sorted(dt.date.fromisoformat(k) for k in partition_keys)
    runs: list[list[dt.date]] = []
    for day in days:
        if runs and day == runs[-1][-1] + dt.timedelta(days=1) and len(runs[-1]) < RAW_WINDOW_DAYS[report]:
            runs[-1].append(day)
        else:
            runs.append([day])
    return [(run[0].isoformat(), run[-1].isoformat()) for run in runs]


def raw_lookback_start(timezone: str, today: dt.date | None = None) -> dt.date:
    """The oldest day AppsFlyer still serves raw data for."""
    today = today or dt.datetime.now(ZoneInfo(timezone)).date()
    return today - dt.timedelta(days=RAW_LOOKBACK_DAYS)


# -- resources -----------------------------------------------------------------------------------

def _fmt_window(start: dt.datetime, end: dt.datetime, timezone: str) -> str:
    tz = ZoneInfo(timezone)
    return (f"[{start.astimezone(tz).strftime(PARAM_TIME_FORMAT)}, "
            f"{end.astimezone(tz).strftime(PARAM_TIME_FORMAT)}) {timezone}")


def _spool_body(response: requests.Response, path: Path) -> None:
    """Stream a 200 body into ``path``; a cut-off download or an empty body is worth a retry."""
    written = 0
    try:
        with path.open("wb") as handle:
            for chunk in response.iter_content(chunk_size=1 << 20):
                handle.write(chunk)
                written += len(chunk)
    except requests.RequestException as exc:
        raise TransientError(f"the download broke off after {written} bytes ({type(exc).__name__})") from None
    if written < 64 and not path.read_bytes().strip():
        # A real empty report still has its header line: zero bytes is a failed export.
        raise TransientError("HTTP 200 with an empty body (not even a header line)", 200)


class AppsFlyerPullApi(VendorApiResource):
    """AppsFlyer Pull API V2 (raw data). In dev, ``api_token``/``base_url`` left as None point at the
    local sandbox; in prod pass ``dagster.EnvVar("APPSFLYER_API_TOKEN")``."""

    api_token: Optional[str] = Field(
        default=None, repr=False,
        description="Pull API V2 token (Bearer). None: the dev sandbox's token.",
    )
    base_url: Optional[str] = Field(
        default=None, description="e.g. https://hq1.appsflyer.com. None: the dev sandbox."
    )
    timezone: str = Field(
        default="Asia/Seoul",
        description="IANA name equal to the app's timezone setting in AppsFlyer (offsets are rejected).",
    )
    maximum_rows: int = Field(
        default=1_000_000,
        description="Rows per call; the real API accepts 200000 or 1000000 only. A response with "
        "this many rows is treated as truncated and its window is split.",
    )
    timeout_seconds: float = Field(default=300, description="Read timeout per call (big days are slow).")
    min_split_seconds: int = Field(
        default=3600, description="Windows this short are not split further when truncated."
    )
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
        description="Calls a day per app your AppsFlyer plan allows, per report (quotas reset at "
        "00:00 UTC): raw reports, and daily_report for ranges of 3+ days (APPSFLYER_DAILY_QUOTAS). "
        "The call ledger refuses a range that would exceed them before calling. Reports not named "
        "keep the usual plan's quota.",
    )
    cohort_calls_per_minute: int = Field(
        default=60, description="Cohort API rate limit per account (calls per rate window)."
    )
    cohort_rate_window_seconds: float = Field(
        default=60.0, description="Length of the Cohort API rate window (the API's is one minute)."
    )

    @field_validator("daily_quotas")
    @classmethod
    def _with_default_quotas(cls, quotas: dict[str, int]) -> dict[str, int]:
        # A plan naming only some reports (e.g. more in-app events calls) keeps the others' quota.
        return {**DEFAULT_DAILY_QUOTAS, **quotas}

    # -- connection ---------------------------------------------------------------------------

    def _sandbox_token(self, sandbox: Any) -> str:
        return sandbox.appsflyer_token

    def _missing_token_error(self) -> Exception:
        return AppsFlyerAuthError(f"no AppsFlyer API token: set {TOKEN_VARIABLE}")

    # -- public API ---------------------------------------------------------------------------

    def quota_meter(self, ledger: ApiCallLedger, app_id: str, report: str) -> QuotaMeter:
        """The ledger's meter of one app's report, with this plan's daily quota of that report."""
        return ledger.meter(QUOTA_VENDOR, app_id, report, self.daily_quotas.get(report))

    def fetch_raw_report(self, app_id: str, report: str, start: dt.datetime, end: dt.datetime,
                         log: Any = None, directory: Path | None = None,
                         quota: QuotaMeter | None = None) -> SpooledReport:
        """Fetch raw report rows with Event Time in ``[start, end)`` (tz-aware datetimes).

        Responses are streamed into files in ``directory`` (a new temporary directory if None).
        Windows returning ``maximum_rows`` rows are halved until complete; each piece is retried
        on transient failures. With ``quota``, every request is counted in the call ledger first,
        which refuses (``QuotaExceeded``) once the day's quota is spent. Raises a subclass of
        ``AppsFlyerApiError``, or ``QuotaExceeded``.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware datetimes")
        if end <= start:
            raise ValueError(f"empty window: end {end} is not after start {start}")
        if start.microsecond or end.microsecond:
            raise ValueError("start and end must be whole seconds (the API's precision)")
        log = log or _default_log
        base_url, token = self._connection()
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="adpipes-appsflyer-"))
            owned = True
        else:
            owned = False
        result = SpooledReport(app_id=app_id, report=report, timezone=self.timezone,
                               directory=Path(directory), quota=quota)
        if owned:
            weakref.finalize(result, shutil.rmtree, str(directory), True)
        with bearer_session(base_url, token, accept="text/csv", token_variable=TOKEN_VARIABLE) as session:
            self._fetch_window(session, base_url, token, app_id, report,
                               start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc),
                               result, log)
        return result

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
        log = log or _default_log
        base_url, token = self._connection()
        tz = ZoneInfo(self.timezone)
        start = dt.datetime.combine(first_day, dt.time(), tzinfo=tz)
        end = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), tzinfo=tz)
        window = _fmt_window(start, end, self.timezone)
        url = base_url + AGGREGATE_EXPORT_PATH.format(app_id=app_id, report=report)
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

    def fetch_cohort(self, app_id: str, body: dict[str, Any], log: Any = None) -> CohortResult:
        """POST one Cohort API query (exactly one KPI) and return its JSON result records.

        Calls are limited in-process to ``cohort_calls_per_minute`` per account; 429/5xx are
        retried with backoff. A 422 (the API rejected the body) raises
        :class:`AppsFlyerCohortRequestError` naming app, KPI and the API's message.
        """
        log = log or _default_log
        kpis = list(body.get("kpis") or [])
        kpi = kpis[0] if len(kpis) == 1 else ",".join(map(str, kpis))
        base_url, token = self._connection()
        waited = _COHORT_LIMITER.acquire(base_url, self.cohort_calls_per_minute,
                                         self.cohort_rate_window_seconds)
        if waited:
            log.info(f"AppsFlyer Cohort API: waited {waited:.1f} s to stay within "
                     f"{self.cohort_calls_per_minute} calls per {self.cohort_rate_window_seconds:g} s")
        window = f"cohorts {body.get('from')}..{body.get('to')} ({self.timezone})"
        report = f"cohort (kpi {kpi})"
        result = CohortResult(app_id=app_id, kpi=kpi)
        url = base_url + COHORT_PATH.format(app_id=app_id)
        with bearer_session(base_url, token, accept="application/json", token_variable=TOKEN_VARIABLE) as session:
            try:
                content = self._call(session, "POST", url, token, log, app_id=app_id, report=report,
                                     window=window, on_attempt=result.count_call,
                                     params={"format": "json"}, json=body)
            except AppsFlyerApiError as exc:
                if exc.status != 422:
                    raise
                raise AppsFlyerCohortRequestError(
                    f"AppsFlyer Cohort API rejected the query for app {app_id}, KPI {kpi!r}, "
                    f"{window}: {exc}. Fix the cohort_ltv configuration (kpis, groupings, "
                    f"cohort_type) and re-run; the query sent was {json.dumps(body, sort_keys=True)}",
                    app_id=app_id, report=report, window=window, status=422,
                ) from None
        try:
            payload = json.loads(content)
        except ValueError:
            payload = None
        records = payload.get("results") if isinstance(payload, dict) else payload
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            excerpt = redact(content[:_BODY_EXCERPT_CHARS].decode("utf-8", errors="replace"), token)
            raise AppsFlyerApiError(
                f"AppsFlyer {report} for app {app_id}, {window}: the answer is not the JSON "
                f"record list adpipes expects (a 'results' list of objects): {excerpt!r}",
                app_id=app_id, report=report, window=window, status=200,
            )
        result.records = records
        return result

    # -- internals ----------------------------------------------------------------------------

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

    def _fetch_window(self, session: requests.Session, base_url: str, token: str, app_id: str,
                      report: str, start: dt.datetime, end: dt.datetime, result: SpooledReport,
                      log: Any) -> None:
        path = result.directory / f"{app_id}-{report}-{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}.csv"
        self._get_with_retries(session, base_url, token, app_id, report, start, end, result, log, path)
        window = _fmt_window(start, end, self.timezone)
        try:
            header, rows = count_report_rows(path)
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise AppsFlyerApiError(
                f"AppsFlyer {report} for app {app_id}, window {window}: the response is not "
                f"well-formed UTF-8 CSV ({exc}); nothing was loaded. Re-run the partition; if it "
                "persists, report the response to AppsFlyer support.",
                app_id=app_id, report=report, window=window,
            ) from None
        if rows < self.maximum_rows:
            result.chunks.append(SpooledChunk(path, tuple(header), rows, (start, end)))
            return
        path.unlink()
        seconds = int((end - start).total_seconds())
        if seconds <= self.min_split_seconds:
            raise AppsFlyerTruncationError(
                f"AppsFlyer {report} for app {app_id}, window {window}: the response has "
                f"maximum_rows={self.maximum_rows} rows, so AppsFlyer truncated it, and the window is "
                f"already at the smallest split ({self.min_split_seconds} s). Rows would be lost, so "
                f"nothing was loaded. Raise maximum_rows (AppsFlyer accepts 1000000) or lower "
                f"min_split_seconds on the appsflyer_api resource, then re-run the partition.",
                app_id=app_id, report=report, window=window,
            )
        log.info(
            f"AppsFlyer {report} for app {app_id}, window {window}: {rows} rows = "
            f"maximum_rows, so the answer is truncated; splitting the window in halves"
        )
        # Whole seconds: the API's parameters have second precision.
        middle = start + dt.timedelta(seconds=seconds // 2)
        self._fetch_window(session, base_url, token, app_id, report, start, middle, result, log)
        self._fetch_window(session, base_url, token, app_id, report, middle, end, result, log)

    def _get_with_retries(self, session: requests.Session, base_url: str, token: str, app_id: str,
                          report: str, start: dt.datetime, end: dt.datetime, result: SpooledReport,
                          log: Any, path: Path) -> None:
        tz = ZoneInfo(self.timezone)
        # Wall times in the app timezone; `to` is inclusive, so the last second of the window.
        params = {
            "from": start.astimezone(tz).strftime(PARAM_TIME_FORMAT),
            "to": (end - dt.timedelta(seconds=1)).astimezone(tz).strftime(PARAM_TIME_FORMAT),
            "timezone": self.timezone,
            "maximum_rows": str(self.maximum_rows),
        }
        url = base_url + RAW_EXPORT_PATH.format(app_id=app_id, report=report)
        window = _fmt_window(start, end, self.timezone)
        self._call(session, "GET", url, token, log, app_id=app_id, report=report, window=window,
                   on_attempt=result.count_call, spool_to=path, params=params)

    def _call(self, session: requests.Session, method: str, url: str, token: str, log: Any, *,
              app_id: str, report: str, window: str, on_attempt: Any = None,
              spool_to: Path | None = None, **kwargs: Any) -> bytes:
        """One logical API call with retries; returns the 200 body or raises AppsFlyerApiError.

        ``on_attempt`` is called before each HTTP request is sent (every request spends quota)
        and may refuse it by raising (the call ledger's ``QuotaExceeded``). With
        ``spool_to``, a 200 body is streamed into that file instead (and ``b""`` returned).
        """
        context = dict(app_id=app_id, report=report, window=window)
        where = f"AppsFlyer {report} for app {app_id}, window {window}"

        def check(response: requests.Response) -> bytes:
            if spool_to is not None and response.status_code == 200:
                _spool_body(response, spool_to)
                return b""
            return self._check_response(response, token, where, context)

        def exhausted(exc: RetriesExhausted) -> AppsFlyerApiError:
            return AppsFlyerTransientError(
                f"{where}: {exc}. AppsFlyer or the network is having trouble: re-run the partition "
                "later (if it keeps failing, check status.appsflyer.com and the network path to "
                "the API).",
                status=exc.last.status, **context,
            )

        return self._call_with_retries(
            session, method, url, check=check, exhausted=exhausted, where=where, log=log,
            on_attempt=on_attempt, stream=spool_to is not None, **kwargs,
        )

    def _check_response(self, response: requests.Response, token: str, where: str,
                        context: dict[str, str]) -> bytes:
        status = response.status_code
        content = response.content
        if status == 200:
            if not content.strip():
                # A real empty report still has its header line: zero bytes is a failed export.
                raise TransientError("HTTP 200 with an empty body (not even a header line)", status)
            return content
        raise_for_transient_status(response, token)
        body = redact(content.decode("utf-8", errors="replace"), token).strip()
        excerpt = body[:_BODY_EXCERPT_CHARS]
        if status in (400, 403) and _QUOTA_PATTERN.search(body):
            raise AppsFlyerQuotaError(
                f"{where}: the daily API call quota is spent (HTTP {status}: {excerpt!r}). "
                f"AppsFlyer resets quotas at 00:00 UTC, next at {describe_reset()}; do not retry "
                "before then (every call spends quota), re-run the failed partitions after the reset.",
                status=status, **context,
            )
        if status == 401:
            raise AppsFlyerAuthError(
                f"{where}: HTTP 401, the API token is invalid or revoked ({excerpt!r}). AppsFlyer "
                f"revoked every token issued before {TOKEN_REVOCATION_CUTOFF}. Regenerate the "
                f"token in AppsFlyer (Security center > API tokens, a V2 token) and set "
                f"{TOKEN_VARIABLE}.",
                status=status, **context,
            )
        if status == 404:
            raise AppsFlyerNotFoundError(
                f"{where}: HTTP 404, the app id is wrong or the token belongs to an account "
                "without access to this app. Check APPSFLYER_ANDROID_APP_ID / "
                "APPSFLYER_IOS_APP_ID (Android: the package name; iOS: 'id' + App Store id) and "
                f"that {TOKEN_VARIABLE} comes from the account owning the app.",
                status=status, **context,
            )
        if status == 400 and "lookback" in body.lower():
            raise AppsFlyerLookbackError(
                f"{where}: AppsFlyer serves raw data for the last 90 days only ({excerpt!r}). "
                "Older partitions cannot be fetched again; they live in the archive database.",
                status=status, **context,
            )
        raise AppsFlyerApiError(f"{where}: HTTP {status}: {excerpt}", status=status, **context)


class AppsFlyerApps(dg.ConfigurableResource):
    """The app ids of the two platform apps (not secret, but environment specific)."""

    android_app_id: str = Field(description="Android package name, e.g. com.example.app")
    ios_app_id: str = Field(description="iOS app id: 'id' + App Store id, e.g. id123456789")

    def app_id(self, platform: str) -> str:
        if platform == "android":
            return self.android_app_id
        if platform == "ios":
            return self.ios_app_id
        raise ValueError(f"unknown platform {platform!r}: use 'android' or 'ios'")
