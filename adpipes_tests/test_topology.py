"""The production topology under faults, with real processes: a gRPC code server
(``dagster code-server start``), ``dagster-daemon`` and ``dagster-webserver`` as separate processes
on a dagster-postgres instance (the shipped config/dagster.yaml, run monitoring intervals
shortened; the shipped config/workspace.yaml), against the sandbox and the test databases.

- A run whose worker is SIGKILLed mid-step ends FAILURE (the engine names the signal), and the
  vendor pool slot its step held is given back.
- A run whose worker dies together with its code server (the whole process tree SIGKILLed, as in a
  reboot) is failed by run monitoring's max runtime instead of staying STARTED.
- A code server SIGKILLed and started again on the same port (what systemd's Restart=always does)
  serves again: the run it was executing finishes, and the next scheduled tick's runs succeed.

The scheduled tick does not race the wall clock or the tests before it: it is a minute already
past when the processes start, the schedule's state is written stopped before the daemon starts,
and the tick's test turns the schedule on as started a minute before that tick; the daemon then
catches the tick up by its own mechanism (Dagster evaluates the ticks between a schedule's start
and now). Waits poll conditions under generous limits; no test bounds how fast something happens.

Slow by nature (real processes, a real scheduler): about three minutes.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest
import yaml
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteInstigatorOrigin, RemoteRepositoryOrigin
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    ScheduleInstigatorData,
    TickStatus,
)
from psycopg import sql

from adpipes.lib.settings import SANDBOX_AIRBRIDGE_APP_NAME, VARIABLE_PREFIXES as ADPIPES_PREFIXES
from adpipes.schedules import SCHEDULE_NAME, TRIGGER_TAG, daily_run_requests
from adpipes_tests.fixtures.postgres import drop_user_schemas
from adpipes_tests.fixtures.sandbox import prod_cli_env
from adpipes_tests.fixtures.topology import (
    late_events_margin_far_from_now,
    LOCATION_NAME,
    ROOT,
    SHIPPED_WORKSPACE,
    Service,
    alive,
    code_server_argv,
    daemon_argv,
    free_port,
    process_tree,
    wait_for,
    wait_for_grpc,
    wait_for_http,
    webserver_argv,
    worker_pid,
    write_instance_config,
)

TZ = "Asia/Seoul"
INSTANCE_DB = "adpipes_topology_instance"
# Test intervals; config/dagster.yaml keeps the production ones (checked below).
POLL_INTERVAL_SECONDS = 2
FREE_SLOTS_AFTER_RUN_END_SECONDS = 4
RUN_MONITORING = {"poll_interval_seconds": POLL_INTERVAL_SECONDS,
                  "free_slots_after_run_end_seconds": FREE_SLOTS_AFTER_RUN_END_SECONDS}
# How long a wait may take before it fails the test, naming what did not happen: generous, as
# the machine may be busy; the conditions, not the waits, state the behaviour.
GENEROUS_WAIT_SECONDS = 480
# The raw reports the code location pulls: the two first-wave ones keep the scheduled daily run
# short (4 raw steps instead of 20), as in test_daemon.
RAW_REPORTS = ("installs_report", "in_app_events_report")
REVENUE = dg.AssetKey(["airbridge", "revenue"])
REVENUE_STEP = "airbridge__revenue"
REVENUE_POOL = "airbridge_api"
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def local_day(days_ago: int) -> str:
    return (dt.datetime.now(ZoneInfo(TZ)).date() - dt.timedelta(days=days_ago)).isoformat()


class Topology:
    def __init__(self, root: Path, sandbox, product_dsn: str, archive_dsn: str, instance_env: dict[str, str]):
        self.root = root
        self.sandbox = sandbox
        self.instance: dg.DagsterInstance | None = None
        self.dagster_home = root / "dagster_home"
        self.config = write_instance_config(self.dagster_home, RUN_MONITORING)
        self.grpc_host, self.grpc_port = "127.0.0.1", free_port()
        self.webserver_port = free_port()
        self.tick_moment = self._tick_moment()
        # The day before the tick's (today's, but just after midnight).
        self.yesterday = (self.tick_moment.date() - dt.timedelta(days=1)).isoformat()
        self.env = {
            **prod_cli_env(sandbox, product_dsn, archive_dsn, str(self.dagster_home), timezone=TZ),
            **instance_env,
            # The tick requests yesterday's daily run and the late-data run of daily_report.
            "ADPIPES_START_DATE": self.yesterday,
            "ADPIPES_SCHEDULE_TIME": self.tick_moment.strftime("%H:%M"),
            "APPSFLYER_RAW_REPORTS": ",".join(RAW_REPORTS),
            # late_events_schedule's tick (02:00 UTC plus the margin) hours away from the test.
            "APPSFLYER_LATE_EVENTS_MARGIN_MINUTES": late_events_margin_far_from_now(),
            "DAGSTER_CODE_SERVER_HOST": self.grpc_host,
            "DAGSTER_CODE_SERVER_PORT": str(self.grpc_port),
        }
        # As deploy/systemd: the daemon and the webserver get dagster.env only (the instance, the code
        # server's address), never the vendor tokens and DSNs of adpipes.env.
        self.dagster_env = {name: value for name, value in self.env.items()
                            if not name.startswith(ADPIPES_PREFIXES) or name.startswith("ADPIPES_DAGSTER_PG_")}
        self.code_server = Service("code server", code_server_argv(), self.env, root / "code_server.log")
        self.daemon = Service("daemon", daemon_argv(), self.dagster_env, root / "daemon.log")
        self.webserver = Service("webserver", webserver_argv(self.webserver_port), self.dagster_env,
                                 root / "webserver.log")
        self.services = [self.code_server, self.daemon, self.webserver]

    @staticmethod
    def _tick_moment() -> dt.datetime:
        """The daily tick: a whole minute two minutes ago; the schedule is turned on later as
        started before it (see turn_on_schedule_before_its_tick)."""
        moment = dt.datetime.now(ZoneInfo(TZ)) - dt.timedelta(minutes=2)
        return moment.replace(second=0, microsecond=0)

    @property
    def schedule_cron(self) -> str:
        return f"{self.tick_moment.minute} {self.tick_moment.hour} * * *"

    def write_stopped_schedule_state(self, instance: dg.DagsterInstance) -> None:
        """daily_schedule's state before the daemon starts: stopped (as `dagster schedule stop`
        leaves it), last looked at now (so the daemon does not write it again within the hour). The
        scheduler finds it by its selector: the code location, repository and schedule names."""
        location = GrpcServerCodeLocationOrigin(host=self.grpc_host, port=self.grpc_port, location_name=LOCATION_NAME)
        origin = RemoteInstigatorOrigin(RemoteRepositoryOrigin(location, "__repository__"), SCHEDULE_NAME)
        instance.add_instigator_state(InstigatorState(
            origin, InstigatorType.SCHEDULE, InstigatorStatus.STOPPED,
            ScheduleInstigatorData(self.schedule_cron, start_timestamp=None, last_iteration_timestamp=time.time())))

    def schedule_state(self) -> InstigatorState:
        (state,) = [s for s in self.instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
                    if s.instigator_name == SCHEDULE_NAME]
        return state

    def turn_on_schedule_before_its_tick(self) -> InstigatorState:
        """The schedule on, as started a minute before its tick, which has passed: the scheduler
        evaluates the tick it is due."""
        state = self.schedule_state()
        assert state.status == InstigatorStatus.STOPPED
        self.instance.update_instigator_state(state.with_status(InstigatorStatus.RUNNING).with_data(
            ScheduleInstigatorData(self.schedule_cron, start_timestamp=self.tick_moment.timestamp() - 60,
                                   last_iteration_timestamp=None)))
        return state

    def diagnostics(self) -> str:
        runs = []
        for run in self.instance.get_runs(limit=20) if self.instance is not None else []:
            events = [e.message for e in self.instance.all_logs(run.run_id) if e.dagster_event][-4:]
            runs.append(f"{run.run_id[:8]} {run.status.value} {dict(run.tags)}: {events}")
        return "\n".join(["--- runs ---", *runs, *(service.log_tail() for service in self.services)])

    def start(self) -> None:
        self.code_server.start()
        self.wait_for_code_server()
        self.daemon.start()
        self.webserver.start()
        wait_for_http(f"http://127.0.0.1:{self.webserver_port}/server_info", 120, self.diagnostics)

    def wait_for_code_server(self) -> None:
        wait_for_grpc(self.grpc_host, self.grpc_port, 120, self.diagnostics)

    def restart_code_server(self) -> None:
        """What Restart=always does: the same command, the same environment, the same port; then
        waits for the webserver to have the code location loaded again from it (a run submitted
        through the webserver before that is refused)."""
        self.code_server.start()
        self.wait_for_code_server()
        wait_for(self.webserver_has_the_location, GENEROUS_WAIT_SECONDS,
                 "the webserver reloading the code location", diagnostics=self.diagnostics)

    def webserver_has_the_location(self) -> bool:
        import requests

        query = ("{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus "
                 "locationOrLoadError { __typename } } } } }")
        answer = requests.post(f"http://127.0.0.1:{self.webserver_port}/graphql", json={"query": query}, timeout=30)
        entries = (answer.json().get("data") or {}).get("workspaceOrError", {}).get("locationEntries") or []
        return any(e["name"] == LOCATION_NAME and e["loadStatus"] == "LOADED"
                   and (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation" for e in entries)

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()

    def submit(self, asset_key: dg.AssetKey, partition: str, tags: dict[str, str] | None = None) -> str:
        """Launch a run the way the UI does: through the webserver's GraphQL API."""
        from dagster_graphql import DagsterGraphQLClient

        client = DagsterGraphQLClient("127.0.0.1", port_number=self.webserver_port)
        return client.submit_job_execution(
            "__ASSET_JOB", repository_location_name=LOCATION_NAME, repository_name="__repository__",
            asset_selection=[asset_key], tags={"dagster/partition": partition, **(tags or {})},
        )


