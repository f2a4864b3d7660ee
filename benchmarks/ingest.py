"""Ingest benchmark, end to end as a user runs it: one CLI materialization against ``psql \\copy``.

    .venv/bin/python benchmarks/ingest.py                  # 300,000 in-app events per platform
    .venv/bin/python benchmarks/ingest.py --rows 1000000
    .venv/bin/python benchmarks/ingest.py --sizes          # 300K, 1M and 3M: time, ratio, peak RSS of each
    .venv/bin/python benchmarks/ingest.py --range-days 1,7,31 --rows 100000

What is measured (issue 15), in one process on one private PostgreSQL cluster:

- **adpipes**: ``dagster asset materialize -m adpipes.definitions --select <the four raw reports>,
  appsflyer/raw_data --partition <day>`` (``--partition-range`` for ``--range-days``), with a fresh
  temporary ``DAGSTER_HOME`` (Dagster's default instance, the multiprocess executor), ``ADPIPES_ENV=dev``,
  the product and archive DSNs of the private cluster, and the dev sandbox serving N in-app events
  per platform and day (``APPSFLYER_RAW_REPORTS=installs_report,in_app_events_report``). The same
  partition is materialized once first (warm-up: the vendor side and the tables exist), then the
  second run is timed from the CLI's start to its exit. Its peak RSS is the largest sum of RSS
  over the CLI process and all its descendants (the step workers), sampled every 100 ms; the
  sandbox and PostgreSQL are not in that tree (the benchmark starts them itself).
- **baseline**: ``psql \\copy`` of the same in-app events CSVs (the sandbox's generator, the same
  rows the vendor side serves) three times each: into an archive table shaped like the raw report
  (every column text), into a "unified" table in product and one in archive, in the same run and on
  the same server. No parsing, cleaning or typing: PostgreSQL's own limit.
- **stage breakdown**: from the timed run's event log in its ``DAGSTER_HOME``: CLI start to
  RUN_START (interpreter start, definitions load, run launch), each step's worker start
  (STEP_WORKER_STARTING to STEP_START: a fresh interpreter that reloads the definitions), each
  step's own time (STEP_START to STEP_SUCCESS/FAILURE), and RUN_SUCCESS to the CLI's exit.

Targets (issue 15): ratio <= 1.5 at 300K events per platform and <= 1.3 at 1M; peak RSS <= 600 MB,
flat (within 10%) from 300K to 3M and from a 1-day to a 31-day range. Each prints "target: met" or
"target: MISSED"; the exit status is 0 either way unless a run failed (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TIMEZONE = "Asia/Seoul"
IN_APP_EVENTS = "in_app_events_report"
RAW_REPORTS = "installs_report,in_app_events_report"
SELECTION = ",".join([
    "appsflyer/android_installs", "appsflyer/ios_installs",
    "appsflyer/android_in_app_events", "appsflyer/ios_in_app_events", "appsflyer/raw_data",
])
SIZES = (300_000, 1_000_000, 3_000_000)
TARGET_RATIO = {300_000: 1.5, 1_000_000: 1.3}
TARGET_RSS_MB = 600.0
TARGET_FLATNESS = 0.10  # peak RSS within 10% from 300K to 3M, and from 1 to 31 days
SAMPLE_EVERY_S = 0.1
MB = 1024 * 1024


# --------------------------------------------------------------------------- services


@dataclass
class Services:
    """The private cluster, the sandbox and the environment every CLI run gets."""

    root: Path
    cluster: object
    env: dict[str, str]
    sandbox_url: str
    app_ids: tuple[str, str]
    settings: object = None
    rows_configured: dict[str, int] = field(default_factory=dict)

    def configure_rows(self, rows: int) -> None:
        # The sandbox's control API (loopback only): N in-app events per app and day.
        body = json.dumps({"rows_per_day": {f"{app}|{IN_APP_EVENTS}": rows for app in self.app_ids}}).encode()
        request = urllib.request.Request(self.sandbox_url.rstrip("/") + "/_sandbox/config", data=body,
                                         method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    def stop(self) -> None:
        from adpipes.dev.services import stop_sandbox

        try:
            stop_sandbox(self.settings)
        finally:
            self.cluster.stop()  # type: ignore[attr-defined]
            shutil.rmtree(self.root, ignore_errors=True)


def start_services(start_date: dt.date) -> Services:
    from adpipes.dev.postgres_server import PostgresCluster
    from adpipes.dev.services import ensure_sandbox
    from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID, load_settings

    root = Path(tempfile.mkdtemp(prefix="adpipes-bench-"))
    root.chmod(0o755)  # as root the server runs as an unprivileged user who must enter it
    cluster = PostgresCluster(root / "cluster")
    cluster.ensure_running()
    for name in ("product", "archive"):
        cluster.create_database(name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADPIPES_", "APPSFLYER_", "AIRBRIDGE_", "DAGSTER_"))}
    env.update(
        ADPIPES_ENV="dev",
        ADPIPES_DATA_DIR=str(root / "data"),
        ADPIPES_PRODUCT_DSN=cluster.dsn("product"),
        ADPIPES_ARCHIVE_DSN=cluster.dsn("archive"),
        ADPIPES_TIMEZONE=TIMEZONE,
        ADPIPES_START_DATE=start_date.isoformat(),
        APPSFLYER_RAW_REPORTS=RAW_REPORTS,
        # What is measured is the ingest, not the vendor's quota: a 31-day range of 100K events a
        # day per platform takes 7 calls per app (3.1M rows, halved until each answer fits in
        # maximum_rows), more than the 8 of the usual plan's 12 a day that runs not launched by a
        # schedule may use once the 1- and 7-day runs have spent theirs.
        APPSFLYER_DAILY_QUOTAS="installs_report=1000,in_app_events_report=1000",
        PYTHONPATH=os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    (root / "data").mkdir()
    settings = load_settings(env)
    # Started here, not by the CLI run, so the vendor side stays out of the measured process tree.
    sandbox = ensure_sandbox(settings)
    return Services(root=root, cluster=cluster, env=env, sandbox_url=sandbox.base_url,
                    app_ids=(SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID), settings=settings)


# --------------------------------------------------------------------------- the CLI run


def tree_memory(process) -> tuple[int, int, list[tuple[str, int, int]]]:  # type: ignore[no-untyped-def]
    """(RSS, PSS) summed over ``process`` and its descendants, and each member's (what it runs,
    RSS, PSS). Step workers forked from Dagster's forkserver share its pages (the imported
    libraries): the RSS sum counts those once per process, the PSS sum (Linux: each shared page
    split between its sharers) counts them once."""
    import psutil

    rss = pss = 0
    members_memory: list[tuple[str, int, int]] = []
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0, 0, []
    for member in members:
        try:
            info = member.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
            members_memory.append((_process_label(member), info.rss, getattr(info, "pss", info.rss)))
        except psutil.Error:
            pass  # a worker that just exited
    return rss, pss, members_memory


def _process_label(process) -> str:  # type: ignore[no-untyped-def]
    """What a process of the CLI tree is: the CLI, Dagster's forkserver, or the step it runs."""
    import psutil

    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return "?"
    if "asset materialize" in command:
        return "CLI"
    if "forkserver" in command:
        # Step workers are forks of the forkserver and keep its command line.
        try:
            parent = " ".join(process.parent().cmdline())
        except (psutil.Error, AttributeError):
            parent = ""
        return "step worker (forked)" if "forkserver" in parent else "forkserver"
    return command[-60:]


