"""AppsFlyer raw-data assets: one per platform and Pull API raw report (every configured app of the
platform in one table), and the unified ``raw_data``. Which reports exist is a setting
(APPSFLYER_RAW_REPORTS): :func:`build_raw_assets` builds them."""

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import psycopg
from psycopg import sql
from pydantic import Field

import dagster as dg
from adpipes.appsflyer.partitions import appsflyer_daily_partitions
from adpipes.appsflyer.raw_data_api import (
    RAW_DATA_API_POOL,
    RAW_LOOKBACK_DAYS,
    RAW_REPORTS,
    AppsFlyerRawDataApi,
    RawReport,
    SpooledChunk,
    raw_lookback_start,
    raw_windows,
    iter_report_columns,
    split_by_day,
)
from adpipes.appsflyer.resources import AppsFlyerApps
from adpipes.appsflyer.schemas import (
    PLATFORMS,
    RAW_COLUMN_NAMES,
    RAW_DATA_TABLE,
    RAW_TABLES,
    REQUESTED_APP_ID,
    raw_data_schema,
    raw_report_schema,
    raw_values_schema,
)
from adpipes.appsflyer.transform import empty_raw_data, iter_unified_blocks, raw_columns_read, snake_case_columns
from adpipes.lib.app_failures import partitions_label, stored_apps_not_configured
from adpipes.lib.storage.names import headers_problem
from adpipes.lib.assets import (
    add_partition_metadata,
    column_drift_metadata,
    frame_partition_metadata,
    row_counts_by,
    row_summary,
    table_asset,
)
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
from adpipes.lib.storage.spooled_frames import SpooledFrames
from adpipes.lib.storage.postgres import (
    LOAD_AS_BATCHES,
    ROW_LOCATOR,
    PartitionBatches,
    PostgresDatabase,
    existing_columns,
    missing_partitions,
    rows_at,
)
from adpipes.lib.storage.tables import ARCHIVE, PRODUCT

# A group's name is the prefix its assets' keys share, `/` written `_` (what the user sees in the
# keys and can select): the raw reports of a platform, `appsflyer/android_*`, are the group
# appsflyer_android; what is built from them or pulled from other AppsFlyer APIs is appsflyer.
# The attribution of a raw report (non_organic, organic, retargeting) is its `attribution` tag.
RAW_GROUPS = {platform: f"appsflyer_{platform}" for platform in PLATFORMS}
UNIFIED_GROUP = "appsflyer"
# A raw report is archived as delivered, never filtered: its own checks are about its shape and
# size, and whether it is worse than the day already archived. Its values are checked row by row
# where they are unified (raw_data's checks).
RAW_REPORT_CHECKS = [REQUIRED_COLUMNS, ARCHIVED_ROWS, UNKNOWN_COLUMNS, ROW_VOLUME]
RAW_DATA_CHECKS = check_groups(raw_values_schema(), raw_data_schema(), extra=[ROW_VOLUME])
# raw_data's rows counted by these columns, for the run and for each day (metadata label -> column).
RAW_DATA_FIGURES = {"rows_by_platform": "platform", "rows_by_attribution": "attribution",
                    "rows_by_app": "app_id", "rows_by_source_report": "source_report"}

# What each kind of report holds (the report's own words from AppsFlyer's OpenAPI file, shortened).
_RAW_SUBJECTS = {
    "installs_report": "every non-organic install (the first open after a media source's touch)",
    "in_app_events_report": "every in-app event (purchases, logins, levels...) of non-organic users, "
                            "with the event value JSON and revenue",
    "uninstall_events_report": "every uninstall of a non-organic user (AppsFlyer reports them daily)",
    "reinstalls": "every reinstall attributed to a media source within the re-attribution window",
    "organic_installs_report": "every organic install (no media source, no touch)",
    "organic_in_app_events_report": "every in-app event of organic users",
    "organic_uninstall_events_report": "every uninstall of an organic user",
    "reinstalls_organic": "every organic reinstall",
    "installs-retarget": "every re-engagement and re-attribution of a retargeting campaign",
    "in-app-events-retarget": "every in-app event of users while a retargeting campaign is credited",
}


def _raw_description(platform: str, report: RawReport) -> str:
    return (
        f"AppsFlyer's raw {report.name} report for the {platform} apps: {_RAW_SUBJECTS[report.name]}, "
        "one row per install or event with its media source, campaign, touch times and device ids, "
        "as delivered for the day (every vendor column as text, new columns kept; requested_app_id "
        "names the app each row was requested for). Archived because AppsFlyer serves raw data "
        f"for {RAW_LOOKBACK_DAYS} days only; the archive is the record of what the vendor said."
    )


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


