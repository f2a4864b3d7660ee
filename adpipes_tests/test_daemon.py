"""Production operation end to end: ``dagster-daemon`` with the shipped config/dagster.yaml on a
dagster-postgres instance storage executes a scheduled tick of ``daily_schedule`` and a prune run
requested by ``product_retention_sensor``, against the sandbox APIs and the test databases. The
scheduled runs are recognised as such in their step processes: they use the raw report calls
kept for them (``APPSFLYER_RESERVED_CALLS``) that a backfill could not.

Slow by nature (a real daemon waits for a real cron tick, and launches every run as its own
process): about two to three minutes.
"""

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from adpipes.appsflyer.daily_report import daily_report
from adpipes.appsflyer.aggregate_api import AppsFlyerAggregateApi
from adpipes.appsflyer.resources import AppsFlyerApps
from adpipes.definitions import defs
from adpipes.lib.retention import PRUNE_JOB, RETENTION_SENSOR
from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID
from adpipes.schedules import SCHEDULE_NAME, TRIGGER_TAG
from adpipes_tests.fixtures.sandbox import prod_cli_env

TZ = "Asia/Seoul"
RAW_REPORTS = ("installs_report", "in_app_events_report")
ROOT = Path(__file__).resolve().parents[1]
INSTANCE_DB = "adpipes_dagster_instance"
DAEMON_START_MARGIN_SECONDS = 45
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def local_day(days_ago: int) -> str:
    return (dt.datetime.now(ZoneInfo(TZ)).date() - dt.timedelta(days=days_ago)).isoformat()


def query(dsn: str, statement: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(statement).fetchall()


def next_tick_time() -> tuple[str, dt.datetime]:
    """A minute far enough ahead for the daemon to load the code location and see the schedule
    before it comes (a schedule first seen after its tick time only ticks the next day)."""
    moment = dt.datetime.now(ZoneInfo(TZ)) + dt.timedelta(seconds=DAEMON_START_MARGIN_SECONDS + 60)
    moment = moment.replace(second=0, microsecond=0)
    return moment.strftime("%H:%M"), moment


@pytest.fixture
def instance_database(product_dsn):
    """An empty database for Dagster's own storage, on the test server; its connection parts."""
    with psycopg.connect(product_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(INSTANCE_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(INSTANCE_DB)))
    parts = psycopg.conninfo.conninfo_to_dict(product_dsn)
    yield {
        "ADPIPES_DAGSTER_PG_HOST": str(parts.get("host", "127.0.0.1")),
        "ADPIPES_DAGSTER_PG_PORT": str(parts.get("port", 5432)),
        "ADPIPES_DAGSTER_PG_USER": str(parts.get("user", "postgres")),
        "ADPIPES_DAGSTER_PG_PASSWORD": str(parts.get("password", "")),
        "ADPIPES_DAGSTER_PG_DB": INSTANCE_DB,
    }
    with psycopg.connect(product_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(INSTANCE_DB)))


def wait_for_runs(instance: dg.DagsterInstance, tags: dict[str, str], count: int, deadline: float,
                  daemon_log: Path) -> list[dg.RunRecord]:
    while time.monotonic() < deadline:
        records = instance.get_run_records(dg.RunsFilter(tags=tags))
        if len(records) >= count and all(r.dagster_run.status in FINISHED for r in records):
            return records
        time.sleep(2)
    records = instance.get_run_records(dg.RunsFilter(tags=tags))
    pytest.fail(f"runs tagged {tags} did not all finish in time: "
                f"{[(r.dagster_run.run_id[:8], r.dagster_run.status.value) for r in records]}\n"
                f"daemon log:\n{daemon_log.read_text()[-4000:]}")


def failure_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.dagster_event.event_specific_data.error.message
            for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)]


def steps_by_pool(instance: dg.DagsterInstance, run_ids: list[str]) -> dict[str, list[tuple[float, float]]]:
    """(start, end) times of every vendor API step of the runs, by pool."""
    pools = {node.key.to_user_string().replace("/", "__"): next(iter(node.pools))
             for node in defs.resolve_asset_graph().asset_nodes if node.pools}
    by_pool: dict[str, list[tuple[float, float]]] = {}
    for run_id in run_ids:
        started: dict[str, float] = {}
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None or event.step_key not in pools:
                continue
            if event.event_type == dg.DagsterEventType.STEP_START:
                started[event.step_key] = entry.timestamp
            elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
                by_pool.setdefault(pools[event.step_key], []).append((started[event.step_key], entry.timestamp))
    return by_pool


