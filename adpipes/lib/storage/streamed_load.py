"""A spooled table loaded while its rows are still being computed, committed by the IO manager.

``appsflyer/raw_data`` types and validates a day a block at a time on one core; the databases
then parse the spooled day. Done one after the other, the step's last third was Python waiting for
two servers (9-14 s of a 30 s step at 300K events per platform). :class:`StreamedLoad` sends each
block's CSV to every database's ``COPY`` as soon as it is spooled, so the servers parse on the
other core while the next block is computed, inside one open transaction per database that only
the IO manager commits, once the asset has yielded its output (after the quality checks decided
to write it).

Nothing about what is stored changes: the same CSV bytes as the spool file, the same ``TRUNCATE``
+ ``COPY FREEZE`` of each day's child table, the same row-count check, archive committed before
product. Whatever goes wrong with it (a database error, a day's rows arriving after the next
day's, a refusal, a crash) leaves it uncommitted, and the IO manager loads the spool files instead
with every fault rule of :func:`~adpipes.lib.storage.postgres.replace_partitions_from_files`.
While it is open, a day the table already holds is locked as in any load (its readers wait until
it commits or is rolled back); a new day's table is attached only at the commit, since attaching
locks the parent table against other loads' DDL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import pq

from adpipes.lib.storage.dsn import dsn_digest
from adpipes.lib.storage.postgres import (
    COPY_CHUNK_BYTES,
    BoundedQueuedWriter,
    PostgresDatabase,
    StorageError,
    attach_partitions,
    begin_day_loads,
    check_copied_rows,
    day_copy_statement,
    ensure_table,
    start_day_copy,
)
from adpipes.lib.storage.tables import TableSpec

# Pieces of 128 KB each database's COPY may have queued (24 MB): a whole block's CSV, so the asset
# computes the next block while the servers parse this one.
STREAM_QUEUE_PIECES = 192


class StreamedLoad:
    """One uncommitted load of ``spec``'s ``days`` into ``databases`` (name, database) in write
    order, fed one day at a time by :meth:`write` (CSV with a header line first for each day, as
    spooled), ended by :meth:`finish`, then committed by :meth:`commit` or dropped by
    :meth:`close`."""

    def __init__(self, databases: Sequence[tuple[str, PostgresDatabase]], spec: TableSpec,
                 days: Sequence[dt.date], columns: Sequence[str], log: Any = None) -> None:
        self.spec = spec
        self.names = [name for name, _ in databases]
        # Which servers it loads, to be compared with the IO manager's.
        self.dsn_digests = [dsn_digest(database.resolved_dsn()) for _, database in databases]
        self.days = sorted(days)
        self.columns = list(columns)
        self._stack = contextlib.ExitStack()
        self._copying: contextlib.ExitStack | None = None
        self._copies: list[psycopg.Copy] = []
        self._day: dt.date | None = None
        self._rows: dict[dt.date, int] = {}
        self.finished = False
        try:
            conns = [self._stack.enter_context(database.connect()) for _, database in databases]
            for conn in conns:
                ensure_table(conn, spec, [], log=log)
            self._cursors = [self._stack.enter_context(conn.cursor()) for conn in conns]
            # Days new to a database are attached only at commit: attaching takes a lock on the
            # whole table that, held for the step, would stall other runs' loads of it.
            self._created = begin_day_loads(self._cursors, spec, self.days, attach=False)
        except BaseException:
            self._stack.close()
            raise

    def write(self, day: dt.date, chunk: bytes | memoryview, rows: int) -> None:
        """Send ``chunk`` (``rows`` rows of ``day``; a day's first chunk starts with the header)."""
        if day != self._day:
            self._end_day()
            if day in self._rows or day not in self.days:
                # The spool files are complete whatever the order; only this load cannot go back.
                raise StorageError(f"{self.spec.qualified_name}: rows of {day} arrived after that day's load ended")
            start_day_copy(self._cursors, self.spec, day)
            statement = day_copy_statement(self.spec, day, self.columns)
            self._copying = contextlib.ExitStack()
            self._copies = [self._copying.enter_context(
                cur.copy(statement, writer=BoundedQueuedWriter(cur, STREAM_QUEUE_PIECES))) for cur in self._cursors]
            self._day, self._rows[day] = day, 0
        # A megabyte to each database in turn, so both servers parse at once.
        view = memoryview(chunk)
        for start in range(0, len(view), COPY_CHUNK_BYTES):
            for copy in self._copies:
                copy.write(view[start:start + COPY_CHUNK_BYTES])
        self._rows[day] += rows

    def _end_day(self) -> None:
        if self._day is None:
            return
        day, copying = self._day, self._copying
        self._day, self._copying, self._copies = None, None, []
        copying.close()
        check_copied_rows(self._cursors, self.spec, day.isoformat(), "the spooled rows", self._rows[day])

    def finish(self) -> None:
        """End the last day's COPY; a day without rows is emptied (it is replaced with nothing)."""
        self._end_day()
        for day in self.days:
            if day not in self._rows:
                start_day_copy(self._cursors, self.spec, day)
                self._rows[day] = 0
        self.finished = True

    def commit(self) -> dict[str, int]:
        """Commit in write order (archive first); returns the rows written per partition key."""
        if not self.finished:
            raise StorageError(f"{self.spec.qualified_name}: a streamed load was committed before it finished")
        for cur, created in zip(self._cursors, self._created):
            attach_partitions(cur, self.spec, created)
        # COMMIT of a failed transaction rolls it back without an error: check first.
        if any(cur.connection.info.transaction_status != pq.TransactionStatus.INTRANS for cur in self._cursors):
            raise StorageError(f"{self.spec.qualified_name}: a streamed load's transaction failed before its commit")
        for cur in self._cursors:
            cur.connection.commit()
        return {day.isoformat(): rows for day, rows in sorted(self._rows.items())}

    def close(self) -> None:
        """Drop whatever is not committed: a COPY still open is aborted, the connections closed
        (the servers roll their transactions back)."""
        if self._copying is not None:
            copying, self._copying, self._day = self._copying, None, None
            with contextlib.suppress(Exception):
                copying.__exit__(StorageError, StorageError("the load was abandoned"), None)
        self._stack.close()
