"""The Airbridge revenue report API v3 as its document states it: paths, enums, limits, and the
exact JSON of its answers.

Source: ``../shared/vendor-docs/airbridge-revenue-report-api.ko.txt`` (Airbridge's API reference,
"Revenue Report"). Its printed examples are the contract: the request payload, the task answer
``{"data": {"taskId": ...}}``, the result page, the 400 answer ``{}``, the 404 problem JSON and the
three metadata (dataspec) answers. The client (``resources.py``) checks every request against
:func:`query_problems` before any call and reads every answer with the readers below; the dev
sandbox validates requests with the same function, and both are held to the printed examples by
the contract tests (``adpipes_tests/airbridge/test_contract.py``).

Where the document is silent, a comment below says so, and a reader fails loudly on a shape it
does not know rather than store a NULL: a documented key that is missing fails naming the task,
the row and the key. A key the document does not print is kept with its value, never dropped:
one inside a group row (``data.stats.rows[]``: the group row, its dates, totals and Day-N values)
goes with the table rows it belongs to (``extra_fields``), one elsewhere in a page is kept as a
*page field* (the run's metadata); every one is surfaced by the ``unknown_columns`` check.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# -- paths ---------------------------------------------------------------------------------------

QUERY_PATH = "/reports/api/v3/apps/{app_name}/revenue/query"
TASK_PATH = QUERY_PATH + "/{task_id}"
DATASPEC_PATH = "/dataspec/v1/apps/{app_name}/revenue-report/{catalog}"
METRICS_CATALOG, GROUPBYS_CATALOG, EVENTS_CATALOG = "metrics", "groupbys", "events"

# -- request body --------------------------------------------------------------------------------

# The body fields the document marks 필수 (required), and the optional ones it lists.
REQUIRED_BODY_FIELDS = (
    "from", "to", "groupBy", "granularity", "startEvents", "returnEvents", "metric",
    "aggregationType", "filters", "sorts",
)
OPTIONAL_BODY_FIELDS = ("cohorts", "intervalsPeriod", "resultSpec")
# granularity -> (default, maximum) intervalsPeriod; the minimum is 0 for all three. Results
# "start at interval 0": the document does not say whether N intervals end at Day N-1 or Day N;
# with a minimum of 0 (Day 0 alone) adpipes and the sandbox read intervalsPeriod N as Days 0..N.
GRANULARITIES = {"day": (30, 120), "week": (11, 52), "month": (5, 36)}
START_EVENTS = ("app_install", "app_deeplink_open", "app_deeplink_pageview", "app_sign_up", "app_sign_in")
RETURN_EVENTS = (
    "app_order_complete", "app_first_order_complete", "app_ad_impression", "app_ad_click", "app_subscribe",
)
METRICS = ("app_revenue", "app_user_count", "app_event_count", "app_roas", "app_arpu", "app_arppu")
# Spelled as documented: "on-day" with a hyphen (not on_day, not daily).
CUMULATIVE, ON_DAY = "cumulative", "on-day"
AGGREGATION_TYPES = (CUMULATIVE, ON_DAY)
# "cumulative 집계 방식만 지원합니다": these metrics support cumulative only.
CUMULATIVE_ONLY_METRICS = ("app_roas", "app_arpu")
# Metrics in money (현지 통화기준, the app's local currency); the others are counts or a ratio.
MONEY_METRICS = ("app_revenue", "app_arpu", "app_arppu")
# "한 번에 조회할 수 있는 최대 기간은 92일": from..to, both included.
MAX_RANGE_DAYS = 92
MAX_COHORTS = 1
# The document prints filterType "IN" only and lists no other: any other type is refused before a
# call rather than sent on a guess.
FILTER_TYPES = ("IN",)
FILTER_KEYS = ("field", "filterType", "values")
SORT_KEYS = ("fieldName", "isAscending")
# The three figures of every printed ``total`` object.
TOTAL_KEYS = ("totalCost", "totalRevenue", "totalUniqueUsers")
# Sorting is by a group-by or a metric field; the only metric field the document names is
# totalRevenue (its example), one of the three totals its answers carry. Those three and the
# requested group-bys are accepted; any other name is refused before a call.
SORTABLE_TOTALS = TOTAL_KEYS
# The document does not state a maximum number of groupBy fields (an earlier adpipes allowed 4
# without a source); at least one is needed to name a row.
MIN_GROUP_BY_FIELDS = 1
# resultSpec is printed in the request example without an explanation ({"csv": {"includesTotal":
# true}}); adpipes sends it as printed, so the answer has the printed shape (with its totals).
RESULT_SPEC = {"csv": {"includesTotal": True}}
DEFAULT_PAGE_SIZE = 50

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _listing(values: Iterable[str]) -> str:
    return ", ".join(values)


def _date_problem(body: Mapping[str, Any], name: str, problems: list[str]) -> dt.date | None:
    value = body.get(name)
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        problems.append(f"{name}={value!r} must be a date YYYY-MM-DD (in the Airbridge app's timezone)")
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        problems.append(f"{name}={value!r} is not a calendar date")
        return None


def _events_problem(body: Mapping[str, Any], name: str, allowed: Sequence[str], problems: list[str]) -> None:
    events = body.get(name)
    if not isinstance(events, list) or not events or len(set(map(str, events))) != len(events):
        problems.append(f"{name}={events!r} must be a non-empty list of distinct values of {_listing(allowed)}")
        return
    unknown = [e for e in events if e not in allowed]
    if unknown:
        problems.append(f"{name} {unknown} are not documented values; allowed: {_listing(allowed)}")


def _objects_problem(items: Any, name: str, keys: Sequence[str], problems: list[str]) -> list[dict[str, Any]]:
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        problems.append(f"{name}={items!r} must be a list (possibly empty) of objects {{{_listing(keys)}}}")
        return []
    for index, item in enumerate(items):
        if set(item) != set(keys):
            problems.append(f"{name}[{index}] has keys {sorted(item)}; the document's are {_listing(keys)}")
    return [i for i in items if set(i) == set(keys)]


def query_problems(body: Any, today: dt.date) -> list[str]:
    """What is wrong with a revenue query body by the document's rules (empty: nothing).

    ``today`` is today's date in the Airbridge app's timezone (``to`` may not be later). Each
    problem names the field and the allowed values.
    """
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    problems: list[str] = []
    unknown = sorted(set(body) - set(REQUIRED_BODY_FIELDS) - set(OPTIONAL_BODY_FIELDS))
    if unknown:
        problems.append(f"fields {unknown} are not in the document (its fields: "
                        f"{_listing(REQUIRED_BODY_FIELDS + OPTIONAL_BODY_FIELDS)})")
    missing = [name for name in REQUIRED_BODY_FIELDS if name not in body]
    if missing:
        problems.append(f"required fields {missing} are missing")
    start, end = _date_problem(body, "from", problems), _date_problem(body, "to", problems)
    if start and end:
        if end < start:
            problems.append(f"to={end} is before from={start}")
        if end > today:
            problems.append(f"to={end} is in the future: the latest allowed is today, {today}, in the app's timezone")
        if (end - start).days + 1 > MAX_RANGE_DAYS:
            problems.append(f"from..to spans {(end - start).days + 1} days; at most {MAX_RANGE_DAYS} per query")

    group_by = body.get("groupBy")
    fields: list[str] = []
    if not isinstance(group_by, dict) or set(group_by) != {"fields"} or not isinstance(group_by["fields"], list):
        problems.append(f"groupBy={group_by!r} must be an object {{fields: [group-by keys]}}")
    else:
        fields = group_by["fields"]
        if (len(fields) < MIN_GROUP_BY_FIELDS or not all(isinstance(f, str) and f for f in fields)
                or len(set(fields)) != len(fields)):
            problems.append(f"groupBy.fields={fields!r} must list at least {MIN_GROUP_BY_FIELDS} distinct group-by keys")

    granularity = body.get("granularity")
    if granularity not in GRANULARITIES:
        problems.append(f"granularity={granularity!r} must be one of {_listing(GRANULARITIES)}")
    elif "intervalsPeriod" in body:
        intervals, maximum = body["intervalsPeriod"], GRANULARITIES[granularity][1]
        if isinstance(intervals, bool) or not isinstance(intervals, int) or not 0 <= intervals <= maximum:
            problems.append(f"intervalsPeriod={intervals!r} must be a whole number 0..{maximum} for granularity {granularity}")

    _events_problem(body, "startEvents", START_EVENTS, problems)
    _events_problem(body, "returnEvents", RETURN_EVENTS, problems)
    metric, aggregation = body.get("metric"), body.get("aggregationType")
    if metric not in METRICS:
        problems.append(f"metric={metric!r} must be one of {_listing(METRICS)}")
    if aggregation not in AGGREGATION_TYPES:
        problems.append(f"aggregationType={aggregation!r} must be one of {_listing(AGGREGATION_TYPES)}")
    elif metric in CUMULATIVE_ONLY_METRICS and aggregation != CUMULATIVE:
        problems.append(f"metric {metric} supports aggregationType {CUMULATIVE} only, not {aggregation}")

    for index, item in enumerate(_objects_problem(body.get("filters"), "filters", FILTER_KEYS, problems)):
        if not isinstance(item["field"], str) or not item["field"]:
            problems.append(f"filters[{index}].field={item['field']!r} must be a group-by key")
        if item["filterType"] not in FILTER_TYPES:
            problems.append(f"filters[{index}].filterType={item['filterType']!r} must be one of {_listing(FILTER_TYPES)}")
        values = item["values"]
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            problems.append(f"filters[{index}].values={values!r} must be a non-empty list of strings")
    sortable = [*fields, *SORTABLE_TOTALS]
    for index, item in enumerate(_objects_problem(body.get("sorts"), "sorts", SORT_KEYS, problems)):
        if item["fieldName"] not in sortable:
            problems.append(f"sorts[{index}].fieldName={item['fieldName']!r} must be a requested group-by "
                            f"or a total: {_listing(sortable)}")
        if not isinstance(item["isAscending"], bool):
            problems.append(f"sorts[{index}].isAscending={item['isAscending']!r} must be true or false")

    cohorts = body.get("cohorts", [])
    if not isinstance(cohorts, list) or len(cohorts) > MAX_COHORTS:
        problems.append(f"cohorts must be a list of at most {MAX_COHORTS} cohort")
    if not isinstance(body.get("resultSpec", {}), dict):
        problems.append("resultSpec must be an object")
    return problems


# -- answers -------------------------------------------------------------------------------------

PENDING, RUNNING, SUCCESS, FAILURE, CANCELED = "PENDING", "RUNNING", "SUCCESS", "FAILURE", "CANCELED"
WAITING_STATUSES = (PENDING, RUNNING)
STATUSES = (PENDING, RUNNING, SUCCESS, FAILURE, CANCELED)
_EXCERPT_CHARS = 300


class AnswerShapeError(Exception):
    """An answer departs from the document's shape; the message names where (task, page, row)
    and which key."""


def excerpt(value: Any, chars: int = _EXCERPT_CHARS) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= chars else text[:chars] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a list" if isinstance(value, list) else "an object"


def generic_path(path: str) -> str:
    """``path`` with list indexes as ``[]`` (``data.stats.rows[3].rows[0].x`` ->
    ``data.stats.rows[].rows[].x``): the same key wherever it occurs."""
    return re.sub(r"\[\d+\]", "[]", path)


class AnswerReader:
    """Reads one answer by the document's keys: fails on a missing documented key or a value of
    another kind, and keeps every key the document does not print, with its value.

    Such a key goes to the ``row_fields`` dict a caller passes for the object (keyed by the
    object's path ``relative`` to its group row, plus the key), or else, outside the group rows,
    to ``page_fields`` (keyed by its full path). ``unknown`` holds every such key's
    :func:`generic_path`.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self.unknown: set[str] = set()
        self.page_fields: dict[str, Any] = {}

    def fail(self, path: str, problem: str) -> AnswerShapeError:
        return AnswerShapeError(f"{self.where}: {path} {problem}")

    def object(self, value: Any, path: str, required: Sequence[str], optional: Sequence[str] = (), *,
               row_fields: dict[str, Any] | None = None, relative: str = "") -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"is {_kind(value)} ({excerpt(value, 120)}); the document prints an object")
        missing = [key for key in required if key not in value]
        if missing:
            raise self.fail(path, f"lacks the documented key(s) {missing} (it has {sorted(value)}); "
                                  "nothing was loaded")
        for key in sorted(value.keys() - set(required) - set(optional)):
            self.unknown.add(generic_path(f"{path}.{key}"))
            if row_fields is None:
                self.page_fields[f"{path}.{key}"] = value[key]
            else:
                row_fields[f"{relative}.{key}" if relative else key] = value[key]
        return value

    def list(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, f"is {_kind(value)} ({excerpt(value, 120)}); the document prints a list")
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"is {_kind(value)} ({excerpt(value, 120)}); the document prints a string")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"is {_kind(value)} ({excerpt(value, 120)}); the document prints true/false")
        return value

    def number(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(path, f"is {_kind(value)} ({excerpt(value, 120)}); the document prints a number")
        return float(value)

    def figure(self, value: Any, path: str, *, masked_flag_printed: bool, row_fields: dict[str, Any],
               relative: str) -> Figure:
        """A ``{value, isMasked}`` figure. Where the document prints the figure without isMasked
        (totalCost, totalRevenue), an absent flag means not masked. A null value is accepted
        only with isMasked true: an unmasked figure without a value has no meaning to store."""
        required = ("value", "isMasked") if masked_flag_printed else ("value",)
        item = self.object(value, path, required, optional=("isMasked",), row_fields=row_fields, relative=relative)
        masked = self.boolean(item["isMasked"], f"{path}.isMasked") if "isMasked" in item else False
        if item["value"] is None:
            if not masked:
                raise self.fail(f"{path}.value", "is null but isMasked is not true; nothing was loaded")
            return Figure(None, True)
        return Figure(self.number(item["value"], f"{path}.value"), masked)


@dataclass(frozen=True)
class Figure:
    """One reported figure: the value Airbridge sent (kept even when masked) and its flag.
    ``extra_fields``: keys of a Day-N value (``rows[].values[]``) the document does not print."""

    value: float | None
    is_masked: bool
    extra_fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Totals:
    """A ``total`` object: cost, revenue (the app's currency) and unique users."""

    cost: Figure
    revenue: Figure
    unique_users: Figure


@dataclass(frozen=True)
class DateRow:
    """``data.stats.rows[].rows[]``: one start-event date of a group; ``values[n]`` is Day n."""

    date: str
    values: list[Figure]
    total: Totals
    # Keys the document does not print in the date row, its total and totals (rows[]...).
    extra_fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupRow:
    """``data.stats.rows[]``: one group (its group-by values by requested field), its dates, and
    its ``total`` over the task's whole range (``total.rows[n]`` is Day n summed over dates)."""

    group: dict[str, str]
    dates: list[DateRow]
    total_rows: list[Figure]
    total: Totals
    # Keys the document does not print in the group row, its total, totals and total.rows[n].
    extra_fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Notification:
    code: str
    type: str
    message: str


@dataclass
class ResultPage:
    """One SUCCESS answer of ``GET .../revenue/query/{task_id}?skip=&size=``."""

    task_id: str
    status: str
    ended_at: str
    has_next: bool
    total_count: int
    rows: list[GroupRow]
    notifications: list[Notification]
    # generic_path of every key the document does not print (in rows and beside them).
    unknown_fields: list[str] = field(default_factory=list)
    # Such keys outside the group rows (full path -> value): no table row holds them.
    page_fields: dict[str, Any] = field(default_factory=dict)


def _totals(reader: AnswerReader, total: dict[str, Any], path: str, row_fields: dict[str, Any],
            relative: str) -> Totals:
    def figure(key: str, masked_flag_printed: bool) -> Figure:
        return reader.figure(total[key], f"{path}.{key}", masked_flag_printed=masked_flag_printed,
                             row_fields=row_fields, relative=f"{relative}.{key}")

    return Totals(cost=figure("totalCost", False), revenue=figure("totalRevenue", False),
                  unique_users=figure("totalUniqueUsers", True))


def _date_row(reader: AnswerReader, value: Any, path: str) -> DateRow:
    # Undocumented keys are kept relative to the group row, [] marking the date (and the Day-N
    # value) a table row comes from: rows[].total.totalCost.currency, rows[].values[].x.
    own: dict[str, Any] = {}
    row = reader.object(value, path, ("date", "total", "values"), row_fields=own, relative="rows[]")
    date = reader.string(row["date"], f"{path}.date")
    if not _DATE.fullmatch(date):
        raise reader.fail(f"{path}.date", f"is {date!r}, not a date YYYY-MM-DD")
    try:
        dt.date.fromisoformat(date)
    except ValueError:
        raise reader.fail(f"{path}.date", f"is {date!r}, not a calendar date") from None
    values = []
    for n, item in enumerate(reader.list(row["values"], f"{path}.values")):
        extra: dict[str, Any] = {}
        figure = reader.figure(item, f"{path}.values[{n}]", masked_flag_printed=True, row_fields=extra,
                               relative="rows[].values[]")
        values.append(Figure(figure.value, figure.is_masked, extra))
    total = reader.object(row["total"], f"{path}.total", TOTAL_KEYS, row_fields=own, relative="rows[].total")
    return DateRow(date, values, _totals(reader, total, f"{path}.total", own, "rows[].total"), own)


def _group_row(reader: AnswerReader, value: Any, path: str, fields: Sequence[str]) -> GroupRow:
    # The group's own undocumented keys (and those of its range total) belong to every table row
    # of the group; total.rows[n] keeps its index, as it is not one table row's Day-N value.
    own: dict[str, Any] = {}
    row = reader.object(value, path, ("rows", "total", "metadata"), row_fields=own)
    metadata = reader.list(row["metadata"], f"{path}.metadata")
    # The document prints metadata as a list of strings ("<groupBy>"): the group-by values in
    # the order of the requested groupBy.fields. Only that order names them.
    if len(metadata) != len(fields):
        raise reader.fail(f"{path}.metadata", f"holds {len(metadata)} value(s) {excerpt(metadata, 120)} for "
                                              f"the {len(fields)} requested groupBy.fields {list(fields)}; "
                                              "values cannot be matched to fields, nothing was loaded")
    group = {name: reader.string(item, f"{path}.metadata[{i}]") for i, (name, item) in enumerate(zip(fields, metadata))}
    dates = [_date_row(reader, r, f"{path}.rows[{j}]") for j, r in enumerate(reader.list(row["rows"], f"{path}.rows"))]
    total = reader.object(row["total"], f"{path}.total", ("rows", *TOTAL_KEYS), row_fields=own, relative="total")
    total_rows = [reader.figure(v, f"{path}.total.rows[{n}]", masked_flag_printed=True, row_fields=own,
                                relative=f"total.rows[{n}]")
                  for n, v in enumerate(reader.list(total["rows"], f"{path}.total.rows"))]
    return GroupRow(group, dates, total_rows, _totals(reader, total, f"{path}.total", own, "total"), own)


def read_notifications(reader: AnswerReader, answer: dict[str, Any]) -> list[Notification]:
    """``notification`` beside ``data``: a list of {code, type, message}. The document says it is
    returned when aggregation removed data; an answer without the key has nothing to report."""
    items = reader.list(answer.get("notification", []), "notification")
    out = []
    for index, item in enumerate(items):
        path = f"notification[{index}]"
        notice = reader.object(item, path, ("code", "type", "message"))
        out.append(Notification(*(reader.string(notice[k], f"{path}.{k}") for k in ("code", "type", "message"))))
    return out


def read_status(answer: Any, where: str) -> str:
    """The task status at ``data.status``. The document's text says ``task.status`` but its
    printed answer has ``data.status``: the JSON wins. It prints no PENDING/RUNNING/FAILURE
    answer; adpipes reads only ``data.status`` from those."""
    data = answer.get("data") if isinstance(answer, dict) else None
    status = data.get("status") if isinstance(data, dict) else None
    if status not in STATUSES:
        got = sorted(data) if isinstance(data, dict) else sorted(answer) if isinstance(answer, dict) else _kind(answer)
        raise AnswerShapeError(
            f"{where}: the answer has no known status at data.status (got {status!r}; keys "
            f"{'data.' if isinstance(data, dict) else ''}{got}); expected one of {_listing(STATUSES)}"
        )
    return status


def read_created(answer: Any, where: str) -> tuple[str, dict[str, Any]]:
    """The task id of the query answer ``{"data": {"taskId": ...}}`` and the keys beside it the
    document does not print (full path -> value)."""
    reader = AnswerReader(where)
    data = reader.object(reader.object(answer, "$", ("data",))["data"], "data", ("taskId",))
    task_id = reader.string(data["taskId"], "data.taskId")
    if not task_id:
        raise reader.fail("data.taskId", "is empty")
    return task_id, reader.page_fields


def read_result_page(answer: Any, where: str, fields: Sequence[str], first_row: int = 0) -> ResultPage:
    """One SUCCESS result page, exactly at the document's JSON paths; ``fields`` are the
    requested groupBy.fields (metadata maps to them by position); ``first_row`` is the page's
    skip, so errors name a row by its place in the whole result."""
    reader = AnswerReader(where)
    top = reader.object(answer, "$", ("data",), optional=("notification",))
    data = reader.object(top["data"], "data", ("stats", "status", "taskId", "endedAt", "hasNext", "metadata"))
    stats = reader.object(data["stats"], "data.stats", ("rows",))
    rows = [_group_row(reader, row, f"data.stats.rows[{first_row + i}]", fields)
            for i, row in enumerate(reader.list(stats["rows"], "data.stats.rows"))]
    metadata = reader.object(data["metadata"], "data.metadata", ("totalCount",))
    total_count = reader.number(metadata["totalCount"], "data.metadata.totalCount")
    if not total_count.is_integer() or total_count < 0:
        raise reader.fail("data.metadata.totalCount", f"is {total_count!r}, not a row count")
    return ResultPage(
        task_id=reader.string(data["taskId"], "data.taskId"),
        status=reader.string(data["status"], "data.status"),
        ended_at=reader.string(data["endedAt"], "data.endedAt"),
        has_next=reader.boolean(data["hasNext"], "data.hasNext"),
        total_count=int(total_count),
        rows=rows,
        notifications=read_notifications(reader, top),
        unknown_fields=sorted(reader.unknown),
        page_fields=reader.page_fields,
    )


def read_problem(answer: Any) -> dict[str, Any] | None:
    """The 404 problem JSON ``{type, title, status, traceId}``, or None for another body."""
    keys = ("type", "title", "status", "traceId")
    if isinstance(answer, dict) and all(k in answer for k in keys):
        return {k: answer[k] for k in keys}
    return None


# -- metadata (dataspec) answers -----------------------------------------------------------------

@dataclass
class Catalog:
    """What the app offers, from the three metadata endpoints."""

    # metric key -> its aggregation types (None: the document prints null for sub metrics).
    metrics: dict[str, list[str] | None]
    # group-by key -> whether it can be a filter (isFilter).
    group_bys: dict[str, bool]
    start_events: list[str]
    return_events: list[str]


def _sections(reader: AnswerReader, answer: Any, items: str, item_keys: Sequence[str]) -> list[tuple[str, list[dict]]]:
    sections = reader.list(reader.object(answer, "$", ("data",))["data"], "data")
    out = []
    for i, section in enumerate(sections):
        body = reader.object(section, f"data[{i}]", ("name", items))
        entries = [reader.object(e, f"data[{i}].{items}[{j}]", item_keys)
                   for j, e in enumerate(reader.list(body[items], f"data[{i}].{items}"))]
        out.append((reader.string(body["name"], f"data[{i}].name"), entries))
    return out


def read_catalog(metrics: Any, groupbys: Any, events: Any, where: str) -> Catalog:
    """The app's metrics, group-bys and events from the three printed answer shapes. Events come
    in sections named "Start Event" and "Return Event" (as printed)."""
    reader = AnswerReader(where)
    metric_keys = ("key", "name", "description", "valueType", "aggregationType")
    field_keys = ("key", "name", "description", "example", "isFilter", "type", "isCost")
    event_keys = ("subGroup", "key", "name", "description")
    catalog = Catalog(
        metrics={m["key"]: m["aggregationType"] for _, ms in _sections(reader, metrics, "metrics", metric_keys) for m in ms},
        group_bys={f["key"]: bool(f["isFilter"]) for _, fs in _sections(reader, groupbys, "fields", field_keys) for f in fs},
        start_events=[], return_events=[],
    )
    for name, entries in _sections(reader, events, "events", event_keys):
        target = {"Start Event": catalog.start_events, "Return Event": catalog.return_events}.get(name)
        if target is not None:
            target.extend(e["key"] for e in entries)
    return catalog


def catalog_findings(catalog: Catalog, body: Mapping[str, Any]) -> list[str]:
    """What in ``body`` the app's catalog does not offer (empty: everything is offered)."""
    findings = []
    for key in body["groupBy"]["fields"]:
        if key not in catalog.group_bys:
            findings.append(f"group-by key {key!r} (groupBy.fields) is not offered for this app; "
                            f"offered: {_listing(sorted(catalog.group_bys))}")
    for item in body["filters"]:
        if not catalog.group_bys.get(item["field"], False):
            findings.append(f"filter field {item['field']!r} is not a group-by that can be filtered on; "
                            f"filterable: {_listing(sorted(k for k, f in catalog.group_bys.items() if f))}")
    metric, aggregation = body["metric"], body["aggregationType"]
    if metric not in catalog.metrics:
        findings.append(f"metric {metric!r} is not offered for this app; offered: {_listing(sorted(catalog.metrics))}")
    elif catalog.metrics[metric] is not None and aggregation not in catalog.metrics[metric]:
        findings.append(f"metric {metric!r} supports aggregationType {_listing(catalog.metrics[metric])}, "
                        f"not {aggregation!r}")
    for name, offered in (("startEvents", catalog.start_events), ("returnEvents", catalog.return_events)):
        unknown = [e for e in body[name] if e not in offered]
        if unknown:
            findings.append(f"{name} {unknown} are not offered for this app; offered: {_listing(offered)}")
    return findings
