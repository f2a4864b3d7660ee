"""Airbridge revenue report endpoints of the sandbox: an asynchronous task with paged results.

``POST /reports/api/v3/apps/{app_name}/revenue/query`` validates the body like the real API
(``from``/``to`` as ``YYYY-MM-DD``, at most 92 days, no future dates, ``groupBy.fields`` 1-4,
``granularity``, ``startEvents``, ``returnEvents``, ``metric``, ``aggregationType``) and answers
``{"data": {"taskId": ...}}``. ``GET .../revenue/query/{task_id}?skip=&size=`` answers the task's
status, ``PENDING`` then ``RUNNING`` for a configurable number of polls, then ``SUCCESS`` with one
page of rows (``size`` defaults to 50, like the real API), or ``FAILURE``/``CANCELED`` when a
fault asked for it.

The public docs name ``task.status`` and ``notification[0].code`` in the poll answer and say rows
are grouped with ``metadata`` holding the group-by values; they do not publish the rest of the
JSON, so the sandbox uses this shape (adpipes' client reads exactly this, see
``adpipes.airbridge.resources``)::

    {"data": {"task": {"taskId": "...", "status": "SUCCESS"},
              "notification": [{"code": "SAN_PERIOD_LIMIT", "message": "..."}],
              "report": {"totalCount": 12, "skip": 0, "size": 50,
                         "rows": [{"metadata": {"channel": "...", "campaign": "..."},
                                   "data": [{"date": "2026-11-20",
                                             "values": [{"value": 12.5, "isMasked": false}, ...],
                                             "total": {"cost": 1.0, "revenue": 2.0,
                                                       "uniqueUsers": 3}}]}]}}}

``values[n]`` is Day n (the 0th interval included). Data is a pure function of (app, cohort
day, channel, campaign, today): a cohort only has values for days that have already happened, so
recent cohorts grow a value per day, as in the real report. Groups with few users are masked
(``isMasked: true``, ``value: null``), as Airbridge does for privacy thresholds and Meta data.

Sandbox-only configuration (``configure(server, ...)`` or ``POST /_sandbox/airbridge/config``):
``apps``, ``polls_pending``, ``polls_running``, ``groups_per_day``, ``notifications`` (extra codes
served with every task). Faults use ``server.take_fault(app_name, "revenue")`` and kinds
``429``, ``500``, ``503``, ``slow``, ``token_revoked``, ``task_failure``, ``task_canceled`` and
``task_stuck`` (never leaves RUNNING). State resets with ``server.reset()``.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
import random
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from adpipes.lib.sandbox.server import CONTROL_PREFIX, Request, Response

if TYPE_CHECKING:
    from adpipes.lib.sandbox.server import SandboxServer

REPORT = "revenue"
QUERY_PATH = r"/reports/api/v3/apps/(?P<app_name>[^/]+)/revenue/query"
TASK_PATH = QUERY_PATH + r"/(?P<task_id>[^/]+)"
CONFIG_PATH = re.escape(CONTROL_PREFIX) + "airbridge/config"

MAX_RANGE_DAYS = 92
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
DEFAULT_INTERVALS = {"day": 30}
MAX_INTERVALS = {"day": 120}
MAX_GROUP_BY_FIELDS = 4
START_EVENTS = ("app_install", "app_deeplink_open")
AGGREGATION_TYPES = ("cumulative", "on_day", "daily")
# Airbridge drops data of self-attributing networks (Meta, ...) older than this many days.
SAN_PERIOD_DAYS = 175
MASKING_USER_THRESHOLD = 30
TIMEZONE = "Asia/Seoul"

INVALID_TOKEN_MESSAGE = "Invalid API token"
MASKING_CODE = "AGG_DATA_MASKING_BY_FACEBOOK"
SAN_CODE = "SAN_PERIOD_LIMIT"

# (channel, campaigns): Airbridge channel names are lowercase ids like google.adwords.
_BASE_GROUPS = (
    ("google.adwords", "KR_UAC_Install, AOS"),
    ("google.adwords", 'Brand "Search" KR'),
    ("facebook.business", "KR_Spring_Sale_Purchase"),
    ("facebook.business", "Lookalike 1%, KR"),
    ("apple.searchads", "ASA_Brand_KR"),
    ("tiktok", "TT_KR_Install"),
    ("naver.searchad", "Naver Brand KR"),
    ("unattributed", ""),
)
# This group is always small, so every day has masked values (and a masking notification).
_SMALL_GROUP = ("facebook.business", "Lookalike 1%, KR")
_CHANNELS = tuple(dict.fromkeys(channel for channel, _ in _BASE_GROUPS))

_DEFAULT_CONFIG: dict[str, Any] = {
    "apps": None,  # None: [SANDBOX_AIRBRIDGE_APP_NAME]
    "polls_pending": 1,
    "polls_running": 1,
    "groups_per_day": len(_BASE_GROUPS),
    "notifications": [],
}


class _BadRequest(Exception):
    pass


@dataclass
class _Task:
    task_id: str
    app_name: str
    start: dt.date
    end: dt.date
    body: dict[str, Any]
    # What the task ends as once its PENDING/RUNNING polls are used up.
    fate: str = "SUCCESS"
    polls: int = 0


@dataclass
class _State:
    generation: int
    config: dict[str, Any]
    tasks: dict[str, _Task] = field(default_factory=dict)


_states: dict[int, _State] = {}
_states_lock = threading.Lock()


def _state(server: SandboxServer) -> _State:
    """This server's Airbridge state; a ``server.reset()`` (new generation) starts a fresh one."""
    with _states_lock:
        state = _states.get(id(server))
        if state is None or state.generation != server.generation:
            state = _State(server.generation, copy.deepcopy(_DEFAULT_CONFIG))
            _states[id(server)] = state
        return state