def _refusal_message(asset: str, op_name: str, reasons: dict[str, str], run_id: str) -> str:
    lines = "\n".join(f"- {day}: {reason}" for day, reason in sorted(reasons.items()))
    return (
        f"{asset}: AppsFlyer's delivery of {len(reasons)} partition(s) was not written, for any "
        f"app; the archive keeps what it held for them:\n{lines}\n"
        "The deliveries are kept whole in the archive database's quality.rejected_deliveries "
        f"(asset_key '{asset}', run_id '{run_id}'); appsflyer/raw_data was not rebuilt from them. "
        f"What to do: re-run these partitions later (AppsFlyer serves the last {RAW_LOOKBACK_DAYS} days; an outage "
        "or a cut-off answer usually passes). If a delivery with fewer rows is right (e.g. AppsFlyer "
        "removed fraudulent installs), replace the archived day on purpose with the run config "
        f"`ops: {{{op_name}: {{config: {{replace_archived: true}}}}}}`; a delivery that is not a usable "
        "report is never written. See docs/archive-safety.md."
    )


# (partition day, app id) -> rows: how a day of a report splits between the apps of a platform.
AppDayRows = dict[tuple[str, str], int]
# What identifies a raw report row (the raw report's own columns, as delivered): the device's
# install, what happened and when. A re-pull may add rows (late events); every archived row must
# still be in it, or the archived day would lose data the vendor may no longer serve.
RAW_ROW_KEY = ("appsflyer_id", "event_name", "event_time")
# Shown per app when archived rows are missing from a delivery.
LOST_ROWS_SAMPLE = 3


@dataclass
class ArchivedDays:
    """What the archive holds for the partition days of one raw report: rows per day and per
    (day, app) (a day never archived is absent)."""

    rows: dict[str, int]
    by_app: AppDayRows


# The temporary table a delivery's row keys are copied into, to be compared in the archive.
DELIVERED_KEYS_TABLE = "adpipes_delivered_keys"
# work_mem of the comparison's transaction in the archive (docs/archive-safety.md), per sort or hash
# of its query: a 300K-event day's keys sort in memory.
COMPARISON_WORK_MEM = "32MB"


def _archived_app(present: set[str], fallback_app: str | None) -> sql.Composable:
    """A stored row's app: the one it was requested for; rows archived before adpipes recorded
    that fall back to AppsFlyer's App ID column, then to ``fallback_app`` (the platform's only app,
    which is the app adpipes pulled before several apps per platform were supported)."""
    sources = [sql.SQL("nullif({}, '')").format(sql.Identifier(c))
               for c in (REQUESTED_APP_ID, "app_id") if c in present]
    return sql.SQL("coalesce({})").format(sql.SQL(", ").join([*sources, sql.Literal(fallback_app or "")]))


def require_temporary_tables(conn: psycopg.Connection, asset: str) -> None:
    """Refuse (``dg.Failure``) when the archive's role may not create temporary tables, which the
    comparison of a re-pulled day with the archive uses."""
    role, database, allowed = conn.execute(
        "SELECT current_user, current_database(), has_database_privilege(current_database(), 'TEMPORARY')"
    ).fetchone()
    conn.rollback()
    if not allowed:
        raise dg.Failure(
            f"{asset}: the archive's role {role} may not create temporary tables in database "
            f"{database}, which comparing a re-pulled day with the archive needs; nothing was called "
            f"or written. Grant it (GRANT TEMPORARY ON DATABASE {database} TO {role}) or use "
            "another role in ADPIPES_ARCHIVE_DSN, then re-run."
        )


