"""``appsflyer/cohort_ltv``: lifetime value of each day's install cohort, from the Cohort API.

One Cohort API query per cohort day, configured app (several apps per platform may be
configured), cohort type and KPI (the API takes exactly one KPI per query). Why one day per query
although the API accepts a range: with ``partial_data=false`` (complete days only) AppsFlyer
returns the periods ``N < today - to`` for *every* cohort of the range, so the earlier cohorts of
a range would lose periods that are already complete for them; a query per day keeps each
cohort's periods exact.

What is asked (KPIs, cohort types, periods, currency, smallest cohort) is the
``appsflyer_cohort_api`` resource's, from settings, never run config: every run, scheduled maturity
re-pulls included, pulls all of it. A partition is replaced as a whole, so the rows a run does not
pull (a KPI, cohort type or app since removed from the settings) are carried over from the archive
into what it writes: removing a KPI stops updating it; its stored rows are kept, in the archive,
whose rows may be the only copy left (AppsFlyer serves cohorts 720 days back), and in product.
A partition holds every app and is written for all of them or for none
(:mod:`adpipes.lib.app_failures`).
"""

import datetime as dt
import json
from typing import Any

import pandas as pd

import dagster as dg
from adpipes.appsflyer.cohort_api import (
    COHORT_API_POOL,
    COHORT_FUNCTIONS,
    AppsFlyerCohortApi,
    CohortAnswer,
    kpi_column_value,
)
from adpipes.appsflyer.partitions import appsflyer_daily_partitions
from adpipes.appsflyer.resources import AppsFlyerApps
from adpipes.appsflyer.schemas import COHORT_LTV_TABLE, cohort_ltv_schema
from adpipes.lib.app_failures import app_failure
from adpipes.lib.assets import add_partition_metadata, frame_partition_metadata, table_asset
from adpipes.lib.http import VendorApiError
from adpipes.lib.quality import ROW_VOLUME, UNKNOWN_COLUMNS, QualityReport, QualityStore, check_groups, publish
from adpipes.lib.quota import ApiCallLedger, require_calls
from adpipes.lib.storage.postgres import PostgresDatabase, read_partitions, stored_layout_version

GROUP = "appsflyer"
COHORT_LTV_CHECKS = check_groups(cohort_ltv_schema(), extra=[UNKNOWN_COLUMNS, ROW_VOLUME])
TEXT_COLUMNS = ("report_date", "cohort_type", "platform", "app_id", "media_source", "campaign", "kpi", "currency")


def cohort_rows(answer: CohortAnswer, platform: str, currency: str) -> list[dict[str, Any]]:
    """The table rows of one query's answer: one per record and period."""
    query = answer.query
    fixed = {"report_date": query.day.isoformat(), "cohort_type": query.cohort_type, "platform": platform,
             "app_id": query.app_id, "kpi": kpi_column_value(query.kpi), "currency": currency}
    return [
        {**fixed, "media_source": p.media_source, "campaign": p.campaign, "period": p.period,
         "users": p.users, "cost": p.cost, "ecpi": p.ecpi, **p.functions,
         "extra_functions": json.dumps(p.extra_functions, sort_keys=True) if p.extra_functions else None}
        for p in answer.periods
    ]


