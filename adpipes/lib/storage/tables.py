"""Table definitions derived from pandera schemas.

A pandera ``DataFrameSchema`` is the single source of truth for a table's columns: the PostgreSQL
DDL, the ``dagster/column_schema`` metadata shown in the UI, and the column order used for COPY
are all derived from it here. A ``TableSpec`` adds where the table lives (schema, name, which
databases) and is registered under its asset key, which the IO manager maps to ``schema.table``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd
import pandera.pandas as pa
from pandera.engines import pandas_engine

ARCHIVE = "archive"
PRODUCT = "product"
# Order matters: the archive is written first, so that if the product write fails a retry
# rewrites both and nothing the vendor sent is lost.
WRITE_ORDER = (ARCHIVE, PRODUCT)

PARTITION_COLUMN = "report_date"


@pandas_engine.immutable(init=True)
class Text(pandas_engine.STRING):
    """A text column: any pandas string dtype (``str``, ``string``), checked once per column.

    pandera's own string type answers its dtype check element by element (an array of True) and
    then builds failure-case frames from it, about 1 ms per column per validation: on a raw_data
    partition validated block by block that was most of the validation time.
    """

    def check(self, pandera_dtype, data_container=None) -> bool:  # noqa: ARG002
        return isinstance(getattr(pandera_dtype, "type", None), pd.StringDtype)


TEXT = Text(storage="pyarrow")


def postgres_type(column: pa.Column) -> str:
    """PostgreSQL type of a pandera column; ``metadata={"pg_type": ...}`` overrides the mapping."""
    override = (column.metadata or {}).get("pg_type")
    if override:
        return override
    dtype = column.dtype.type
    if isinstance(dtype, pd.StringDtype) or str(dtype) in ("str", "string", "object"):
        return "text"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "timestamptz"
    if isinstance(dtype, pd.BooleanDtype) or str(dtype) == "bool":
        return "boolean"
    name = str(dtype).lower()
    if name in ("int64", "int64[pyarrow]"):
        return "bigint"
    if name in ("int32", "int16", "int8"):
        return "integer"
    if name.startswith("float"):
        return "double precision"
    if name.startswith("datetime64"):
        return "timestamp"
    raise TypeError(f"no PostgreSQL type for pandera column {column.name!r} of dtype {dtype!r}")


@dataclass(frozen=True)
class ColumnDef:
    name: str
    pg_type: str
    nullable: bool
    description: str | None
    rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableSpec:
    """Where an asset's table lives and what its columns are (from its pandera schema)."""

    asset_key: dg.AssetKey
    dataframe_schema: pa.DataFrameSchema
    databases: tuple[str, ...]
    # Vendor reports grow new columns over time; archive tables of raw reports keep them as text
    # columns added on the fly instead of dropping what the vendor sent.
    keep_unknown_columns: bool = False
    description: str | None = None
    # Columns that let a reviewer find a row (failure cases and quarantine show them).
    row_key: tuple[str, ...] = ()
    # Raised when the table's layout changes incompatibly (its key or the meaning of its columns):
    # an existing table of an older layout is kept, renamed, never rewritten or dropped (see
    # ``ensure_table``). Recorded in the table's comment.
    layout_version: int = 1
    _columns: tuple[ColumnDef, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        path = self.asset_key.path
        if len(path) != 2:
            raise ValueError(f"asset key {path} must be [schema, table]")
        unknown = set(self.databases) - set(WRITE_ORDER)
        if unknown:
            raise ValueError(f"unknown databases {sorted(unknown)} for {path}")
        # Imported here: adpipes.lib.quality stores its tables through this package.
        from adpipes.lib.quality.rules import rule_of

        columns = tuple(
            ColumnDef(
                name=name,
                pg_type=postgres_type(column),
                nullable=bool(column.nullable),
                description=column.description,
                rules=tuple(rule_of(check).description for check in column.checks),
            )
            for name, column in self.dataframe_schema.columns.items()
        )
        if PARTITION_COLUMN not in {c.name for c in columns}:
            raise ValueError(f"table {path} has no {PARTITION_COLUMN} column")
        object.__setattr__(self, "_columns", columns)

    @property
    def schema_name(self) -> str:
        return self.asset_key.path[0]

    @property
    def table_name(self) -> str:
        return self.asset_key.path[1]

    @property
    def qualified_name(self) -> str:
        return f"{self.schema_name}.{self.table_name}"

    @property
    def columns(self) -> tuple[ColumnDef, ...]:
        return self._columns

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self._columns]

    def write_databases(self) -> list[str]:
        return [db for db in WRITE_ORDER if db in self.databases]

    def column_schema(self) -> dg.TableSchema:
        return dg.TableSchema(
            columns=[
                dg.TableColumn(
                    name=c.name,
                    type=c.pg_type,
                    description=c.description,
                    constraints=dg.TableColumnConstraints(nullable=c.nullable, other=list(c.rules)),
                )
                for c in self._columns
            ]
        )

    def definition_metadata(self) -> dict[str, object]:
        """Static metadata for the asset definition, shown in the UI before any run."""
        return {
            "dagster/column_schema": self.column_schema(),
            "dagster/table_name": self.qualified_name,
            "adpipes/databases": ", ".join(self.write_databases()),
        }


class TableRegistry:
    """Asset key -> TableSpec, so the IO manager finds a table's definition from its context."""

    def __init__(self) -> None:
        self._specs: dict[tuple[str, ...], TableSpec] = {}

    def register(self, spec: TableSpec) -> TableSpec:
        existing = self._specs.get(tuple(spec.asset_key.path))
        if existing is not None and existing != spec:
            raise ValueError(f"table for {spec.asset_key.to_user_string()} registered twice")
        self._specs[tuple(spec.asset_key.path)] = spec
        return spec

    def get(self, asset_key: dg.AssetKey) -> TableSpec:
        try:
            return self._specs[tuple(asset_key.path)]
        except KeyError:
            raise KeyError(
                f"no table is registered for asset {asset_key.to_user_string()}; "
                "define a TableSpec for it with adpipes.lib.storage.tables.TABLES.register"
            ) from None

    def all(self) -> Iterable[TableSpec]:
        return list(self._specs.values())


TABLES = TableRegistry()


def report_date_column() -> pa.Column:
    return pa.Column(
        TEXT,
        nullable=False,
        description="Partition key: the day (app timezone) the row belongs to.",
        metadata={"pg_type": "date"},
    )
