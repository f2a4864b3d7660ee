"""Airbridge resources: the revenue report API client (an asynchronous task, polled and paged).

The revenue report is not served in one call: ``POST .../revenue/query`` starts a task for at
most 92 days and answers ``{"data": {"taskId": ...}}``; ``GET .../revenue/query/{task_id}?skip=&size=``
answers the task's status at ``data.status`` (``PENDING``, ``RUNNING``, then ``SUCCESS``, or the
final ``FAILURE``/``CANCELED``) and, once it succeeded, one page of group rows with
``data.hasNext`` and ``data.metadata.totalCount``. Results can take up to 5 minutes, so the client
polls with a bounded wait, then pages until ``hasNext`` is false, within ``max_pages``.

Every request is checked against the document's limits and enums before any call
(:func:`adpipes.airbridge.contract.query_problems`); every answer is read at the document's JSON
paths (:mod:`adpipes.airbridge.contract`). Every HTTP call goes through ``adpipes.lib.http``
(timeouts, backoff for 429/5xx and connection errors, ``Retry-After``); the token travels only in
the ``Authorization`` header and never appears in a URL, log line, error or repr.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Optional
from zoneinfo import ZoneInfo

import dagster as dg
import requests
import tenacity
from pydantic import Field

from adpipes.airbridge.contract import (
    CANCELED,
    DATASPEC_PATH,
    DEFAULT_PAGE_SIZE,
    EVENTS_CATALOG,
    FAILURE,
    GROUPBYS_CATALOG,
    GRANULARITIES,
    MAX_RANGE_DAYS,
    METRICS_CATALOG,
    QUERY_PATH,
    RESULT_SPEC,
    SUCCESS,
    TASK_PATH,
    WAITING_STATUSES,
    AnswerShapeError,
    DateRow,
    GroupRow,
    Notification,
    catalog_findings,
    excerpt,
    generic_path,
    query_problems,
    read_catalog,
    read_created,
    read_problem,
    read_result_page,
    read_status,
)
from adpipes.lib.settings import (
    DEFAULT_AIRBRIDGE_BASE_URL,
    DEFAULT_AIRBRIDGE_GROUP_BY,
    ISO_CURRENCY,
    SANDBOX_AIRBRIDGE_APP_NAME,
    ConfigurationError,
    split_app_ids,
)
from adpipes.lib.http import (
    api_path,
    RetriesExhausted,
    TransientError,
    VendorApiError,
    VendorApiResource,
    bearer_session,
    raise_for_transient_status,
    redact,
)

REPORT = "revenue"
TOKEN_VARIABLE = "AIRBRIDGE_API_TOKEN"
APP_NAME_VARIABLE = "AIRBRIDGE_APP_NAME"
GROUP_BY_VARIABLE = "AIRBRIDGE_GROUP_BY"
CURRENCY_VARIABLE = "AIRBRIDGE_CURRENCY"
TOTAL_COUNT_MISMATCH_VARIABLE = "AIRBRIDGE_TOTAL_COUNT_MISMATCH"
# Where the undocumented keys of a group row sit in the answer: their paths in extra_fields are
# relative to it.
GROUP_ROW_PATH = "data.stats.rows[]"
# The table is one row per start-event day (report_date), so adpipes always asks for days.
GRANULARITY = "day"
# The Dagster concurrency pool of the steps calling the Airbridge reports API (limited in the
# shipped dagster.yaml, like every vendor API pool).
API_POOL = "airbridge_api"
# The document states no limit on pages. A server that keeps answering hasNext=true must not
# hang a run: 1000 pages of 50 group rows is far more than an app's channels x campaigns.
DEFAULT_MAX_PAGES = 1000

_default_log = logging.getLogger("adpipes.airbridge")


# -- errors --------------------------------------------------------------------------------------

class AirbridgeApiError(VendorApiError):
    """An Airbridge revenue report call failed; the message names app, date range and task."""

    app_name = window = ""
    task_id: str | None = None


class AirbridgeQueryError(AirbridgeApiError):
    """The query breaks the document's limits or enums; found before any call."""


class AirbridgeTransientError(AirbridgeApiError):
    """429/5xx/connection problems persisted through every attempt."""


class AirbridgeAuthError(AirbridgeApiError):
    """401/403: the token is invalid or has no access to the app."""


class AirbridgeNotFoundError(AirbridgeApiError):
    """404 (problem JSON): unknown app name or task id."""


class AirbridgeBadRequestError(AirbridgeApiError):
    """400 ``{}``: Airbridge refused the query without saying why."""


class AirbridgeTaskFailedError(AirbridgeApiError):
    """The report task ended FAILURE or CANCELED."""


class AirbridgeTaskTimeoutError(AirbridgeApiError):
    """The report task was still PENDING/RUNNING when the wait ran out."""


class AirbridgeResponseError(AirbridgeApiError):
    """The answer departs from the document's shape, or paging does not add up."""


# -- configuration -------------------------------------------------------------------------------

