"""Retention: the sensor asks for one prune per cutoff, the job drops only verified old partitions."""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import psycopg

from adpipes.lib.retention import (
    PRUNE_OP,
    build_retention_sensor,
    prune_product_partitions_job,
)
from adpipes.lib.storage.postgres import PostgresDatabase, replace_partitions
from adpipes.lib.storage.tables import ARCHIVE, PRODUCT, TABLES, TEXT, TableSpec, report_date_column

TZ = "Asia/Seoul"
SPEC = TABLES.register(TableSpec(
    asset_key=dg.AssetKey(["retention_test", "events"]),
    dataframe_schema=pa.DataFrameSchema({"report_date": report_date_column(), "name": pa.Column(TEXT)}),
    databases=(ARCHIVE, PRODUCT),
))
KEY = "retention_test/events"


def today() -> dt.date:
    return dt.datetime.now(ZoneInfo(TZ)).date()


def load(dsn: str, days: list[dt.date], rows: int = 3) -> None:
    frame = pd.DataFrame({
        "report_date": pd.Series([d.isoformat() for d in days for _ in range(rows)], dtype="str"),
        "name": pd.Series([f"{d}-{n}" for d in days for n in range(rows)], dtype="str"),
    })
    with psycopg.connect(dsn) as conn:
        replace_partitions(conn, SPEC, frame, days, timezone=TZ)


def partition_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT report_date::text, count(*) FROM retention_test.events GROUP BY 1").fetchall())


def children(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'retention_test.events'::regclass").fetchone()[0]


def test_sensor_requests_one_prune_and_the_job_drops_only_verified_partitions(clean_databases):
    product_dsn, archive_dsn = clean_databases
    old = [today() - dt.timedelta(days=n) for n in (100, 99, 98)]
    recent = today() - dt.timedelta(days=1)
    load(product_dsn, old + [recent])
    load(archive_dsn, old[:2] + [recent])  # the archive lacks old[2]: it must not be pruned
    resources = {"product_db": PostgresDatabase(role="product", dsn=product_dsn),
                 "archive_db": PostgresDatabase(role="archive", dsn=archive_dsn)}
    sensor = build_retention_sensor(90, {}, TZ)

    with dg.build_sensor_context(resources=resources) as context:
        request = sensor(context)
    assert isinstance(request, dg.RunRequest)
    cutoff = (today() - dt.timedelta(days=90)).isoformat()
    assert request.run_config["ops"][PRUNE_OP]["config"]["cutoffs"] == {KEY: cutoff}
    with dg.build_sensor_context(resources=resources) as context:
        assert sensor(context).run_key == request.run_key  # same cutoff, same key: never twice

    archive_before = partition_counts(archive_dsn)
    result = prune_product_partitions_job.execute_in_process(
        run_config=request.run_config, resources=resources, raise_on_error=False
    )
    # The unverifiable partition is an error of the run, the verified ones are gone from product.
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert old[2].isoformat() in failure.event_specific_data.error.message
    assert partition_counts(product_dsn) == {old[2].isoformat(): 3, recent.isoformat(): 3}
    assert children(product_dsn) == 2  # dropped, not emptied
    assert partition_counts(archive_dsn) == archive_before
    observed = {(e.event_specific_data.asset_observation.partition,
                 e.event_specific_data.asset_observation.metadata["adpipes/pruned_rows"].value)
                for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"}
    assert observed == {(old[0].isoformat(), 3), (old[1].isoformat(), 3)}

    # A backfill puts a pruned day back into product; the next prune takes it out again.
    load(product_dsn, [old[0]])
    assert partition_counts(product_dsn)[old[0].isoformat()] == 3
    load(archive_dsn, [old[2]])
    with dg.build_sensor_context(resources=resources) as context:
        again = sensor(context)
    assert prune_product_partitions_job.execute_in_process(run_config=again.run_config, resources=resources).success
    assert partition_counts(product_dsn) == {recent.isoformat(): 3}


def test_nothing_past_retention_is_a_skip(clean_databases):
    product_dsn, _ = clean_databases
    load(product_dsn, [today() - dt.timedelta(days=3)])
    sensor = build_retention_sensor(90, {KEY: 30}, TZ)
    with dg.build_sensor_context(resources={"product_db": PostgresDatabase(role="product", dsn=product_dsn)}) as context:
        assert isinstance(sensor(context), dg.SkipReason)
    shorter = build_retention_sensor(90, {KEY: 2}, TZ)
    with dg.build_sensor_context(resources={"product_db": PostgresDatabase(role="product", dsn=product_dsn)}) as context:
        request = shorter(context)
    assert request.run_config["ops"][PRUNE_OP]["config"]["cutoffs"] == {KEY: (today() - dt.timedelta(days=2)).isoformat()}
