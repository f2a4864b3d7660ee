"""Product retention in SQL: which day partitions a product table holds, and dropping old ones
after checking that the archive holds the same rows.

Every table is partitioned by day (``schema.table_pYYYYMMDD``), so pruning a day is a ``DROP``
of its child table: instant, no ``DELETE`` and no vacuum. The archive is only read.

A row count is no proof: an archive copy that lost 10 rows and holds 10 others twice has the
count of the product copy. Before a day is dropped, each database computes a fingerprint of its
copy: the row count and the sum of a 64-bit hash of every row. The sum does not depend on row
order, and a lost, duplicated or changed row moves it (as does a value moved from one row to
another: each row's hash mixes its values non-linearly). The fingerprints are computed
concurrently, one query per database, and must be equal, or the day stays in product.

What a fingerprint reads:

- **Which columns**: the table's row key (``TableSpec.row_key``: e.g. raw_data's AppsFlyer id,
  event, time, platform and source report), or every column for a table without one. The key
  proves what a prune must know, that the archive holds every row product holds, as many times;
  hashing whole rows as well costs about 0.7 s of a core per million 420-byte rows in each
  database, which breaks the 1 s a day's prune may take (``benchmarks/prune.py``). A value outside
  the key that differs is not looked at on purpose: every load writes the archive first, from the
  same rows, so such a difference means product is the older copy (a load whose product write
  failed), and dropping it loses nothing.
- **Columns**: product's, in name order (column order can differ between the databases: columns
  added later are appended). A column the archive lacks counts as NULL there, so product values in
  it make the copies differ; columns only the archive has are not product's to keep.
- **Values**: hashed by each type's own hash function (``hash_record_extended``, PostgreSQL 14+),
  which works on the stored value, not on its text: a ``timestamptz`` is the same instant whatever
  the session's time zone, ``1.50`` and ``1.5`` are one ``numeric``. A column whose type differs
  between the databases, or has no hash function, is compared by its text form, with every
  setting that shapes text fixed for the transaction (``TimeZone`` UTC, ISO dates, float digits).
  Before PostgreSQL 14 every row is hashed as its text form.
- **NULL and empty text** differ: a NULL field hashes as nothing, ``''`` as the empty string.
- **Row counts** must be equal: both databases hold the same rows, so an archive copy with more
  rows differs as much as one with fewer.

While a day is checked and dropped, its archive partition is locked against writers (``SHARE``,
readers go on) and so is its product partition, archive first as every load does, so neither copy
can change between the check and the drop. A lock not granted within ``LOCK_TIMEOUT`` (a load of
the day in progress) leaves the day in product for the next prune.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from adpipes.lib.storage.postgres import error_summary, partition_day
from adpipes.lib.storage.tables import TableSpec

# Types hash_record_extended hashes by value (their default hash opclass has an extended hash
# function); other columns, and columns whose types differ between the databases, go as text.
HASHED_TYPES = frozenset({
    "text", "varchar", "int2", "int4", "int8", "bool", "date", "timestamp", "timestamptz",
    "numeric", "float4", "float8", "jsonb", "uuid", "bytea",
})
# Every setting that shapes the text form of a value, fixed in both databases.
TEXT_FORM_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}
# How long a prune waits for a partition being loaded (or, for the DROP, read) before it leaves
# the day for the next prune; product readers queue behind a waiting DROP, so not long.
LOCK_TIMEOUT = "10s"
# hash_record_extended appeared in PostgreSQL 14.
HASH_RECORD_VERSION = 140000


def product_partitions(conn: psycopg.Connection, spec: TableSpec) -> dict[dt.date, str]:
    """Day -> child table name of every partition ``spec``'s table has in this database."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
        "WHERE n.nspname = %s AND p.relname = %s",
        (spec.schema_name, spec.table_name),
    ).fetchall()
    days = {}
    for (name,) in rows:
        day = partition_day(spec.table_name, name)
        if day is not None:
            days[day] = name
    return days


def table_columns(conn: psycopg.Connection, spec: TableSpec) -> dict[str, str]:
    """Column -> type name (``pg_type.typname``) of ``spec``'s table in this database."""
    rows = conn.execute(
        "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) "
        "AND a.attnum > 0 AND NOT a.attisdropped",
        (spec.schema_name, spec.table_name),
    ).fetchall()
    return dict(rows)


