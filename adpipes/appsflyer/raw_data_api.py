"""AppsFlyer Pull API V2 raw data: the client of ``GET /api/raw-data/export/app/{app_id}/{report}/v5``.

The Pull API has no paging and no truncation flag: a response with exactly ``maximum_rows`` data
rows, or exactly AppsFlyer's default cap of 200,000 (a server may apply it whatever was asked), has
silently lost the rest. The client therefore halves such windows (down to ``min_split_seconds``)
and fails loudly when a window cannot be split further. A cap below those counts cannot be seen in
one answer: the raw report assets catch it by comparing a day with its archived copy. Calls count
against a small daily quota (about 24 a day per app for installs, 12 for in-app events), so daily
quota answers are never retried, while 429/5xx, connection errors and the known zero-byte 200 are.
Responses are streamed to files (a raw day can be a million rows) and counted, never held in
memory.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import shutil
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import requests
from pydantic import Field, field_validator

from adpipes.appsflyer.api import (
    PARAM_TIME_FORMAT,
    QUOTA_VENDOR,
    TOKEN_VARIABLE,
    AppsFlyerApiBase,
    AppsFlyerApiError,
    AppsFlyerTruncationError,
    default_log,
    fmt_window,
)
from adpipes.lib.http import api_path, bearer_session
from adpipes.lib.quota import ApiCallLedger, QuotaMeter
from adpipes.lib.storage.delivered import make_spool_directory
from adpipes.lib.storage.paced_reads import paced_csv_batches

INSTALLS_REPORT = "installs_report"
IN_APP_EVENTS_REPORT = "in_app_events_report"

RAW_EXPORT_PATH = "/api/raw-data/export/app/{app_id}/{report}/v5"
# AppsFlyer serves raw data for the last 90 days only ("historical lookback is limited to 90
# days"), and one call covers at most 60 days of installs or 31 days of in-app events.
RAW_LOOKBACK_DAYS = 90

# What a row of a raw report is attributed to (the raw_data column ``attribution``).
NON_ORGANIC, ORGANIC, RETARGETING = "non_organic", "organic", "retargeting"
ATTRIBUTIONS = (NON_ORGANIC, ORGANIC, RETARGETING)


@dataclass(frozen=True)
class RawReport:
    """One Pull API V2 raw report: its path segment (AppsFlyer's OpenAPI file
    ``raw_data_pull_api_tokenv2.yaml``; the names are irregular, so they are written out), the
    short name of its per-platform asset (``appsflyer/{platform}_{short}``), what its rows are
    attributed to, the days one call may cover and the usual plan's daily calls per app."""

    name: str
    short: str
    attribution: str
    # "installs" (installs, uninstalls, reinstalls: 60 days a call) or "events" (31 days).
    kind: str
    window_days: int
    default_daily_quota: int


def _report(name: str, short: str, attribution: str, kind: str) -> RawReport:
    # Windows and quotas: 60 days / 24 calls for install-like reports, 31 days / 12 calls for
    # in-app events (AppsFlyer's raw data guide and "Report generation quotas" article give these
    # for installs, uninstalls and in-app events; they are silent on reinstalls and the organic and
    # retargeting variants, which are assumed to follow their kind: set APPSFLYER_DAILY_QUOTAS to
    # your plan's figures).
    window, quota = (60, 24) if kind == "installs" else (31, 12)
    return RawReport(name, short, attribution, kind, window, quota)


