"""The partition-replacing PostgreSQL storage, against a real PostgreSQL server."""

import datetime as dt
import tempfile

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import psycopg
import pytest

from adpipes.lib.storage.postgres import (
    PartitionedTableIOManager,
    PostgresDatabase,
    StorageError,
    copy_out,
    create_partitions,
    missing_partitions,
    read_partitions,
    replace_partitions,
    stored_row_counts,
)
from adpipes.lib.storage.tables import ARCHIVE, PRODUCT, TABLES, TableSpec, report_date_column

D1, D2 = dt.date(2026, 11, 20), dt.date(2026, 11, 21)
TZ = "Asia/Seoul"

TYPED = TableSpec(
    asset_key=dg.AssetKey(["storage_test", "typed"]),
    dataframe_schema=pa.DataFrameSchema(
        {
            "report_date": report_date_column(),
            "name": pa.Column("str", nullable=True, description="a name"),
            "n": pa.Column("Int64", nullable=True),
            "flag": pa.Column("boolean", nullable=True),
            "at": pa.Column(pd.DatetimeTZDtype(tz="UTC"), nullable=True),
            "amount": pa.Column("Float64", nullable=True, metadata={"pg_type": "numeric"}),
        }
    ),
    databases=(ARCHIVE, PRODUCT),
)
RAW = TableSpec(
    asset_key=dg.AssetKey(["storage_test", "raw"]),
    dataframe_schema=pa.DataFrameSchema(
        {"report_date": report_date_column(), "a": pa.Column("str", nullable=True)}, strict=False
    ),
    databases=(ARCHIVE,),
    keep_unknown_columns=True,
)
TABLES.register(TYPED)
TABLES.register(RAW)


def typed_frame(day: dt.date, n: int, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "report_date": [day.isoformat()] * n,
            "name": pd.array([f"row,{i}" if i % 3 else ("" if i % 2 else None) for i in range(n)], dtype="str"),
            "n": pd.array([i + offset for i in range(n)], dtype="Int64"),
            "flag": pd.array([bool(i % 2) for i in range(n)], dtype="boolean"),
            "at": pd.to_datetime([f"{day} 10:00:0{i % 10}" for i in range(n)]).tz_localize(TZ),
            "amount": pd.array([-1.5 + i for i in range(n)], dtype="Float64"),
        }
    )


def count(dsn: str, table: str, day: dt.date | None = None) -> int:
    with psycopg.connect(dsn) as conn:
        if day is None:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return conn.execute(f"SELECT count(*) FROM {table} WHERE report_date = %s", (day,)).fetchone()[0]


def test_replace_is_idempotent_and_partitioned(clean_databases):
    product_dsn, _ = clean_databases
    with psycopg.connect(product_dsn) as conn:
        assert replace_partitions(conn, TYPED, typed_frame(D1, 10), [D1], timezone=TZ) == {"2026-11-20": 10}
        replace_partitions(conn, TYPED, typed_frame(D1, 7), [D1], timezone=TZ)
        replace_partitions(conn, TYPED, typed_frame(D2, 4), [D2], timezone=TZ)
        kind = conn.execute(
            "SELECT c.relkind FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace "
            "WHERE s.nspname = 'storage_test' AND c.relname = 'typed'"
        ).fetchone()[0]
        children = conn.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'storage_test.typed'::regclass ORDER BY 1"
        ).fetchall()
    assert kind == "p"  # declaratively partitioned
    assert [c[0] for c in children] == ["storage_test.typed_p20261120", "storage_test.typed_p20261121"]
    assert count(product_dsn, "storage_test.typed", D1) == 7
    assert count(product_dsn, "storage_test.typed", D2) == 4