def configure(server: SandboxServer, **changes: Any) -> None:
    """Change the Airbridge sandbox settings (see the module docstring); reset by ``reset()``."""
    unknown = set(changes) - set(_DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown airbridge sandbox keys {sorted(unknown)}; known: {sorted(_DEFAULT_CONFIG)}")
    state = _state(server)
    with server.lock:
        for key, value in changes.items():
            if key in ("apps", "notifications"):
                state.config[key] = None if value is None else list(value)
            else:
                number = int(value)
                if number < 0:
                    raise ValueError(f"{key} must be >= 0")
                state.config[key] = number


def config_snapshot(server: SandboxServer) -> dict[str, Any]:
    from adpipes.lib.settings import SANDBOX_AIRBRIDGE_APP_NAME

    with server.lock:
        config = copy.deepcopy(_state(server).config)
    if config["apps"] is None:
        config["apps"] = [SANDBOX_AIRBRIDGE_APP_NAME]
    return config


# -- deterministic data ------------------------------------------------------------------------

def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("|".join(parts).encode("utf-8")).digest()[:8], "big")


def groups(count: int) -> list[tuple[str, str]]:
    """The (channel, campaign) groups served each day: the base ones, then numbered campaigns."""
    out = list(_BASE_GROUPS[:count])
    for index in range(len(out), count):
        out.append((_CHANNELS[index % len(_CHANNELS)], f"Campaign {index:03d}"))
    return out


def cohort(app_name: str, day: dt.date, channel: str, campaign: str, intervals: int,
           cumulative: bool, today: dt.date) -> dict[str, Any]:
    """One group's entry for one cohort day: Day-N values (only days already passed) and totals."""
    rng = random.Random(_seed(app_name, day.isoformat(), channel, campaign))
    small = (channel, campaign) == _SMALL_GROUP
    users = rng.randint(5, MASKING_USER_THRESHOLD - 5) if small else rng.randint(40, 600)
    cost = round(users * rng.uniform(0.4, 3.5), 2)
    masked = users < MASKING_USER_THRESHOLD
    known_days = min(intervals, (today - day).days)
    values, running = [], 0.0
    for n in range(intervals + 1):
        # Drawn for every n so a day's figures do not change as the cohort matures.
        earned = round(users * rng.uniform(0.0, 0.5) / (1 + n), 2)
        if n > known_days:
            break
        running = round(running + earned, 2)
        figure = running if cumulative else earned
        values.append({"value": None if masked else figure, "isMasked": masked})
    return {
        "date": day.isoformat(),
        "values": values,
        "total": {"cost": cost, "revenue": running, "uniqueUsers": users},
    }


