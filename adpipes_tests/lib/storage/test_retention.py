"""Dropping old product partitions of a table derived in product (no archive copy to compare):
docs/analytics.md, "Retention". Against a real PostgreSQL."""

import datetime as dt

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import psycopg
import pytest

from adpipes.lib.storage import retention as storage_retention
from adpipes.lib.storage.postgres import replace_partitions
from adpipes.lib.storage.retention import drop_derived_partitions, prune_table
from adpipes.lib.storage.tables import ARCHIVE, PRODUCT, TABLES, TEXT, TableSpec, report_date_column

TZ = "Asia/Seoul"
DERIVED = TABLES.register(TableSpec(
    asset_key=dg.AssetKey(["derived_test", "daily"]),
    dataframe_schema=pa.DataFrameSchema({"report_date": report_date_column(), "name": pa.Column(TEXT)}),
    databases=(PRODUCT,),
))
D1, D2, D3 = dt.date(2026, 8, 1), dt.date(2026, 8, 2), dt.date(2026, 8, 3)
ROWS = {D1: 2, D2: 3, D3: 4}


def seed_table(dsn: str, spec: TableSpec, rows: dict[dt.date, int]) -> None:
    """``rows[day]`` rows of ``day`` in ``spec``'s table, named ``<day>-<n>``."""
    days = sorted(rows)
    frame = pd.DataFrame({
        "report_date": pd.Series([d.isoformat() for d in days for _ in range(rows[d])], dtype="str"),
        "name": pd.Series([f"{d}-{n}" for d in days for n in range(rows[d])], dtype="str"),
    })
    with psycopg.connect(dsn) as conn:
        replace_partitions(conn, spec, frame, days, timezone=TZ)


def rows_by_day(dsn: str, spec: TableSpec) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(f"SELECT report_date::text, count(*) FROM {spec.qualified_name} GROUP BY 1").fetchall())


def seed(product_dsn: str) -> None:
    seed_table(product_dsn, DERIVED, ROWS)


def stored(product_dsn: str) -> dict[str, int]:
    return rows_by_day(product_dsn, DERIVED)


def test_days_before_the_cutoff_are_dropped_with_their_row_counts(clean_databases):
    product_dsn, _ = clean_databases
    seed(product_dsn)
    with psycopg.connect(product_dsn) as conn:
        result = drop_derived_partitions(conn, DERIVED, D3)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # left outside a transaction
    assert result.pruned == {"2026-08-01": 2, "2026-08-02": 3}
    assert result.refused == {} and result.verified == {}  # nothing to compare with
    assert stored(product_dsn) == {"2026-08-03": 4}
    with psycopg.connect(product_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'derived_test.daily'::regclass"
                            ).fetchone() == (1,)


def test_a_day_being_read_is_left_for_the_next_prune(clean_databases, monkeypatch):
    # Each day is locked, counted and dropped in its own transaction: a day another session holds
    # stays (after the lock timeout), the others go.
    product_dsn, _ = clean_databases
    seed(product_dsn)
    monkeypatch.setattr(storage_retention, "LOCK_TIMEOUT", "200ms")
    with psycopg.connect(product_dsn) as reader, psycopg.connect(product_dsn) as conn:
        reader.execute("SELECT count(*) FROM derived_test.daily_p20260801")  # holds its lock until rollback
        result = drop_derived_partitions(conn, DERIVED, D3)
        reader.rollback()
    assert result.pruned == {"2026-08-02": 3}
    assert set(result.refused) == {"2026-08-01"}
    assert "derived_test.daily 2026-08-01 was being derived or read (no lock within 200ms)" in result.refused["2026-08-01"]
    assert "product keeps it" in result.refused["2026-08-01"]
    assert stored(product_dsn) == {"2026-08-01": 2, "2026-08-03": 4}


def test_a_day_that_cannot_be_dropped_is_kept_naming_the_error(clean_databases):
    product_dsn, _ = clean_databases
    seed(product_dsn)
    with psycopg.connect(product_dsn) as conn:
        conn.execute("CREATE VIEW derived_test.first_day AS SELECT * FROM derived_test.daily_p20260802")
        conn.commit()
        result = drop_derived_partitions(conn, DERIVED, D3)
    assert result.pruned == {"2026-08-01": 2}
    reason = result.refused["2026-08-02"]
    # The error's class and first line (PostgreSQL: "cannot drop table ... because other objects
    # depend on it"), not its detail lines.
    assert reason.startswith("derived_test.daily 2026-08-02 could not be dropped (DependentObjectsStillExist: "
                             "cannot drop table derived_test.daily_p20260802 because other objects depend on it)")
    assert "\n" not in reason and reason.endswith("product keeps it")
    assert stored(product_dsn) == {"2026-08-02": 3, "2026-08-03": 4}


COMPARED = TABLES.register(TableSpec(
    asset_key=dg.AssetKey(["compared_test", "daily"]),
    dataframe_schema=pa.DataFrameSchema({"report_date": report_date_column(), "name": pa.Column(TEXT)}),
    databases=(ARCHIVE, PRODUCT),
))


