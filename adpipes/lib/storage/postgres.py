"""PostgreSQL storage: database resources and the partition-replacing IO manager.

Every table is declaratively partitioned by ``report_date`` with one child table per day, so
replacing a day is ``TRUNCATE`` + ``COPY`` of one child inside one transaction (a re-run never
duplicates rows, a failed load leaves the previous rows in place), and pruning a day is a
``DROP``/``DETACH`` of one child rather than a ``DELETE`` over the whole table.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import os
import queue
import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter
from pydantic import Field

from adpipes.lib.storage.delivered import DeliveredFiles
from adpipes.lib.storage.dsn import connection_failure_reason, describe_dsn, dsn_digest, dsn_problem
from adpipes.lib.storage.names import add_vendor_columns, shortened_names
from adpipes.lib.storage.paced_reads import PacedReads
from adpipes.lib.storage.tables import ARCHIVE, PARTITION_COLUMN, PRODUCT, TABLES, TableSpec

# Rows per CSV chunk handed to COPY: large enough that per-chunk overhead vanishes, small enough
# that the CSV text of one chunk stays a few tens of MB.
COPY_BATCH_ROWS = 100_000
# Bytes per chunk when streaming a delivered file into COPY, and per block when parsing a read-back.
COPY_CHUNK_BYTES = 1 << 20
READ_BLOCK_BYTES = 16 << 20
# Pieces (psycopg sends at most 128 KB at a time) a COPY writer thread may have queued for its
# server: enough to keep it busy while the next chunk is read or formatted (4 MB).
COPY_QUEUE_PIECES = 32
# Input metadata asking the IO manager for a lazy PartitionBatches instead of one DataFrame, so a
# downstream asset can process a million-row partition a block at a time.
LOAD_AS_BATCHES = "adpipes/load_as_batches"


_default_log = logging.getLogger("adpipes.storage")
# The table comment recording the layout version of an adpipes table (TableSpec.layout_version).
LAYOUT_COMMENT = "adpipes layout {version}"
_LAYOUT_PATTERN = re.compile(r"adpipes layout (\d+)")


class StorageError(Exception):
    """A load or read that cannot proceed; the message names table, partition and the fix."""


def error_summary(exc: BaseException) -> str:
    """``Class: first line`` of an error, for a message of one line (PostgreSQL's detail and
    hint lines, and a driver's quoting of a DSN, stay out)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else 'no message'}"


class PostgresDatabase(dg.ConfigurableResource):
    """One PostgreSQL database (product or archive), reached by a DSN from the environment.

    Dev mode uses ``adpipes.dev.resources.EmbeddedPostgresDatabase``, which falls back to the
    embedded PostgreSQL when no DSN is configured.
    """

    role: str = Field(description="'product' or 'archive': which of the two databases this is.")
    dsn: str | None = Field(
        default=None,
        description="PostgreSQL URI (from ADPIPES_PRODUCT_DSN / ADPIPES_ARCHIVE_DSN).",
    )

    def resolved_dsn(self) -> str:
        if not self.dsn:
            variable = f"ADPIPES_{self.role.upper()}_DSN"
            raise StorageError(f"no {self.role} database configured: set {variable}")
        # A line break a secret file or an environment file left around it is not part of the
        # DSN (libpq cannot read a URI after leading whitespace).
        return self.dsn.strip()

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        dsn = self.resolved_dsn()
        variable = f"ADPIPES_{self.role.upper()}_DSN"
        problem = dsn_problem(dsn)
        if problem:
            # Never the DSN, nor libpq's reading of it: a misparsed password shows up as a "host".
            raise StorageError(f"{variable} is not a valid PostgreSQL DSN: {problem}")
        try:
            conn = psycopg.connect(dsn, autocommit=False, application_name="adpipes")
        except psycopg.Error as exc:
            raise StorageError(
                f"cannot connect to the {self.role} database ({describe_dsn(dsn)}): "
                f"{connection_failure_reason(exc)}. Check {variable} and that the server is reachable."
            ) from None
        try:
            yield conn
        finally:
            conn.close()


def partition_table_name(table: str, day: dt.date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def partition_day(table: str, child: str) -> dt.date | None:
    """The day of a child table named by :func:`partition_table_name`, else None."""
    prefix = f"{table}_p"
    if not child.startswith(prefix):
        return None
    try:
        return dt.datetime.strptime(child.removeprefix(prefix), "%Y%m%d").date()
    except ValueError:
        return None


def _ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


def _lock_schema_ddl(cur: psycopg.Cursor, schema: str) -> None:
    # Concurrent runs create the schema, child tables and columns; a transaction-scoped advisory
    # lock keeps their DDL from racing. Per schema, not per table: two tables of one schema
    # (e.g. daily_report and cohort_ltv in parallel steps) both run CREATE SCHEMA IF NOT EXISTS,
    # which is not safe against a concurrent create.
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"adpipes:ddl:{schema}",))


def create_if_missing(cur: psycopg.Cursor, schema: str, tables: Sequence[str], statements: Sequence[str]) -> None:
    """Run idempotent DDL (``CREATE ... IF NOT EXISTS``) for a schema of adpipes' own tables,
    unless every one of ``tables`` exists already.

    Every run process creates them on first use; the schema's DDL lock keeps concurrent creators
    apart until the transaction ends. The existence probe first keeps the common case (tables
    there) from taking that lock on every write, which would serialize e.g. the call ledger's
    counting across runs, and from re-running COMMENT ON, which needs the tables' owner.
    """
    cur.execute(
        "SELECT bool_and(to_regclass(name) IS NOT NULL) FROM unnest(%s::text[]) AS name",
        ([f"{schema}.{table}" for table in tables],),
    )
    if cur.fetchone()[0]:
        return
    _lock_schema_ddl(cur, schema)
    for statement in statements:
        cur.execute(statement)


def existing_columns(cur: psycopg.Cursor, schema: str, table: str) -> list[str]:
    cur.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, table),
    )
    return [row[0] for row in cur.fetchall()]


def legacy_table_name(table: str, version: int) -> str:
    """Where a table of an older layout is kept when its layout changes (``cohort_ltv_layout1``)."""
    return f"{table}_layout{version}"


def stored_layout_version(cur: psycopg.Cursor | psycopg.Connection, spec: TableSpec) -> int | None:
    """The layout version of ``spec``'s stored table (from its comment; 1 for a table adpipes
    created before layouts were recorded), or None when there is no table."""
    row = cur.execute("SELECT to_regclass(%s) IS NOT NULL, obj_description(to_regclass(%s), 'pg_class')",
                      (spec.qualified_name, spec.qualified_name)).fetchone()
    if not row[0]:
        return None
    match = _LAYOUT_PATTERN.search(row[1] or "")
    return int(match.group(1)) if match else 1