@dataclass(frozen=True)
class Fingerprint:
    """A partition's row count and the sum of its rows' 64-bit hashes (order-independent)."""

    rows: int
    digest: int


def fingerprint_queries(product_columns: dict[str, str], archive_columns: dict[str, str],
                        product_child: sql.Composable, archive_child: sql.Composable, *,
                        hash_values: bool = True) -> tuple[sql.Composed, sql.Composed]:
    """The fingerprint query of the product and of the archive copy of one partition.

    Over product's columns in name order; see the module docstring for what is read how.
    """
    product_exprs, archive_exprs = [], []
    for name in sorted(product_columns):
        column, kind = sql.Identifier(name), product_columns[name]
        as_text = sql.SQL("{}::text").format(column)
        if name not in archive_columns:
            product_exprs.append(column if hash_values and kind in HASHED_TYPES else as_text)
            archive_exprs.append(sql.SQL("NULL::{}").format(sql.Identifier(kind)) if hash_values and kind in HASHED_TYPES
                                 else sql.SQL("NULL::text"))
        elif kind == archive_columns[name] and (kind in HASHED_TYPES or not hash_values):
            product_exprs.append(column)
            archive_exprs.append(column)
        else:
            product_exprs.append(as_text)
            archive_exprs.append(as_text)
    # hash_record_extended combines its columns' hashes linearly (31 * h + column), so its sum over
    # rows would only sum each column: two rows swapping a value would not move it. Hashing the
    # row's hash once more ties every row's values together.
    row_hash = ("hashint8extended(hash_record_extended(ROW({}), 0), 0)" if hash_values
                else "hashtextextended(ROW({})::text, 0)")

    def query(exprs: list[sql.Composable], child: sql.Composable) -> sql.Composed:
        return sql.SQL("SELECT count(*), coalesce(sum(" + row_hash + "), 0) FROM {}").format(
            sql.SQL(", ").join(exprs), child)

    return query(product_exprs, product_child), query(archive_exprs, archive_child)


def _fingerprint(conn: psycopg.Connection, query: sql.Composed) -> Fingerprint:
    rows, digest = conn.execute(query).fetchone()
    return Fingerprint(int(rows), int(digest))


def _begin_check(conn: psycopg.Connection, child: sql.Composable | None) -> None:
    """Fix the text forms, bound lock waits and lock ``child`` against writers, in one transaction."""
    for name, value in {**TEXT_FORM_SETTINGS, "lock_timeout": LOCK_TIMEOUT}.items():
        conn.execute("SELECT set_config(%s, %s, true)", (name, value))
    if child is not None:
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(child))


EMPTY = Fingerprint(0, 0)


@dataclass(frozen=True)
class Verification:
    """Both copies of one day as the prune found them (archive None: no partition of the day)."""

    product: Fingerprint
    archive: Fingerprint | None

    @property
    def matches(self) -> bool:
        # A day without a child table has no rows: an empty product partition matches it.
        return self.product == (self.archive or EMPTY)

    def as_metadata(self) -> dict[str, object]:
        archive = self.archive or EMPTY
        return {"product_rows": self.product.rows, "archive_rows": archive.rows,
                "product_fingerprint": str(self.product.digest), "archive_fingerprint": str(archive.digest)}


@dataclass
class PruneResult:
    """What pruning one table did: days dropped (with their row counts), days refused (with the
    reason) and what the check found for each day it compared."""

    pruned: dict[str, int] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    verified: dict[str, Verification] = field(default_factory=dict)


def _refusal(spec: TableSpec, day: dt.date, check: Verification) -> str:
    held = f"product holds {check.product.rows:,} rows of {spec.qualified_name} for {day}"
    if check.archive is None:
        differ = "the archive none (it has no partition of that day); the contents differ"
    elif check.archive.rows != check.product.rows:
        differ = f"the archive {check.archive.rows:,}; the contents differ"
    else:
        of_what = " of the rows' keys" if spec.row_key else " of the whole rows"
        differ = (f"the archive {check.archive.rows:,} as well, but the contents differ (fingerprints{of_what} "
                  f"{check.product.digest} and {check.archive.digest})")
    return (f"{held}, {differ}: product keeps the partition. Find out which copy is right "
            "(docs/retention.md shows how to compare them); re-materializing the partition rewrites both")