# Every raw report adpipes pulls, in the order of AppsFlyer's OpenAPI file. V2 has its own paths
# for retargeting (``reattr=true`` was the V1 form).
RAW_REPORTS = {r.name: r for r in (
    _report(INSTALLS_REPORT, "installs", NON_ORGANIC, "installs"),
    _report(IN_APP_EVENTS_REPORT, "in_app_events", NON_ORGANIC, "events"),
    _report("uninstall_events_report", "uninstalls", NON_ORGANIC, "installs"),
    _report("reinstalls", "reinstalls", NON_ORGANIC, "installs"),
    _report("organic_installs_report", "organic_installs", ORGANIC, "installs"),
    _report("organic_in_app_events_report", "organic_in_app_events", ORGANIC, "events"),
    _report("organic_uninstall_events_report", "organic_uninstalls", ORGANIC, "installs"),
    _report("reinstalls_organic", "organic_reinstalls", ORGANIC, "installs"),
    _report("installs-retarget", "retargeting_installs", RETARGETING, "installs"),
    _report("in-app-events-retarget", "retargeting_in_app_events", RETARGETING, "events"),
)}
RAW_WINDOW_DAYS = {r.name: r.window_days for r in RAW_REPORTS.values()}
DEFAULT_DAILY_QUOTAS = {r.name: r.default_daily_quota for r in RAW_REPORTS.values()}
# The `currency` parameter's values (AppsFlyer's raw data OpenAPI file): the currency set on the
# app, or US dollars.
CURRENCIES = ("preferred", "USD")
# Dagster concurrency pool of the steps calling the raw data API (limited in the shipped
# dagster.yaml; raw exports are also the steps that need the most memory).
RAW_DATA_API_POOL = "appsflyer_raw_data_api"
# AppsFlyer's default `maximum_rows`: an answer this long is cut off whatever was asked, since a
# server (or a plan) that ignores `maximum_rows=1000000` caps at the default.
DEFAULT_MAXIMUM_ROWS = 200_000


# -- result --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpooledChunk:
    """One raw-report response, spooled to disk as delivered (header line first).

    ``problem``: why the response cannot be read as a report (not CSV, not UTF-8), or None. Such a
    response is kept as delivered (its ``rows`` are 0: they could not be counted) so that its
    owner can keep it whole instead of loading it.
    """

    path: Path
    header: tuple[str, ...]
    rows: int
    window: tuple[dt.datetime, dt.datetime]
    problem: str | None = None


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

    @property
    def unreadable(self) -> list[SpooledChunk]:
        """The responses that could not be read as CSV (see ``SpooledChunk.problem``)."""
        return [c for c in self.chunks if c.problem]

    def to_arrow(self) -> pa.Table:
        """Every chunk parsed into one table of string columns (for inspection and tests)."""
        tables = [parse_report_csv(c.path) for c in self.chunks]
        if not tables:
            return pa.table({})
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")



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


# Bytes of a spooled report parsed at a time when only some of it is needed (counting rows,
# reading key columns): memory stays flat whatever the report's size.
REPORT_BLOCK_BYTES = 4 << 20


def parse_report_csv(source: bytes | Path) -> pa.Table:
    """Parse one raw-report CSV reading every column as text, by header name.

    IDs read as numbers would come back as ``1000000186.0`` and lose leading zeros, and AppsFlyer
    adds columns over time, so no column is typed here.
    """
    data = str(source) if isinstance(source, Path) else pa.py_buffer(source)
    return pacsv.read_csv(data, **_csv_options(read_header(source)))


def iter_report_columns(path: Path, headers: list[str]) -> Iterator[pa.RecordBatch]:
    """Only the named header columns of a report CSV, as text (empty cells are ""), a block of
    ``REPORT_BLOCK_BYTES`` at a time (paced: a few blocks read ahead of the batch the caller is
    at): ``read_csv`` tokenizes the whole file at once, every column of it, and a raw report of
    300K events held ~300 MB of Arrow memory for three key columns."""
    options = _csv_options(headers)
    options["convert_options"].include_columns = list(headers)
    options["read_options"].block_size = REPORT_BLOCK_BYTES
    yield from paced_csv_batches(path, **options)