def _keep_older_layout(cur: psycopg.Cursor, spec: TableSpec, log: Any) -> None:
    """Rename an existing table of an older layout (and its day partitions) out of the way.

    A layout change (a new key column, columns that changed meaning) cannot be applied to rows
    stored under the old one, and the archive's rows may be the only copy left: they are kept
    under ``{table}_layout{N}``, untouched, and the table is created anew. Nothing is dropped.
    """
    schema, table = spec.schema_name, spec.table_name
    version = stored_layout_version(cur, spec)
    if version is None or version >= spec.layout_version:
        return
    cur.execute("SELECT to_regclass(%s)::oid", (spec.qualified_name,))
    (oid,) = cur.fetchone()
    legacy = legacy_table_name(table, version)
    cur.execute("SELECT to_regclass(%s)", (f"{schema}.{legacy}",))
    if cur.fetchone()[0] is not None:
        raise StorageError(
            f"{schema}.{table} has layout {version} and adpipes now writes layout {spec.layout_version}; "
            f"the old table would be kept as {schema}.{legacy}, which exists already. Rename or "
            f"archive {schema}.{legacy} by hand, then re-run."
        )
    cur.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s ORDER BY 1", (oid,),
    )
    children = [name for (name,) in cur.fetchall()]
    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(_ident(schema, table), _ident(legacy)))
    for child in children:
        day = partition_day(table, child)
        if day is not None:
            cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                _ident(schema, child), _ident(partition_table_name(legacy, day))))
    cur.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(
        _ident(schema, legacy),
        sql.Literal(f"adpipes: {schema}.{table} as stored in layout {version}, kept when layout "
                    f"{spec.layout_version} replaced it (never written again)"),
    ))
    (log or _default_log).warning(
        f"{schema}.{table}: the stored table has layout {version} and adpipes writes layout "
        f"{spec.layout_version} (columns or key changed); the old table and its {len(children)} "
        f"partition(s) are kept unchanged as {schema}.{legacy} and {schema}.{table} is created "
        "anew. Re-materialize the partitions you need in the new layout; drop the old table when "
        "it is no longer needed (never in the archive unless its data is kept elsewhere)."
    )


def ensure_table(
    conn: psycopg.Connection,
    spec: TableSpec,
    days: Sequence[dt.date],
    extra_text_columns: Sequence[str] = (),
    log: Any = None,
) -> None:
    """Create schema, parent table, missing columns and the day partitions; commit.

    An existing table of an older layout (``TableSpec.layout_version``) is first renamed out of
    the way, with its rows (see :func:`_keep_older_layout`). The loads pass no ``days``: they
    create their day partitions inside the load's own transaction (:func:`create_partitions`), so
    a failed load leaves no empty day behind.
    """
    schema, table = spec.schema_name, spec.table_name
    with conn.cursor() as cur:
        _lock_schema_ddl(cur, spec.schema_name)
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(schema)))
        _keep_older_layout(cur, spec, log)
        column_sql = sql.SQL(", ").join(
            sql.SQL("{} {}{}").format(
                _ident(c.name),
                sql.SQL(c.pg_type),
                sql.SQL("" if c.nullable else " NOT NULL"),
            )
            for c in spec.columns
        )
        cur.execute("SELECT to_regclass(%s)", (f"{schema}.{table}",))
        created = cur.fetchone()[0] is None
        cur.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}) PARTITION BY RANGE ({})").format(
                _ident(schema, table), column_sql, _ident(PARTITION_COLUMN)
            )
        )
        if created:
            cur.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(
                _ident(schema, table), sql.Literal(LAYOUT_COMMENT.format(version=spec.layout_version))))
        present = set(existing_columns(cur, schema, table))
        for c in spec.columns:
            if c.name not in present:
                cur.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                        _ident(schema, table), _ident(c.name), sql.SQL(c.pg_type)
                    )
                )
        # Vendor columns: each name checked to fit PostgreSQL's 63 bytes (a cut name would be
        # added again on the next load), each commented with the header it was made from.
        add_vendor_columns(cur, schema, table, [n for n in dict.fromkeys(extra_text_columns) if n not in present], log)
        for c in spec.columns:
            if c.description:
                cur.execute(
                    sql.SQL("COMMENT ON COLUMN {} IS {}").format(
                        _ident(schema, table, c.name), sql.Literal(c.description)
                    )
                )
        create_partitions(cur, spec, days)
    conn.commit()


def create_partitions(cur: psycopg.Cursor, spec: TableSpec, days: Sequence[dt.date],
                      *, attach: bool = True) -> list[dt.date]:
    """Create the missing day partitions of ``spec``'s table in the caller's transaction; returns
    the days created.

    An empty day partition reads as "loaded, no rows" (``appsflyer/raw_data`` would build an empty
    day from it), so it must exist only once its load commits. ``CREATE TABLE ... PARTITION OF``
    would hold an ACCESS EXCLUSIVE lock on the parent until then, blocking every reader of the
    table for the whole load; a table created alone and attached takes only SHARE UPDATE
    EXCLUSIVE on the parent, which readers and writers of other days do not wait for (attaching
    an empty table needs no validation scan).

    ``attach=False`` (a load that runs for a long time): the new tables stay unattached, with a
    constraint that keeps their rows inside their day, until :func:`attach_partitions` just
    before the commit, so the parent is not held for the whole load.
    """
    schema, table = spec.schema_name, spec.table_name
    created = []
    for day in days:
        child = partition_table_name(table, day)
        # Two loads of one day (the partition write lock should prevent it) would otherwise race
        # on the name; the second waits, then finds the day's table.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"adpipes:partition:{schema}.{child}",))
        cur.execute("SELECT to_regclass(%s)", (f"{schema}.{child}",))
        if cur.fetchone()[0] is not None:
            continue
        cur.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
            _ident(schema, child), _ident(schema, table)))
        if attach:
            attach_partitions(cur, spec, [day])
        else:
            # The day's bounds as a constraint: ATTACH then needs no scan of the loaded rows.
            cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} >= {} AND {} < {})").format(
                _ident(schema, child), _ident(_DAY_BOUNDS), _ident(PARTITION_COLUMN), sql.Literal(day),
                _ident(PARTITION_COLUMN), sql.Literal(day + dt.timedelta(days=1))))
        created.append(day)
    return created


