"""``appsflyer/customer_user_map``: which AppsFlyer ids each of the app's users (CUID) has had.

A server sending AppsFlyer server-to-server (S2S) events must name the device in ``appsflyer_id``
(required: AppsFlyer attributes the event through it), but the server knows its own user id, the
customer user id (CUID). AppsFlyer's S2S document says to keep that mapping on your side, built
from the raw data reports, which carry both ids. This table is that mapping: one row per app,
CUID and AppsFlyer id, with when the pair was first and last seen in ``appsflyer/raw_data``.

How it is built, and why this way:

- **From the archive's raw_data**, aggregated in SQL (one row per pair of the partition days),
  not through the IO manager: the archive keeps every day forever, product's days are pruned
  after retention, and a day of raw_data is up to a million rows of which the map needs three
  columns.
- **Upserted, never replaced**: a pair stays needed for as long as the user exists, long after
  the raw_data days it came from are pruned from product, so the table is not partitioned by day
  and no day's run may remove what other days found. Re-running a day changes nothing (first_seen
  is the least, last_seen the greatest time ever seen); a later day extends last_seen. It is
  written into the archive, then product, one transaction each, like every adpipes load.
- **Never pruned**: the retention sensor prunes the day partitions of the tables registered in
  :data:`adpipes.lib.storage.tables.TABLES`; this table has none and is not registered there, and
  it is in :data:`adpipes.lib.retention.NEVER_PRUNED` so a retention override naming it is refused.
"""


import datetime as dt
import tempfile
from typing import IO, Any

import dagster as dg
import pandas as pd
import psycopg
from psycopg import sql

from adpipes.appsflyer.partitions import appsflyer_daily_partitions
from adpipes.appsflyer.schemas import RAW_DATA_KEY, RAW_DATA_TABLE
from adpipes.lib.markdown import markdown_table
from adpipes.lib.quality import WARN, CheckGroup
from adpipes.lib.retention import NEVER_PRUNED
from adpipes.lib.storage.locks import partition_write_lock
from adpipes.lib.storage.postgres import PostgresDatabase, copy_out, missing_partitions, stored_layout_version
from adpipes.lib.storage.tables import ARCHIVE, PRODUCT, WRITE_ORDER

CUSTOMER_USER_MAP_KEY = dg.AssetKey(["appsflyer", "customer_user_map"])
SCHEMA, TABLE = CUSTOMER_USER_MAP_KEY.path
QUALIFIED_NAME = f"{SCHEMA}.{TABLE}"
GROUP = "appsflyer"
KEY_COLUMNS = ("app_id", "customer_user_id", "appsflyer_id")
COLUMNS = (*KEY_COLUMNS, "platform", "first_seen", "last_seen")
# Pairs shown in the check's sample.
SAMPLE_SIZE = 20
# Customer user ids listed per AppsFlyer id in the sample (a test device may have hundreds).
SAMPLE_CUIDS = 10

NEVER_PRUNED[CUSTOMER_USER_MAP_KEY.to_user_string()] = (
    "the customer user map is kept for as long as the users exist: S2S senders look AppsFlyer ids "
    "up in it long after the raw_data days they came from are pruned"
)

ONE_USER_PER_APPSFLYER_ID = CheckGroup(
    "one_user_per_appsflyer_id",
    "Each AppsFlyer id (one app install on one device) belongs to one customer user id. Several "
    "AppsFlyer ids for one customer user id are normal (reinstalls, several devices); one AppsFlyer "
    "id with several customer user ids means several accounts used one install (a shared or test "
    "device, account switching) or the app sets the CUID wrongly (e.g. a placeholder before "
    "login). Warns only: such an id is still right for S2S events of each of its users, but events "
    "reported for it cannot be told apart by user. Counted over the archive's whole table.",
    WARN,
)

