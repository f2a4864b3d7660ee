"""Vendor files kept as delivered: what an asset returns for a table that archives a report verbatim.

A raw AppsFlyer day can be a million rows and 600 MB of CSV. Holding it in memory as a DataFrame
(and again as the CSV text handed to COPY) costs several times that, so the API client spools each
response to a file and the asset returns a :class:`DeliveredFiles`: the files, which partition
day each belongs to, the table column name of each header, and the row count the client parsed.
The IO manager streams the files' bytes unchanged into ``COPY``, so the archive holds exactly what
the vendor sent at the speed of ``psql \\copy``.

The files live in a private temporary directory that is removed when the object is cleaned up (the
IO manager does so after writing) or garbage-collected.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DeliveredCsv:
    """One CSV file as delivered: header line first, then ``rows`` data rows of one partition day."""

    path: Path
    columns: tuple[str, ...]  # table column names of the header's fields, in file order
    rows: int
    report_date: str  # the partition key (YYYY-MM-DD) its rows belong to


class DeliveredFiles:
    """The delivered CSV files of one asset output, in a temporary directory of their own."""

    def __init__(self, prefix: str = "adpipes-delivered-") -> None:
        self.directory = Path(tempfile.mkdtemp(prefix=prefix))
        self.files: list[DeliveredCsv] = []
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.directory), True)

    def add(self, path: Path, columns: Sequence[str], rows: int, report_date: str) -> None:
        if Path(path).parent != self.directory:
            raise ValueError(f"{path} is not inside {self.directory}: files must be spooled there")
        self.files.append(DeliveredCsv(Path(path), tuple(columns), int(rows), report_date))

    @property
    def row_count(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def columns(self) -> list[str]:
        """Every column of every file, in first-seen order (files may differ after schema drift)."""
        seen: dict[str, None] = {}
        for f in self.files:
            seen.update(dict.fromkeys(f.columns))
        return list(seen)

    def rows_by_date(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for f in self.files:
            counts[f.report_date] = counts.get(f.report_date, 0) + f.rows
        return counts

    def cleanup(self) -> None:
        self._finalizer()

    def __repr__(self) -> str:
        return f"DeliveredFiles({len(self.files)} files, {self.row_count} rows)"