def test_the_daemon_executes_a_scheduled_tick_and_a_sensor_requested_prune(
    clean_sandbox, clean_databases, storage_resources, instance_database, tmp_path, monkeypatch
):
    product_dsn, archive_dsn = clean_databases
    old_day = local_day(4)
    # A product partition past a 2-day retention, for the sensor to find at the daemon's start.
    setup = dg.materialize(
        [daily_report],
        partition_key=old_day,
        resources={
            **storage_resources,
            "appsflyer_aggregate_api": AppsFlyerAggregateApi(api_token=clean_sandbox.appsflyer_token,
                                                             timezone=TZ, base_url=clean_sandbox.base_url,
                                                             aggregate_min_interval_seconds=0),
            "appsflyer_apps": AppsFlyerApps(android_app_id=SANDBOX_ANDROID_APP_ID,
                                            ios_app_id=SANDBOX_IOS_APP_ID, currency="KRW"),
        },
    )
    assert setup.success
    old_rows = query(product_dsn, f"SELECT count(*) FROM appsflyer.daily_report WHERE report_date = '{old_day}'")
    assert old_rows[0][0] > 0
    # A plan of 3 raw calls a day per app and report, 2 kept for the scheduled runs, and 1 already
    # spent today by another run: only a scheduled run may still call (a backfill would be refused).
    for app_id in (SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID):
        for report in RAW_REPORTS:
            storage_resources["api_calls"].meter("appsflyer", app_id, report, 3).spend()

    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(ROOT / "config" / "dagster.yaml", dagster_home / "dagster.yaml")
    tick_at, tick_moment = next_tick_time()
    env = {
        **prod_cli_env(clean_sandbox, product_dsn, archive_dsn, str(dagster_home), timezone=TZ),
        **instance_database,
        # Partitions from 4 days ago: the tick requests yesterday, the late-data range and the
        # cohorts 2 and 3 days old (older maturity ages fall before the first partition).
        "ADPIPES_START_DATE": old_day,
        "ADPIPES_PRODUCT_RETENTION_DAYS": "2",
        "ADPIPES_SCHEDULE_TIME": tick_at,
        # The two first-wave raw reports: 4 raw steps (each its own process) keep the test short.
        "APPSFLYER_RAW_REPORTS": ",".join(RAW_REPORTS),
        "APPSFLYER_DAILY_QUOTAS": ",".join(f"{report}=3" for report in RAW_REPORTS),
        "APPSFLYER_RESERVED_CALLS": "2",
    }
    daemon_log = tmp_path / "daemon.log"
    with daemon_log.open("w") as log:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-m", "adpipes.definitions"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        for name, value in {**instance_database, "DAGSTER_HOME": str(dagster_home)}.items():
            monkeypatch.setenv(name, value)
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"

            # 1. The sensor's first tick requests the prune; the run drops the old partition.
            (prune,) = wait_for_runs(instance, {"dagster/sensor_name": RETENTION_SENSOR}, 1,
                                     time.monotonic() + 120, daemon_log)
            assert prune.dagster_run.job_name == PRUNE_JOB
            assert prune.dagster_run.status == dg.DagsterRunStatus.SUCCESS, \
                failure_messages(instance, prune.dagster_run.run_id)
            assert query(product_dsn, f"SELECT count(*) FROM appsflyer.daily_report WHERE report_date = '{old_day}'") \
                == [(0,)]
            # The archive keeps what product dropped.
            assert query(archive_dsn, f"SELECT count(*) FROM appsflyer.daily_report WHERE report_date = '{old_day}'") \
                == old_rows
            observations = instance.fetch_observations(dg.AssetKey(["appsflyer", "daily_report"]), limit=10).records
            pruned = [o.asset_observation for o in observations if o.asset_observation.partition == old_day]
            assert pruned and pruned[0].metadata["adpipes/pruned_from_product"].value is True

            # 2. The scheduled tick: four runs, each tagged with why it ran, all succeeding.
            wait = (tick_moment - dt.datetime.now(ZoneInfo(TZ))).total_seconds()
            runs = wait_for_runs(instance, {"dagster/schedule_name": SCHEDULE_NAME}, 4,
                                 time.monotonic() + max(wait, 0) + 240, daemon_log)
            by_trigger = sorted(r.dagster_run.tags[TRIGGER_TAG] for r in runs)
            assert by_trigger == ["daily", "late-data", "maturity", "maturity"]
            for record in runs:
                assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS, \
                    (record.dagster_run.tags, failure_messages(instance, record.dagster_run.run_id))
            # 3. The pools of the shipped dagster.yaml: one step per vendor API at a time, across
            # the runs of the tick (the daily and maturity runs all pull cohorts and revenue).
            # The runs themselves overlap (max_concurrent_runs 4), so only the pools can have kept
            # their API steps apart.
            spans = sorted((r.start_time, r.end_time) for r in runs)
            assert any(start < end for (_, end), (start, _) in zip(spans, spans[1:])), spans
            by_pool = steps_by_pool(instance, [r.dagster_run.run_id for r in runs])
            assert len(by_pool["appsflyer_cohort_api"]) == 3 and len(by_pool["airbridge_api"]) == 3
            assert len(by_pool["appsflyer_raw_data_api"]) == 4
            for pool, intervals in by_pool.items():
                intervals.sort()
                assert all(end <= next_start for (_, end), (next_start, _) in zip(intervals, intervals[1:])), \
                    (pool, intervals)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)

    yesterday = local_day(1)
    raw = query(product_dsn, f"SELECT count(*) FROM appsflyer.raw_data WHERE report_date = '{yesterday}'")
    assert raw[0][0] > 0
    assert query(product_dsn, "SELECT report_date::text FROM appsflyer.daily_report GROUP BY 1 ORDER BY 1") \
        == [(local_day(3),), (local_day(2),), (yesterday,)]
    # The daily run's raw calls came out of the reserve: 2 of each report's 3 per app, 1 of them
    # spent before the tick.
    assert query(archive_dsn, "SELECT app_id, report, quota_calls FROM quota.api_calls WHERE report IN "
                              "('installs_report', 'in_app_events_report') ORDER BY 1, 2") == [
        (app_id, report, 2) for app_id in sorted((SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID))
        for report in sorted(RAW_REPORTS)]
    # The late-data range was one call per app, counted against the daily aggregate quota.
    assert query(archive_dsn, "SELECT app_id, quota_calls FROM quota.api_calls WHERE report = 'daily_report' "
                              "ORDER BY 1") == [(SANDBOX_ANDROID_APP_ID, 1), (SANDBOX_IOS_APP_ID, 1)]
