"""Airbridge assets: the revenue report (Day-N revenue of each day's start-event users)."""

import datetime as dt

import dagster as dg
import pandas as pd

from adpipes.airbridge.checks import TOTAL_COUNT
from adpipes.airbridge.contract import excerpt, generic_path
from adpipes.airbridge.partitions import airbridge_daily_partitions
from adpipes.airbridge.resources import API_POOL, AirbridgeApi, AirbridgeApiError, RevenueReport
from adpipes.airbridge.schemas import REVENUE_TABLE, revenue_schema, revenue_task_schema
from adpipes.airbridge.transform import RevenueFrame, RevenueShapeError, revenue_frame, total_count_view
from adpipes.lib.app_failures import app_failure, refuse_removed_apps, stored_apps_not_configured
from adpipes.lib.assets import add_partition_metadata, frame_partition_metadata, table_asset
from adpipes.lib.storage.postgres import PostgresDatabase
from adpipes.lib.quality import ROW_VOLUME, UNKNOWN_COLUMNS, QualityReport, QualityStore, check_groups, publish

GROUP = "airbridge"
REVENUE_CHECKS = check_groups(revenue_schema(), extra=[UNKNOWN_COLUMNS, ROW_VOLUME, TOTAL_COUNT])


# A range is one run, so up to 92 days are one Airbridge report task per app (longer ranges:
# several). Every configured app (AIRBRIDGE_APP_NAME may list several) is asked for its own report
# into the same partitions, told apart by app_name; a partition is written for every app or none.
@table_asset(
    REVENUE_TABLE,
    partitions_def=airbridge_daily_partitions,
    group_name=GROUP,
    kinds={"airbridge", "postgres", "pandas"},
    metadata={"airbridge/report": "revenue"},
    checks=REVENUE_CHECKS,
    check_schemas=[revenue_schema(), revenue_task_schema()],
    pool=API_POOL,
)
def revenue(context: dg.AssetExecutionContext, airbridge_api: AirbridgeApi, quality: QualityStore,
            archive_db: PostgresDatabase):
    """How much revenue the users who installed (or came through a deeplink) on a given day
    brought in, per group (channel and campaign by default, AIRBRIDGE_GROUP_BY), by days since
    that start event: one row per start-event day (report_date, app timezone), group and Day N,
    with the metric (revenue, cumulative through Day N by default) in the app's currency (the
    currency column). This is the LTV/ROAS curve of each acquisition cohort; recent days keep
    maturing (users who installed 3 days ago have Days 0-3 only), so re-materialize recent
    partitions as they age. Every configured Airbridge app has its own rows (app_name); a day is
    written for every app or for none. The day's totals (ad cost, revenue, unique users) are
    repeated on each Day-N row of the day: take them from ``day_n = 0`` and never sum them across
    Day-N rows.
    Figures Airbridge masked keep the value it sent with an ``is_masked`` flag; its
    notifications (masking, SAN_PERIOD_LIMIT, ...) are logged as warnings and kept in the run.
    """
    days = list(context.partition_keys)
    asset = REVENUE_TABLE.asset_key.to_user_string()
    apps = list(airbridge_api.app_names())
    dates = [dt.date.fromisoformat(k) for k in days]
    # The query is the same for every app: its documented limits are checked before any call.
    airbridge_api.check_query(dates)
    # An app removed from the settings would lose its archived rows of these days.
    refuse_removed_apps(asset, days, stored_apps_not_configured(archive_db, REVENUE_TABLE, "app_name", days, apps),
                        "AIRBRIDGE_APP_NAME")
    reports: list[tuple[RevenueReport, RevenueFrame]] = []
    # Requests made per app (task creation, polls, pages, retries), for the metadata and a failure.
    calls: dict[str, int] = {}
    for app in apps:
        try:
            report = airbridge_api.fetch_revenue(dates, log=context.log, app_name=app)
            table = revenue_frame(report, group_by=list(airbridge_api.group_by), metric=airbridge_api.metric,
                                  aggregation_type=airbridge_api.aggregation_type, currency=airbridge_api.currency)
        except (AirbridgeApiError, RevenueShapeError) as exc:
            # Nothing is written before every app has answered: the stored days stay as they were.
            raise app_failure(asset, days, app, exc, apps=apps, calls=calls) from exc
        calls[app] = report.calls
        reports.append((report, table))
    quality_report = QualityReport(REVENUE_CHECKS, days, REVENUE_TABLE.row_key)
    flat = pd.concat([table.frame for _, table in reports], ignore_index=True)
    # Beside the declared columns, what each row's report task said (total_count): a
    # task-level finding reported on the task's rows, so by partition. Tasks of different apps
    # cover the same days, so each app's rows are matched with its own tasks.
    task_view = pd.concat([total_count_view(report, table.frame["report_date"]) for report, table in reports],
                          ignore_index=True)
    # The configured group-by columns are not vendor drift: only the declared columns are checked.
    declared = flat[REVENUE_TABLE.column_names]
    keep = quality_report.check_rows(
        [(revenue_schema(), declared), (revenue_task_schema(), task_view)],
        keys=flat, delivered=declared,
    )
    frame = flat[keep.to_numpy()]

    where = f"{asset} for app(s) {', '.join(apps)}, partitions {days[0]}..{days[-1]}"
    tasks = [(report.app_name, task) for report, _ in reports for task in report.tasks]
    notifications = [
        {"app_name": app, "code": n.code, "type": n.type, "message": n.message, "task_id": task.task_id,
         "range": task.window}
        for app, task in tasks for n in task.notifications
    ]
    for notice in notifications:
        context.log.warning(
            f"Airbridge notification {notice['code']!r} ({notice['type']}) for app {notice['app_name']}, "
            f"{notice['range']} (task {notice['task_id']}): {notice['message']}"
        )
    # Keys the document does not print are kept: in group rows, in the extra_fields column of the
    # rows they came with; elsewhere in a page (no row to hold them), in the run's metadata.
    unknown = sorted({path for _, task in tasks for path in task.unknown_fields})
    page_fields = [{"app_name": app, "task_id": task.task_id, "range": task.window, **entry}
                   for app, task in tasks for entry in task.page_fields]
    page_paths = {generic_path(entry["path"]) for entry in page_fields}
    in_rows = [path for path in unknown if path not in page_paths]
    if in_rows:
        context.log.warning(
            f"{where}: Airbridge's answers carry fields its document does not print, kept in "
            f"airbridge.revenue.extra_fields of the rows they came with: {in_rows}"
        )
    if page_fields:
        context.log.warning(
            f"{where}: Airbridge's answers carry fields its document does not print outside the group "
            "rows; no table row holds them, so they are kept with their values in the run's "
            f"airbridge/unknown_page_fields metadata: "
            + "; ".join(f"{e['path']}={excerpt(e['value'], 120)} (app {e['app_name']}, task {e['task_id']})"
                        for e in page_fields[:10])
            + (f"; ... ({len(page_fields)} in all)" if len(page_fields) > 10 else "")
        )
    # A key beside the group rows concerns the whole task; one inside a group row only the dates
    # whose table rows keep it (extra_fields).
    for _, task in tasks:
        in_row_fields = task.row_unknown_fields()
        for key in task.days:
            quality_report.add_unknown_columns(key, sorted({*task.page_unknown_fields, *in_row_fields.get(key, [])}))
    masked = {flag: int(frame[flag].sum()) for flag in
              ("is_masked", "total_cost_is_masked", "total_revenue_is_masked", "total_unique_users_is_masked")}
    if any(masked.values()):
        context.log.warning(
            f"{where}: Airbridge masked some figures ({masked}); they keep the value Airbridge sent, "
            "flagged in the *_is_masked columns."
        )
    metadata: dict[str, object] = {
        "airbridge/app_name": ", ".join(apps),
        "airbridge/app_names": dg.MetadataValue.json(apps),
        "airbridge/currency": airbridge_api.currency,
        "airbridge/group_by": dg.MetadataValue.json(list(airbridge_api.group_by)),
        "airbridge/task_ids": dg.MetadataValue.json(
            {report.app_name: {t.window: t.task_id for t in report.tasks} for report, _ in reports}),
        "airbridge/api_calls": sum(calls.values()),
        "airbridge/api_calls_by_app": dg.MetadataValue.json(calls),
        "airbridge/pages": sum(t.pages for _, t in tasks),
        "airbridge/group_rows_served": sum(len(t.rows) for _, t in tasks),
        "airbridge/rows_by_app": dg.MetadataValue.json(
            {app: int(n) for app, n in frame.groupby("app_name").size().items()}),
        "airbridge/total_counts": dg.MetadataValue.json(
            {report.app_name: {t.window: t.total_count for t in report.tasks} for report, _ in reports}),
        # Only with AIRBRIDGE_TOTAL_COUNT_MISMATCH=warn (otherwise a mismatch fails the run); the
        # total_count check fails as a warning on these tasks' rows.
        "airbridge/total_count_mismatches": dg.MetadataValue.json(
            [{"app_name": app, **t.total_count_mismatch} for app, t in tasks if t.total_count_mismatch]),
        "airbridge/notifications": dg.MetadataValue.json(notifications),
        "airbridge/notification_codes": ", ".join(sorted({n["code"] for n in notifications})),
        "airbridge/masked": dg.MetadataValue.json(masked),
        "airbridge/unknown_fields": dg.MetadataValue.json(unknown),
        "airbridge/unknown_page_fields": dg.MetadataValue.json(page_fields),
    }
    add_partition_metadata(context, _partition_figures(frame, days))
    yield from publish(context, quality, quality_report, dg.Output(frame, metadata=metadata))


def _partition_figures(frame: pd.DataFrame, days: list[str]) -> dict[str, dict[str, object]]:
    """Each day's own rows per app and, as numbers the UI plots by partition, its ad cost,
    revenue and unique users: the day's totals, taken from the Day-0 rows (they repeat on every
    Day-N row of a group)."""
    day0 = frame[frame["day_n"] == 0]
    totals = frame_partition_metadata(
        day0, days, sums={"cost": "total_cost", "revenue": "total_revenue", "unique_users": "total_unique_users"})
    figures = frame_partition_metadata(frame, days, counts={"airbridge/rows_by_app": "app_name"},
                                       plotted={"app_rows": "app_name"})
    for day in days:
        figures[day].update(totals[day])
    return figures