# The constraint an unattached day table carries until it is attached (create_partitions).
_DAY_BOUNDS = "adpipes_day_bounds"


def attach_partitions(cur: psycopg.Cursor, spec: TableSpec, days: Sequence[dt.date]) -> None:
    """Attach the day tables of ``days`` created in this transaction to ``spec``'s table."""
    schema, table = spec.schema_name, spec.table_name
    for day in days:
        child = _ident(schema, partition_table_name(table, day))
        cur.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            _ident(schema, table), child, sql.Literal(day), sql.Literal(day + dt.timedelta(days=1))))
        cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(child, _ident(_DAY_BOUNDS)))


def _stored_days(cur: psycopg.Cursor | psycopg.Connection, spec: TableSpec) -> set[dt.date]:
    """The days that have a partition (a committed load) in ``spec``'s table."""
    rows = cur.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%s)", (spec.qualified_name,),
    ).fetchall()
    return {day for (name,) in rows if (day := partition_day(spec.table_name, name)) is not None}


def missing_partitions(conn: psycopg.Connection, spec: TableSpec, days: Sequence[dt.date]) -> list[dt.date]:
    """The ``days`` that were never loaded into ``spec``'s table (no day partition)."""
    stored = _stored_days(conn, spec)
    conn.rollback()
    return [day for day in days if day not in stored]


def stored_row_counts(conn: psycopg.Connection, spec: TableSpec, days: Sequence[dt.date]) -> dict[str, int]:
    """Rows per day partition of ``spec``'s table, for the ``days`` that were loaded (a day never
    loaded is absent; a day loaded empty is 0)."""
    stored = _stored_days(conn, spec)
    counts = {}
    for day in sorted(set(days) & stored):
        counts[day.isoformat()] = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(_child(spec, day))).fetchone()[0]
    conn.rollback()
    return counts


def arrow_table(df: pd.DataFrame, columns: Sequence[str]) -> pa.Table:
    frame = df[list(columns)]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # COPY parses CSV; pyarrow writes dates, booleans and nulls in forms PostgreSQL reads (null:
    # empty unquoted; empty string: ""). Zoned timestamps are written as UTC wall time with an
    # explicit +00 offset: the same instant whatever the session's TimeZone, and pyarrow formats
    # a zoned timestamp through the tz database at ~15x the cost (0.45 s per 300K values, six
    # time columns in raw_data).
    for index, column in enumerate(table.schema):
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            utc = pc.cast(table.column(index), pa.timestamp(column.type.unit))  # drops the zone, keeps UTC
            text = pc.binary_join_element_wise(pc.cast(utc, pa.string()), "+00", "", null_handling="emit_null")
            table = table.set_column(index, column.name, text)
    return table.replace_schema_metadata(None)


# COPY into a day's child table truncated in the same transaction writes its rows frozen
# (FREEZE): they need no hint bits set by the next read and give autovacuum nothing to do, which
# otherwise rewrote every page of a fresh day while the next step read it back (issue 15). Like
# the TRUNCATE before it, this is not MVCC-safe for a reader whose snapshot predates the load;
# both hold the table's ACCESS EXCLUSIVE lock until commit, so such a reader waits instead.
_FROZEN = sql.SQL(", FREEZE true")


class BoundedQueuedWriter(QueuedLibpqWriter):
    """psycopg's queued writer (each database's COPY is sent from its own thread, so the servers
    parse in parallel while the client reads or formats the next chunk) with a short queue.
    psycopg's holds 1,024 pieces of 128 KB: a file read faster than a server parses it piled up to
    128 MB per database in memory (a raw report step at 300K events peaked there)."""

    def __init__(self, cursor: psycopg.Cursor, pieces: int = COPY_QUEUE_PIECES) -> None:
        super().__init__(cursor)
        self._queue = queue.Queue(maxsize=pieces)


def copy_arrow_table(
    cursors: Sequence[psycopg.Cursor], target: sql.Composable, columns: Sequence[str], data: pa.Table,
    *, truncated: bool = False,
) -> None:
    """COPY ``data`` into ``target`` through every cursor (one per database) at once.

    Each batch is turned into CSV once and handed to every COPY; queued writers send it from
    worker threads, so the databases parse in parallel while the next batch is formatted.
    ``truncated``: the target was created or truncated in this transaction (rows load frozen).
    """
    options = pacsv.WriteOptions(include_header=False, batch_size=COPY_BATCH_ROWS)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv{})").format(
        target, sql.SQL(", ").join(_ident(c) for c in columns), _FROZEN if truncated else sql.SQL("")
    )
    with contextlib.ExitStack() as stack:
        copies = [stack.enter_context(cur.copy(statement, writer=BoundedQueuedWriter(cur))) for cur in cursors]
        for batch in data.to_batches(max_chunksize=COPY_BATCH_ROWS):
            buffer = io.BytesIO()
            pacsv.write_csv(batch, buffer, options)
            chunk = buffer.getvalue()
            for copy in copies:
                copy.write(chunk)


def _check_columns(spec: TableSpec, columns: Sequence[str]) -> list[str]:
    """The columns not in the table definition (allowed only for tables keeping vendor columns)."""
    known = set(spec.column_names)
    extra = [c for c in columns if c not in known]
    if extra and not spec.keep_unknown_columns:
        raise StorageError(
            f"{spec.qualified_name}: columns {extra} are not in the table definition; "
            "add them to the pandera schema (the table definition) before writing them"
        )
    present = set(columns)
    missing_required = [
        c.name for c in spec.columns
        if c.name not in present and not c.nullable and c.name != PARTITION_COLUMN
    ]
    if missing_required:
        raise StorageError(
            f"{spec.qualified_name}: the data has no column(s) {missing_required}, which the table "
            "requires; nothing was written"
        )
    return extra


def check_dates(spec: TableSpec, dates: Sequence[str], days: Sequence[dt.date]) -> None:
    keys = {day.isoformat() for day in days}
    stray = sorted(set(dates) - keys)
    if stray:
        raise StorageError(
            f"{spec.qualified_name}: rows have {PARTITION_COLUMN} {stray[:5]} outside the partitions "
            f"being written ({min(keys)}..{max(keys)}); nothing was written"
        )


def _child(spec: TableSpec, day: dt.date) -> sql.Identifier:
    return _ident(spec.schema_name, partition_table_name(spec.table_name, day))