def count_report_rows(path: Path) -> tuple[list[str], int]:
    """Header names and data-row count of a spooled report, parsed a block at a time.

    Parsing (rather than counting line breaks) is what makes the count right when values hold
    quoted line breaks, and it fails on a malformed file before anything is loaded.
    """
    names = read_header(path)
    options = _csv_options(names)
    # Converting one column is enough to count rows; every row is still tokenized and checked.
    options["convert_options"].include_columns = names[:1]
    # Small blocks, paced: the file is read faster than it is parsed, and pyarrow's own read-ahead
    # held most of a 300K-event report (+155 MB) while counting it.
    options["read_options"].block_size = REPORT_BLOCK_BYTES
    return names, sum(batch.num_rows for batch in paced_csv_batches(path, **options))


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
    column = f"c{chunk.header.index('Event Time')}"
    # Columns by position: a vendor header may repeat a name. Every cell is text; an empty cell
    # stays empty (COPY's NULL) and a quoted "" stays an empty string, as in an unsplit answer.
    names = [f"c{i}" for i in range(len(chunk.header))]
    reader = paced_csv_batches(
        chunk.path,
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=SPLIT_BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, null_values=[""],
                                             strings_can_be_null=True, quoted_strings_can_be_null=False),
    )
    first_key, last_key = first.isoformat(), last.isoformat()
    outputs: dict[str, tuple[Any, Path]] = {}
    counts: dict[str, int] = {}
    options = pacsv.WriteOptions(include_header=False)
    try:
        # Parsed and written by Arrow a block at a time: Python's csv module took ~46 us a row
        # (a 7-day backfill of 700K in-app events spent half its step here), and memory holds
        # one block whatever the answer's size.
        for batch in reader:
            days = _event_days(batch.column(column), first_key, last_key)
            present = pc.unique(days).to_pylist()
            for day in present:
                rows = batch if len(present) == 1 else batch.filter(pc.equal(days, day))
                if day not in outputs:
                    path = chunk.path.with_name(f"{chunk.path.stem}-{day}.csv")
                    handle = path.open("wb")
                    buffer = io.StringIO()
                    csv.writer(buffer, lineterminator="\n").writerow(chunk.header)
                    handle.write(buffer.getvalue().encode("utf-8"))
                    outputs[day] = (handle, path)
                pacsv.write_csv(rows, outputs[day][0], options)
                counts[day] = counts.get(day, 0) + rows.num_rows
    finally:
        reader.close()
        for handle, _ in outputs.values():
            handle.close()
    if sum(counts.values()) != chunk.rows:
        raise AppsFlyerApiError(
            f"AppsFlyer response {chunk.path.name}: split into days, it has {sum(counts.values())} "
            f"rows where {chunk.rows} were counted; nothing was loaded. Re-run the partitions."
        )
    chunk.path.unlink()
    return [
        (day, SpooledChunk(path, chunk.header, counts[day], chunk.window))
        for day, (_, path) in sorted(outputs.items())
    ]


# Bytes of an answer parsed at a time when it is split by day.
SPLIT_BLOCK_BYTES = 4 << 20
# What an Event Time starts with when it names a day (RE2, ASCII digits).
_DAY_PREFIX = r"^\d{4}-\d{2}-\d{2}[ T]"


def _event_days(stamps: pa.Array, first: str, last: str) -> pa.Array:
    """Each row's partition day from its Event Time: the day it starts with (``yyyy-mm-dd``
    followed by a space or ``T``) when that is a calendar day within first..last, else ``first``
    (an empty or unreadable time, a day the calendar lacks, a day outside the window)."""
    prefix = pc.fill_null(pc.match_substring_regex(stamps, _DAY_PREFIX), False)
    text = pc.utf8_slice_codeunits(stamps, 0, 10)
    calendar = pc.is_valid(exact_strptime(text, "%Y-%m-%d"))
    inside = pc.and_(pc.greater_equal(text, first), pc.less_equal(text, last))
    usable = pc.and_(pc.and_(prefix, calendar), pc.fill_null(inside, False))
    return pc.if_else(usable, text, pa.scalar(first))


