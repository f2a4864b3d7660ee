"""Keeping product lean: ``product_retention_sensor`` and the ``prune_product_partitions`` job.

The sensor looks at the day partitions of every product table. When some fall past the table's
retention (``ADPIPES_PRODUCT_RETENTION_DAYS``, per-table ``ADPIPES_PRODUCT_RETENTION_OVERRIDES``),
it requests one run of the prune job with the cutoff per table in its run config; the run key is
made of the cutoffs, so the same prune is never requested twice. The job compares each old
partition with the archive's copy (row count and a whole-row fingerprint, see
:mod:`adpipes.lib.storage.retention`), drops the ones whose copies are the same from product and
records what it dropped as asset observations (Dagster OSS cannot un-materialize a partition, so
the UI shows the drop next to the materialization). A partition whose copies differ stays in
product and fails the run, naming table, day and both row counts. The archive is never written.
Tables derived inside product from other product tables (``DERIVED_IN_PRODUCT``, e.g. the
analysis tables) have no archive copy: their old partitions are dropped without a comparison.
"""

import datetime as dt
import difflib
from collections.abc import Mapping
from zoneinfo import ZoneInfo

import dagster as dg
from pydantic import Field

from adpipes.lib.settings import ConfigurationError
from adpipes.lib.storage.postgres import PostgresDatabase
from adpipes.lib.storage.retention import drop_derived_partitions, product_partitions, prune_table
from adpipes.lib.storage.tables import PRODUCT, TABLES, TableSpec

PRUNE_JOB = "prune_product_partitions"
# The job's one op; an op may not share its job's name within a code location.
PRUNE_OP = "drop_verified_partitions"
RETENTION_SENSOR = "product_retention_sensor"
# Retention is a matter of days: an hourly look is plenty and costs one catalog query per table.
SENSOR_INTERVAL_SECONDS = 3600


class PruneConfig(dg.Config):
    cutoffs: dict[str, str] = Field(
        description="Asset key (e.g. appsflyer/raw_data) -> first day to keep (YYYY-MM-DD); product "
        "partitions before it are dropped once the archive is verified to hold the same rows."
    )


# Product tables kept whole on purpose (no day partitions, not in TABLES), asset key -> why;
# filled by their modules. A retention override naming one is refused with that reason.
NEVER_PRUNED: dict[str, str] = {}
# Product-only tables derived inside product from other product tables (no archive copy to verify
# against), asset key -> the inputs they are derived from; filled by their modules. Their old
# partitions are dropped unverified: they can be derived again while their inputs are in product.
DERIVED_IN_PRODUCT: dict[str, str] = {}


def product_tables() -> list[TableSpec]:
    return sorted((s for s in TABLES.all() if PRODUCT in s.databases), key=lambda s: s.qualified_name)


@dg.op(name=PRUNE_OP, out=dg.Out(dg.Nothing), tags={"adpipes/trigger": "retention"})
def prune_product_partitions_op(
    context: dg.OpExecutionContext, config: PruneConfig, product_db: PostgresDatabase,
    archive_db: PostgresDatabase,
):
    """Drop product partitions before each table's cutoff whose archive copy holds the same rows."""
    summary: dict[str, dict[str, object]] = {}
    refused: list[str] = []
    verified: dict[str, dict[str, object]] = {}
    with product_db.connect() as product, archive_db.connect() as archive:
        for key, cutoff in sorted(config.cutoffs.items()):
            spec = TABLES.get(dg.AssetKey.from_user_string(key))
            if PRODUCT not in spec.databases:
                raise dg.Failure(f"{key} has no product table; remove it from the prune's cutoffs")
            derived_from = DERIVED_IN_PRODUCT.get(key)
            if derived_from is None:
                result = prune_table(product, archive, spec, dt.date.fromisoformat(cutoff))
                still_in = "archive"
            else:
                result = drop_derived_partitions(product, spec, dt.date.fromisoformat(cutoff))
                still_in = f"nowhere (derived in product from {derived_from})"
            summary[key] = {"cutoff": cutoff, "pruned_rows": result.pruned, "refused": result.refused}
            verified[key] = {day: check.as_metadata() for day, check in result.verified.items()}
            for day, rows in result.pruned.items():
                yield dg.AssetObservation(
                    asset_key=spec.asset_key, partition=day,
                    metadata={"adpipes/pruned_from_product": True, "adpipes/pruned_rows": rows,
                              "adpipes/cutoff": cutoff, "adpipes/still_in": still_in},
                )
            if result.pruned:
                context.log.info(f"{spec.qualified_name}: dropped {len(result.pruned)} product partition(s) "
                                 f"before {cutoff} ({sum(result.pruned.values())} rows; still in: {still_in})")
            refused += [f"{key} {day}: {why}" for day, why in result.refused.items()]
    metadata = {
        "pruned_partitions": dg.MetadataValue.json({k: sorted(v["pruned_rows"]) for k, v in summary.items()}),
        "pruned_rows": dg.MetadataValue.json({k: sum(v["pruned_rows"].values()) for k, v in summary.items()}),
        "refused": dg.MetadataValue.json(refused),
        # Row counts and whole-row fingerprints of both copies of every partition compared.
        "verified_partitions": dg.MetadataValue.json(verified),
    }
    if refused:
        raise dg.Failure(
            description=f"{len(refused)} product partition(s) were not pruned because the archive's "
            "copy is missing, differs or could not be compared; product keeps them:\n" + "\n".join(refused[:20]),
            metadata=metadata,
        )
    yield dg.Output(None, metadata=metadata)


