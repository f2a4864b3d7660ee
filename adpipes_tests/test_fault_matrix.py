"""The fault matrix of issue 12: every fault met so far, driven over real HTTP (the sandbox) into a
real PostgreSQL, each held to the same three properties:

- **nothing lost**: every day the archive and product held before the fault holds the same rows
  after it (per table and day: row count and an md5 of the rows, over the columns the table had),
  and ``quality.partition_rows`` still describes what is stored;
- **nothing duplicated**: no day of any table holds a row twice, and a re-run once the fault is
  gone succeeds and leaves exactly the rows of a clean run;
- **a clear error**: the failure names what was wrong (asset, app, report, partition, column) and
  what to do, and nothing the run logged or said holds a secret (a token or a password).

A row is brief where a dedicated test covers its fault in depth (``Fault.tested``; README "What
survives what" lists both). Runs left STARTED when their worker dies need the daemon and a code
server: adpipes_tests/test_topology.py covers them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from adpipes.appsflyer import raw_data_api as raw_data_api_module
from adpipes.appsflyer.raw_data_api import AppsFlyerRawDataApi
from adpipes.appsflyer.resources import AppsFlyerApps
from adpipes.appsflyer.transform import snake_case_columns
from adpipes.definitions import build_definitions
from adpipes.dev.postgres_server import (
    PostgresCluster,
    find_postgres_bindir,
    server_user,
)
from adpipes.lib.quality import QualityStore
from adpipes.lib.quota import ApiCallLedger
from adpipes.lib.retention import PRUNE_OP, prune_product_partitions_job
from adpipes.dev.sandbox import SandboxServer
from adpipes.dev.sandbox.appsflyer import default_rows_for_day
from adpipes.lib.settings import (
    SANDBOX_ANDROID_APP_ID,
    SANDBOX_IOS_APP_ID,
    ConfigurationError,
    load_settings,
)
from adpipes.lib.storage.delivered import OWNER_FILE, sweep_abandoned_spools
from adpipes.lib.storage.postgres import PartitionedTableIOManager, PostgresDatabase
from adpipes_tests.appsflyer.test_assets import (
    ASSETS,
    android_installs_asset,
    raw_data,
    recent_day,
    step_failure_message,
)
from adpipes_tests.appsflyer.test_raw_data_api import socket_closed_port
from adpipes_tests.fixtures.environ import prod_environ
from adpipes_tests.fixtures.postgres import TEST_SERVER_OPTIONS, make_test_dir
from adpipes_tests.fixtures.sandbox import appsflyer_client_settings, prod_cli_env

TZ = "Asia/Seoul"
ANDROID = SANDBOX_ANDROID_APP_ID
INSTALLS = "appsflyer/android_installs"
# Planted in every DSN a row makes up: it must never come back in a message or a log line.
SECRET = "LeakCanary99"
# 100 characters: PostgreSQL would cut its snake_case name (100 bytes) to 63.
LONG_HEADER = ("Attributed Touch Contributor Campaign Name For Multi Touch Attribution Of Retargeting "
               "Conversions X1")


# -- the world a fault happens in ------------------------------------------------------------------

@dataclass
class Outcome:
    """What a user is told: ``message`` is the failure with its causes (or, for a run that
    survived, its log lines and materialization metadata); ``logged`` is everything the run logged
    or printed, scanned for secrets."""

    success: bool
    message: str
    logged: str = ""
    run_id: str | None = None


def run_outcome(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> Outcome:
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    metadata = [f"{k}: {v.value}" for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"
                for k, v in e.event_specific_data.materialization.metadata.items()]
    failed = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    if failed:
        # The first failure with the errors that caused it, and every step that failed.
        message = f"{step_failure_message(result)}\nfailed steps: {', '.join(failed)}"
    else:
        message = "\n".join(logs + metadata)
    return Outcome(result.success, message, "\n".join(logs + metadata + [message]), result.run_id)


# (database, table) -> the table's columns, and per day its row count and md5 over those columns
Snapshot = dict[tuple[str, str], tuple[list[str], dict[str, tuple[int, str]]]]


@dataclass
class World:
    """The sandbox and the two databases a row runs against, and the day it works on."""

    sandbox: SandboxServer
    product_dsn: str
    archive_dsn: str
    day: str = field(default_factory=recent_day)
    archived: int = 0  # rows of the day's appsflyer/android_installs before the fault
    before: Snapshot = field(default_factory=dict)  # every table's days before the fault

    @property
    def secrets(self) -> list[str]:
        return [self.sandbox.appsflyer_token, self.sandbox.airbridge_token, SECRET]

    def resources(self, archive_dsn: str | None = None) -> dict[str, object]:
        archive = PostgresDatabase(role="archive", dsn=archive_dsn or self.archive_dsn)
        product = PostgresDatabase(role="product", dsn=self.product_dsn)
        return {
            "appsflyer_raw_data_api": AppsFlyerRawDataApi(**appsflyer_client_settings(self.sandbox)),
            "appsflyer_apps": AppsFlyerApps(android_app_id=ANDROID, ios_app_id=SANDBOX_IOS_APP_ID,
                                            currency="KRW"),
            "io_manager": PartitionedTableIOManager(archive=archive, product=product, timezone=TZ),
            "quality": QualityStore(archive=archive),
            "api_calls": ApiCallLedger(archive=archive),
            "archive_db": archive,
            "product_db": product,
        }

    def materialize(self, assets: list[dg.AssetsDefinition] | None = None, *, selection: object = None,
                    partition: str | None = None, resources: dict[str, object] | None = None) -> Outcome:
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize(assets or [android_installs_asset()], selection=selection, instance=instance,
                                resources=resources or self.resources(), partition_key=partition or self.day,
                                raise_on_error=False)
        return run_outcome(result, instance)

    def query(self, db: str, statement: str | sql.Composable, params: tuple | None = None) -> list[tuple]:
        with psycopg.connect(self.product_dsn if db == "product" else self.archive_dsn) as conn:
            return conn.execute(statement, params).fetchall()

    def execute(self, db: str, statement: str | sql.Composable, params: tuple | None = None) -> None:
        with psycopg.connect(self.product_dsn if db == "product" else self.archive_dsn) as conn:
            conn.execute(statement, params)

    def installs_calls(self) -> int:
        return sum(1 for c in self.sandbox.calls()
                   if c["app_id"] == ANDROID and c["report"] == "installs_report")


# -- the three properties --------------------------------------------------------------------------

def tables(world: World, db: str) -> list[str]:
    """The adpipes tables of a database (partitioned parents, not their day partitions)."""
    return [r[0] for r in world.query(
        db, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'appsflyer' AND c.relkind IN ('p', 'r') AND NOT c.relispartition ORDER BY 1")]


def columns(world: World, db: str, table: str) -> list[str]:
    return [r[0] for r in world.query(
        db, "SELECT column_name FROM information_schema.columns WHERE table_schema = 'appsflyer' "
            "AND table_name = %s ORDER BY ordinal_position", (table,))]


def day_digests(world: World, db: str, table: str, cols: list[str]) -> dict[str, tuple[int, str]]:
    """Per day: the row count and an md5 of the rows (over ``cols``) in a fixed order."""
    row = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.Identifier(c) for c in cols))
    statement = sql.SQL("SELECT report_date::text, count(*), md5(string_agg({row}, E'\\n' ORDER BY {row})) "
                        "FROM {table} GROUP BY 1").format(row=row, table=sql.Identifier("appsflyer", table))
    return {day: (count, digest) for day, count, digest in world.query(db, statement)}


def snapshot(world: World) -> Snapshot:
    taken: Snapshot = {}
    for db in ("archive", "product"):
        for table in tables(world, db):
            cols = columns(world, db, table)
            taken[(db, table)] = (cols, day_digests(world, db, table, cols))
    return taken


def assert_nothing_lost(world: World, before: Snapshot, skip: tuple[tuple[str, str], ...] = ()) -> None:
    """Every day held before holds the same rows now (over the columns it had), and the row
    history of the quality tables describes the rows stored."""
    for (db, table), (cols, days) in before.items():
        if (db, table) in skip:
            continue
        assert columns(world, db, table)[:len(cols)] == cols, f"{db} {table}: columns changed"
        now = day_digests(world, db, table, cols)
        for day, digest in days.items():
            assert now.get(day) == digest, f"{db} appsflyer.{table} {day}: was {digest}, is {now.get(day)}"
    if world.query("archive", "SELECT to_regclass('quality.partition_rows')") == [(None,)]:
        return
    for asset, day, checked, quarantined in world.query(
            "archive", "SELECT asset_key, report_date::text, checked_rows, quarantined_rows "
                       "FROM quality.partition_rows"):
        stored = day_digests(world, "archive", asset.split("/")[-1], ["report_date"]).get(day, (0, ""))[0]
        assert stored == checked - quarantined, \
            f"quality.partition_rows says {checked} rows of {asset} {day}; {stored} stored"


def assert_nothing_duplicated(world: World, skip: tuple[tuple[str, str], ...] = ()) -> None:
    for db in ("archive", "product"):
        for table in tables(world, db):
            if (db, table) in skip:
                continue
            twice = world.query(db, sql.SQL(
                "SELECT report_date::text, count(*) - count(DISTINCT t::text) FROM {} t "
                "GROUP BY 1 HAVING count(*) > count(DISTINCT t::text)"
            ).format(sql.Identifier("appsflyer", table)))
            assert twice == [], f"{db} appsflyer.{table}: rows held twice {twice}"


def assert_clear(world: World, outcome: Outcome, says: list[str]) -> None:
    missing = [s for s in says if s not in outcome.message]
    assert not missing, f"the message lacks {missing}:\n{outcome.message}"
    leaked = [n for n, secret in enumerate(world.secrets) if secret in outcome.message + outcome.logged]
    assert not leaked, f"secret(s) {leaked} of World.secrets said or logged"  # never print them


# -- a load held mid-COPY --------------------------------------------------------------------------

PAUSE_AT_ROW = 50


@contextlib.contextmanager
def paused_mid_copy(world: World, table: str = "android_installs") -> Iterator[Callable[[], None]]:
    """A row trigger on ``appsflyer.<table>`` (archive) that holds the next load at its 50th row,
    until the ``release`` it yields is called (or 60 s pass): the load's transaction is then open,
    rows inside it, as when a crash hits a real COPY. Removed on exit."""
    world.execute("archive", f"""
        CREATE SCHEMA IF NOT EXISTS fault_matrix;
        CREATE TABLE IF NOT EXISTS fault_matrix.released (at timestamptz);
        TRUNCATE fault_matrix.released;
        CREATE OR REPLACE FUNCTION fault_matrix.pause() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE n int := coalesce(nullif(current_setting('fault_matrix.rows', true), ''), '0')::int + 1;
        BEGIN
            PERFORM set_config('fault_matrix.rows', n::text, true);
            IF n = {PAUSE_AT_ROW} THEN
                WHILE NOT EXISTS (SELECT 1 FROM fault_matrix.released)
                      AND clock_timestamp() < statement_timestamp() + interval '60 s' LOOP
                    PERFORM pg_sleep(0.05);
                END LOOP;
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER fault_matrix_pause BEFORE INSERT ON appsflyer.{table}
            FOR EACH ROW EXECUTE FUNCTION fault_matrix.pause();
    """)

    def release() -> None:
        with contextlib.suppress(psycopg.Error):
            world.execute("archive", "INSERT INTO fault_matrix.released VALUES (now())")

    try:
        yield release
    finally:
        release()
        unpause(world, table)


def unpause(world: World, table: str = "android_installs") -> None:
    with contextlib.suppress(psycopg.Error):
        world.execute("archive", f"DROP TRIGGER IF EXISTS fault_matrix_pause ON appsflyer.{table}; "
                                 "DROP SCHEMA IF EXISTS fault_matrix CASCADE")


def wait_until_paused(world: World, timeout: float = 120.0, alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if world.query("archive", "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                                  "AND query ILIKE 'COPY%' AND datname = current_database()") == [(1,)]:
            return
        time.sleep(0.05)
    raise AssertionError("the load never reached the paused COPY")


def wait_until_no_writer(world: World, timeout: float = 30.0) -> None:
    """The killed run's connections are gone: no COPY, no partition write lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = world.query(
            "archive", "SELECT (SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'COPY%' "
                       "AND state <> 'idle' AND datname = current_database()) "
                       "+ (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
                       "(SELECT oid FROM pg_database WHERE datname = current_database()))")[0][0]
        if busy == 0:
            return
        time.sleep(0.1)
    raise AssertionError("the killed run's load or write lock outlived it")