@pytest.fixture(scope="module")
def topology(sandbox, product_dsn, archive_dsn, tmp_path_factory):
    for dsn in (product_dsn, archive_dsn):
        drop_user_schemas(dsn)
    sandbox.reset()
    with psycopg.connect(product_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(INSTANCE_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(INSTANCE_DB)))
    parts = psycopg.conninfo.conninfo_to_dict(product_dsn)
    instance_env = {
        "ADPIPES_DAGSTER_PG_HOST": str(parts.get("host", "127.0.0.1")),
        "ADPIPES_DAGSTER_PG_PORT": str(parts.get("port", 5432)),
        "ADPIPES_DAGSTER_PG_USER": str(parts.get("user", "postgres")),
        "ADPIPES_DAGSTER_PG_PASSWORD": str(parts.get("password", "")),
        "ADPIPES_DAGSTER_PG_DB": INSTANCE_DB,
    }
    top = Topology(tmp_path_factory.mktemp("topology"), sandbox, product_dsn, archive_dsn, instance_env)
    mp = pytest.MonkeyPatch()
    for name, value in {**instance_env, "DAGSTER_HOME": str(top.dagster_home)}.items():
        mp.setenv(name, value)
    started = time.monotonic()
    try:
        with dg.DagsterInstance.from_config(str(top.dagster_home)) as instance:
            top.instance = instance
            top.write_stopped_schedule_state(instance)
            top.start()
            print(f"topology up in {time.monotonic() - started:.1f} s")
            yield top
    finally:
        top.stop()
        mp.undo()
        with psycopg.connect(product_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(INSTANCE_DB)))