@dataclass
class CliRun:
    seconds: float
    peak_rss: int
    peak_pss: int
    # Each process's (label, RSS, PSS) at the moment of the peak PSS.
    at_peak: list[tuple[str, int, int]]
    dagster_home: Path
    started_at: float  # wall clock (time.time) of the CLI's start
    ended_at: float


def run_cli(services: Services, partition_args: list[str], label: str) -> CliRun:
    import psutil

    home = services.root / f"dagster_home_{label}"
    home.mkdir()
    # An empty dagster.yaml is Dagster's default instance, minus the warning that it is missing.
    (home / "dagster.yaml").write_text("")
    env = dict(services.env, DAGSTER_HOME=str(home))
    command = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize",
               "-m", "adpipes.definitions", "--select", SELECTION, *partition_args]
    log_path = services.root / f"cli_{label}.log"
    with log_path.open("wb") as log:
        started_at, started = time.time(), time.perf_counter()
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        watched = psutil.Process(process.pid)
        peak = peak_pss = 0
        at_peak: list[tuple[str, int, int]] = []
        while process.poll() is None:
            rss, pss, members = tree_memory(watched)
            if pss > peak_pss:
                at_peak = members
            peak, peak_pss = max(peak, rss), max(peak_pss, pss)
            time.sleep(SAMPLE_EVERY_S)
        seconds = time.perf_counter() - started
    if process.returncode != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise SystemExit(f"the {label} CLI run failed (exit {process.returncode}):\n{tail}")
    return CliRun(seconds, peak, peak_pss, at_peak, home, started_at, started_at + seconds)