@contextlib.contextmanager
def in_thread(fn: Callable[[], Outcome]) -> Iterator[dict[str, Outcome]]:
    done: dict[str, Outcome] = {}
    thread = threading.Thread(target=lambda: done.update(outcome=fn()), daemon=True)
    thread.start()
    try:
        yield done
    finally:
        thread.join(120)
        assert not thread.is_alive(), "the run did not end"


# -- the faults ------------------------------------------------------------------------------------

def broken_delivery(**how: object) -> Callable[[World], Outcome]:
    """appsflyer/android_installs re-run while the sandbox serves a broken report."""
    def drive(world: World) -> Outcome:
        if "kind" in how:
            world.sandbox.add_faults(app_id=ANDROID, report="installs_report", **how)
        else:
            world.sandbox.configure(**how)
        outcome = world.materialize()
        # The delivery is kept whole beside the archive, with both row counts.
        kept = world.query("archive", "SELECT report_date::text, archived_rows "
                                      "FROM quality.rejected_deliveries WHERE asset_key = %s", (INSTALLS,))
        assert kept == [(world.day, world.archived)]
        return outcome
    return drive


def html_page_then_raw_data_alone(world: World) -> Outcome:
    """The issue's worst case: an HTML page for one raw report in a full run, then raw_data
    rebuilt alone from the archive (the README's way), which must not spread a loss."""
    world.sandbox.add_faults(kind="html_200", app_id=ANDROID, report="installs_report")
    outcome = world.materialize(ASSETS)
    assert "appsflyer__raw_data" not in outcome.message  # not run, not failed: it was skipped
    rebuilt = world.materialize(ASSETS, selection=[raw_data.key])
    assert rebuilt.success, rebuilt.message
    return outcome


