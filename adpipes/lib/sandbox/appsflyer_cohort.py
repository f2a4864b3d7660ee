"""AppsFlyer Cohort API endpoint of the sandbox.

- ``POST /api/cohorts/v1/data/app/{app_id}`` (JSON body, ``?format=json`` or CSV): the body is
  validated like the real API (422 ``{"error": ..., "expose": false}``); results have the
  grouping columns, ``users``, ``cost``, ``ecpi`` and ``{kpi}_{function}_day_{N}`` columns. With
  ``partial_data`` false (the default) a query has the periods ``N < today - to`` only (complete
  days), so immature periods are absent; cumulative values never decrease with N.

A cohort's users and cost are the installs and cost of the sandbox's daily_report for the same
app, day, media source and campaign. Faults come from ``take_fault(app_id, "cohort")``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from adpipes.lib.sandbox.appsflyer import _seed, api_call_preamble
from adpipes.lib.sandbox.appsflyer_aggregate import (
    NO_AGENCY,
    _day,
    _Invalid,
    daily_report_cells,
    daily_report_figures,
)
from adpipes.lib.sandbox.server import Request, Response

if TYPE_CHECKING:
    from adpipes.lib.sandbox.server import SandboxServer

COHORT = "cohort"
COHORT_PATH = r"/api/cohorts/v1/data/app/(?P<app_id>[^/]+)"

COHORT_TYPES = ("user_acquisition", "retargeting", "unified")
AGGREGATION_TYPES = ("cumulative", "on_day")
GROUPINGS = ("af_ad", "af_ad_id", "c", "af_c_id", "af_channel", "pid", "af_sub1", "af_keywords",
             "af_prt", "cohort_type", "site_id", "attributed_touch_type", "af_adset",
             "af_adset_id", "geo", "date")
# users, ecpi and cost come with every query; these are the KPIs a query asks for, with the
# functions the sandbox reports for them (the sandbox's own copy: it plays the vendor).
KPI_FUNCTIONS = {
    "revenue": ("sum", "count"),
    "sessions": ("sum", "count"),
    "uninstalls": ("sum", "count"),
    # The spec spells this KPI in capitals; its columns come back as roas_*.
    "ROAS": ("sum",),
    "roi": ("sum",),
    "users": (), "ecpi": (), "cost": (),
}
MAX_PERIOD = 180
EARLIEST_COHORT_DAYS = 720
# preferred_timezone=true means "the app's timezone in AppsFlyer"; the sandbox apps use this one.
APP_TIMEZONE = "Asia/Seoul"


def _validate_cohort_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _Invalid("Request body must be a JSON object")
    for key in ("cohort_type", "from", "to", "groupings", "kpis", "aggregation_type"):
        if key not in body:
            raise _Invalid(f"Missing required key: {key}")
    if body["cohort_type"] not in COHORT_TYPES:
        raise _Invalid(f"Invalid value: {body['cohort_type']} for key: cohort_type. "
                       f"Expected one of: {', '.join(COHORT_TYPES)}")
    if body["aggregation_type"] not in AGGREGATION_TYPES:
        raise _Invalid(f"Invalid value: {body['aggregation_type']} for key: aggregation_type. "
                       f"Expected one of: {', '.join(AGGREGATION_TYPES)}")
    kpis = body["kpis"]
    if not isinstance(kpis, list) or len(kpis) != 1:
        raise _Invalid("kpis must be a list with exactly one KPI")
    if kpis[0] not in KPI_FUNCTIONS:
        raise _Invalid(f"Invalid value: {kpis[0]} for key: kpis. Expected one of: "
                       f"{', '.join(KPI_FUNCTIONS)}")
    groupings = body["groupings"]
    if not isinstance(groupings, list) or not 1 <= len(groupings) <= 7:
        raise _Invalid("groupings must be a list of 1 to 7 groupings")
    for grouping in groupings:
        if grouping not in GROUPINGS:
            raise _Invalid(f"Invalid value: {grouping} for key: groupings. Expected one of: "
                           f"{', '.join(GROUPINGS)}")
    periods = (body.get("filters") or {}).get("period", list(range(MAX_PERIOD + 1)))
    if not isinstance(periods, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= MAX_PERIOD for p in periods
    ):
        raise _Invalid(f"filters.period must be a list of integers 0-{MAX_PERIOD}")
    for flag in ("partial_data", "preferred_timezone", "preferred_currency", "per_user"):
        if flag in body and not isinstance(body[flag], bool):
            raise _Invalid(f"Invalid value: {body[flag]} for key: {flag}. Expected true or false")
    return body


def cohort_cell(app_id: str, day: dt.date, source: str, campaign: str, kpi: str
                ) -> tuple[int, float | None, dict[str, list[float]]]:
    """users, cost and per-function daily increments (periods 0..180) of one cohort cell."""
    figures = daily_report_figures(app_id, day, source, campaign)
    users, cost = figures["installs"], figures["total_cost"]
    rng = random.Random(_seed(app_id, COHORT, kpi, day.isoformat(), source, campaign))
    counts = [float(round(users * rng.uniform(0.02, 0.3) / (1 + n) ** 0.7)) for n in range(MAX_PERIOD + 1)]
    per_event = rng.uniform(1.0, 12.0)
    sums = [round(c * per_event * rng.uniform(0.8, 1.2), 2) for c in counts]
    increments: dict[str, list[float]] = {}
    for function in KPI_FUNCTIONS[kpi]:
        if kpi in ("ROAS", "roi"):
            revenue = cohort_cell(app_id, day, source, campaign, "revenue")[2]["sum"]
            base = (cost or 0.0) or None
            increments[function] = [0.0 if base is None else r / base for r in revenue]
            if kpi == "roi":
                increments[function][0] -= 0.0 if base is None else 1.0
        else:
            increments[function] = counts if function == "count" else sums
    return users, cost, increments


def cohort_records(app_id: str, body: dict[str, Any], today: dt.date) -> list[dict[str, Any]]:
    first, last = _day(body["from"], "from"), _day(body["to"], "to")
    if last < first:
        raise _Invalid("'to' must not be earlier than 'from'")
    if first < today - dt.timedelta(days=EARLIEST_COHORT_DAYS):
        raise _Invalid(f"from: the earliest date supported is {EARLIEST_COHORT_DAYS} days ago")
    kpi = body["kpis"][0]
    groupings = list(body["groupings"])
    cumulative = body["aggregation_type"] == "cumulative"
    periods = set((body.get("filters") or {}).get("period", range(MAX_PERIOD + 1)))
    min_size = int(body.get("min_cohort_size") or 1)
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    day = first
    while day <= min(last, today):
        # Complete days only, unless partial_data: periods N < today - to (N <= today - D).
        mature = (today - day).days if body.get("partial_data") else (today - last).days - 1
        for source, agency, campaign in daily_report_cells(app_id):
            users, cost, increments = cohort_cell(app_id, day, source, campaign, kpi)
            values = {"date": day.isoformat(), "pid": source, "c": campaign, "af_prt": agency,
                      "geo": "KR", "cohort_type": body["cohort_type"]}
            key = tuple(values.get(g, NO_AGENCY) for g in groupings)
            group = groups.setdefault(key, {"users": 0, "cost": None, "kpis": {}})
            group["users"] += users
            if cost is not None:
                group["cost"] = (group["cost"] or 0.0) + cost
            for function, daily in increments.items():
                running = 0.0
                for n in range(MAX_PERIOD + 1):
                    running = running + daily[n] if cumulative else daily[n]
                    if n in periods and n <= mature:
                        name = f"{kpi.lower()}_{function}_day_{n}"
                        group["kpis"][name] = group["kpis"].get(name, 0.0) + running
        day += dt.timedelta(days=1)
    records = []
    for key, group in groups.items():
        if group["users"] < min_size:
            continue
        record: dict[str, Any] = dict(zip(groupings, key))
        cost = None if group["cost"] is None else round(group["cost"], 2)
        record.update(users=group["users"], cost=cost,
                      ecpi=None if cost is None else round(cost / group["users"], 4))
        record.update({name: int(value) if "_count_day_" in name else round(value, 4)
                       for name, value in group["kpis"].items()})
        records.append(record)
    return records


def cohort_query(server: SandboxServer, request: Request) -> Response:
    app_id = request.match["app_id"]
    call, early, delay = api_call_preamble(server, request, app_id, COHORT)
    if early is not None:
        return early
    try:
        body = json.loads(request.body.decode("utf-8") or "null")
    except ValueError:
        body = None
    call["body"] = body
    try:
        body = _validate_cohort_body(body)
        timezone = APP_TIMEZONE if body.get("preferred_timezone") else "UTC"
        records = cohort_records(app_id, body, dt.datetime.now(ZoneInfo(timezone)).date())
    except _Invalid as exc:
        return Response.json_body(422, {"error": str(exc), "expose": False}, call=call)
    call["rows"] = len(records)
    if request.params.get("format") == "json":
        return Response.json_body(200, {"query": body, "results": records}, call=call, delay=delay)
    names: list[str] = []
    for record in records:
        names.extend(k for k in record if k not in names)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return Response(200, out.getvalue().encode("utf-8"), "text/csv", call=call, delay=delay)


def register(server: SandboxServer) -> None:
    server.add_route("POST", COHORT_PATH, cohort_query)