def stage_breakdown(run: CliRun) -> list[tuple[str, float]]:
    """Stages of the run from its event log (Dagster's own timestamps)."""
    import dagster as dg

    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(run.dagster_home)
    try:
        with dg.DagsterInstance.get() as instance:
            records = instance.get_run_records(limit=1)
            run_id = records[0].dagster_run.run_id
            entries = instance.all_logs(run_id)
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous
    first: dict[tuple[str | None, str], float] = {}
    for entry in entries:
        if entry.dagster_event is None:
            continue
        first.setdefault((entry.step_key, entry.dagster_event.event_type_value), entry.timestamp)
    stages: list[tuple[str, float]] = []
    # The run's events carry Dagster's historical names (RUN_START's value is "PIPELINE_START").
    run_start = first.get((None, dg.DagsterEventType.RUN_START.value))
    run_end = (first.get((None, dg.DagsterEventType.RUN_SUCCESS.value))
               or first.get((None, dg.DagsterEventType.RUN_FAILURE.value)))
    if run_start is not None:
        stages.append(("CLI start, definitions load, run launch", run_start - run.started_at))
    steps = sorted({key for key, _ in first if key}, key=lambda k: first.get((k, "STEP_START"), 0.0))
    for step in steps:
        starting = first.get((step, "STEP_WORKER_STARTING"))
        start = first.get((step, "STEP_START"))
        end = first.get((step, "STEP_SUCCESS")) or first.get((step, "STEP_FAILURE"))
        if starting is not None and start is not None:
            stages.append((f"{step}: worker process start", start - starting))
        if start is not None and end is not None:
            stages.append((f"{step}: step", end - start))
    if run_end is not None:
        if run_start is not None:
            stages.append(("run (RUN_START to RUN_SUCCESS), steps overlap", run_end - run_start))
        stages.append(("run end to CLI exit", run.ended_at - run_end))
    return stages


# --------------------------------------------------------------------------- baseline


def generate_csv(path: Path, app_id: str, day: dt.date, rows: int) -> None:
    """The in-app events the sandbox serves for ``app_id`` and ``day`` (its own generator)."""
    from adpipes.dev.sandbox.appsflyer import RAW_REPORT_COLUMNS, iter_day_rows

    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(RAW_REPORT_COLUMNS)
        writer.writerows(iter_day_rows(app_id, IN_APP_EVENTS, day, TIMEZONE, rows))
    tmp.replace(path)


def psql_binary() -> str:
    from adpipes.dev.postgres_server import find_postgres_bindir

    found = shutil.which("psql") or str(find_postgres_bindir() / "psql")
    if not Path(found).exists():
        raise SystemExit("psql not found: install the PostgreSQL client (the baseline needs psql \\copy)")
    return found


