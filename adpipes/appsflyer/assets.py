"""AppsFlyer raw-data assets: the four per-platform raw reports and the unified ``raw_data``."""


import pandas as pd

import dagster as dg
from adpipes.appsflyer.partitions import appsflyer_daily_partitions
from adpipes.appsflyer.resources import AppsFlyerApps, AppsFlyerPullApi
from adpipes.appsflyer.schemas import (
    PLATFORMS,
    RAW_COLUMN_NAMES,
    RAW_DATA_TABLE,
    RAW_REPORTS,
    RAW_TABLES,
)
from adpipes.appsflyer.transform import snake_case_columns, unify_raw_reports
from adpipes.lib.assets import column_drift_metadata, table_asset
from adpipes.lib.markdown import markdown_table
from adpipes.lib.partitions import day_window
from adpipes.lib.storage.delivered import DeliveredFiles
from adpipes.lib.storage.postgres import LOAD_AS_BATCHES, PartitionBatches

RAW_GROUP = "appsflyer_raw"
UNIFIED_GROUP = "appsflyer"
PROBLEM_SAMPLE_ROWS = 20

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
    )
    def _raw_report(
        context: dg.AssetExecutionContext,
        appsflyer_api: AppsFlyerPullApi,
        appsflyer_apps: AppsFlyerApps,
    ) -> dg.Output[DeliveredFiles]:
        app_id = appsflyer_apps.app_id(platform)
        # The responses are spooled to disk and streamed into the archive as delivered: a raw day
        # can be a million rows, too big to hold in memory several times over.
        delivered = DeliveredFiles(prefix=f"adpipes-{platform}-{report_short}-")
        calls = 0
        for key in context.partition_keys:
            start, end = day_window(key, appsflyer_api.timezone)
            fetched = appsflyer_api.fetch_raw_report(
                app_id, report, start, end, log=context.log, directory=delivered.directory
            )
            calls += fetched.calls
            for chunk in fetched.chunks:
                delivered.add(chunk.path, snake_case_columns(chunk.header), chunk.rows, report_date=key)
        columns = delivered.columns
        unknown = [c for c in columns if c not in RAW_COLUMN_NAMES]
        missing = [c for c in RAW_COLUMN_NAMES if c not in columns]
        drift = column_drift_metadata(
            context.log, f"AppsFlyer {report} for {app_id}", unknown, missing, kept_in="the archive"
        )
        return dg.Output(
            delivered,
            metadata={
                "appsflyer/app_id": app_id,
                "appsflyer/api_calls": calls,
                "appsflyer/rows_served": delivered.row_count,
                **drift,
            },
        )

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
)
def raw_data(
    context: dg.AssetExecutionContext,
    appsflyer_api: AppsFlyerPullApi,
    appsflyer_apps: AppsFlyerApps,
    android_installs: PartitionBatches,
    android_in_app_events: PartitionBatches,
    ios_installs: PartitionBatches,
    ios_in_app_events: PartitionBatches,
) -> dg.Output[pd.DataFrame]:
    """Attributed installs and in-app events of both apps in one typed table: who installed from
    which media source and campaign, what they did and spent afterwards. One row per install or
    event, with timestamps in the app timezone, the purchase receipt id, revenue, the app's own
    customer user id (to join with the app's tables) and normalized flags. This is the table
    product analytics queries; it is also archived.
    """
    installs, events = RAW_REPORTS["installs"], RAW_REPORTS["in_app_events"]
    unified = unify_raw_reports(
        [
            (installs, android_installs),
            (events, android_in_app_events),
            (installs, ios_installs),
            (events, ios_in_app_events),
        ],
        # Raw timestamps are wall times in the timezone the reports were requested in.
        timezone=appsflyer_api.timezone,
        app_ids={p: appsflyer_apps.app_id(p) for p in PLATFORMS},
    )
    metadata: dict[str, object] = {
        "rows_by_platform": dg.MetadataValue.json(
            unified.frame["platform"].value_counts(dropna=False).astype(int).to_dict()
        ),
        "unconvertible_values": len(unified.problems),
    }
    if len(unified.problems):
        summary = unified.problems.groupby(["column", "problem"]).size().to_dict()
        context.log.warning(
            f"appsflyer/raw_data: {len(unified.problems)} values could not be converted and are "
            f"null in raw_data (the raw values stay in the archived reports): "
            + "; ".join(f"{column}: {count} ({problem})" for (column, problem), count in summary.items())
        )
        metadata["unconvertible_values_sample"] = dg.MetadataValue.md(
            markdown_table(unified.problems.head(PROBLEM_SAMPLE_ROWS))
        )
    return dg.Output(unified.frame, metadata=metadata)