def run_status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def step_started(instance: dg.DagsterInstance, run_id: str, step_key: str) -> bool:
    return any(e.dagster_event.step_key == step_key
               for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START))


def engine_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.dagster_event.message or "" for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)]


def vendor_served_the_fault(topology) -> None:
    """Wait until the step has asked the vendor and met the fault the test planted. Killed before
    that (a step starts in half a second since the step server preloads what it needs), the fault
    would stay planted for the next test's run: a stuck task there, its run never finishing and
    its pool slot never freed."""
    wait_for(lambda: not topology.sandbox.pending_faults(), 90, "the step meeting the planted vendor fault",
             diagnostics=topology.diagnostics)


def test_a_killed_run_worker_fails_its_run_and_frees_its_pool_slot(topology):
    instance = topology.instance
    # The revenue task never leaves RUNNING: the step polls it, mid-run, until the worker dies.
    topology.sandbox.add_faults(kind="task_stuck", app_id=SANDBOX_AIRBRIDGE_APP_NAME, report="revenue")
    run_id = topology.submit(REVENUE, topology.yesterday)
    pid = wait_for(lambda: worker_pid(instance, run_id), 90, "the run worker reporting its pid",
                   diagnostics=topology.diagnostics)
    wait_for(lambda: step_started(instance, run_id, REVENUE_STEP), 90, "the revenue step starting",
             diagnostics=topology.diagnostics)
    vendor_served_the_fault(topology)
    # The worker is a child of the code server (the default run launcher), not of the daemon.
    assert pid in process_tree(topology.code_server.pid)
    orphans = [p for p in process_tree(pid) if p != pid]
    assert run_status(instance, run_id) == dg.DagsterRunStatus.STARTED
    assert instance.event_log_storage.get_concurrency_info(REVENUE_POOL).claimed_slots

    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: run_status(instance, run_id) in FINISHED, GENEROUS_WAIT_SECONDS,
             "the run of the killed worker finishing", diagnostics=topology.diagnostics)
    took = time.monotonic() - killed_at
    assert run_status(instance, run_id) == dg.DagsterRunStatus.FAILURE
    assert any("was terminated by signal 9 (SIGKILL)" in m for m in engine_messages(instance, run_id))
    # Its step process outlives it (it is the worker's child, not the code server's): the step
    # still holds its partition's advisory lock and polls the vendor until it gives up. The pool
    # slot goes back all the same (free_slots_after_run_end_seconds).
    still_running = [p for p in orphans if alive(p)]
    assert still_running
    wait_for(lambda: not instance.event_log_storage.get_concurrency_info(REVENUE_POOL).claimed_slots,
             GENEROUS_WAIT_SECONDS, "the airbridge_api slot of the failed run freed",
             diagnostics=topology.diagnostics)
    print(f"killed worker's run FAILURE after {took:.1f} s, its pool slot freed after "
          f"{time.monotonic() - killed_at:.1f} s")
    for orphan in still_running:  # what an operator does (docs/operations.md), to free the lock
        os.kill(orphan, signal.SIGKILL)

MAX_RUNTIME_SECONDS = 15


