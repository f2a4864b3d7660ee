"""Asset checks from a schema on a small asset: results, blocking, volume, the archive tables."""

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import psycopg

from adpipes.lib.assets import table_asset
from adpipes.lib.quality import (
    ROW_VOLUME,
    CheckGroup,
    QualityReport,
    QualityStore,
    check_groups,
    publish,
    rule,
)
from adpipes.lib.storage.tables import ARCHIVE, PRODUCT, TABLES, TableSpec, report_date_column

POSITIVE = CheckGroup("positive_amounts", "Amounts are positive.")
SCHEMA = pa.DataFrameSchema({
    "report_date": report_date_column(),
    "name": pa.Column("str", nullable=False, description="Row name."),
    "amount": pa.Column("Int64", rule(POSITIVE, pa.Check.gt(0), "amount > 0"), nullable=True),
})
TABLE = TABLES.register(TableSpec(asset_key=dg.AssetKey(["quality_test", "amounts"]), dataframe_schema=SCHEMA,
                                  databases=(ARCHIVE, PRODUCT), row_key=("name",)))
CHECKS = check_groups(SCHEMA, extra=[ROW_VOLUME])
PARTITIONS = dg.DailyPartitionsDefinition(start_date="2026-01-01")


class AmountsConfig(dg.Config):
    rows: int = 10
    bad: int = 0


@table_asset(TABLE, partitions_def=PARTITIONS, group_name="test", kinds={"postgres"}, checks=CHECKS)
def amounts(context: dg.AssetExecutionContext, config: AmountsConfig, quality: QualityStore):
    """Test amounts."""
    frames = []
    for key in context.partition_keys:
        frames.append(pd.DataFrame({
            "report_date": pd.Series([key] * config.rows, dtype="str"),
            "name": pd.Series([f"{key}-{n}" for n in range(config.rows)], dtype="str"),
            "amount": pd.Series([-1 if n < config.bad else n + 1 for n in range(config.rows)], dtype="Int64"),
        }))
    frame = pd.concat(frames, ignore_index=True)
    report = QualityReport(CHECKS, context.partition_keys, TABLE.row_key)
    frame = frame[report.check_rows([(SCHEMA, frame)], keys=frame).to_numpy()]
    yield from publish(context, quality, report, dg.Output(frame))


def run(storage_resources, day: str, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize([amounts], resources=storage_resources, partition_key=day, raise_on_error=False,
                          run_config=dg.RunConfig(ops={"quality_test__amounts": AmountsConfig(**config)}))


def evaluations(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_check_specs_describe_their_rules():
    specs = {spec.name: spec for spec in amounts.check_specs}
    assert set(specs) == {"required_columns", "required_values", "positive_amounts", "row_volume"}
    assert "- amount > 0" in specs["positive_amounts"].description
    assert specs["positive_amounts"].blocking and not specs["row_volume"].blocking
    column = {c.name: c for c in TABLE.column_schema().columns}["amount"]
    assert column.constraints.other == ["amount > 0"]


def test_volume_is_skipped_without_history_then_warns_outside_the_band(storage_resources, clean_databases):
    first = run(storage_resources, "2026-03-01", rows=100)
    assert first.success
    assert evaluations(first)["row_volume"].passed
    assert "Skipped" in evaluations(first)["row_volume"].description
    for day in ("2026-03-02", "2026-03-03", "2026-03-04"):
        assert run(storage_resources, day, rows=100).success
    usual = evaluations(run(storage_resources, "2026-03-05", rows=120))["row_volume"]
    assert usual.passed and "Skipped" not in usual.description
    low = run(storage_resources, "2026-03-06", rows=20)
    assert low.success  # WARN never blocks
    volume = evaluations(low)["row_volume"]
    assert not volume.passed and volume.severity == dg.AssetCheckSeverity.WARN
    assert volume.metadata["row_counts"].value["2026-03-06"]["median"] == 100


def test_failure_cases_are_queryable_and_replaced_on_rerun(storage_resources, clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = "2026-04-01"
    result = run(storage_resources, day, rows=10, bad=2)
    assert not result.success
    evaluation = evaluations(result)["positive_amounts"]
    assert evaluation.metadata["failing_rows"].value == 2
    assert evaluation.metadata["quarantined_rows"].value == 2
    with psycopg.connect(archive_dsn) as conn:
        listed = conn.execute(evaluation.metadata["full_list"].value.split("--")[0]).fetchall()
        assert len(listed) == 2
        quarantined = conn.execute(evaluation.metadata["quarantine"].value).fetchall()
        assert len(quarantined) == 2
    with psycopg.connect(product_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM quality_test.amounts").fetchone() == (8,)
    # Fixed at the source: the re-run passes and clears the partition's failure cases.
    clean = run(storage_resources, day, rows=10)
    assert clean.success and all(e.passed for e in clean.get_asset_check_evaluations())
    with psycopg.connect(archive_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM quality.failure_cases").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM quality.quarantine").fetchone() == (0,)
    with psycopg.connect(product_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM quality_test.amounts").fetchone() == (10,)


def test_a_range_reports_per_partition(storage_resources, clean_databases):
    result = dg.materialize(
        [amounts], resources=storage_resources, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": "2026-05-01", "dagster/asset_partition_range_end": "2026-05-03"},
        run_config=dg.RunConfig(ops={"quality_test__amounts": AmountsConfig(rows=5, bad=1)}),
    )
    evaluation = evaluations(result)["positive_amounts"]
    assert evaluation.metadata["failing_rows_by_partition"].value == {
        "2026-05-01": 1, "2026-05-02": 1, "2026-05-03": 1
    }
    assert evaluation.metadata["partitions"].value == ["2026-05-01", "2026-05-02", "2026-05-03"]