def report_rows(task: _Task, config: dict[str, Any], today: dt.date) -> list[dict[str, Any]]:
    fields = list(task.body["groupBy"]["fields"])
    intervals = int(task.body.get("intervalsPeriod", DEFAULT_INTERVALS["day"]))
    cumulative = task.body["aggregationType"] == "cumulative"
    rows = []
    for channel, campaign in groups(config["groups_per_day"]):
        entries = []
        day = task.start
        while day <= task.end:
            entries.append(cohort(task.app_name, day, channel, campaign, intervals, cumulative, today))
            day += dt.timedelta(days=1)
        metadata = {name: {"channel": channel, "campaign": campaign}.get(name, f"{name}-value")
                    for name in fields}
        rows.append({"metadata": metadata, "data": entries})
    return rows


def notifications(task: _Task, rows: list[dict[str, Any]], config: dict[str, Any],
                  today: dt.date) -> list[dict[str, str]]:
    out = []
    if any(v["isMasked"] for row in rows for entry in row["data"] for v in entry["values"]):
        out.append({"code": MASKING_CODE,
                    "message": "Some values are masked by Meta's privacy policy or user thresholds."})
    if task.start < today - dt.timedelta(days=SAN_PERIOD_DAYS):
        out.append({"code": SAN_CODE,
                    "message": f"Data of self-attributing networks older than {SAN_PERIOD_DAYS} days was removed."})
    out.extend({"code": str(code), "message": f"sandbox notification {code}"}
               for code in config["notifications"])
    return out


# -- handlers ----------------------------------------------------------------------------------

def _error(status: int, message: str, call: dict[str, Any], **kwargs: Any) -> Response:
    return Response.json_body(status, {"message": message}, call=call, **kwargs)


