"""The one way adpipes declares an asset stored in a partitioned table."""

from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

from adpipes.lib.storage.tables import TableSpec


def table_asset(
    table: TableSpec,
    *,
    partitions_def: dg.PartitionsDefinition,
    group_name: str,
    kinds: set[str],
    metadata: Mapping[str, Any] | None = None,
    **asset_kwargs: Any,
) -> Callable[..., dg.AssetsDefinition]:
    """``dg.asset`` for an asset written to ``table``: the table's asset key, its column schema
    and table name as definition metadata, and a single-run backfill policy, so a partition range
    is one run and the vendor clients cover it with as few calls as their APIs allow (rows are
    still written and counted per partition)."""
    return dg.asset(
        key=table.asset_key,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=group_name,
        kinds=kinds,
        metadata={**table.definition_metadata(), **(metadata or {})},
        **asset_kwargs,
    )


def column_drift_metadata(
    log: Any, where: str, unknown: list[str], missing: list[str], kept_in: str
) -> dict[str, dg.MetadataValue]:
    """Warn about vendor columns adpipes does not know (kept in ``kept_in``) or no longer gets,
    and return them as the ``appsflyer/unknown_columns``/``missing_columns`` metadata the UI shows."""
    if unknown:
        log.warning(
            f"{where} has columns adpipes does not know yet: {unknown}. They are kept in {kept_in} "
            "as text columns."
        )
    if missing:
        log.warning(f"{where} lacks columns {missing}; they are null")
    return {
        "appsflyer/unknown_columns": dg.MetadataValue.json(unknown),
        "appsflyer/missing_columns": dg.MetadataValue.json(missing),
    }
