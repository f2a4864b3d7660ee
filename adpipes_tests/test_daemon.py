"""Production operation end to end: ``dagster-daemon`` with the shipped config/dagster.yaml on a
dagster-postgres instance storage executes a scheduled tick of ``daily_schedule`` and a prune run
requested by ``product_retention_sensor``, against the sandbox APIs and the test databases. The
scheduled runs are recognised as such in their step processes: they use the raw report calls
kept for them (``APPSFLYER_RESERVED_CALLS``) that a backfill could not.

No race with the wall clock: the daily tick is a minute already past when the daemon starts, and
the daemon catches it up by its own mechanism. The instance holds the schedule's state as
``dagster schedule stop`` leaves it; once the daemon's heartbeats are in and the sensor's prune has
finished, the test turns the schedule on as started a minute before that tick, and the scheduler
evaluates the tick it is due (Dagster evaluates the ticks between a schedule's start and now).
Every wait polls a condition, under one generous overall limit.

Slow by nature (a real daemon, every run its own process): a few minutes.
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
from dagster._core.remote_origin import RemoteInstigatorOrigin, RemoteRepositoryOrigin
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    ScheduleInstigatorData,
    TickStatus,
)
from dagster._core.workspace.load_target import ModuleTarget
from psycopg import sql

from adpipes.appsflyer.daily_report import daily_report
from adpipes.appsflyer.aggregate_api import AppsFlyerAggregateApi
from adpipes.appsflyer.resources import AppsFlyerApps
from adpipes.definitions import defs
from adpipes.lib.retention import PRUNE_JOB, RETENTION_SENSOR
from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID
from adpipes.schedules import SCHEDULE_NAME, TRIGGER_TAG
from adpipes_tests.fixtures.sandbox import prod_cli_env
from adpipes_tests.fixtures.topology import late_events_margin_far_from_now

TZ = "Asia/Seoul"
RAW_REPORTS = ("installs_report", "in_app_events_report")
ROOT = Path(__file__).resolve().parents[1]
INSTANCE_DB = "adpipes_dagster_instance"
# One limit for the whole test's waits, under the test's own time limit: generous (the test takes
# about 5 minutes on a busy 2-core machine), it only names what did not happen when the daemon is
# stuck.
TEST_TIMEOUT_SECONDS = 900
OVERALL_WAIT_SECONDS = 780
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def query(dsn: str, statement: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(statement).fetchall()


def past_tick_time() -> dt.datetime:
    """The daily tick: a whole minute two minutes ago (app timezone)."""
    return (dt.datetime.now(ZoneInfo(TZ)) - dt.timedelta(minutes=2)).replace(second=0, microsecond=0)


class Waiter:
    """Polls conditions until one overall deadline; failing, shows the daemon's log."""

    def __init__(self, daemon_log: Path):
        self.deadline = time.monotonic() + OVERALL_WAIT_SECONDS
        self.daemon_log = daemon_log

    def until(self, condition, what: str, describe=lambda: ""):
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > self.deadline:
                pytest.fail(f"{what} did not happen within the test's {OVERALL_WAIT_SECONDS} s: {describe()}\n"
                            f"daemon log:\n{self.daemon_log.read_text()[-4000:]}")
            time.sleep(2)


def schedule_origin() -> RemoteInstigatorOrigin:
    """The origin of daily_schedule in the code location ``dagster-daemon run -m adpipes.definitions``
    loads from the project root (the scheduler finds a schedule's state by its selector: location,
    repository and name)."""
    location = ModuleTarget(module_name="adpipes.definitions", attribute=None, working_directory=str(ROOT),
                            location_name=None).create_origins()[0]
    return RemoteInstigatorOrigin(RemoteRepositoryOrigin(location, "__repository__"), SCHEDULE_NAME)


def schedule_states(instance: dg.DagsterInstance) -> list[InstigatorState]:
    return [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
            if s.instigator_name == SCHEDULE_NAME]


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


