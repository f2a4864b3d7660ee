"""The one way adpipes declares an asset stored in a partitioned table."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg
import pandera.pandas as pa

from adpipes.lib.quality import CheckGroup, quality_check_specs
from adpipes.lib.storage.tables import TableSpec


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
    descriptions list the rules of ``check_schemas`` (default: the table's schema)."""
    schemas = check_schemas if check_schemas is not None else [table.dataframe_schema]
    return dg.asset(
        key=table.asset_key,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=group_name,
        kinds=kinds,
        metadata={**table.definition_metadata(), **(metadata or {})},
        check_specs=quality_check_specs(table.asset_key, checks, schemas),
        **asset_kwargs,
    )


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