def prune_table(product: psycopg.Connection, archive: psycopg.Connection, spec: TableSpec,
                cutoff: dt.date) -> PruneResult:
    """Drop the product partitions of ``spec`` before ``cutoff`` whose archive copy is the same.

    A day is dropped only when its fingerprint (row count and the hash sum of its rows' keys, or of
    whole rows for a table without a row key) is equal in
    product and archive; any other day stays in product and is listed in ``refused`` with the
    reason. Each drop is its own transaction, so a refused or failed day never holds back the
    others. Leaves both connections outside a transaction.
    """
    result = PruneResult()
    in_product = {d: c for d, c in product_partitions(product, spec).items() if d < cutoff}
    in_archive = product_partitions(archive, spec)
    product_columns, archive_columns = table_columns(product, spec), table_columns(archive, spec)
    if spec.row_key:
        product_columns = {c: t for c, t in product_columns.items() if c in spec.row_key}
    hash_values = min(product.info.server_version, archive.info.server_version) >= HASH_RECORD_VERSION
    product.rollback()
    archive.rollback()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="adpipes-prune-archive") as pool:
        for day, name in sorted(in_product.items()):
            key = day.isoformat()
            child = sql.Identifier(spec.schema_name, name)
            archive_child = sql.Identifier(spec.schema_name, in_archive[day]) if day in in_archive else None
            try:
                # Archive first, then product: the order every load takes its locks in, so a prune
                # and a load of the same day cannot wait on each other across the two servers.
                _begin_check(archive, archive_child)
                _begin_check(product, child)
                product_query, archive_query = fingerprint_queries(
                    product_columns, archive_columns, child, archive_child or child, hash_values=hash_values)
                # The archive's copy is hashed in its own server while product's is in this one.
                archived = pool.submit(_fingerprint, archive, archive_query) if archive_child is not None else None
                check = Verification(_fingerprint(product, product_query),
                                     archived.result() if archived is not None else None)
                result.verified[key] = check
                if check.matches:
                    product.execute(sql.SQL("DROP TABLE {}").format(child))
                    product.commit()
                    result.pruned[key] = check.product.rows
                else:
                    result.refused[key] = _refusal(spec, day, check)
            except psycopg.errors.LockNotAvailable:
                result.refused[key] = (
                    f"{spec.qualified_name} {day} was being loaded or read in one of the databases (no "
                    f"lock within {LOCK_TIMEOUT}): product keeps it, the next prune tries again"
                )
            except psycopg.Error as exc:
                result.refused[key] = f"{spec.qualified_name} {day} could not be compared ({error_summary(exc)}): product keeps it"
            finally:
                # The archive's lock is held until product's drop is committed, then released.
                for conn in (product, archive):
                    with contextlib.suppress(psycopg.Error):
                        conn.rollback()
    return result


def drop_derived_partitions(product: psycopg.Connection, spec: TableSpec, cutoff: dt.date) -> PruneResult:
    """Drop the product partitions of ``spec`` before ``cutoff``, for a table derived inside
    product from other product tables (no archive copy: nothing to compare, and the day can be
    derived again while its inputs are in product). Each day is locked (a derivation of the day in
    progress leaves it for the next prune), counted and dropped in its own transaction. Leaves the
    connection outside a transaction."""
    result = PruneResult()
    old = {d: c for d, c in product_partitions(product, spec).items() if d < cutoff}
    product.rollback()
    for day, name in sorted(old.items()):
        key, child = day.isoformat(), sql.Identifier(spec.schema_name, name)
        try:
            product.execute("SELECT set_config('lock_timeout', %s, true)", (LOCK_TIMEOUT,))
            product.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(child))
            (rows,) = product.execute(sql.SQL("SELECT count(*) FROM {}").format(child)).fetchone()
            product.execute(sql.SQL("DROP TABLE {}").format(child))
            product.commit()
            result.pruned[key] = int(rows)
        except psycopg.errors.LockNotAvailable:
            result.refused[key] = (f"{spec.qualified_name} {day} was being derived or read (no lock within "
                                   f"{LOCK_TIMEOUT}): product keeps it, the next prune tries again")
        except psycopg.Error as exc:
            result.refused[key] = f"{spec.qualified_name} {day} could not be dropped ({error_summary(exc)}): product keeps it"
        finally:
            with contextlib.suppress(psycopg.Error):
                product.rollback()
    return result