def cohort_frame(rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """The table's columns, typed, from answer rows or rows read back from the table."""
    frame = (rows.reindex(columns=COHORT_LTV_TABLE.column_names) if isinstance(rows, pd.DataFrame)
             else pd.DataFrame(rows, columns=COHORT_LTV_TABLE.column_names))
    for column in (*TEXT_COLUMNS, "extra_functions"):
        frame[column] = frame[column].astype("string")
    for column in ("period", "users"):
        frame[column] = pd.to_numeric(frame[column]).astype("Int64")
    for column in ("cost", "ecpi", *COHORT_FUNCTIONS):
        frame[column] = pd.to_numeric(frame[column]).astype("Float64")
    return frame


def stored_rows_not_pulled(archive: PostgresDatabase, days: list[str], pulled: set[tuple[str, str, str]],
                           timezone: str) -> pd.DataFrame:
    """The archive's rows of ``days`` whose (app_id, cohort_type, kpi) is not in ``pulled``, typed.

    Empty while the table does not exist or has an older layout (the IO manager keeps that one as
    ``cohort_ltv_layout{N}``, untouched).
    """
    with archive.connect() as conn:
        # The same test as the IO manager's: an older layout is renamed away, not written into.
        version = stored_layout_version(conn, COHORT_LTV_TABLE)
        conn.rollback()
        if version is None or version < COHORT_LTV_TABLE.layout_version:
            return cohort_frame([])
        stored = read_partitions(conn, COHORT_LTV_TABLE, [dt.date.fromisoformat(d) for d in days],
                                 timezone=timezone)
    not_pulled = [(a, t, k) not in pulled
                  for a, t, k in zip(stored["app_id"], stored["cohort_type"], stored["kpi"], strict=True)]
    return cohort_frame(stored[not_pulled].reset_index(drop=True))


def carried_over_summary(carried: pd.DataFrame) -> list[dict[str, Any]]:
    """What was carried over, per (cohort_type, kpi): its rows, partitions and apps."""
    return [
        {"cohort_type": cohort_type, "kpi": kpi, "rows": len(group),
         "partitions": sorted(group["report_date"].unique().tolist()),
         "app_ids": sorted(group["app_id"].unique().tolist())}
        for (cohort_type, kpi), group in carried.groupby(["cohort_type", "kpi"], sort=True)
    ]


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
    appsflyer_cohort_api: AppsFlyerCohortApi,
    appsflyer_apps: AppsFlyerApps,
    api_calls: ApiCallLedger,
    quality: QualityStore,
    archive_db: PostgresDatabase,
):
    """What each day's install cohort is worth over time: for the users attributed on
    report_date, per cohort type (user acquisition, retargeting, unified), app (app_id, with its
    platform), media source and campaign, their number, ad cost and eCPI and, for each configured
    KPI (revenue, ROAS, ROI, sessions, uninstalls or an in-app event), its documented functions
    (count, CVR, rate, sum, unique users) cumulated from the install day through day N (periods
    0-30, 60, 90, 180), one row per KPI and period. This is the table for LTV curves, payback and ROAS-by-channel
    analysis. A period appears only once it is complete and a cohort's figures keep growing until
    then: the daily schedule re-pulls maturing cohorts, every KPI and cohort type each time. A KPI
    or cohort type (or app) removed from the settings is no longer updated; its stored rows are
    kept. A day is written for every app or for none: if one app's query fails, the stored day
    keeps what it held.
    """
    api = appsflyer_cohort_api
    days = list(context.partition_keys)
    today = api.app_today()
    too_old = api.beyond_history(days, today)
    if too_old:
        raise dg.Failure(
            f"appsflyer/cohort_ltv: the cohort day(s) {too_old} are more than {api.history_days} days "
            f"before today ({today}, {api.timezone}); the Cohort API documents serve cohorts from "
            f"at most {api.history_days} days back. Nothing was called: materialize days from "
            f"{today - dt.timedelta(days=api.history_days)} on (older cohorts live in "
            "the archive database only, if they were pulled in time).",
            metadata={"partitions_beyond_history": dg.MetadataValue.json(too_old)},
        )
    skipped = api.skipped_combinations()
    for kpi, cohort_type in skipped:
        context.log.warning(f"AppsFlyer Cohort API: KPI {kpi!r} is not available with cohort_type "
                            f"{cohort_type} (footnote 2 of the documents' KPI table); not pulled")
    platform_apps = appsflyer_apps.platform_apps()
    app_ids = [app_id for _, app_id in platform_apps]
    queries = [(platform, query) for day in days for platform, app_id in platform_apps
               for query in api.queries(day, app_id)]
    # The Cohort API's limits are the account's (60 calls a minute, 50,000 a day), not an app's:
    # every app's queries of the run are checked against the account's meter before the first call.
    quota_use = require_calls(
        [(api.account_meter(api_calls), len(queries))],
        f"appsflyer/cohort_ltv for {days[0]}..{days[-1]} ({len(api.kpis)} KPI(s) x "
        f"{len(api.cohort_types)} cohort type(s) x {len(days)} day(s) x {len(app_ids)} app(s))",
        hint="materialize fewer days per run",
    )
    # Read before the first call: if the archive cannot be read, no Cohort API quota is spent.
    pulled = {(query.app_id, query.cohort_type, kpi_column_value(query.kpi)) for _, query in queries}
    carried = stored_rows_not_pulled(archive_db, days, pulled, api.timezone)
    currency = appsflyer_apps.currency if api.preferred_currency else "USD"
    rows: list[dict[str, Any]] = []
    calls: dict[str, int] = {}
    calls_by_app: dict[str, int] = {}
    calls_by_day: dict[str, int] = {}
    records: dict[str, int] = {}
    unknown: dict[str, set[str]] = {}
    # Top-level answer keys beside query and results: key -> partitions, and every value with the
    # query that carried it (they are stored nowhere else).
    answer_keys: dict[str, set[str]] = {}
    answer_key_values: dict[str, list[dict[str, Any]]] = {}
    for platform, query in queries:
        try:
            answer = api.fetch_cohort(query, ledger=api_calls, log=context.log, today=today)
        except VendorApiError as exc:
            # Nothing is written before every app has answered: the stored days stay as they were.
            raise app_failure(COHORT_LTV_TABLE.asset_key.to_user_string(), days, query.app_id, exc,
                              apps=app_ids, calls=calls_by_app) from exc
        calls_by_app[query.app_id] = calls_by_app.get(query.app_id, 0) + answer.calls
        # One query per cohort day: a day's calls are its own, even in a range run.
        calls_by_day[query.day.isoformat()] = calls_by_day.get(query.day.isoformat(), 0) + answer.calls
        label = f"{query.cohort_type} {query.kpi}"
        calls[label] = calls.get(label, 0) + answer.calls
        records[label] = records.get(label, 0) + answer.records
        if answer.unknown_functions:
            unknown.setdefault(query.day.isoformat(), set()).update(answer.unknown_functions)
        for key, value in answer.unknown_keys.items():
            answer_keys.setdefault(key, set()).add(query.day.isoformat())
            answer_key_values.setdefault(key, []).append(
                {"partition": query.day.isoformat(), "app_id": query.app_id, "cohort_type": query.cohort_type,
                 "kpi": query.kpi, "value": value})
        rows.extend(cohort_rows(answer, platform, currency))
    frame = cohort_frame(rows)
    report = QualityReport(COHORT_LTV_CHECKS, days, COHORT_LTV_TABLE.row_key)
    frame = frame[report.check_rows([(cohort_ltv_schema(), frame)], keys=frame).to_numpy()]
    for day, tokens in unknown.items():
        # Kept in extra_functions, never dropped; the check says adpipes' mapping is behind the API.
        report.add_unknown_columns(day, [f"extra_functions.{t}" for t in sorted(tokens)])
    extra = sorted({t for tokens in unknown.values() for t in tokens})
    if extra:
        context.log.warning(f"AppsFlyer Cohort API returned function(s) {extra} the documents do not "
                            "list for their KPI; they are kept in appsflyer.cohort_ltv.extra_functions")
    for key, key_days in answer_keys.items():
        for day in sorted(key_days):
            report.add_unknown_columns(day, [f"answer.{key}"])
    if answer_keys:
        # Not refused: the documents name the two sections but not the layout beyond them.
        shown = "; ".join(f"{k}: {json.dumps(v[0]['value'], default=str)[:200]}"
                          for k, v in sorted(answer_key_values.items()))
        context.log.warning(
            f"AppsFlyer Cohort API answers carry top-level key(s) {sorted(answer_keys)} beside the "
            f"documented 'query' and 'results' (first values: {shown}); adpipes reads only 'results'; "
            "every value is in the run's appsflyer/unknown_answer_keys metadata. Check whether they say "
            "something about the data (see docs/cohort-api.md).")
    latest = frame.groupby("report_date")["period"].max() if len(frame) else pd.Series(dtype="Int64")
    per_day = _partition_figures(frame, days, calls_by_day)
    carried_over = carried_over_summary(carried)
    if carried_over:
        # The partition is replaced as a whole in both databases: without these rows a KPI or
        # cohort type removed from the settings would vanish from the archive on the next re-pull.
        context.log.warning(
            "appsflyer/cohort_ltv: kept the stored rows of what this run did not pull (no longer in "
            "APPSFLYER_COHORT_KPIS / APPSFLYER_COHORT_TYPES, or of an app no longer configured): "
            + "; ".join(f"{c['cohort_type']} {c['kpi']!r}: {c['rows']} row(s) of {', '.join(c['partitions'])} "
                        f"(app(s) {', '.join(c['app_ids'])})"
                        for c in carried_over)
            + ". They are written back unchanged and no longer updated.")
        frame = pd.concat([frame, carried], ignore_index=True)
    output = dg.Output(
        frame,
        metadata={
            "appsflyer/app_ids": dg.MetadataValue.json(app_ids),
            "appsflyer/api_calls_by_app": dg.MetadataValue.json(calls_by_app),
            "appsflyer/kpis": dg.MetadataValue.json(list(api.kpis)),
            "appsflyer/cohort_types": dg.MetadataValue.json(list(api.cohort_types)),
            "appsflyer/skipped_kpis": dg.MetadataValue.json(
                [{"kpi": k, "cohort_type": t, "reason": "not available with unified (documents)"}
                 for k, t in skipped]),
            "appsflyer/api_calls_by_kpi": dg.MetadataValue.json(calls),
            "appsflyer/records_by_kpi": dg.MetadataValue.json(records),
            "appsflyer/currency": currency,
            "appsflyer/min_cohort_size": api.min_cohort_size,
            "appsflyer/quota_use": dg.MetadataValue.json(quota_use),
            "appsflyer/extra_functions": dg.MetadataValue.json(extra),
            "appsflyer/unknown_answer_keys": dg.MetadataValue.json(
                {k: answer_key_values[k] for k in sorted(answer_keys)}),
            "appsflyer/carried_over": dg.MetadataValue.json(carried_over),
            "latest_complete_period": dg.MetadataValue.json({k: int(v) for k, v in latest.items()}),
        },
    )
    add_partition_metadata(context, per_day)
    yield from publish(context, quality, report, output)