def test_a_run_whose_worker_died_with_its_code_server_is_failed_by_run_monitoring(topology):
    instance = topology.instance
    topology.sandbox.add_faults(kind="task_stuck", app_id=SANDBOX_AIRBRIDGE_APP_NAME, report="revenue")
    # The run tag stands in for the shipped max_runtime_seconds (6 h): the same check, shorter.
    run_id = topology.submit(REVENUE, topology.yesterday, tags={"dagster/max_runtime": str(MAX_RUNTIME_SECONDS)})
    pid = wait_for(lambda: worker_pid(instance, run_id), 90, "the run worker reporting its pid",
                   diagnostics=topology.diagnostics)
    wait_for(lambda: step_started(instance, run_id, REVENUE_STEP), 90, "the revenue step starting",
             diagnostics=topology.diagnostics)
    vendor_served_the_fault(topology)
    # A reboot, or a process manager killing the code server's whole process group: the worker goes
    # with it, and nobody is left to report the run.
    killed = topology.code_server.kill_tree()
    assert pid in killed
    wait_for(lambda: not any(alive(p) for p in killed), GENEROUS_WAIT_SECONDS, "the killed processes gone")
    topology.restart_code_server()

    # Nothing else fails the run: the failure below is run monitoring's max runtime, by its message
    # (no check that the run is still STARTED a few seconds after the restart, which a slow restart
    # on a busy machine turns into a race with the 15 s).
    record = instance.get_run_record_by_id(run_id)
    wait_for(lambda: run_status(instance, run_id) in FINISHED, GENEROUS_WAIT_SECONDS,
             "run monitoring failing the orphaned run", diagnostics=topology.diagnostics)
    record = instance.get_run_record_by_id(run_id)
    assert record.dagster_run.status == dg.DagsterRunStatus.FAILURE
    # Failed by run monitoring's max runtime, not earlier by anything else.
    assert record.end_time - record.start_time >= MAX_RUNTIME_SECONDS
    messages = [e.message or "" for e in instance.all_logs(run_id) if e.dagster_event is not None]
    print(f"orphaned run FAILURE {record.end_time - record.start_time:.1f} s after it started")
    assert any(f"maximum runtime of {MAX_RUNTIME_SECONDS} seconds" in m for m in messages), messages
    wait_for(lambda: not instance.event_log_storage.get_concurrency_info(REVENUE_POOL).claimed_slots,
             GENEROUS_WAIT_SECONDS, "the airbridge_api slot of the failed run freed",
             diagnostics=topology.diagnostics)


@pytest.mark.timeout(900)  # a restarted code server, then the tick's runs: the slowest test here
def test_a_killed_code_server_comes_back_and_the_next_scheduled_tick_succeeds(topology):
    instance = topology.instance
    # A run in flight when the code server dies: the Airbridge task answers after 8 s.
    topology.sandbox.add_faults(kind="slow", seconds=8, app_id=SANDBOX_AIRBRIDGE_APP_NAME, report="revenue")
    run_id = topology.submit(REVENUE, topology.yesterday)
    pid = wait_for(lambda: worker_pid(instance, run_id), 90, "the run worker reporting its pid",
                   diagnostics=topology.diagnostics)
    wait_for(lambda: step_started(instance, run_id, REVENUE_STEP), 90, "the revenue step starting",
             diagnostics=topology.diagnostics)
    vendor_served_the_fault(topology)
    old_main = topology.code_server.pid
    old_tree = process_tree(old_main)
    assert pid in old_tree
    # The tick is not due yet: the schedule is still stopped, so nothing of it ran.
    assert topology.schedule_state().status == InstigatorStatus.STOPPED
    assert instance.get_runs(dg.RunsFilter(tags={"dagster/schedule_name": SCHEDULE_NAME})) == []

    topology.code_server.kill_main()   # systemd's KillMode=process: the main process only
    assert not alive(old_main) and alive(pid)
    topology.restart_code_server()     # Restart=always: same command, same port
    assert topology.code_server.pid != old_main

    # The run the killed code server was executing is not lost: its worker finishes it.
    wait_for(lambda: run_status(instance, run_id) in FINISHED, 120, "the in-flight run finishing",
             diagnostics=topology.diagnostics)
    assert run_status(instance, run_id) == dg.DagsterRunStatus.SUCCESS, [(e.dagster_event.event_type_value, e.message, e.dagster_event.event_specific_data) for e in instance.all_logs(run_id) if e.dagster_event]
    leftovers = [p for p in old_tree if alive(p)]

    # The next scheduled tick: the daemon reaches the restarted code server, which runs the runs.
    tags = {"dagster/schedule_name": SCHEDULE_NAME}
    state = topology.turn_on_schedule_before_its_tick()
    daily = wait_for(lambda: next((r for r in instance.get_runs(dg.RunsFilter(tags={**tags, TRIGGER_TAG: "daily"}))), None),
                     GENEROUS_WAIT_SECONDS, "the scheduled tick's daily run", diagnostics=topology.diagnostics)
    daily_worker = wait_for(lambda: worker_pid(instance, daily.run_id), 90, "the daily run's worker",
                            diagnostics=topology.diagnostics)
    assert daily_worker in process_tree(topology.code_server.pid)
    # What the tick requests (a daily and a late-data run; a maturity run too if the tick falls on
    # the next day in the app's timezone).
    expected = sorted(r.tags[TRIGGER_TAG] for r in daily_run_requests(
        topology.tick_moment.date(), dt.date.fromisoformat(topology.yesterday), []))
    assert {"daily", "late-data"} <= set(expected)

    def all_finished():
        runs = instance.get_runs(dg.RunsFilter(tags=tags))
        return runs if len(runs) == len(expected) and all(r.status in FINISHED for r in runs) else None

    runs = wait_for(all_finished, GENEROUS_WAIT_SECONDS, "the tick's runs finishing", diagnostics=topology.diagnostics)
    # One tick, at the tick's time, evaluated by the daemon through the restarted code server.
    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
    assert [(t.timestamp, t.status) for t in ticks] == [(topology.tick_moment.timestamp(), TickStatus.SUCCESS)]
    assert sorted(r.tags[TRIGGER_TAG] for r in runs) == expected
    for run in runs:
        assert run.status == dg.DagsterRunStatus.SUCCESS, (run.tags, engine_messages(instance, run.run_id))
    # KillMode=process leaves the killed server's child behind: it exits by itself once its runs are
    # done and nobody sends it heartbeats any more.
    wait_for(lambda: not any(alive(p) for p in leftovers), 120, "the killed code server's leftovers exiting",
             diagnostics=topology.diagnostics)


