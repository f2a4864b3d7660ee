"""``appsflyer/daily_report``: AppsFlyer's aggregate daily performance report of every app.

One aggregate Pull API call per configured app (several apps per platform may be configured)
covers the whole partition range (aggregate history is unlimited). A partition holds every app and
is written for all of them or for none (:mod:`adpipes.lib.app_failures`). Aggregates finalize about
48 hours late, so a day's figures still change for two days:
:func:`daily_report_refresh_run_request` re-pulls a day together with the two days before it in
one single-run range; the daily schedule's late-data run is that request for yesterday.
"""

import datetime as dt
from dataclasses import dataclass

import pandas as pd

import dagster as dg
from adpipes.appsflyer.partitions import appsflyer_daily_partitions
from adpipes.appsflyer.aggregate_api import (
    AGGREGATE_API_POOL,
    DAILY_REPORT,
    AppsFlyerAggregateApi,
    is_short_aggregate_range,
)
from adpipes.appsflyer.api import AppsFlyerApiError
from adpipes.appsflyer.resources import AppsFlyerApps
from adpipes.appsflyer.schemas import (
    AGGREGATE_NULL_MARKERS,
    DAILY_REPORT_COUNT_COLUMNS,
    DAILY_REPORT_DECIMAL_COLUMNS,
    DAILY_REPORT_HEADERS,
    DAILY_REPORT_TABLE,
    DAILY_REPORT_TEXT_COLUMNS,
    daily_report_delivered_schema,
    daily_report_schema,
    snake_case,
)
from adpipes.lib.app_failures import (
    app_failure,
    partitions_label,
    refuse_removed_apps,
    stored_apps_not_configured,
    stored_partitions_kept,
)
from adpipes.lib.assets import (
    add_partition_metadata,
    column_drift_metadata,
    frame_partition_metadata,
    table_asset,
)
from adpipes.lib.http import VendorApiError
from adpipes.lib.quality import (
    ROW_VOLUME,
    UNKNOWN_COLUMNS,
    QualityReport,
    QualityStore,
    check_groups,
    header_failures,
    publish,
)
from adpipes.lib.quota import ApiCallLedger, require_calls
from adpipes.lib.storage.postgres import PostgresDatabase

GROUP = "appsflyer"
# Aggregates finalize ~48 h late: a day is re-pulled with the two days before it.
FINALIZATION_LAG_DAYS = 2
DAILY_REPORT_CHECKS = check_groups(
    daily_report_delivered_schema(), daily_report_schema(), extra=[UNKNOWN_COLUMNS, ROW_VOLUME]
)


class DailyReportFormatError(AppsFlyerApiError):
    """The daily report's rows are dated outside the requested days (wrong timezone parameter)."""


@dataclass
class ParsedDailyReport:
    frame: pd.DataFrame
    unknown_columns: list[str]
    missing_columns: list[str]


def _numbers(values: pd.Series, *, whole: bool) -> pd.Series:
    # Values that are not numbers become null; the parseable_values check has quarantined their
    # rows already (see daily_report_delivered_schema).
    text = values.astype("string").str.strip()
    numbers = pd.to_numeric(text.mask(text.isin(AGGREGATE_NULL_MARKERS)), errors="coerce")
    if whole:
        numbers = numbers.where(numbers % 1 == 0)
    return numbers.astype("Int64" if whole else "Float64")


