"""Partitions read back while the server still writes them (PartitionBatches over CopyOutStream),
on real PostgreSQL: parsed as they come, a COPY cut off part-way is an error, never a shorter day,
and a reader that stops early ends the COPY."""

import contextlib
import datetime as dt
import os
import signal
import threading
import time

import psycopg
import pytest

from adpipes.lib.storage.postgres import (
    CopyOutStream,
    PartitionBatches,
    PostgresDatabase,
    StorageError,
    replace_partitions_from_files,
)
from adpipes_tests.lib.storage.test_delivered import delivered
from adpipes_tests.lib.storage.test_postgres import RAW

D1 = dt.date(2026, 11, 20)
ROWS = 60_000
# ~20 MB: far more than the pipe and the socket buffers hold, so the server is still writing when
# the first block has been parsed.
VALUE = "x" * 300


@pytest.fixture
def thread_errors(monkeypatch) -> list[BaseException]:
    """Exceptions that escaped a thread during the test (pytest only warns of them)."""
    escaped: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_value))
    return escaped


@pytest.fixture
def long_day(clean_databases, monkeypatch):
    _, archive_dsn = clean_databases
    content = b"A\n" + b"".join(f'"{i}, {VALUE}"\n'.encode() for i in range(ROWS))
    with psycopg.connect(archive_dsn) as conn:
        replace_partitions_from_files(conn, RAW, delivered((content, ["a"], ROWS, D1.isoformat())), [D1])
    # Small blocks, as a million-row day has many.
    monkeypatch.setattr("adpipes.lib.storage.postgres.READ_BLOCK_BYTES", 256 << 10)
    return archive_dsn


def copies_to(dsn: str) -> list[int]:
    """Backends running a COPY TO now."""
    return [pid for pid, _ in copy_progress(dsn)]


def copy_progress(dsn: str) -> list[tuple[int, int]]:
    """(backend, rows sent so far) of each COPY TO running now."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT pid, tuples_processed FROM pg_stat_progress_copy WHERE command = 'COPY TO'").fetchall()


def reading(dsn: str) -> contextlib.closing:
    """The day's batches as an iterator closed on leaving the block, even when an assertion
    fails (left open, its COPY would hold the table and the next test's clean-up would wait)."""
    return contextlib.closing(iter(PartitionBatches(PostgresDatabase(role="archive", dsn=dsn), RAW, [D1],
                                                    "Asia/Seoul")))


def copy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("adpipes COPY TO")]


def test_blocks_are_parsed_while_the_server_still_copies_and_every_row_comes_back(long_day, thread_errors):
    with reading(long_day) as batches:
        first = next(batches)
        # Spooled whole first, the COPY would be over before the first block was parsed.
        assert len(copies_to(long_day)) == 1
        rest = list(batches)
        values = [v for b in [first, *rest] for v in b["a"]]
        assert len(values) == ROWS and set(values) == {f"{i}, {VALUE}" for i in range(ROWS)}
        assert copies_to(long_day) == [] and copy_threads() == [] and thread_errors == []


def test_a_copy_cut_off_part_way_fails_the_read_naming_table_and_day(long_day):
    with reading(long_day) as batches:
        read = len(next(batches))
        (pid,) = copies_to(long_day)
        with psycopg.connect(long_day, autocommit=True) as conn:
            assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        with pytest.raises(StorageError) as caught:
            for batch in batches:
                read += len(batch)
        # The rows that came before the cut were not the day: the read fails instead of ending short.
        assert read < ROWS
        message = str(caught.value)
        assert "storage_test.raw" in message and "2026-11-20" in message and "part-way" in message
        assert copy_threads() == []


def test_a_reader_that_stops_early_ends_the_copy(long_day, thread_errors):
    with reading(long_day) as batches:
        next(batches)
        assert len(copies_to(long_day)) == 1
        batches.close()
        # The thread's next write failed, psycopg ended the COPY and the thread ended: nothing is
        # left running on either side.
        assert copy_threads() == []
        assert copies_to(long_day) == []
        # The thread's own write error is expected and kept inside it, not escaped.
        assert thread_errors == []


