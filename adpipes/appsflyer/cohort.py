"""``appsflyer/cohort_ltv``: lifetime value of each day's install cohort, from the Cohort API.

One Cohort API query per cohort day, platform app and KPI (the API takes exactly one KPI per
query). Why one day per query although the API accepts a range: with ``partial_data=false`` (the
default, complete days only) AppsFlyer returns the periods ``N < today - to`` for *every* cohort of
the range, so the earlier cohorts of a range would lose periods that are already complete for
them; a query per day keeps each cohort's periods exact. Calls are paced in-process to the API's
60 calls a minute per account.
"""

import json
import re
from typing import Any

import pandas as pd
from pydantic import Field

import dagster as dg
from adpipes.appsflyer.partitions import appsflyer_daily_partitions
from adpipes.appsflyer.api import AppsFlyerApiError
from adpipes.appsflyer.cohort_api import COHORT_API_POOL, AppsFlyerCohortApi
from adpipes.appsflyer.resources import AppsFlyerApps
from adpipes.appsflyer.schemas import (
    COHORT_KPI_COLUMNS,
    COHORT_KPI_FUNCTIONS,
    COHORT_LTV_TABLE,
    PLATFORMS,
    cohort_ltv_schema,
)
from adpipes.lib.assets import table_asset
from adpipes.lib.quality import ROW_VOLUME, UNKNOWN_COLUMNS, QualityReport, QualityStore, check_groups, publish

GROUP = "appsflyer"
# Periods stored: the first month day by day, then the usual LTV milestones.
DEFAULT_PERIODS = [*range(31), 60, 90, 180]
MAX_PERIOD = 180
# `{kpi}_{function}_day_{N}`: the KPI may itself contain underscores, the function does not.
KPI_HEADER = re.compile(r"^(?P<kpi>.+)_(?P<function>[A-Za-z]+)_day_(?P<period>\d+)$")
# Fields every answer carries besides the groupings and the KPI columns.
COHORT_FIXED_FIELDS = ("users", "cost", "ecpi")
GROUPING_COLUMNS = {"pid": "media_source", "c": "campaign"}
# AppsFlyer's way of saying "no campaign" (organic).
NO_VALUE = frozenset({"", "None", "N/A"})
# The Cohort API spells this KPI in capitals in its `kpis` enum; its columns come back lowercase.
API_KPI_NAMES = {"roas": "ROAS"}
COHORT_LTV_CHECKS = check_groups(cohort_ltv_schema(), extra=[UNKNOWN_COLUMNS, ROW_VOLUME])


class CohortFormatError(AppsFlyerApiError):
    """A Cohort API answer adpipes cannot store (a record without media source, a foreign day)."""


class CohortLtvConfig(dg.Config):
    """What the cohort_ltv run asks the Cohort API for."""

    kpis: list[str] = Field(
        default=["revenue"],
        description="KPIs to pull, one Cohort API call each: any of "
        + ", ".join(COHORT_KPI_FUNCTIONS),
    )
    cohort_type: str = Field(
        default="user_acquisition", description="user_acquisition, retargeting or unified."
    )
    by_campaign: bool = Field(default=True, description="Group by campaign (c) as well as media source.")
    periods: list[int] = Field(
        default=DEFAULT_PERIODS, description="Day-N periods to pull (0-180; 0 = the install day)."
    )


def cohort_query(day: str, kpi: str, config: CohortLtvConfig) -> dict[str, Any]:
    """The Cohort API body for one cohort day and KPI."""
    return {
        "cohort_type": config.cohort_type,
        "from": day,
        "to": day,
        "groupings": ["date", "pid", *(["c"] if config.by_campaign else [])],
        "kpis": [API_KPI_NAMES.get(kpi, kpi)],
        "aggregation_type": "cumulative",
        "filters": {"period": sorted(set(config.periods))},
        # Complete days only: a period that has not fully passed is absent, not partial.
        "partial_data": False,
        # A boolean in the Cohort API: "the app's timezone in AppsFlyer", which ADPIPES_TIMEZONE
        # equals (the Pull API's `timezone` name parameter has no Cohort API counterpart).
        "preferred_timezone": True,
    }


def _number(value: Any, field: str, where: str) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() in NO_VALUE):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CohortFormatError(f"{where}: field {field!r} is not a number: {value!r}") from None


def cohort_rows(records: list[dict[str, Any]], *, day: str, platform: str, app_id: str, kpi: str,
                rows: dict[tuple[Any, ...], dict[str, Any]], unknown: set[str]) -> None:
    """Add one query's records to ``rows`` (keyed by media source, campaign and period).

    Each ``{kpi}_{function}_day_{N}`` field becomes column ``{kpi}_{function}`` of period N's row;
    a period without any value is not a row (it is not complete yet). Functions without a column
    go to ``extra_kpis``; fields that are neither groupings nor KPIs are added to ``unknown``.
    """
    where = f"AppsFlyer cohort (kpi {kpi}) for app {app_id}, cohort {day}"
    for record in records:
        record_day = str(record.get("date", day))[:10]
        if record_day != day:
            raise CohortFormatError(f"{where}: a record is dated {record_day!r}; nothing was loaded")
        media_source = record.get("pid")
        if media_source is None or str(media_source).strip() == "":
            raise CohortFormatError(f"{where}: a record has no media source (pid): {record}")
        campaign = record.get("c")
        campaign = None if campaign is None or str(campaign).strip() in NO_VALUE else str(campaign)
        fixed = {f: _number(record.get(f), f, where) for f in COHORT_FIXED_FIELDS}
        for field, value in record.items():
            match = KPI_HEADER.match(field)
            if match is None:
                if field not in COHORT_FIXED_FIELDS and field not in ("date", "pid", "c"):
                    unknown.add(field)
                continue
            number = _number(value, field, where)
            if number is None:
                continue
            period = int(match["period"])
            key = (str(media_source), campaign, period)
            row = rows.setdefault(key, {
                "report_date": day, "platform": platform, "media_source": str(media_source),
                "campaign": campaign, "period": period, "extra_kpis": {},
                "users": fixed["users"], "cost": fixed["cost"], "ecpi": fixed["ecpi"],
            })
            column = f"{match['kpi']}_{match['function']}".lower()
            if column in COHORT_KPI_COLUMNS:
                row[column] = number
            else:
                row["extra_kpis"][column] = number