# -- Deployment files: what cannot run here (no cluster, no Docker daemon, no systemd as PID 1) is
# -- checked for syntax and structure, and against what the tests above run.

DEPLOY = ROOT / "deploy"
SECRET_VARIABLES = ("APPSFLYER_API_TOKEN", "AIRBRIDGE_API_TOKEN", "ADPIPES_PRODUCT_DSN", "ADPIPES_ARCHIVE_DSN",
                    "ADPIPES_DAGSTER_PG_PASSWORD")
PG_ENV = {"ADPIPES_DAGSTER_PG_HOST": "db", "ADPIPES_DAGSTER_PG_PORT": "5432", "ADPIPES_DAGSTER_PG_USER": "dagster",
          "ADPIPES_DAGSTER_PG_PASSWORD": "", "ADPIPES_DAGSTER_PG_DB": "dagster"}


def test_the_shipped_instance_config_validates_and_keeps_production_intervals(monkeypatch, tmp_path):
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import dagster_instance_config

    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    config, _ = dagster_instance_config(str(ROOT / "config"), "dagster.yaml")
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] is True
    # Production values, not the tests' (the topology tests shorten them in their own copy).
    assert monitoring["poll_interval_seconds"] >= 30
    assert monitoring["max_runtime_seconds"] >= 3600
    assert 60 <= monitoring["free_slots_after_run_end_seconds"] <= 3600
    assert monitoring["start_timeout_seconds"] >= 60
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}
    # `dagster dev` (scripts/dev) keeps working with its own file: same pools, local storage.
    dev, _ = dagster_instance_config(str(ROOT / "config"), "dagster.dev.yaml")
    assert dev["concurrency"]["pools"] == config["concurrency"]["pools"]
    assert "storage" not in dev
    # The validation used above does reject a misspelled key.
    broken = yaml.safe_load((ROOT / "config" / "dagster.yaml").read_text())
    broken["run_monitoring"]["max_runtime_second"] = 1
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(DagsterInvalidConfigError):
        dagster_instance_config(str(tmp_path), "dagster.yaml")


def test_the_shipped_workspace_points_at_the_code_server_from_the_environment(monkeypatch):
    from dagster._core.workspace.config_schema import ensure_workspace_config

    monkeypatch.setenv("DAGSTER_CODE_SERVER_HOST", "10.1.2.3")
    monkeypatch.setenv("DAGSTER_CODE_SERVER_PORT", "4266")
    workspace = ensure_workspace_config(yaml.safe_load(SHIPPED_WORKSPACE.read_text()), str(SHIPPED_WORKSPACE))
    assert workspace["load_from"] == [{"grpc_server": {"host": "10.1.2.3", "port": 4266, "location_name": LOCATION_NAME}}]


# -- systemd

