"""Retention: the sensor asks for one prune per cutoff, the job drops only verified old partitions."""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import psycopg
import pytest

from adpipes.lib.retention import (
    PRUNE_OP,
    build_retention_sensor,
    prune_product_partitions_job,
)
from adpipes.lib.storage.postgres import PostgresDatabase, replace_partitions
from adpipes.lib.storage import retention as storage_retention
from adpipes.lib.storage.retention import PruneResult, prune_table
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


# A table of every kind of value a prune compares: text with '' and NULL, numbers, flags,
# instants, numeric and JSON.
TYPED = TABLES.register(TableSpec(
    asset_key=dg.AssetKey(["retention_test", "typed"]),
    dataframe_schema=pa.DataFrameSchema({
        "report_date": report_date_column(),
        "name": pa.Column("str", nullable=True),
        "n": pa.Column("Int64", nullable=True),
        "flag": pa.Column("boolean", nullable=True),
        "at": pa.Column(pd.DatetimeTZDtype(tz="UTC"), nullable=True),
        "amount": pa.Column("Float64", nullable=True, metadata={"pg_type": "numeric"}),
        "doc": pa.Column("str", nullable=True, metadata={"pg_type": "jsonb"}),
    }),
    databases=(ARCHIVE, PRODUCT),
))


def typed_frame(day: dt.date, rows: int) -> pd.DataFrame:
    return pd.DataFrame({
        "report_date": [day.isoformat()] * rows,
        "name": pd.array([f"row,{i}" if i % 3 else ("" if i % 2 else None) for i in range(rows)], dtype="str"),
        "n": pd.array([i if i % 7 else None for i in range(rows)], dtype="Int64"),
        "flag": pd.array([bool(i % 2) for i in range(rows)], dtype="boolean"),
        "at": pd.to_datetime([f"{day} 10:00:{i % 60:02d}" for i in range(rows)]).tz_localize(TZ),
        "amount": pd.array([i / 4 for i in range(rows)], dtype="Float64"),
        "doc": pd.array([f'{{"i": {i}, "k": "v"}}' for i in range(rows)], dtype="str"),
    })


def load_typed(dsns: tuple[str, ...], day: dt.date, rows: int = 100) -> None:
    for dsn in dsns:
        with psycopg.connect(dsn) as conn:
            replace_partitions(conn, TYPED, typed_frame(day, rows), [day], timezone=TZ)


