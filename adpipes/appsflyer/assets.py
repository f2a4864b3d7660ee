"""AppsFlyer raw-data assets: the four per-platform raw reports and the unified ``raw_data``."""

import datetime as dt

import pandas as pd

import dagster as dg
from adpipes.appsflyer.partitions import appsflyer_daily_partitions
from adpipes.appsflyer.raw_data_api import (
    RAW_DATA_API_POOL,
    RAW_LOOKBACK_DAYS,
    RAW_WINDOW_DAYS,
    AppsFlyerRawDataApi,
    raw_lookback_start,
    raw_windows,
    split_by_day,
)
from adpipes.appsflyer.resources import AppsFlyerApps
from adpipes.appsflyer.schemas import (
    PLATFORMS,
    RAW_COLUMN_NAMES,
    RAW_DATA_TABLE,
    RAW_REPORTS,
    RAW_TABLES,
    raw_data_schema,
    raw_report_schema,
    raw_values_schema,
)
from adpipes.appsflyer.transform import snake_case_columns, unify_raw_reports
from adpipes.lib.assets import column_drift_metadata, table_asset
from adpipes.lib.partitions import day_window
from adpipes.lib.quota import ApiCallLedger, require_calls
from adpipes.lib.quality import (
    REQUIRED_COLUMNS,
    ROW_VOLUME,
    UNKNOWN_COLUMNS,
    QualityReport,
    QualityStore,
    check_groups,
    header_failures,
    publish,
)
from adpipes.lib.storage.delivered import DeliveredFiles
from adpipes.lib.storage.postgres import LOAD_AS_BATCHES, PartitionBatches

RAW_GROUP = "appsflyer_raw"
UNIFIED_GROUP = "appsflyer"
# A raw report is archived as delivered, never filtered: its own checks are about its shape and
# size. Its values are checked row by row where they are unified (raw_data's checks).
RAW_REPORT_CHECKS = [REQUIRED_COLUMNS, UNKNOWN_COLUMNS, ROW_VOLUME]
RAW_DATA_CHECKS = check_groups(raw_values_schema(), raw_data_schema(), extra=[ROW_VOLUME])

_RAW_DESCRIPTIONS = {
    "installs": (
        "Every attributed install of the {platform} app as AppsFlyer's raw installs report "
        "delivered it for the day: one row per install with its media source, campaign, touch "
        "times and device ids. Archived as delivered (every vendor column as text, new columns "
        "kept) because AppsFlyer serves raw data for 90 days only; the archive is the record of "
        "what the vendor said."
    ),
    "in_app_events": (
        "Every in-app event (purchases, logins, levels...) of attributed users of the {platform} "
        "app as AppsFlyer's raw in-app events report delivered it for the day, with the event "
        "value JSON and revenue. Archived as delivered (every vendor column as text, new columns "
        "kept) because AppsFlyer serves raw data for 90 days only."
    ),
}