def cohort_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = COHORT_LTV_TABLE.column_names
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("report_date", "platform", "media_source", "campaign"):
        frame[column] = frame[column].astype("string")
    for column in ("period", "users"):
        frame[column] = pd.to_numeric(frame[column]).round().astype("Int64")
    for column in ("cost", "ecpi", *COHORT_KPI_COLUMNS):
        frame[column] = pd.to_numeric(frame[column]).astype("Float64")
    frame["extra_kpis"] = pd.Series(
        [json.dumps(v, sort_keys=True) if v else None for v in frame["extra_kpis"]],
        index=frame.index, dtype="string",
    )
    return frame


@table_asset(
    COHORT_LTV_TABLE,
    partitions_def=appsflyer_daily_partitions,
    group_name=GROUP,
    kinds={"appsflyer", "postgres", "pandas"},
    metadata={"appsflyer/api": "Cohort API v1"},
    checks=COHORT_LTV_CHECKS,
    pool=COHORT_API_POOL,
)
def cohort_ltv(
    context: dg.AssetExecutionContext,
    config: CohortLtvConfig,
    appsflyer_cohort_api: AppsFlyerCohortApi,
    appsflyer_apps: AppsFlyerApps,
    quality: QualityStore,
):
    """What each day's install cohort is worth over time: for the users who installed on
    report_date, per platform, media source and campaign, their number, ad cost and eCPI and the
    cumulative revenue (and any other configured KPI, e.g. sessions or ROAS) they generated by day
    N after the install (periods 0-30, 60, 90, 180), one row per period. This is the table for LTV
    curves, payback and ROAS-by-channel analysis. A cohort's figures keep growing until day N has
    passed, and a period appears only once it is complete: recent cohort partitions must be
    re-materialized as they mature (e.g. daily for the last 31 days, then at days 60, 90 and 180;
    a later schedule automates this).
    """
    unknown_kpis = [k for k in config.kpis if k.lower() not in COHORT_KPI_FUNCTIONS]
    bad_periods = [p for p in config.periods if not 0 <= p <= MAX_PERIOD]
    if unknown_kpis or bad_periods or not config.kpis:
        raise dg.Failure(
            f"cohort_ltv config: kpis {unknown_kpis or config.kpis} / periods {bad_periods} are not "
            f"supported. kpis must be a non-empty list of {', '.join(COHORT_KPI_FUNCTIONS)}; "
            f"periods must be days 0-{MAX_PERIOD}. Fix the run config and re-run."
        )
    unknown: set[str] = set()
    calls: dict[str, int] = {}
    all_rows: list[dict[str, Any]] = []
    for day in context.partition_keys:
        for platform in PLATFORMS:
            app_id = appsflyer_apps.app_id(platform)
            rows: dict[tuple[Any, ...], dict[str, Any]] = {}
            for kpi in config.kpis:
                result = appsflyer_cohort_api.fetch_cohort(app_id, cohort_query(day, kpi.lower(), config),
                                                    log=context.log)
                calls[kpi] = calls.get(kpi, 0) + result.calls
                cohort_rows(result.records, day=day, platform=platform, app_id=app_id,
                            kpi=kpi, rows=rows, unknown=unknown)
            all_rows.extend(rows.values())
    frame = cohort_frame(all_rows)
    report = QualityReport(COHORT_LTV_CHECKS, context.partition_keys, COHORT_LTV_TABLE.row_key)
    frame = frame[report.check_rows([(cohort_ltv_schema(), frame)], keys=frame).to_numpy()]
    extra = sorted({k for row in all_rows for k in row["extra_kpis"]})
    for key in context.partition_keys:
        # Unknown fields are dropped (the Cohort API can be re-queried); unknown KPI functions
        # are kept in extra_kpis. Both mean adpipes' schema is behind the API.
        report.add_unknown_columns(key, sorted(unknown) + [f"extra_kpis.{k}" for k in extra])
    if extra:
        context.log.warning(
            f"AppsFlyer Cohort API returned KPI functions without a column: {extra}; they are "
            "stored in appsflyer.cohort_ltv.extra_kpis (add them to COHORT_KPI_FUNCTIONS)."
        )
    latest = frame.groupby("report_date")["period"].max() if len(frame) else pd.Series(dtype="Int64")
    output = dg.Output(
        frame,
        metadata={
            "appsflyer/api_calls_by_kpi": dg.MetadataValue.json(calls),
            "appsflyer/kpis": dg.MetadataValue.json(list(config.kpis)),
            "latest_complete_period": dg.MetadataValue.json({k: int(v) for k, v in latest.items()}),
            "appsflyer/unknown_fields": dg.MetadataValue.json(sorted(unknown)),
            "appsflyer/extra_kpi_functions": dg.MetadataValue.json(extra),
        },
    )
    yield from publish(context, quality, report, output)
