"""PacedReads' pacing and closing, one rule at a time (lib/storage/paced_reads.py; the survivors of
its first mutation run). The rules are those of the module's docstring and docs/development.md
("Read-ahead"): the reader reads at most READ_AHEAD_BLOCKS (3) reads ahead of the batches taken,
one more per batch taken; ``close`` ends a read waiting for the caller, waits for the reads in
progress to return (giving up after CLOSE_WAIT_S) and closes the file. Reads run on threads of
their own, as pyarrow's IO thread runs them; a read that should not return is checked to be still
waiting some time later, one that should is waited for generously (a hang, not a duration)."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from adpipes.lib.storage.paced_reads import PacedReads, paced_csv_batches

BLOCK = 4096
AHEAD = 3  # READ_AHEAD_BLOCKS, as docs/development.md gives it
LONG = 30.0  # seconds a read or close that must end is waited for (a hang otherwise)
SETTLE = 0.7  # seconds after which a read that must wait is checked to be still waiting


class Read:
    """One ``source.read(BLOCK)`` on a daemon thread (a mutant that hangs must not hang pytest)."""

    def __init__(self, source: PacedReads, size: int = BLOCK) -> None:
        self.result: list[bytes] = []
        self.thread = threading.Thread(target=lambda: self.result.append(source.read(size)), daemon=True)
        self.thread.start()

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def wait(self, timeout: float = LONG) -> bytes | None:
        self.thread.join(timeout)
        return self.result[0] if self.result else None


def first_done(reads: list[Read], timeout: float = LONG) -> list[Read]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(r.done for r in reads):
        time.sleep(0.01)
    return [r for r in reads if r.done]


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 4 * 40)  # 40 blocks
    return path


def test_each_batch_taken_lets_exactly_one_more_block_be_read(data):
    source = PacedReads(open(data, "rb"))
    try:
        # The first three reads go at once, the caller having taken nothing yet.
        for _ in range(AHEAD):
            assert len(Read(source).wait()) == BLOCK
        # Two more wait: the reader is three blocks ahead.
        waiting = [Read(source), Read(source)]
        time.sleep(SETTLE)
        assert not any(r.done for r in waiting)
        # One batch taken: one of them reads, the other still waits.
        source.taken()
        went = first_done(waiting)
        assert len(went) == 1 and len(went[0].wait()) == BLOCK
        time.sleep(SETTLE)
        assert [r.done for r in waiting].count(False) == 1
        # Another batch taken: the second one reads.
        source.taken()
        assert all(len(r.wait()) == BLOCK for r in waiting)
        # The caller catches up (as many batches taken as reads made): three reads go at once again.
        for _ in range(AHEAD):
            source.taken()
        again = [Read(source) for _ in range(AHEAD)]
        assert all(r.wait() is not None and len(r.result[0]) == BLOCK for r in again)
    finally:
        source.close()


def test_close_ends_a_read_waiting_for_the_caller(data):
    source = PacedReads(open(data, "rb"))
    for _ in range(AHEAD):
        assert len(Read(source).wait()) == BLOCK
    held = Read(source)
    time.sleep(SETTLE)
    assert not held.done
    closing = threading.Thread(target=source.close, daemon=True)
    closing.start()
    # The waiting read returns the end of the data, and close returns with the file closed.
    assert held.wait() == b""
    closing.join(LONG)
    assert not closing.is_alive() and source.closed


@pytest.fixture
def pipe():
    """A pipe read unbuffered (a read in progress blocks in the kernel until the test writes)."""
    r, w = os.pipe()
    raw = open(r, "rb", buffering=0)
    yield raw, w
    try:
        os.close(w)
    except OSError:
        pass  # closed by the test
    raw.close()


def test_close_waits_for_every_read_in_progress_then_closes_the_file(pipe, monkeypatch):
    # Close's give-up time made long, so that close returning tells the reads ended, not that it
    # gave up on them.
    monkeypatch.setattr("adpipes.lib.storage.paced_reads.CLOSE_WAIT_S", 600.0)
    raw, w = pipe
    source = PacedReads(raw)
    reads = [Read(source, 5), Read(source, 5)]
    time.sleep(SETTLE)
    assert not any(r.done for r in reads)  # both in the kernel, waiting for bytes
    closing = threading.Thread(target=source.close, daemon=True)
    closing.start()
    time.sleep(SETTLE)
    assert closing.is_alive() and not raw.closed
    os.write(w, b"12345")
    assert len(first_done(reads)) == 1
    time.sleep(SETTLE)
    # One read still in progress: close still waits, the file still open.
    assert closing.is_alive() and not raw.closed
    os.write(w, b"67890")
    assert sorted(r.wait() for r in reads) == [b"12345", b"67890"]
    closing.join(LONG)
    assert not closing.is_alive() and raw.closed


def test_close_gives_up_on_a_read_that_never_returns(pipe, monkeypatch):
    # A pipe's writer that never answers: close waits CLOSE_WAIT_S for the read, then closes anyway.
    monkeypatch.setattr("adpipes.lib.storage.paced_reads.CLOSE_WAIT_S", 0.3)
    raw, w = pipe
    source = PacedReads(raw)
    stuck = Read(source, 5)
    time.sleep(SETTLE)
    assert not stuck.done
    closing = threading.Thread(target=source.close, daemon=True)
    closing.start()
    closing.join(LONG)
    done = not closing.is_alive()
    os.close(w)  # the read gets the end of the pipe and ends
    assert done and raw.closed
    assert stuck.wait() == b""


def test_every_batch_of_a_file_is_a_record_batch_and_they_end(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_bytes(b"a,b\n" + b"".join(f"{i},{'z' * 50}\n".encode() for i in range(3000)))
    batches = paced_csv_batches(path, read_options=pacsv.ReadOptions(block_size=BLOCK))
    taken = []
    try:
        for batch in batches:
            taken.append(batch)
            if len(taken) > 1000:  # far more than the file holds: a reader that never ends
                break
    finally:
        batches.close()
    assert all(isinstance(b, pa.RecordBatch) for b in taken)
    assert [v for b in taken for v in b.column(0).to_pylist()] == list(range(3000))


def test_a_file_pyarrow_cannot_open_raises_pyarrow_s_error_and_is_closed(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    batches = paced_csv_batches(path)
    with pytest.raises(pa.ArrowInvalid, match="Empty CSV file"):
        next(batches)
    assert not [fd for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == str(path)]


def test_a_program_that_read_a_file_paced_exits_cleanly(tmp_path):
    # The exit handler closes the sources and waits EXIT_GRACE_S after the last read returned:
    # nothing is printed, nothing raised, the status is 0.
    path = tmp_path / "rows.csv"
    path.write_bytes(b"a\n" + b"".join(f"{i}\n".encode() for i in range(1000)))
    program = (
        "import pyarrow.csv as pacsv; from pathlib import Path; "
        "from adpipes.lib.storage.paced_reads import paced_csv_batches; "
        f"print(sum(b.num_rows for b in paced_csv_batches(Path({str(path)!r}), "
        f"read_options=pacsv.ReadOptions(block_size={BLOCK}))))"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    # The same file read here too (which also lets mutmut map this test to the paced reads: it
    # records only the calls made in the test's own process).
    rows = sum(b.num_rows for b in paced_csv_batches(path, read_options=pacsv.ReadOptions(block_size=BLOCK)))
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, str(rows), "") and rows == 1000