def seed_compared(dsn: str, rows: dict[dt.date, int]) -> None:
    seed_table(dsn, COMPARED, rows)


def compared_days(dsn: str) -> dict[str, int]:
    return rows_by_day(dsn, COMPARED)


def test_only_days_before_the_cutoff_are_pruned_and_a_refusal_names_its_day(clean_databases):
    product_dsn, archive_dsn = clean_databases
    seed_compared(product_dsn, ROWS)
    seed_compared(archive_dsn, {D1: 2, D2: 2, D3: 4})  # D2 lost a row in the archive
    with psycopg.connect(product_dsn) as product, psycopg.connect(archive_dsn) as archive:
        result = prune_table(product, archive, COMPARED, D3)  # the cutoff day itself stays
    assert result.pruned == {"2026-08-01": 2}
    assert set(result.refused) == {"2026-08-02"}
    assert "product holds 3 rows of compared_test.daily for 2026-08-02, the archive 2" in result.refused["2026-08-02"]
    assert compared_days(product_dsn) == {"2026-08-02": 3, "2026-08-03": 4}


def test_a_day_being_written_in_the_archive_is_not_pruned(clean_databases, monkeypatch):
    # docs/retention.md: the archive's partition is locked against writers first; a lock not
    # granted in time (a load of that day in progress) leaves the day for the next prune.
    product_dsn, archive_dsn = clean_databases
    seed_compared(product_dsn, {D1: 2})
    seed_compared(archive_dsn, {D1: 2})
    monkeypatch.setattr(storage_retention, "LOCK_TIMEOUT", "200ms")
    with psycopg.connect(archive_dsn) as writer:
        # A load replacing the day, not committed yet (its rows are not what product holds).
        writer.execute("DELETE FROM compared_test.daily_p20260801")
        with psycopg.connect(product_dsn) as product, psycopg.connect(archive_dsn) as archive:
            result = prune_table(product, archive, COMPARED, D2)
        writer.rollback()
    assert result.pruned == {}
    assert "compared_test.daily 2026-08-01 was being loaded or read in one of the databases (no lock within 200ms)" \
        in result.refused["2026-08-01"]
    assert compared_days(product_dsn) == {"2026-08-01": 2}


VALUED = TABLES.register(TableSpec(
    asset_key=dg.AssetKey(["valued_test", "daily"]),
    dataframe_schema=pa.DataFrameSchema({
        "report_date": report_date_column(),
        "name": pa.Column(TEXT),
        "n": pa.Column("Int64", nullable=True),
        "amount": pa.Column("Float64", nullable=True, metadata={"pg_type": "numeric"}),
    }),
    databases=(ARCHIVE, PRODUCT),
))


def seed_valued(dsn: str, n: int) -> None:
    frame = pd.DataFrame({"report_date": pd.Series([D1.isoformat()], dtype="str"),
                          "name": pd.Series(["a"], dtype="str"),
                          "n": pd.array([n], dtype="Int64"), "amount": pd.array([1.5], dtype="Float64")})
    with psycopg.connect(dsn) as conn:
        replace_partitions(conn, VALUED, frame, [D1], timezone=TZ)


@pytest.mark.parametrize("archived_n, pruned", [(5, True), (6, False)])
def test_values_equal_by_type_are_one_value_and_other_values_are_not(clean_databases, archived_n, pruned):
    # docs/retention.md: "1.50 and 1.5 are one numeric"; a column whose type differs between the
    # databases is compared as text (product's bigint 5 is the archive's text '5', not '6').
    product_dsn, archive_dsn = clean_databases
    seed_valued(product_dsn, 5)
    seed_valued(archive_dsn, archived_n)
    with psycopg.connect(archive_dsn) as conn:
        conn.execute("UPDATE valued_test.daily SET amount = 1.50")
        conn.execute("ALTER TABLE valued_test.daily ALTER COLUMN n TYPE text USING n::text")
        assert conn.execute("SELECT amount::text, n FROM valued_test.daily").fetchone() == ("1.50", str(archived_n))
    with psycopg.connect(product_dsn) as product, psycopg.connect(archive_dsn) as archive:
        assert product.execute("SELECT amount::text FROM valued_test.daily").fetchone() == ("1.5",)
        result = prune_table(product, archive, VALUED, D2)
    if pruned:
        assert result.pruned == {"2026-08-01": 1} and result.refused == {}
        assert rows_by_day(product_dsn, VALUED) == {}
    else:
        assert result.pruned == {} and set(result.refused) == {"2026-08-01"}
        assert rows_by_day(product_dsn, VALUED) == {"2026-08-01": 1}


# A table whose columns have no hash function (`json`): docs/retention.md, "how values are
# hashed": such a column is compared as text; "which columns": a column the archive lacks counts
# as NULL there. Created by hand, since no adpipes table has a json column.
JSONED = TABLES.register(TableSpec(
    asset_key=dg.AssetKey(["jsoned_test", "daily"]),
    dataframe_schema=pa.DataFrameSchema({"report_date": report_date_column(), "name": pa.Column(TEXT)}),
    databases=(ARCHIVE, PRODUCT),
))