def server_cap_below_maximum_rows(world: World) -> Outcome:
    world.sandbox.configure(truncate_at=50)
    return world.materialize()


def server_cap_at_the_default(world: World, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """A server applying AppsFlyer's default cap whatever maximum_rows asked, on a day never
    archived. Scaled down: the default cap is made 60 rows (the real one is 200,000) and the
    sandbox stops every answer at 60."""
    monkeypatch.setattr(raw_data_api_module, "DEFAULT_MAXIMUM_ROWS", 60)
    world.sandbox.configure(truncate_at=60)
    outcome = world.materialize()
    expected = default_rows_for_day(ANDROID, "installs_report", dt.date.fromisoformat(world.day))
    assert expected > 60
    assert world.query("archive", "SELECT count(*) FROM appsflyer.android_installs") == [(expected,)]
    assert world.installs_calls() > 2  # the window was split until no answer hit the cap
    return outcome


def long_vendor_column(world: World) -> Outcome:
    world.sandbox.configure(extra_columns=[LONG_HEADER])
    first = world.materialize()
    assert first.success, first.message
    outcome = world.materialize()  # before the fix, this second load failed with DuplicateColumn
    long_name = snake_case_columns([LONG_HEADER])[0]
    assert len(long_name.encode()) <= 63
    stored = columns(world, "archive", "android_installs")
    assert [c for c in stored if c.startswith("attributed_touch_contributor")] == [long_name]
    return outcome


def retention_of_a_damaged_copy(world: World) -> Outcome:
    """The archive's copy of a product day lost 10 rows and holds 10 others twice (same count)."""
    child = sql.Identifier("appsflyer", f"raw_data_p{world.day.replace('-', '')}")
    world.execute("archive", sql.SQL(
        "DELETE FROM {c} WHERE ctid IN (SELECT ctid FROM {c} ORDER BY ctid LIMIT 10); "
        "INSERT INTO {c} SELECT * FROM {c} WHERE ctid IN (SELECT ctid FROM {c} ORDER BY ctid DESC LIMIT 10)"
    ).format(c=child))
    counts = [world.query(db, sql.SQL("SELECT count(*) FROM {}").format(child))[0][0]
              for db in ("product", "archive")]
    assert counts[0] == counts[1] > 20
    instance = dg.DagsterInstance.ephemeral()
    cutoff = (dt.date.fromisoformat(world.day) + dt.timedelta(days=1)).isoformat()
    result = prune_product_partitions_job.execute_in_process(
        run_config={"ops": {PRUNE_OP: {"config": {"cutoffs": {"appsflyer/raw_data": cutoff}}}}},
        resources={"product_db": PostgresDatabase(role="product", dsn=world.product_dsn),
                   "archive_db": PostgresDatabase(role="archive", dsn=world.archive_dsn)},
        instance=instance, raise_on_error=False)
    return run_outcome(result, instance)


def unreachable_archive_and_a_dsn_with_an_at_sign(world: World) -> Outcome:
    """An unencoded @ in a password (refused at load), and an archive DSN with a password that
    points at nothing (the run fails at its first connection)."""
    with pytest.raises(ConfigurationError) as at_load:
        load_settings(prod_environ(
            ADPIPES_ARCHIVE_DSN=f"postgresql://adpipes:{SECRET}@x@127.0.0.1:5432/archive"))
    with socket_closed_port() as port:
        outcome = world.materialize(resources=world.resources(
            archive_dsn=f"postgresql://adpipes:{SECRET}@127.0.0.1:{port}/archive"))
    assert world.installs_calls() == 1  # the baseline's call only: nothing was called
    return Outcome(outcome.success, f"{at_load.value}\n{outcome.message}", outcome.logged, outcome.run_id)


def raw_data_without_an_archived_day(world: World) -> Outcome:
    """raw_data alone for a day only one of its four raw reports was archived for."""
    other = recent_day(2)
    assert world.materialize(partition=other).success
    outcome = world.materialize(ASSETS, selection=[raw_data.key], partition=other)
    child = f"appsflyer.raw_data_p{other.replace('-', '')}"
    for db in ("product", "archive"):
        assert world.query(db, "SELECT to_regclass(%s)", (child,)) == [(None,)], f"an empty {db} day was left"
    return outcome


def full_tmpdir(world: World, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """TMPDIR on a 64 KB disk: smaller than twice the archived day the run would spool."""
    mount = Path(tempfile.mkdtemp(prefix="adpipes-test-tmpfs-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=False,
                             capture_output=True)
    if mounted.returncode:
        mount.rmdir()
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(mount))
        outcome = world.materialize()
    finally:
        monkeypatch.undo()
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()
    assert world.installs_calls() == 1  # the baseline's call only
    return Outcome(outcome.success, outcome.message.replace(str(mount), "<mount>"), outcome.logged)


def bad_setting(**environ: str) -> Callable[[World], Outcome]:
    def drive(world: World) -> Outcome:
        try:
            build_definitions(load_settings(prod_environ(**environ)))
        except ConfigurationError as exc:
            return Outcome(False, str(exc))
        return Outcome(True, "the definitions loaded")
    return drive


def two_runs_of_one_partition(world: World) -> Outcome:
    calls = world.installs_calls()
    later: dict[str, Outcome] = {}
    with paused_mid_copy(world) as release, in_thread(world.materialize) as first:
        try:
            wait_until_paused(world)
            thread = threading.Thread(target=lambda: later.update(outcome=world.materialize()), daemon=True)
            thread.start()
            thread.join(30)  # bounded: without the lock, the second run would wait on the first one's load
        finally:
            release()
        thread.join(120)
    assert first["outcome"].success, first["outcome"].message
    second = later["outcome"]
    assert f"being written by run {first['outcome'].run_id}" in second.message
    assert world.installs_calls() == calls + 1  # the second run never called AppsFlyer
    return second


def postgres_stopped_mid_copy(world: World, cluster: PostgresCluster) -> Outcome:
    """``pg_ctl stop -m immediate`` (no shutdown checkpoint: crash recovery at the next start)
    while the archive load is inside its COPY. The delivery is bigger than the archived day, so
    quality tables written ahead of the data would show."""
    world.sandbox.configure(rows_per_day={f"{ANDROID}|installs_report": world.archived + 30})
    with paused_mid_copy(world) as release, in_thread(world.materialize) as run:
        try:
            wait_until_paused(world)
        except AssertionError:
            release()
            raise
        stopped = subprocess.run(
            [str(find_postgres_bindir() / "pg_ctl"), "stop", "-D", str(cluster.pgdata),
             "-m", "immediate", "-w"],
            check=False, capture_output=True, text=True, cwd=cluster.data_dir, **server_user().popen_kwargs())
        assert stopped.returncode == 0, stopped.stderr
    cluster.ensure_running()  # crash recovery
    unpause(world)
    return run["outcome"]


def killed_mid_run(world: World, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """``dagster asset materialize`` (ADPIPES_ENV=prod) SIGKILLed with its whole process group
    while its step is inside the archive COPY; its spool directory is left behind."""
    spool_root = tmp / "tmpdir"
    spool_root.mkdir()
    (tmp / "dagster_home").mkdir()
    env = prod_cli_env(world.sandbox, world.product_dsn, world.archive_dsn, str(tmp / "dagster_home"),
                       timezone=TZ)
    env["TMPDIR"] = str(spool_root)
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "adpipes.definitions",
               "--select", INSTALLS, "--partition", world.day]
    world.sandbox.configure(rows_per_day={f"{ANDROID}|installs_report": world.archived + 30})
    with paused_mid_copy(world) as release:
        cli = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
        try:
            wait_until_paused(world, alive=lambda: cli.poll() is None)
            left = [p for p in spool_root.iterdir() if p.name.startswith("adpipes-")]
            assert left, "the run spooled nothing"
        finally:
            os.killpg(cli.pid, signal.SIGKILL)
            output = cli.communicate(timeout=30)[0].decode(errors="replace")
        # The server notices the dead client when the held COPY reads again.
        release()
        wait_until_no_writer(world)
    assert all(p.exists() for p in left)  # nothing cleaned up after a SIGKILL...
    # A killed process says nothing; what tells is its run, which claims no materialization. (It
    # stays STARTED here, without a daemon: run monitoring fails it, see test_topology.py.)
    with dg.DagsterInstance.local_temp(tempdir=env["DAGSTER_HOME"]) as instance:
        (killed,) = instance.get_runs()
        assert killed.status != dg.DagsterRunStatus.SUCCESS
        assert instance.get_latest_materialization_event(dg.AssetKey.from_user_string(INSTALLS)) is None
    # What the killed run left, before anything runs again.
    assert_nothing_lost(world, world.before)
    assert_nothing_duplicated(world)
    # The step process, orphaned by the kill, is a zombie until PID 1 reaps it; a zombie still
    # counts as a live owner (see test_a_spool_whose_owner_is_a_zombie_is_swept).
    owners = [json.loads((p / OWNER_FILE).read_text())["pid"] for p in left]
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in owners) and time.monotonic() < deadline:
        time.sleep(0.1)
    monkeypatch.setattr(tempfile, "tempdir", str(spool_root))
    world.sandbox.reset()
    rerun = world.materialize()
    assert rerun.success, rerun.message
    assert not any(p.exists() for p in left)  # ...until the next run's spool swept it
    return Outcome(False, "", output)


def vendor_fault(**fault: object) -> Callable[[World], Outcome]:
    def drive(world: World) -> Outcome:
        world.sandbox.add_faults(app_id=ANDROID, report="installs_report", **fault)
        return world.materialize()
    return drive


def quota_answer(kind: str) -> Callable[[World], Outcome]:
    def drive(world: World) -> Outcome:
        world.sandbox.add_faults(kind=kind, app_id=ANDROID, report="installs_report", times=5)
        outcome = world.materialize()
        assert world.installs_calls() == 2  # the baseline's call and the quota answer: no hot retry
        return outcome
    return drive


# -- the matrix ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    id: str
    issue: str  # the item of issue 12, or "held before" for what already behaved
    drive: Callable[..., Outcome]
    says: tuple[str, ...]  # in the message; {day}, {app}, {archived} are filled in
    # What the message should also say but does not yet: the row xfails on it, after every other
    # check has passed, and fails once it is said (then move it into `says`).
    known_gaps: tuple[str, ...] = ()
    survives: bool = False  # the run succeeds despite the fault (retried, split, shortened)
    # Materialized for the day before the fault (default: appsflyer/android_installs).
    baseline: tuple[dg.AssetsDefinition, ...] | None = None
    no_baseline: bool = False
    tampers: tuple[tuple[str, str], ...] = ()  # tables the row damages on purpose before the fault
    rerun: bool = True  # once the fault is gone, the same run again must succeed
    tested: str = ""  # the dedicated test of the fault
    needs: tuple[str, ...] = ()  # extra fixtures the drive takes (monkeypatch, tmp, cluster)
    marks: tuple = ()


REFUSED = ("appsflyer/android_installs", "{app}", "{day}", "{archived:,} rows archived",
           "quality.rejected_deliveries", "What to do")
BROKEN_DELIVERY_TEST = "appsflyer/test_assets.py::test_a_broken_delivery_never_replaces_the_archived_day"
FAULTS = [
    # -- issue 12 item 1: a broken delivery replaced the archived day
    Fault("html_200_then_raw_data_alone", "1", html_page_then_raw_data_alone, (*REFUSED, "an HTML page"),
          baseline=tuple(ASSETS), tested=BROKEN_DELIVERY_TEST),
    Fault("text_200", "1", broken_delivery(kind="text_200"), (*REFUSED, "lacks required columns"),
          tested=BROKEN_DELIVERY_TEST),
    Fault("malformed_csv", "1", broken_delivery(kind="malformed_csv"),
          (*REFUSED, "not well-formed UTF-8 CSV"), tested=BROKEN_DELIVERY_TEST),
    Fault("no_event_time", "1", broken_delivery(drop_columns=["Event Time"]),
          (*REFUSED, "lacks required columns event_time"), tested=BROKEN_DELIVERY_TEST),
    # -- item 2: silent truncation
    Fault("server_caps_at_50_rows", "2", server_cap_below_maximum_rows,
          ("appsflyer/android_installs", "{app}", "{day}", "50 rows delivered, {archived:,} archived",
           "ADPIPES_MAX_ROW_DROP", "replace_archived: true"),
          tested="appsflyer/test_assets.py::"
                 "test_a_server_capping_below_maximum_rows_is_caught_by_the_archived_day"),
    Fault("server_caps_at_default_200000", "2", server_cap_at_the_default,
          ("installs_report", "{app}", "a row cap", "splitting the window"), survives=True, no_baseline=True,
          needs=("monkeypatch",), tested="appsflyer/test_raw_data_api.py (truncated)"),
    # -- item 3: long vendor column names
    Fault("vendor_header_over_63_bytes", "3", long_vendor_column,
          ("adpipes/shortened_column_names", LONG_HEADER), survives=True, tested="lib/storage/test_names.py"),
    # -- item 4: retention verified by row count alone
    Fault("retention_copy_lost_10_duplicated_10", "4", retention_of_a_damaged_copy,
          ("appsflyer.raw_data", "{day}", "contents differ", "product keeps the partition",
           "re-materializing"),
          baseline=tuple(ASSETS), tampers=(("archive", "raw_data"),), tested="lib/test_retention.py"),
    # -- item 5: DSN fragments in messages
    Fault("dsn_unencoded_at_and_unreachable_archive", "5", unreachable_archive_and_a_dsn_with_an_at_sign,
          ("ADPIPES_ARCHIVE_DSN", "unencoded @", "percent-encode", "host 127.0.0.1", "database archive",
           "role adpipes", "Check ADPIPES_ARCHIVE_DSN"),
          tested="lib/storage/test_dsn.py, lib/test_settings.py"),
    # -- item 6: raw_data written empty for a day the archive lacks
    Fault("raw_data_without_archived_reports", "6", raw_data_without_an_archived_day,
          ("appsflyer/raw_data", "appsflyer/ios_installs", "appsflyer/android_in_app_events",
           "nothing was written", "Materialize those raw reports"),
          baseline=tuple(ASSETS), rerun=False,
          tested="appsflyer/test_assets.py::test_raw_data_without_archived_raw_reports_fails_naming_them"),
    # -- item 9: a full TMPDIR
    Fault("tmpdir_too_small", "9", full_tmpdir, ("appsflyer/android_installs", "{day}", "TMPDIR (<mount>)",
                                                "Nothing was called"),
          needs=("monkeypatch",), tested="lib/storage/test_spool.py"),
    # -- item 10: unchecked settings
    Fault("app_id_not_a_package_name", "10", bad_setting(APPSFLYER_ANDROID_APP_ID="com.example/x"),
          ("APPSFLYER_ANDROID_APP_ID", "must be an Android package name"), no_baseline=True, rerun=False,
          tested="lib/test_settings.py"),
    Fault("start_date_in_the_future", "10", bad_setting(ADPIPES_START_DATE="2999-01-01"),
          ("ADPIPES_START_DATE", "in the future"), no_baseline=True, rerun=False,
          tested="lib/test_settings.py"),
    Fault("retention_override_misspelled", "10",
          bad_setting(ADPIPES_PRODUCT_RETENTION_OVERRIDES="appsflyer/raw_dta=30"),
          ("ADPIPES_PRODUCT_RETENTION_OVERRIDES", "appsflyer/raw_dta", "did you mean appsflyer/raw_data"),
          no_baseline=True, rerun=False, tested="lib/test_retention.py"),
    # -- item 11 (and "two runs of one partition" before it): one writer per asset partition
    Fault("two_runs_of_one_partition", "11", two_runs_of_one_partition,
          ("appsflyer/android_installs partition {day} is being written by run",
           "before calling any vendor API", "Re-run the partition"),
          tested="lib/storage/test_locks.py"),
    # -- items 7 and 8 and what already held: crashes
    Fault("postgres_stopped_mid_copy", "held before; 7", postgres_stopped_mid_copy,
          ("appsflyer.android_installs partition(s) {day}", "archive database failed",
           "server closed the connection", "nothing of it was committed there", "Re-run"),
          needs=("cluster",)),
    Fault("sigkill_mid_run", "held before; 8", killed_mid_run, (), rerun=False, needs=("tmp", "monkeypatch")),
    # -- vendor answers that already behaved
    Fault("token_revoked", "held before", vendor_fault(kind="token_revoked"),
          ("{app}", "installs_report", "2026-03-10 19:00 UTC", "APPSFLYER_API_TOKEN"),
          tested="appsflyer/test_raw_data_api.py::test_revoked_token"),
    Fault("429_then_success", "held before", vendor_fault(kind="429"),
          ("{app}", "installs_report", "HTTP 429", "attempt 1/4"), survives=True,
          tested="appsflyer/test_raw_data_api.py::test_429_honours_retry_after"),
    Fault("503_then_success", "held before", vendor_fault(kind="503", times=2),
          ("{app}", "installs_report", "HTTP 503", "attempt 2/4"), survives=True,
          tested="appsflyer/test_raw_data_api.py::test_503_then_success"),
    Fault("503_every_attempt", "held before", vendor_fault(kind="503", times=10),
          ("appsflyer__android_installs", "{app}", "installs_report", "{day}", "503", "4 attempts",
           "re-run the partition later"),
          tested="appsflyer/test_raw_data_api.py::test_retries_exhausted"),
    Fault("empty_200_then_success", "held before", vendor_fault(kind="empty_200"),
          ("{app}", "installs_report", "attempt 1/4"), survives=True,
          tested="appsflyer/test_raw_data_api.py::test_empty_200_is_retried_not_taken_as_no_data"),
    Fault("quota_400", "held before", quota_answer("quota"),
          ("{app}", "installs_report", "limit has been reached", "00:00 UTC", "do not retry"),
          tested="appsflyer/test_raw_data_api.py::test_quota_is_not_retried"),
    Fault("quota_403", "held before", quota_answer("quota_403"),
          ("{app}", "installs_report", "Limit reached", "00:00 UTC", "do not retry"),
          tested="appsflyer/test_raw_data_api.py::test_quota_is_not_retried"),
]


@pytest.fixture
def private_cluster() -> Iterator[PostgresCluster]:
    """A cluster of its own for the row that crashes PostgreSQL: the session's is not touched."""
    root = make_test_dir("adpipes-test-fault-pg-")
    # A commit must be in the WAL when the server is killed, as in production (the session's
    # synchronous_commit=off loses the last ones). fsync can stay off: the machine does not crash.
    options = {**TEST_SERVER_OPTIONS, "synchronous_commit": "on"}
    cluster = PostgresCluster(root / "cluster", server_options=options)
    cluster.ensure_running()
    try:
        for name in ("archive", "product"):
            cluster.create_database(name)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("fault", [pytest.param(f, id=f.id, marks=f.marks) for f in FAULTS])
def test_fault(fault: Fault, request: pytest.FixtureRequest, clean_sandbox: SandboxServer,
               clean_databases: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    product_dsn, archive_dsn = clean_databases
    extra: dict[str, object] = {}
    if "cluster" in fault.needs:
        cluster = request.getfixturevalue("private_cluster")
        product_dsn, archive_dsn = cluster.dsn("product"), cluster.dsn("archive")
        extra["cluster"] = cluster
    if "tmp" in fault.needs:
        extra["tmp"] = tmp_path
    if "monkeypatch" in fault.needs:
        extra["monkeypatch"] = monkeypatch
    world = World(clean_sandbox, product_dsn, archive_dsn)

    if not fault.no_baseline:
        assert world.materialize(list(fault.baseline or [android_installs_asset()])).success
        world.archived = world.query("archive", "SELECT count(*) FROM appsflyer.android_installs "
                                                "WHERE report_date = %s", (world.day,))[0][0]
        assert world.archived > PAUSE_AT_ROW
    before = world.before = snapshot(world)

    outcome = fault.drive(world, **extra)

    # Nothing lost, nothing duplicated...
    assert_nothing_lost(world, before, skip=fault.tampers)
    assert_nothing_duplicated(world, skip=fault.tampers)
    # ...and a clear error (or, for a fault the run survives, a clear account of it).
    assert outcome.success is fault.survives, outcome.message
    says = [s.format(day=world.day, app=ANDROID, archived=world.archived) for s in fault.says]
    assert_clear(world, outcome, says)

    if fault.rerun:
        # The fault gone, the same run again: it succeeds and leaves the rows of a clean run.
        world.sandbox.reset()
        monkeypatch.undo()
        again = world.materialize(list(fault.baseline or [android_installs_asset()]))
        assert again.success, again.message
        assert_nothing_lost(world, before)
        assert_nothing_duplicated(world)

    if fault.known_gaps:
        wanted = [gap.format(day=world.day) for gap in fault.known_gaps]
        gaps = [g for g in wanted if g not in outcome.message]
        assert gaps, f"the message now says {fault.known_gaps}: move them from known_gaps into says"
        pytest.xfail(f"the message does not say {gaps} yet")


def test_a_spool_whose_owner_is_a_zombie_is_swept(tmp_path: Path) -> None:
    code = ("import os; from adpipes.lib.storage.delivered import make_spool_directory; "
            "d = make_spool_directory('adpipes-test-'); print(d, flush=True); os._exit(0)")
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "TMPDIR": str(tmp_path)},
                             stdout=subprocess.PIPE, text=True)
    try:
        spool = Path(child.stdout.readline().strip())
        stat = Path(f"/proc/{child.pid}/stat")
        deadline = time.monotonic() + 30
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.05)
        # The owner is dead (a zombie: exited, not yet reaped by its parent, this test).
        assert [removed for removed, _ in sweep_abandoned_spools(tmp_path)] == [spool]
    finally:
        child.wait()
        child.stdout.close()
