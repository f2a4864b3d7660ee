"""One writer per asset partition, against a real PostgreSQL and real Dagster runs."""

import datetime as dt
import threading

import dagster as dg
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