# A cohort's group: its users and cost repeat on every KPI and period row of it.
_COHORT_GROUP = ["cohort_type", "app_id", "media_source", "campaign"]


def _partition_figures(frame: pd.DataFrame, days: list[str], calls_by_day: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Each cohort day's own figures, as numbers the UI plots by partition: its Cohort API
    calls, its users (installs) and cost and its revenue through the latest complete period,
    counted in one cohort type (user_acquisition when pulled) so no user is counted twice."""
    figures = frame_partition_metadata(frame, days, counts={"rows_by_platform": "platform"},
                                       plotted={"platform_rows": "platform"})
    types = sorted(frame["cohort_type"].dropna().unique()) if len(frame) else []
    cohort_type = "user_acquisition" if "user_acquisition" in types else (types[0] if types else None)
    for day in days:
        rows = frame[(frame["report_date"] == day) & (frame["cohort_type"] == cohort_type)] if cohort_type else frame[:0]
        groups = rows.drop_duplicates(_COHORT_GROUP)
        revenue = rows[rows["kpi"] == "revenue"]
        revenue = revenue[revenue["period"] == revenue.groupby(_COHORT_GROUP)["period"].transform("max")]
        figures[day].update({
            "appsflyer/api_calls": dg.MetadataValue.int(calls_by_day.get(day, 0)),
            "cohort_users": dg.MetadataValue.int(int(groups["users"].fillna(0).sum())),
            "cost": dg.MetadataValue.float(float(groups["cost"].fillna(0).sum())),
            "revenue": dg.MetadataValue.float(float(revenue["sum"].fillna(0).sum())),
        })
        if len(rows):
            figures[day]["latest_complete_period"] = dg.MetadataValue.int(int(rows["period"].max()))
    return figures