def daily_report_frame(raw: pd.DataFrame, platform: str, app_id: str, currency: str) -> ParsedDailyReport:
    """The daily report CSV (every column as text) as typed rows, columns mapped by header name,
    with the same index as ``raw`` (the report as delivered, e.g. ``AggregateReport.to_arrow().to_pandas()``).
    ``currency`` is the app's currency in AppsFlyer, which aggregate reports are always in.

    ``None``/``N/A`` become NULL; headers adpipes does not know are kept as delivered (text)
    under their snake_case name and listed in ``unknown_columns``. The caller checks the header
    first (a report without Date cannot be placed).
    """
    frame = pd.DataFrame(index=raw.index)
    frame["report_date"] = raw["Date"].astype("string").str.strip()
    frame["platform"] = pd.Series(platform, index=raw.index, dtype="string")
    frame["app_id"] = pd.Series(app_id, index=raw.index, dtype="string")
    frame["currency"] = pd.Series(currency, index=raw.index, dtype="string")
    missing = []
    for header, column in DAILY_REPORT_HEADERS.items():
        if header not in raw.columns:
            missing.append(header)
            values = pd.Series(pd.NA, index=raw.index, dtype="string")
        else:
            values = raw[header].astype("string")
        if column in DAILY_REPORT_COUNT_COLUMNS or column in DAILY_REPORT_DECIMAL_COLUMNS:
            frame[column] = _numbers(values, whole=column in DAILY_REPORT_COUNT_COLUMNS)
        elif column in DAILY_REPORT_TEXT_COLUMNS:
            values = values.str.strip()
            frame[column] = values.mask(values.isin(AGGREGATE_NULL_MARKERS))
        else:
            frame[column] = values.str.strip()
    unknown = []
    for header in raw.columns:
        if header in DAILY_REPORT_HEADERS:
            continue
        name = snake_case(header)
        # A vendor column must never overwrite one of ours (e.g. a future "Platform" column).
        name = f"vendor_{name}" if name in frame.columns else name
        frame[name] = raw[header].astype("string")
        unknown.append(name)
    return ParsedDailyReport(frame, unknown, missing)


def refresh_range(partition_key: str, first_partition: str | None = None) -> tuple[str, str]:
    """The partition range re-pulling ``partition_key`` and the ``FINALIZATION_LAG_DAYS`` days
    before it, not before ``first_partition`` (default: the partitions' first day),
    e.g. 2026-11-20 -> ("2026-11-18", "2026-11-20")."""
    day = dt.date.fromisoformat(partition_key)
    first_key = first_partition or appsflyer_daily_partitions.get_first_partition_key()
    start = day - dt.timedelta(days=FINALIZATION_LAG_DAYS)
    if first_key is not None:
        start = max(start, dt.date.fromisoformat(first_key))
    return start.isoformat(), day.isoformat()


def daily_report_refresh_run_request(partition_key: str, first_partition: str | None = None,
                                     tags: dict[str, str] | None = None) -> dg.RunRequest:
    """One run materializing ``partition_key`` and the two days before it as a single-run range:
    one call per app, and as a 3-day range it counts against the daily aggregate quota (24
    a day) rather than the one-call-per-minute limit of <= 2-day ranges. The run key names the
    range, so a tick or sensor requests it once."""
    start, end = refresh_range(partition_key, first_partition)
    return dg.RunRequest(
        run_key=f"daily_report:{start}..{end}",
        asset_selection=[DAILY_REPORT_TABLE.asset_key],
        tags={**(tags or {}), "dagster/asset_partition_range_start": start,
              "dagster/asset_partition_range_end": end},
    )


