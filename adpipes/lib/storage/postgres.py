"""PostgreSQL storage: database resources and the partition-replacing IO manager.

Every table is declaratively partitioned by ``report_date`` with one child table per day, so
replacing a day is ``TRUNCATE`` + ``COPY`` of one child inside one transaction (a re-run never
duplicates rows, a failed load leaves the previous rows in place), and pruning a day is a
``DROP``/``DETACH`` of one child rather than a ``DELETE`` over the whole table.
"""

from __future__ import annotations

import datetime as dt
import io
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
from pydantic import Field

from adpipes.lib.storage.tables import ARCHIVE, PARTITION_COLUMN, PRODUCT, TABLES, TableSpec

# Rows per CSV chunk handed to COPY: large enough that per-chunk overhead vanishes, small enough
# that the CSV text of one chunk stays a few tens of MB.
COPY_BATCH_ROWS = 100_000


class StorageError(Exception):
    """A load or read that cannot proceed; the message names table, partition and the fix."""


class PostgresDatabase(dg.ConfigurableResource):
    """One PostgreSQL database (product or archive), reached by a DSN from the environment.

    In dev mode with no DSN configured, the embedded PostgreSQL started for the project is used.
    """

    role: str = Field(description="'product' or 'archive': which of the two databases this is.")
    dsn: str | None = Field(
        default=None,
        description="PostgreSQL URI (from ADPIPES_PRODUCT_DSN / ADPIPES_ARCHIVE_DSN); unset in dev "
        "mode means the embedded PostgreSQL.",
    )

    def resolved_dsn(self) -> str:
        if self.dsn:
            return self.dsn
        from adpipes.lib import devservices

        dev = devservices.ensure_postgres()
        return dev.product_dsn if self.role == PRODUCT else dev.archive_dsn

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        try:
            conn = psycopg.connect(self.resolved_dsn(), autocommit=False, application_name="adpipes")
        except psycopg.OperationalError as exc:
            # psycopg includes the host and database but never the password in this message.
            raise StorageError(
                f"cannot connect to the {self.role} database: {exc}. Check "
                f"ADPIPES_{self.role.upper()}_DSN and that the server is reachable."
            ) from None
        try:
            yield conn
        finally:
            conn.close()


def partition_table_name(table: str, day: dt.date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def _ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


def _lock_table_ddl(cur: psycopg.Cursor, spec: TableSpec) -> None:
    # Concurrent runs of different partitions create child tables and columns on the same parent;
    # a transaction-scoped advisory lock keeps their DDL from racing.
    cur.execute(
        "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"adpipes:ddl:{spec.qualified_name}",)
    )


def existing_columns(cur: psycopg.Cursor, schema: str, table: str) -> list[str]:
    cur.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, table),
    )
    return [row[0] for row in cur.fetchall()]


def ensure_table(
    conn: psycopg.Connection,
    spec: TableSpec,
    days: Sequence[dt.date],
    extra_text_columns: Sequence[str] = (),
) -> None:
    """Create schema, parent table, missing columns and the day partitions; commit."""
    schema, table = spec.schema_name, spec.table_name
    with conn.cursor() as cur:
        _lock_table_ddl(cur, spec)
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(schema)))
        column_sql = sql.SQL(", ").join(
            sql.SQL("{} {}{}").format(
                _ident(c.name),
                sql.SQL(c.pg_type),
                sql.SQL("" if c.nullable else " NOT NULL"),
            )
            for c in spec.columns
        )
        cur.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}) PARTITION BY RANGE ({})").format(
                _ident(schema, table), column_sql, _ident(PARTITION_COLUMN)
            )
        )
        present = set(existing_columns(cur, schema, table))
        for c in spec.columns:
            if c.name not in present:
                cur.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                        _ident(schema, table), _ident(c.name), sql.SQL(c.pg_type)
                    )
                )
        for name in extra_text_columns:
            if name not in present:
                cur.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} text").format(
                        _ident(schema, table), _ident(name)
                    )
                )
        for c in spec.columns:
            if c.description:
                cur.execute(
                    sql.SQL("COMMENT ON COLUMN {} IS {}").format(
                        _ident(schema, table, c.name), sql.Literal(c.description)
                    )
                )
        for day in days:
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                ).format(
                    _ident(schema, partition_table_name(table, day)),
                    _ident(schema, table),
                    sql.Literal(day),
                    sql.Literal(day + dt.timedelta(days=1)),
                )
            )
    conn.commit()


def _arrow_table(df: pd.DataFrame, columns: Sequence[str]) -> pa.Table:
    frame = df[list(columns)]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # COPY parses CSV; pyarrow writes dates, timestamps with offsets, booleans and nulls in
    # forms PostgreSQL reads (null: empty unquoted; empty string: "").
    return table.replace_schema_metadata(None)


def _copy_table(cur: psycopg.Cursor, target: sql.Composable, columns: Sequence[str], data: pa.Table) -> None:
    options = pacsv.WriteOptions(include_header=False, batch_size=COPY_BATCH_ROWS)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        target, sql.SQL(", ").join(_ident(c) for c in columns)
    )
    with cur.copy(statement) as copy:
        for batch in data.to_batches(max_chunksize=COPY_BATCH_ROWS):
            buffer = io.BytesIO()
            pacsv.write_csv(batch, buffer, options)
            copy.write(buffer.getbuffer())