def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit file as {section: [(key, value), ...]} (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert current is not None and sep and key.strip().isidentifier(), f"{path.name}:{number}: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def unit_values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [value for name, value in unit.get(section, []) if name == key]


UNIT_KEYS = {
    "Unit": {"Description", "Documentation", "After", "Wants", "Requires", "AssertPathExists"},
    "Service": {"Type", "User", "Group", "WorkingDirectory", "EnvironmentFile", "Environment", "ExecStart",
                "Restart", "RestartSec", "KillMode", "TimeoutStopSec", "NoNewPrivileges", "PrivateTmp",
                "StateDirectory"},
    "Install": {"WantedBy"},
}


@pytest.mark.parametrize("name, argv", [
    ("adpipes-code-server.service", code_server_argv()),
    ("adpipes-daemon.service", daemon_argv()),
    ("adpipes-webserver.service", webserver_argv(3000)),
])
def test_systemd_units_restart_always_and_run_what_the_topology_tests_run(name, argv):
    unit = parse_unit(DEPLOY / "systemd" / name)
    assert set(unit) == set(UNIT_KEYS)
    for section, keys in UNIT_KEYS.items():
        assert {key for key, _ in unit[section]} <= keys, (section, unit[section])
    assert unit_values(unit, "Service", "Restart") == ["always"]
    assert unit_values(unit, "Service", "User") not in ([], ["root"])
    assert unit_values(unit, "Install", "WantedBy") == ["multi-user.target"]
    assert unit_values(unit, "Unit", "AssertPathExists") == ["/var/lib/adpipes/dagster_home/dagster.yaml"]
    # The same program and arguments as the tests start (paths aside).
    (exec_start,) = unit_values(unit, "Service", "ExecStart")
    command = exec_start.split()
    assert Path(command[0]).name == Path(argv[0]).name
    expected = [Path(a).name if a.endswith("workspace.yaml") else a for a in argv[1:]]
    actual = [Path(a).name if a.endswith("workspace.yaml") else a for a in command[1:]]
    if name == "adpipes-webserver.service":
        assert actual == ["-w", "workspace.yaml", "-h", "127.0.0.1", "-p", "3000"]
    else:
        assert actual == expected
    env_files = unit_values(unit, "Service", "EnvironmentFile")
    if name == "adpipes-code-server.service":
        # Runs are children of the code server: a restart kills the main process only.
        assert unit_values(unit, "Service", "KillMode") == ["process"]
        assert env_files == ["/etc/adpipes/dagster.env", "/etc/adpipes/adpipes.env"]
    else:
        # The daemon and the webserver never get the vendor tokens and DSNs (nor did they above).
        assert env_files == ["/etc/adpipes/dagster.env"]


def test_systemd_units_pass_systemd_analyze_verify_where_it_exists():
    import shutil
    import subprocess

    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (the structure test above still ran)")
    units = sorted(str(p) for p in (DEPLOY / "systemd").glob("*.service"))
    assert len(units) == 3
    result = subprocess.run([tool, "verify", *units], capture_output=True, text=True, timeout=60)
    # Executables under /opt/adpipes exist only on a machine set up as docs/operations.md says.
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and "is not executable: No such file or directory" not in line]
    assert problems == []


def parse_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep and name.isidentifier(), line
            values[name] = value
    return values


def test_systemd_environment_examples_name_real_settings_and_hold_no_secret():
    from adpipes.lib.settings import KNOWN_VARIABLES

    dagster_env = parse_env_file(DEPLOY / "systemd" / "dagster.env.example")
    adpipes_env = parse_env_file(DEPLOY / "systemd" / "adpipes.env.example")
    assert set(PG_ENV) | {"DAGSTER_HOME", "DAGSTER_CODE_SERVER_HOST", "DAGSTER_CODE_SERVER_PORT"} == set(dagster_env)
    assert set(adpipes_env) <= KNOWN_VARIABLES
    assert {"APPSFLYER_API_TOKEN", "AIRBRIDGE_API_TOKEN", "ADPIPES_PRODUCT_DSN", "ADPIPES_ARCHIVE_DSN"} <= set(adpipes_env)
    for name in SECRET_VARIABLES:
        assert {**dagster_env, **adpipes_env}.get(name, "") == "", name
    # The workspace file and `dagster code-server start` read the same two variables.
    assert "DAGSTER_CODE_SERVER_HOST" in SHIPPED_WORKSPACE.read_text()


# -- Dockerfile

DOCKERFILE_INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
                           "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments and parser directives dropped, continuation lines
    joined; a line that is no instruction fails."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        word, _, rest = pending.partition(" ")
        if word.upper() not in DOCKERFILE_INSTRUCTIONS or word != word.upper():
            raise ValueError(f"line {number}: not a Dockerfile instruction: {pending[:60]!r}")
        instructions.append((word, rest.strip()))
        pending = ""
    if pending:
        raise ValueError("the file ends inside a continued line")
    return instructions