def replace_partitions(
    conns: psycopg.Connection | Sequence[psycopg.Connection],
    spec: TableSpec,
    df: pd.DataFrame,
    days: Sequence[dt.date],
    *,
    timezone: str,
    log: Any = None,
) -> dict[str, int]:
    """Replace the given day partitions of ``spec``'s table with ``df``'s rows, atomically.

    With several connections (archive, product), the rows are loaded into all of them at once and
    committed in the order given: a failure before the first commit leaves every database as it
    was; one after it leaves the later databases as they were, which a re-run repairs.
    Returns the row count written per partition key.
    """
    conns = [conns] if isinstance(conns, psycopg.Connection) else list(conns)
    if PARTITION_COLUMN not in df.columns:
        raise StorageError(f"{spec.qualified_name}: the data has no {PARTITION_COLUMN} column; nothing was written")
    extra = _check_columns(spec, [c for c in df.columns if c != PARTITION_COLUMN])
    columns = [c for c in spec.column_names if c in df.columns] + extra
    dates = df[PARTITION_COLUMN].astype("str")
    if dates.isna().any():
        raise StorageError(f"{spec.qualified_name}: rows without {PARTITION_COLUMN}; nothing was written")
    check_dates(spec, list(dates.unique()), days)

    for conn in conns:
        ensure_table(conn, spec, [], extra_text_columns=extra, log=log)
    data = arrow_table(df.assign(**{PARTITION_COLUMN: dates}), columns)
    counts: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        cursors = [stack.enter_context(conn.cursor()) for conn in conns]
        for cur in cursors:
            cur.execute(sql.SQL("SET LOCAL TimeZone = {}").format(sql.Literal(timezone)))
            create_partitions(cur, spec, days)
        for day in sorted(days):
            key = day.isoformat()
            part = data if len(days) == 1 else data.filter(pc.equal(data[PARTITION_COLUMN], key))
            for cur in cursors:
                cur.execute(sql.SQL("TRUNCATE {}").format(_child(spec, day)))
            if part.num_rows:
                copy_arrow_table(cursors, _child(spec, day), columns, part, truncated=True)
            counts[key] = part.num_rows
    for conn in conns:
        conn.commit()
    return counts


def replace_partitions_from_files(
    conns: psycopg.Connection | Sequence[psycopg.Connection], spec: TableSpec, delivered: DeliveredFiles,
    days: Sequence[dt.date], log: Any = None,
) -> dict[str, int]:
    """Replace the given day partitions with the CSV files' rows, atomically.

    The files' bytes go to COPY unchanged (no parsing, no re-encoding): the archive holds exactly
    what the vendor sent, and a table of typed rows spooled as CSV (:class:`SpooledFrames`) loads
    at the speed of ``psql \\copy``. ``report_date`` is not in the files; each day's child table
    gets it as a column default for the load. COPY's own row count must equal the count the client
    parsed, or the load is rolled back: a disagreement means rows would be lost or invented.

    With several connections (archive, product), each file is read once and sent to every
    database at once (each parses it in its own server process), and they are committed in the
    order given, as :func:`replace_partitions` does.
    """
    conns = [conns] if isinstance(conns, psycopg.Connection) else list(conns)
    extra = _check_columns(spec, delivered.columns)
    check_dates(spec, [f.report_date for f in delivered.files], days)
    for conn in conns:
        ensure_table(conn, spec, [], extra_text_columns=extra, log=log)
    try:
        counts = _copy_files(conns, spec, delivered, days)
    except BaseException:
        # Nothing of a failed load may be committed later by the caller's connection.
        for conn in conns:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
        raise
    for conn in conns:
        conn.commit()
    return counts


def begin_day_loads(cursors: Sequence[psycopg.Cursor], spec: TableSpec, days: Sequence[dt.date],
                    *, attach: bool = True) -> list[list[dt.date]]:
    """Start a load of CSV day files in each cursor's transaction: UTF-8 on the wire and the
    missing day tables created (:func:`create_partitions`); returns the days created per cursor."""
    created = []
    for cur in cursors:
        cur.execute(sql.SQL("SET LOCAL client_encoding = 'UTF8'"))
        created.append(create_partitions(cur, spec, days, attach=attach))
    return created


def start_day_copy(cursors: Sequence[psycopg.Cursor], spec: TableSpec, day: dt.date) -> None:
    """Empty ``day``'s child table in each cursor's transaction and give it ``report_date`` as a
    column default, for COPYs of rows without that column (a delivered file, a spooled day)."""
    child = _child(spec, day)
    for statement in (sql.SQL("TRUNCATE {}").format(child),
                      sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                          child, _ident(PARTITION_COLUMN), sql.Literal(day))):
        for cur in cursors:
            cur.execute(statement)


def day_copy_statement(spec: TableSpec, day: dt.date, columns: Sequence[str]) -> sql.Composable:
    """COPY of one day's CSV (header line first) into its child table, truncated in the same
    transaction by :func:`start_day_copy` (so its rows load frozen)."""
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER true{})").format(
        _child(spec, day), sql.SQL(", ").join(_ident(c) for c in columns), _FROZEN
    )


def check_copied_rows(cursors: Sequence[psycopg.Cursor], spec: TableSpec, key: str, source: str, rows: int) -> None:
    """COPY's own row count must equal the client's: a disagreement means rows would be lost or
    invented, so the load stops (and is rolled back)."""
    for cur in cursors:
        if cur.rowcount != rows:
            raise StorageError(
                f"{spec.qualified_name} partition {key}: PostgreSQL read {cur.rowcount} rows "
                f"from {source} where the client counted {rows}; nothing was written. The file is "
                "not plain CSV (check for stray quotes or line breaks in the vendor's data)."
            )


def _copy_files(conns: Sequence[psycopg.Connection], spec: TableSpec, delivered: DeliveredFiles,
                days: Sequence[dt.date]) -> dict[str, int]:
    counts: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        cursors = [stack.enter_context(conn.cursor()) for conn in conns]

        def each(statement: sql.Composable) -> None:
            for cur in cursors:
                cur.execute(statement)

        begin_day_loads(cursors, spec, days)
        for day in sorted(days):
            key, child = day.isoformat(), _child(spec, day)
            start_day_copy(cursors, spec, day)
            counts[key] = 0
            for delivered_file in (f for f in delivered.files if f.report_date == key):
                # The file's constant columns (e.g. the app id it was requested for) are column
                # defaults for its COPY only, like report_date: the bytes stay as delivered.
                for column, value in delivered_file.constants:
                    each(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                        child, _ident(column), sql.Literal(value)))
                statement = day_copy_statement(spec, day, delivered_file.columns)
                with contextlib.ExitStack() as copying, delivered_file.path.open("rb") as handle:
                    # Queued writers send each chunk from their own thread: the databases parse
                    # in parallel while the next chunk is read.
                    copies = [copying.enter_context(cur.copy(statement, writer=BoundedQueuedWriter(cur)))
                              for cur in cursors]
                    while chunk := handle.read(COPY_CHUNK_BYTES):
                        for copy in copies:
                            copy.write(chunk)
                check_copied_rows(cursors, spec, key, delivered_file.path.name, delivered_file.rows)
                for column, _ in delivered_file.constants:
                    each(sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT").format(child, _ident(column)))
                counts[key] += delivered_file.rows
    return counts


_ARROW_TYPES = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "integer": pa.int64(),
    "double precision": pa.float64(),
    "numeric": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.string(),
}