def run_baseline(services: Services, csvs: list[Path]) -> tuple[float, list[tuple[str, float]]]:
    """``psql \\copy`` of each CSV into archive raw, product unified and archive unified."""
    import psycopg
    from psycopg import sql

    from adpipes.appsflyer.transform import snake_case_columns

    with csvs[0].open(encoding="utf-8") as handle:
        columns = snake_case_columns(next(csv.reader(handle)))
    product, archive = services.env["ADPIPES_PRODUCT_DSN"], services.env["ADPIPES_ARCHIVE_DSN"]
    targets = [("archive raw", archive, "raw"), ("product unified", product, "unified"),
               ("archive unified", archive, "unified")]
    for dsn in (product, archive):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS bench_baseline CASCADE")
            conn.execute("CREATE SCHEMA bench_baseline")
            for table in ("raw", "unified"):
                conn.execute(sql.SQL("CREATE TABLE bench_baseline.{} ({})").format(
                    sql.Identifier(table),
                    sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in columns)))
    psql = psql_binary()
    column_list = ", ".join(f'"{c}"' for c in columns)
    stages: list[tuple[str, float]] = []
    total = 0.0
    for name, dsn, table in targets:
        seconds = 0.0
        for path in csvs:
            command = f"\\copy bench_baseline.{table} ({column_list}) FROM '{path}' WITH (FORMAT csv, HEADER true)"
            started = time.perf_counter()
            done = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", command],
                                  capture_output=True, text=True)
            seconds += time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"psql \\copy into {name} failed: {done.stderr.strip()}")
        stages.append((f"psql \\copy into {name} ({len(csvs)} CSVs)", seconds))
        total += seconds
    return total, stages


def row_counts(services: Services, first: dt.date, last: dt.date) -> dict[str, int]:
    import psycopg

    counts = {}
    for role in ("product", "archive"):
        with psycopg.connect(services.env[f"ADPIPES_{role.upper()}_DSN"]) as conn:
            counts[f"{role} appsflyer.raw_data"] = conn.execute(
                "SELECT count(*) FROM appsflyer.raw_data WHERE report_date BETWEEN %s AND %s", (first, last)
            ).fetchone()[0]
    return counts


# --------------------------------------------------------------------------- one measurement


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def measure(services: Services, rows: int, days: int, last_day: dt.date, data_dir: Path,
            baseline: bool = True) -> dict[str, float]:
    first_day = last_day - dt.timedelta(days=days - 1)
    if days == 1:
        partition_args = ["--partition", last_day.isoformat()]
    else:
        partition_args = ["--partition-range", f"{first_day.isoformat()}...{last_day.isoformat()}"]
    label = f"{rows}x{days}d"
    services.configure_rows(rows)
    print(f"\n== {rows:,} in-app events per platform and day, {days} day(s) ending {last_day} ==", flush=True)
    warm = run_cli(services, partition_args, f"{label}_warmup")
    print(f"warm-up run: {warm.seconds:.1f} s (not counted; the vendor side and tables now exist)", flush=True)
    timed = run_cli(services, partition_args, f"{label}_timed")
    counts = row_counts(services, first_day, last_day)
    result = {"rows": rows, "days": days, "seconds": timed.seconds, "peak_rss_mb": timed.peak_rss / MB,
              "peak_pss_mb": timed.peak_pss / MB}
    print(f"adpipes, CLI end to end:            {timed.seconds:7.1f} s")
    for name, seconds in stage_breakdown(timed):
        print(f"  {name:<58} {seconds:7.2f} s")
    for name, count in counts.items():
        print(f"  rows in {name}: {count:,}")
    print(f"peak RSS of the CLI process tree:   {timed.peak_rss / MB:7.0f} MB "
          f"(warm-up run: {warm.peak_rss / MB:.0f} MB; summed per process, shared pages counted in each)")
    print(f"peak PSS of the CLI process tree:   {timed.peak_pss / MB:7.0f} MB "
          f"(warm-up run: {warm.peak_pss / MB:.0f} MB; shared pages counted once)")
    for label, rss, pss in sorted(timed.at_peak, key=lambda m: -m[2]):
        print(f"  at the peak: {label:<58} RSS {rss / MB:5.0f} MB, PSS {pss / MB:5.0f} MB")
    if baseline:
        csvs = []
        for app_id in services.app_ids:
            for offset in range(days):
                day = first_day + dt.timedelta(days=offset)
                path = data_dir / f"in_app_events_{app_id}_{day}_{rows}.csv"
                if not path.exists():
                    generate_csv(path, app_id, day, rows)
                csvs.append(path)
        csv_rows = sum(sum(1 for _ in p.open(encoding="utf-8")) - 1 for p in csvs)
        base_seconds, base_stages = run_baseline(services, csvs)
        ratio = timed.seconds / base_seconds
        result.update(baseline_seconds=base_seconds, ratio=ratio)
        print(f"baseline, psql \\copy x3:            {base_seconds:7.1f} s   ({csv_rows:,} CSV rows, each copied 3 times)")
        for name, seconds in base_stages:
            print(f"  {name:<58} {seconds:7.2f} s")
        print(f"ratio adpipes / psql \\copy: {ratio:.2f}")
        if days == 1 and rows in TARGET_RATIO:
            print(f"target: ratio <= {TARGET_RATIO[rows]} at {rows:,} events per platform: "
                  f"{verdict(ratio <= TARGET_RATIO[rows])}")
    print(f"target: peak RSS <= {TARGET_RSS_MB:.0f} MB: {verdict(timed.peak_rss / MB <= TARGET_RSS_MB)} "
          f"(PSS {timed.peak_pss / MB:.0f} MB: {verdict(timed.peak_pss / MB <= TARGET_RSS_MB)})", flush=True)
    return result


