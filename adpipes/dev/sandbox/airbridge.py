"""Airbridge revenue report endpoints of the sandbox, answering exactly as Airbridge's document
prints (``../shared/vendor-docs/airbridge-revenue-report-api.ko.txt``).

- ``POST /reports/api/v3/apps/{app_name}/revenue/query`` validates the body by the document's
  rules (required fields, ``filters`` and ``sorts`` included; the enums, ``on-day`` spelled with a
  hyphen; ``intervalsPeriod`` limits; at most 92 days; no future dates) and by the app's metadata
  (group-bys, filter fields, metric and aggregation type, events), then answers
  ``{"data": {"taskId": ...}}``; a refused body gets the documented 400 answer ``{}`` (the call log
  records why).
- ``GET .../revenue/query/{task_id}?skip=&size=`` answers ``{"data": {"status": ..., "taskId": ...}}``
  while the task is PENDING, RUNNING (a configurable number of polls), or FAILURE/CANCELED (the
  document prints no such answer: this shape is the sandbox's choice), then the printed SUCCESS
  page: ``data.stats.rows[]`` (group rows with ``metadata``, per-date ``rows[]`` and ``total``),
  ``data.status``, ``data.taskId``, ``data.endedAt``, ``data.hasNext``,
  ``data.metadata.totalCount``, and ``notification`` beside ``data``. ``skip``/``size`` count group
  rows (``size`` defaults to 50); ``filters`` (IN) and ``sorts`` are applied.
- ``GET /dataspec/v1/apps/{app_name}/revenue-report/metrics|groupbys|events`` answer the app's
  metadata in the printed shapes.
- An unknown app or task answers the documented 404 problem JSON.

Data is a pure function of (app, start-event day, channel, campaign, today): a day only has Day-N
values for days that have passed, so recent days grow a value per day, as in the real report.
"Today" (Asia/Seoul) is taken once per task, when it is created: every page of a task is served
for that day, even across midnight, as a report computed once would be. One small group is below
the privacy threshold every day: its figures carry a value and ``isMasked: true``, and the answer
a masking notification, as Airbridge does for Meta data.

Sandbox-only configuration (``configure(server, ...)`` or ``POST /_sandbox/airbridge/config``):
``apps``, ``polls_pending``, ``polls_running``, ``groups_per_day``, ``notifications`` (extra codes
served with every task), ``total_count_unit`` (``group_rows`` or ``group_date_rows``: what
``totalCount`` counts, on which the document is silent), ``next_task_ids`` (ids handed to the next
tasks) and ``canned_answers`` (JSON answers served verbatim, in order, to the task GETs: a server
that answers exactly as given, e.g. the document's printed page). Faults use
``server.take_fault(app_name, "revenue")`` and kinds ``429``, ``500``, ``503``, ``slow``,
``token_revoked``, ``task_failure``, ``task_canceled`` and ``task_stuck`` (never leaves RUNNING).
State resets with ``server.reset()``.
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from adpipes.airbridge.contract import (
    CUMULATIVE,
    DEFAULT_PAGE_SIZE,
    GRANULARITIES,
    catalog_findings,
    query_problems,
    read_catalog,
)
from adpipes.dev.sandbox.server import CONTROL_PREFIX, Request, Response

if TYPE_CHECKING:
    from adpipes.dev.sandbox.server import SandboxServer

REPORT = "revenue"
# The call-log and fault name of the metadata endpoints: revenue faults do not hit them.
METADATA_REPORT = "revenue-report-metadata"
QUERY_PATH = r"/reports/api/v3/apps/(?P<app_name>[^/]+)/revenue/query"
TASK_PATH = QUERY_PATH + r"/(?P<task_id>[^/]+)"
DATASPEC_PATH = r"/dataspec/v1/apps/(?P<app_name>[^/]+)/revenue-report/(?P<catalog>metrics|groupbys|events)"
CONFIG_PATH = re.escape(CONTROL_PREFIX) + "airbridge/config"

# Airbridge drops data of self-attributing networks (Meta, ...) older than this many days.
SAN_PERIOD_DAYS = 175
MASKING_USER_THRESHOLD = 30
TIMEZONE = "Asia/Seoul"

INVALID_TOKEN_MESSAGE = "Invalid API token"
# The printed notification.
MASKING_CODE = "AGG_DATA_MASKING_BY_FACEBOOK"
MASKING_MESSAGE = "some data is masked by facebook privacy policy."
SAN_CODE = "SAN_PERIOD_LIMIT"
TOTAL_COUNT_UNITS = ("group_rows", "group_date_rows")

# (channel, campaign): Airbridge channel names are lowercase ids like google.adwords. One
# campaign is "App", the campaign the document's printed request filters on.
_BASE_GROUPS = (
    ("google.adwords", "KR_UAC_Install, AOS"),
    ("google.adwords", 'Brand "Search" KR'),
    ("facebook.business", "KR_Spring_Sale_Purchase"),
    ("facebook.business", "Lookalike 1%, KR"),
    ("apple.searchads", "App"),
    ("tiktok", "TT_KR_Install"),
    ("naver.searchad", "Naver Brand KR"),
    ("unattributed", ""),
)
# This group is always small, so every day has masked figures (and a masking notification).
SMALL_GROUP = ("facebook.business", "Lookalike 1%, KR")
_CHANNELS = tuple(dict.fromkeys(channel for channel, _ in _BASE_GROUPS))

_DEFAULT_CONFIG: dict[str, Any] = {
    "apps": None,  # None: [SANDBOX_AIRBRIDGE_APP_NAME]
    "polls_pending": 1,
    "polls_running": 1,
    "groups_per_day": len(_BASE_GROUPS),
    "notifications": [],
    "total_count_unit": "group_rows",
    "next_task_ids": [],
    "canned_answers": [],
}
_LIST_KEYS = ("apps", "notifications", "next_task_ids", "canned_answers")

# -- the app's metadata (the printed entries, and the rest of the document's enums) -------------

def _metric(key: str, name: str, description: str, value_type: str, aggregation: list[str] | None) -> dict:
    return {"key": key, "name": name, "description": description, "valueType": value_type,
            "aggregationType": aggregation}


def _group_by(key: str, name: str, description: str, example: str, kind: str = "string",
              is_cost: bool = True) -> dict:
    return {"key": key, "name": name, "description": description, "example": example, "isFilter": True,
            "type": kind, "isCost": is_cost}


def _event(key: str, name: str, description: str, sub_group: str = "") -> dict:
    return {"subGroup": sub_group, "key": key, "name": name, "description": description}


_RETURNED = "performed by users who performed the start event within the set date range"
METRICS_ANSWER = {"data": [
    {"name": "Metric", "metrics": [
        _metric("app_revenue", "Revenue", "Sum of value generated from revenue events", "number",
                ["cumulative", "on-day"]),
        _metric("app_user_count", "User Count", "The total number of unique users who performed revenue events",
                "integer", ["on-day", "unique-cumulative"]),
        _metric("app_event_count", "Event Count", "The number of revenue events", "integer", ["cumulative", "on-day"]),
        _metric("app_roas", "ROAS", "Revenue per ad cost", "number", ["cumulative"]),
        _metric("app_arpu", "ARPU", "Average revenue per user", "number", ["cumulative"]),
        _metric("app_arppu", "ARPPU", "Average revenue per paying user", "number", ["cumulative", "on-day"]),
    ]},
    {"name": "Sub Metric", "metrics": [
        _metric("customer_acquisition_cost", "CAC", "Customer Acquisition Cost; Total Cost/Users", "number", None),
        _metric("start_event_users", "Users", "The number of users who performed Start Event", "integer", None),
    ]},
]}
GROUPBYS_ANSWER = {"data": [
    {"name": "Event Details", "fields": [
        _group_by("is_first_event_per_user_id", "Is First Event per User ID",
                  "Whether the event happened before (per user id)", "true", "boolean", False),
        _group_by("is_first_event_per_device_id", "Is First Event per Device ID",
                  "Whether the event happened before (per airbridge device id)", "true", "boolean", False),
    ]},
    {"name": "Touchpoint", "fields": [
        _group_by("channel", "Channel", "The media source of the touchpoint.", "moloco"),
        _group_by("campaign", "Campaign", "The campaign that generated the touchpoint.", "2018_summer_campaign"),
        _group_by("ad_group", "Ad Group", "The ad group of the touchpoint.", "summer_ad_group"),
        _group_by("ad_creative", "Ad Creative", "The ad creative of the touchpoint.", "banner_01"),
    ]},
]}
EVENTS_ANSWER = {"data": [
    {"name": "Return Event", "events": [
        _event(key, name, f"{name} event {_RETURNED}", "App Standard Event") for key, name in (
            ("app_first_order_complete", "First Order Complete (App)"), ("app_order_complete", "Order Complete (App)"),
            ("app_ad_impression", "Ad Impression (App)"), ("app_ad_click", "Ad Click (App)"),
            ("app_subscribe", "Subscribe (App)"),
        )
    ]},
    {"name": "Start Event", "events": [
        _event(key, name, f"{name} occurred within the set date range") for key, name in (
            ("app_install", "Install (App)"), ("app_deeplink_open", "Deeplink Open (App)"),
            ("app_deeplink_pageview", "Deeplink Pageview (App)"), ("app_sign_up", "Sign-up (App)"),
            ("app_sign_in", "Sign-in (App)"),
        )
    ]},
]}
_CATALOG_ANSWERS = {"metrics": METRICS_ANSWER, "groupbys": GROUPBYS_ANSWER, "events": EVENTS_ANSWER}
CATALOG = read_catalog(METRICS_ANSWER, GROUPBYS_ANSWER, EVENTS_ANSWER, "the sandbox's metadata")


@dataclass
class _Task:
    task_id: str
    app_name: str
    start: dt.date
    end: dt.date
    body: dict[str, Any]
    created_at: dt.datetime
    # The day (sandbox timezone) the task's report is computed for: Day-N values up to it.
    today: dt.date
    # What the task ends as once its PENDING/RUNNING polls are used up.
    fate: str = "SUCCESS"
    polls: int = 0


@dataclass
class _State:
    generation: int
    config: dict[str, Any]
    tasks: dict[str, _Task] = field(default_factory=dict)
    canned_served: int = 0


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
            if key in _LIST_KEYS:
                state.config[key] = None if value is None else copy.deepcopy(list(value))
            elif key == "total_count_unit":
                if value not in TOTAL_COUNT_UNITS:
                    raise ValueError(f"total_count_unit must be one of {TOTAL_COUNT_UNITS}")
                state.config[key] = value
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


def group_value(key: str, channel: str, campaign: str) -> str:
    """A group's value for a group-by key: channel and campaign, and one value per campaign for
    the others (ad_group, ad_creative, ...)."""
    if key == "channel":
        return channel
    if key == "campaign":
        return campaign
    if key.startswith("is_first_event"):
        return "true"
    return f"{campaign or channel} / {key}"


def _figure(value: float, masked: bool) -> dict[str, Any]:
    return {"value": value, "isMasked": masked}


def date_row(app_name: str, day: dt.date, channel: str, campaign: str, intervals: int,
             cumulative: bool, today: dt.date) -> dict[str, Any]:
    """One base group's entry for one start-event day, in the printed shape: Day-N values (only
    days already passed) and the day's totals. Masked figures keep their value."""
    rng = random.Random(_seed(app_name, day.isoformat(), channel, campaign))
    small = (channel, campaign) == SMALL_GROUP
    users = rng.randint(5, MASKING_USER_THRESHOLD - 5) if small else rng.randint(40, 600)
    cost = round(users * rng.uniform(0.4, 3.5), 2)
    masked = users < MASKING_USER_THRESHOLD
    known_days = min(intervals, (today - day).days)
    values, running = [], 0.0
    for n in range(intervals + 1):
        # Drawn for every n so a day's figures do not change as it matures.
        earned = round(users * rng.uniform(0.0, 0.5) / (1 + n), 2)
        if n > known_days:
            break
        running = round(running + earned, 2)
        values.append(_figure(running if cumulative else earned, masked))
    return {
        "date": day.isoformat(),
        # The document prints totalCost and totalRevenue without isMasked.
        "total": {"totalCost": {"value": cost}, "totalRevenue": {"value": running},
                  "totalUniqueUsers": _figure(users, masked)},
        "values": values,
    }


