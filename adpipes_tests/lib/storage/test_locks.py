"""One writer per asset partition, against a real PostgreSQL and real Dagster runs."""

import datetime as dt
import threading
from contextlib import contextmanager

import dagster as dg
import psycopg
import pytest

from adpipes.lib.assets import table_asset
from adpipes.lib.storage.locks import PartitionBusy, partition_write_lock
from adpipes.lib.storage.postgres import PostgresDatabase
from adpipes_tests.lib.storage.test_postgres import TYPED, typed_frame

DAYS = dg.DailyPartitionsDefinition(start_date="2026-11-01", end_date="2026-11-30")


def test_a_partition_being_written_refuses_a_second_writer_naming_it(archive_dsn):
    archive = PostgresDatabase(role="archive", dsn=archive_dsn)
    key = dg.AssetKey(["appsflyer", "lock_test"])
    with partition_write_lock(archive, key, ["2026-11-20", "2026-11-21"], "run-first"):
        with pytest.raises(PartitionBusy) as caught:
            with partition_write_lock(archive, key, ["2026-11-19", "2026-11-21"], "run-second"):
                pass
        assert "partition 2026-11-21 is being written by run run-first" in caught.value.description
        # Other partitions, and the same partition of another asset, are free.
        with partition_write_lock(archive, key, ["2026-11-19"], "run-third"):
            pass
        with partition_write_lock(archive, dg.AssetKey(["appsflyer", "other"]), ["2026-11-21"], "run-fourth"):
            pass
    # Released with the block: and 2026-11-19, refused above, was not left locked either.
    with partition_write_lock(archive, key, ["2026-11-19", "2026-11-21"], "run-second"):
        pass


class WatchedArchive(PostgresDatabase):
    """The real archive database, noting for each session the lock opens its server process id
    and the advisory locks the session still holds when the lock hands the connection back to be
    closed."""

    @contextmanager
    def connect(self):
        with super().connect() as conn:
            session = {"pid": conn.info.backend_pid}
            SESSIONS.append(session)
            try:
                yield conn
            finally:
                session["held_at_hand_back"] = _advisory_locks(conn, conn.info.backend_pid)


SESSIONS: list[dict] = []


def _advisory_locks(conn, pid: int) -> int:
    (count,) = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = %s",
                            (pid,)).fetchone()
    return count


def test_a_refused_or_finished_writer_frees_its_locks_before_its_connection_closes(archive_dsn):
    # Closing a connection frees its session locks only when the server process exits, which can
    # lag: a partition must be free for the next run as soon as a writer is refused or done.
    SESSIONS.clear()
    archive = WatchedArchive(role="archive", dsn=archive_dsn)
    key = dg.AssetKey(["appsflyer", "lock_release_test"])
    with psycopg.connect(archive_dsn, autocommit=True) as observer:
        with partition_write_lock(archive, key, ["2026-11-20", "2026-11-21"], "run-first"):
            first = SESSIONS[-1]["pid"]
            assert _advisory_locks(observer, first) == 2
            # The refused writer takes 2026-11-19 before it meets 2026-11-21.
            with pytest.raises(PartitionBusy):
                with partition_write_lock(archive, key, ["2026-11-19", "2026-11-21"], "run-second"):
                    pass
            refused = SESSIONS[-1]
            assert refused["held_at_hand_back"] == 0
            assert _advisory_locks(observer, refused["pid"]) == 0
        assert SESSIONS[0]["held_at_hand_back"] == 0
        assert _advisory_locks(observer, first) == 0


def test_a_second_run_of_a_partition_stops_before_its_body_runs(storage_resources):
    started, release = threading.Event(), threading.Event()
    bodies: list[str] = []

    @table_asset(TYPED, partitions_def=DAYS, group_name="test", kinds={"postgres"})
    def storage_test__typed(context: dg.AssetExecutionContext):
        bodies.append(context.run.run_id)
        started.set()
        release.wait(30)
        yield dg.Output(typed_frame(dt.date(2026, 11, 20), 3))

    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(result=dg.materialize(
        [storage_test__typed], resources=storage_resources, partition_key="2026-11-20")))
    thread.start()
    assert started.wait(30)
    second = dg.materialize([storage_test__typed], resources=storage_resources, partition_key="2026-11-20",
                            raise_on_error=False)
    release.set()
    thread.join(60)
    assert first["result"].success and not second.success
    (failure,) = [e for e in second.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.error.message
    assert f"is being written by run {first['result'].run_id}" in message
    # The second run's body (its vendor calls) never ran.
    assert bodies == [first["result"].run_id]


def test_a_partition_locked_by_a_session_that_is_not_an_adpipes_run_names_another_run(archive_dsn):
    # Whoever holds the lock without being an adpipes writer (an operator's session, a tool) is
    # named as "another run", not by its own application name.
    archive = PostgresDatabase(role="archive", dsn=archive_dsn)
    key = dg.AssetKey(["appsflyer", "lock_foreign_test"])
    with psycopg.connect(archive_dsn, autocommit=True, application_name="psql") as foreign:
        foreign.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"adpipes:write:{key.to_user_string()}:2026-11-20",))
        with pytest.raises(PartitionBusy) as caught:
            with partition_write_lock(archive, key, ["2026-11-20"], "run-mine"):
                pass
    assert "partition 2026-11-20 is being written by another run;" in caught.value.description
    assert caught.value.metadata["held_by"].value == "another run"


def test_a_lock_session_lost_inside_the_block_raises_the_blocks_own_error(archive_dsn):
    # The unlock at the end fails on a connection the server dropped; the error the user sees must
    # still be the one the block raised (the locks went with the server process).
    archive = PostgresDatabase(role="archive", dsn=archive_dsn)
    with psycopg.connect(archive_dsn, autocommit=True) as admin:
        with pytest.raises(RuntimeError, match="the step's own failure"):
            with partition_write_lock(archive, dg.AssetKey(["appsflyer", "lock_lost_test"]), ["2026-11-20"], "run-x"):
                (ended,) = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                         "WHERE application_name = 'adpipes writer run-x'").fetchone()
                assert ended == 1
                raise RuntimeError("the step's own failure")
