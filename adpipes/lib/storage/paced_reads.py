"""Files parsed by pyarrow's streaming CSV reader a few blocks ahead of the batches handed on.

pyarrow's streaming reader (``pyarrow.csv.open_csv``) reads its source ahead on an IO thread of
its own, some 32 blocks whatever ``use_threads`` says. When the caller takes batches slower than
the source reads (a COPY of each batch, or the parse itself on a file in the page cache), the
blocks read ahead sit in memory, up to the whole source: counting the rows of a delivered
300K-event report peaked 155 MB higher than the block it parses, and raw_data's read-back of the
archive ~100 MB. :class:`PacedReads` lets the reader read at most ``READ_AHEAD_BLOCKS`` reads
ahead of the batches the caller has taken (more only when the caller has waited a moment for a
batch that needs them: a row longer than the blocks allowed ahead), so memory holds a few blocks
whatever the size and however slow the caller.

pyarrow calls ``read`` from its IO thread, which Python does not know: a read still running in
Python when the interpreter shuts down aborts the process ("PyGILState_Release"). ``close`` ends
the reads and waits for those in progress to return, every source still open when the
interpreter exits is closed first (``atexit``), and the exit waits ``EXIT_GRACE_S`` after the
last read returned.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv

# Reads the parser may make ahead of the batches its caller has taken (one read is one block).
READ_AHEAD_BLOCKS = 3
# How long a read beyond those waits, while the caller waits for a batch, before it reads anyway.
LONG_ROW_WAIT_S = 0.5
# How long ``close`` waits for a read in progress (a pipe's writer may be slow to answer).
CLOSE_WAIT_S = 10.0

# A read that has returned is still on its way back through pyarrow's C code for a moment: the
# interpreter's exit waits that long after the last one.
EXIT_GRACE_S = 0.2

_open_sources: weakref.WeakSet[PacedReads] = weakref.WeakSet()
_last_read_returned = 0.0


class PacedReads:
    """A binary file as pyarrow reads it (any object with ``read``), paced by the caller:
    :meth:`taken` after each batch it takes, :meth:`waiting` around each wait for a batch.
    :meth:`close` ends the reads (a read still waiting returns the end of the data) and closes
    the file."""

    def __init__(self, raw: BinaryIO | None = None) -> None:
        # A subclass may open the file later (CopyOutStream: on entering its block).
        self._reader = raw
        self._pace = threading.Condition()
        self._ahead = 0
        self._caller_waits = False
        self._reading = 0
        self._closing = False
        _open_sources.add(self)

    closed = property(lambda self: self._reader.closed)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        # Counted from the start, waiting included: close() waits for every read to return.
        with self._pace:
            self._reading += 1
        try:
            with self._pace:
                patience = None
                while not (self._ahead < READ_AHEAD_BLOCKS or self._closing):
                    if not self._caller_waits:
                        patience = None
                        self._pace.wait()
                        continue
                    # The caller waits for a batch pyarrow cannot make from the blocks it has (a
                    # row longer than them): read on after a moment. Not at once: pyarrow's
                    # read-ahead reads while the caller waits for a batch it is still parsing.
                    patience = patience or time.monotonic() + LONG_ROW_WAIT_S
                    if time.monotonic() >= patience:
                        break
                    self._pace.wait(patience - time.monotonic())
                if self._closing:
                    return b""
                self._ahead += 1
            return self._reader.read(size)
        finally:
            with self._pace:
                self._reading -= 1
                self._pace.notify_all()
            global _last_read_returned
            _last_read_returned = time.monotonic()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Around the caller's wait for the next batch: a read beyond the blocks allowed ahead goes
        on after ``LONG_ROW_WAIT_S`` meanwhile, since the batch may need more of them (a long row)."""
        with self._pace:
            self._caller_waits = True
            self._pace.notify_all()
        try:
            yield
        finally:
            with self._pace:
                self._caller_waits = False

    def batches(self, reader: pacsv.CSVStreamingReader) -> Iterator[pa.RecordBatch]:
        """``reader``'s batches, each waited for in :meth:`waiting` and :meth:`taken` when
        handed on."""
        while True:
            with self.waiting():
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
            self.taken()
            yield batch

    def taken(self) -> None:
        """The caller took one parsed batch: the reader may read one block more."""
        with self._pace:
            self._ahead = max(0, self._ahead - 1)
            self._pace.notify_all()

    def close(self) -> None:
        with self._pace:
            self._closing = True
            self._pace.notify_all()
            self._pace.wait_for(lambda: self._reading == 0, CLOSE_WAIT_S)
        if self._reader is not None:
            self._reader.close()


@atexit.register
def _close_open_sources() -> None:
    for source in list(_open_sources):
        with contextlib.suppress(Exception):
            source.close()
    time.sleep(max(0.0, _last_read_returned + EXIT_GRACE_S - time.monotonic()))


def paced_csv_batches(path: Path, **options) -> Iterator[pa.RecordBatch]:
    """``pyarrow.csv.open_csv(path, **options)``'s batches, the file read at most
    ``READ_AHEAD_BLOCKS`` blocks ahead of the batch the caller is at."""
    source = PacedReads(open(path, "rb"))
    reader = None
    try:
        with source.waiting():
            reader = pacsv.open_csv(source, **options)
        yield from source.batches(reader)
    finally:
        # Ends a read waiting for the caller first, then the reader's own read-ahead.
        source.close()
        if reader is not None:
            reader.close()