def _copy_delivered_keys(cur: psycopg.Cursor, files: list[tuple[str, SpooledChunk]]) -> None:
    """The row keys of a day's delivered files, with their app, into the temporary table (empty
    first), read from the files a block at a time."""
    cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(DELIVERED_KEYS_TABLE)))
    statement = sql.SQL("COPY {} (app, {}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(DELIVERED_KEYS_TABLE), sql.SQL(", ").join(sql.Identifier(c) for c in RAW_ROW_KEY))
    options = pacsv.WriteOptions(include_header=False)
    with cur.copy(statement) as copy:
        for app_id, f in files:
            if not f.rows:
                continue
            columns = dict(zip(snake_case_columns(f.header), f.header))
            for batch in iter_report_columns(f.path, [columns[c] for c in RAW_ROW_KEY]):
                block = pa.RecordBatch.from_arrays(
                    [pa.repeat(app_id, batch.num_rows), *batch.columns], ["app", *RAW_ROW_KEY])
                buffer = pa.BufferOutputStream()
                pacsv.write_csv(block, buffer, options)
                copy.write(memoryview(buffer.getvalue()))


def _lost_rows_of_day(cur: psycopg.Cursor, spec, day: str, present: set[str], fallback_app: str | None,
                      ) -> dict[tuple[str, str], tuple[int, list[str]]]:
    """Per (day, app): how many archived rows of ``day`` the delivered keys lack (row keys counted
    as a multiset: a key archived twice and delivered once lacks one) and a few of their keys, in
    key order. Computed by the archive's server: Python holds neither side's keys."""
    key = [sql.SQL("coalesce({}, '')").format(sql.Identifier(c)) if c in present else sql.Literal("")
           for c in RAW_ROW_KEY]
    names = sql.SQL(", ").join(sql.Identifier(c) for c in RAW_ROW_KEY)
    statement = sql.SQL("""
        WITH archived AS (
            SELECT {app} AS app, {key}, count(*) AS n FROM {table} WHERE report_date = {day}::date
            GROUP BY 1, {positions}),
        delivered AS (
            SELECT app, {delivered_key}, count(*) AS n FROM {keys} GROUP BY 1, {positions}),
        lost AS (
            SELECT a.app, {a_names}, a.n - coalesce(d.n, 0) AS missing
            FROM archived a LEFT JOIN delivered d USING (app, {names})
            WHERE a.n > coalesce(d.n, 0)),
        ranked AS (
            SELECT *, sum(missing) OVER (PARTITION BY app) AS app_missing,
                   row_number() OVER (PARTITION BY app ORDER BY {key_order}) AS position
            FROM lost)
        SELECT app, app_missing, {names} FROM ranked WHERE position <= {sample} ORDER BY app, position
    """).format(
        app=_archived_app(present, fallback_app),
        key=sql.SQL(", ").join(sql.SQL("{} AS {}").format(k, sql.Identifier(c)) for k, c in zip(key, RAW_ROW_KEY)),
        table=sql.Identifier(spec.schema_name, spec.table_name), day=sql.Literal(day),
        positions=sql.SQL(", ").join(sql.Literal(2 + i) for i in range(len(RAW_ROW_KEY))),
        delivered_key=sql.SQL(", ").join(sql.SQL("coalesce({0}, '') AS {0}").format(sql.Identifier(c))
                                         for c in RAW_ROW_KEY),
        keys=sql.Identifier(DELIVERED_KEYS_TABLE),
        a_names=sql.SQL(", ").join(sql.SQL("a.{}").format(sql.Identifier(c)) for c in RAW_ROW_KEY),
        names=names, sample=sql.Literal(LOST_ROWS_SAMPLE),
        # Key order by code point, whatever the database's collation.
        key_order=sql.SQL(", ").join(sql.SQL('{} COLLATE "C"').format(sql.Identifier(c)) for c in RAW_ROW_KEY),
    )
    lost: dict[tuple[str, str], tuple[int, list[str]]] = {}
    for app, missing, *row_key in cur.execute(statement):
        count, sample = lost.get((day, app), (int(missing), []))
        lost[(day, app)] = (count, [*sample, " / ".join(v or "''" for v in row_key)])
    return lost


def compare_with_archive(archive_db: PostgresDatabase, spec, keys: list[str], fallback_app: str | None,
                         day_files: dict[str, list[tuple[str, SpooledChunk]]], unreadable: set[str],
                         ) -> tuple[ArchivedDays, dict[tuple[str, str], tuple[int, list[str]]]]:
    """What the archive holds for ``keys``, and per (day, app) the archived rows the delivery lacks
    (:func:`_lost_rows_of_day`; days in ``unreadable`` have no usable delivery to compare and are
    only counted). One day at a time, in one transaction whose temporary table of delivered keys
    is dropped with it: the delivered keys are copied to the archive's server, which compares
    them with the archived ones, so memory here holds a block of a file, whatever the size of the
    day or the length of the range (comparing in Arrow held both days' keys and a join of them:
    ~390 MB at 300K events)."""
    days = [dt.date.fromisoformat(k) for k in keys]
    rows: dict[str, int] = {}
    by_app: AppDayRows = {}
    lost: dict[tuple[str, str], tuple[int, list[str]]] = {}
    with archive_db.connect() as conn:
        stored = sorted(set(days) - set(missing_partitions(conn, spec, days)))
        with conn.cursor() as cur:
            present = set(existing_columns(cur, spec.schema_name, spec.table_name)) if stored else set()
            if stored:
                # The delivered files are UTF-8, as they are when loaded (begin_day_loads).
                cur.execute("SET LOCAL client_encoding = 'UTF8'")
                # The comparison groups and sorts a day's keys: with PostgreSQL's default 4 MB the
                # server did it on disk past ~50K events (a 300K-event day: 5.5 s, 2.7 s in memory).
                cur.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(COMPARISON_WORK_MEM)))
                cur.execute(sql.SQL(
                    "CREATE TEMPORARY TABLE {} (app text, {}) ON COMMIT DROP"
                ).format(sql.Identifier(DELIVERED_KEYS_TABLE),
                         sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in RAW_ROW_KEY)))
            for day in stored:
                key = day.isoformat()
                # Rows per stored day and app (a day loaded empty has no app and 0 rows).
                rows[key] = 0
                for app, n in cur.execute(sql.SQL(
                    "SELECT {app}, count(*) FROM {table} WHERE report_date = {day}::date GROUP BY 1"
                ).format(app=_archived_app(present, fallback_app),
                         table=sql.Identifier(spec.schema_name, spec.table_name), day=sql.Literal(key))):
                    rows[key] += n
                    by_app[(key, app)] = by_app.get((key, app), 0) + n
                if key not in unreadable and rows[key]:
                    _copy_delivered_keys(cur, day_files[key])
                    lost.update(_lost_rows_of_day(cur, spec, key, present, fallback_app))
        conn.rollback()
    return ArchivedDays(rows, by_app), lost