def copy_out(cur: psycopg.Cursor, statement: sql.Composable, sink: Any) -> int:
    """Run ``COPY ... TO STDOUT`` and write its output into the binary file ``sink``; returns the
    bytes written. psycopg hands COPY's output over one row at a time: a file write per row cost
    a second per 600K rows, so rows are gathered and written a megabyte at a time. They are
    gathered into one buffer, not a list: each row is a memoryview, an object the garbage
    collector tracks, and a list of a megabyte's worth of them made the collector run over and
    over (300K rows of three key columns: 1.1 s against 0.35 s into a buffer)."""
    gathered = bytearray()
    written = 0
    with cur.copy(statement) as copy:
        for row in copy:
            gathered += row
            if len(gathered) >= COPY_CHUNK_BYTES:
                sink.write(gathered)
                written += len(gathered)
                gathered.clear()
    sink.write(gathered)
    return written + len(gathered)


def _partition_types(cur: psycopg.Cursor, spec: TableSpec, days: Sequence[dt.date]) -> dict[str, str]:
    """The table's columns -> PostgreSQL type, in table order; refuses a table never created.
    Sets the session's TimeZone to UTC for the COPY that follows: timestamps travel in UTC and
    are converted to the app timezone after parsing."""
    pg_types = _column_types(cur, spec.schema_name, spec.table_name)
    if not pg_types:
        raise StorageError(
            f"{spec.qualified_name} does not exist yet: materialize "
            f"{spec.asset_key.to_user_string()} for {', '.join(d.isoformat() for d in days)} first"
        )
    return pg_types


def _column_types(cur: psycopg.Cursor, schema: str, table: str) -> dict[str, str]:
    """A table's columns -> PostgreSQL type, in table order (empty when there is no such table).
    Sets the session's TimeZone to UTC for the COPY that follows (see :func:`_partition_types`)."""
    cur.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position", (schema, table))
    pg_types = dict(cur.fetchall())
    cur.execute("SET TimeZone = 'UTC'")
    return pg_types


# The column a projected read-back adds to each row: where the row is stored (its partition's oid
# and its ctid), for reading the row whole later (:func:`rows_at`). The '#' keeps it apart from
# every table column: column names are snake_case (adpipes.lib.storage.names).
ROW_LOCATOR = "#row"
_LOCATOR_SQL = sql.SQL("tableoid::oid::text || '/' || ctid::text AS {}").format(sql.Identifier(ROW_LOCATOR))


def _partitions_copy(spec: TableSpec, pg_types: dict[str, str], days: Sequence[dt.date],
                     locator: bool = False) -> sql.Composed:
    """``COPY ... TO STDOUT`` of the partitions, the columns of ``pg_types`` in table order (and
    the :data:`ROW_LOCATOR` first when asked), header line first."""
    return sql.SQL(
        "COPY (SELECT {} FROM {} WHERE {} = ANY({}::date[])) TO STDOUT (FORMAT csv, HEADER true)"
    ).format(
        sql.SQL(", ").join([*([_LOCATOR_SQL] if locator else []), *(_ident(c) for c in pg_types)]),
        _ident(spec.schema_name, spec.table_name),
        _ident(PARTITION_COLUMN),
        sql.Literal([d.isoformat() for d in days]),
    )


def _copy_partitions_out(
    conn: psycopg.Connection, spec: TableSpec, days: Sequence[dt.date], sink: Any
) -> dict[str, str]:
    """COPY the partitions (header line first) into the binary file ``sink``; returns column -> type.

    Spooled to a file rather than memory: a day read back can be hundreds of MB of CSV.
    """
    with conn.cursor() as cur:
        pg_types = _partition_types(cur, spec, days)
        copy_out(cur, _partitions_copy(spec, pg_types, days), sink)
    conn.rollback()
    sink.seek(0)
    return pg_types


# Bytes a read-back pipe holds between the thread running COPY and the parser (Linux's default
# pipe is 64 KB: the COPY thread would wake for every few rows).
PIPE_BYTES = 1 << 20


