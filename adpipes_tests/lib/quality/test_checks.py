"""Asset checks from a schema on a small asset: results, blocking, volume, the archive tables."""

import gzip
import socket

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import psycopg
import pytest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from adpipes.lib.assets import table_asset
from adpipes.lib.quality import (
    ROW_VOLUME,
    CheckGroup,
    QualityReport,
    QualityStore,
    RejectedDelivery,
    check_groups,
    publish,
    rule,
)
from adpipes.lib.storage.postgres import PartitionedTableIOManager, PostgresDatabase
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


def check_records(instance: dg.DagsterInstance, name: str) -> dict[str, list]:
    """The instance's executions of the amounts check ``name``, per partition, latest first."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(TABLE.asset_key, name), limit=100)
    out: dict[str, list] = {}
    for record in records:
        out.setdefault(record.partition, []).append(record)
    return out


def test_volume_is_not_evaluated_without_history_then_warns_outside_the_band(storage_resources, clean_databases):
    instance = dg.DagsterInstance.ephemeral()
    first = dg.materialize([amounts], resources=storage_resources, partition_key="2026-03-01", instance=instance,
                           run_config=dg.RunConfig(ops={"quality_test__amounts": AmountsConfig(rows=100)}))
    assert first.success
    # Not judged is not a pass: no evaluation, so the execution the run planned for the
    # partition stays unevaluated (the UI resolves it as skipped once the run has succeeded).
    assert "row_volume" not in evaluations(first)
    (record,) = check_records(instance, "row_volume")["2026-03-01"]
    assert record.status == AssetCheckExecutionRecordStatus.PLANNED
    assert instance.get_run_by_id(first.run_id).status == dg.DagsterRunStatus.SUCCESS
    (materialization,) = first.asset_materializations_for_node("quality_test__amounts")
    assert "not enough history yet: 0 of the 7" in materialization.metadata["adpipes/row_volume"].value
    for day in ("2026-03-02", "2026-03-03", "2026-03-04"):
        assert run(storage_resources, day, rows=100).success
    usual = evaluations(run(storage_resources, "2026-03-05", rows=120))["row_volume"]
    assert usual.passed and usual.partition == "2026-03-05"
    # A passing WARN check is labelled WARN, not Dagster's default ERROR.
    assert usual.severity == dg.AssetCheckSeverity.WARN
    # 3 previous days of 100 rows: median 100, band 50-200 (factor 2), as numbers the UI plots.
    assert usual.metadata["median"] == dg.MetadataValue.float(100.0)
    assert usual.metadata["rows"] == dg.MetadataValue.int(120)
    low = run(storage_resources, "2026-03-06", rows=20)
    assert low.success  # WARN never blocks
    volume = evaluations(low)["row_volume"]
    assert not volume.passed and volume.severity == dg.AssetCheckSeverity.WARN
    assert volume.metadata["median"].value == 100 and "2026-03-06" in volume.description


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


def test_a_range_run_evaluates_and_counts_each_partition(storage_resources, clean_databases):
    product_dsn, _ = clean_databases
    instance = dg.DagsterInstance.ephemeral()
    # 2026-05-01 gets 2 bad rows of 6, the two other days 1 of 5 and 1 of 4: different per-day
    # figures, so a day showing the run's total (or another day's) fails.
    days = {"2026-05-01": (6, 2), "2026-05-02": (5, 1), "2026-05-03": (4, 1)}
    for day, (rows, bad) in days.items():
        # Each day materialized once alone first, so the range run replaces stored days.
        assert run(storage_resources, day, rows=rows, bad=bad).success is False  # quarantine > share 0
    result = dg.materialize(
        [amounts], resources=storage_resources, raise_on_error=False, instance=instance,
        tags={"dagster/asset_partition_range_start": "2026-05-01", "dagster/asset_partition_range_end": "2026-05-03"},
        run_config=dg.RunConfig(ops={"quality_test__amounts": AmountsConfig(rows=5, bad=1)}),
    )
    assert not result.success  # quarantined rows over max_quarantined_share 0 block
    with psycopg.connect(product_dsn) as conn:
        stored = dict(conn.execute("SELECT report_date::text, count(*) FROM quality_test.amounts "
                                   "GROUP BY 1").fetchall())
    assert stored == {day: 4 for day in days}  # 5 rows a day, 1 quarantined
    # The instance's event log: one materialization per partition, each with its own figures.
    records = instance.fetch_materializations(TABLE.asset_key, limit=10).records
    latest = {}
    for record in records:
        if record.run_id == result.run_id:
            latest.setdefault(record.partition_key, record.asset_materialization.metadata)
    assert set(latest) == set(days)
    for day, metadata in latest.items():
        assert metadata["dagster/row_count"] == dg.MetadataValue.int(stored[day])
        assert metadata["dagster/partition_row_count"] == dg.MetadataValue.int(stored[day])
        assert metadata["quarantined_rows"] == dg.MetadataValue.int(1)
        assert metadata["checked_rows"] == dg.MetadataValue.int(5)
    # One evaluation per check and partition, each naming its partition and its own rows.
    by_check: dict[str, dict[str, dg.AssetCheckEvaluation]] = {}
    for evaluation in result.get_asset_check_evaluations():
        by_check.setdefault(evaluation.check_name, {})[evaluation.partition] = evaluation
    assert set(by_check["positive_amounts"]) == set(days)
    for day, evaluation in by_check["positive_amounts"].items():
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert evaluation.metadata["failing_rows"] == dg.MetadataValue.int(1)
        assert evaluation.metadata["checked_rows"] == dg.MetadataValue.int(5)
        assert evaluation.description.startswith(f"{day}: 1 of 5 rows")
        # Aimed at the partition's own materialization of this run: Dagster shows a partitioned
        # check's status only while it targets the partition's latest materialization.
        assert evaluation.target_materialization_data.run_id == result.run_id
        assert evaluation.target_materialization_data.storage_id == next(
            r.storage_id for r in records if r.run_id == result.run_id and r.partition_key == day)
    assert all(e.passed for e in by_check["required_values"].values())
    # The instance holds them per partition too (what the UI's partition view reads).
    stored_checks = check_records(instance, "positive_amounts")
    for day in days:
        assert stored_checks[day][0].status == AssetCheckExecutionRecordStatus.FAILED


def quality_tables(archive_dsn: str) -> dict[str, list[tuple]]:
    with psycopg.connect(archive_dsn) as conn:
        return {table: conn.execute(f"SELECT * FROM quality.{table} t ORDER BY t::text").fetchall()
                for table in ("partition_rows", "failure_cases", "quarantine")}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("fault", ["product unreachable", "archive load error"])
def test_a_failed_load_leaves_the_quality_tables_as_they_were(storage_resources, clean_databases, fault):
    # They describe what is stored: the row_volume median must not count rows that never landed.
    product_dsn, archive_dsn = clean_databases
    day = "2026-06-01"
    assert run(storage_resources, day, rows=10).success
    before = quality_tables(archive_dsn)
    assert before["partition_rows"] and not before["failure_cases"]
    resources = dict(storage_resources)
    if fault == "product unreachable":
        product = PostgresDatabase(role="product", dsn=f"postgresql://postgres@127.0.0.1:{closed_port()}/product")
        resources["io_manager"] = PartitionedTableIOManager(archive=storage_resources["io_manager"].archive,
                                                            product=product, timezone="Asia/Seoul")
    else:
        with psycopg.connect(archive_dsn, autocommit=True) as conn:
            conn.execute("CREATE FUNCTION quality_test.refuse() RETURNS trigger LANGUAGE plpgsql AS "
                         "$$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$")
            conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON quality_test.amounts "
                         "FOR EACH ROW EXECUTE FUNCTION quality_test.refuse()")
    result = run(resources, day, rows=12, bad=2)
    assert not result.success
    assert not result.get_asset_check_evaluations()  # the step failed at the load, before its checks
    assert quality_tables(archive_dsn) == before


def test_a_refusal_records_why_and_keeps_quarantine_and_history(storage_resources, clean_databases):
    _, archive_dsn = clean_databases
    asset_key = dg.AssetKey(["quality_test", "amounts"])
    store = storage_resources["quality"]
    report = QualityReport(CHECKS, ["2026-07-01"], TABLE.row_key)
    frame = pd.DataFrame({"report_date": pd.Series(["2026-07-01"] * 3, dtype="str"),
                          "name": pd.Series(["a", "b", "c"], dtype="str"),
                          "amount": pd.Series([1, -1, 2], dtype="Int64")})
    report.check_rows([(SCHEMA, frame)], keys=frame)
    store.record("run-1", asset_key, report)
    stored = quality_tables(archive_dsn)
    refusal = QualityReport(CHECKS, ["2026-07-01"], TABLE.row_key)
    refusal.add_unreadable("2026-07-01", "an HTML page, not a CSV report")
    kept = RejectedDelivery("2026-07-01", "an HTML page", content="<html>maintenance</html>")
    for run_id in ("run-2", "run-3"):
        store.record_refusal(run_id, asset_key, refusal, refusal.refused_partitions(), [kept])
    after = quality_tables(archive_dsn)
    assert after["partition_rows"] == stored["partition_rows"] and after["quarantine"] == stored["quarantine"]
    assert [(r[2], r[4]) for r in after["failure_cases"]] == [("required_columns", None)]
    with psycopg.connect(archive_dsn) as conn:
        assert conn.execute("SELECT run_id, content FROM quality.rejected_deliveries ORDER BY id").fetchall() == [
            ("run-2", "<html>maintenance</html>"), ("run-3", "<html>maintenance</html>")]


def test_rejected_files_are_kept_whole_gzip_compressed(storage_resources, clean_databases, tmp_path):
    _, archive_dsn = clean_databases
    delivered = tmp_path / "day.csv"
    # Every byte COPY's text format escapes, and more than one compression chunk of data.
    body = b"A,B\n" + b"".join(f'"tab\there\\\\n",{i}\r\n'.encode() for i in range(200_000))
    delivered.write_bytes(body)
    kept = RejectedDelivery("2026-07-02", "fewer rows\tthan\narchived \\ 151", path=delivered, rows=200_000,
                            columns=["a", "b"], archived_rows=151)
    storage_resources["quality"].record_refusal("run-1", dg.AssetKey(["quality_test", "amounts"]),
                                                QualityReport(CHECKS, []), [], [kept])
    with psycopg.connect(archive_dsn) as conn:
        row = conn.execute("SELECT problem, content, content_gzip, file_name, row_count, columns, archived_rows "
                           "FROM quality.rejected_deliveries").fetchone()
    assert row[0] == kept.problem and row[1] is None
    assert gzip.decompress(row[2]) == body and len(row[2]) < len(body) / 5
    assert row[3:] == ("day.csv", 200_000, ["a", "b"], 151)


def test_a_rejected_deliveries_table_of_before_is_upgraded_keeping_its_rows(storage_resources, clean_databases):
    _, archive_dsn = clean_databases
    with psycopg.connect(archive_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA quality")
        conn.execute("CREATE TABLE quality.rejected_deliveries (asset_key text NOT NULL, report_date date NOT NULL, "
                     "problem text NOT NULL, content text NOT NULL, run_id text NOT NULL, "
                     "recorded_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO quality.rejected_deliveries (asset_key, report_date, problem, content, run_id) "
                     "VALUES ('appsflyer/daily_report', '2026-01-01', 'no Date', 'x,y', 'old')")
    storage_resources["quality"].record_refusal(
        "new", dg.AssetKey(["quality_test", "amounts"]), QualityReport(CHECKS, []), [],
        [RejectedDelivery("2026-07-03", "no rows", rows=0, archived_rows=10)])
    with psycopg.connect(archive_dsn) as conn:
        rows = conn.execute("SELECT id, run_id, content, row_count, archived_rows FROM quality.rejected_deliveries "
                            "ORDER BY id").fetchall()
    assert rows == [(1, "old", "x,y", None, None), (2, "new", None, 0, 10)]


def test_adpipes_max_row_drop_reaches_the_quality_store_and_bounds_the_drop():
    from adpipes.definitions import build_resources
    from adpipes.lib.settings import load_settings

    store = build_resources(load_settings({"ADPIPES_MAX_ROW_DROP": "0.02"}))["quality"]
    assert store.max_row_drop == 0.02
    assert not store.row_drop_refused(archived=100, delivered=98) and store.row_drop_refused(100, 97)
    default = build_resources(load_settings({}))["quality"]
    assert default.row_drop_refused(151, 150) and not default.row_drop_refused(151, 151)
    assert not default.row_drop_refused(0, 0) and not default.row_drop_refused(151, 200)