def test_the_dockerfile_parses_installs_the_tested_versions_runs_unprivileged_and_holds_no_secret():
    import json
    import re
    import sys

    text = (DEPLOY / "Dockerfile").read_text()
    instructions = parse_dockerfile(text)
    names = [name for name, _ in instructions]
    assert names[0] == "FROM" and names.count("FROM") == 1
    # The interpreter the tests ran on (constraints.txt was resolved for it).
    assert instructions[0][1].startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}-")
    # Every COPY source exists in the repository (the build context is its root).
    for name, args in instructions:
        if name == "COPY":
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source
    runs = " ".join(args for name, args in instructions if name == "RUN")
    assert re.search(r"pip install -c constraints\.txt -c deploy/constraints-k8s\.txt \. dagster-k8s\b", runs)
    # An unprivileged user, last; no ENTRYPOINT (the chart and the run launcher pass whole commands).
    users = [args for name, args in instructions if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert names.index("USER") > max(i for i, n in enumerate(names) if n == "RUN")
    assert "ENTRYPOINT" not in names
    (cmd,) = [json.loads(args) for name, args in instructions if name == "CMD"]
    assert cmd[:3] == ["dagster", "code-server", "start"] and "adpipes.definitions" in cmd
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    port = values["dagster-user-deployments"]["deployments"][0]["port"]
    assert cmd[cmd.index("-p") + 1] == str(port)
    assert [args for name, args in instructions if name == "EXPOSE"] == [str(port)]
    assert any(name == "ENV" and "/opt/adpipes/.venv/bin" in args for name, args in instructions)
    # No secret: no secret-looking ENV/ARG, no adpipes secret variable named anywhere.
    for name, args in instructions:
        if name in ("ENV", "ARG"):
            assert not re.search(r"TOKEN|PASSWORD|SECRET|DSN|KEY", args, re.IGNORECASE), args
    assert not any(variable in text for variable in SECRET_VARIABLES)
    # The parser does reject what is not a Dockerfile.
    with pytest.raises(ValueError):
        parse_dockerfile("FROM python:3.11-slim\nRUNN echo\n")
    with pytest.raises(ValueError):
        parse_dockerfile("FROM python:3.11-slim\nRUN echo \\\n")


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==")
            found[name.strip().lower().replace("_", "-")] = version.strip()
    return found


def test_the_image_constraints_add_to_constraints_txt_without_overriding_it():
    base = pins(ROOT / "constraints.txt")
    extra = pins(DEPLOY / "constraints-k8s.txt")
    assert "dagster-k8s" in extra
    assert not set(base) & set(extra), set(base) & set(extra)
    # Dagster's integration libraries share one release: dagster-k8s with dagster-postgres.
    assert extra["dagster-k8s"] == base["dagster-postgres"]


# -- Helm values, against the structure of the chart's values (the pydantic models that generate
# -- its values.schema.json, helm/dagster/schema in dagster-io/dagster, Dagster 1.13). The keys
# -- listed are the ones the chart knows for the sections used here.

IMAGE_KEYS = {"repository", "tag", "pullPolicy", "digest"}
CHART_KEYS: dict[str, set[str]] = {
    "": {"global", "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "postgresql",
         "dagsterWebserver", "dagster-user-deployments", "rabbitmq", "redis", "flower", "ingress",
         "imagePullSecrets", "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon",
         "busybox", "migrate", "telemetry", "serviceAccount", "retention", "concurrency",
         "additionalInstanceConfig"},
    "global": {"postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName",
               "dagsterInstanceConfigMap"},
    "postgresql": {"postgresqlScheme", "image", "enabled", "postgresqlHost", "postgresqlUsername",
                   "postgresqlPassword", "postgresqlDatabase", "postgresqlParams", "service"},
    "postgresql.service": {"port"},
    "dagsterWebserver": {"dbStatementTimeout", "dbPoolRecycle", "logLevel", "schedulerName", "volumeMounts",
                         "volumes", "pathPrefix", "replicaCount", "image", "nameOverride", "service", "workspace",
                         "env", "envConfigMaps", "envSecrets", "deploymentLabels", "labels", "nodeSelector",
                         "affinity", "tolerations", "podSecurityContext", "securityContext", "resources",
                         "readinessProbe", "livenessProbe", "startupProbe", "annotations", "enableReadOnly"},
    "dagsterWebserver.service": {"type", "port", "annotations"},
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"},
    "deployment": {"name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns",
                   "deploymentNamespace", "port", "replicaCount", "env", "envConfigMaps", "envSecrets",
                   "annotations", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
                   "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe", "labels",
                   "volumeMounts", "volumes", "schedulerName", "initContainers", "sidecarContainers",
                   "deploymentStrategy"},
    "deployment.image": IMAGE_KEYS,
    "deployment.includeConfigInLaunchedRuns": {"enabled"},
    "runLauncher": {"type", "config"},
    "runLauncher.config": {"celeryK8sRunLauncher", "k8sRunLauncher", "customRunLauncher"},
    "runLauncher.config.k8sRunLauncher": {"image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig",
                                          "kubeconfigFile", "envConfigMaps", "envSecrets", "envVars",
                                          "volumeMounts", "volumes", "labels", "failPodOnRunFailure",
                                          "resources", "schedulerName", "securityContext", "runK8sConfig"},
    "dagsterDaemon": {"enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps",
                      "envSecrets", "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations",
                      "podSecurityContext", "securityContext", "resources", "checkDbReadyInitContainer",
                      "livenessProbe", "readinessProbe", "startupProbe", "annotations", "runMonitoring",
                      "runRetries", "sensors", "schedules", "backfills", "schedulerName", "logFormat",
                      "volumeMounts", "volumes", "initContainerResources", "extraContainers",
                      "extraPrependedInitContainers"},
    "dagsterDaemon.runCoordinator": {"enabled", "type", "config"},
    "dagsterDaemon.runCoordinator.config": {"queuedRunCoordinator", "customRunCoordinator"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator": {
        "maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds", "dequeueNumWorkers",
        "dequeueUseThreads", "blockOpConcurrencyLimitedRuns"},
    # A free-form mapping in the schema: these are the keys the chart's instance template renders.
    "dagsterDaemon.runMonitoring": {"enabled", "startTimeoutSeconds", "cancelTimeoutSeconds", "maxRuntimeSeconds",
                                    "pollIntervalSeconds", "maxResumeRunAttempts", "freeSlotsAfterRunEndSeconds"},
    "concurrency": {"enabled", "pools", "runs"},
    "concurrency.pools": {"defaultLimit", "granularity", "opGranularityRunBuffer"},
    "concurrency.runs": {"maxConcurrentRuns", "tagConcurrencyLimits"},
    "retention": {"enabled", "sensor", "schedule", "autoMaterialize"},
    "retention.schedule": {"purgeAfterDays"},
    "retention.sensor": {"purgeAfterDays"},
    "telemetry": {"enabled"},
    "migrate": {"enabled", "extraContainers", "initContainers"},
}
REQUIRED_KEYS = {
    "deployment": {"name", "image", "port"},
    "runLauncher.config.k8sRunLauncher": {"imagePullPolicy", "loadInclusterConfig", "envConfigMaps", "envSecrets",
                                          "envVars", "volumeMounts", "volumes"},
}


def helm_key_problems(values: dict[str, Any]) -> list[str]:
    """Keys the chart does not know, and required keys missing, in the sections of CHART_KEYS."""
    problems = []

    def check(path: str, node: Any) -> None:
        if path not in CHART_KEYS or not isinstance(node, dict):
            return
        for key in node:
            if key not in CHART_KEYS[path]:
                problems.append(f"{path or '<top>'}: unknown key {key!r}")
        for key in REQUIRED_KEYS.get(path, set()) - set(node):
            problems.append(f"{path}: missing {key!r}")
        for key, child in node.items():
            check(f"{path}.{key}" if path else key, child)

    check("", values)
    for deployment in values.get("dagster-user-deployments", {}).get("deployments", []):
        check("deployment", deployment)
    return problems


def test_the_helm_values_use_only_keys_the_chart_knows():
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    assert helm_key_problems(values) == []
    # The checker does catch a misspelled key and a missing required one.
    broken = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    broken["runLauncher"]["config"]["k8sRunLauncher"]["envSecret"] = []
    del broken["dagster-user-deployments"]["deployments"][0]["port"]
    assert sorted(helm_key_problems(broken)) == ["deployment: missing 'port'",
                                                 "runLauncher.config.k8sRunLauncher: unknown key 'envSecret'"]


def test_the_helm_values_deploy_adpipes_as_the_shipped_instance_config_does():
    from adpipes.lib.settings import KNOWN_VARIABLES

    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    instance = yaml.safe_load((ROOT / "config" / "dagster.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"] is True
    args = deployment["codeServerArgs"]
    assert args[args.index("-m") + 1] == "adpipes.definitions"
    assert args[args.index("--location-name") + 1] == LOCATION_NAME
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    # Settings as plain env, every secret from a Kubernetes secret: envFrom secretRef or secretKeyRef.
    env = {entry["name"]: entry for entry in deployment["env"]}
    assert set(env) <= KNOWN_VARIABLES
    for name, entry in env.items():
        assert set(entry) in ({"name", "value"}, {"name", "valueFrom"}), entry
        if name in SECRET_VARIABLES:
            assert set(entry["valueFrom"]["secretKeyRef"]) == {"name", "key"}, entry
    assert env["ADPIPES_ENV"]["value"] == "prod"
    assert deployment["envSecrets"] == [{"name": "adpipes-secrets"}]
    assert values["generatePostgresqlPasswordSecret"] is False and values["global"]["postgresqlSecretName"]
    assert "postgresqlPassword" not in values["postgresql"]
    # dagster-postgres as in config/dagster.yaml (the psycopg2 scheme), the same pools, run limit,
    # run monitoring and tick retention.
    pg = instance["storage"]["postgres"]["postgres_db"]
    assert values["postgresql"]["postgresqlScheme"] == pg["scheme"]
    assert values["concurrency"]["pools"] == {"defaultLimit": instance["concurrency"]["pools"]["default_limit"],
                                              "granularity": instance["concurrency"]["pools"]["granularity"]}
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    # Dagster refuses a run limit in both the run coordinator and `concurrency.runs`.
    assert not values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    camel = {"".join(w.capitalize() if i else w for i, w in enumerate(k.split("_"))): v
             for k, v in instance["run_monitoring"].items()}
    assert {k: monitoring[k] for k in camel} == camel
    assert values["retention"]["schedule"]["purgeAfterDays"] == instance["retention"]["schedule"]["purge_after_days"]
    sensor = values["retention"]["sensor"]["purgeAfterDays"]
    assert {k: sensor[k] for k in instance["retention"]["sensor"]["purge_after_days"]} \
        == instance["retention"]["sensor"]["purge_after_days"]
    # The image runs as the Dockerfile's user.
    assert deployment["podSecurityContext"]["runAsUser"] == 10001
    assert "USER 10001:10001" in (DEPLOY / "Dockerfile").read_text()