def flatness(results: list[dict[str, float]], what: str) -> None:
    if len(results) < 2:
        return
    for label, key in (("RSS", "peak_rss_mb"), ("PSS", "peak_pss_mb")):
        low, high = results[0][key], results[-1][key]
        growth = high / low - 1
        print(f"target: peak {label} flat within {TARGET_FLATNESS:.0%} {what} "
              f"({low:.0f} -> {high:.0f} MB, {growth:+.0%}): {verdict(growth <= TARGET_FLATNESS)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000, help="in-app events per platform and day")
    parser.add_argument("--sizes", action="store_true", help="run 300K, 1M and 3M events per platform")
    parser.add_argument("--range-days", default="",
                        help="comma-separated range lengths in days (e.g. 1,7,31), each one CLI run "
                             "with --partition-range, at --rows events per platform and day")
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT / ".adpipes" / "bench",
                        help="where the baseline's CSVs are kept between runs")
    args = parser.parse_args()
    sys.path.insert(0, str(PROJECT_ROOT))
    args.data_dir.mkdir(parents=True, exist_ok=True)
    args.data_dir.chmod(0o755)  # psql reads the CSVs as the caller; the server never does

    # A finished day whose late in-app events the sandbox already serves (it closes a day at
    # 02:00 UTC of the next UTC day), well inside the 90-day window.
    last_day = dt.datetime.now(ZoneInfo(TIMEZONE)).date() - dt.timedelta(days=3)
    ranges = [int(d) for d in args.range_days.split(",") if d.strip()]
    start_date = last_day - dt.timedelta(days=max([1, *ranges]) + 1)
    services = start_services(start_date)
    try:
        if args.sizes:
            results = [measure(services, rows, 1, last_day, args.data_dir) for rows in SIZES]
            print("\n== sizes ==")
            for r in results:
                print(f"{int(r['rows']):>9,} events/platform: {r['seconds']:7.1f} s, ratio {r['ratio']:.2f}, "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB, PSS {r['peak_pss_mb']:.0f} MB")
            flatness(results, "from 300K to 3M events per platform")
        elif ranges:
            results = [measure(services, args.rows, days, last_day, args.data_dir, baseline=(days == 1))
                       for days in ranges]
            print("\n== ranges ==")
            for r in results:
                print(f"{int(r['days']):>3} day(s) of {args.rows:,} events/platform: {r['seconds']:7.1f} s, "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB, PSS {r['peak_pss_mb']:.0f} MB")
            one_day = next((r for r in results if r["days"] == 1), None)
            for r in results:
                if one_day is not None and r["days"] > 1:
                    ok = r["seconds"] <= r["days"] * one_day["seconds"]
                    print(f"target: {int(r['days'])}-day range <= {int(r['days'])} one-day runs "
                          f"({r['seconds']:.0f} s vs {r['days'] * one_day['seconds']:.0f} s): {verdict(ok)}")
            flatness(sorted(results, key=lambda r: r["days"]), "from the shortest to the longest range")
        else:
            measure(services, args.rows, 1, last_day, args.data_dir)
    finally:
        services.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