def test_signals_during_the_read_lose_no_byte(long_day):
    # A signal interrupting a write into the pipe makes write() return having written only part
    # of the buffer (a profiler, a timer or a child process's exit does it): every byte must
    # still arrive, in order. Found under py-spy: a raw pipe write dropped the rest of a buffer
    # and two rows ran together.
    previous = signal.signal(signal.SIGALRM, lambda *_: None)
    done = threading.Event()

    def interrupt_the_copy_thread():
        while not done.is_set():
            for thread in copy_threads():
                if thread.ident is None:  # still starting
                    continue
                with contextlib.suppress(ProcessLookupError):
                    signal.pthread_kill(thread.ident, signal.SIGALRM)
            time.sleep(0.0002)

    sender = threading.Thread(target=interrupt_the_copy_thread)
    sender.start()
    try:
        batches = list(PartitionBatches(PostgresDatabase(role="archive", dsn=long_day), RAW, [D1], "Asia/Seoul"))
    finally:
        done.set()
        sender.join()
        signal.signal(signal.SIGALRM, previous)
    values = [v for b in batches for v in b["a"]]
    assert len(values) == ROWS and set(values) == {f"{i}, {VALUE}" for i in range(ROWS)}


def test_the_reader_takes_only_a_few_blocks_ahead_of_the_batches_handed_on(long_day):
    # pyarrow's streaming reader reads ahead on a thread of its own (some 32 blocks): a read-back
    # arriving faster than it is typed and validated sat there, up to the whole day. Paced, the
    # server is held back by the consumer: with the first batch held, it has sent a few blocks
    # (256 KB each here), the pipe and the socket's buffers, not most of the 20 MB day.
    with reading(long_day) as batches:
        first = len(next(batches))
        time.sleep(1.0)
        ((_, sent),) = copy_progress(long_day)
        assert sent < ROWS // 2
        assert first + sum(len(b) for b in batches) == ROWS  # the rest still comes, every row
        assert copies_to(long_day) == []


def test_a_consumer_that_fails_gets_its_own_error_and_the_copy_ends(long_day, thread_errors):
    def consume():
        for index, _ in enumerate(PartitionBatches(PostgresDatabase(role="archive", dsn=long_day), RAW, [D1],
                                                   "Asia/Seoul")):
            if index == 1:
                raise RuntimeError("the consumer's own failure")

    with pytest.raises(RuntimeError, match="the consumer's own failure"):
        consume()
    assert copy_threads() == [] and copies_to(long_day) == [] and thread_errors == []


def test_rows_parsed_that_are_not_the_servers_count_are_refused(long_day, monkeypatch):
    # The last line of defence against a read that lost rows in a way the CSV parser accepts (a
    # cut inside a quoted value with line breaks can still be valid CSV): here one whole row is
    # taken out of the second block read, and the day still parses.
    read = CopyOutStream.read
    calls = []

    def losing_a_row(self, size=-1):
        data = read(self, size)
        calls.append(len(data))
        if len(calls) == 2:
            first = data.index(b"\n")
            data = data[:first] + data[data.index(b"\n", first + 1):]
        return data

    monkeypatch.setattr(CopyOutStream, "read", losing_a_row)
    with pytest.raises(StorageError, match=f"copied out {ROWS:,} rows and {ROWS - 1:,} were parsed"):
        list(PartitionBatches(PostgresDatabase(role="archive", dsn=long_day), RAW, [D1], "Asia/Seoul"))


def test_a_copy_that_cannot_start_leaves_no_pipe_open(clean_databases, monkeypatch):
    _, archive_dsn = clean_databases

    def refused(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refused)
    open_before = len(os.listdir("/proc/self/fd"))
    with psycopg.connect(archive_dsn) as conn:
        with pytest.raises(RuntimeError, match="can't start new thread"):
            with CopyOutStream(conn, "COPY (SELECT 1) TO STDOUT", "a test COPY"):
                pass
        assert len(os.listdir("/proc/self/fd")) == open_before + 1  # the connection's socket alone
