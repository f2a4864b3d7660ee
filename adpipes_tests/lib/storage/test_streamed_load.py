"""Spooled rows loaded into both databases while they are written, committed only by the IO
manager (lib/storage/streamed_load.py), on real PostgreSQL."""

import datetime as dt
import time

import dagster as dg
import psycopg
import pytest

from adpipes.lib.storage.postgres import PartitionedTableIOManager, PostgresDatabase, replace_partitions
from adpipes.lib.storage.spooled_frames import SpooledFrames
from adpipes.lib.storage.tables import ARCHIVE, PRODUCT
from adpipes_tests.lib.storage.test_postgres import TYPED, TZ, typed_frame
from adpipes_tests.lib.storage.test_spooled_frames import stored

D1, D2 = dt.date(2026, 11, 20), dt.date(2026, 11, 21)
KEYS = [D1.isoformat(), D2.isoformat()]


class Log:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.messages.append(("info", message))

    def warning(self, message: str) -> None:
        self.messages.append(("warning", message))

    def error(self, message: str) -> None:
        self.messages.append(("error", message))


def databases(product_dsn: str, archive_dsn: str) -> list[tuple[str, PostgresDatabase]]:
    return [(ARCHIVE, PostgresDatabase(role="archive", dsn=archive_dsn)),
            (PRODUCT, PostgresDatabase(role="product", dsn=product_dsn))]


def manager(product_dsn: str, archive_dsn: str) -> PartitionedTableIOManager:
    return PartitionedTableIOManager(archive=PostgresDatabase(role="archive", dsn=archive_dsn),
                                     product=PostgresDatabase(role="product", dsn=product_dsn), timezone=TZ)


def output_context(keys: list[str]) -> dg.OutputContext:
    return dg.build_output_context(
        asset_key=TYPED.asset_key,
        asset_partitions_def=dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone=TZ),
        asset_partition_key_range=dg.PartitionKeyRange(keys[0], keys[-1]),
    )


def copied_so_far(dsn: str) -> int:
    """Rows a COPY into the test table has parsed so far in another session (PostgreSQL's COPY
    progress view), waiting until it shows some."""
    deadline = time.monotonic() + 60
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            # By database: a day table created in the load's transaction is not in pg_class yet.
            row = conn.execute("SELECT tuples_processed FROM pg_stat_progress_copy "
                               "WHERE datname = current_database() AND command = 'COPY FROM'").fetchone()
            if (row and row[0]) or time.monotonic() > deadline:
                return row[0] if row else 0
            time.sleep(0.05)


def seed(product_dsn: str, archive_dsn: str, day: dt.date, rows: int) -> list[tuple]:
    with psycopg.connect(archive_dsn) as archive, psycopg.connect(product_dsn) as product:
        replace_partitions([archive, product], TYPED, typed_frame(day, rows), [day], timezone=TZ)
    return stored(archive_dsn)


def test_rows_reach_both_servers_while_written_and_the_io_manager_commits_them(clean_databases):
    product_dsn, archive_dsn = clean_databases
    seed(product_dsn, archive_dsn, D1, 4)
    log = Log()
    spool = SpooledFrames(TYPED, KEYS, prefix="adpipes-test-streamed-",
                          stream_into=databases(product_dsn, archive_dsn), log=log)
    try:
        spool.write(typed_frame(D1, 3000))
        # The day's COPY is open and parsing in both servers before the spool is finished...
        assert copied_so_far(archive_dsn) > 0 and copied_so_far(product_dsn) > 0
        # ...holding the day's table as any load does: a reader of the day waits for the commit
        # (here it gives up after its lock_timeout) instead of seeing half a day.
        for dsn in (archive_dsn, product_dsn):
            with psycopg.connect(dsn) as conn, pytest.raises(psycopg.errors.LockNotAvailable):
                conn.execute("SET lock_timeout = '200ms'")
                conn.execute("SELECT count(*) FROM storage_test.typed")
        spool.write(typed_frame(D1, 2, offset=5000))
        spool.write(typed_frame(D2, 5))
        spool.finish()
        # The IO manager commits the streamed load: it does not read the spooled files at all
        # (taken away here, a load from them would find nothing).
        for path in spool.directory.glob("*.csv"):
            path.unlink()
        manager(product_dsn, archive_dsn).handle_output(output_context(KEYS), spool)
    finally:
        spool.cleanup()
    assert not [m for m in log.messages if m[0] != "info"]
    rows = stored(archive_dsn)
    assert stored(product_dsn) == rows
    assert [r[0] for r in rows].count("2026-11-20") == 3002 and [r[0] for r in rows].count("2026-11-21") == 5
    assert {r[2] for r in rows if r[0] == "2026-11-20"} == set(range(3000)) | {5000, 5001}


def test_a_refused_output_leaves_both_databases_as_they_were_and_no_lock_behind(clean_databases):
    product_dsn, archive_dsn = clean_databases
    before = seed(product_dsn, archive_dsn, D1, 4)
    spool = SpooledFrames(TYPED, [D1.isoformat()], prefix="adpipes-test-streamed-",
                          stream_into=databases(product_dsn, archive_dsn))
    spool.write(typed_frame(D1, 50))
    spool.finish()
    # Still referenced (as a failing step's frame may hold it): cleanup must end it, not the GC.
    load = spool._streamed
    # The checks refused the day: the output is never handed to the IO manager.
    spool.cleanup()
    assert load is not None
    for dsn in (archive_dsn, product_dsn):
        with psycopg.connect(dsn, autocommit=True) as conn:
            # The day's table is free at once for the next load or reader.
            conn.execute("SET lock_timeout = '5s'")
            assert conn.execute("SELECT count(*) FROM storage_test.typed_p20261120").fetchone() == (4,)
        assert stored(dsn) == before


