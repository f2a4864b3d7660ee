"""AppsFlyer raw-data assets: the four per-platform raw reports and the unified ``raw_data``."""

import datetime as dt
from zoneinfo import ZoneInfo

import pandas as pd
from pydantic import Field

import dagster as dg
from adpipes.appsflyer.partitions import appsflyer_daily_partitions
from adpipes.appsflyer.raw_data_api import (
    RAW_DATA_API_POOL,
    RAW_LOOKBACK_DAYS,
    RAW_WINDOW_DAYS,
    AppsFlyerRawDataApi,
    SpooledChunk,
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
from adpipes.lib.storage.names import headers_problem
from adpipes.lib.assets import column_drift_metadata, table_asset
from adpipes.lib.partitions import day_window
from adpipes.lib.quota import ApiCallLedger, require_calls
from adpipes.lib.quality import (
    ARCHIVED_ROWS,
    REQUIRED_COLUMNS,
    ROW_VOLUME,
    UNKNOWN_COLUMNS,
    QualityReport,
    QualityStore,
    RejectedDelivery,
    check_groups,
    header_failures,
    publish,
)
from adpipes.lib.storage.delivered import (
    DeliveredFiles,
    SpoolSpaceError,
    expected_spool_bytes,
    require_spool_space,
)
from adpipes.lib.storage.postgres import LOAD_AS_BATCHES, PartitionBatches, PostgresDatabase, stored_row_counts

RAW_GROUP = "appsflyer_raw"
UNIFIED_GROUP = "appsflyer"
# A raw report is archived as delivered, never filtered: its own checks are about its shape and
# size, and whether it is worse than the day already archived. Its values are checked row by row
# where they are unified (raw_data's checks).
RAW_REPORT_CHECKS = [REQUIRED_COLUMNS, ARCHIVED_ROWS, UNKNOWN_COLUMNS, ROW_VOLUME]
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
# The archive is the only copy once AppsFlyer's 90 days pass: no delivery may make it worse.
_REFUSAL_DESCRIPTION = (
    " A delivery that is not a usable report, or has fewer rows than the day already archived "
    "(beyond ADPIPES_MAX_ROW_DROP), is not written: the archived day is kept, the delivery is "
    "kept whole in quality.rejected_deliveries and the run fails (docs/archive-safety.md)."
)


class RawReportConfig(dg.Config):
    replace_archived: bool = Field(
        default=False,
        description="Write the delivery over the archived days even when it has fewer rows than "
        "they hold (beyond ADPIPES_MAX_ROW_DROP): a deliberate replace, e.g. after AppsFlyer "
        "removed fraudulent installs. A delivery that is not a usable report (an HTML page, a "
        "missing required column, CSV that does not parse) is never written, even so.",
    )


def _days_covered(chunk: SpooledChunk, timezone: str, keys: list[str]) -> list[str]:
    """The partition days a response's window touches (in the app timezone)."""
    tz = ZoneInfo(timezone)
    first = chunk.window[0].astimezone(tz).date().isoformat()
    last = (chunk.window[1] - dt.timedelta(seconds=1)).astimezone(tz).date().isoformat()
    return [k for k in keys if first <= k <= last]


def _refusal_message(asset: str, op_name: str, app_id: str, reasons: dict[str, str], run_id: str) -> str:
    lines = "\n".join(f"- {day}: {reason}" for day, reason in sorted(reasons.items()))
    return (
        f"{asset} (app {app_id}): AppsFlyer's delivery of {len(reasons)} partition(s) was not written; "
        f"the archive keeps what it held for them:\n{lines}\n"
        "The deliveries are kept whole in the archive database's quality.rejected_deliveries "
        f"(asset_key '{asset}', run_id '{run_id}'); appsflyer/raw_data was not rebuilt from them. "
        f"What to do: re-run these partitions later (AppsFlyer serves the last {RAW_LOOKBACK_DAYS} days; an outage "
        "or a cut-off answer usually passes). If a delivery with fewer rows is right (e.g. AppsFlyer "
        "removed fraudulent installs), replace the archived day on purpose with the run config "
        f"`ops: {{{op_name}: {{config: {{replace_archived: true}}}}}}`; a delivery that is not a usable "
        "report is never written. See docs/archive-safety.md."
    )


def _refusals(keys: list[str], unusable: list[tuple[SpooledChunk, list[str], str]], delivered: dict[str, int],
              archived: dict[str, int], quality: QualityStore, report: QualityReport, *,
              replace: bool) -> dict[str, str]:
    """The partitions whose delivery may not be written, with why: an answer that is not a usable
    report, or fewer rows than the archived day beyond ADPIPES_MAX_ROW_DROP (unless ``replace``).
    A day never archived has nothing to be worse than. Comparisons are added to ``report``."""
    reasons: dict[str, str] = {}
    for chunk, covered, problem in unusable:
        for key in covered:
            held = f"{archived[key]:,} rows archived" if key in archived else "nothing archived"
            reasons[key] = f"the {'answer is' if chunk.problem else 'report'} {problem}; {held}"
    for key in keys:
        if key in reasons or key not in archived:
            continue
        shrinks = quality.row_drop_refused(archived[key], delivered[key])
        report.add_archive_comparison(key, archived[key], delivered[key], refused=shrinks and not replace,
                                      max_row_drop=quality.max_row_drop, replaced=shrinks and replace)
        if shrinks and not replace:
            reasons[key] = (
                f"{delivered[key]:,} rows delivered, {archived[key]:,} archived: fewer than "
                f"ADPIPES_MAX_ROW_DROP={quality.max_row_drop:g} allows (AppsFlyer may have cut the "
                "answer off at a row cap, or still be missing data)"
            )
    return reasons


def _kept_deliveries(app_id: str, day_files: dict[str, list[SpooledChunk]],
                     unusable: list[tuple[SpooledChunk, list[str], str]], archived: dict[str, int],
                     reasons: dict[str, str]) -> list[RejectedDelivery]:
    """Every file of the refused partitions, to be kept whole beside the archive."""
    kept = []
    for chunk, covered, _ in unusable:
        # Kept once, under the first day it covers; the reason names every day.
        span = f" (the answer covers {covered[0]}..{covered[-1]})" if len(covered) > 1 else ""
        kept.append(RejectedDelivery(
            covered[0], f"{app_id}: {reasons[covered[0]]}{span}", path=chunk.path,
            rows=None if chunk.problem else chunk.rows,
            columns=[] if headers_problem(chunk.header) else snake_case_columns(chunk.header),
            archived_rows=archived.get(covered[0]),
        ))
    covered_days = {key for _, covered, _ in unusable for key in covered}
    for key in sorted(reasons):
        for f in day_files[key]:
            kept.append(RejectedDelivery(key, f"{app_id}: {reasons[key]}", path=f.path, rows=f.rows,
                                         columns=snake_case_columns(f.header), archived_rows=archived.get(key)))
        if not day_files[key] and key not in covered_days:
            # No row of the day came (a day of a longer window): the refusal itself is kept.
            kept.append(RejectedDelivery(key, f"{app_id}: {reasons[key]}", rows=0, archived_rows=archived.get(key)))
    return kept


def build_raw_report_asset(platform: str, report_short: str) -> dg.AssetsDefinition:
    """One per-platform raw report asset (``appsflyer/{platform}_{report_short}``)."""
    spec = RAW_TABLES[(platform, report_short)]
    report = RAW_REPORTS[report_short]

    @table_asset(
        spec,
        description=_RAW_DESCRIPTIONS[report_short].format(platform=platform) + _REFUSAL_DESCRIPTION,
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
        config: RawReportConfig,
        appsflyer_raw_data_api: AppsFlyerRawDataApi,
        appsflyer_apps: AppsFlyerApps,
        quality: QualityStore,
        api_calls: ApiCallLedger,
        archive_db: PostgresDatabase,
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
        # The range is spooled to TMPDIR before it is loaded: refuse before the first call when
        # TMPDIR cannot hold it (sized by the largest day archived so far), rather than when the
        # disk fills up after the call was paid for.
        with archive_db.connect() as conn:
            needed = expected_spool_bytes(conn, spec.qualified_name, len(context.partition_keys))
        try:
            require_spool_space(needed, f"{spec.asset_key.to_user_string()} partitions "
                                        f"{windows[0][0]}..{windows[-1][1]}")
        except SpoolSpaceError as exc:
            raise dg.Failure(description=str(exc)) from None
        # The responses are spooled to disk and streamed into the archive as delivered: a raw day
        # can be a million rows, too big to hold in memory several times over.
        delivered = DeliveredFiles(prefix=f"adpipes-{platform}-{report_short}-")
        timezone = appsflyer_raw_data_api.timezone
        keys = list(context.partition_keys)
        calls = 0
        quality_report = QualityReport(RAW_REPORT_CHECKS, keys)
        day_files: dict[str, list[SpooledChunk]] = {key: [] for key in keys}
        # Answers that are not a report (an HTML page, no Event Time, CSV that does not parse),
        # each with the days it covers: it cannot be split by day, and every one of them is refused.
        unusable: list[tuple[SpooledChunk, list[str], str]] = []
        # One call per run of consecutive days (up to 31 days of in-app events or 60 of installs,
        # the API's limits), split into one file per day: a backfill costs as few calls as possible.
        for first, last in windows:
            start, end = day_window(first, timezone)[0], day_window(last, timezone)[1]
            fetched = appsflyer_raw_data_api.fetch_raw_report(
                app_id, report, start, end, log=context.log, directory=delivered.directory, quota=quota
            )
            calls += fetched.calls
            for chunk in fetched.chunks:
                covered = _days_covered(chunk, timezone, keys)
                # A header that cannot name a column (markup, control characters) makes the answer
                # unusable like an HTML page: kept aside, never a column of the archive.
                unreadable = chunk.problem or headers_problem(chunk.header)
                structural = (header_failures(raw_report_schema(), snake_case_columns(chunk.header))
                              if not unreadable else [])
                if unreadable or len(structural):
                    for key in covered:
                        if unreadable:
                            quality_report.add_unreadable(key, unreadable)
                        else:
                            quality_report.add_structural(structural, key)
                    problem = unreadable or (
                        "lacks required columns " + ", ".join(structural["column_name"])
                        + f" ({chunk.rows:,} rows delivered)"
                    )
                    unusable.append((chunk, covered, problem))
                    continue
                for key, day_chunk in split_by_day(chunk, timezone):
                    day_files[key].append(day_chunk)
                    columns = snake_case_columns(day_chunk.header)
                    quality_report.add_unknown_columns(key, [c for c in columns if c not in RAW_COLUMN_NAMES])
        delivered_rows = {key: sum(f.rows for f in files) for key, files in day_files.items()}
        quality_report.add_row_counts(delivered_rows)
        # What the archive holds now decides whether the delivery may replace it.
        with archive_db.connect() as conn:
            archived = stored_row_counts(conn, spec, [dt.date.fromisoformat(k) for k in keys])
        reasons = _refusals(keys, unusable, delivered_rows, archived, quality, quality_report,
                            replace=config.replace_archived)
        for key in keys:
            if key in reasons:
                delivered.withhold(key)
            else:
                for f in day_files[key]:
                    delivered.add(f.path, snake_case_columns(f.header), f.rows, report_date=key)
        rejected = _kept_deliveries(app_id, day_files, unusable, archived, reasons)
        written = [key for key in keys if key not in reasons]
        columns = delivered.columns
        missing = [c for c in RAW_COLUMN_NAMES if c not in columns] if written else []
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
                "adpipes/refused_partitions": dg.MetadataValue.json(sorted(reasons)),
                **drift,
            },
        )
        message = _refusal_message(spec.asset_key.to_user_string(), context.op_def.name, app_id, reasons,
                                   context.run.run_id) if reasons else None
        try:
            # Refused days are withheld from the output and their deliveries kept whole; the
            # other days are archived as delivered.
            yield from publish(context, quality, quality_report, output if written else None,
                               rejected=rejected, written=written, refusal_message=message)
        finally:
            delivered.cleanup()

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
    sources = [android_installs, android_in_app_events, ios_installs, ios_in_app_events]
    # A day no raw report was archived for reads as a day without rows: building it would write an
    # empty partition to product and archive, as if nobody had installed or done anything.
    missing = {batches.spec.asset_key.to_user_string(): days for batches in sources
               if (days := batches.missing_days())}
    if missing:
        listed = "; ".join(f"{asset}: {', '.join(d.isoformat() for d in days)}" for asset, days in missing.items())
        raise dg.Failure(
            f"appsflyer/raw_data: the archive holds no raw report for these partitions ({listed}). "
            "raw_data is built from the archived raw reports only, so nothing was written. "
            "Materialize those raw reports for those partitions first (AppsFlyer serves the last "
            f"{RAW_LOOKBACK_DAYS} days), then appsflyer/raw_data."
        )
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