def _refusals(keys: list[str], unusable: list[tuple[str, SpooledChunk, list[str], str]], delivered: AppDayRows,
              archived: ArchivedDays, lost: dict[tuple[str, str], tuple[int, list[str]]], quality: QualityStore,
              report: QualityReport, *, replace: bool) -> dict[str, str]:
    """The partitions whose delivery may not be written, with why: an app's answer that is not a
    usable report, or an app whose delivery lacks archived rows (by row key; fewer rows is one
    such case) beyond ADPIPES_MAX_ROW_DROP, unless ``replace``. A day is written for every app or
    for none: one partition is one table partition. A day never archived has nothing to lose.
    Comparisons are added to ``report``."""
    reasons: dict[str, list[str]] = {}
    for app_id, chunk, covered, problem in unusable:
        for key in covered:
            held = f"{archived.rows[key]:,} rows archived" if key in archived.rows else "nothing archived"
            reasons.setdefault(key, []).append(
                f"app {app_id}: the {'answer is' if chunk.problem else 'report'} {problem}; {held}")
    held_by_app = archived.by_app
    for key in keys:
        if key in reasons or key not in archived.rows:
            continue
        apps = sorted({a for (k, a) in held_by_app if k == key} | {a for (k, a) in delivered if k == key})
        worse = []
        for app_id in apps:
            held, came = held_by_app.get((key, app_id), 0), delivered.get((key, app_id), 0)
            missing, sample = lost.get((key, app_id), (0, []))
            if quality.row_drop_refused(held, held - missing):
                # An archived app that is no longer configured delivers nothing: writing the day
                # would drop its rows from the archive.
                worse.append(f"app {app_id or '(unknown)'}: {came:,} rows delivered, {held:,} archived, "
                             f"{missing:,} of them not in the delivery (e.g. {'; '.join(sample)})")
        total = sum(n for (k, _), n in delivered.items() if k == key)
        report.add_archive_comparison(key, archived.rows[key], total, refused=bool(worse) and not replace,
                                      max_row_drop=quality.max_row_drop, replaced=bool(worse) and replace)
        if worse and not replace:
            reasons[key] = [
                "; ".join(worse) + f": more than ADPIPES_MAX_ROW_DROP={quality.max_row_drop:g} of the archived "
                "rows would be lost (AppsFlyer may have cut the answer off at a row cap, still be missing "
                "data, or have removed rows, e.g. fraud; an app no longer in the settings delivers nothing)"
            ]
    return {key: "; ".join(why) for key, why in reasons.items()}


def _kept_deliveries(day_files: dict[str, list[tuple[str, SpooledChunk]]],
                     unusable: list[tuple[str, SpooledChunk, list[str], str]], archived: dict[str, int],
                     reasons: dict[str, str]) -> list[RejectedDelivery]:
    """Every file of the refused partitions, every app's, to be kept whole beside the archive."""
    kept = []
    for app_id, chunk, covered, _ in unusable:
        # Kept once, under the first day it covers; the reason names every day.
        span = f" (the answer covers {covered[0]}..{covered[-1]})" if len(covered) > 1 else ""
        kept.append(RejectedDelivery(
            covered[0], f"app {app_id}'s answer: {reasons[covered[0]]}{span}", path=chunk.path,
            rows=None if chunk.problem else chunk.rows,
            columns=[] if headers_problem(chunk.header) else snake_case_columns(chunk.header),
            archived_rows=archived.get(covered[0]),
        ))
    covered_days = {key for _, _, covered, _ in unusable for key in covered}
    for key in sorted(reasons):
        for app_id, f in day_files[key]:
            kept.append(RejectedDelivery(key, f"app {app_id}'s delivery: {reasons[key]}", path=f.path, rows=f.rows,
                                         columns=snake_case_columns(f.header), archived_rows=archived.get(key)))
        if not day_files[key] and key not in covered_days:
            # No row of the day came (a day of a longer window): the refusal itself is kept.
            kept.append(RejectedDelivery(key, reasons[key], rows=0, archived_rows=archived.get(key)))
    return kept