COLUMN_DESCRIPTIONS = {
    "app_id": "AppsFlyer app id (package name or id + digits) the pair was reported for.",
    "customer_user_id": "The app's own user id (CUID), as set in the AppsFlyer SDK.",
    "appsflyer_id": "AppsFlyer's id of one install of the app on one device: the appsflyer_id of "
                    "S2S events.",
    "platform": "android or ios.",
    "first_seen": "Earliest event_time of the pair in appsflyer/raw_data (any event: install, "
                  "in-app event, re-engagement, reinstall, uninstall).",
    "last_seen": "Latest event_time of the pair in appsflyer/raw_data (any event, uninstall "
                 "included).",
}
TABLE_COMMENT = (
    "adpipes appsflyer/customer_user_map: one row per app, customer user id (CUID) and AppsFlyer id "
    "seen together in appsflyer/raw_data, for S2S event senders (appsflyer_id is required there). "
    "Upserted from the archive's raw_data day by day, never pruned; see docs/customer-user-map.md."
)
DDL = [
    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)),
    sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} ("
        "app_id text NOT NULL, customer_user_id bigint NOT NULL, appsflyer_id text NOT NULL, "
        "platform text NOT NULL, first_seen timestamptz NOT NULL, last_seen timestamptz NOT NULL, "
        "PRIMARY KEY (app_id, customer_user_id, appsflyer_id))"
    ).format(sql.Identifier(SCHEMA, TABLE)),
    # The primary key serves the S2S lookup (app, CUID); this index the other way round: the
    # check's grouping by AppsFlyer id, and a join from raw_data's events to their users.
    sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (app_id, appsflyer_id, customer_user_id)").format(
        sql.Identifier(f"{TABLE}_appsflyer_id"), sql.Identifier(SCHEMA, TABLE)),
    sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier(SCHEMA, TABLE), sql.Literal(TABLE_COMMENT)),
    *(sql.SQL("COMMENT ON COLUMN {} IS {}").format(sql.Identifier(SCHEMA, TABLE, column), sql.Literal(text))
      for column, text in COLUMN_DESCRIPTIONS.items()),
]

# The S2S sender's lookup, shown in the README and docs/customer-user-map.md.
LOOKUP_SQL = f"""SELECT appsflyer_id, platform, first_seen, last_seen
FROM {QUALIFIED_NAME}
WHERE app_id = %(app_id)s AND customer_user_id = %(customer_user_id)s
ORDER BY last_seen DESC"""
# Every AppsFlyer id with more than one customer user id (the check's full list).
SHARED_IDS_SQL = f"""SELECT app_id, appsflyer_id, count(*) AS customer_user_ids,
       array_agg(customer_user_id ORDER BY last_seen DESC) AS cuids, max(last_seen) AS last_seen
FROM {QUALIFIED_NAME}
GROUP BY app_id, appsflyer_id
HAVING count(*) > 1
ORDER BY customer_user_ids DESC, last_seen DESC"""


def column_schema() -> dg.TableSchema:
    types = {"customer_user_id": "bigint", "first_seen": "timestamptz", "last_seen": "timestamptz"}
    return dg.TableSchema(columns=[
        dg.TableColumn(name=c, type=types.get(c, "text"), description=COLUMN_DESCRIPTIONS[c],
                       constraints=dg.TableColumnConstraints(nullable=False))
        for c in COLUMNS
    ])


