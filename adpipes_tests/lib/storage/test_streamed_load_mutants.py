"""StreamedLoad's rules one at a time (lib/storage/streamed_load.py; the survivors of its first
mutation run), on real PostgreSQL: a load abandoned mid-COPY (a failed step) or after a lost
session is rolled back in both databases, frees its days at once and leaves no thread behind; a
day without rows is emptied; the rows the client counted must be the rows PostgreSQL read; a load
commits only once finished; a block is queued whole while a server is still busy; the layout
warning goes to the run's log. The rules are those of the module's docstring, docs/operations.md
("raw_data loads while it computes") and docs/development.md (a queue holding a whole block)."""

import datetime as dt
import threading
import time

import pandera.pandas as pa
import psycopg
import pytest

from adpipes.lib.storage.postgres import StorageError
from adpipes.lib.storage.spooled_frames import SpooledFrames
from adpipes.lib.storage.streamed_load import StreamedLoad
from adpipes.lib.storage.tables import TableSpec, report_date_column
from adpipes_tests.lib.storage.test_postgres import TYPED, typed_frame
from adpipes_tests.lib.storage.test_streamed_load import D1, D2, Log, copied_so_far, databases, seed

COLUMNS = [c for c in TYPED.column_names if c != "report_date"]
LONG = 30.0  # seconds a thread that must end is waited for (a hang otherwise, not a duration)


def csv(rows: int, name: str = "a name") -> bytes:
    """A spooled day's CSV as the spool writes it: the header line, then ``rows`` rows."""
    line = f"{name},7,true,2026-11-20 01:00:00+00,1.5\n".encode()
    return (",".join(COLUMNS) + "\n").encode() + line * rows


def day_rows(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '5s'")  # a day still held by the load fails here
        return {d.isoformat(): n for d, n in conn.execute(
            "SELECT report_date, count(*) FROM storage_test.typed GROUP BY 1").fetchall()}


def day_table_exists(dsn: str, day: dt.date) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT to_regclass(%s)", (f"storage_test.typed_p{day:%Y%m%d}",)).fetchone()[0] is not None


def threads_ended(before: set[threading.Thread]) -> list[str]:
    """The threads started since ``before`` still running after a generous wait (for them all)."""
    deadline = time.monotonic() + LONG
    for thread in threading.enumerate():
        if thread not in before:
            thread.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]


@pytest.mark.parametrize("product_session_lost", [False, True], ids=["both-sessions-up", "product-session-lost"])
def test_a_step_failing_mid_copy_rolls_back_frees_the_day_and_leaves_no_thread(clean_databases, product_session_lost):
    product_dsn, archive_dsn = clean_databases
    seed(product_dsn, archive_dsn, D1, 4)
    before = set(threading.enumerate())
    spool = SpooledFrames(TYPED, [D1.isoformat()], prefix="adpipes-test-streamed-",
                          stream_into=databases(product_dsn, archive_dsn))
    spool.write(typed_frame(D1, 2000))
    if product_session_lost:
        # Ending the load then finds the product COPY broken; the archive's transaction must
        # still be ended at once.
        copied_so_far(product_dsn)
        with psycopg.connect(product_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_progress_copy "
                         "WHERE datname = current_database()")
    # Still referenced (as a failing step's frame may hold it): cleanup must end the COPYs, not
    # the garbage collector (which would close psycopg's copy generators).
    load = spool._streamed
    # The step fails before finishing its output: the spool is cleaned up, the load abandoned.
    spool.cleanup()
    assert load is not None
    assert threads_ended(before) == []
    for dsn in (archive_dsn, product_dsn):
        assert day_rows(dsn) == {D1.isoformat(): 4}


def test_a_day_without_rows_is_emptied_and_counted_as_none(clean_databases):
    product_dsn, archive_dsn = clean_databases
    seed(product_dsn, archive_dsn, D1, 4)
    seed(product_dsn, archive_dsn, D2, 4)
    load = StreamedLoad(databases(product_dsn, archive_dsn), TYPED, [D1, D2], COLUMNS)
    try:
        load.write(D1, csv(3), 3)
        load.finish()
        counts = load.commit()
    finally:
        load.close()
    assert counts == {D1.isoformat(): 3, D2.isoformat(): 0}
    for dsn in (archive_dsn, product_dsn):
        # D2 was replaced with nothing: its table stays, empty (a day loaded with no rows).
        assert day_rows(dsn) == {D1.isoformat(): 3} and day_table_exists(dsn, D2)


