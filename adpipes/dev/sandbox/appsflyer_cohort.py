"""AppsFlyer Cohort API endpoint of the sandbox, as AppsFlyer's documents describe it.

``POST /api/cohorts/v1/data/app/{app_id}`` with a JSON body (``Content-Type: application/json``),
answered as CSV by default and as ``{"query": ..., "results": [...]}`` with ``?format=json``:

- the body is validated like the documents (the support page in Korean and Chinese and the
  OpenAPI file ``cohort_api.yaml``): required ``cohort_type``, ``from``, ``to``, ``groupings``
  (1-7 of the documented enum), ``kpis`` (exactly one: a documented KPI, ``roas`` or ``ROAS``,
  ``users``/``ecpi``/``cost`` or any in-app event name), ``aggregation_type``; ``partial_data``
  only with ``cumulative``; ``filters.period`` days 0-180 and filter dimensions given as a string
  or a list of strings (both documents print both); booleans as JSON booleans;
  ``min_cohort_size`` >= 1; ``uninstalls`` is refused with ``unified``; ``from`` at most 720 days
  back; at most 60 days per query. A refusal is 422 ``{"error": ..., "expose": false}``;
- records carry the requested groupings, ``users``, ``cost`` and ``ecpi`` (``N/A`` without cost)
  and ``{kpi}_{function}_day_{N}`` for every function of the documents' KPI x function table
  (unique users of sessions only with ``on_day``), except an event KPI's Sum, which is
  ``sum_{event}_day_{N}`` as footnote 3 spells it; the KPI prefix is the lowercase KPI, an event
  name snake-cased. Cumulative values never decrease with N; only complete periods
  (``N < today - to``) unless ``partial_data``; ``preferred_currency`` converts money to the app's
  currency (KRW) at a fixed rate, so a test can tell the currencies apart.

The documents print no answer (their CSV and JSON examples are images and links), so the record
shape is the sandbox's own reading of them, as adpipes' parser's is: see docs/cohort-api.md.

A cohort's users and cost are the installs and cost of the sandbox's daily_report for the same
app, day, media source and campaign (user acquisition; retargeting and unified derive from them),
split over the countries of ``GEO_SHARES``. So that every request the documents print matches
data, the Cohort API also has the cells of ``PRINTED_FILTER_CELLS`` (figures from the same
function; the daily report does not list them). Faults come from ``take_fault(app_id,
"cohort")``; :func:`configure_cohort` (or ``POST /_sandbox/appsflyer/cohort``) makes answers
depart from the documents so tests can see adpipes notice: refused KPI spellings, extra or
missing functions, extra record keys, padded results, an event's Sum in another spelling, extra
top-level answer keys.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import re
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from adpipes.dev.sandbox.appsflyer import _seed, api_call_preamble
from adpipes.dev.sandbox.appsflyer_aggregate import NO_AGENCY, daily_report_cells, daily_report_figures
from adpipes.dev.sandbox.server import CONTROL_PREFIX, Request, Response

if TYPE_CHECKING:
    from adpipes.dev.sandbox.server import SandboxServer

COHORT = "cohort"
COHORT_PATH = r"/api/cohorts/v1/data/app/(?P<app_id>[^/]+)"
CONTROL_PATH = re.escape(CONTROL_PREFIX) + "appsflyer/cohort"

# The vendor's facts, the sandbox's own copy (it plays the vendor, not adpipes).
COHORT_TYPES = ("user_acquisition", "retargeting", "unified")
AGGREGATION_TYPES = ("cumulative", "on_day")
GRANULARITIES = ("hour", "day", "week", "month")
GROUPINGS = ("af_ad", "af_ad_id", "c", "af_c_id", "af_channel", "pid", "af_sub1", "af_keywords",
             "af_prt", "cohort_type", "site_id", "attributed_touch_type", "af_adset",
             "af_adset_id", "geo", "date")
# Filter dimensions: the groupings but date, plus revenue_type and period.
FILTERS = (*(g for g in GROUPINGS if g != "date"), "revenue_type", "period")
REQUIRED_FIELDS = ("cohort_type", "from", "to", "groupings", "kpis", "aggregation_type")
OPTIONAL_FIELDS = ("min_cohort_size", "granularity", "partial_data", "filters", "preferred_currency",
                   "preferred_timezone", "per_user")
BOOLEAN_FIELDS = ("partial_data", "preferred_timezone", "preferred_currency", "per_user")
# The OpenAPI file's kpis enum (its error messages list it); any other KPI is an event name.
KPI_ENUM = ("users", "ecpi", "cost", "event_name", "revenue", "ROAS", "roi", "sessions", "uninstalls")
KPI_FUNCTIONS = {
    "revenue": ("count", "sum"),
    "roas": ("rate",),
    "roi": ("rate",),
    "sessions": ("count", "rate", "unique_users"),
    "uninstalls": ("count", "rate"),
    "users": (), "ecpi": (), "cost": (),
}
EVENT_FUNCTIONS = ("count", "cvr", "sum", "unique_users")
ON_DAY_ONLY = {"sessions": ("unique_users",)}
MAX_PERIOD = 180
DEFAULT_PERIODS = (*range(31), 60, 90, 180)
HISTORY_DAYS = 720
MAX_RANGE_DAYS = 60
DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}\s*(?:\d{2}:\d{2}(?::\d{2})?)?$")
# preferred_timezone=true means "the app's timezone in AppsFlyer"; the sandbox apps use this one.
APP_TIMEZONE = "Asia/Seoul"
# preferred_currency=true: money in the apps' currency (KRW, as adpipes.lib.settings'
# SANDBOX_APP_CURRENCY) at this fixed rate.
USD_TO_APP_CURRENCY = 1350.0
NOT_AVAILABLE = "N/A"
# Countries of each cell's users and their shares (the last takes the remainder): the documents'
# curl examples filter on geo US and CN.
GEO_SHARES = (("KR", 0.6), ("US", 0.25), ("CN", 0.15))
# (media source, agency, campaign) cells beyond the daily report's, there because the documents'
# printed filters ask for them: media source "Meta ads" (the Korean curl example; the Chinese one
# has "Facebook Ads", which the daily report has) and campaign "example_campaign_name" (use case 2).
PRINTED_FILTER_CELLS = (("Meta ads", NO_AGENCY, "example_campaign_name"),)
# How an event KPI's Sum is keyed: footnote 3's sum_{event}_day_{N} (the default), the other
# functions' {event}_sum_day_{N}, or both at once (a test control).
EVENT_SUM_FORMS = ("footnote", "function", "both")
COHORT_BEHAVIOUR = ("refused_kpis", "extra_functions", "drop_functions", "extra_keys", "results_count",
                    "event_sum_form", "extra_answer_keys")


class CohortRefusal(Exception):
    """A body the documents do not allow: answered 422 with this text."""


def _invalid(value: Any, key: str, expected: str) -> CohortRefusal:
    # The wording of the OpenAPI file's 422 example.
    return CohortRefusal(f"Invalid value: {value} for key: {key}. Expected {expected}")


def _date(value: Any, key: str) -> dt.date:
    if not isinstance(value, str) or not DATE_PATTERN.match(value.strip()):
        raise _invalid(value, key, "a date yyyy-mm-dd")
    try:
        return dt.date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise _invalid(value, key, "a date yyyy-mm-dd") from None


def kpi_name(kpi: str) -> str:
    """A documented KPI lowercased (any spelling), else the event name as written."""
    return kpi.lower() if kpi.lower() in KPI_FUNCTIONS else kpi


def key_prefix(kpi: str) -> str:
    """How a KPI begins its answer keys: lowercase, an event name snake-cased."""
    return re.sub(r"[^0-9a-z]+", "_", kpi.lower()).strip("_")


def served_functions(kpi: str, aggregation_type: str) -> tuple[str, ...]:
    name = kpi_name(kpi)
    functions = KPI_FUNCTIONS.get(name, EVENT_FUNCTIONS)
    if aggregation_type != "on_day":
        functions = tuple(f for f in functions if f not in ON_DAY_ONLY.get(name, ()))
    return functions


def validate_cohort_body(body: Any, refused_kpis: tuple[str, ...] = ()) -> dict[str, Any]:
    """The documents' rules a body must meet, whatever the day (see :func:`check_dates`)."""
    if not isinstance(body, dict):
        raise CohortRefusal("The request must be a JSON object in the body (not query parameters)")
    for key in REQUIRED_FIELDS:
        if key not in body:
            raise CohortRefusal(f"Missing required key: {key}")
    unknown = sorted(set(body) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise CohortRefusal(f"Unknown key(s): {', '.join(unknown)}")
    if body["cohort_type"] not in COHORT_TYPES:
        raise _invalid(body["cohort_type"], "cohort_type", f"one of: {', '.join(COHORT_TYPES)}")
    if body["aggregation_type"] not in AGGREGATION_TYPES:
        raise _invalid(body["aggregation_type"], "aggregation_type", f"one of: {', '.join(AGGREGATION_TYPES)}")
    first, last = _date(body["from"], "from"), _date(body["to"], "to")
    if last < first:
        raise _invalid(body["to"], "to", "a date on or after from")
    if "granularity" in body and body["granularity"] not in GRANULARITIES:
        raise _invalid(body["granularity"], "granularity", f"one of: {', '.join(GRANULARITIES)}")
    if body.get("granularity", "day") != "day":
        raise CohortRefusal("granularity other than day is not simulated by the adpipes sandbox")
    groupings = body["groupings"]
    if not isinstance(groupings, list) or not 1 <= len(groupings) <= 7:
        raise _invalid(groupings, "groupings", "a list of 1 to 7 groupings")
    for grouping in groupings:
        if grouping not in GROUPINGS:
            raise _invalid(grouping, "groupings", f"one of: {', '.join(GROUPINGS)}")
    kpis = body["kpis"]
    if not isinstance(kpis, list) or len(kpis) != 1 or not isinstance(kpis[0], str) or not kpis[0].strip():
        raise _invalid(kpis, "kpis", "a list of exactly one KPI")
    if kpis[0] in refused_kpis:
        raise _invalid(kpis[0], "kpis", f"one of: {', '.join(KPI_ENUM)}")
    if kpi_name(kpis[0]) == "uninstalls" and body["cohort_type"] == "unified":
        raise CohortRefusal("KPI uninstalls is not available with cohort_type unified")
    for flag in BOOLEAN_FIELDS:
        if flag in body and not isinstance(body[flag], bool):
            raise _invalid(body[flag], flag, "true or false")
    if body.get("partial_data") and body["aggregation_type"] != "cumulative":
        raise CohortRefusal("partial_data is only allowed with aggregation_type cumulative")
    size = body.get("min_cohort_size", 1)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise _invalid(size, "min_cohort_size", "an integer >= 1")
    filters = body.get("filters", {})
    if not isinstance(filters, dict):
        raise _invalid(filters, "filters", "an object")
    for key, value in filters.items():
        if key not in FILTERS:
            raise _invalid(key, "filters", f"one of: {', '.join(FILTERS)}")
        if key == "period":
            if not isinstance(value, list) or not value or not all(
                isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= MAX_PERIOD for p in value
            ):
                raise _invalid(value, "filters.period", f"a list of integers 0-{MAX_PERIOD}")
        elif not (isinstance(value, str) or (isinstance(value, list) and value
                                             and all(isinstance(v, str) for v in value))):
            raise _invalid(value, f"filters.{key}", "a string or a list of strings")
    return body


def check_dates(body: dict[str, Any], today: dt.date) -> tuple[dt.date, dt.date]:
    """The date limits of the documents: ``from`` at most 720 days back, at most 60 days."""
    first, last = _date(body["from"], "from"), _date(body["to"], "to")
    earliest = today - dt.timedelta(days=HISTORY_DAYS)
    if first < earliest:
        raise _invalid(body["from"], "from", f"a date within the last {HISTORY_DAYS} days (from {earliest} on)")
    if (last - first).days + 1 > MAX_RANGE_DAYS:
        raise _invalid(body["to"], "to", f"a range of at most {MAX_RANGE_DAYS} days")
    return first, last


def cohort_cells(app_id: str) -> list[tuple[str, str, str]]:
    """(media source, agency, campaign) cells the app's cohorts have every day."""
    return [*daily_report_cells(app_id), *PRINTED_FILTER_CELLS]


def cohort_base(app_id: str, day: dt.date, source: str, campaign: str, cohort_type: str) -> tuple[int, float | None]:
    """Users and cost (USD) of one cohort cell, all countries."""
    figures = daily_report_figures(app_id, day, source, campaign)
    installs, cost = figures["installs"], figures["total_cost"]
    retargeted = max(1, round(installs * 0.3))
    retarget_cost = None if cost is None else round(cost * 0.4, 2)
    if cohort_type == "user_acquisition":
        return installs, cost
    if cohort_type == "retargeting":
        return retargeted, retarget_cost
    return installs + retargeted, None if cost is None else round(cost + retarget_cost, 2)


def by_geo(users: int, cost: float | None) -> list[tuple[str, int, float | None]]:
    """A cell's users and cost split over ``GEO_SHARES``; the parts add up to the whole."""
    parts = []
    users_left, cost_left = users, cost
    for i, (geo, share) in enumerate(GEO_SHARES):
        last = i == len(GEO_SHARES) - 1
        part = users_left if last else round(users * share)
        part_cost = None if cost is None else (round(cost_left, 2) if last else round(cost * share, 2))
        users_left -= part
        if cost_left is not None and part_cost is not None:
            cost_left -= part_cost
        parts.append((geo, part, part_cost))
    return parts


def daily_activity(app_id: str, day: dt.date, source: str, campaign: str, geo: str, cohort_type: str,
                   kpi: str, users: int) -> dict[str, list[float]]:
    """Per-day additive figures of one cell and country (periods 0..180): events, revenue (USD),
    users active that day and users doing it for the first time."""
    # roas and roi are ratios of the cohort's revenue: the same activity as the revenue KPI.
    activity_kpi = "revenue" if kpi_name(kpi) in ("roas", "roi") else kpi_name(kpi)
    rng = random.Random(_seed(app_id, COHORT, cohort_type, activity_kpi, day.isoformat(), source, campaign, geo))
    scale = 0.05 if activity_kpi == "uninstalls" else rng.uniform(0.05, 0.4)
    events = [float(round(users * scale / (1 + n) ** 0.7)) for n in range(MAX_PERIOD + 1)]
    price = rng.uniform(1.0, 12.0)
    revenue = [round(e * price * rng.uniform(0.8, 1.2), 2) for e in events]
    active = [float(min(users, round(e * 0.6))) for e in events]
    first_time = [float(round(a * 0.3)) for a in active]
    return {"events": events, "revenue": revenue, "active": active, "first_time": first_time}


def function_values(kpi: str, functions: tuple[str, ...], totals: dict[str, float], users: int,
                    cost: float | None, cumulative: bool) -> dict[str, float]:
    """The KPI's function values of one period from the group's additive totals (USD)."""
    name = kpi_name(kpi)
    unique = min(users, totals["first_time"]) if cumulative else totals["active"]
    values: dict[str, float] = {}
    for function in functions:
        if function == "count":
            values[function] = totals["events"]
        elif function == "sum":
            values[function] = totals["revenue"]
        elif function == "unique_users":
            values[function] = unique
        elif function == "cvr":
            values[function] = 100.0 * unique / users if users else 0.0
        elif name == "roas":
            values[function] = 100.0 * totals["revenue"] / cost if cost else 0.0
        elif name == "roi":
            values[function] = 100.0 * (totals["revenue"] - cost) / cost if cost else 0.0
        else:  # sessions and uninstalls: per cohort user, in percent
            values[function] = 100.0 * totals["events"] / users if users else 0.0
    return values


def value_keys(kpi: str, function: str, period: int, event_sum_form: str = "footnote") -> list[str]:
    """The record key(s) of one function value: ``{kpi}_{function}_day_{N}``, but an event KPI's
    Sum as footnote 3 of the KPI table spells it, "sum_event_name", with the ``_day_{N}`` suffix
    every other key has (the suffix is the one inference: the footnote prints none)."""
    prefix = key_prefix(kpi)
    if function != "sum" or kpi_name(kpi) in KPI_FUNCTIONS:
        return [f"{prefix}_{function}_day_{period}"]
    footnote, other = f"sum_{prefix}_day_{period}", f"{prefix}_sum_day_{period}"
    return {"footnote": [footnote], "function": [other], "both": [footnote, other]}[event_sum_form]


def _filter_values(value: str | list[str]) -> set[str]:
    return {value} if isinstance(value, str) else set(value)


def cohort_records(app_id: str, body: dict[str, Any], today: dt.date,
                   behaviour: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The answer's records for a validated body."""
    behaviour = behaviour or {}
    first, last = check_dates(body, today)
    kpi = body["kpis"][0]
    cohort_type = body["cohort_type"]
    groupings = list(body["groupings"])
    cumulative = body["aggregation_type"] == "cumulative"
    filters = dict(body.get("filters") or {})
    periods = set(filters.pop("period", DEFAULT_PERIODS))
    wanted = {k: _filter_values(v) for k, v in filters.items()}
    functions = tuple(f for f in served_functions(kpi, body["aggregation_type"])
                      if f not in behaviour.get("drop_functions", ()))
    extra_functions = tuple(behaviour.get("extra_functions", ()))
    # Complete days only (N < today - to), unless partial_data: up to today for the range.
    mature = min(MAX_PERIOD, (today - first).days) if body.get("partial_data") else (today - last).days - 1
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    day = first
    while day <= min(last, today):
        for source, agency, campaign in cohort_cells(app_id):
            for geo, users, cost in by_geo(*cohort_base(app_id, day, source, campaign, cohort_type)):
                values = {"date": day.isoformat(), "pid": source, "c": campaign, "af_prt": agency,
                          "geo": geo, "cohort_type": cohort_type}
                if any(values.get(k, NO_AGENCY) not in v for k, v in wanted.items() if k != "revenue_type"):
                    continue
                activity = daily_activity(app_id, day, source, campaign, geo, cohort_type, kpi, users)
                key = tuple(values.get(g, NO_AGENCY) for g in groupings)
                group = groups.setdefault(key, {"users": 0, "cost": None, "totals": {}})
                group["users"] += users
                if cost is not None:
                    group["cost"] = (group["cost"] or 0.0) + cost
                for n in range(min(mature, MAX_PERIOD) + 1):
                    if n not in periods:
                        continue
                    totals = group["totals"].setdefault(n, dict.fromkeys(activity, 0.0))
                    for figure, daily in activity.items():
                        totals[figure] += sum(daily[: n + 1]) if cumulative else daily[n]
        day += dt.timedelta(days=1)
    rate = USD_TO_APP_CURRENCY if body.get("preferred_currency") else 1.0
    per_user = bool(body.get("per_user"))
    prefix = key_prefix(kpi)
    event_sum_form = behaviour.get("event_sum_form", "footnote")
    records = []
    for key, group in groups.items():
        users, cost = group["users"], group["cost"]
        if users < body.get("min_cohort_size", 1):
            continue
        record: dict[str, Any] = dict(zip(groupings, key))
        record.update(users=users,
                      cost=NOT_AVAILABLE if cost is None else round(cost * rate, 2),
                      ecpi=NOT_AVAILABLE if cost is None else round(cost * rate / users, 4))
        for n, totals in sorted(group["totals"].items()):
            values = function_values(kpi, functions, totals, users, cost, cumulative)
            for function, value in values.items():
                if function == "sum":
                    value *= rate
                if per_user and function in ("count", "sum", "unique_users"):
                    value /= users
                value = int(value) if function in ("count", "unique_users") and not per_user else round(value, 4)
                for name in value_keys(kpi, function, n, event_sum_form):
                    record[name] = value
            for token in extra_functions:
                record[f"{prefix}_{token}_day_{n}"] = totals["events"]
        record.update(behaviour.get("extra_keys", {}))
        records.append(record)
    padding = behaviour.get("results_count")
    if padding and records:
        records += [{**records[i % len(records)], "pid": f"padding_{i}"} for i in range(max(0, padding - len(records)))]
    return records


def configure_cohort(server: SandboxServer, **changes: Any) -> None:
    """Make Cohort answers depart from the documents (cleared by ``server.reset()``):
    ``refused_kpis`` (spellings answered 422 as outside the OpenAPI enum), ``extra_functions``
    (function tokens added to every KPI), ``drop_functions`` (documented functions left out),
    ``extra_keys`` (added to every record), ``results_count`` (records padded to this many),
    ``event_sum_form`` (an event's Sum keyed ``footnote``, ``function`` or ``both``: see
    :func:`value_keys`), ``extra_answer_keys`` (added beside ``query`` and ``results``)."""
    unknown = set(changes) - set(COHORT_BEHAVIOUR)
    if unknown:
        raise ValueError(f"unknown cohort behaviour {sorted(unknown)}; known: {list(COHORT_BEHAVIOUR)}")
    if changes.get("event_sum_form", "footnote") not in EVENT_SUM_FORMS:
        raise ValueError(f"event_sum_form must be one of {list(EVENT_SUM_FORMS)}")
    extra = changes.get("extra_answer_keys", {})
    if not isinstance(extra, dict) or {"query", "results"} & set(extra):
        raise ValueError("extra_answer_keys must be an object of keys other than query and results")
    with server.lock:
        server.config.setdefault(COHORT, {}).update(changes)


def cohort_query(server: SandboxServer, request: Request) -> Response:
    app_id = request.match["app_id"]
    call, early, delay = api_call_preamble(server, request, app_id, COHORT)
    call["content_type"] = request.headers.get("Content-Type", "")
    call["accept"] = request.headers.get("Accept", "")
    if early is not None:
        return early
    try:
        body = json.loads(request.body.decode("utf-8") or "null")
    except ValueError:
        body = None
    call["body"] = body
    behaviour = server.config_snapshot().get(COHORT, {})
    answer_format = request.params.get("format", "csv")
    try:
        if not call["content_type"].split(";")[0].strip() == "application/json":
            raise CohortRefusal("The request must be JSON in the body (Content-Type: application/json)")
        if answer_format not in ("csv", "json"):
            raise _invalid(answer_format, "format", "one of: csv, json")
        body = validate_cohort_body(body, tuple(behaviour.get("refused_kpis", ())))
        timezone = APP_TIMEZONE if body.get("preferred_timezone") else "UTC"
        records = cohort_records(app_id, body, dt.datetime.now(ZoneInfo(timezone)).date(), behaviour)
    except CohortRefusal as exc:
        return Response.json_body(422, {"error": str(exc), "expose": False}, call=call)
    call["rows"] = len(records)
    if answer_format == "json":
        answer = {"query": body, "results": records, **behaviour.get("extra_answer_keys", {})}
        return Response.json_body(200, answer, call=call, delay=delay)
    names: list[str] = []
    for record in records:
        names.extend(k for k in record if k not in names)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return Response(200, out.getvalue().encode("utf-8"), "text/csv", call=call, delay=delay)


def cohort_behaviour(server: SandboxServer, request: Request) -> Response:
    try:
        configure_cohort(server, **request.json())
    except (ValueError, TypeError, AttributeError) as exc:
        return Response.json_body(400, {"message": str(exc)})
    return Response.json_body(200, server.config_snapshot().get(COHORT, {}))


def register(server: SandboxServer) -> None:
    server.add_route("POST", COHORT_PATH, cohort_query)
    server.add_route("POST", CONTROL_PATH, cohort_behaviour)