def ensure_map_table(conn: psycopg.Connection) -> None:
    """Create the schema, table, index and comments when the table is missing (in the caller's
    transaction)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (QUALIFIED_NAME,))
        if cur.fetchone()[0] is not None:
            return
        # Concurrent first runs (two partitions in parallel) would race on CREATE SCHEMA; the same
        # per-schema lock as every adpipes DDL keeps them apart until the transaction ends.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"adpipes:ddl:{SCHEMA}",))
        for statement in DDL:
            cur.execute(statement)


def _pairs_query(days: list[dt.date]) -> sql.Composed:
    raw = sql.Identifier(RAW_DATA_TABLE.schema_name, RAW_DATA_TABLE.table_name)
    # A literal date list (not a parameter) lets the planner read only the days' partitions.
    return sql.SQL(
        "SELECT app_id, customer_user_id, appsflyer_id, min(platform), min(event_time), max(event_time) "
        "FROM {} WHERE report_date = ANY({}::date[]) AND customer_user_id IS NOT NULL "
        "AND appsflyer_id IS NOT NULL AND event_time IS NOT NULL "
        "GROUP BY app_id, customer_user_id, appsflyer_id"
    ).format(raw, sql.Literal([d.isoformat() for d in days]))


def pairs_per_day(archive: psycopg.Connection, days: list[dt.date]) -> dict[str, int]:
    """The pairs each of ``days`` holds in the archive's raw_data (a pair seen on several days
    counts on each)."""
    raw = sql.Identifier(RAW_DATA_TABLE.schema_name, RAW_DATA_TABLE.table_name)
    rows = archive.execute(sql.SQL(
        "SELECT report_date::text, count(DISTINCT (app_id, customer_user_id, appsflyer_id)) FROM {} "
        "WHERE report_date = ANY({}::date[]) AND customer_user_id IS NOT NULL AND appsflyer_id IS NOT NULL "
        "AND event_time IS NOT NULL GROUP BY 1").format(raw, sql.Literal([d.isoformat() for d in days]))).fetchall()
    archive.rollback()
    return {day: int(n) for day, n in rows}


def read_pairs(archive: psycopg.Connection, days: list[dt.date], spool: IO[bytes]) -> int:
    """COPY the pairs of ``days`` from the archive's raw_data into ``spool`` as CSV; returns the
    number of pairs. Fails naming the days the archive has no raw_data for."""
    missing = missing_partitions(archive, RAW_DATA_TABLE, days)
    if missing:
        listed = ", ".join(d.isoformat() for d in missing)
        raise dg.Failure(
            f"appsflyer/customer_user_map: the archive holds no appsflyer/raw_data for {listed}; "
            "the map is built from the archive's raw_data, so nothing was written. Materialize "
            f"appsflyer/raw_data for {listed} first, then appsflyer/customer_user_map."
        )
    layout = stored_layout_version(archive, RAW_DATA_TABLE)
    archive.rollback()
    if layout is not None and layout < RAW_DATA_TABLE.layout_version:
        raise dg.Failure(
            f"appsflyer/customer_user_map: the archive's appsflyer.raw_data has layout {layout} (without "
            f"app_id); nothing was written. Materialize appsflyer/raw_data for the days wanted first "
            f"(layout {RAW_DATA_TABLE.layout_version} is built from the archived raw reports)."
        )
    rows = 0
    with archive.cursor() as cur:
        # Instants go over the wire with their offset, whatever either server's TimeZone is.
        cur.execute("SET LOCAL TimeZone = 'UTC'")
        copy_out(cur, sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(_pairs_query(days)), spool)
        rows = cur.rowcount
    archive.rollback()
    spool.seek(0)
    return rows


def upsert_pairs(conn: psycopg.Connection, spool: IO[bytes]) -> dict[str, int]:
    """Upsert the spooled pairs into this database's map in one transaction; returns the pairs
    new to it, the pairs whose first or last seen moved, and the table's pairs afterwards."""
    spool.seek(0)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
    target = sql.Identifier(SCHEMA, TABLE)
    try:
        ensure_map_table(conn)
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE TEMP TABLE customer_user_map_load (LIKE {}) ON COMMIT DROP").format(target))
            with cur.copy(sql.SQL("COPY customer_user_map_load ({}) FROM STDIN (FORMAT csv)").format(columns)) as copy:
                while chunk := spool.read(1 << 20):
                    copy.write(chunk)
            # Rows are inserted in key order so that two runs upserting overlapping pairs (two
            # partitions in parallel) take their row locks in the same order and cannot deadlock.
            # The WHERE leaves a pair that would not change untouched (a re-run writes nothing).
            # xmax is 0 on a row version this statement inserted, set on one it updated.
            cur.execute(sql.SQL(
                "WITH changed AS ("
                " INSERT INTO {target} AS m ({columns})"
                " SELECT {columns} FROM customer_user_map_load ORDER BY app_id, customer_user_id, appsflyer_id"
                " ON CONFLICT (app_id, customer_user_id, appsflyer_id) DO UPDATE"
                " SET first_seen = LEAST(m.first_seen, EXCLUDED.first_seen),"
                " last_seen = GREATEST(m.last_seen, EXCLUDED.last_seen)"
                " WHERE EXCLUDED.first_seen < m.first_seen OR EXCLUDED.last_seen > m.last_seen"
                " RETURNING (m.xmax = 0) AS inserted)"
                " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM changed"
            ).format(target=target, columns=columns))
            new, extended = cur.fetchone()
            (total,) = cur.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()
        conn.commit()
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise
    return {"new_pairs": int(new), "extended_pairs": int(extended), "total_pairs": int(total)}


def shared_appsflyer_ids(archive: psycopg.Connection) -> tuple[int, pd.DataFrame]:
    """How many AppsFlyer ids the archive's map gives several customer user ids, and a sample."""
    with archive.cursor() as cur:
        cur.execute("SET LOCAL TimeZone = 'UTC'")
        (count,) = cur.execute(
            sql.SQL("SELECT count(*) FROM ({}) AS shared").format(sql.SQL(SHARED_IDS_SQL))).fetchone()
        cur.execute(sql.SQL("{} LIMIT {}").format(sql.SQL(SHARED_IDS_SQL), sql.Literal(SAMPLE_SIZE)))
        sample = pd.DataFrame(cur.fetchall(), columns=["app_id", "appsflyer_id", "customer_user_ids", "cuids",
                                                       "last_seen"])
    archive.rollback()
    sample["cuids"] = [", ".join(str(c) for c in cuids[:SAMPLE_CUIDS]) + (", ..." if len(cuids) > SAMPLE_CUIDS else "")
                       for cuids in sample["cuids"]]
    sample["last_seen"] = sample["last_seen"].astype(str)
    return int(count), sample