def test_values_round_trip(clean_databases):
    product_dsn, _ = clean_databases
    frame = typed_frame(D1, 6)
    with psycopg.connect(product_dsn) as conn:
        replace_partitions(conn, TYPED, frame, [D1], timezone=TZ)
        stored = conn.execute(
            "SELECT name, n, flag, at AT TIME ZONE 'Asia/Seoul', amount FROM storage_test.typed ORDER BY n"
        ).fetchall()
        back = read_partitions(conn, TYPED, [D1], timezone=TZ).sort_values("n").reset_index(drop=True)
    assert [row[0] for row in stored] == [None, "row,1", "row,2", "", "row,4", "row,5"]
    assert stored[1][1:4] == (1, True, dt.datetime(2026, 11, 20, 10, 0, 1))
    assert [float(row[4]) for row in stored[:2]] == [-1.5, -0.5]
    assert back["name"].isna().tolist() == [True, False, False, False, False, False]
    assert back["name"].iloc[3] == ""
    assert str(back["at"].iloc[1]) == "2026-11-20 10:00:01+09:00"
    assert back["report_date"].iloc[0] == "2026-11-20"


def test_range_replace_writes_each_partition(clean_databases):
    product_dsn, archive_dsn = clean_databases
    frame = pd.concat([typed_frame(D1, 3), typed_frame(D2, 5)], ignore_index=True)
    with psycopg.connect(product_dsn) as product, psycopg.connect(archive_dsn) as archive:
        counts = replace_partitions([product, archive], TYPED, frame, [D1, D2], timezone=TZ)
    assert counts == {"2026-11-20": 3, "2026-11-21": 5}
    # What the databases hold, not what the function says it wrote: in both, each day's rows in
    # that day's child table, and nothing else. typed_frame(day, n) has n = 0..n-1 and
    # amount = n - 1.5, so 3 rows of 2026-11-20 and 5 of 2026-11-21.
    for dsn in (product_dsn, archive_dsn):
        with psycopg.connect(dsn) as conn:
            per_child = conn.execute(
                "SELECT tableoid::regclass::text, report_date::text, count(*) FROM storage_test.typed "
                "GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
            rows = conn.execute("SELECT report_date::text, n, amount::float FROM storage_test.typed "
                                "ORDER BY 1, 2").fetchall()
        assert per_child == [("storage_test.typed_p20261120", "2026-11-20", 3),
                             ("storage_test.typed_p20261121", "2026-11-21", 5)], dsn
        assert rows == [("2026-11-20", 0, -1.5), ("2026-11-20", 1, -0.5), ("2026-11-20", 2, 0.5),
                        ("2026-11-21", 0, -1.5), ("2026-11-21", 1, -0.5), ("2026-11-21", 2, 0.5),
                        ("2026-11-21", 3, 1.5), ("2026-11-21", 4, 2.5)], dsn


def test_failed_load_leaves_previous_rows(clean_databases):
    product_dsn, _ = clean_databases
    with psycopg.connect(product_dsn) as conn:
        replace_partitions(conn, TYPED, typed_frame(D1, 5), [D1], timezone=TZ)
    bad = pd.concat([typed_frame(D1, 3), typed_frame(D2, 3)], ignore_index=True)
    bad["name"] = bad["name"].fillna("x")
    bad.loc[5, "name"] = "\x00"  # PostgreSQL rejects NUL in text: the COPY of D2 fails
    with psycopg.connect(product_dsn) as conn, pytest.raises(psycopg.Error):
        replace_partitions(conn, TYPED, bad, [D1, D2], timezone=TZ)
    assert count(product_dsn, "storage_test.typed", D1) == 5  # D1's truncate was rolled back
    assert count(product_dsn, "storage_test.typed", D2) == 0


def test_rows_outside_the_run_partitions_are_refused(clean_databases):
    product_dsn, _ = clean_databases
    with psycopg.connect(product_dsn) as conn, pytest.raises(StorageError, match="2026-11-21"):
        replace_partitions(conn, TYPED, typed_frame(D2, 2), [D1], timezone=TZ)


def test_unknown_columns_kept_as_text_in_raw_tables_refused_in_typed(clean_databases):
    _, archive_dsn = clean_databases
    raw = pd.DataFrame({"report_date": ["2026-11-20"], "a": ["1"], "vendor_new": ["kept"]}, dtype="str")
    with psycopg.connect(archive_dsn) as conn:
        replace_partitions(conn, RAW, raw, [D1], timezone=TZ)
        assert conn.execute("SELECT vendor_new FROM storage_test.raw").fetchone() == ("kept",)
        typed = typed_frame(D1, 1).assign(surprise="x")
        with pytest.raises(StorageError, match="surprise"):
            replace_partitions(conn, TYPED, typed, [D1], timezone=TZ)


def test_io_manager_writes_archive_before_product(clean_databases):
    product_dsn, archive_dsn = clean_databases
    broken_product = product_dsn.rsplit("/", 1)[0] + "/no_such_database"
    manager = PartitionedTableIOManager(
        archive=PostgresDatabase(role="archive", dsn=archive_dsn),
        product=PostgresDatabase(role="product", dsn=broken_product),
        timezone=TZ,
    )
    context = dg.build_output_context(
        asset_key=TYPED.asset_key,
        partition_key="2026-11-20",
        asset_partitions_def=dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone=TZ),
    )
    with pytest.raises(StorageError, match="product database"):
        manager.handle_output(context, typed_frame(D1, 4))
    assert count(archive_dsn, "storage_test.typed", D1) == 4