def test_days_out_of_order_fall_back_to_the_spooled_files(clean_databases):
    product_dsn, archive_dsn = clean_databases
    log = Log()
    spool = SpooledFrames(TYPED, KEYS, prefix="adpipes-test-streamed-",
                          stream_into=databases(product_dsn, archive_dsn), log=log)
    try:
        spool.write(typed_frame(D1, 3))
        spool.write(typed_frame(D2, 2))
        # D1 again after D2: the streamed COPY of D1 has ended, so streaming stops, said once.
        spool.write(typed_frame(D1, 4, offset=100))
        spool.write(typed_frame(D2, 1, offset=100))
        spool.finish()
        assert [m for m in log.messages if m[0] == "warning"] == [
            ("warning", "storage_test.typed: loading while computing stopped (StorageError: storage_test.typed: rows of "
                        "2026-11-20 arrived after that day's load ended); the spooled rows will be loaded "
                        "once they are complete")]
        manager(product_dsn, archive_dsn).handle_output(output_context(KEYS), spool)
    finally:
        spool.cleanup()
    rows = stored(archive_dsn)
    assert stored(product_dsn) == rows
    assert sorted((r[0], r[2]) for r in rows) == sorted(
        [("2026-11-20", n) for n in (0, 1, 2, 100, 101, 102, 103)] + [("2026-11-21", n) for n in (0, 1, 100)])


def test_a_product_session_lost_mid_stream_is_loaded_from_the_files(clean_databases):
    product_dsn, archive_dsn = clean_databases
    seed(product_dsn, archive_dsn, D1, 4)
    log = Log()
    spool = SpooledFrames(TYPED, [D1.isoformat()], prefix="adpipes-test-streamed-",
                          stream_into=databases(product_dsn, archive_dsn), log=log)
    try:
        spool.write(typed_frame(D1, 2000))
        copied_so_far(product_dsn)
        # The product server ends the streaming session (a restart, an idle timeout, a DBA).
        with psycopg.connect(product_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_progress_copy")
        spool.write(typed_frame(D1, 10, offset=5000))
        spool.finish()
        manager(product_dsn, archive_dsn).handle_output(output_context([D1.isoformat()]), spool)
    finally:
        spool.cleanup()
    assert [m[0] for m in log.messages if m[0] != "info"] == ["warning"]
    rows = stored(archive_dsn)
    assert stored(product_dsn) == rows and len(rows) == 2010


def test_a_load_streamed_elsewhere_is_dropped_and_the_files_loaded(clean_databases):
    product_dsn, archive_dsn = clean_databases
    spool = SpooledFrames(TYPED, [D1.isoformat()], prefix="adpipes-test-streamed-",
                          stream_into=[(ARCHIVE, PostgresDatabase(role="archive", dsn=archive_dsn))])
    try:
        spool.write(typed_frame(D1, 5))
        spool.finish()
        # The IO manager writes archive and product; this load covered the archive only.
        manager(product_dsn, archive_dsn).handle_output(output_context([D1.isoformat()]), spool)
    finally:
        spool.cleanup()
    rows = stored(archive_dsn)
    assert len(rows) == 5 and stored(product_dsn) == rows


def test_a_new_day_is_attached_only_at_commit_so_the_table_stays_free_meanwhile(clean_databases):
    product_dsn, archive_dsn = clean_databases
    seed(product_dsn, archive_dsn, D1, 4)
    spool = SpooledFrames(TYPED, [D2.isoformat()], prefix="adpipes-test-streamed-",
                          stream_into=databases(product_dsn, archive_dsn))
    try:
        spool.write(typed_frame(D2, 3000))
        assert copied_so_far(archive_dsn) > 0 and copied_so_far(product_dsn) > 0
        for dsn in (archive_dsn, product_dsn):
            with psycopg.connect(dsn) as conn:
                # What another run's load does first to the table (ensure_table's COMMENT ON
                # COLUMN, SHARE UPDATE EXCLUSIVE): attaching D2 now would hold it off the whole step.
                conn.execute("SET lock_timeout = '2s'")
                conn.execute("COMMENT ON COLUMN storage_test.typed.name IS 'a name'")
                # Readers of the other days are not held either.
                assert conn.execute("SELECT count(*) FROM storage_test.typed WHERE report_date = %s",
                                    (D1,)).fetchone() == (4,)
        spool.finish()
        manager(product_dsn, archive_dsn).handle_output(output_context([D2.isoformat()]), spool)
    finally:
        spool.cleanup()
    for dsn in (archive_dsn, product_dsn):
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM storage_test.typed WHERE report_date = %s",
                                (D2,)).fetchone() == (3000,)
            # Attached like any day table, without the bounds it carried until then.
            assert conn.execute(
                "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE c.relname = 'typed_p20261121'").fetchone() == (1,)
            assert conn.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'storage_test.typed_p20261121'::regclass "
                "AND contype = 'c'").fetchall() == []