def wait_for_runs(waiter: Waiter, instance: dg.DagsterInstance, tags: dict[str, str],
                  count: int) -> list[dg.RunRecord]:
    def finished():
        records = instance.get_run_records(dg.RunsFilter(tags=tags))
        return records if len(records) >= count and all(r.dagster_run.status in FINISHED for r in records) else None

    def describe():
        return str([(r.dagster_run.run_id[:8], r.dagster_run.status.value)
                    for r in instance.get_run_records(dg.RunsFilter(tags=tags))])

    return waiter.until(finished, f"{count} run(s) tagged {tags} finishing", describe)


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


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
def test_the_daemon_executes_a_scheduled_tick_and_a_sensor_requested_prune(
    clean_sandbox, clean_databases, storage_resources, instance_database, tmp_path, monkeypatch
):
    product_dsn, archive_dsn = clean_databases
    tick_moment = past_tick_time()
    # Days relative to the tick's (app timezone), which is today but just after midnight.
    tick_day = tick_moment.date()

    def day(days_before_tick: int) -> str:
        return (tick_day - dt.timedelta(days=days_before_tick)).isoformat()

    old_day = day(4)
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
    env = {
        **prod_cli_env(clean_sandbox, product_dsn, archive_dsn, str(dagster_home), timezone=TZ),
        **instance_database,
        # Partitions from 4 days before the tick: the tick requests the day before it, the
        # late-data range and the cohorts 2 and 3 days old (older maturity ages fall before the
        # first partition).
        "ADPIPES_START_DATE": old_day,
        "ADPIPES_PRODUCT_RETENTION_DAYS": "2",
        "ADPIPES_SCHEDULE_TIME": tick_moment.strftime("%H:%M"),
        "APPSFLYER_LATE_EVENTS_MARGIN_MINUTES": late_events_margin_far_from_now(),
        # The two first-wave raw reports: 4 raw steps (each its own process) keep the test short.
        "APPSFLYER_RAW_REPORTS": ",".join(RAW_REPORTS),
        "APPSFLYER_DAILY_QUOTAS": ",".join(f"{report}=3" for report in RAW_REPORTS),
        "APPSFLYER_RESERVED_CALLS": "2",
    }
    for name, value in {**instance_database, "DAGSTER_HOME": str(dagster_home)}.items():
        monkeypatch.setenv(name, value)
    cron = f"{tick_moment.minute} {tick_moment.hour} * * *"
    origin = schedule_origin()
    daemon_log = tmp_path / "daemon.log"
    waiter = Waiter(daemon_log)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        # The schedule's state before the daemon starts: stopped (as `dagster schedule stop`
        # leaves it), last looked at now (so the daemon does not write it again within the hour).
        instance.add_instigator_state(InstigatorState(
            origin, InstigatorType.SCHEDULE, InstigatorStatus.STOPPED,
            ScheduleInstigatorData(cron, start_timestamp=None, last_iteration_timestamp=time.time())))

        with daemon_log.open("w") as log:
            daemon = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-m", "adpipes.definitions"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            # 0. The daemon is up: its scheduler and sensor daemons beat.
            waiter.until(lambda: {"SCHEDULER", "SENSOR"} <= set(instance.get_daemon_heartbeats()),
                         "the scheduler's and the sensor daemon's heartbeats",
                         lambda: str(sorted(instance.get_daemon_heartbeats())))

            # 1. The sensor's first tick requests the prune; the run drops the old partition.
            (prune,) = wait_for_runs(waiter, instance, {"dagster/sensor_name": RETENTION_SENSOR}, 1)
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

            # The daemon found the state the test wrote (one state for the schedule, still
            # stopped) and launched nothing for it.
            (state,) = schedule_states(instance)
            assert state.status == InstigatorStatus.STOPPED
            assert instance.get_run_records(dg.RunsFilter(tags={"dagster/schedule_name": SCHEDULE_NAME})) == []

            # 2. The schedule turned on as started a minute before its tick, which has passed:
            # the scheduler evaluates the tick it is due; four runs, each tagged with why it ran.
            instance.update_instigator_state(state.with_status(InstigatorStatus.RUNNING).with_data(
                ScheduleInstigatorData(cron, start_timestamp=tick_moment.timestamp() - 60,
                                       last_iteration_timestamp=None)))
            runs = wait_for_runs(waiter, instance, {"dagster/schedule_name": SCHEDULE_NAME}, 4)
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
            assert [(t.timestamp, t.status) for t in ticks] == [(tick_moment.timestamp(), TickStatus.SUCCESS)]
            assert {r.dagster_run.tags[".dagster/scheduled_execution_time"] for r in runs} == {
                tick_moment.astimezone(dt.timezone.utc).isoformat()}
            by_trigger = sorted(r.dagster_run.tags[TRIGGER_TAG] for r in runs)
            assert by_trigger == ["daily", "late-data", "maturity", "maturity"]
            assert sorted(r.dagster_run.tags.get("dagster/partition", "") for r in runs
                          if r.dagster_run.tags[TRIGGER_TAG] == "maturity") == [day(3), day(2)]
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

    yesterday = day(1)
    raw = query(product_dsn, f"SELECT count(*) FROM appsflyer.raw_data WHERE report_date = '{yesterday}'")
    assert raw[0][0] > 0
    assert query(product_dsn, "SELECT report_date::text FROM appsflyer.daily_report GROUP BY 1 ORDER BY 1") \
        == [(day(3),), (day(2),), (yesterday,)]
    # The daily run's raw calls came out of the reserve: 2 of each report's 3 per app, 1 of them
    # spent before the tick.
    assert query(archive_dsn, "SELECT app_id, report, quota_calls FROM quota.api_calls WHERE report IN "
                              "('installs_report', 'in_app_events_report') ORDER BY 1, 2") == [
        (app_id, report, 2) for app_id in sorted((SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID))
        for report in sorted(RAW_REPORTS)]
    # The late-data range was one call per app, counted against the daily aggregate quota.
    assert query(archive_dsn, "SELECT app_id, quota_calls FROM quota.api_calls WHERE report = 'daily_report' "
                              "ORDER BY 1") == [(SANDBOX_ANDROID_APP_ID, 1), (SANDBOX_IOS_APP_ID, 1)]