def create_jsoned(dsn: str, columns: str, rows: dict[dt.date, list[str]]) -> None:
    """``jsoned_test.daily`` with ``columns`` after ``report_date``, one partition per day of
    ``rows`` holding the rows given as SQL value lists (after the day)."""
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE SCHEMA jsoned_test")
        conn.execute(f"CREATE TABLE jsoned_test.daily (report_date date NOT NULL, {columns}) "
                     "PARTITION BY RANGE (report_date)")
        for day, values in rows.items():
            conn.execute(f"CREATE TABLE jsoned_test.daily_p{day:%Y%m%d} PARTITION OF jsoned_test.daily "
                         f"FOR VALUES FROM ('{day}') TO ('{day + dt.timedelta(days=1)}')")
            for value in values:
                conn.execute(f"INSERT INTO jsoned_test.daily VALUES ('{day}', {value})")


@pytest.fixture(params=["values", "text"])
def hashing(request, monkeypatch):
    """Both ways a fingerprint hashes rows: by value (PostgreSQL 14+) and as text (older servers)."""
    if request.param == "text":
        monkeypatch.setattr(storage_retention, "HASH_RECORD_VERSION", 10**9)
    return request.param


def test_a_column_without_a_hash_function_is_compared_as_text_and_one_the_archive_lacks_as_null(
        clean_databases, hashing):
    product_dsn, archive_dsn = clean_databases
    # D1: the same rows; product's `note` (absent from the archive) all NULL: dropped.
    # D2: the archive's `doc` differs in one row: kept. D3: product's `note` holds a value: kept.
    create_jsoned(product_dsn, "name text, doc json, note json", {
        D1: ["'a', '{\"k\": 1}', NULL", "'b', '[1, 2]', NULL"],
        D2: ["'a', '{\"k\": 1}', NULL", "'b', '[1, 2]', NULL"],
        D3: ["'a', '{\"k\": 1}', '\"kept\"'", "'b', '[1, 2]', NULL"],
    })
    create_jsoned(archive_dsn, "name text, doc json", {
        D1: ["'a', '{\"k\": 1}'", "'b', '[1, 2]'"],
        D2: ["'a', '{\"k\": 2}'", "'b', '[1, 2]'"],
        D3: ["'a', '{\"k\": 1}'", "'b', '[1, 2]'"],
    })
    with psycopg.connect(product_dsn) as product, psycopg.connect(archive_dsn) as archive:
        result = prune_table(product, archive, JSONED, D3 + dt.timedelta(days=1))
    assert result.pruned == {"2026-08-01": 2}
    assert set(result.refused) == {"2026-08-02", "2026-08-03"}
    for day in ("2026-08-02", "2026-08-03"):
        assert "the archive 2 as well, but the contents differ" in result.refused[day]
    assert rows_by_day(product_dsn, JSONED) == {"2026-08-02": 2, "2026-08-03": 2}


def test_a_refusal_says_what_was_compared_and_what_to_do(clean_databases):
    # docs/retention.md, "A refused day": the error names table, day, both counts and that the
    # contents differ, and says what the fingerprints were of (the whole row for a table without
    # a row key); it points to the page that shows how to compare the copies, and re-materializing
    # rewrites both (docs/operations.md).
    product_dsn, archive_dsn = clean_databases
    seed_table(product_dsn, COMPARED, {D1: 2, D2: 2})
    with psycopg.connect(archive_dsn) as conn:  # D1 with other rows, no partition of D2
        conn.execute("CREATE SCHEMA compared_test")
        conn.execute("CREATE TABLE compared_test.daily (report_date date NOT NULL, name text) "
                     "PARTITION BY RANGE (report_date)")
        conn.execute("CREATE TABLE compared_test.daily_p20260801 PARTITION OF compared_test.daily "
                     "FOR VALUES FROM ('2026-08-01') TO ('2026-08-02')")
        conn.execute("INSERT INTO compared_test.daily VALUES ('2026-08-01', 'other-0'), ('2026-08-01', 'other-1')")
    with psycopg.connect(product_dsn) as product, psycopg.connect(archive_dsn) as archive:
        result = prune_table(product, archive, COMPARED, D3)
    assert result.pruned == {}
    changed, missing = result.refused["2026-08-01"], result.refused["2026-08-02"]
    assert changed.startswith("product holds 2 rows of compared_test.daily for 2026-08-01, the archive 2 as well, "
                              "but the contents differ (fingerprints of the whole row")
    assert "rows' keys" not in changed
    assert missing.startswith("product holds 2 rows of compared_test.daily for 2026-08-02, the archive none")
    assert "the contents differ: product keeps the partition" in missing
    for reason in (changed, missing):
        assert "product keeps the partition" in reason and "docs/retention.md" in reason
        assert reason.endswith("re-materializing the partition rewrites both")
