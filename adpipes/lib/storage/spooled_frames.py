"""Typed rows spooled to disk a block at a time, as the CSV that ``COPY`` reads.

An asset that builds a big table block by block (``appsflyer/raw_data``: a million rows a day,
a month in a backfill) would otherwise concatenate every block into one DataFrame and hand it to
the IO manager, which formats it as CSV again: memory grows with the rows and the range, and the
databases only start parsing once everything is built. :class:`SpooledFrames` instead formats each
block as soon as it is validated (pyarrow's CSV writer, the same conversion
:func:`~adpipes.lib.storage.postgres.replace_partitions` uses) and appends it to its partition
day's file. The asset returns it like vendor files (it is a :class:`DeliveredFiles`), and the IO
manager streams each day's file into every database at once, checking COPY's row count against
the rows written here. Memory holds one block, whatever the size of the day or the range.

Given the databases (``stream_into``), each block's CSV also goes at once to a
:class:`~adpipes.lib.storage.streamed_load.StreamedLoad`, so the servers parse while the next block
is computed; the IO manager commits that load instead of reading the files, and reads the files
whenever the streamed load broke (the first failure is logged, the rest of the step goes on).
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from adpipes.lib.storage.delivered import DeliveredFiles
from adpipes.lib.storage.postgres import (
    COPY_BATCH_ROWS,
    PostgresDatabase,
    StorageError,
    arrow_table,
    check_dates,
    error_summary,
)
from adpipes.lib.storage.streamed_load import StreamedLoad
from adpipes.lib.storage.tables import PARTITION_COLUMN, TableSpec


class SpooledFrames(DeliveredFiles):
    """The rows of ``spec``'s table for ``partitions``, written by :meth:`write` one DataFrame
    block at a time into one CSV file per partition day (header line of table column names, no
    ``report_date``: the day is the file's). :meth:`finish` hands the files over for writing; a
    day without rows has no file and is written empty.

    ``stream_into``: the databases (name, database, in write order) to load while the rows are
    written (:class:`StreamedLoad`); it loads well when the days come one after the other."""

    def __init__(self, spec: TableSpec, partitions: Sequence[str], prefix: str,
                 stream_into: Sequence[tuple[str, PostgresDatabase]] = (), log: Any = None) -> None:
        super().__init__(prefix=prefix)
        self.spec = spec
        self.partitions = list(partitions)
        self.table_columns = [c for c in spec.column_names if c != PARTITION_COLUMN]
        self._open: dict[str, tuple[BinaryIO, Path]] = {}
        self._rows: dict[str, int] = {}
        self._finished = False
        self._log = log
        self._streamed: StreamedLoad | None = None
        if stream_into:
            try:
                self._streamed = StreamedLoad(stream_into, spec, [dt.date.fromisoformat(p) for p in self.partitions],
                                              self.table_columns, log=log)
            except Exception as exc:
                self._stream_broke(exc)

    def write(self, frame: pd.DataFrame) -> None:
        """Append ``frame``'s rows (every table column, ``report_date`` among them) to their days."""
        if self._finished:
            raise StorageError(f"{self.spec.qualified_name}: rows written after the spool was finished")
        if not len(frame):
            return
        missing = [c for c in (PARTITION_COLUMN, *self.table_columns) if c not in frame.columns]
        if missing:
            raise StorageError(f"{self.spec.qualified_name}: the rows lack columns {missing}; nothing was written")
        dates = frame[PARTITION_COLUMN].astype("str")
        if dates.isna().any():
            raise StorageError(f"{self.spec.qualified_name}: rows without {PARTITION_COLUMN}; nothing was written")
        check_dates(self.spec, list(dates.unique()), [dt.date.fromisoformat(p) for p in self.partitions])
        data = arrow_table(frame.assign(**{PARTITION_COLUMN: dates}), [PARTITION_COLUMN, *self.table_columns])
        days = data.column(PARTITION_COLUMN)
        present = pc.unique(days).to_pylist()
        for day in present:
            part = data if len(present) == 1 else data.filter(pc.equal(days, day))
            self._append(day, part.drop_columns([PARTITION_COLUMN]))

    def _append(self, day: str, rows: pa.Table) -> None:
        if day not in self._open:
            path = self.directory / f"{day}.csv"
            handle = path.open("wb")
            self._open[day] = (handle, path)
            self._rows[day] = 0
            header = True
        else:
            header = False
        handle, _ = self._open[day]
        buffer = io.BytesIO()
        pacsv.write_csv(rows, buffer, pacsv.WriteOptions(include_header=header, batch_size=COPY_BATCH_ROWS))
        chunk = buffer.getbuffer()  # a view: each block's CSV is not copied again
        handle.write(chunk)
        self._rows[day] += rows.num_rows
        if self._streamed is not None:
            try:
                self._streamed.write(dt.date.fromisoformat(day), chunk, rows.num_rows)
            except Exception as exc:
                self._stream_broke(exc)

    def _stream_broke(self, exc: Exception) -> None:
        """Stop streaming (the files are complete; the IO manager loads them instead)."""
        if self._streamed is not None:
            self._streamed.close()
            self._streamed = None
        if self._log is not None:
            self._log.warning(f"{self.spec.qualified_name}: loading while computing stopped ({error_summary(exc)}); "
                              "the spooled rows will be loaded once they are complete")

    def take_streamed_load(self) -> StreamedLoad | None:
        """The finished streamed load of every spooled row, for the IO manager to commit (and
        close), or None when there is none to commit; the spool no longer closes it."""
        load, self._streamed = self._streamed, None
        if load is not None and not load.finished:
            load.close()
            return None
        return load

    def finish(self) -> SpooledFrames:
        """Close the day files and list them for the IO manager; returns self."""
        if not self._finished:
            for day, (handle, path) in sorted(self._open.items()):
                handle.close()
                self.add(path, self.table_columns, self._rows[day], report_date=day)
            self._open.clear()
            self._finished = True
            if self._streamed is not None:
                try:
                    self._streamed.finish()
                except Exception as exc:
                    self._stream_broke(exc)
        return self

    def cleanup(self) -> None:
        if self._streamed is not None:
            self._streamed.close()
            self._streamed = None
        for handle, _ in self._open.values():
            handle.close()
        self._open.clear()
        super().cleanup()

    def __repr__(self) -> str:
        return f"SpooledFrames({self.spec.qualified_name}, {sum(self._rows.values())} rows)"