def build_raw_report_asset(platform: str, report_short: str) -> dg.AssetsDefinition:
    """One per-platform raw report asset (``appsflyer/{platform}_{report_short}``)."""
    spec = RAW_TABLES[(platform, report_short)]
    report = RAW_REPORTS[report_short]

    @table_asset(
        spec,
        description=_RAW_DESCRIPTIONS[report_short].format(platform=platform),
        partitions_def=appsflyer_daily_partitions,
        group_name=RAW_GROUP,
        kinds={"appsflyer", "postgres"},
        metadata={"appsflyer/report": report},
        tags={"platform": platform},
        checks=RAW_REPORT_CHECKS,
        pool=RAW_DATA_API_POOL,
    )
    def _raw_report(
        context: dg.AssetExecutionContext,
        appsflyer_raw_data_api: AppsFlyerRawDataApi,
        appsflyer_apps: AppsFlyerApps,
        quality: QualityStore,
        api_calls: ApiCallLedger,
    ):
        app_id = appsflyer_apps.app_id(platform)
        oldest = raw_lookback_start(appsflyer_raw_data_api.timezone)
        too_old = [k for k in context.partition_keys if dt.date.fromisoformat(k) < oldest]
        if too_old:
            # Fail before any call: AppsFlyer would answer 400 deep in the run, after quota was spent.
            raise dg.Failure(
                f"{spec.asset_key.to_user_string()}: partitions {too_old[0]}..{too_old[-1]} are older "
                f"than AppsFlyer's {RAW_LOOKBACK_DAYS}-day raw-data lookback (the oldest day it serves "
                f"is {oldest}), so they cannot be pulled again. "
                f"What was pulled before is in the archive ({spec.qualified_name}); to rebuild "
                "appsflyer/raw_data from it, materialize appsflyer/raw_data alone for those partitions."
            )
        windows = raw_windows(context.partition_keys, report)
        quota = appsflyer_raw_data_api.quota_meter(api_calls, app_id, report)
        # Refuse a range the day's quota cannot pay for before the first call, not halfway.
        quota_use = require_calls(
            [(quota, len(windows))],
            f"{spec.asset_key.to_user_string()} partitions {windows[0][0]}..{windows[-1][1]}",
            hint=f"materialize fewer days now (one call covers up to {RAW_WINDOW_DAYS[report]} days; "
            "a truncated window costs 2 more calls: its answer is discarded and both halves fetched)",
        )
        # The responses are spooled to disk and streamed into the archive as delivered: a raw day
        # can be a million rows, too big to hold in memory several times over.
        delivered = DeliveredFiles(prefix=f"adpipes-{platform}-{report_short}-")
        calls = 0
        quality_report = QualityReport(RAW_REPORT_CHECKS, context.partition_keys)
        # One call per run of consecutive days (up to 31 days of in-app events or 60 of installs,
        # the API's limits), split into one file per day: a backfill costs as few calls as possible.
        for first, last in windows:
            start, end = day_window(first, appsflyer_raw_data_api.timezone)[0], day_window(last, appsflyer_raw_data_api.timezone)[1]
            fetched = appsflyer_raw_data_api.fetch_raw_report(
                app_id, report, start, end, log=context.log, directory=delivered.directory, quota=quota
            )
            calls += fetched.calls
            for chunk in fetched.chunks:
                for key, day_chunk in split_by_day(chunk, appsflyer_raw_data_api.timezone):
                    columns = snake_case_columns(day_chunk.header)
                    delivered.add(day_chunk.path, columns, day_chunk.rows, report_date=key)
                    # The header decides whether the report is usable; an HTML error page or a
                    # report without Event Time fails here and raw_data is not run on it.
                    quality_report.add_structural(header_failures(raw_report_schema(), columns), key)
                    quality_report.add_unknown_columns(key, [c for c in columns if c not in RAW_COLUMN_NAMES])
        quality_report.add_row_counts(delivered.rows_by_date())
        columns = delivered.columns
        missing = [c for c in RAW_COLUMN_NAMES if c not in columns]
        drift = column_drift_metadata(
            context.log, f"AppsFlyer {report} for {app_id}", quality_report.unknown_column_names(), missing
        )
        output = dg.Output(
            delivered,
            metadata={
                "appsflyer/app_id": app_id,
                "appsflyer/api_calls": calls,
                "appsflyer/windows": dg.MetadataValue.json(windows),
                "appsflyer/quota": dg.MetadataValue.json(quota_use),
                "appsflyer/rows_served": delivered.row_count,
                **drift,
            },
        )
        # The report is archived even when its shape is wrong: the archive keeps what was sent.
        yield from publish(context, quality, quality_report, output, archive_as_delivered=True)

    return _raw_report


raw_report_assets = [
    build_raw_report_asset(platform, short) for platform in PLATFORMS for short in RAW_REPORTS
]


@table_asset(
    RAW_DATA_TABLE,
    ins={
        f"{platform}_{short}": dg.AssetIn(
            key=RAW_TABLES[(platform, short)].asset_key, metadata={LOAD_AS_BATCHES: True}
        )
        for platform in PLATFORMS
        for short in RAW_REPORTS
    },
    partitions_def=appsflyer_daily_partitions,
    group_name=UNIFIED_GROUP,
    kinds={"appsflyer", "postgres", "pandas"},
    checks=RAW_DATA_CHECKS,
    check_schemas=[raw_values_schema(), raw_data_schema()],
)
def raw_data(
    context: dg.AssetExecutionContext,
    appsflyer_raw_data_api: AppsFlyerRawDataApi,
    appsflyer_apps: AppsFlyerApps,
    quality: QualityStore,
    android_installs: PartitionBatches,
    android_in_app_events: PartitionBatches,
    ios_installs: PartitionBatches,
    ios_in_app_events: PartitionBatches,
):
    """Attributed installs and in-app events of both apps in one typed table: who installed from
    which media source and campaign, what they did and spent afterwards. One row per install or
    event, with timestamps in the app timezone, the purchase receipt id, revenue, the app's own
    customer user id (to join with the app's tables) and normalized flags. This is the table
    product analytics queries; it is also archived. Rows that break an ERROR rule (unreadable
    values, unknown platform, a non-numeric customer user id, ...) are quarantined in the
    archive's quality.quarantine instead; the raw reports keep them as delivered.
    """
    installs, events = RAW_REPORTS["installs"], RAW_REPORTS["in_app_events"]
    report = QualityReport(RAW_DATA_CHECKS, context.partition_keys, RAW_DATA_TABLE.row_key)

    def validated(delivered: pd.DataFrame, typed: pd.DataFrame) -> pd.Series:
        # Each row is checked as delivered (do its values read?) and as typed (do they make sense?).
        return report.check_rows(
            [(raw_values_schema(), delivered), (raw_data_schema(), typed)], keys=typed, delivered=delivered
        )

    frame = unify_raw_reports(
        [
            (installs, android_installs),
            (events, android_in_app_events),
            (installs, ios_installs),
            (events, ios_in_app_events),
        ],
        # Raw timestamps are wall times in the timezone the reports were requested in.
        timezone=appsflyer_raw_data_api.timezone,
        app_ids={p: appsflyer_apps.app_id(p) for p in PLATFORMS},
        row_filter=validated,
    )
    metadata = {
        "rows_by_platform": dg.MetadataValue.json(
            frame["platform"].value_counts(dropna=False).astype(int).to_dict()
        ),
    }
    yield from publish(context, quality, report, dg.Output(frame, metadata=metadata))