class RevenueFilter(dg.Config):
    """One entry of the query's ``filters``: keep groups whose ``field`` is IN ``values``."""

    field: str = Field(description="A group-by key, e.g. campaign (need not be one of group_by).")
    filterType: str = Field(default="IN", description="IN (the only filter type the document prints).")  # noqa: N815
    values: list[str] = Field(description="The values to keep.")


class RevenueSort(dg.Config):
    """One entry of the query's ``sorts``."""

    fieldName: str = Field(description="A requested group-by, or totalCost/totalRevenue/totalUniqueUsers.")  # noqa: N815
    isAscending: bool = Field(default=True)  # noqa: N815


def _as_dict(item: Any) -> dict[str, Any]:
    # Run config and model_copy(update=...) may hand over plain dicts; the body is plain JSON.
    return item.model_dump() if isinstance(item, dg.Config) else dict(item)


# -- result --------------------------------------------------------------------------------------

@dataclass
class RevenueTask:
    """One finished report task: its range and body, every group row of every page, what
    Airbridge noted (notifications) and the keys it sent that the document does not print: those
    in group rows travel with the rows (``extra_fields``), the others are ``page_fields``."""

    task_id: str
    start: dt.date
    end: dt.date
    body: dict[str, Any] = field(repr=False)
    rows: list[GroupRow] = field(default_factory=list, repr=False)
    notifications: list[Notification] = field(default_factory=list)
    # generic_path of every undocumented key of the task's answers.
    unknown_fields: set[str] = field(default_factory=set)
    # Undocumented keys outside the group rows, with their values: {answer ("query" or "result
    # page"), pages (the result pages carrying this path and value), path, value}.
    page_fields: list[dict[str, Any]] = field(default_factory=list)
    total_count: int | None = None
    # Set when a constant totalCount did not add up and total_count_mismatch is "warn": what came.
    total_count_mismatch: dict[str, Any] | None = None
    ended_at: str | None = None
    pages: int = 0
    polls: int = 0

    @property
    def window(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"

    @property
    def date_rows(self) -> int:
        return sum(len(row.dates) for row in self.rows)

    @property
    def days(self) -> list[str]:
        """The task's start-event days (partition keys), ``start`` through ``end``."""
        return [(self.start + dt.timedelta(days=n)).isoformat() for n in range((self.end - self.start).days + 1)]

    @property
    def page_unknown_fields(self) -> list[str]:
        """generic_path of the undocumented keys outside the group rows: they concern the whole
        task, every one of its days."""
        return sorted({generic_path(entry["path"]) for entry in self.page_fields})

    def row_unknown_fields(self) -> dict[str, list[str]]:
        """generic_path of the undocumented keys inside the group rows, by the start-event date
        whose table rows keep them in ``extra_fields``: a group row's own keys (and its range
        total's) go with every date of the group, a date's (and its Day-N values') with that
        date only."""
        by_date: dict[str, set[str]] = {}
        for row in self.rows:
            group_keys = set(row.extra_fields)
            for date_row in row.dates:
                keys = group_keys | set(date_row.extra_fields)
                for figure in date_row.values:
                    keys |= set(figure.extra_fields)
                if keys:
                    by_date.setdefault(date_row.date, set()).update(
                        generic_path(f"{GROUP_ROW_PATH}.{key}") for key in keys)
        return {date: sorted(paths) for date, paths in sorted(by_date.items())}

    def keep_page_fields(self, answer: str, page: int | None, fields: dict[str, Any]) -> None:
        """Keep every undocumented page-level key with its value; a path with the same value on
        several pages is one entry listing the pages."""
        for path, value in fields.items():
            self.unknown_fields.add(generic_path(path))
            entry = next((e for e in self.page_fields
                          if (e["answer"], e["path"], e["value"]) == (answer, path, value)), None)
            if entry is None:
                entry = {"answer": answer, "pages": [], "path": path, "value": value}
                self.page_fields.append(entry)
            if page is not None:
                entry["pages"].append(page)


@dataclass
class RevenueReport:
    app_name: str
    tasks: list[RevenueTask] = field(default_factory=list)
    # HTTP requests made, including retried attempts and status polls.
    calls: int = 0

    def count_call(self) -> None:
        self.calls += 1


def day_ranges(days: Sequence[dt.date], max_days: int = MAX_RANGE_DAYS) -> list[tuple[dt.date, dt.date]]:
    """Split days into [start, end] runs of consecutive days, each at most ``max_days`` long."""
    if max_days < 1:
        raise ValueError("max_days must be >= 1")
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in sorted(set(days)):
        if ranges:
            start, end = ranges[-1]
            if day == end + dt.timedelta(days=1) and (day - start).days < max_days:
                ranges[-1] = (start, day)
                continue
        ranges.append((day, day))
    return ranges


def group_by_collisions(group_by: Sequence[str]) -> list[str]:
    """Group-by keys that would overwrite one of the revenue table's own columns (channel and
    campaign are the table's group-by columns and are fine)."""
    # Imported here: the schema module is the table, this module the API.
    from adpipes.airbridge.schemas import GROUP_BY_COLUMNS, REVENUE_TABLE

    own = set(REVENUE_TABLE.column_names) - set(GROUP_BY_COLUMNS)
    return [key for key in group_by if key in own]


# -- resource ------------------------------------------------------------------------------------

class AirbridgeApi(VendorApiResource):
    """Airbridge revenue report API (v3). In dev, ``api_token``/``base_url`` left as None point at
    the local sandbox; in prod pass ``dagster.EnvVar("AIRBRIDGE_API_TOKEN")``."""

    api_token: Optional[str] = Field(
        default=None, repr=False, description="Airbridge API token (Bearer)."
    )
    app_name: str = Field(
        description="Airbridge app name(s) (the unique id in Airbridge URLs), comma-separated for "
        "several apps (AIRBRIDGE_APP_NAME): each app is asked for its own report (app_names()).")
    base_url: Optional[str] = Field(
        default=None, description="e.g. https://api.airbridge.io."
    )
    currency: str = Field(
        description="ISO code of the app's currency in Airbridge (AIRBRIDGE_CURRENCY): Airbridge "
        "reports money in the app's local currency and does not say which in its answers."
    )
    timezone: str = Field(
        default="Asia/Seoul",
        description="The Airbridge app's timezone (ADPIPES_TIMEZONE): from/to are dates there, and "
        "'to' may not be after today there.",
    )
    group_by: list[str] = Field(
        default=list(DEFAULT_AIRBRIDGE_GROUP_BY),
        description="groupBy.fields (AIRBRIDGE_GROUP_BY): each becomes a column of airbridge.revenue.",
    )
    start_events: list[str] = Field(default=["app_install"], description="startEvents (documented enum).")
    return_events: list[str] = Field(default=["app_order_complete"], description="returnEvents (documented enum).")
    metric: str = Field(default="app_revenue", description="metric of the Day-N values (documented enum).")
    aggregation_type: str = Field(
        default="cumulative",
        description="aggregationType: cumulative (Day N includes Days 0..N-1) or on-day (Day N only).",
    )
    intervals_period: int = Field(
        default=GRANULARITIES[GRANULARITY][0],
        description="intervalsPeriod: Day-N values per start-event day, Day 0 first (0..120 for days).",
    )
    filters: list[RevenueFilter] = Field(default=[], description="filters: group-by values to keep (IN).")
    sorts: Optional[list[RevenueSort]] = Field(
        default=None,
        description="sorts. None: the group-by fields ascending, so pages follow a stable order.",
    )
    max_days_per_task: int = Field(
        default=MAX_RANGE_DAYS, description="Days per report task; the API refuses more than 92."
    )
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, description="Group rows per result page (size); the API's default is 50.")
    max_pages: int = Field(
        default=DEFAULT_MAX_PAGES,
        description="Result pages per task at most: a server that keeps answering hasNext=true fails the run.",
    )
    total_count_mismatch: Literal["fail", "warn"] = Field(
        default="fail",
        description=f"({TOTAL_COUNT_MISMATCH_VARIABLE}) What a data.metadata.totalCount that is the "
        "same on every page but matches neither the group rows nor the (group, date) rows received "
        "does: fail the run (nothing is loaded: rows may be missing), or warn (paging relies on "
        "hasNext alone; the mismatch is logged, kept in airbridge/total_count_mismatches and fails "
        "the total_count check as a warning on the task's rows). Airbridge's document does not say "
        "what totalCount counts: switch to warn only if it turns out to count something else. A "
        "totalCount that changes between pages fails the run either way.",
    )
    poll_interval_seconds: float = Field(default=5.0, description="Wait between status polls of a task.")
    task_timeout_seconds: float = Field(
        default=600.0, description="Give up on a task still PENDING/RUNNING after this long (Airbridge: up to 5 minutes)."
    )

    # -- connection ---------------------------------------------------------------------------

    def _missing_token_error(self) -> Exception:
        return AirbridgeAuthError(f"no Airbridge API token: set {TOKEN_VARIABLE}", app_name=self.app_name)

    # -- the query ----------------------------------------------------------------------------

    def request_body(self, start: dt.date, end: dt.date) -> dict[str, Any]:
        """The revenue query body: every field the document marks required, plus intervalsPeriod
        and resultSpec as printed in its example."""
        sorts = ([_as_dict(s) for s in self.sorts] if self.sorts is not None
                 else [{"fieldName": name, "isAscending": True} for name in self.group_by])
        return {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "groupBy": {"fields": list(self.group_by)},
            "granularity": GRANULARITY,
            "intervalsPeriod": self.intervals_period,
            "startEvents": list(self.start_events),
            "returnEvents": list(self.return_events),
            "metric": self.metric,
            "aggregationType": self.aggregation_type,
            "filters": [_as_dict(f) for f in self.filters],
            "sorts": sorts,
            "resultSpec": RESULT_SPEC,
        }

    def today(self) -> dt.date:
        return dt.datetime.now(ZoneInfo(self.timezone)).date()

    def _check_query(self, ranges: Sequence[tuple[dt.date, dt.date]]) -> None:
        """Every limit adpipes can check without Airbridge, before the first call."""
        problems = []
        if not ISO_CURRENCY.fullmatch(self.currency or ""):
            problems.append(f"currency={self.currency!r} must be an ISO 4217 code such as KRW ({CURRENCY_VARIABLE})")
        collisions = group_by_collisions(self.group_by)
        if collisions:
            problems.append(f"group_by keys {collisions} are columns of airbridge.revenue itself ({GROUP_BY_VARIABLE})")
        if not 1 <= self.max_days_per_task <= MAX_RANGE_DAYS:
            problems.append(f"max_days_per_task={self.max_days_per_task} must be 1..{MAX_RANGE_DAYS}")
        if self.page_size < 1 or self.max_pages < 1:
            problems.append("page_size and max_pages must be >= 1")
        today = self.today()
        for start, end in ranges:
            problems += [f"{start}..{end}: {p}" for p in query_problems(self.request_body(start, end), today)]
        if problems:
            raise AirbridgeQueryError(
                f"Airbridge revenue report for app {self.app_name}: the query breaks the API's "
                f"documented rules, nothing was sent:\n  - " + "\n  - ".join(dict.fromkeys(problems))
                + "\nFix the airbridge_api resource settings (or AIRBRIDGE_GROUP_BY).",
                app_name=self.app_name,
            )

    # -- public API ---------------------------------------------------------------------------

    def app_names(self) -> tuple[str, ...]:
        """The configured app names, in the order given (``app_name`` may list several)."""
        names = split_app_ids(self.app_name or "")
        if not names:
            raise AirbridgeQueryError(f"no Airbridge app is configured: set {APP_NAME_VARIABLE}")
        return names

    def check_query(self, days: Sequence[dt.date]) -> None:
        """Every documented limit of the query for these days, checked before any call (the query
        is the same for every app). Raises ``AirbridgeQueryError``."""
        self._check_query(day_ranges(days, max(1, self.max_days_per_task)))

    def fetch_revenue(self, days: Sequence[dt.date], log: Any = None, app_name: str | None = None) -> RevenueReport:
        """Every group row of ``app_name``'s revenue report (default: the only configured app)
        for these start-event days: one task per run of at most ``max_days_per_task`` consecutive
        days, each polled to completion and paged through.

        Raises a subclass of ``AirbridgeApiError``.
        """
        names = self.app_names()
        if app_name is None:
            if len(names) != 1:
                raise ValueError(f"{len(names)} Airbridge apps are configured ({', '.join(names)}): "
                                 "fetch_revenue asks for one, name it with app_name")
            app_name = names[0]
        if app_name != self.app_name:
            # The same client for one app: every URL, message and error below names self.app_name.
            return self.model_copy(update={"app_name": app_name}).fetch_revenue(days, log=log)
        # A max_days_per_task out of 1..92 is reported by _check_query, before any call.
        ranges = day_ranges(days, max(1, self.max_days_per_task))
        self._check_query(ranges)
        log = log or _default_log
        base_url, token = self._connection()
        report = RevenueReport(app_name=self.app_name)
        with bearer_session(base_url, token, token_variable=TOKEN_VARIABLE) as session:
            for start, end in ranges:
                report.tasks.append(self._run_task(session, base_url, token, start, end, report, log))
        # Once per run, and only now that every answer is in: a task Airbridge computed after
        # midnight rightly carries the new day's Day N, which a "today" taken before the calls
        # would refuse.
        today = self.today()
        for task in report.tasks:
            self._check_days_passed(task, today)
        return report

    # -- internals ----------------------------------------------------------------------------

    def _where(self, start: dt.date, end: dt.date, task_id: str | None = None) -> str:
        task = f", task {task_id}" if task_id else ""
        return f"Airbridge revenue report for app {self.app_name}, {start.isoformat()}..{end.isoformat()}{task}"

    def _task_error(self, kind: type[AirbridgeApiError], task: RevenueTask, message: str) -> AirbridgeApiError:
        """A ``kind`` error about ``task``: the message is prefixed with app, range and task id."""
        return kind(f"{self._where(task.start, task.end, task.task_id)}: {message}",
                    app_name=self.app_name, window=task.window, task_id=task.task_id)

    def _run_task(self, session: requests.Session, base_url: str, token: str, start: dt.date,
                  end: dt.date, report: RevenueReport, log: Any) -> RevenueTask:
        body = self.request_body(start, end)
        url = base_url + api_path(QUERY_PATH, app_name=self.app_name)
        where = self._where(start, end)
        try:
            created = self._call(session, "POST", url, token, log, start=start, end=end,
                                 on_attempt=report.count_call, json=body)
        except AirbridgeBadRequestError as exc:
            raise self._bad_request(exc, session, base_url, token, body, log) from None
        task_id, page_fields = self._read(read_created, created, where, start, end)
        task = RevenueTask(task_id=task_id, start=start, end=end, body=body)
        task.keep_page_fields("query", None, page_fields)
        log.info(f"{self._where(start, end, task_id)}: task started; polling every "
                 f"{self.poll_interval_seconds:g} s for up to {self.task_timeout_seconds:g} s")
        answer = self._wait_for_task(session, base_url, token, task, report, log)
        self._page_through(session, base_url, token, task, answer, report, log)
        log.info(f"{self._where(start, end, task_id)}: {len(task.rows)} group rows ({task.date_rows} "
                 f"group-date rows) in {task.pages} page(s) after {task.polls} poll(s)")
        return task

    def _read(self, reader: Any, answer: Any, where: str, start: dt.date, end: dt.date,
              task_id: str | None = None, *args: Any) -> Any:
        """Run a contract reader; a shape it does not know becomes an AirbridgeResponseError."""
        try:
            return reader(answer, where, *args)
        except AnswerShapeError as exc:
            raise AirbridgeResponseError(
                f"{exc}. The answer departs from Airbridge's documented shape; nothing was loaded.",
                app_name=self.app_name, window=f"{start}..{end}", task_id=task_id,
            ) from None

    def _page_through(self, session: requests.Session, base_url: str, token: str, task: RevenueTask,
                      answer: dict[str, Any], report: RevenueReport, log: Any) -> None:
        """Read pages until ``data.hasNext`` is false; check what came against totalCount.

        The document is silent on what skip, size and totalCount count. adpipes takes skip and
        size to count the group rows of ``data.stats.rows`` (skip advances by the group rows
        received) and accepts a totalCount equal to either the group rows or the (group, date)
        rows received: its printed page shows totalCount 48 beside one group row, plausibly
        8 dates x 6 channels. A count that changes between pages fails the run; any other
        constant count fails it unless ``total_count_mismatch`` is "warn". A group row without
        dates, a (group, date) served twice, or a page beyond ``max_pages`` fails the run;
        nothing is loaded.
        """
        fields = list(self.group_by)
        seen: set[tuple[tuple[str, ...], str]] = set()
        counts: list[int] = []
        skip = 0
        while True:
            where = f"{self._where(task.start, task.end, task.task_id)}, page {task.pages + 1} (skip {skip})"
            page = self._read(read_result_page, answer, where, task.start, task.end, task.task_id, fields, skip)
            task.pages += 1
            if page.task_id != task.task_id:
                raise self._task_error(AirbridgeResponseError, task,
                                       f"page {task.pages} is of task {page.task_id!r}; nothing was loaded")
            for index, row in enumerate(page.rows, start=skip):
                self._check_group_row(task, index, row)
                for date_row in row.dates:
                    self._check_date_row(task, index, row, date_row, seen)
            task.rows.extend(page.rows)
            counts.append(page.total_count)
            task.ended_at = page.ended_at
            task.notifications += [n for n in page.notifications if n not in task.notifications]
            task.unknown_fields.update(page.unknown_fields)
            task.keep_page_fields("result page", task.pages, page.page_fields)
            if not page.has_next:
                break
            if not page.rows:
                raise self._task_error(AirbridgeResponseError, task,
                                       f"page {task.pages} (skip {skip}) has no rows but hasNext=true; nothing was loaded")
            if task.pages >= self.max_pages:
                raise self._task_error(
                    AirbridgeResponseError, task,
                    f"Airbridge still answered hasNext=true after {task.pages} pages of up to "
                    f"{self.page_size} group rows (max_pages={self.max_pages}); stopped so that a "
                    "server that never stops paging cannot hang the run, and nothing was loaded. "
                    "If the report really is this long, raise max_pages or page_size on the "
                    "airbridge_api resource.",
                )
            skip += len(page.rows)
            answer = self._get_page(session, base_url, token, task, skip, report, log)
            status = self._read(read_status, answer, where, task.start, task.end, task.task_id)
            if status != SUCCESS:
                raise self._task_error(AirbridgeResponseError, task,
                                       f"the task answered status {status} while paging at skip={skip} "
                                       "after SUCCESS; nothing was loaded, re-run the partition(s).")
        self._check_total_count(task, counts, log)

    def _check_group_row(self, task: RevenueTask, index: int, row: GroupRow) -> None:
        """A group row has dates: the table's rows are per date, so a group without any would
        leave no row to hold its figures or the undocumented keys it carries."""
        if row.dates:
            return
        raise self._task_error(
            AirbridgeResponseError, task,
            f"group row {index} {json.dumps(row.group, ensure_ascii=False)} came with an empty rows "
            "list (no dates). Airbridge's document prints every group row with its dates in rows[] "
            "(each with date, total and values; values[n] is Day n), and airbridge.revenue has one "
            "row per date and Day N, so this group would have no row: its figures and any keys the "
            "document does not print that it carries (kept in extra_fields of a group's rows) would "
            "be lost. Nothing was loaded. Re-run the partition(s); if it persists, report it to "
            f"Airbridge with the task id {task.task_id}.",
        )

    def _check_days_passed(self, task: RevenueTask, today: dt.date) -> None:
        """No date carries Day-N values for days still to come: Day N of a start-event date
        exists once N days have passed in the app's timezone, so a padded answer cannot store
        future days as figures."""
        for index, row in enumerate(task.rows):
            for date_row in row.dates:
                passed = (today - dt.date.fromisoformat(date_row.date)).days
                if len(date_row.values) <= passed + 1:
                    continue
                raise self._task_error(
                    AirbridgeResponseError, task,
                    f"group row {index} {json.dumps(row.group, ensure_ascii=False)}, date "
                    f"{date_row.date} has {len(date_row.values)} Day-N values, but only {passed} "
                    f"day(s) have passed since {date_row.date} (today is {today} in {self.timezone}, "
                    f"the app's timezone): Day N exists once N days have passed, so at most Days "
                    f"0..{passed} ({passed + 1} values). The values beyond would be stored as figures "
                    "of days that have not come; nothing was loaded. Check that ADPIPES_TIMEZONE is "
                    "the Airbridge app's timezone; re-run the partition(s); if it persists, report it "
                    f"to Airbridge with the task id {task.task_id}.",
                )

    def _check_date_row(self, task: RevenueTask, index: int, row: GroupRow, date_row: DateRow,
                        seen: set[tuple[tuple[str, ...], str]]) -> None:
        """One (group, date) of a page: inside the task's range, served once, and with the Day-N
        values the document prints for it."""
        date = date_row.date
        name = f"group row {index} {json.dumps(row.group, ensure_ascii=False)}, date {date}"
        if not task.start.isoformat() <= date <= task.end.isoformat():
            raise self._task_error(AirbridgeResponseError, task,
                                   f"{name} is outside the task's range {task.window}; nothing was loaded")
        key = (tuple(row.group.values()), date)
        if key in seen:
            raise self._task_error(AirbridgeResponseError, task,
                                   f"{name} was served twice (paging overlapped); nothing was loaded")
        seen.add(key)
        # The document prints a values list for every date, starting with Day 0, and partitions
        # end yesterday, so Day 0 of every date asked for has passed. An empty list is a shape
        # the document does not know: storing nothing would lose the date's totals.
        if not date_row.values:
            raise self._task_error(
                AirbridgeResponseError, task,
                f"{name} came with an empty values list. Airbridge's document prints a values list "
                "for every date (values[n] is Day n, from Day 0), and Day 0 of every date adpipes "
                "asks for has passed, so this answer has a shape adpipes does not know; the date's "
                "totals (totalCost, totalRevenue, totalUniqueUsers) would have no row. Nothing was "
                "loaded. Re-run the partition(s); if it persists, report it to Airbridge with the "
                f"task id {task.task_id}.",
            )
        # "intervalsPeriod: at most this many intervals, starting with interval 0", read as
        # Days 0..N: more than N+1 values cannot be placed on a Day N.
        intervals = task.body["intervalsPeriod"]
        if len(date_row.values) > intervals + 1:
            raise self._task_error(
                AirbridgeResponseError, task,
                f"{name} has {len(date_row.values)} Day-N values, but intervalsPeriod={intervals} "
                "was requested: Airbridge's document gives at most intervalsPeriod intervals, "
                f"starting with interval 0, which adpipes reads as Days 0..{intervals} "
                f"({intervals + 1} values). The values cannot be matched to days; nothing was "
                "loaded. Re-run the partition(s); if it persists, report it to Airbridge with the "
                f"task id {task.task_id}.",
            )

    def _check_total_count(self, task: RevenueTask, counts: list[int], log: Any) -> None:
        """totalCount is the same on every page and is the group rows or the (group, date) rows
        received.

        A count that changes between pages means the result set moved while adpipes paged
        through it (skip-based pages may have skipped rows or served some twice): that always
        fails. A constant count matching neither unit fails too (rows may be missing), unless
        ``total_count_mismatch`` is "warn" (totalCount counts something else): then what hasNext
        paged through is kept and the mismatch recorded on the task (the asset fails its
        total_count check as a warning on the task's rows)."""
        task.total_count = counts[-1]
        received = (f"paging returned {len(task.rows)} group rows ({task.date_rows} group-date rows) in "
                    f"{task.pages} page(s)")
        changes = [(page, count) for page, count in enumerate(counts, start=1)
                   if page == 1 or count != counts[page - 2]]
        if len(changes) > 1:
            raise self._task_error(
                AirbridgeResponseError, task,
                "totalCount changed between pages ("
                + ", ".join(f"{count} from page {page}" for page, count in changes)
                + f"; {received}): the report's rows changed while adpipes paged through them, so "
                "rows may have been skipped or served twice. Nothing was loaded, whatever "
                f"{TOTAL_COUNT_MISMATCH_VARIABLE} says. Re-run the partition(s) (a new task is "
                "requested); if it persists, report it to Airbridge with the task id "
                f"{task.task_id}.",
            )
        if task.total_count in (len(task.rows), task.date_rows):
            return
        what = f"Airbridge reported totalCount={task.total_count} on every page but {received}"
        if self.total_count_mismatch == "warn":
            task.total_count_mismatch = {
                "task_id": task.task_id, "range": task.window, "total_count": task.total_count,
                "group_rows": len(task.rows), "group_date_rows": task.date_rows, "pages": task.pages,
            }
            log.warning(
                f"{self._where(task.start, task.end, task.task_id)}: {what}; loaded what paging "
                f"returned until hasNext was false ({TOTAL_COUNT_MISMATCH_VARIABLE}=warn). The "
                "total_count check fails as a warning on the task's rows; recorded in "
                "airbridge/total_count_mismatches."
            )
            return
        raise self._task_error(
            AirbridgeResponseError, task,
            f"{what}, nothing was loaded (rows would be lost or counted twice). Re-run the "
            "partition(s); if it persists, compare with the revenue report in the Airbridge "
            "dashboard. Airbridge's document does not say what totalCount counts: if the rows are "
            f"all there and totalCount counts something else, set {TOTAL_COUNT_MISMATCH_VARIABLE}=warn "
            "to page by hasNext alone (the total_count check then warns on the rows of such a task).",
        )

    def _wait_for_task(self, session: requests.Session, base_url: str, token: str, task: RevenueTask,
                       report: RevenueReport, log: Any) -> dict[str, Any]:
        """Poll the first result page until the task leaves PENDING/RUNNING; return that answer."""
        where = self._where(task.start, task.end, task.task_id)
        statuses: list[str] = []

        def log_wait(state: tenacity.RetryCallState) -> None:
            log.info(f"{where}: {statuses[-1]} after {state.seconds_since_start or 0:.0f} s")

        polling = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda _: statuses[-1] in WAITING_STATUSES),
            wait=tenacity.wait_fixed(self.poll_interval_seconds),
            stop=tenacity.stop_after_delay(self.task_timeout_seconds),
            before_sleep=log_wait,
        )

        def poll() -> dict[str, Any]:
            task.polls += 1
            answer = self._get_page(session, base_url, token, task, 0, report, log)
            statuses.append(self._read(read_status, answer, where, task.start, task.end, task.task_id))
            return answer

        try:
            answer = polling(poll)
        except tenacity.RetryError:
            raise self._task_error(
                AirbridgeTaskTimeoutError, task,
                f"still {statuses[-1]} after {self.task_timeout_seconds:g} s and "
                f"{task.polls} polls (Airbridge says results can take up to 5 minutes). Re-run the "
                "partition(s) later, or raise task_timeout_seconds on the airbridge_api resource.",
            ) from None
        status = statuses[-1]
        if status in (FAILURE, CANCELED):
            reason = "failed" if status == FAILURE else "was canceled"
            raise self._task_error(
                AirbridgeTaskFailedError, task,
                f"the report task {reason} (data.status {status}). Nothing was loaded; re-run the "
                "partition(s) (a new task is requested). If it keeps failing, open the revenue "
                "report with the same settings in the Airbridge dashboard.",
            )
        return answer

    def _get_page(self, session: requests.Session, base_url: str, token: str, task: RevenueTask,
                  skip: int, report: RevenueReport, log: Any) -> Any:
        url = base_url + api_path(TASK_PATH, app_name=self.app_name, task_id=task.task_id)
        return self._call(session, "GET", url, token, log, start=task.start, end=task.end,
                          task_id=task.task_id, on_attempt=report.count_call,
                          params={"skip": skip, "size": self.page_size})

    def _call(self, session: requests.Session, method: str, url: str, token: str, log: Any, *,
              start: dt.date, end: dt.date, task_id: str | None = None, on_attempt: Any = None,
              **kwargs: Any) -> Any:
        """One logical API call with retries; returns the answer's JSON."""
        where = self._where(start, end, task_id)
        context = dict(app_name=self.app_name, window=f"{start.isoformat()}..{end.isoformat()}", task_id=task_id)

        def exhausted(exc: RetriesExhausted) -> AirbridgeApiError:
            return AirbridgeTransientError(
                f"{where}: {exc}. Airbridge or the network is having trouble (429 means Airbridge "
                "saw too many requests): re-run the partition(s) later.",
                status=exc.last.status, **context,
            )

        return self._call_with_retries(
            session, method, url, check=lambda response: self._check_response(response, token, where, context),
            exhausted=exhausted, where=where, log=log, on_attempt=on_attempt, **kwargs,
        )

    def _check_response(self, response: requests.Response, token: str, where: str,
                        context: dict[str, Any]) -> Any:
        status = response.status_code
        raise_for_transient_status(response, token)
        body = redact(response.content.decode("utf-8", errors="replace"), token).strip()
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        shown = excerpt(payload) if payload is not None else repr(body[:300])
        if status == 200:
            if payload is None:
                raise TransientError(f"HTTP 200 with a body that is not JSON: {body[:120]!r}", status)
            return payload
        if status in (401, 403):
            raise AirbridgeAuthError(
                f"{where}: HTTP {status}, the API token is invalid or has no access to this app "
                f"({shown}). Copy the API token from Airbridge (Settings > Tokens) into "
                f"{TOKEN_VARIABLE}.",
                status=status, **context,
            )
        if status == 404:
            problem = read_problem(payload)
            said = (f"{problem['title']} (traceId {problem['traceId']}, give it to Airbridge support)"
                    if problem else f"not the documented problem JSON: {shown}")
            raise AirbridgeNotFoundError(
                f"{where}: HTTP 404, {said}. The app name is wrong (set {APP_NAME_VARIABLE} to the "
                "app name shown in Airbridge URLs) or the task id is unknown or expired (re-run the "
                "partition(s)).",
                status=status, **context,
            )
        if status == 400:
            raise AirbridgeBadRequestError(f"{where}: HTTP 400 {shown}", status=status, **context)
        raise AirbridgeApiError(f"{where}: HTTP {status}: {shown}", status=status, **context)

    def _bad_request(self, error: AirbridgeBadRequestError, session: requests.Session, base_url: str,
                     token: str, body: dict[str, Any], log: Any) -> AirbridgeBadRequestError:
        """The 400 answer is ``{}`` (as printed: no reason). Say what was sent, ask Airbridge's
        metadata endpoints which group-by, metric or event it does not offer, list what to check."""
        start, end = dt.date.fromisoformat(body["from"]), dt.date.fromisoformat(body["to"])
        try:
            answers = [
                self._call(session, "GET", base_url + api_path(DATASPEC_PATH, app_name=self.app_name, catalog=name),
                           token, log, start=start, end=end)
                for name in (METRICS_CATALOG, GROUPBYS_CATALOG, EVENTS_CATALOG)
            ]
            catalog = read_catalog(*answers, f"{self._where(start, end)}: metadata endpoints")
            findings = catalog_findings(catalog, body) or [
                "the metadata endpoints offer every group-by, filter field, metric and event adpipes sent"
            ]
        except (AirbridgeApiError, AnswerShapeError) as exc:
            findings = [f"the metadata endpoints could not be asked ({exc})"]
        return AirbridgeBadRequestError(
            f"{error} (Airbridge's documented 400 answer names no reason). adpipes sent: "
            f"{json.dumps(body, ensure_ascii=False)}.\nFrom Airbridge's metadata endpoints:\n  - "
            + "\n  - ".join(findings)
            + f"\nCheck: the group-by keys ({GROUP_BY_VARIABLE}) and filters against the app's "
            "group-bys; metric and aggregation_type (some metrics support one type only); "
            "start_events/return_events against the app's events; that the range is at most "
            f"{MAX_RANGE_DAYS} days and not after today in the Airbridge app's timezone; and that "
            "the token belongs to this app.",
            status=error.status, app_name=self.app_name, window=f"{start}..{end}",
        )