def execute(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(statement)


def prune_typed(product_dsn: str, archive_dsn: str, day: dt.date) -> PruneResult:
    with psycopg.connect(product_dsn) as product, psycopg.connect(archive_dsn) as archive:
        return prune_table(product, archive, TYPED, day + dt.timedelta(days=1))


@pytest.fixture(params=["values", "text"])
def fingerprint_mode(request, monkeypatch):
    """Both ways a fingerprint hashes rows: by value (PostgreSQL 14+) and as text (older servers)."""
    if request.param == "text":
        monkeypatch.setattr(storage_retention, "HASH_RECORD_VERSION", 10**9)
    return request.param


def typed_rows(dsn: str, day: dt.date) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM retention_test.typed WHERE report_date = %s", (day,)).fetchone()[0]


def test_a_copy_that_lost_10_rows_and_holds_10_twice_is_kept_in_product_and_fails_the_run(clean_databases, fingerprint_mode):
    product_dsn, archive_dsn = clean_databases
    day = today() - dt.timedelta(days=100)
    load_typed(clean_databases, day)
    # The archive copy has as many rows as product: 10 lost, 10 others twice.
    execute(archive_dsn, "DELETE FROM retention_test.typed WHERE n BETWEEN 1 AND 10")
    execute(archive_dsn, "INSERT INTO retention_test.typed SELECT * FROM retention_test.typed WHERE n BETWEEN 11 AND 20")
    assert typed_rows(archive_dsn, day) == typed_rows(product_dsn, day) == 100
    resources = {"product_db": PostgresDatabase(role="product", dsn=product_dsn),
                 "archive_db": PostgresDatabase(role="archive", dsn=archive_dsn)}
    run_config = {"ops": {PRUNE_OP: {"config": {"cutoffs": {"retention_test/typed": (day + dt.timedelta(days=1)).isoformat()}}}}}
    result = prune_product_partitions_job.execute_in_process(run_config=run_config, resources=resources,
                                                             raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0].event_specific_data
    message = failure.error.message
    assert "retention_test.typed" in message and day.isoformat() in message
    checked = failure.user_failure_data.metadata["verified_partitions"].value["retention_test/typed"][day.isoformat()]
    assert checked["product_rows"] == checked["archive_rows"] == 100
    assert checked["product_fingerprint"] != checked["archive_fingerprint"]
    assert "product holds 100 rows" in message and "the archive 100" in message and "contents differ" in message
    assert typed_rows(product_dsn, day) == 100 and typed_rows(archive_dsn, day) == 100
    assert not [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]


def test_identical_copies_are_dropped_whatever_the_sessions_and_column_order(clean_databases, fingerprint_mode):
    product_dsn, archive_dsn = clean_databases
    day = today() - dt.timedelta(days=100)
    # The archive's table has its columns in another order and one more column (archive-only
    # columns are not product's to keep); the rows are the same.
    execute(archive_dsn, "CREATE SCHEMA retention_test")
    execute(archive_dsn, "CREATE TABLE retention_test.typed (doc jsonb, archived_note text, amount numeric, "
                         "report_date date NOT NULL, at timestamptz, flag boolean, n bigint, name text) "
                         "PARTITION BY RANGE (report_date)")
    load_typed(clean_databases, day)
    execute(archive_dsn, "UPDATE retention_test.typed SET archived_note = 'only here'")
    with psycopg.connect(product_dsn) as product, psycopg.connect(archive_dsn) as archive:
        # Session settings that shape text forms, which the prune must not depend on.
        archive.execute("SET TimeZone = 'America/Los_Angeles'")
        archive.execute("SET DateStyle = 'SQL, DMY'")
        archive.execute("SET extra_float_digits = 0")
        archive.commit()
        result = prune_table(product, archive, TYPED, day + dt.timedelta(days=1))
    assert result.pruned == {day.isoformat(): 100} and not result.refused
    check = result.verified[day.isoformat()].as_metadata()
    assert check["product_rows"] == check["archive_rows"] == 100
    assert check["product_fingerprint"] == check["archive_fingerprint"] != "0"
    assert typed_rows(product_dsn, day) == 0 and typed_rows(archive_dsn, day) == 100


@pytest.mark.parametrize("change", [
    "SET amount = amount + 0.01 WHERE n = 5",                      # a number
    "SET name = NULL WHERE name = ''",                             # '' is not NULL
    "SET at = at + interval '1 second' WHERE n = 5",               # an instant
    "SET doc = '{\"i\": 5, \"k\": \"w\"}' WHERE n = 5",             # a JSON value
    # Two rows' names swapped: every column holds the same values, the rows do not.
    "SET name = CASE n WHEN 1 THEN 'row,2' ELSE 'row,1' END WHERE n IN (1, 2)",
])
def test_a_changed_value_is_kept_in_product(clean_databases, change, fingerprint_mode):
    product_dsn, archive_dsn = clean_databases
    day = today() - dt.timedelta(days=100)
    load_typed(clean_databases, day)
    execute(archive_dsn, f"UPDATE retention_test.typed {change}")
    result = prune_typed(product_dsn, archive_dsn, day)
    assert not result.pruned and "contents differ" in result.refused[day.isoformat()]
    assert "product holds 100 rows" in result.refused[day.isoformat()]
    assert typed_rows(product_dsn, day) == 100


def test_a_product_column_the_archive_lacks_counts_as_null_there(clean_databases):
    product_dsn, archive_dsn = clean_databases
    old, older = today() - dt.timedelta(days=100), today() - dt.timedelta(days=101)
    for day in (old, older):
        load_typed(clean_databases, day)
    execute(archive_dsn, "ALTER TABLE retention_test.typed DROP COLUMN doc")
    execute(product_dsn, f"UPDATE retention_test.typed SET doc = NULL WHERE report_date = '{old}'")
    result = prune_typed(product_dsn, archive_dsn, old)
    # All NULL in product: nothing of it is lost. Values in product only: kept.
    assert result.pruned == {old.isoformat(): 100}
    assert "contents differ" in result.refused[older.isoformat()]


def test_a_day_the_archive_lacks_is_kept_and_an_empty_one_dropped(clean_databases):
    product_dsn, archive_dsn = clean_databases
    old, empty = today() - dt.timedelta(days=100), today() - dt.timedelta(days=101)
    load_typed((product_dsn,), old)
    load_typed((product_dsn,), empty, rows=0)
    result = prune_typed(product_dsn, archive_dsn, old)
    assert result.pruned == {empty.isoformat(): 0}
    assert "the archive none" in result.refused[old.isoformat()]


# The same table with a row key: what the product tables have (raw_data, daily_report, ...).
KEYED = TABLES.register(TableSpec(
    asset_key=dg.AssetKey(["retention_test", "keyed"]),
    dataframe_schema=TYPED.dataframe_schema,
    databases=(ARCHIVE, PRODUCT),
    row_key=("name", "at"),
))


@pytest.mark.parametrize("change, kept", [
    # Lost and duplicated rows, and a changed key, are what the key fingerprint is for.
    ("DELETE FROM retention_test.keyed WHERE n BETWEEN 1 AND 10; "
     "INSERT INTO retention_test.keyed SELECT * FROM retention_test.keyed WHERE n BETWEEN 11 AND 20", True),
    ("UPDATE retention_test.keyed SET at = at + interval '1 second' WHERE n = 5", True),
    ("UPDATE retention_test.keyed SET name = NULL WHERE name = ''", True),
    # A value outside the key: every load writes the archive first, so product is the older copy.
    ("UPDATE retention_test.keyed SET amount = amount + 0.01 WHERE n = 5", False),
])
def test_a_table_with_a_row_key_is_fingerprinted_by_its_key(clean_databases, change, kept):
    product_dsn, archive_dsn = clean_databases
    day = today() - dt.timedelta(days=100)
    for dsn in clean_databases:
        with psycopg.connect(dsn) as conn:
            replace_partitions(conn, KEYED, typed_frame(day, 100), [day], timezone=TZ)
    execute(archive_dsn, change)
    with psycopg.connect(product_dsn) as product, psycopg.connect(archive_dsn) as archive:
        result = prune_table(product, archive, KEYED, day + dt.timedelta(days=1))
    if kept:
        assert not result.pruned and "contents differ" in result.refused[day.isoformat()]
        if "UPDATE" in change:  # as many rows in both: the message says what was compared
            assert "fingerprints of the rows' keys" in result.refused[day.isoformat()]
    else:
        assert result.pruned == {day.isoformat(): 100} and not result.refused


def test_an_override_naming_no_product_table_fails_at_load():
    import adpipes.appsflyer.schemas  # noqa: F401  registers appsflyer/raw_data whatever ran before
    from adpipes.lib.retention import build_retention_sensor
    from adpipes.lib.settings import ConfigurationError

    with pytest.raises(ConfigurationError) as caught:
        build_retention_sensor(90, {"appsflyer/raw_dta": 30, "appsflyer/android_installs": 10}, TZ)
    message = str(caught.value)
    assert "'appsflyer/raw_dta' (did you mean appsflyer/raw_data?)" in message
    # An archive-only table is not product's to prune either.
    assert "'appsflyer/android_installs'" in message and "ADPIPES_PRODUCT_RETENTION_OVERRIDES" in message
    assert build_retention_sensor(90, {"appsflyer/raw_data": 30}, TZ).name == "product_retention_sensor"


def test_an_archive_holding_some_but_fewer_rows_is_kept_in_product_and_fails_the_run(clean_databases):
    """README/docs/retention.md: a day is dropped from product only when the archive holds the same
    rows. An archive copy that holds some rows of the day but fewer than product (a partial archive
    load) is not enough: the prune refuses and product keeps every row. Through the real sensor and
    prune job, against the test PostgreSQL."""
    product_dsn, archive_dsn = clean_databases
    partial, whole = today() - dt.timedelta(days=100), today() - dt.timedelta(days=99)
    load(product_dsn, [partial, whole], rows=3)
    load(archive_dsn, [partial, whole], rows=3)
    # The archive loses one of partial's three rows: it holds 2 of product's 3, not none.
    execute(archive_dsn, f"DELETE FROM retention_test.events WHERE name = '{partial}-2'")
    assert partition_counts(archive_dsn)[partial.isoformat()] == 2
    resources = {"product_db": PostgresDatabase(role="product", dsn=product_dsn),
                 "archive_db": PostgresDatabase(role="archive", dsn=archive_dsn)}
    with dg.build_sensor_context(resources=resources) as context:
        request = build_retention_sensor(90, {}, TZ)(context)
    assert isinstance(request, dg.RunRequest)
    result = prune_product_partitions_job.execute_in_process(
        run_config=request.run_config, resources=resources, raise_on_error=False)

    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0].event_specific_data
    # The refusal names the table, the day and both counts, as written by hand here: 3 and 2.
    assert "retention_test.events" in failure.error.message and partial.isoformat() in failure.error.message
    assert "product holds 3 rows" in failure.error.message and "the archive 2" in failure.error.message
    checked = failure.user_failure_data.metadata["verified_partitions"].value[KEY][partial.isoformat()]
    assert (checked["product_rows"], checked["archive_rows"]) == (3, 2)
    # Nothing of the partial day left product (still a partition of its own, all 3 rows); the whole
    # day, which the archive holds as product does, was dropped; the archive was not written.
    assert partition_counts(product_dsn) == {partial.isoformat(): 3}
    assert children(product_dsn) == 1
    assert partition_counts(archive_dsn) == {partial.isoformat(): 2, whole.isoformat(): 3}
    observed = {e.event_specific_data.asset_observation.partition
                for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"}
    assert observed == {whole.isoformat()}


def test_a_day_is_due_only_before_today_minus_the_retention(clean_databases):
    """docs/operations.md: product keeps ADPIPES_PRODUCT_RETENTION_DAYS days per table; days
    before the cutoff (today − retention) are pruned. The cutoff day itself is kept."""
    from adpipes.lib.retention import cutoffs_due

    product_dsn, _ = clean_databases
    product = PostgresDatabase(role="product", dsn=product_dsn)
    fixed_today = dt.date(2026, 11, 30)
    load(product_dsn, [dt.date(2026, 9, 1)])  # 2026-11-30 − 90 days = 2026-09-01: the cutoff itself
    assert KEY not in cutoffs_due(product, 90, {}, TZ, today=fixed_today)
    load(product_dsn, [dt.date(2026, 8, 31)])  # one day before the cutoff
    assert cutoffs_due(product, 90, {}, TZ, today=fixed_today)[KEY] == "2026-09-01"
    # An override for the table replaces the default: 92 days keep both (cutoff 2026-08-30).
    assert KEY not in cutoffs_due(product, 90, {KEY: 92}, TZ, today=fixed_today)
    assert cutoffs_due(product, 90, {KEY: 30}, TZ, today=fixed_today)[KEY] == "2026-10-31"


def test_the_prune_request_is_keyed_by_its_cutoffs_and_tagged_retention():
    """docs/operations.md: the sensor's run carries the cutoffs in its run config (ops:
    drop_verified_partitions: config: cutoffs), its run key is made of the cutoffs so the same
    prune is never requested twice, and it is tagged adpipes/trigger=retention."""
    from adpipes.lib.retention import prune_run_request

    cutoffs = {"appsflyer/raw_data": "2026-08-25", "airbridge/revenue": "2025-10-27"}
    request = prune_run_request(cutoffs)
    assert request.run_config["ops"] == {"drop_verified_partitions": {"config": {"cutoffs": cutoffs}}}
    assert request.tags == {"adpipes/trigger": "retention"}
    # The same cutoffs in another order: the same key; another cutoff or table: another key.
    assert prune_run_request(dict(reversed(list(cutoffs.items())))).run_key == request.run_key
    assert prune_run_request({**cutoffs, "appsflyer/raw_data": "2026-08-26"}).run_key != request.run_key
    assert prune_run_request({"appsflyer/raw_data": "2026-08-25"}).run_key != request.run_key


def test_an_override_for_a_table_that_is_never_pruned_is_refused_naming_it():
    import adpipes.appsflyer.customer_user_map  # noqa: F401  registers the never-pruned table
    from adpipes.lib.settings import ConfigurationError

    with pytest.raises(ConfigurationError) as caught:
        build_retention_sensor(90, {"appsflyer/customer_user_map": 30}, TZ)
    message = str(caught.value)
    assert message.startswith("adpipes configuration is invalid:")
    assert "ADPIPES_PRODUCT_RETENTION_OVERRIDES names appsflyer/customer_user_map, which is never pruned" in message
    assert "Remove it from the variable (or .env)" in message


def test_today_is_the_app_timezones_day_not_the_machines(clean_databases, monkeypatch):
    """README: each day is one partition in the app's timezone, so the cutoff (today − retention)
    counts from the app timezone's today. The machine's clock is set 26 hours behind the app
    (UTC−12 against Pacific/Kiritimati, UTC+14): its date is always one or two days earlier."""
    import time

    from adpipes.lib.retention import cutoffs_due

    product_dsn, _ = clean_databases
    product = PostgresDatabase(role="product", dsn=product_dsn)
    app_tz = "Pacific/Kiritimati"
    monkeypatch.setenv("TZ", "Etc/GMT+12")  # POSIX sign: UTC−12
    time.tzset()
    try:
        before = dt.datetime.now(ZoneInfo(app_tz)).date()
        load(product_dsn, [before - dt.timedelta(days=91)])  # one day before the app's cutoff
        due = cutoffs_due(product, 90, {}, app_tz)
        after = dt.datetime.now(ZoneInfo(app_tz)).date()
    finally:
        monkeypatch.undo()
        time.tzset()
    assert due.get(KEY) in {(before - dt.timedelta(days=90)).isoformat(), (after - dt.timedelta(days=90)).isoformat()}


def _override_error(overrides: dict[str, int]) -> str:
    from adpipes.lib.settings import ConfigurationError

    with pytest.raises(ConfigurationError) as caught:
        build_retention_sensor(90, overrides, TZ)
    return str(caught.value)


def _settings_error_heading() -> str:
    """The first line of every configuration error the settings raise (a bad ADPIPES_TIMEZONE)."""
    from adpipes.lib.settings import ConfigurationError, load_settings

    with pytest.raises(ConfigurationError) as caught:
        load_settings({"ADPIPES_TIMEZONE": "Not/A_Zone"})
    return str(caught.value).splitlines()[0]


def test_the_unknown_table_error_lists_each_key_with_its_hint_and_every_table_product_holds():
    """docs/configuration.md: a wrong setting fails the load naming it and what it most resembles.
    The error reads like the settings' own: their heading, an item naming the variable, then the
    unknown keys (a hint only where one resembles a product table) and the tables product holds,
    each list separated by ", " and holding nothing but keys."""
    import re

    import adpipes.appsflyer.schemas  # noqa: F401  registers appsflyer/raw_data whatever ran before

    message = _override_error({"appsflyer/raw_dta": 30, "zzzz": 10})
    heading, item = message.split("\n", 1)
    assert heading == _settings_error_heading()
    assert item.startswith("  - ADPIPES_PRODUCT_RETENTION_OVERRIDES names ")
    named = re.search(r"names (.+), which product does not hold", item).group(1).split(", ")
    # 'zzzz' resembles no table: no hint (and no "did you mean" on nothing).
    assert named == ["'appsflyer/raw_dta' (did you mean appsflyer/raw_data?)", "'zzzz'"]
    held = re.search(r"the tables it holds are (.+)\. Fix", item).group(1).split(", ")
    assert {"appsflyer/raw_data", KEY} <= set(held)
    assert all(re.fullmatch(r"[a-z_]+/[a-z_]+", key) for key in held), held


def test_each_never_pruned_table_an_override_names_is_refused_with_its_reason(monkeypatch):
    from adpipes.lib import retention

    monkeypatch.setitem(retention.NEVER_PRUNED, "test/kept_a", "kept whole on purpose: a")
    monkeypatch.setitem(retention.NEVER_PRUNED, "test/kept_b", "kept whole on purpose: b")
    message = _override_error({"test/kept_b": 30, "test/kept_a": 20})
    heading, item = message.split("\n", 1)
    assert heading == _settings_error_heading()
    named = item.removeprefix("  - ADPIPES_PRODUCT_RETENTION_OVERRIDES names ")
    assert named.endswith(". Remove it from the variable (or .env).")
    assert named.removesuffix(". Remove it from the variable (or .env).").split("; ") == [
        "test/kept_a, which is never pruned (kept whole on purpose: a)",
        "test/kept_b, which is never pruned (kept whole on purpose: b)",
    ]
