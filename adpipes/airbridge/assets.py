"""Airbridge assets: the revenue report (Day-N revenue of each day's install cohorts)."""

import datetime as dt

import dagster as dg

from adpipes.airbridge.partitions import airbridge_daily_partitions
from adpipes.airbridge.resources import API_POOL, AirbridgeApi
from adpipes.airbridge.schemas import REVENUE_TABLE, revenue_schema
from adpipes.airbridge.transform import revenue_frame
from adpipes.lib.assets import table_asset
from adpipes.lib.quality import ROW_VOLUME, QualityReport, QualityStore, check_groups, publish

GROUP = "airbridge"
REVENUE_CHECKS = check_groups(revenue_schema(), extra=[ROW_VOLUME])


# A range is one run, so up to 92 days are one Airbridge report task (longer ranges: several).
@table_asset(
    REVENUE_TABLE,
    partitions_def=airbridge_daily_partitions,
    group_name=GROUP,
    kinds={"airbridge", "postgres", "pandas"},
    metadata={"airbridge/report": "revenue"},
    checks=REVENUE_CHECKS,
    pool=API_POOL,
)
def revenue(context: dg.AssetExecutionContext, airbridge_api: AirbridgeApi, quality: QualityStore):
    """How much revenue the users who installed on a given day brought in, per channel and
    campaign, by days since install: one row per cohort day (report_date, the install day in the
    app timezone), channel, campaign and Day N, with the revenue (cumulative through Day N by
    default) and whether Airbridge masked the figure. This is the LTV/ROAS curve of each
    acquisition cohort; recent cohorts keep maturing (a cohort installed 3 days ago has Days 0-3
    only, and today's Day 3 grows until the day ends), so re-materialize recent partitions as they
    age. The cohort's totals (ad cost, revenue so far, unique users) are repeated as cohort_*
    columns on every Day-N row rather than kept in a second table: they come from the same report
    task, stay consistent with the values they belong to, and ROAS is one query; take them from
    ``day_n = 0`` (or DISTINCT) and never sum them across Day-N rows. Masked figures and
    Airbridge's notifications (masking, SAN_PERIOD_LIMIT, ...) are kept and shown in the run.
    """
    days = list(context.partition_keys)
    report = airbridge_api.fetch_revenue([dt.date.fromisoformat(k) for k in days], log=context.log)
    flattened = revenue_frame(report, airbridge_api.metric, airbridge_api.aggregation_type)
    where = f"airbridge/revenue for app {airbridge_api.app_name}, partitions {days[0]}..{days[-1]}"
    quality_report = QualityReport(REVENUE_CHECKS, days, REVENUE_TABLE.row_key)
    flat = flattened.frame.reset_index(drop=True)
    frame = flat[quality_report.check_rows([(revenue_schema(), flat)], keys=flat).to_numpy()]

    notifications = [
        {**notice, "task_id": task.task_id, "range": task.window}
        for task in report.tasks for notice in task.notifications
    ]
    for notice in notifications:
        context.log.warning(
            f"Airbridge notification {notice.get('code')!r} for app {airbridge_api.app_name}, "
            f"{notice['range']} (task {notice['task_id']}): {notice.get('message', '')}"
        )
    masked = int(frame["is_masked"].sum(skipna=True))
    if masked:
        context.log.warning(
            f"{where}: {masked} Day-N figures are masked by Airbridge; they are stored with "
            "is_masked = true (value null when Airbridge withheld it)."
        )
    if flattened.entries_without_values:
        context.log.warning(
            f"{where}: {len(flattened.entries_without_values)} cohort(s) came without any Day-N value, so "
            f"the table has no row for them (listed in airbridge/cohorts_without_values): "
            f"{flattened.entries_without_values[:5]}"
        )
    metadata: dict[str, object] = {
        "airbridge/app_name": airbridge_api.app_name,
        "airbridge/task_ids": dg.MetadataValue.json({t.window: t.task_id for t in report.tasks}),
        "airbridge/api_calls": report.calls,
        "airbridge/rows_served": report.row_count,
        "airbridge/notifications": dg.MetadataValue.json(notifications),
        "airbridge/notification_codes": ", ".join(sorted({str(n.get("code")) for n in notifications})),
        "airbridge/masked_values": masked,
        "airbridge/cohorts_without_values": dg.MetadataValue.json(flattened.entries_without_values),
    }
    yield from publish(context, quality, quality_report, dg.Output(frame, metadata=metadata))