def build_raw_report_asset(platform: str, report: RawReport) -> dg.AssetsDefinition:
    """One per-platform raw report asset (``appsflyer/{platform}_{report.short}``): every configured
    app of the platform is called (its own calls, quota and ledger rows) into one table."""
    spec = RAW_TABLES[(platform, report.short)]
    asset = spec.asset_key.to_user_string()

    @table_asset(
        spec,
        description=_raw_description(platform, report) + _REFUSAL_DESCRIPTION,
        partitions_def=appsflyer_daily_partitions,
        group_name=RAW_GROUPS[platform],
        kinds={"appsflyer", "postgres"},
        metadata={"appsflyer/report": report.name, "appsflyer/attribution": report.attribution},
        tags={"platform": platform, "attribution": report.attribution},
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
        app_ids = appsflyer_apps.app_ids(platform)
        oldest = raw_lookback_start(appsflyer_raw_data_api.timezone)
        too_old = [k for k in context.partition_keys if dt.date.fromisoformat(k) < oldest]
        if too_old:
            # Fail before any call: AppsFlyer would answer 400 deep in the run, after quota was spent.
            raise dg.Failure(
                f"{asset}: partitions {too_old[0]}..{too_old[-1]} are older "
                f"than AppsFlyer's {RAW_LOOKBACK_DAYS}-day raw-data lookback (the oldest day it serves "
                f"is {oldest}), so they cannot be pulled again. "
                f"What was pulled before is in the archive ({spec.qualified_name}); to rebuild "
                "appsflyer/raw_data from it, materialize appsflyer/raw_data alone for those partitions."
            )
        windows = raw_windows(context.partition_keys, report.name)
        quotas = {app_id: appsflyer_raw_data_api.quota_meter(api_calls, app_id, report.name) for app_id in app_ids}
        # Refuse a range the day's quota cannot pay for, for any app, before the first call.
        quota_use = require_calls(
            [(quota, len(windows)) for quota in quotas.values()],
            f"{asset} partitions {windows[0][0]}..{windows[-1][1]}",
            hint=f"materialize fewer days now (one call per app covers up to {report.window_days} days; "
            "a truncated window costs 2 more calls: its answer is discarded and both halves fetched)",
        )
        # The range is spooled to TMPDIR before it is loaded: refuse before the first call when
        # TMPDIR cannot hold it (sized by the largest day archived so far, every app's rows in it),
        # rather than when the disk fills up after the call was paid for.
        with archive_db.connect() as conn:
            needed = expected_spool_bytes(conn, spec.qualified_name, len(context.partition_keys))
            # A re-pull is compared with the archive in a temporary table: refuse now, not after
            # the calls were paid for (a first pull does not need it; the late-events run re-pulls).
            require_temporary_tables(conn, asset)
        try:
            require_spool_space(needed, f"{asset} partitions {windows[0][0]}..{windows[-1][1]}")
        except SpoolSpaceError as exc:
            raise dg.Failure(description=str(exc)) from None
        # The responses are spooled to disk and streamed into the archive as delivered: a raw day
        # can be a million rows, too big to hold in memory several times over.
        delivered = DeliveredFiles(prefix=f"adpipes-{platform}-{report.short}-")
        timezone = appsflyer_raw_data_api.timezone
        keys = list(context.partition_keys)
        calls: dict[str, int] = {}
        quality_report = QualityReport(RAW_REPORT_CHECKS, keys)
        day_files: dict[str, list[tuple[str, SpooledChunk]]] = {key: [] for key in keys}
        # Answers that are not a report (an HTML page, no Event Time, CSV that does not parse),
        # each with its app and the days it covers: it cannot be split by day, and every one of
        # them is refused.
        unusable: list[tuple[str, SpooledChunk, list[str], str]] = []
        try:
            # One call per app and run of consecutive days (up to 31 days of in-app events or 60
            # of installs, the API's limits), split into one file per day: a backfill costs as few
            # calls as possible. A vendor error of any app fails the run before anything is written.
            for app_id in app_ids:
                calls[app_id] = 0
                for first, last in windows:
                    start, end = day_window(first, timezone)[0], day_window(last, timezone)[1]
                    fetched = appsflyer_raw_data_api.fetch_raw_report(
                        app_id, report.name, start, end, log=context.log, directory=delivered.directory,
                        quota=quotas[app_id],
                    )
                    calls[app_id] += fetched.calls
                    for chunk in fetched.chunks:
                        _sort_chunk(chunk, app_id, timezone, keys, quality_report, day_files, unusable)
        except BaseException:
            delivered.cleanup()
            raise
        delivered_rows: AppDayRows = {}
        for key, files in day_files.items():
            for app_id, f in files:
                delivered_rows[(key, app_id)] = delivered_rows.get((key, app_id), 0) + f.rows
        quality_report.add_row_counts({key: sum(f.rows for _, f in files) for key, files in day_files.items()})
        # What the archive holds now decides whether the delivery may replace it: every archived
        # row must still be in it (compared by row key, per app).
        archived, lost = compare_with_archive(
            archive_db, spec, keys, app_ids[0] if len(app_ids) == 1 else None, day_files,
            {k for _, _, covered, _ in unusable for k in covered})
        reasons = _refusals(keys, unusable, delivered_rows, archived, lost, quality, quality_report,
                            replace=config.replace_archived)
        for key in keys:
            if key in reasons:
                delivered.withhold(key)
            else:
                for app_id, f in day_files[key]:
                    delivered.add(f.path, snake_case_columns(f.header), f.rows, report_date=key,
                                  constants={REQUESTED_APP_ID: app_id})
        rejected = _kept_deliveries(day_files, unusable, archived.rows, reasons)
        written = [key for key in keys if key not in reasons]
        columns = delivered.columns
        missing = [c for c in RAW_COLUMN_NAMES if c not in columns] if written else []
        drift = column_drift_metadata(
            context.log, f"AppsFlyer {report.name} for {', '.join(app_ids)}",
            quality_report.unknown_column_names(), missing
        )
        output = dg.Output(
            delivered,
            metadata={
                "appsflyer/app_ids": dg.MetadataValue.json(list(app_ids)),
                "appsflyer/api_calls": sum(calls.values()),
                "appsflyer/api_calls_by_app": dg.MetadataValue.json(calls),
                "appsflyer/windows": dg.MetadataValue.json(windows),
                "appsflyer/quota": dg.MetadataValue.json(quota_use),
                "appsflyer/rows_served": delivered.row_count,
                "appsflyer/rows_by_app": dg.MetadataValue.json(
                    {app_id: sum(n for (_, a), n in delivered_rows.items() if a == app_id) for app_id in app_ids}),
                "adpipes/refused_partitions": dg.MetadataValue.json(sorted(reasons)),
                **drift,
            },
        )
        # What AppsFlyer served for each day, on that day's materialization (the output's figures
        # are the run's): rows per app, and in all.
        add_partition_metadata(context, {key: {
            "appsflyer/rows_served": dg.MetadataValue.int(sum(delivered_rows.get((key, a), 0) for a in app_ids)),
            "appsflyer/rows_by_app": dg.MetadataValue.json({a: delivered_rows.get((key, a), 0) for a in app_ids}),
        } for key in keys})
        message = _refusal_message(asset, context.op_def.name, reasons, context.run.run_id) if reasons else None
        try:
            # Refused days are withheld from the output and their deliveries kept whole; the
            # other days are archived as delivered.
            yield from publish(context, quality, quality_report, output if written else None,
                               rejected=rejected, written=written, refusal_message=message)
        finally:
            delivered.cleanup()

    return _raw_report


def _sort_chunk(chunk: SpooledChunk, app_id: str, timezone: str, keys: list[str], quality_report: QualityReport,
                day_files: dict[str, list[tuple[str, SpooledChunk]]],
                unusable: list[tuple[str, SpooledChunk, list[str], str]]) -> None:
    """File one answer of ``app_id``: split by day when it is a usable report, else set aside."""
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
        unusable.append((app_id, chunk, covered, problem))
        return
    for key, day_chunk in split_by_day(chunk, timezone):
        day_files[key].append((app_id, day_chunk))
        columns = snake_case_columns(day_chunk.header)
        quality_report.add_unknown_columns(key, [c for c in columns if c not in RAW_COLUMN_NAMES])


def _raw_data_summary(block: pd.DataFrame) -> pd.DataFrame:
    """What raw_data's metadata needs of a block: rows, installs and USD revenue per day and figure."""
    return row_summary(block.assign(is_install=block["event_name"].eq("install").fillna(False).astype("int64")),
                       by=["report_date", *RAW_DATA_FIGURES.values()], sums=["is_install", "event_revenue_usd"])


def build_raw_data_asset(reports: list[RawReport]) -> dg.AssetsDefinition:
    """``appsflyer/raw_data`` over the per-platform assets of ``reports``."""
    sources = {f"{platform}_{report.short}": (platform, report) for report in reports for platform in PLATFORMS}
    schemas = [raw_values_schema(a) for a in dict.fromkeys(r.attribution for r in reports)] or [raw_values_schema()]

    @table_asset(
        RAW_DATA_TABLE,
        ins={
            name: dg.AssetIn(key=RAW_TABLES[(platform, report.short)].asset_key, metadata={LOAD_AS_BATCHES: True})
            for name, (platform, report) in sources.items()
        },
        partitions_def=appsflyer_daily_partitions,
        group_name=UNIFIED_GROUP,
        kinds={"appsflyer", "postgres", "pandas"},
        checks=RAW_DATA_CHECKS,
        check_schemas=[*schemas, raw_data_schema()],
    )
    def raw_data(
        context: dg.AssetExecutionContext,
        appsflyer_raw_data_api: AppsFlyerRawDataApi,
        appsflyer_apps: AppsFlyerApps,
        quality: QualityStore,
        archive_db: PostgresDatabase,
        product_db: PostgresDatabase,
        **batches: PartitionBatches,
    ):
        """Installs, re-engagements, reinstalls, uninstalls and in-app events of every app in one
        typed table: who installed from which media source and campaign (or organically), what
        they did and spent afterwards, when they left. One row per install or event, with
        `attribution` (non_organic, organic, retargeting), `source_report` (the AppsFlyer report),
        `app_id`, timestamps in the app timezone, the purchase receipt id, revenue, the app's own
        customer user id (to join with the app's tables) and normalized flags. This is the table
        product analytics queries; it is also archived. Rows that break an ERROR rule (unreadable
        values, unknown platform, a non-numeric customer user id, ...) are quarantined in the
        archive's quality.quarantine instead; organic rows without media source are valid (their
        media_source is organic, as in AppsFlyer's aggregate reports). The raw reports keep every
        row as delivered.
        """
        # A report taken out of APPSFLYER_RAW_REPORTS stays archived, and so do its rows in the
        # archive's raw_data: rebuilding a day without it would leave the archive with less.
        dropped = stored_apps_not_configured(archive_db, RAW_DATA_TABLE, "source_report", context.partition_keys,
                                             [report.name for report in reports])
        if dropped:
            raise dg.Failure(
                f"appsflyer/raw_data {partitions_label(context.partition_keys)}: the archive's raw_data holds rows "
                f"of {', '.join(dropped)} for these days, which APPSFLYER_RAW_REPORTS no longer lists; "
                "rebuilding them without those reports would drop those rows from the archive, so nothing "
                "was written. Add the reports back to APPSFLYER_RAW_REPORTS, or rebuild only days without them.")
        # A day a raw report was not archived for reads as a day without its rows: building it
        # would write a partial (or empty) day to product and archive, as if nobody had installed
        # or done anything. Within AppsFlyer's lookback the report can still be pulled first.
        # Older days can never get it (a report added to APPSFLYER_RAW_REPORTS later, e.g. the
        # organic reports after an upgrade): they are built from the reports archived for them,
        # and the run says which are missing, but never from none.
        missing = {name: days for name, b in batches.items() if (days := b.missing_days())}
        oldest = raw_lookback_start(appsflyer_raw_data_api.timezone)
        days = [dt.date.fromisoformat(k) for k in context.partition_keys]
        pullable = {name: [d for d in found if d >= oldest] for name, found in missing.items()}
        pullable = {name: found for name, found in pullable.items() if found}
        empty = [d for d in days if all(d in missing.get(name, ()) for name in batches)]
        if pullable or empty:
            listed = "; ".join(f"{batches[name].spec.asset_key.to_user_string()}: {', '.join(d.isoformat() for d in found)}"
                               for name, found in pullable.items())
            raise dg.Failure(
                "appsflyer/raw_data: the archive lacks raw reports for these partitions ("
                + (listed if listed else "")
                + (("; " if listed else "") + "no raw report at all: " + ", ".join(d.isoformat() for d in empty)
                   if empty else "")
                + "). raw_data is built from the archived raw reports only, so nothing was written. "
                "Materialize those raw reports for those partitions first (AppsFlyer serves the last "
                f"{RAW_LOOKBACK_DAYS} days), then appsflyer/raw_data."
            )
        if missing:
            context.log.warning(
                "appsflyer/raw_data: built without raw reports the archive never held for days older than "
                f"AppsFlyer's {RAW_LOOKBACK_DAYS}-day lookback (they can no longer be pulled): "
                + "; ".join(f"{batches[name].spec.asset_key.to_user_string()}: "
                            f"{', '.join(d.isoformat() for d in found)}" for name, found in missing.items())
            )
        # A report with nothing archived for any of the days may not even have a table yet.
        readable = [name for name in sources if len(missing.get(name, ())) < len(days)]
        report = QualityReport(RAW_DATA_CHECKS, context.partition_keys, RAW_DATA_TABLE.row_key)

        def validated(source: RawReport, delivered: pd.DataFrame, typed: pd.DataFrame) -> pd.Series:
            locators = delivered.pop(ROW_LOCATOR)

            def whole(rows: pd.Index) -> pd.DataFrame:
                # A quarantined row is kept as the vendor sent it, every column: read again by
                # where it is stored, while the day's read-back still holds its partition.
                return rows_at(archive_db, locators.iloc[rows].tolist(), timezone=appsflyer_raw_data_api.timezone,
                               expected=delivered.iloc[rows])

            # Each row is checked as delivered (do its values read?) and as typed (do they make
            # sense?); what a row may leave empty depends on its attribution.
            return report.check_rows(
                [(raw_values_schema(source.attribution), delivered), (raw_data_schema(), typed)],
                keys=typed, delivered=whole,
            )

        # Only the raw columns raw_data is made of are read back (50 of the in-app events
        # report's 83; half its bytes): the rest stay in the archive.
        columns = raw_columns_read(r.attribution for r in reports)

        # Rows archived before the requested app id was recorded fall back to AppsFlyer's App ID,
        # then to the platform's app when it has only one.
        single = {p: ids[0] for p in PLATFORMS if len(ids := appsflyer_apps.app_ids(p)) == 1}
        # Each block is validated, spooled as the CSV COPY reads and dropped: memory holds one
        # block whatever the day's size or the range's length; what the metadata needs of it is a
        # summary of a few hundred rows. The spooled rows are loaded into both databases as they
        # come (committed by the IO manager only if the checks let the output be written), so
        # the servers parse while the next block is computed: the days are read one after the
        # other, every report's rows of a day before the next day's.
        databases = {ARCHIVE: archive_db, PRODUCT: product_db}
        spool = SpooledFrames(RAW_DATA_TABLE, context.partition_keys, prefix="adpipes-raw-data-",
                              stream_into=[(name, databases[name]) for name in RAW_DATA_TABLE.write_databases()],
                              log=context.log)
        summaries = []
        try:
            for block in iter_unified_blocks(
                [(sources[name][1], batches[name].of_day(day, columns)) for day in days for name in readable],
                # Raw timestamps are wall times in the timezone the reports were requested in.
                timezone=appsflyer_raw_data_api.timezone,
                app_ids=single,
                row_filter=validated,
            ):
                spool.write(block)
                summaries.append(_raw_data_summary(block))
            spool.finish()
            # No row at all: the summary of an empty block, so every figure reads 0.
            summary = pd.concat(summaries or [_raw_data_summary(empty_raw_data(appsflyer_raw_data_api.timezone))],
                                ignore_index=True)
            metadata = {
                **{label: dg.MetadataValue.json({str(v): int(n) for v, n in row_counts_by(summary, column, "rows").items()})
                   for label, column in RAW_DATA_FIGURES.items()},
                "adpipes/reports_not_archived": dg.MetadataValue.json(
                    {batches[name].spec.asset_key.to_user_string(): [d.isoformat() for d in found]
                     for name, found in missing.items()}),
            }
            # Each day's own counts, overriding the run's on its materialization; installs and USD
            # revenue as numbers for the UI's by-partition plots.
            per_day = frame_partition_metadata(
                summary, context.partition_keys, counts=RAW_DATA_FIGURES,
                plotted={"platform_rows": "platform", "attribution_rows": "attribution"},
                sums={"installs": "is_install", "revenue_usd": "event_revenue_usd"}, rows="rows",
            )
            for figures in per_day.values():
                figures["installs"] = dg.MetadataValue.int(int(figures["installs"].value))
            add_partition_metadata(context, per_day)
            yield from publish(context, quality, report, dg.Output(spool, metadata=metadata))
        finally:
            spool.cleanup()

    return raw_data


def build_raw_assets(report_names: tuple[str, ...] | list[str]) -> list[dg.AssetsDefinition]:
    """The per-platform raw report assets of the reports named (APPSFLYER_RAW_REPORTS), and the
    ``appsflyer/raw_data`` built from them."""
    reports = [RAW_REPORTS[name] for name in report_names]
    return [*(build_raw_report_asset(platform, report) for report in reports for platform in PLATFORMS),
            build_raw_data_asset(reports)]