@dg.job(name=PRUNE_JOB, description="Drops product partitions past retention whose archive copy holds the same rows (row count and whole-row fingerprint).")
def prune_product_partitions_job():
    prune_product_partitions_op()


def cutoffs_due(product: PostgresDatabase, retention_days: int, overrides: Mapping[str, int],
                timezone: str, today: dt.date | None = None) -> dict[str, str]:
    """Asset key -> cutoff for every product table holding partitions before its cutoff."""
    today = today or dt.datetime.now(ZoneInfo(timezone)).date()
    due = {}
    with product.connect() as conn:
        for spec in product_tables():
            key = spec.asset_key.to_user_string()
            cutoff = today - dt.timedelta(days=overrides.get(key, retention_days))
            if any(day < cutoff for day in product_partitions(conn, spec)):
                due[key] = cutoff.isoformat()
    return due


def prune_run_request(cutoffs: Mapping[str, str]) -> dg.RunRequest:
    return dg.RunRequest(
        # One prune per set of cutoffs: later ticks on the same day ask for the same key, which
        # Dagster does not launch again.
        run_key="prune:" + ",".join(f"{k}<{v}" for k, v in sorted(cutoffs.items())),
        run_config=dg.RunConfig(ops={PRUNE_OP: PruneConfig(cutoffs=dict(cutoffs))}),
        tags={"adpipes/trigger": "retention"},
    )


def check_retention_overrides(overrides: Mapping[str, int]) -> None:
    """Refuse overrides naming no table product holds: a typo would silently keep the default."""
    kept = sorted(set(overrides) & set(NEVER_PRUNED))
    if kept:
        raise ConfigurationError(
            "adpipes configuration is invalid:\n  - ADPIPES_PRODUCT_RETENTION_OVERRIDES names "
            + "; ".join(f"{key}, which is never pruned ({NEVER_PRUNED[key]})" for key in kept)
            + ". Remove it from the variable (or .env)."
        )
    known = sorted(spec.asset_key.to_user_string() for spec in TABLES.all() if PRODUCT in spec.databases)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]}?)" if close else ""))
        raise ConfigurationError(
            "adpipes configuration is invalid:\n  - ADPIPES_PRODUCT_RETENTION_OVERRIDES names "
            f"{', '.join(hints)}, which product does not hold; the tables it holds are "
            f"{', '.join(known)}. Fix the key(s) in the environment (or .env)."
        )


def build_retention_sensor(retention_days: int, overrides: Mapping[str, int], timezone: str) -> dg.SensorDefinition:
    check_retention_overrides(overrides)
    @dg.sensor(
        name=RETENTION_SENSOR, job=prune_product_partitions_job,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS, default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Requests {PRUNE_JOB} when product partitions fall past retention "
        f"({retention_days} days; overrides {dict(overrides) or 'none'}).",
    )
    def product_retention_sensor(context: dg.SensorEvaluationContext, product_db: PostgresDatabase):
        due = cutoffs_due(product_db, retention_days, overrides, timezone)
        if not due:
            return dg.SkipReason("no product partition is past retention")
        return prune_run_request(due)

    return product_retention_sensor