def _date(body: dict[str, Any], name: str) -> dt.date:
    value = body.get(name)
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise _BadRequest(f"'{name}' must be a date in the format YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise _BadRequest(f"'{name}' is not a valid date: {value}") from None


def _validate(body: Any, today: dt.date) -> tuple[dt.date, dt.date]:
    if not isinstance(body, dict):
        raise _BadRequest("the request body must be a JSON object")
    start, end = _date(body, "from"), _date(body, "to")
    if end < start:
        raise _BadRequest("'to' must not be earlier than 'from'")
    if end > today:
        raise _BadRequest("future dates are not permitted")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise _BadRequest(f"the time period available for querying is up to {MAX_RANGE_DAYS} days")
    fields = (body.get("groupBy") or {}).get("fields") if isinstance(body.get("groupBy"), dict) else None
    if not isinstance(fields, list) or not 1 <= len(fields) <= MAX_GROUP_BY_FIELDS:
        raise _BadRequest(f"'groupBy.fields' must list 1 to {MAX_GROUP_BY_FIELDS} group-bys")
    granularity = body.get("granularity")
    if granularity not in DEFAULT_INTERVALS:
        raise _BadRequest(f"unsupported granularity {granularity!r} (the sandbox serves 'day')")
    intervals = body.get("intervalsPeriod", DEFAULT_INTERVALS[granularity])
    if not isinstance(intervals, int) or not 0 <= intervals <= MAX_INTERVALS[granularity]:
        raise _BadRequest(f"'intervalsPeriod' must be 0..{MAX_INTERVALS[granularity]}")
    starts = body.get("startEvents")
    if not isinstance(starts, list) or not starts or any(e not in START_EVENTS for e in starts):
        raise _BadRequest(f"'startEvents' must be a non-empty list of {', '.join(START_EVENTS)}")
    returns = body.get("returnEvents")
    if not isinstance(returns, list) or not returns or not all(isinstance(e, str) for e in returns):
        raise _BadRequest("'returnEvents' must be a non-empty list of event names")
    if not isinstance(body.get("metric"), str) or not body["metric"]:
        raise _BadRequest("'metric' is required")
    if body.get("aggregationType") not in AGGREGATION_TYPES:
        raise _BadRequest(f"'aggregationType' must be one of {', '.join(AGGREGATION_TYPES)}")
    return start, end


def _guard(server: SandboxServer, request: Request, call: dict[str, Any],
           app_name: str) -> tuple[Response | None, str | None, float]:
    """Faults, auth and app checks shared by both endpoints: (error answer, task fault, delay)."""
    fault = server.take_fault(app_name, REPORT)
    task_fault, delay = None, 0.0
    if fault is not None:
        call["fault"] = fault.kind
        if fault.kind == "429":
            headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            return _error(429, "Too Many Requests", call, headers=headers), None, 0.0
        if fault.kind in ("500", "503"):
            return _error(int(fault.kind), "Service Unavailable", call), None, 0.0
        if fault.kind == "token_revoked":
            return _error(401, INVALID_TOKEN_MESSAGE, call), None, 0.0
        if fault.kind == "slow":
            delay = fault.seconds
        if fault.kind in ("task_failure", "task_canceled", "task_stuck"):
            task_fault = fault.kind
    auth = request.headers.get("Authorization", "")
    if not hmac.compare_digest(auth.encode("utf-8"), f"Bearer {server.airbridge_token}".encode("utf-8")):
        return _error(401, INVALID_TOKEN_MESSAGE, call), None, 0.0
    if app_name not in config_snapshot(server)["apps"]:
        return _error(404, f"App not found: {app_name}", call), None, 0.0
    return None, task_fault, delay


_FATES = {"task_failure": "FAILURE", "task_canceled": "CANCELED", "task_stuck": "RUNNING"}


def request_report(server: SandboxServer, request: Request) -> Response:
    app_name = request.match["app_name"]
    call: dict[str, Any] = {"method": "POST", "path": request.path, "app_id": app_name,
                            "report": REPORT, "task_id": None, "rows": 0}
    refused, task_fault, delay = _guard(server, request, call, app_name)
    if refused is not None:
        return refused
    today = dt.datetime.now(ZoneInfo(TIMEZONE)).date()
    try:
        body = request.json()
        start, end = _validate(body, today)
    except ValueError:
        return _error(400, "the request body is not valid JSON", call)
    except _BadRequest as exc:
        return _error(400, str(exc), call)
    call["body"] = body
    task = _Task(uuid.uuid4().hex, app_name, start, end, body,
                 fate=_FATES.get(task_fault or "", "SUCCESS"))
    with server.lock:
        _state(server).tasks[task.task_id] = task
    call["task_id"] = task.task_id
    return Response.json_body(200, {"data": {"taskId": task.task_id}}, call=call, delay=delay)


def _page_param(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequest(f"'{name}' must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise _BadRequest(f"'{name}' must be between {low} and {high}")
    return value


def get_report(server: SandboxServer, request: Request) -> Response:
    app_name, task_id = request.match["app_name"], request.match["task_id"]
    call: dict[str, Any] = {"method": "GET", "path": request.path, "app_id": app_name,
                            "report": REPORT, "task_id": task_id, "params": dict(request.params),
                            "rows": 0}
    refused, task_fault, delay = _guard(server, request, call, app_name)
    if refused is not None:
        return refused
    try:
        skip = _page_param(request.params, "skip", 0, 0, 10**9)
        size = _page_param(request.params, "size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    except _BadRequest as exc:
        return _error(400, str(exc), call)
    state = _state(server)
    config = config_snapshot(server)
    with server.lock:
        task = state.tasks.get(task_id)
        if task is None or task.app_name != app_name:
            return _error(404, f"Task not found: {task_id}", call)
        if task_fault is not None:
            task.fate = _FATES[task_fault]
        task.polls += 1
        polls = task.polls
        fate = task.fate
    if polls <= config["polls_pending"]:
        status = "PENDING"
    elif polls <= config["polls_pending"] + config["polls_running"]:
        status = "RUNNING"
    else:
        status = fate
    call["status_served"] = status
    payload: dict[str, Any] = {"task": {"taskId": task_id, "status": status}, "report": None,
                               "notification": []}
    if status == "SUCCESS":
        today = dt.datetime.now(ZoneInfo(TIMEZONE)).date()
        rows = report_rows(task, config, today)
        page = rows[skip:skip + size]
        payload["report"] = {"totalCount": len(rows), "skip": skip, "size": size, "rows": page}
        payload["notification"] = notifications(task, rows, config, today)
        call["rows"] = len(page)
    elif status in ("FAILURE", "CANCELED"):
        payload["task"]["message"] = (
            "The request has failed." if status == "FAILURE" else "The request has been canceled."
        )
    return Response.json_body(200, {"data": payload}, call=call, delay=delay)


def _control_config(server: SandboxServer, request: Request) -> Response:
    if request.method == "POST":
        try:
            configure(server, **request.json())
        except (ValueError, TypeError, AttributeError) as exc:
            return Response.json_body(400, {"message": str(exc)})
    return Response.json_body(200, config_snapshot(server))


def register(server: SandboxServer) -> None:
    server.add_route("POST", QUERY_PATH, request_report)
    server.add_route("GET", TASK_PATH, get_report)
    server.add_route("POST", CONFIG_PATH, _control_config)
    server.add_route("GET", CONFIG_PATH, _control_config)