def _sum_figures(figures: Sequence[dict[str, Any]], flag: bool = True) -> dict[str, Any]:
    total = {"value": round(sum(f["value"] for f in figures), 2)}
    if flag:
        total["isMasked"] = any(f.get("isMasked", False) for f in figures)
    return total


def _sum_values(lists: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    longest = max((len(v) for v in lists), default=0)
    return [_sum_figures([v[n] for v in lists if n < len(v)]) for n in range(longest)]


def _sum_totals(totals: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "totalCost": _sum_figures([t["totalCost"] for t in totals], flag=False),
        "totalRevenue": _sum_figures([t["totalRevenue"] for t in totals], flag=False),
        "totalUniqueUsers": _sum_figures([t["totalUniqueUsers"] for t in totals]),
    }


def report_rows(task: _Task, config: dict[str, Any], today: dt.date) -> list[dict[str, Any]]:
    """Every group row of the task, filtered, grouped by the requested fields and sorted."""
    body = task.body
    fields = list(body["groupBy"]["fields"])
    intervals = int(body.get("intervalsPeriod", GRANULARITIES["day"][0]))
    cumulative = body["aggregationType"] == CUMULATIVE
    days = [task.start + dt.timedelta(days=n) for n in range((task.end - task.start).days + 1)]
    merged: dict[tuple[str, ...], list[list[dict[str, Any]]]] = {}
    for channel, campaign in groups(config["groups_per_day"]):
        if not all(group_value(f["field"], channel, campaign) in f["values"] for f in body["filters"]):
            continue
        key = tuple(group_value(name, channel, campaign) for name in fields)
        entries = [date_row(task.app_name, day, channel, campaign, intervals, cumulative, today) for day in days]
        merged.setdefault(key, []).append(entries)
    rows = []
    for key, members in merged.items():
        dates = [
            {"date": day.isoformat(),
             "total": _sum_totals([m[i]["total"] for m in members]),
             "values": _sum_values([m[i]["values"] for m in members])}
            for i, day in enumerate(days)
        ]
        total = {"rows": _sum_values([d["values"] for d in dates]), **_sum_totals([d["total"] for d in dates])}
        rows.append({"rows": dates, "total": total, "metadata": list(key)})
    for sort in reversed(body["sorts"]):
        name = sort["fieldName"]
        if name in fields:
            position = fields.index(name)
            rows.sort(key=lambda r: r["metadata"][position], reverse=not sort["isAscending"])
        else:
            rows.sort(key=lambda r: r["total"][name]["value"], reverse=not sort["isAscending"])
    return rows


def notifications(task: _Task, rows: list[dict[str, Any]], config: dict[str, Any],
                  today: dt.date) -> list[dict[str, str]]:
    out = []
    if any(f["isMasked"] for row in rows for entry in row["rows"] for f in entry["values"]):
        out.append({"code": MASKING_CODE, "type": "info", "message": MASKING_MESSAGE})
    if task.start < today - dt.timedelta(days=SAN_PERIOD_DAYS):
        out.append({"code": SAN_CODE, "type": "info",
                    "message": f"Data of self-attributing networks older than {SAN_PERIOD_DAYS} days was removed."})
    out.extend({"code": str(code), "type": "info", "message": f"sandbox notification {code}"}
               for code in config["notifications"])
    return out


# -- handlers ----------------------------------------------------------------------------------

def _error(status: int, message: str, call: dict[str, Any], **kwargs: Any) -> Response:
    return Response.json_body(status, {"message": message}, call=call, **kwargs)


def _bad_request(call: dict[str, Any], problems: list[str]) -> Response:
    # The documented 400 answer is an empty object; the reasons go to the call log only.
    call["problems"] = problems
    return Response.json_body(400, {}, call=call)


def not_found(call: dict[str, Any] | None = None) -> Response:
    """The documented 404 problem JSON."""
    trace = uuid.uuid4().int
    return Response.json_body(404, {"type": "about:blank", "title": "Not Found", "status": 404,
                                    "traceId": f"1-{trace % 16**6:06x}-{trace // 16**6 % 16**15:015x}"}, call=call)


def _today() -> dt.date:
    return dt.datetime.now(ZoneInfo(TIMEZONE)).date()


def _guard(server: SandboxServer, request: Request, call: dict[str, Any], app_name: str,
           report: str) -> tuple[Response | None, str | None, float]:
    """Faults, auth and app checks shared by the endpoints: (error answer, task fault, delay)."""
    fault = server.take_fault(app_name, report)
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
        return not_found(call), None, 0.0
    return None, task_fault, delay


_FATES = {"task_failure": "FAILURE", "task_canceled": "CANCELED", "task_stuck": "RUNNING"}


def request_report(server: SandboxServer, request: Request) -> Response:
    app_name = request.match["app_name"]
    call: dict[str, Any] = {"method": "POST", "path": request.path, "app_id": app_name,
                            "report": REPORT, "task_id": None, "rows": 0}
    refused, task_fault, delay = _guard(server, request, call, app_name, REPORT)
    if refused is not None:
        return refused
    try:
        body = request.json()
    except ValueError:
        return _bad_request(call, ["the body is not JSON"])
    call["body"] = body
    today = _today()
    problems = query_problems(body, today)
    if problems:
        return _bad_request(call, problems)
    findings = catalog_findings(CATALOG, body)
    if findings:
        return _bad_request(call, findings)
    state = _state(server)
    with server.lock:
        queued = state.config["next_task_ids"]
        task_id = queued.pop(0) if queued else str(uuid.uuid4())
        task = _Task(task_id, app_name, dt.date.fromisoformat(body["from"]), dt.date.fromisoformat(body["to"]),
                     body, dt.datetime.now(ZoneInfo(TIMEZONE)), today, fate=_FATES.get(task_fault or "", "SUCCESS"))
        state.tasks[task_id] = task
    call["task_id"] = task_id
    return Response.json_body(200, {"data": {"taskId": task_id}}, call=call, delay=delay)


def _page_param(params: dict[str, str], name: str, default: int, low: int) -> int | None:
    try:
        value = int(params.get(name, str(default)))
    except ValueError:
        return None
    return value if value >= low else None


def _canned(server: SandboxServer, call: dict[str, Any]) -> Response | None:
    """The next canned answer, if a test configured some (the last one repeats)."""
    state = _state(server)
    with server.lock:
        canned = state.config["canned_answers"]
        if not canned:
            return None
        answer = canned[min(state.canned_served, len(canned) - 1)]
        state.canned_served += 1
    call["status_served"] = "canned"
    return Response.json_body(200, answer, call=call)


def get_report(server: SandboxServer, request: Request) -> Response:
    app_name, task_id = request.match["app_name"], request.match["task_id"]
    call: dict[str, Any] = {"method": "GET", "path": request.path, "app_id": app_name,
                            "report": REPORT, "task_id": task_id, "params": dict(request.params),
                            "rows": 0}
    refused, task_fault, delay = _guard(server, request, call, app_name, REPORT)
    if refused is not None:
        return refused
    skip = _page_param(request.params, "skip", 0, 0)
    size = _page_param(request.params, "size", DEFAULT_PAGE_SIZE, 1)
    if skip is None or size is None:
        return _bad_request(call, ["skip must be a whole number >= 0 and size >= 1"])
    state = _state(server)
    config = config_snapshot(server)
    with server.lock:
        task = state.tasks.get(task_id)
        if task is None or task.app_name != app_name:
            return not_found(call)
        if task_fault is not None:
            task.fate = _FATES[task_fault]
        task.polls += 1
        polls, fate = task.polls, task.fate
    canned = _canned(server, call)
    if canned is not None:
        return canned
    if polls <= config["polls_pending"]:
        status = "PENDING"
    elif polls <= config["polls_pending"] + config["polls_running"]:
        status = "RUNNING"
    else:
        status = fate
    call["status_served"] = status
    if status != "SUCCESS":
        # The document prints no answer but SUCCESS: the sandbox keeps the status where the
        # printed answer has it (data.status) beside the task id.
        return Response.json_body(200, {"data": {"status": status, "taskId": task_id}}, call=call, delay=delay)
    today = task.today
    rows = report_rows(task, config, today)
    page = rows[skip:skip + size]
    total_count = len(rows) if config["total_count_unit"] == "group_rows" else sum(len(r["rows"]) for r in rows)
    call["rows"] = len(page)
    answer = {
        "data": {
            "stats": {"rows": page},
            "status": status,
            "taskId": task_id,
            "endedAt": task.created_at.isoformat(),
            "hasNext": skip + size < len(rows),
            "metadata": {"totalCount": total_count},
        },
        "notification": notifications(task, rows, config, today),
    }
    return Response.json_body(200, answer, call=call, delay=delay)


def get_metadata(server: SandboxServer, request: Request) -> Response:
    app_name, catalog = request.match["app_name"], request.match["catalog"]
    call: dict[str, Any] = {"method": "GET", "path": request.path, "app_id": app_name,
                            "report": METADATA_REPORT, "catalog": catalog}
    refused, _, delay = _guard(server, request, call, app_name, METADATA_REPORT)
    if refused is not None:
        return refused
    return Response.json_body(200, _CATALOG_ANSWERS[catalog], call=call, delay=delay)


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
    server.add_route("GET", DATASPEC_PATH, get_metadata)
    server.add_route("POST", CONFIG_PATH, _control_config)
    server.add_route("GET", CONFIG_PATH, _control_config)