def test_a_new_layout_keeps_the_old_table_and_its_rows_under_another_name(clean_databases):
    _, archive_dsn = clean_databases
    with psycopg.connect(archive_dsn) as conn:
        replace_partitions(conn, TYPED, typed_frame(D1, 6), [D1], timezone=TZ)
        replace_partitions(conn, TYPED, typed_frame(D2, 3), [D2], timezone=TZ)
    # The same table with a new key column: its rows cannot be re-read in the new layout.
    relaid = TableSpec(
        asset_key=TYPED.asset_key,
        dataframe_schema=pa.DataFrameSchema(
            {"report_date": report_date_column(), "kind": pa.Column("str", nullable=False),
             "n": pa.Column("Int64", nullable=True)}
        ),
        databases=(ARCHIVE,),
        layout_version=2,
    )
    frame = pd.DataFrame({"report_date": [D1.isoformat()], "kind": ["new"], "n": pd.array([1], dtype="Int64")})
    warnings: list[str] = []

    class Log:
        def warning(self, message: str) -> None:
            warnings.append(message)

    with psycopg.connect(archive_dsn) as conn:
        replace_partitions(conn, relaid, frame, [D1], timezone=TZ, log=Log())
        replace_partitions(conn, relaid, frame, [D1], timezone=TZ, log=Log())  # no second rename
        comments = dict(conn.execute(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'storage_test' AND c.relkind = 'p'").fetchall())
        children = sorted(r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'typed_layout1'").fetchall())
    assert count(archive_dsn, "storage_test.typed_layout1") == 9
    assert count(archive_dsn, "storage_test.typed_layout1", D2) == 3
    assert children == ["typed_layout1_p20261120", "typed_layout1_p20261121"]
    assert count(archive_dsn, "storage_test.typed") == 1
    assert comments["typed"] == "adpipes layout 2" and "layout 1" in comments["typed_layout1"]
    assert len(warnings) == 1 and "storage_test.typed_layout1" in warnings[0] and "2 partition(s)" in warnings[0]


def test_text_that_looks_like_a_null_reads_back_as_written(clean_databases):
    # pyarrow's default null spellings are real values in vendor data: Namibia's country code NA,
    # a campaign named N/A. Only a NULL (COPY: an unquoted empty field) reads back as null.
    _, archive_dsn = clean_databases
    names = ["NA", "N/A", "null", "NULL", "nan", "#N/A", "None", "", None]
    frame = pd.DataFrame({
        "report_date": [D1.isoformat()] * len(names),
        "name": pd.array(names, dtype="str"),
        "n": pd.array([None] * len(names), dtype="Int64"),
        "flag": pd.array([None] * len(names), dtype="boolean"),
        "at": pd.to_datetime([None] * len(names)).tz_localize("UTC"),
        "amount": pd.array([None] * len(names), dtype="Float64"),
    })
    with psycopg.connect(archive_dsn) as conn:
        replace_partitions(conn, TYPED, frame, [D1], timezone=TZ)
        back = read_partitions(conn, TYPED, [D1], timezone=TZ)
    read = back.sort_values("name", na_position="last")["name"].tolist()
    assert read[:-1] == sorted(n for n in names if n is not None) and pd.isna(read[-1])
    assert back[["n", "flag", "at", "amount"]].isna().all().all()


def children(dsn: str, table: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = to_regclass(%s) ORDER BY 1", (table,),
        ).fetchall()]


def test_a_failed_load_leaves_no_new_day_partition(clean_databases):
    # An empty day partition reads as a day loaded without rows (appsflyer/raw_data would build an
    # empty day from it), so a day's partition exists only once its load committed.
    product_dsn, archive_dsn = clean_databases
    bad = typed_frame(D1, 3).assign(name=pd.array(["ok", "ok", "\x00"], dtype="str"))  # NUL: COPY fails
    with psycopg.connect(archive_dsn) as archive, psycopg.connect(product_dsn) as product:
        with pytest.raises(psycopg.Error):
            replace_partitions([archive, product], TYPED, bad, [D1], timezone=TZ)
    for dsn in (archive_dsn, product_dsn):
        assert children(dsn, "storage_test.typed") == []
    with psycopg.connect(product_dsn) as conn:
        replace_partitions(conn, TYPED, typed_frame(D1, 2), [D1], timezone=TZ)
    assert children(product_dsn, "storage_test.typed") == ["storage_test.typed_p20261120"]


def test_a_load_creating_a_day_does_not_block_readers_of_the_table(clean_databases):
    product_dsn, _ = clean_databases
    with psycopg.connect(product_dsn) as conn:
        replace_partitions(conn, TYPED, typed_frame(D1, 4), [D1], timezone=TZ)
    with psycopg.connect(product_dsn) as loading, psycopg.connect(product_dsn, autocommit=True) as reader:
        with loading.cursor() as cur:
            assert create_partitions(cur, TYPED, [D2]) == [D2]  # uncommitted, as during a long COPY
        reader.execute("SET lock_timeout = '2s'")
        assert reader.execute("SELECT count(*) FROM storage_test.typed").fetchone() == (4,)
        loading.rollback()
    assert children(product_dsn, "storage_test.typed") == ["storage_test.typed_p20261120"]


def test_stored_row_counts_and_missing_partitions_tell_an_empty_day_from_a_missing_one(clean_databases):
    product_dsn, _ = clean_databases
    with psycopg.connect(product_dsn) as conn:
        assert stored_row_counts(conn, TYPED, [D1, D2]) == {}  # no table yet
        assert missing_partitions(conn, TYPED, [D1, D2]) == [D1, D2]
        replace_partitions(conn, TYPED, typed_frame(D1, 0), [D1], timezone=TZ)
        replace_partitions(conn, TYPED, typed_frame(D2, 3), [D2], timezone=TZ)
        assert stored_row_counts(conn, TYPED, [D1, D2]) == {"2026-11-20": 0, "2026-11-21": 3}
        assert missing_partitions(conn, TYPED, [D1, D2, D2 + dt.timedelta(days=1)]) == [D2 + dt.timedelta(days=1)]


def test_copy_out_writes_every_row_of_the_copy_in_order(clean_databases):
    # Rows are gathered and written a megabyte at a time: 60,000 rows of ~1.5 MB cross that
    # boundary. The expected text is COPY's CSV as PostgreSQL documents it (an empty string is
    # written quoted, "", to tell it from NULL).
    product_dsn, _ = clean_databases
    expected = "".join(f"{g},{'x' * (g % 50) or chr(34) * 2}\n" for g in range(1, 60_001)).encode()
    with psycopg.connect(product_dsn) as conn, conn.cursor() as cur, tempfile.TemporaryFile() as sink:
        written = copy_out(cur, "COPY (SELECT g, repeat('x', g % 50) FROM generate_series(1, 60000) g) "
                                "TO STDOUT (FORMAT csv)", sink)
        sink.seek(0)
        assert sink.read() == expected
        assert written == len(expected) > 1 << 20
        sink.seek(0)
        sink.truncate()
        assert copy_out(cur, "COPY (SELECT 1 WHERE false) TO STDOUT (FORMAT csv)", sink) == 0
        assert sink.tell() == 0
