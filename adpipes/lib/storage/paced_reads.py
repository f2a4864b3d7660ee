"""Files parsed by pyarrow's streaming CSV reader a few blocks ahead of the batches handed on.

pyarrow's streaming reader (``pyarrow.csv.open_csv``) reads its source ahead on an IO thread of
its own, some 32 blocks whatever ``use_threads`` says. When the caller takes batches slower than
the source reads (a COPY of each batch, or the parse itself on a file in the page cache), the
blocks read ahead sit in memory, up to the whole source: counting the rows of a delivered
300K-event report peaked 155 MB higher than the block it parses, and raw_data's read-back of the
archive ~100 MB. :class:`PacedReads` lets the reader read at most ``READ_AHEAD_BLOCKS`` reads
ahead of the batches the caller has taken, so memory holds a few blocks whatever the size.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv

# Reads the parser may make ahead of the batches its caller has taken (one read is one block).
READ_AHEAD_BLOCKS = 3
# How long a read waits for the caller to take a batch before reading ahead anyway: a row longer
# than the blocks allowed ahead must slow the read, never stall it.
READ_AHEAD_WAIT_S = 1.0


class PacedReads:
    """A binary file as pyarrow reads it (any object with ``read``), paced by the caller:
    :meth:`taken` after each batch it takes. :meth:`close` ends the reads (a read still waiting
    returns the end of the data) and closes the file."""

    def __init__(self, raw: BinaryIO | None = None) -> None:
        # A subclass may open the file later (CopyOutStream: on entering its block).
        self._reader = raw
        self._pace = threading.Condition()
        self._ahead = 0
        self._closing = False

    closed = property(lambda self: self._reader.closed)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        with self._pace:
            self._pace.wait_for(lambda: self._ahead < READ_AHEAD_BLOCKS or self._closing, READ_AHEAD_WAIT_S)
            if self._closing:
                return b""
            self._ahead += 1
        return self._reader.read(size)

    def taken(self) -> None:
        """The caller took one parsed batch: the reader may read one block more."""
        with self._pace:
            self._ahead = max(0, self._ahead - 1)
            self._pace.notify()

    def close(self) -> None:
        with self._pace:
            self._closing = True
            self._pace.notify_all()
        # A BufferedReader's lock makes this wait for a read in progress on the parser's IO thread.
        self._reader.close()


def paced_csv_batches(path: Path, **options) -> Iterator[pa.RecordBatch]:
    """``pyarrow.csv.open_csv(path, **options)``'s batches, the file read at most
    ``READ_AHEAD_BLOCKS`` blocks ahead of the batch the caller is at."""
    source = PacedReads(open(path, "rb"))
    reader = None
    try:
        reader = pacsv.open_csv(source, **options)
        for batch in reader:
            source.taken()
            yield batch
    finally:
        # Ends a read waiting for the caller first, then the reader's own read-ahead. pyarrow's IO
        # thread calls into Python here: a reader left waiting when the interpreter exits aborts
        # it, so callers close what they do not read to the end (a for loop does on its own).
        source.close()
        if reader is not None:
            reader.close()