class CopyOutStream(PacedReads):
    """``COPY ... TO STDOUT`` as a binary file to read while the server still writes it.

    ``with CopyOutStream(conn, statement, what) as source:`` starts a thread that runs the COPY
    into a pipe; ``source.read`` reads the other end, so the server produces while the caller
    parses, instead of the whole output being spooled first. The pipe is bounded and reads are
    paced by the caller (:meth:`taken` after each parsed batch, at most ``READ_AHEAD_BLOCKS``
    ahead), so a slow parser holds the server back and memory holds a few blocks whatever the
    size of the output.

    A COPY that fails part-way (a lost session, a cancelled query) closes the pipe early, which
    looks to the reader like the end of the data: leaving the block raises that failure, and
    :meth:`check_rows` compares the rows parsed with the server's own count, so a cut output is
    never taken for the whole. A reader that stops early closes its end: the thread's next write
    fails, psycopg ends the COPY, and leaving the block waits for the thread (even when
    interrupted: it still uses the connection) so the connection is free afterwards.
    """

    def __init__(self, conn: psycopg.Connection, statement: sql.Composable, what: str) -> None:
        self.conn, self.statement, self.what = conn, statement, what
        self.error: BaseException | None = None
        # The server's count of the rows it copied out ("COPY n"), once the COPY has ended.
        self.rows: int | None = None
        self._done = threading.Event()
        # The pipe's reading end is opened on entering the block.
        super().__init__()

    def __enter__(self) -> CopyOutStream:
        read_fd, write_fd = os.pipe()
        try:
            with contextlib.suppress(AttributeError, OSError):
                import fcntl

                fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            # Buffered on both ends on purpose. A raw pipe write interrupted by a signal (a timer,
            # a profiler, a child's exit) returns having written part of the buffer, and the rest
            # would be lost; BufferedWriter writes the rest or raises. BufferedReader's lock makes
            # close() wait for a read in progress on the parser's IO thread.
            self._reader = os.fdopen(read_fd, "rb")
            read_fd = None
            self._writer = os.fdopen(write_fd, "wb")
            write_fd = None
            self._thread = threading.Thread(target=self._copy, name=f"adpipes COPY TO ({self.what})", daemon=True)
            self._thread.start()
        except BaseException:
            for fd in (read_fd, write_fd):
                if fd is not None:
                    os.close(fd)
            for handle in (getattr(self, "_reader", None), getattr(self, "_writer", None)):
                if handle is not None:
                    handle.close()
            raise
        return self

    def _copy(self) -> None:
        try:
            with self.conn.cursor() as cur:
                copy_out(cur, self.statement, self._writer)
                self.rows = cur.rowcount
            self._writer.flush()
        except BaseException as exc:  # handed to the reader's thread on leaving the block
            self.error = exc
        finally:
            # After a failure the buffer may not flush (the reader is gone): the failure already
            # recorded is the one that counts, and the pipe is closed either way.
            with contextlib.suppress(OSError):
                self._writer.close()
            self._done.set()

    def check_rows(self, parsed: int) -> None:
        """Refuse a read whose parsed rows are not the server's count (call after the block)."""
        if self.rows is not None and parsed != self.rows:
            raise StorageError(
                f"reading {self.what} back: the server copied out {self.rows:,} rows and "
                f"{parsed:,} were parsed; nothing read was kept. Re-run; if it repeats, report it."
            )

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        interrupted: BaseException | None = None
        while not self._done.is_set():
            try:
                self._done.wait()
            except BaseException as caught:  # e.g. Ctrl-C: the thread still uses the connection
                interrupted = interrupted or caught
                with contextlib.suppress(Exception):
                    self.conn.cancel_safe()
        self._thread.join()
        if interrupted is not None:
            raise interrupted
        if self.error is None or (exc_type is not None and isinstance(self.error, BrokenPipeError)):
            # Done, or the reader stopped early (its own exception goes on).
            return False
        raise StorageError(
            f"reading {self.what} back failed part-way ({error_summary(self.error)}); nothing read "
            "from it was kept. Re-run once the database is reachable."
        ) from self.error


def _read_convert_options(pg_types: dict[str, str]) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(
        column_types={c: _ARROW_TYPES.get(t, pa.string()) for c, t in pg_types.items()},
        # COPY writes NULL as an unquoted empty field and an empty string as "": only the former
        # is null. pyarrow's default null spellings (NA, N/A, null, nan, ...) are real values
        # here: Namibia's country code, a campaign called "N/A".
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=["t"],
        false_values=["f"],
    )


def _frame(table: pa.Table, pg_types: dict[str, str], timezone: str) -> pd.DataFrame:
    frame = table.to_pandas()
    for c, pg_type in pg_types.items():
        if pg_type.startswith("timestamp with time zone"):
            frame[c] = pd.to_datetime(frame[c], utc=True, format="ISO8601").dt.tz_convert(timezone)
    return frame


def read_partitions(
    conn: psycopg.Connection, spec: TableSpec, days: Sequence[dt.date], *, timezone: str
) -> pd.DataFrame:
    """Read the given day partitions (every column the table has, in table order)."""
    with tempfile.TemporaryFile() as spool:
        pg_types = _copy_partitions_out(conn, spec, days, spool)
        table = pacsv.read_csv(
            spool,
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=_read_convert_options(pg_types),
        )
    return _frame(table, pg_types, timezone)