def exact_strptime(text: pa.Array, format: str) -> pa.Array:
    """Arrow's ``strptime`` (second unit; null where the text does not parse), except that a date
    or time the calendar lacks is null too: strptime rolls it over (2026-02-30 -> 2026-03-02,
    23:59:60 -> the next day), so only a value that spells back to its text is kept. ``format``
    spells a prefix of ``yyyy-mm-dd hh:mm:ss`` (``%Y-%m-%d``, ``%Y-%m-%d %H:%M:%S``): Arrow's cast of
    a second-unit timestamp to text spells it that way, at a fifteenth of ``strftime``'s cost."""
    parsed = pc.strptime(text, format=format, unit="s", error_is_null=True)
    width = len(dt.datetime(2000, 1, 1).strftime(format))
    spelled = pc.utf8_slice_codeunits(pc.cast(parsed, pa.string()), 0, width)
    return pc.if_else(pc.fill_null(pc.equal(spelled, text), False), parsed, pa.scalar(None, parsed.type))


def _looks_like_html(path: Path) -> bool:
    with path.open("rb") as handle:
        start = handle.read(256).removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body"))


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



# -- resource ------------------------------------------------------------------------------------

class AppsFlyerRawDataApi(AppsFlyerApiBase):
    """AppsFlyer Pull API V2 raw data reports (installs, in-app events, ...), as CSV files."""

    maximum_rows: int = Field(
        default=1_000_000,
        description="Rows per call; the real API accepts 200000 or 1000000 only. A response with "
        "this many rows is treated as truncated and its window is split.",
    )
    timeout_seconds: float = Field(default=300, description="Read timeout per call (big days are slow).")
    min_split_seconds: int = Field(
        default=3600, description="Windows this short are not split further when truncated."
    )
    currency: str = Field(
        default="USD",
        description="`currency` of every raw call: 'preferred' (the currency set on the app in "
        "AppsFlyer) or 'USD' (APPSFLYER_CURRENCY).",
    )
    daily_quotas: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_DAILY_QUOTAS),
        description="Calls a day per app your AppsFlyer plan allows, per raw report (quotas reset "
        "at 00:00 UTC; APPSFLYER_DAILY_QUOTAS). The call ledger refuses a range that would exceed "
        "them before calling. Reports not named keep the usual plan's quota.",
    )

    @field_validator("daily_quotas")
    @classmethod
    def _with_default_quotas(cls, quotas: dict[str, int]) -> dict[str, int]:
        # A plan naming only some reports (e.g. more in-app events calls) keeps the others' quota.
        return {**DEFAULT_DAILY_QUOTAS, **quotas}

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, currency: str) -> str:
        if currency not in CURRENCIES:
            raise ValueError(f"currency must be one of {CURRENCIES} (AppsFlyer's values), got {currency!r}")
        return currency

    # -- public API ---------------------------------------------------------------------------

    def truncated(self, rows: int) -> bool:
        """Whether an answer of ``rows`` rows hit a row cap: the one asked for, or AppsFlyer's
        default (a real day of exactly 200,000 rows costs two more calls, never rows)."""
        return rows >= self.maximum_rows or rows == DEFAULT_MAXIMUM_ROWS

    def quota_meter(self, ledger: ApiCallLedger, app_id: str, report: str) -> QuotaMeter:
        """The ledger's meter of one app's report, with this plan's daily quota of that report."""
        return ledger.meter(QUOTA_VENDOR, app_id, report, self.daily_quotas.get(report))

    def fetch_raw_report(self, app_id: str, report: str, start: dt.datetime, end: dt.datetime,
                         log: Any = None, directory: Path | None = None,
                         quota: QuotaMeter | None = None) -> SpooledReport:
        """Fetch raw report rows with Event Time in ``[start, end)`` (tz-aware datetimes).

        Responses are streamed into files in ``directory`` (a new temporary directory if None).
        Windows returning ``maximum_rows`` rows (or AppsFlyer's default cap) are halved until
        complete; each piece is retried on transient failures. A 200 that is not readable CSV is
        returned as a chunk with a ``problem``, as delivered, not raised: the caller keeps it. With ``quota``, every request is counted in the call ledger first,
        which refuses (``QuotaExceeded``) once the day's quota is spent. Raises a subclass of
        ``AppsFlyerApiError``, or ``QuotaExceeded``.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware datetimes")
        if end <= start:
            raise ValueError(f"empty window: end {end} is not after start {start}")
        if start.microsecond or end.microsecond:
            raise ValueError("start and end must be whole seconds (the API's precision)")
        log = log or default_log
        base_url, token = self._connection()
        if directory is None:
            directory = make_spool_directory("adpipes-appsflyer-")
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

    def _fetch_window(self, session: requests.Session, base_url: str, token: str, app_id: str,
                      report: str, start: dt.datetime, end: dt.datetime, result: SpooledReport,
                      log: Any) -> None:
        path = result.directory / f"{app_id}-{report}-{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}.csv"
        self._get_with_retries(session, base_url, token, app_id, report, start, end, result, log, path)
        window = fmt_window(start, end, self.timezone)
        problem = None
        if _looks_like_html(path):
            # A maintenance or error page served with status 200: one line of it would pass as a
            # CSV header without rows.
            problem = "an HTML page, not a CSV report"
        else:
            try:
                header, rows = count_report_rows(path)
            except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
                problem = f"not well-formed UTF-8 CSV ({str(exc).strip()[:300]})"
        if problem:
            log.error(f"AppsFlyer {report} for app {app_id}, window {window}: the response is {problem}")
            result.chunks.append(SpooledChunk(path, (), 0, (start, end), problem=problem))
            return
        if not self.truncated(rows):
            result.chunks.append(SpooledChunk(path, tuple(header), rows, (start, end)))
            return
        path.unlink()
        seconds = int((end - start).total_seconds())
        if seconds <= self.min_split_seconds:
            raise AppsFlyerTruncationError(
                f"AppsFlyer {report} for app {app_id}, window {window}: the response has {rows} rows "
                f"(maximum_rows={self.maximum_rows}; AppsFlyer's default cap is {DEFAULT_MAXIMUM_ROWS}), "
                "so AppsFlyer truncated it, and the window is "
                f"already at the smallest split ({self.min_split_seconds} s). Rows would be lost, so "
                f"nothing was loaded. Raise maximum_rows (AppsFlyer accepts 1000000) or lower "
                f"min_split_seconds on the appsflyer_raw_data_api resource, then re-run the partition.",
                app_id=app_id, report=report, window=window,
            )
        log.info(
            f"AppsFlyer {report} for app {app_id}, window {window}: {rows} rows, a row cap "
            f"(maximum_rows={self.maximum_rows}, default {DEFAULT_MAXIMUM_ROWS}), so the answer is "
            "truncated; splitting the window in halves"
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
            "currency": self.currency,
        }
        url = base_url + api_path(RAW_EXPORT_PATH, app_id=app_id, report=report)
        window = fmt_window(start, end, self.timezone)
        self._call(session, "GET", url, token, log, app_id=app_id, report=report, window=window,
                   on_attempt=result.count_call, spool_to=path, params=params)


# -- late events ---------------------------------------------------------------------------------

# AppsFlyer keeps an event's own time only if the event arrives by 02:00 UTC of the UTC day after
# it happened; later arrivals are stamped with their arrival time (S2S events API, "timestamp"
# section). So a local day's in-app events are complete only after that hour following its last
# instant: a day pulled earlier can still grow. The sandbox holds its late rows back until then.
LATE_EVENTS_CLOSE_UTC = dt.time(2, 0)


def late_events_close(day: dt.date, timezone: str) -> dt.datetime:
    """When in-app events of local ``day`` (in ``timezone``) stop arriving with their own time:
    02:00 UTC of the UTC day after the day's last instant (Asia/Seoul 2026-11-29: 2026-11-30
    02:00 UTC; America/New_York 2026-11-29: 2026-12-01 02:00 UTC). Aware, in UTC."""
    next_midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=ZoneInfo(timezone))
    last_instant = next_midnight.astimezone(dt.timezone.utc) - dt.timedelta(microseconds=1)
    return dt.datetime.combine(last_instant.date() + dt.timedelta(days=1), LATE_EVENTS_CLOSE_UTC,
                               tzinfo=dt.timezone.utc)