def airbridge_api_from_settings(settings: Any, api_class: type[AirbridgeApi] = AirbridgeApi) -> AirbridgeApi:
    """The ``airbridge_api`` resource for the environment: the sandbox in dev (``api_class`` is then
    dev mode's subclass, which finds the sandbox), EnvVars in prod.

    A group-by key that is one of the revenue table's own columns fails here, at load."""
    collisions = group_by_collisions(settings.airbridge_group_by)
    if collisions:
        raise ConfigurationError(
            f"{GROUP_BY_VARIABLE} names {', '.join(collisions)}, which airbridge.revenue has as its "
            "own column(s): each group-by becomes a column of that table. Remove "
            f"{', '.join(collisions)} from {GROUP_BY_VARIABLE}."
        )
    query = dict(group_by=list(settings.airbridge_group_by), currency=settings.airbridge_currency,
                 timezone=settings.timezone,
                 total_count_mismatch=getattr(settings, "airbridge_total_count_mismatch", "fail"))
    if settings.is_dev:
        # Dev always talks to the sandbox (None = find or start it), never a real account.
        return api_class(api_token=None, base_url=None, app_name=SANDBOX_AIRBRIDGE_APP_NAME, **query)
    base_url_variable = "AIRBRIDGE_BASE_URL"
    return AirbridgeApi(
        api_token=dg.EnvVar(TOKEN_VARIABLE),
        app_name=dg.EnvVar(APP_NAME_VARIABLE),
        base_url=dg.EnvVar(base_url_variable) if settings.is_set(base_url_variable) else DEFAULT_AIRBRIDGE_BASE_URL,
        **query,
    )