def test_rows_counted_otherwise_than_postgresql_read_them_stop_the_load(clean_databases):
    product_dsn, archive_dsn = clean_databases
    seed(product_dsn, archive_dsn, D1, 4)
    load = StreamedLoad(databases(product_dsn, archive_dsn), TYPED, [D1], COLUMNS)
    try:
        load.write(D1, csv(3), 4)  # the client counted a row PostgreSQL will not find
        with pytest.raises(StorageError):
            load.finish()
    finally:
        load.close()
    for dsn in (archive_dsn, product_dsn):
        assert day_rows(dsn) == {D1.isoformat(): 4}


def test_a_load_is_not_committed_before_it_is_finished(clean_databases):
    product_dsn, archive_dsn = clean_databases
    seed(product_dsn, archive_dsn, D1, 4)
    load = StreamedLoad(databases(product_dsn, archive_dsn), TYPED, [D2], COLUMNS)
    try:
        with pytest.raises(StorageError):
            load.commit()
    finally:
        load.close()
    for dsn in (archive_dsn, product_dsn):
        # No empty D2 was committed (an empty day table reads as "loaded, no rows").
        assert not day_table_exists(dsn, D2) and day_rows(dsn) == {D1.isoformat(): 4}


HOLD = 390039  # the advisory lock the product server's COPY waits for, below


def test_a_whole_block_is_queued_while_a_server_is_still_busy(clean_databases):
    # docs/development.md: each block goes to a queue "holding a whole block" (24 MB), so the asset
    # computes the next block while the servers parse this one. Here product's server cannot parse
    # at all (each row waits for a lock the test holds): writing a 20 MB block must still return.
    product_dsn, archive_dsn = clean_databases
    seed(product_dsn, archive_dsn, D1, 4)
    with psycopg.connect(product_dsn, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION storage_test.hold() RETURNS trigger LANGUAGE plpgsql AS "
                      f"$$ BEGIN PERFORM pg_advisory_xact_lock_shared({HOLD}); RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER hold BEFORE INSERT ON storage_test.typed_p20261120 "
                     "FOR EACH ROW EXECUTE FUNCTION storage_test.hold()")
    block = csv(80_000, name="n" * 240)
    assert 20 << 20 < len(block) < 23 << 20
    holder = psycopg.connect(product_dsn, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (HOLD,))
    load = StreamedLoad(databases(product_dsn, archive_dsn), TYPED, [D1], COLUMNS)
    writing = threading.Thread(target=load.write, args=(D1, block, 80_000), daemon=True)
    try:
        writing.start()
        writing.join(LONG)
        queued = not writing.is_alive()
        # The setup holds: product's server waits at the block's first row (polled: it may not
        # have received any of it yet when the write returns).
        deadline, held = time.monotonic() + LONG, 0
        while not held and time.monotonic() < deadline:
            held = holder.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s "
                                  "AND NOT granted", (HOLD,)).fetchone()[0]
            time.sleep(0.05)
        holder.close()  # product's server parses on
        writing.join(LONG)
        load.finish()
        counts = load.commit()
    finally:
        holder.close()
        load.close()
    assert queued and held == 1  # the write returned while product's COPY still waited
    assert counts == {D1.isoformat(): 80_000}
    for dsn in (archive_dsn, product_dsn):
        assert day_rows(dsn) == {D1.isoformat(): 80_000}


def test_the_layout_change_warning_goes_to_the_run_s_log(clean_databases):
    # docs/vendor-contracts.md: a table of an older layout is kept under another name "and the
    # run's log says so"; a streamed load's first write creates the new table too.
    product_dsn, archive_dsn = clean_databases
    seed(product_dsn, archive_dsn, D1, 4)
    relaid = TableSpec(
        asset_key=TYPED.asset_key,
        dataframe_schema=pa.DataFrameSchema({"report_date": report_date_column(),
                                             "kind": pa.Column("str", nullable=False)}),
        databases=TYPED.databases,
        layout_version=2,
    )
    log = Log()
    load = StreamedLoad(databases(product_dsn, archive_dsn), relaid, [D1], ["kind"], log=log)
    load.close()
    warnings = [m for level, m in log.messages if level == "warning"]
    assert len(warnings) == 2 and all("storage_test.typed_layout1" in m for m in warnings)
