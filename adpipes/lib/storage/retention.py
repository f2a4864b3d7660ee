"""Product retention in SQL: which day partitions a product table holds, and dropping old ones
after checking that the archive holds their rows.

Every table is partitioned by day (``schema.table_pYYYYMMDD``), so pruning a day is a ``DROP``
of its child table: instant, no ``DELETE`` and no vacuum. The archive is only read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from adpipes.lib.storage.postgres import partition_day
from adpipes.lib.storage.tables import TableSpec


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


def _count(conn: psycopg.Connection, spec: TableSpec, child: str | None) -> int:
    # Every row lives in its day's child table (no default partition): no child, no rows.
    if child is None:
        return 0
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(spec.schema_name, child))
    return conn.execute(query).fetchone()[0]


@dataclass
class PruneResult:
    """What pruning one table did: days dropped (with their row counts) and days refused."""

    pruned: dict[str, int] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


def prune_table(product: psycopg.Connection, archive: psycopg.Connection, spec: TableSpec,
                cutoff: dt.date) -> PruneResult:
    """Drop the product partitions of ``spec`` before ``cutoff`` whose rows the archive holds.

    A day is dropped only when the archive has at least as many rows for it as product; a day
    the archive lacks stays in product and is listed in ``refused`` with the reason. Each drop is
    its own transaction, so a refused or failed day never holds back the others.
    """
    result = PruneResult()
    archived = product_partitions(archive, spec)
    for day, child in sorted(product_partitions(product, spec).items()):
        if day >= cutoff:
            continue
        in_product = _count(product, spec, child)
        in_archive = _count(archive, spec, archived.get(day))
        archive.rollback()
        if in_archive < in_product:
            result.refused[day.isoformat()] = (
                f"the archive holds {in_archive} rows of {spec.qualified_name} for {day}, product "
                f"{in_product}: re-materialize the partition (it rewrites both) before it can be pruned"
            )
            product.rollback()
            continue
        product.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(spec.schema_name, child)))
        product.commit()
        result.pruned[day.isoformat()] = in_product
    return result