def replace_partitions(
    conn: psycopg.Connection,
    spec: TableSpec,
    df: pd.DataFrame,
    days: Sequence[dt.date],
    *,
    timezone: str,
) -> dict[str, int]:
    """Replace the given day partitions of ``spec``'s table with ``df``'s rows, atomically.

    Returns the row count written per partition key.
    """
    extra = [c for c in df.columns if c not in set(spec.column_names)]
    if extra and not spec.keep_unknown_columns:
        raise StorageError(
            f"{spec.qualified_name}: columns {extra} are not in the table definition; "
            "add them to the pandera schema (the table definition) before writing them"
        )
    missing_required = [
        c.name for c in spec.columns if c.name not in df.columns and not c.nullable
    ]
    if missing_required:
        raise StorageError(
            f"{spec.qualified_name}: the data has no column(s) {missing_required}, which the table "
            "requires; nothing was written"
        )
    columns = [c for c in spec.column_names if c in df.columns] + extra

    keys = {day.isoformat() for day in days}
    dates = df[PARTITION_COLUMN].astype("str")
    stray = sorted(set(dates.unique()) - keys)
    if stray:
        raise StorageError(
            f"{spec.qualified_name}: rows have {PARTITION_COLUMN} {stray[:5]} outside the partitions "
            f"being written ({min(keys)}..{max(keys)}); nothing was written"
        )
    if dates.isna().any():
        raise StorageError(f"{spec.qualified_name}: rows without {PARTITION_COLUMN}; nothing was written")

    ensure_table(conn, spec, days, extra_text_columns=extra)
    data = _arrow_table(df.assign(**{PARTITION_COLUMN: dates}), columns)
    counts: dict[str, int] = {}
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SET LOCAL TimeZone = {}").format(sql.Literal(timezone)))
        for day in sorted(days):
            key = day.isoformat()
            child = _ident(spec.schema_name, partition_table_name(spec.table_name, day))
            part = data if len(days) == 1 else data.filter(pc.equal(data[PARTITION_COLUMN], key))
            cur.execute(sql.SQL("TRUNCATE {}").format(child))
            if part.num_rows:
                _copy_table(cur, child, columns, part)
            counts[key] = part.num_rows
    conn.commit()
    return counts


_ARROW_TYPES = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "integer": pa.int64(),
    "double precision": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.string(),
}


def read_partitions(
    conn: psycopg.Connection, spec: TableSpec, days: Sequence[dt.date], *, timezone: str
) -> pd.DataFrame:
    """Read the given day partitions (every column the table has, in table order)."""
    with conn.cursor() as cur:
        columns = existing_columns(cur, spec.schema_name, spec.table_name)
        if not columns:
            raise StorageError(
                f"{spec.qualified_name} does not exist yet: materialize "
                f"{spec.asset_key.to_user_string()} for {', '.join(d.isoformat() for d in days)} first"
            )
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s",
            (spec.schema_name, spec.table_name),
        )
        pg_types = dict(cur.fetchall())
        cur.execute(sql.SQL("SET TimeZone = 'UTC'"))
        # Dates travel as ISO text; timestamps are converted below.
        select = sql.SQL(
            "COPY (SELECT {} FROM {} WHERE {} = ANY({}::date[])) TO STDOUT (FORMAT csv, HEADER true)"
        ).format(
            sql.SQL(", ").join(_ident(c) for c in columns),
            _ident(spec.schema_name, spec.table_name),
            _ident(PARTITION_COLUMN),
            sql.Literal([d.isoformat() for d in days]),
        )
        buffer = io.BytesIO()
        with cur.copy(select) as copy:
            for chunk in copy:
                buffer.write(chunk)
    conn.rollback()
    buffer.seek(0)
    column_types = {
        c: _ARROW_TYPES.get(pg_types.get(c, "text"), pa.string()) for c in columns
    }
    table = pacsv.read_csv(
        buffer,
        convert_options=pacsv.ConvertOptions(
            column_types=column_types,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    frame = table.to_pandas()
    for c in columns:
        if pg_types.get(c, "").startswith("timestamp with time zone"):
            frame[c] = pd.to_datetime(frame[c], utc=True, format="ISO8601").dt.tz_convert(timezone)
    return frame


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

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        spec = TABLES.get(context.asset_key)
        days = partition_days(context)
        counts: dict[str, int] = {}
        for name in spec.write_databases():
            with self._database(name).connect() as conn:
                counts = replace_partitions(conn, spec, obj, days, timezone=self.timezone)
            context.log.info(
                f"{name}: replaced {len(days)} partition(s) of {spec.qualified_name} "
                f"with {sum(counts.values())} rows"
            )
        metadata: dict[str, Any] = {
            "dagster/row_count": dg.MetadataValue.int(sum(counts.values())),
            "dagster/table_name": spec.qualified_name,
            "dagster/column_schema": spec.column_schema(),
            "adpipes/databases": ", ".join(spec.write_databases()),
        }
        if len(days) == 1:
            metadata["dagster/partition_row_count"] = dg.MetadataValue.int(counts[days[0].isoformat()])
        else:
            metadata["partition_row_counts"] = dg.MetadataValue.json(counts)
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        spec = TABLES.get(context.asset_key)
        days = partition_days(context)
        # The archive holds every partition ever loaded; product may have pruned old ones.
        source = ARCHIVE if ARCHIVE in spec.databases else PRODUCT
        with self._database(source).connect() as conn:
            return read_partitions(conn, spec, days, timezone=self.timezone)
