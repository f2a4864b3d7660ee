"""The one way adpipes declares an asset stored in a partitioned table."""

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg
import pandas as pd
import pandera.pandas as pa

from adpipes.lib.quality import CheckGroup, quality_check_specs
from adpipes.lib.storage.locks import partition_write_lock
from adpipes.lib.storage.postgres import PostgresDatabase
from adpipes.lib.storage.tables import TableSpec

# The resource the partition write locks live in (the archive database, which every run reaches).
LOCK_RESOURCE = "archive_db"


def _one_writer_per_partition(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` holding the write locks of its partitions (see :mod:`adpipes.lib.storage.locks`)
    from its first line until its outputs are stored (Dagster stores an output when it is
    yielded, inside the block). The archive database resource is added to ``fn``'s parameters
    when ``fn`` does not ask for it itself."""
    signature = inspect.signature(fn)
    asks_for_it = LOCK_RESOURCE in signature.parameters

    @functools.wraps(fn)
    def locked(context: dg.AssetExecutionContext, *args: Any, **kwargs: Any) -> Any:
        archive = kwargs[LOCK_RESOURCE] if asks_for_it else kwargs.pop(LOCK_RESOURCE)
        with partition_write_lock(archive, context.asset_key, context.partition_keys, context.run.run_id):
            result = fn(context, *args, **kwargs)
            if inspect.isgenerator(result):
                yield from result
            else:
                yield result

    if not asks_for_it:
        extra = inspect.Parameter(LOCK_RESOURCE, inspect.Parameter.KEYWORD_ONLY, annotation=PostgresDatabase)
        # Before a **kwargs of inputs (an asset whose inputs depend on settings), if any.
        named = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
        rest = [p for p in signature.parameters.values() if p.kind == inspect.Parameter.VAR_KEYWORD]
        signature = signature.replace(parameters=[*named, extra, *rest])
    # Dagster reads the parameters (resources, config) from this signature.
    locked.__signature__ = signature
    del locked.__wrapped__
    return locked


def table_asset(
    table: TableSpec,
    *,
    partitions_def: dg.PartitionsDefinition,
    group_name: str,
    kinds: set[str],
    checks: Sequence[CheckGroup] = (),
    check_schemas: Sequence[pa.DataFrameSchema] | None = None,
    metadata: Mapping[str, Any] | None = None,
    **asset_kwargs: Any,
) -> Callable[..., dg.AssetsDefinition]:
    """``dg.asset`` for an asset written to ``table``: the table's asset key, its column schema
    and table name as definition metadata, and a single-run backfill policy, so a partition range
    is one run and the vendor clients cover it with as few calls as their APIs allow (rows are
    still written and counted per partition).

    ``checks``: the asset checks the asset reports (see :mod:`adpipes.lib.quality`); their
    descriptions list the rules of ``check_schemas`` (default: the table's schema).

    The step holds a write lock per partition for its whole run (see
    :func:`_one_writer_per_partition`); it needs the ``archive_db`` resource."""
    schemas = check_schemas if check_schemas is not None else [table.dataframe_schema]
    decorate = dg.asset(
        key=table.asset_key,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=group_name,
        kinds=kinds,
        metadata={**table.definition_metadata(), **(metadata or {})},
        check_specs=quality_check_specs(table.asset_key, checks, schemas, partitions_def),
        **asset_kwargs,
    )
    # One writer per partition: a second run of a partition being written fails before any call.
    return lambda fn: decorate(_one_writer_per_partition(fn))


def column_drift_metadata(
    log: Any, where: str, unknown: list[str], missing: list[str]
) -> dict[str, dg.MetadataValue]:
    """Warn about optional vendor columns that no longer come, and return the unknown (kept, and
    reported by the unknown_columns check) and missing ones as metadata."""
    if missing:
        log.warning(f"{where} lacks columns {missing}; they are null")
    return {
        "appsflyer/unknown_columns": dg.MetadataValue.json(unknown),
        "appsflyer/missing_columns": dg.MetadataValue.json(missing),
    }


def add_partition_metadata(context: dg.AssetExecutionContext, by_partition: Mapping[str, Mapping[str, Any]]) -> None:
    """Attach each partition's own figures to its materialization.

    A range run records one materialization per partition from one output, each with the
    output's metadata: a figure of the whole run (rows, installs, cost) would show on every day.
    Partition-scoped asset metadata overrides an output entry of the same name for that
    partition only."""
    for key in context.partition_keys:
        if key in by_partition:
            context.add_asset_metadata(dict(by_partition[key]), partition_key=key)


def frame_partition_metadata(
    frame: pd.DataFrame,
    partitions: Sequence[str],
    *,
    counts: Mapping[str, str] | None = None,
    plotted: Mapping[str, str] | None = None,
    sums: Mapping[str, str] | None = None,
    partition_column: str = "report_date",
    rows: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Per partition of ``frame``: ``counts`` (label -> column) as JSON rows per value;
    ``plotted`` (prefix -> column) as one int per value, ``{prefix}/{value}``, every value of
    the run on every partition (0 where absent) so each is one series in the UI's plots;
    ``sums`` (label -> column) as one float each. ``rows`` names a column holding how many rows
    each row of ``frame`` stands for (a summary of blocks streamed past, see
    :func:`row_summary`); by default each row is one."""
    # report_date may be text or dates, depending on how the frame was built.
    days = frame[partition_column].map(lambda v: v.isoformat()[:10] if hasattr(v, "isoformat") else str(v))
    out: dict[str, dict[str, Any]] = {}
    values = {prefix: sorted(frame[column].dropna().astype(str).unique()) for prefix, column in (plotted or {}).items()}
    for key in partitions:
        part = frame[(days == key).to_numpy()]
        metadata: dict[str, Any] = {}
        for label, column in (counts or {}).items():
            metadata[label] = dg.MetadataValue.json(
                {str(v): int(n) for v, n in row_counts_by(part, column, rows).items()})
        for prefix, column in (plotted or {}).items():
            seen = row_counts_by(part.assign(**{column: part[column].astype(str)}), column, rows)
            for value in values[prefix]:
                metadata[f"{prefix}/{value}"] = dg.MetadataValue.int(int(seen.get(value, 0)))
        for label, column in (sums or {}).items():
            total = pd.to_numeric(part[column], errors="coerce").sum() if len(part) else 0.0
            metadata[label] = dg.MetadataValue.float(float(total))
        out[key] = metadata
    return out


def row_counts_by(frame: pd.DataFrame, column: str, rows: str | None = None) -> pd.Series:
    """Rows per value of ``column`` (nulls included), largest first."""
    if rows is None:
        return frame[column].value_counts(dropna=False)
    return frame.groupby(column, dropna=False, sort=False)[rows].sum().sort_values(ascending=False, kind="stable")


def row_summary(frame: pd.DataFrame, by: Sequence[str], sums: Sequence[str] = ()) -> pd.DataFrame:
    """``frame`` reduced to one row per combination of ``by`` with its row count (``rows``) and
    the totals of ``sums``: what :func:`frame_partition_metadata` (``rows="rows"``) needs of a
    block that is written and dropped, a few hundred rows however big the block."""
    grouped = frame.groupby(list(by), dropna=False, sort=False, observed=True)
    summary = grouped.size().rename("rows").to_frame()
    for column in sums:
        summary[column] = grouped[column].sum(min_count=1)
    return summary.reset_index()
