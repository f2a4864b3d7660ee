"""Airbridge resources: the revenue report API client (an asynchronous task, polled and paged).

The revenue report is not served in one call: ``POST .../revenue/query`` starts a task for at
most 92 days and answers its id; ``GET .../revenue/query/{task_id}?skip=&size=`` answers the
task's status (``PENDING``, ``RUNNING``, then ``SUCCESS``, or the final ``FAILURE``/``CANCELED``)
and, once it succeeded, one page of rows (50 by default). Results can take up to 5 minutes, so
the client polls with a bounded wait, then pages until every row is in. A task that fails, is
canceled or outlives the wait raises an error naming the app, the date range and the task id.

Every HTTP call goes through ``adpipes.lib.http`` (timeouts, tenacity backoff for 429/5xx and
connection errors, ``Retry-After``); the token travels only in the ``Authorization`` header and
never appears in a URL, log line, error or repr.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import dagster as dg
import requests
import tenacity
from pydantic import Field

from adpipes.lib.http import (
    RetriesExhausted,
    TransientError,
    VendorApiError,
    VendorApiResource,
    bearer_session,
    raise_for_transient_status,
    redact,
)

REPORT = "revenue"
QUERY_PATH = "/reports/api/v3/apps/{app_name}/revenue/query"
TASK_PATH = QUERY_PATH + "/{task_id}"
TOKEN_VARIABLE = "AIRBRIDGE_API_TOKEN"
APP_NAME_VARIABLE = "AIRBRIDGE_APP_NAME"
# The API refuses ranges longer than this; longer partition ranges become several tasks.
MAX_DAYS_PER_TASK = 92
# The Dagster concurrency pool of the steps calling the Airbridge reports API (limited in the
# shipped dagster.yaml, like every vendor API pool).
API_POOL = "airbridge_api"
# The group-bys that become table columns; more may be requested (kept in group_values).
REQUIRED_GROUP_BY = ("channel", "campaign")
MAX_GROUP_BY_FIELDS = 4

PENDING, RUNNING, SUCCESS, FAILURE, CANCELED = "PENDING", "RUNNING", "SUCCESS", "FAILURE", "CANCELED"
WAITING_STATUSES = (PENDING, RUNNING)
_BODY_EXCERPT_CHARS = 300

_default_log = logging.getLogger("adpipes.airbridge")


# -- errors --------------------------------------------------------------------------------------

class AirbridgeApiError(VendorApiError):
    """An Airbridge revenue report call failed; the message names app, date range and task."""

    app_name = window = ""
    task_id: str | None = None


class AirbridgeTransientError(AirbridgeApiError):
    """429/5xx/connection problems persisted through every attempt."""


class AirbridgeAuthError(AirbridgeApiError):
    """401/403: the token is invalid or has no access to the app."""


class AirbridgeNotFoundError(AirbridgeApiError):
    """404: unknown app name (or task id)."""


class AirbridgeBadRequestError(AirbridgeApiError):
    """400: Airbridge refused the request body (range, group-bys, events, metric...)."""


class AirbridgeTaskFailedError(AirbridgeApiError):
    """The report task ended FAILURE or CANCELED."""


class AirbridgeTaskTimeoutError(AirbridgeApiError):
    """The report task was still PENDING/RUNNING when the wait ran out."""


class AirbridgeResponseError(AirbridgeApiError):
    """The answer does not have the shape adpipes reads (or rows went missing while paging)."""


# -- result --------------------------------------------------------------------------------------

@dataclass
class RevenueTask:
    """One finished report task: its date range, every row of every page, its notifications."""

    task_id: str
    start: dt.date
    end: dt.date
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0
    polls: int = 0

    @property
    def window(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


@dataclass
class RevenueReport:
    app_name: str
    tasks: list[RevenueTask] = field(default_factory=list)
    # HTTP requests made, including retried attempts and status polls.
    calls: int = 0

    def count_call(self) -> None:
        self.calls += 1

    @property
    def row_count(self) -> int:
        return sum(len(t.rows) for t in self.tasks)


def day_ranges(days: Sequence[dt.date], max_days: int = MAX_DAYS_PER_TASK) -> list[tuple[dt.date, dt.date]]:
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


def _notifications(payload: dict[str, Any]) -> list[dict[str, Any]]:
    # The docs point at notification[0].code; accept a single object too rather than lose it.
    raw = payload.get("notification", payload.get("notifications"))
    if not raw:
        return []
    items = raw if isinstance(raw, list) else [raw]
    return [item if isinstance(item, dict) else {"code": str(item)} for item in items]


# -- resource ------------------------------------------------------------------------------------

class AirbridgeApi(VendorApiResource):
    """Airbridge revenue report API (v3). In dev, ``api_token``/``base_url`` left as None point at
    the local sandbox; in prod pass ``dagster.EnvVar("AIRBRIDGE_API_TOKEN")``."""

    api_token: Optional[str] = Field(
        default=None, repr=False, description="Airbridge API token (Bearer). None: the dev sandbox's token."
    )
    app_name: str = Field(description="Airbridge app name (the unique id in Airbridge URLs).")
    base_url: Optional[str] = Field(
        default=None, description="e.g. https://api.airbridge.io. None: the dev sandbox."
    )
    group_by: list[str] = Field(
        default=list(REQUIRED_GROUP_BY),
        description="groupBy.fields: must include channel and campaign; at most 4.",
    )
    start_events: list[str] = Field(default=["app_install"], description="startEvents (app_install, app_deeplink_open).")
    return_events: list[str] = Field(default=["app_order_complete"], description="returnEvents: the revenue events.")
    metric: str = Field(default="app_revenue", description="metric of the Day-N values.")
    aggregation_type: str = Field(
        default="cumulative", description="aggregationType: cumulative (Day N includes Days 0..N-1) or per day."
    )
    intervals_period: int = Field(
        default=30, description="intervalsPeriod: Day-N values per cohort are Day 0..this (API max 120 for day)."
    )
    max_days_per_task: int = Field(
        default=MAX_DAYS_PER_TASK, description="Days per report task; the API refuses more than 92."
    )
    page_size: int = Field(default=50, description="Rows per result page (size); the API's default is 50.")
    poll_interval_seconds: float = Field(default=5.0, description="Wait between status polls of a task.")
    task_timeout_seconds: float = Field(
        default=600.0, description="Give up on a task still PENDING/RUNNING after this long (Airbridge: up to 5 minutes)."
    )

    # -- connection ---------------------------------------------------------------------------

    def _sandbox_token(self, sandbox: Any) -> str:
        return sandbox.airbridge_token

    def _missing_token_error(self) -> Exception:
        return AirbridgeAuthError(f"no Airbridge API token: set {TOKEN_VARIABLE}", app_name=self.app_name)

    def request_body(self, start: dt.date, end: dt.date) -> dict[str, Any]:
        """The revenue query body (field names from Airbridge's Request Report reference)."""
        return {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "groupBy": {"fields": list(self.group_by)},
            "granularity": "day",
            "intervalsPeriod": self.intervals_period,
            "startEvents": list(self.start_events),
            "returnEvents": list(self.return_events),
            "metric": self.metric,
            "aggregationType": self.aggregation_type,
        }

    def _check_config(self) -> None:
        missing = [f for f in REQUIRED_GROUP_BY if f not in self.group_by]
        if missing or len(self.group_by) > MAX_GROUP_BY_FIELDS:
            raise ValueError(
                f"airbridge_api.group_by={self.group_by} must include {list(REQUIRED_GROUP_BY)} "
                f"(they are columns of airbridge.revenue) and have at most {MAX_GROUP_BY_FIELDS} fields"
            )
        if not 1 <= self.max_days_per_task <= MAX_DAYS_PER_TASK:
            raise ValueError(f"airbridge_api.max_days_per_task must be 1..{MAX_DAYS_PER_TASK}")
        if self.page_size < 1:
            raise ValueError("airbridge_api.page_size must be >= 1")

    # -- public API ---------------------------------------------------------------------------

    def fetch_revenue(self, days: Sequence[dt.date], log: Any = None) -> RevenueReport:
        """Every row of the revenue report for these cohort days: one task per run of at most
        ``max_days_per_task`` consecutive days, each polled to completion and paged through.

        Raises a subclass of ``AirbridgeApiError``.
        """
        self._check_config()
        log = log or _default_log
        base_url, token = self._connection()
        report = RevenueReport(app_name=self.app_name)
        with bearer_session(base_url, token, token_variable=TOKEN_VARIABLE) as session:
            for start, end in day_ranges(days, self.max_days_per_task):
                report.tasks.append(self._run_task(session, base_url, token, start, end, report, log))
        return report

    # -- internals ----------------------------------------------------------------------------

    def _where(self, start: dt.date, end: dt.date, task_id: str | None = None) -> str:
        task = f", task {task_id}" if task_id else ""
        return f"Airbridge revenue report for app {self.app_name}, {start.isoformat()}..{end.isoformat()}{task}"

    def _run_task(self, session: requests.Session, base_url: str, token: str, start: dt.date,
                  end: dt.date, report: RevenueReport, log: Any) -> RevenueTask:
        url = base_url + QUERY_PATH.format(app_name=self.app_name)
        created = self._call(session, "POST", url, token, log, start=start, end=end,
                             on_attempt=report.count_call, json=self.request_body(start, end))
        task_id = created.get("taskId")
        if not isinstance(task_id, (str, int)) or task_id == "":
            raise AirbridgeResponseError(
                f"{self._where(start, end)}: the query answer has no data.taskId "
                f"({json.dumps(created)[:_BODY_EXCERPT_CHARS]}); Airbridge changed its API?",
                app_name=self.app_name, window=f"{start}..{end}",
            )
        task = RevenueTask(task_id=str(task_id), start=start, end=end)
        log.info(f"{self._where(start, end, task.task_id)}: task started; polling every "
                 f"{self.poll_interval_seconds:g} s for up to {self.task_timeout_seconds:g} s")
        page = self._wait_for_task(session, base_url, token, task, report, log)
        while True:
            rows = self._page_rows(page, task)
            task.rows.extend(rows)
            task.pages += 1
            for notice in _notifications(page):
                if notice not in task.notifications:
                    task.notifications.append(notice)
            total = (page.get("report") or {}).get("totalCount")
            # Stop on an empty page or once totalCount rows are in, never on a short page: the
            # server may cap `size` below the page size asked for.
            if not rows or (isinstance(total, int) and len(task.rows) >= total):
                break
            page = self._get_page(session, base_url, token, task, len(task.rows), report, log)
            status = (page.get("task") or {}).get("status")
            if status != SUCCESS:
                raise self._task_error(
                    AirbridgeResponseError, task,
                    f"the task answered status {status!r} "
                    f"while paging at skip={len(task.rows)} after SUCCESS; re-run the partition(s).",
                )
        if isinstance(total, int) and len(task.rows) != total:
            raise self._task_error(
                AirbridgeResponseError, task,
                f"Airbridge reported totalCount={total} rows "
                f"but paging returned {len(task.rows)}; nothing was loaded (rows would be lost). "
                "Re-run the partition(s).",
            )
        log.info(f"{self._where(start, end, task.task_id)}: {len(task.rows)} rows in {task.pages} "
                 f"page(s) after {task.polls} poll(s)")
        return task

    def _task_error(self, kind: type[AirbridgeApiError], task: RevenueTask, message: str) -> AirbridgeApiError:
        """A ``kind`` error about ``task``: the message is prefixed with app, range and task id."""
        return kind(f"{self._where(task.start, task.end, task.task_id)}: {message}",
                    app_name=self.app_name, window=task.window, task_id=task.task_id)

    def _page_rows(self, page: dict[str, Any], task: RevenueTask) -> list[dict[str, Any]]:
        rows = (page.get("report") or {}).get("rows")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise self._task_error(
                AirbridgeResponseError, task,
                f"a SUCCESS answer without a "
                f"report.rows list ({json.dumps(page)[:_BODY_EXCERPT_CHARS]})",
            )
        return rows

    def _wait_for_task(self, session: requests.Session, base_url: str, token: str, task: RevenueTask,
                       report: RevenueReport, log: Any) -> dict[str, Any]:
        """Poll the first result page until the task leaves PENDING/RUNNING; return that page."""
        where = self._where(task.start, task.end, task.task_id)

        def status_of(page: dict[str, Any]) -> str:
            return str((page.get("task") or {}).get("status", ""))

        def log_wait(state: tenacity.RetryCallState) -> None:
            page = state.outcome.result() if state.outcome else {}
            log.info(f"{where}: {status_of(page)} after {state.seconds_since_start or 0:.0f} s")

        polling = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda page: status_of(page) in WAITING_STATUSES),
            wait=tenacity.wait_fixed(self.poll_interval_seconds),
            stop=tenacity.stop_after_delay(self.task_timeout_seconds),
            before_sleep=log_wait,
        )

        def poll() -> dict[str, Any]:
            task.polls += 1
            return self._get_page(session, base_url, token, task, 0, report, log)

        try:
            page = polling(poll)
        except tenacity.RetryError as exc:
            last = exc.last_attempt.result()
            raise self._task_error(
                AirbridgeTaskTimeoutError, task,
                f"still {status_of(last)} after {self.task_timeout_seconds:g} s and "
                f"{task.polls} polls (Airbridge says results can take up to 5 minutes). Re-run the "
                "partition(s) later, or raise task_timeout_seconds on the airbridge_api resource.",
            ) from None
        status = status_of(page)
        if status in (FAILURE, CANCELED):
            detail = (page.get("task") or {}).get("message") or ""
            reason = "failed" if status == FAILURE else "was canceled"
            raise self._task_error(
                AirbridgeTaskFailedError, task,
                f"the report task {reason} (status {status}{': ' + str(detail) if detail else ''}). "
                "Nothing was loaded; re-run the partition(s) (a new task is requested). If it keeps "
                "failing, check the query settings (group_by, events, metric) in the Airbridge "
                "revenue report UI.",
            )
        if status != SUCCESS:
            raise self._task_error(
                AirbridgeResponseError, task,
                f"unknown task status {status!r} (expected {PENDING}, {RUNNING}, {SUCCESS}, "
                f"{FAILURE} or {CANCELED})",
            )
        return page

    def _get_page(self, session: requests.Session, base_url: str, token: str, task: RevenueTask,
                  skip: int, report: RevenueReport, log: Any) -> dict[str, Any]:
        url = base_url + TASK_PATH.format(app_name=self.app_name, task_id=task.task_id)
        return self._call(session, "GET", url, token, log, start=task.start, end=task.end,
                          task_id=task.task_id, on_attempt=report.count_call,
                          params={"skip": skip, "size": self.page_size})

    def _call(self, session: requests.Session, method: str, url: str, token: str, log: Any, *,
              start: dt.date, end: dt.date, task_id: str | None = None, on_attempt: Any = None,
              **kwargs: Any) -> dict[str, Any]:
        """One logical API call with retries; returns the answer's ``data`` object."""
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
                        context: dict[str, Any]) -> dict[str, Any]:
        status = response.status_code
        raise_for_transient_status(response, token)
        body = redact(response.content.decode("utf-8", errors="replace"), token).strip()
        excerpt = body[:_BODY_EXCERPT_CHARS]
        if status == 200:
            try:
                payload = json.loads(body)
            except ValueError:
                raise TransientError(f"HTTP 200 with a body that is not JSON: {excerpt[:120]!r}", status) from None
            # The query answer wraps its result in "data" ({"data": {"taskId": ...}}); accept an
            # unwrapped answer too, since the docs do not show the poll answer's envelope.
            data = payload.get("data", payload) if isinstance(payload, dict) else None
            if not isinstance(data, dict):
                raise AirbridgeResponseError(f"{where}: unexpected answer {excerpt!r}", status=status, **context)
            return data
        if status in (401, 403):
            raise AirbridgeAuthError(
                f"{where}: HTTP {status}, the API token is invalid or has no access to this app "
                f"({excerpt!r}). Copy the API token from Airbridge (Settings > Tokens) into "
                f"{TOKEN_VARIABLE}.",
                status=status, **context,
            )
        if status == 404:
            raise AirbridgeNotFoundError(
                f"{where}: HTTP 404 ({excerpt!r}): the app name is wrong (set {APP_NAME_VARIABLE} to "
                "the app name shown in Airbridge URLs) or the task id expired.",
                status=status, **context,
            )
        if status == 400:
            raise AirbridgeBadRequestError(
                f"{where}: Airbridge refused the request (HTTP 400: {excerpt!r}). Check the "
                "airbridge_api settings (group_by, start_events, return_events, metric, "
                "aggregation_type, intervals_period) and that the range is at most 92 days and "
                "not in the future.",
                status=status, **context,
            )
        raise AirbridgeApiError(f"{where}: HTTP {status}: {excerpt}", status=status, **context)


def airbridge_api_from_settings(settings: Any) -> AirbridgeApi:
    """The ``airbridge_api`` resource for the environment: the sandbox in dev, EnvVars in prod."""
    from adpipes.lib.settings import DEFAULT_AIRBRIDGE_BASE_URL, SANDBOX_AIRBRIDGE_APP_NAME

    if settings.is_dev:
        # Dev always talks to the sandbox (None = find or start it), never a real account.
        return AirbridgeApi(api_token=None, base_url=None, app_name=SANDBOX_AIRBRIDGE_APP_NAME)
    base_url_variable = "AIRBRIDGE_BASE_URL"
    return AirbridgeApi(
        api_token=dg.EnvVar(TOKEN_VARIABLE),
        app_name=dg.EnvVar(APP_NAME_VARIABLE),
        base_url=dg.EnvVar(base_url_variable) if settings.is_set(base_url_variable) else DEFAULT_AIRBRIDGE_BASE_URL,
    )
