"""AppsFlyer aggregate ``daily_report`` endpoint of the sandbox (the Cohort API is in
``appsflyer_cohort``, which uses the same deterministic figures for its cohorts' users and cost).

- ``GET /api/agg-data/export/app/{app_id}/daily_report/v5`` (``from``/``to`` as dates,
  ``timezone``): the real header names, one row per day, media source and campaign, ``None`` as
  the agency when there is none and ``N/A`` for metrics a media source does not have (organic
  impressions, clicks, cost). ``aggregate_extra_columns`` adds unknown vendor columns; with
  ``aggregate_minute_quota`` set, a second <= 2-day call for the same app within that many
  seconds answers 403 ``Limit reached for daily_report`` like the real one-call-per-minute rule.

Figures are a pure function of (app, day, media source, campaign): tests compare what landed in
the tables with what the sandbox computes. Faults come from ``take_fault(app_id, report)`` with
report ``daily_report``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
import re
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adpipes.dev.sandbox.appsflyer import _seed, api_call_preamble, platform_of
from adpipes.dev.sandbox.server import Request, Response

if TYPE_CHECKING:
    from adpipes.dev.sandbox.server import SandboxServer

DAILY_REPORT = "daily_report"
AGGREGATE_PATH = r"/api/agg-data/export/app/(?P<app_id>[^/]+)/(?P<report>[^/]+)/v5"

DAILY_REPORT_COLUMNS = [
    "Date", "Agency/PMD (af_prt)", "Media Source (pid)", "Campaign (c)", "Impressions", "Clicks",
    "CTR", "Installs", "Conversion Rate", "Sessions", "Loyal Users", "Loyal Users/Installs",
    "Total Cost", "Average eCPI",
]  # fmt: skip
NOT_AVAILABLE = "N/A"
NO_AGENCY = "None"

# (media source, agency, campaigns) per platform; organic has no campaign, agency or cost.
_SOURCES = {
    "android": [
        ("organic", NO_AGENCY, [NO_AGENCY]),
        ("googleadwords_int", NO_AGENCY, ["KR_UAC_Install, AOS", 'Brand "Search" KR']),
        ("Facebook Ads", NO_AGENCY, ['KR_"Spring, Sale"_Purchase']),
        ("tiktokglobal_int", "adpipes_agency", ["TT_KR_Install"]),
    ],
    "ios": [
        ("organic", NO_AGENCY, [NO_AGENCY]),
        ("Apple Search Ads", NO_AGENCY, ["ASA_Brand_KR", "ASA Generic, Puzzle"]),
        ("Facebook Ads", NO_AGENCY, ["Lookalike 1%, KR"]),
    ],
}


_minute_quota_lock = threading.Lock()
_last_short_call: dict[tuple[int, int, str, str], float] = {}


class _Invalid(Exception):
    pass


def _day(value: Any, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise _Invalid(f"Invalid value: {value} for key: {name}. Expected yyyy-mm-dd") from None


# -- daily_report ----------------------------------------------------------------------------------

def daily_report_cells(app_id: str) -> Iterator[tuple[str, str, str]]:
    """(media source, agency, campaign) rows the app has every day."""
    for source, agency, campaigns in _SOURCES[platform_of(app_id)]:
        for campaign in campaigns:
            yield source, agency, campaign


def daily_report_figures(app_id: str, day: dt.date, source: str, campaign: str) -> dict[str, Any]:
    """Deterministic numbers of one daily_report row (None where the vendor says N/A)."""
    rng = random.Random(_seed(app_id, DAILY_REPORT, day.isoformat(), source, campaign))
    installs = rng.randint(20, 400)
    sessions = installs * rng.randint(2, 6)
    loyal = round(installs * rng.uniform(0.2, 0.5))
    if source == "organic":
        impressions = clicks = cost = None
    else:
        clicks = installs * rng.randint(3, 9)
        impressions = clicks * rng.randint(20, 60)
        cost = round(installs * rng.uniform(0.8, 3.5), 2)
    return {"impressions": impressions, "clicks": clicks, "installs": installs,
            "sessions": sessions, "loyal_users": loyal, "total_cost": cost}


def _num(value: float | None, digits: int = 4) -> str:
    return NOT_AVAILABLE if value is None else f"{value:.{digits}f}".rstrip("0").rstrip(".")


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def daily_report_rows(app_id: str, first: dt.date, last: dt.date, extra: list[str]) -> list[list[str]]:
    rows = []
    day = first
    while day <= last:
        for source, agency, campaign in daily_report_cells(app_id):
            f = daily_report_figures(app_id, day, source, campaign)
            rows.append([
                day.isoformat(), agency, source, campaign,
                _num(f["impressions"], 0), _num(f["clicks"], 0), _num(_ratio(f["clicks"], f["impressions"])),
                str(f["installs"]), _num(_ratio(f["installs"], f["clicks"])), str(f["sessions"]),
                str(f["loyal_users"]), _num(_ratio(f["loyal_users"], f["installs"])),
                _num(f["total_cost"], 2), _num(_ratio(f["total_cost"], f["installs"])),
                *(f"{name.lower().replace(' ', '_')}:{day:%m%d}" for name in extra),
            ])
        day += dt.timedelta(days=1)
    return rows


def _minute_quota_hit(server: SandboxServer, app_id: str, report: str, seconds: float | None) -> bool:
    if seconds is None:
        return False
    key = (id(server), server.generation, app_id, report)
    now = time.monotonic()
    with _minute_quota_lock:
        last = _last_short_call.get(key)
        if last is not None and now - last < seconds:
            return True
        _last_short_call[key] = now
    return False


def aggregate_export(server: SandboxServer, request: Request) -> Response:
    app_id, report = request.match["app_id"], request.match["report"]
    call, early, delay = api_call_preamble(server, request, app_id, report)
    if early is not None:
        return early
    if report != DAILY_REPORT:
        # Other aggregate reports (partners_report, geo_report, ...) are not simulated.
        return Response.json_body(400, {"message": f"Invalid report type: {report}"}, call=call)
    params = request.params
    try:
        if not params.get("from") or not params.get("to"):
            raise _Invalid("Both 'from' and 'to' parameters are required")
        first, last = _day(params["from"], "from"), _day(params["to"], "to")
        if last < first:
            raise _Invalid("'to' must not be earlier than 'from'")
        timezone = params.get("timezone") or "UTC"
        if not re.fullmatch(r"[A-Za-z_]+(?:/[A-Za-z0-9_+\-]+)*", timezone):
            raise _Invalid(f"Invalid timezone: {timezone}")
        try:
            today = dt.datetime.now(ZoneInfo(timezone)).date()
        except (ZoneInfoNotFoundError, ValueError):
            raise _Invalid(f"Invalid timezone: {timezone}") from None
    except _Invalid as exc:
        return Response.json_body(400, {"message": str(exc)}, call=call)
    config = server.config_snapshot()
    short_range = (last - first).days + 1 <= 2
    if short_range and _minute_quota_hit(server, app_id, report, config["aggregate_minute_quota"]):
        call["fault"] = "minute_quota"
        return Response.text(403, f"Limit reached for {report}", call=call)
    extra = list(config["aggregate_extra_columns"])
    rows = daily_report_rows(app_id, first, min(last, today), extra)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    # Vendor schema drift the other way: columns AppsFlyer stops sending.
    keep = [i for i, name in enumerate(DAILY_REPORT_COLUMNS + extra)
            if name not in set(config["aggregate_drop_columns"])]
    writer.writerow([(DAILY_REPORT_COLUMNS + extra)[i] for i in keep])
    writer.writerows([[row[i] for i in keep] for row in rows])
    call["rows"] = len(rows)
    return Response(200, out.getvalue().encode("utf-8"), "text/csv", call=call, delay=delay)


def register(server: SandboxServer) -> None:
    server.add_route("GET", AGGREGATE_PATH, aggregate_export)
