"""Vendor files kept as delivered: what an asset returns for a table that archives a report verbatim.

A raw AppsFlyer day can be a million rows and 600 MB of CSV. Holding it in memory as a DataFrame
(and again as the CSV text handed to COPY) costs several times that, so the API client spools each
response to a file and the asset returns a :class:`DeliveredFiles`: the files, which partition
day each belongs to, the table column name of each header, and the row count the client parsed.
The IO manager streams the files' bytes unchanged into ``COPY``, so the archive holds exactly what
the vendor sent at the speed of ``psql \\copy``.

The files live in a private temporary directory that is removed when the object is cleaned up (the
IO manager does so after writing) or garbage-collected. A run killed before that (SIGKILL, OOM,
a lost machine) cannot clean up: every spool directory therefore records its owner process, and
each new one first removes the directories whose owner is gone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Spool directories are named adpipes-*, and hold this file naming their owner process.
SPOOL_PREFIX = "adpipes-"
OWNER_FILE = ".adpipes-spool-owner"

_log = logging.getLogger("adpipes.storage")


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/{pid}/stat`` after the command name (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _process_start(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, Linux), to tell a reused pid from its owner."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def _owner_alive(owner: dict) -> bool:
    pid = int(owner.get("pid", 0))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    fields = _proc_stat(pid)
    if fields and fields[0] in ("Z", "X"):
        # Exited, not yet reaped by its parent (a PID 1 that never reaps keeps it so for good).
        return False
    started = owner.get("started")
    return started is None or fields is None or fields[19] == started


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def sweep_abandoned_spools(root: Path | None = None) -> list[tuple[Path, int]]:
    """Remove the spool directories (under ``root``, default TMPDIR) whose owner process is gone;
    returns each removed directory with the bytes it held. Directories without an owner file
    (anything not made by :func:`make_spool_directory`) are never touched."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for directory in root.glob(f"{SPOOL_PREFIX}*"):
        marker = directory / OWNER_FILE
        try:
            owner = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(owner, dict):
            # Not a marker this code wrote (valid JSON, but not its object): leave the directory
            # alone rather than fail every run that spools on this machine.
            continue
        if _owner_alive(owner):
            continue
        size = _size(directory)
        shutil.rmtree(directory, ignore_errors=True)
        if not directory.exists():
            removed.append((directory, size))
            _log.warning(f"removed {directory} ({size:,} bytes), left behind by process {owner.get('pid')} "
                         "which no longer runs (a killed run)")
    return removed


def make_spool_directory(prefix: str) -> Path:
    """A new private directory in TMPDIR for vendor files, recording its owner process; the
    directories of dead owners are removed first."""
    if not prefix.startswith(SPOOL_PREFIX):
        raise ValueError(f"spool directories are named {SPOOL_PREFIX}*, got prefix {prefix!r}")
    sweep_abandoned_spools()
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    (directory / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "started": _process_start(os.getpid())}))
    return directory


def expected_spool_bytes(conn, qualified_table: str, days: int) -> int:
    """About the disk a delivery of ``days`` days of ``qualified_table`` needs while it is spooled:
    the largest day archived so far (PostgreSQL's size of a day of text columns is close to its
    CSV) per day, twice (a window's file is split into day files before it is removed). 0 when
    nothing is archived yet: there is nothing to go by, and a full disk is still caught as it
    fills (``SpoolSpaceError``)."""
    row = conn.execute(
        "SELECT max(pg_table_size(i.inhrelid)) FROM pg_inherits i WHERE i.inhparent = to_regclass(%s)",
        (qualified_table,),
    ).fetchone()
    conn.rollback()
    return 2 * days * int(row[0] or 0)


class SpoolSpaceError(OSError):
    """TMPDIR lacks the space a vendor delivery needs; nothing was called."""


def human_bytes(count: float) -> str:
    """``1.2 GB``, ``340 MB``, ``64 KB``: a size a reader takes in at a glance."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:,.0f} {unit}" if unit in ("bytes", "KB") or count >= 10 else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:,.0f} TB"


def require_spool_space(needed_bytes: int, what: str, root: Path | None = None) -> None:
    """Refuse (before any vendor call) when TMPDIR has less free space than ``needed_bytes``."""
    root = Path(root or tempfile.gettempdir())
    free = shutil.disk_usage(root).free
    if free < needed_bytes:
        raise SpoolSpaceError(
            f"{what} needs about {human_bytes(needed_bytes)} of temporary space for the vendor's "
            f"files, but TMPDIR ({root}) has {human_bytes(free)} free. Nothing was called. Free "
            "space there, or point TMPDIR at a larger disk for the Dagster processes, and re-run "
            "(or materialize fewer days at once)."
        )


@dataclass(frozen=True)
class DeliveredCsv:
    """One CSV file as delivered: header line first, then ``rows`` data rows of one partition day."""

    path: Path
    columns: tuple[str, ...]  # table column names of the header's fields, in file order
    rows: int
    report_date: str  # the partition key (YYYY-MM-DD) its rows belong to
    # Columns the file does not carry that every one of its rows gets (column, value): where the
    # rows came from, e.g. the app id the report was requested for.
    constants: tuple[tuple[str, str], ...] = ()


class DeliveredFiles:
    """The delivered CSV files of one asset output, in a temporary directory of their own."""

    def __init__(self, prefix: str = "adpipes-delivered-") -> None:
        self.directory = make_spool_directory(prefix)
        self.files: list[DeliveredCsv] = []
        # Partition days whose delivery was refused: the IO manager leaves their stored rows as
        # they are instead of replacing them (with nothing).
        self.withheld: list[str] = []
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.directory), True)

    def add(self, path: Path, columns: Sequence[str], rows: int, report_date: str,
            constants: dict[str, str] | None = None) -> None:
        if Path(path).parent != self.directory:
            raise ValueError(f"{path} is not inside {self.directory}: files must be spooled there")
        clash = sorted(set(constants or ()) & set(columns))
        if clash:
            raise ValueError(f"{path.name} carries {clash} itself; a constant column may not replace delivered values")
        self.files.append(DeliveredCsv(Path(path), tuple(columns), int(rows), report_date,
                                       tuple(sorted((constants or {}).items()))))

    def withhold(self, report_date: str) -> None:
        """Leave ``report_date``'s stored partition untouched: its delivery was refused."""
        if any(f.report_date == report_date for f in self.files):
            raise ValueError(f"{report_date} has delivered files; a withheld day has none to write")
        if report_date not in self.withheld:
            self.withheld.append(report_date)

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

    def take_streamed_load(self) -> Any:
        """A load of these rows already made while they were written, for the IO manager to
        commit (see :class:`~adpipes.lib.storage.spooled_frames.SpooledFrames`); None here."""
        return None

    def cleanup(self) -> None:
        self._finalizer()

    def __repr__(self) -> str:
        return f"DeliveredFiles({len(self.files)} files, {self.row_count} rows)"