def check_result(archive: psycopg.Connection) -> dg.AssetCheckResult:
    count, sample = shared_appsflyer_ids(archive)
    metadata: dict[str, Any] = {
        "shared_appsflyer_ids": dg.MetadataValue.int(count),
        "adpipes/severity": ONE_USER_PER_APPSFLYER_ID.severity.value,
        "full_list": dg.MetadataValue.md(f"Archive database:\n\n```sql\n{SHARED_IDS_SQL};\n```"),
    }
    if not count:
        # Its own severity on a pass too: Dagster's default (ERROR) would label this WARN check ERROR.
        return dg.AssetCheckResult(
            check_name=ONE_USER_PER_APPSFLYER_ID.name, passed=True, severity=WARN, metadata=metadata,
            description="Every AppsFlyer id belongs to one customer user id.")
    metadata["sample"] = dg.MetadataValue.md(markdown_table(sample))
    return dg.AssetCheckResult(
        check_name=ONE_USER_PER_APPSFLYER_ID.name, passed=False, severity=WARN, metadata=metadata,
        description=f"{count:,} AppsFlyer id(s) belong to more than one customer user id (a shared or "
        "test device, or a CUID set wrongly by the app): see sample, and full_list for the query.",
    )


@dg.asset(
    key=CUSTOMER_USER_MAP_KEY,
    deps=[RAW_DATA_KEY],
    partitions_def=appsflyer_daily_partitions,
    # A range is one run: one aggregate query over its days and one upsert per database.
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP,
    kinds={"appsflyer", "postgres"},
    metadata={
        "dagster/table_name": QUALIFIED_NAME,
        "dagster/column_schema": column_schema(),
        "adpipes/databases": ", ".join(WRITE_ORDER),
        "adpipes/retention": "never pruned (no day partitions)",
    },
    check_specs=[dg.AssetCheckSpec(
        ONE_USER_PER_APPSFLYER_ID.name, asset=CUSTOMER_USER_MAP_KEY,
        description=ONE_USER_PER_APPSFLYER_ID.description, blocking=False,
        metadata={"adpipes/severity": ONE_USER_PER_APPSFLYER_ID.severity.value},
    )],
)
def customer_user_map(context: dg.AssetExecutionContext, archive_db: PostgresDatabase,
                      product_db: PostgresDatabase) -> dg.MaterializeResult:
    """Which AppsFlyer ids each of the app's users has had: one row per app, customer user id
    (CUID) and AppsFlyer id seen together in raw_data (organic users included), with the platform
    and when the pair was first and last seen. A server sending S2S events to AppsFlyer must name
    the device's appsflyer_id; it looks it up here by app and CUID, most recently seen first. One
    CUID with several AppsFlyer ids is normal (reinstalls, several devices). Built from the
    archive's raw_data and upserted into product and archive (re-running a day changes nothing);
    never pruned, since it is needed for as long as the user exists. Rows without a customer user
    id are not in it.
    """
    days = sorted(dt.date.fromisoformat(k) for k in context.partition_keys)
    databases = {ARCHIVE: archive_db, PRODUCT: product_db}
    with partition_write_lock(archive_db, CUSTOMER_USER_MAP_KEY, context.partition_keys, context.run.run_id), \
            tempfile.TemporaryFile() as spool:
        with archive_db.connect() as archive:
            pairs = read_pairs(archive, days, spool)
            per_day = pairs_per_day(archive, days)
        written: dict[str, dict[str, int]] = {}
        # The archive first, as every adpipes load: if product fails, a re-run upserts both again.
        for name in WRITE_ORDER:
            with databases[name].connect() as conn:
                written[name] = upsert_pairs(conn, spool)
        with archive_db.connect() as archive:
            check = check_result(archive)
    # The table has no days (pairs are upserted across them): dagster/row_count is the table's
    # size, the same truth on every partition; each day's own figure is the pairs seen that day.
    for day in days:
        context.add_asset_metadata({"pairs_seen": dg.MetadataValue.int(per_day.get(day.isoformat(), 0))},
                                   partition_key=day.isoformat())
    span = days[0].isoformat() if len(days) == 1 else f"{days[0]}..{days[-1]}"
    context.log.info(
        f"{QUALIFIED_NAME} {span}: {pairs} pair(s) read from the archive's raw_data; "
        + "; ".join(f"{name}: {w['new_pairs']} new, {w['extended_pairs']} extended, {w['total_pairs']} in all"
                    for name, w in written.items())
    )
    return dg.MaterializeResult(
        metadata={
            "pairs_upserted": dg.MetadataValue.int(pairs),
            "new_pairs": dg.MetadataValue.json({name: w["new_pairs"] for name, w in written.items()}),
            "extended_pairs": dg.MetadataValue.json({name: w["extended_pairs"] for name, w in written.items()}),
            "total_pairs": dg.MetadataValue.json({name: w["total_pairs"] for name, w in written.items()}),
            "dagster/row_count": dg.MetadataValue.int(written[ARCHIVE]["total_pairs"]),
            "dagster/table_name": QUALIFIED_NAME,
            "partitions": dg.MetadataValue.json([d.isoformat() for d in days]),
        },
        check_results=[check],
    )