@table_asset(
    DAILY_REPORT_TABLE,
    partitions_def=appsflyer_daily_partitions,
    group_name=GROUP,
    kinds={"appsflyer", "postgres", "pandas"},
    metadata={"appsflyer/report": DAILY_REPORT},
    checks=DAILY_REPORT_CHECKS,
    check_schemas=[daily_report_delivered_schema(), daily_report_schema()],
    pool=AGGREGATE_API_POOL,
)
def daily_report(
    context: dg.AssetExecutionContext,
    appsflyer_aggregate_api: AppsFlyerAggregateApi,
    appsflyer_apps: AppsFlyerApps,
    quality: QualityStore,
    api_calls: ApiCallLedger,
    archive_db: PostgresDatabase,
):
    """Daily ad performance of every configured app per media source and campaign, as
    AppsFlyer's aggregate daily report states it: impressions, clicks, installs, sessions, loyal
    users and ad spend (cost, eCPI, in the app's currency named in `currency`), one row per day,
    app (`app_id`, with its `platform`), agency, media source and campaign. This is the table
    for spend and acquisition dashboards (cost per install by channel, installs by campaign).
    AppsFlyer finalizes aggregates about 48 hours late, so a day's figures may still change for two
    days: the daily schedule re-pulls yesterday with the two days before it, as one 3-day range
    (one call per app); by hand, materialize `--partition-range D-2...D`. A day is written for
    every app or for none: if one app's call fails, the stored day keeps what it held.
    """
    keys = context.partition_keys
    asset = DAILY_REPORT_TABLE.asset_key.to_user_string()
    first, last = dt.date.fromisoformat(keys[0]), dt.date.fromisoformat(keys[-1])
    platform_apps = appsflyer_apps.platform_apps()
    app_ids = [app_id for _, app_id in platform_apps]
    frames, missing = [], set()
    # Requests made per app (retries included), for the metadata and a failure's message.
    calls: dict[str, int] = {}
    report = QualityReport(DAILY_REPORT_CHECKS, keys, DAILY_REPORT_TABLE.row_key)
    rejected, unusable = [], []
    quotas = {app_id: appsflyer_aggregate_api.quota_meter(api_calls, app_id, DAILY_REPORT) for app_id in app_ids}
    # One call per app; only ranges of 3+ days count against the daily aggregate quota. Every
    # app's quota is checked before the first call: a run that cannot pay for every app's call makes none.
    needed = 0 if is_short_aggregate_range(first, last) else 1
    quota_use = require_calls(
        [(quota, needed) for quota in quotas.values()],
        f"{asset} partitions {first}..{last}",
    )
    # Read before the first call: if the archive cannot be read, no quota is spent. A partition
    # is replaced as a whole: an app no longer configured would lose its archived rows of these
    # days, and no re-pull may leave the archive with less than it had.
    refuse_removed_apps(asset, keys, stored_apps_not_configured(archive_db, DAILY_REPORT_TABLE, "app_id", keys, app_ids),
                        "APPSFLYER_ANDROID_APP_ID / APPSFLYER_IOS_APP_ID")
    for platform, app_id in platform_apps:
        try:
            fetched = appsflyer_aggregate_api.fetch_aggregate_report(app_id, DAILY_REPORT, first, last,
                                                                     log=context.log, quota=quotas[app_id])
            # Parsed once: the header is checked, the rows typed and validated from this one frame.
            delivered = fetched.to_arrow().to_pandas()
        except VendorApiError as exc:
            # Nothing is written before every app has answered: the stored days stay as they were.
            raise app_failure(asset, keys, app_id, exc, apps=app_ids, calls=calls) from exc
        calls[app_id] = fetched.calls
        structural = header_failures(daily_report_delivered_schema(), delivered.columns)
        if len(structural):
            # Unusable as a whole (e.g. no Date column): kept as delivered in the archive's
            # quality.rejected_deliveries, nothing of it reaches product, nor of the other apps.
            rules = "; ".join(f"fails the rule '{r.rule}' ({r.column_name})" for r in structural.itertuples())
            unusable.append(f"app {app_id} ({platform}): {rules}")
            for key in keys:
                report.add_structural(structural.assign(value=app_id), key)
                rejected.append((key, f"{app_id} ({platform}): {rules}", fetched.content.decode("utf-8", "replace")))
            continue
        parsed = daily_report_frame(delivered, platform, app_id, appsflyer_apps.currency)
        outside = sorted(set(parsed.frame["report_date"].dropna()) - {d.isoformat() for d in _days(first, last)})
        if outside:
            error = DailyReportFormatError(
                f"AppsFlyer {DAILY_REPORT} for app {app_id}: rows dated {outside[:5]} outside the "
                f"requested {first}..{last} (is the timezone parameter right?)",
                app_id=app_id, report=DAILY_REPORT,
            )
            raise app_failure(asset, keys, app_id, error, apps=app_ids, calls=calls) from None
        missing.update(parsed.missing_columns)
        for key in keys:
            report.add_unknown_columns(key, parsed.unknown_columns)
        # A range run may cover a non-contiguous set of partitions: keep only the requested days.
        wanted = parsed.frame["report_date"].isin(keys).to_numpy()
        typed = parsed.frame[wanted].reset_index(drop=True)
        as_delivered = delivered[wanted].reset_index(drop=True)
        keep = report.check_rows(
            [(daily_report_delivered_schema(), as_delivered), (daily_report_schema(), typed)],
            keys=typed, delivered=as_delivered,
        )
        frames.append(typed[keep.to_numpy()])
    if rejected:
        message = (
            f"{asset} {partitions_label(keys)}: AppsFlyer's daily report cannot be used for "
            + "; ".join(unusable)
            + f". Nothing of the {partitions_label(keys)} was written, for any app ({', '.join(app_ids)}): "
            f"{stored_partitions_kept(keys)} for every app, and the unusable answer is kept as "
            "delivered in the archive's quality.rejected_deliveries. Review the failed check "
            "required_columns in the Dagster UI; re-run the partitions once AppsFlyer answers with the "
            "columns (a re-run calls every app again)."
        )
        yield from publish(context, quality, report, None, rejected=rejected, refusal_message=message)
        return
    frame = pd.concat(frames, ignore_index=True)
    drift = column_drift_metadata(
        context.log, f"AppsFlyer {DAILY_REPORT}", report.unknown_column_names(), sorted(missing)
    )
    by_platform = frame.groupby("platform")
    by_app = frame.groupby("app_id")
    output = dg.Output(
        frame,
        metadata={
            "appsflyer/app_ids": dg.MetadataValue.json(app_ids),
            "appsflyer/api_calls": sum(calls.values()),
            "appsflyer/api_calls_by_app": dg.MetadataValue.json(calls),
            "appsflyer/quota": dg.MetadataValue.json(quota_use),
            "appsflyer/rows_served": len(frame),
            "installs_by_platform": dg.MetadataValue.json(
                {p: int(v) for p, v in by_platform["installs"].sum().items()}
            ),
            "installs_by_app": dg.MetadataValue.json({a: int(v) for a, v in by_app["installs"].sum().items()}),
            "total_cost_by_platform": dg.MetadataValue.json(
                {p: float(v) for p, v in by_platform["total_cost"].sum().items()}
            ),
            **drift,
        },
    )
    add_partition_metadata(context, _partition_figures(frame, keys))
    yield from publish(context, quality, report, output)


def _partition_figures(frame: pd.DataFrame, keys: list[str]) -> dict[str, dict[str, object]]:
    """Each day's own installs, cost, impressions and clicks (numbers the UI plots by partition)
    and its per-platform and per-app breakdowns, overriding the run's totals on its materialization."""
    figures = frame_partition_metadata(
        frame, keys, counts={"rows_by_platform": "platform"}, plotted={"platform_rows": "platform"},
        sums={"installs": "installs", "total_cost": "total_cost", "impressions": "impressions", "clicks": "clicks"},
    )
    for key, metadata in figures.items():
        day = frame[frame["report_date"] == key]
        for label in ("installs", "impressions", "clicks"):
            metadata[label] = dg.MetadataValue.int(int(metadata[label].value))
        by_platform, by_app = day.groupby("platform"), day.groupby("app_id")
        metadata["installs_by_platform"] = dg.MetadataValue.json(
            {p: int(v) for p, v in by_platform["installs"].sum().items()})
        metadata["installs_by_app"] = dg.MetadataValue.json({a: int(v) for a, v in by_app["installs"].sum().items()})
        metadata["total_cost_by_platform"] = dg.MetadataValue.json(
            {p: float(v) for p, v in by_platform["total_cost"].sum().items()})
    return figures


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