def rows_at(database: PostgresDatabase, locators: Sequence[str], *, timezone: str,
            expected: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows stored at ``locators`` (:data:`ROW_LOCATOR` values from a projected
    :class:`PartitionBatches`), whole: every column of their table in table order, typed as a
    read-back types them, in the order of ``locators`` (0-based RangeIndex).

    A locator is the row's place on disk, valid while the partition is not replaced: call this
    while the iteration that handed the locators out is on (its transaction holds the partitions).
    ``expected``: the same rows as that iteration read them (some columns); a row missing or
    different raises :class:`StorageError` rather than answer with another row.
    """
    places = [str(locator).split("/", 1) for locator in locators]
    parts = []
    with database.connect() as conn, conn.cursor() as cur:
        for oid in dict.fromkeys(oid for oid, _ in places):
            # A day partition is read in its parent's column order, as the read-back reads it.
            cur.execute(
                "SELECT pn.nspname, p.relname, cn.nspname, c.relname FROM pg_class c "
                "JOIN pg_namespace cn ON cn.oid = c.relnamespace "
                "LEFT JOIN pg_inherits i ON i.inhrelid = c.oid "
                "LEFT JOIN pg_class p ON p.oid = COALESCE(i.inhparent, c.oid) "
                "LEFT JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE c.oid = %s::oid", (oid,))
            found = cur.fetchone()
            if found is None:
                raise StorageError(f"rows_at: table oid {oid} no longer exists (its rows were replaced while read); "
                                   "re-run the step")
            parent_schema, parent, schema, table = found
            pg_types = {ROW_LOCATOR: "text", **_column_types(cur, parent_schema, parent)}
            statement = sql.SQL(
                "COPY (SELECT {} || '/' || ctid::text AS {}, {} FROM {} WHERE ctid = ANY({}::tid[])) "
                "TO STDOUT (FORMAT csv, HEADER true)"
            ).format(sql.Literal(oid), sql.Identifier(ROW_LOCATOR),
                     sql.SQL(", ").join(_ident(c) for c in pg_types if c != ROW_LOCATOR),
                     _ident(schema, table), sql.Literal([ctid for o, ctid in places if o == oid]))
            buffer = io.BytesIO()
            copy_out(cur, statement, buffer)
            buffer.seek(0)
            table_read = pacsv.read_csv(buffer, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                                        convert_options=_read_convert_options(pg_types))
            parts.append(_frame(table_read, pg_types, timezone))
        conn.rollback()
    found = pd.concat(parts, ignore_index=True).set_index(ROW_LOCATOR) if parts else pd.DataFrame()
    wanted = [str(locator) for locator in locators]
    lost = [locator for locator in wanted if locator not in found.index]
    rows = found.loc[[w for w in wanted if w not in lost]].reset_index(drop=True)
    if not lost and expected is not None:
        columns = [c for c in expected.columns if c != ROW_LOCATOR]
        seen = expected[columns].reset_index(drop=True)
        same = pd.Series(True, index=seen.index)
        for column in columns:
            now, then = rows[column], seen[column]
            same &= (now.isna() & then.isna()) | (now == then).fillna(False).astype(bool)
        lost = [wanted[i] for i in (~same).to_numpy().nonzero()[0]]
    if lost:
        raise StorageError(
            f"rows_at: {len(lost)} of {len(wanted)} rows are no longer stored where they were read "
            f"(first: {lost[0]}): their partition was replaced while it was read. Nothing was written; "
            "re-run the step.")
    return rows


class PartitionBatches:
    """Partitions of a table, read lazily as DataFrames of one parse block (~16 MB of CSV) each.

    Iterating opens a connection and parses the partitions a block at a time while the server
    writes them, so memory holds a few blocks, not the whole partition.

    ``columns``: read only these (those the table has, in table order), each row with its
    :data:`ROW_LOCATOR` first, for reading some rows whole with :func:`rows_at` while the
    iteration is on (its transaction keeps the partitions from being replaced meanwhile).
    """

    def __init__(self, database: PostgresDatabase, spec: TableSpec, days: Sequence[dt.date],
                 timezone: str, columns: Sequence[str] | None = None) -> None:
        self.database, self.spec, self.days, self.timezone = database, spec, list(days), timezone
        self.columns = None if columns is None else list(columns)

    def __iter__(self) -> Iterator[pd.DataFrame]:
        days = ", ".join(d.isoformat() for d in self.days)
        with self.database.connect() as conn:
            with conn.cursor() as cur:
                pg_types = _partition_types(cur, self.spec, self.days)
            if self.columns is not None:
                wanted = set(self.columns)
                pg_types = {ROW_LOCATOR: "text", **{c: t for c, t in pg_types.items() if c in wanted}}
            # Parsed while the server writes it (CopyOutStream): the read-back of a raw day took
            # seconds in which nothing else ran.
            statement = _partitions_copy(self.spec, {c: t for c, t in pg_types.items() if c != ROW_LOCATOR},
                                         self.days, locator=self.columns is not None)
            stream = CopyOutStream(conn, statement, f"{self.spec.qualified_name} partition(s) {days}")
            parsed = 0
            with stream:
                with stream.waiting():
                    reader = pacsv.open_csv(
                        stream,
                        read_options=pacsv.ReadOptions(block_size=READ_BLOCK_BYTES, use_threads=False),
                        # Values written by COPY may hold line breaks (user agents, campaign names).
                        parse_options=pacsv.ParseOptions(newlines_in_values=True),
                        convert_options=_read_convert_options(pg_types),
                    )
                for batch in stream.batches(reader):
                    parsed += batch.num_rows
                    yield _frame(pa.Table.from_batches([batch]), pg_types, self.timezone)
            stream.check_rows(parsed)
            conn.rollback()

    def of_day(self, day: dt.date, columns: Sequence[str] | None = None) -> PartitionBatches:
        """The same table's ``day`` alone (read when iterated, like this one), only ``columns``
        when given (with each row's :data:`ROW_LOCATOR`)."""
        return PartitionBatches(self.database, self.spec, [day], self.timezone, columns)

    def missing_days(self) -> list[dt.date]:
        """The partitions that were never loaded (reading them would give no rows, not an error)."""
        with self.database.connect() as conn:
            return missing_partitions(conn, self.spec, self.days)

    def __repr__(self) -> str:
        return f"PartitionBatches({self.spec.qualified_name}, {len(self.days)} partitions)"


def _load_error(exc: Exception, spec: TableSpec, days: Sequence[dt.date], names: Sequence[str],
                conns: Sequence[psycopg.Connection], written: Sequence[str] = ()) -> Exception:
    """A database failure during a load, said with what it means for the data: which table,
    partitions and database, that nothing of the load was committed there, and that a re-run is
    safe. adpipes' own errors (already worded) pass through unchanged."""
    if not isinstance(exc, psycopg.Error):
        return exc
    broken = [name for name, conn in zip(names, conns) if conn.broken] or [n for n in names if n not in written]
    first, last = min(days).isoformat(), max(days).isoformat()
    span = first if first == last else f"{first}..{last}"
    kept = f"; the {' and '.join(written)} database was written" if written else ""
    return StorageError(
        f"{spec.qualified_name} partition(s) {span}: the load into the {' and '.join(broken)} database "
        f"failed ({error_summary(exc)}). A load is one transaction per database, so nothing "
        f"of it was committed there and the partition(s) hold what they held before{kept}. Re-run "
        "the partition(s) once the database is reachable: a re-run replaces them whole, never twice."
    )


def add_partition_metadata(context: dg.OutputContext, partition_key: str, metadata: dict[str, Any]) -> None:
    """Attach ``metadata`` to the materialization of one partition of the output being handled.

    Dagster gives every partition of a range run the output's metadata; partition-scoped asset
    metadata (``add_asset_metadata(..., partition_key=)``) overrides it for one partition. The
    IO manager reaches it through the step's context, which Dagster reads after ``handle_output``
    returns. An output context built outside a run (``build_output_context``) has none: a
    one-partition output gets the metadata as output metadata, a range's is not recorded.
    """
    try:
        step_context = context.step_context
    except dg.DagsterInvariantViolationError:
        step_context = None
    if step_context is None or step_context.assets_def is None:
        if len(context.asset_partition_keys) == 1:
            context.add_output_metadata(metadata)
        return
    step_context.add_asset_metadata(metadata, asset_key=context.asset_key, partition_key=partition_key)


def partition_days(context: dg.OutputContext | dg.InputContext) -> list[dt.date]:
    if not context.has_asset_partitions:
        raise StorageError(
            f"{context.asset_key.to_user_string()} is not partitioned; adpipes tables are "
            "partitioned by report_date"
        )
    return [dt.date.fromisoformat(k) for k in context.asset_partition_keys]


class PartitionedTableIOManager(dg.ConfigurableIOManager):
    """Writes each asset's DataFrame to its table in the archive and/or product database.

    The table definition (columns, types, databases) comes from the asset's registered
    ``TableSpec``. The archive is written before product; each database's write replaces the
    run's partitions in one transaction.
    """

    archive: PostgresDatabase
    product: PostgresDatabase
    timezone: str = Field(default="Asia/Seoul", description="App timezone (ADPIPES_TIMEZONE).")

    def _database(self, name: str) -> PostgresDatabase:
        return self.archive if name == ARCHIVE else self.product

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | DeliveredFiles | None) -> None:
        if obj is None:
            return
        spec = TABLES.get(context.asset_key)
        days = partition_days(context)
        withheld = list(obj.withheld) if isinstance(obj, DeliveredFiles) else []
        # A refused delivery's days keep what they hold: they are not replaced at all.
        days = [day for day in days if day.isoformat() not in withheld]
        if not days:
            obj.cleanup()
            context.add_output_metadata({"adpipes/withheld_partitions": dg.MetadataValue.json(sorted(withheld))})
            self._withheld_metadata(context, spec, withheld)
            return
        names = spec.write_databases()
        counts = self._commit_streamed(obj, spec, names, days, context.log)
        streamed = counts is not None
        if counts is None:
            counts = self._load(spec, names, obj, days, context.log)
        context.log.info(
            f"{' and '.join(names)}: replaced {len(days)} partition(s) of {spec.qualified_name} "
            f"with {sum(counts.values())} rows" + (", loaded while they were computed" if streamed else "")
        )
        metadata: dict[str, Any] = {
            "dagster/table_name": spec.qualified_name,
            "dagster/column_schema": spec.column_schema(),
            "adpipes/databases": ", ".join(spec.write_databases()),
            # What the run wrote across its partitions; each partition's own count is its
            # dagster/row_count (below).
            "adpipes/run_row_count": dg.MetadataValue.int(sum(counts.values())),
        }
        if len(days) > 1 or withheld:
            metadata["partition_row_counts"] = dg.MetadataValue.json(counts)
        if withheld:
            # Dagster records the materialization for every partition of the run; these were not
            # written.
            metadata["adpipes/withheld_partitions"] = dg.MetadataValue.json(sorted(withheld))
        # A range run records one materialization per partition from this one output: without
        # partition-scoped metadata every day would show the run's total as its row count.
        for key, rows in counts.items():
            add_partition_metadata(context, key, {
                "dagster/row_count": dg.MetadataValue.int(rows),
                "dagster/partition_row_count": dg.MetadataValue.int(rows),
            })
        self._withheld_metadata(context, spec, withheld)
        shortened = shortened_names(obj.columns)
        if shortened:
            # Vendor headers over PostgreSQL's 63 bytes: the cut name (with a hash) -> the header.
            metadata["adpipes/shortened_column_names"] = dg.MetadataValue.json(shortened)
        context.add_output_metadata(metadata)

    def _load(self, spec: TableSpec, names: Sequence[str], obj: pd.DataFrame | DeliveredFiles,
              days: Sequence[dt.date], log: Any) -> dict[str, int]:
        failure: Exception | None = None
        with contextlib.ExitStack() as stack:
            # Connections in write order (archive first, so it commits first). When a later
            # database cannot be reached, the earlier ones are still written: the archive keeps
            # what the vendor sent even while product is down.
            conns = []
            for name in names:
                try:
                    conns.append(stack.enter_context(self._database(name).connect()))
                except StorageError as exc:
                    failure = exc
                    break
            if not conns:
                assert failure is not None
                raise failure
            try:
                counts = self._write(conns, spec, obj, days, log)
            except Exception as exc:
                if len(conns) < 2:
                    raise _load_error(exc, spec, days, names[:len(conns)], conns) from None
                # The joint load failed: load the archive alone, then report the failure. A broken
                # connection cannot even roll back; that must not hide the original error.
                for conn in conns:
                    with contextlib.suppress(psycopg.Error):
                        conn.rollback()
                try:
                    self._write(conns[:1], spec, obj, days, log)
                except Exception:
                    raise _load_error(exc, spec, days, names, conns) from None
                log.error(f"{spec.qualified_name}: only {names[0]} was written")
                raise _load_error(exc, spec, days, names, conns, written=names[:1]) from None
            finally:
                if isinstance(obj, DeliveredFiles):
                    obj.cleanup()
        if failure is not None:
            raise failure
        return counts

    def _commit_streamed(self, obj: pd.DataFrame | DeliveredFiles, spec: TableSpec, names: Sequence[str],
                         days: Sequence[dt.date], log: Any) -> dict[str, int] | None:
        """Commit the load streamed while the asset computed the rows (a :class:`SpooledFrames`
        given databases), if it loaded exactly this output into exactly these databases; None
        when there is none or it cannot be used, and the spooled files are loaded instead."""
        load = obj.take_streamed_load() if isinstance(obj, DeliveredFiles) else None
        if load is None:
            return None
        try:
            if (load.names != list(names) or load.days != sorted(days)
                    or load.dsn_digests != [dsn_digest(self._database(name).resolved_dsn()) for name in names]):
                log.info(f"{spec.qualified_name}: the rows were streamed into other databases or days "
                         "than this output's; loading the spooled files")
                return None
            counts = load.commit()
        except Exception as exc:
            # Archive committed and product not, or nothing committed: the files' load replaces the
            # same days with the same rows, and says what failed where.
            log.warning(f"{spec.qualified_name}: committing the rows loaded while they were computed failed "
                        f"({error_summary(exc)}); loading the spooled files instead")
            return None
        finally:
            load.close()
        obj.cleanup()
        return counts

    def _withheld_metadata(self, context: dg.OutputContext, spec: TableSpec, withheld: Sequence[str]) -> None:
        """A withheld day keeps what it held: its materialization says so, with the rows the
        table still holds for it (none when the day was never loaded)."""
        if not withheld:
            return
        database = self._database(ARCHIVE if ARCHIVE in spec.databases else PRODUCT)
        with database.connect() as conn:
            held = stored_row_counts(conn, spec, [dt.date.fromisoformat(k) for k in withheld])
        for key in withheld:
            metadata: dict[str, Any] = {"adpipes/withheld": dg.MetadataValue.bool(True)}
            if key in held:
                metadata["dagster/row_count"] = dg.MetadataValue.int(held[key])
                metadata["dagster/partition_row_count"] = dg.MetadataValue.int(held[key])
            add_partition_metadata(context, key, metadata)

    def _write(self, conns: Sequence[psycopg.Connection], spec: TableSpec,
               obj: pd.DataFrame | DeliveredFiles, days: Sequence[dt.date], log: Any) -> dict[str, int]:
        if isinstance(obj, DeliveredFiles):
            return replace_partitions_from_files(conns, spec, obj, days, log=log)
        return replace_partitions(conns, spec, obj, days, timezone=self.timezone, log=log)

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | PartitionBatches:
        spec = TABLES.get(context.asset_key)
        days = partition_days(context)
        # The archive holds every partition ever loaded; product may have pruned old ones.
        database = self._database(ARCHIVE if ARCHIVE in spec.databases else PRODUCT)
        if (context.definition_metadata or {}).get(LOAD_AS_BATCHES):
            return PartitionBatches(database, spec, days, self.timezone)
        with database.connect() as conn:
            return read_partitions(conn, spec, days, timezone=self.timezone)
