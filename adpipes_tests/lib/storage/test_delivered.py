"""Delivered vendor files streamed into COPY, and partitions read back in blocks, on real PostgreSQL."""

import datetime as dt

import dagster as dg
import psycopg
import pytest

from adpipes.lib.storage.delivered import DeliveredFiles
from adpipes.lib.storage.postgres import (
    PartitionBatches,
    PartitionedTableIOManager,
    PostgresDatabase,
    StorageError,
    replace_partitions,
    replace_partitions_from_files,
)
from adpipes_tests.lib.storage.test_postgres import RAW, TYPED, typed_frame

D1, D2 = dt.date(2026, 11, 20), dt.date(2026, 11, 21)
# A quoted line break, a quoted comma, an empty cell and a quoted empty string, as vendors send them.
DAY_ONE = b'A,New Column\n"multi\nline",x\n"a, b",\n"",y\n'
DAY_TWO = b"A\nz\n"


def delivered(*files: tuple[bytes, list[str], int, str]) -> DeliveredFiles:
    out = DeliveredFiles()
    for index, (content, columns, rows, day) in enumerate(files):
        path = out.directory / f"{index}.csv"
        path.write_bytes(content)
        out.add(path, columns, rows, report_date=day)
    return out


def rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT report_date::text, a, new_column FROM storage_test.raw ORDER BY report_date, a"
        ).fetchall()


def test_files_load_as_delivered_and_replace_their_day(clean_databases):
    _, archive_dsn = clean_databases
    files = delivered((DAY_ONE, ["a", "new_column"], 3, D1.isoformat()), (DAY_TWO, ["a"], 1, D2.isoformat()))
    assert files.rows_by_date() == {"2026-11-20": 3, "2026-11-21": 1}
    with psycopg.connect(archive_dsn) as conn:
        assert replace_partitions_from_files(conn, RAW, files, [D1, D2]) == {"2026-11-20": 3, "2026-11-21": 1}
        # Re-running replaces the days instead of appending to them.
        assert replace_partitions_from_files(conn, RAW, files, [D1, D2]) == {"2026-11-20": 3, "2026-11-21": 1}
    assert rows(archive_dsn) == [
        ("2026-11-20", "", "y"), ("2026-11-20", "a, b", None), ("2026-11-20", "multi\nline", "x"),
        ("2026-11-21", "z", None),
    ]
    files.cleanup()
    assert not files.directory.exists()


def test_a_row_count_disagreement_rolls_the_day_back(clean_databases):
    _, archive_dsn = clean_databases
    with psycopg.connect(archive_dsn) as conn:
        replace_partitions_from_files(conn, RAW, delivered((DAY_TWO, ["a"], 1, D1.isoformat())), [D1])
        wrong = delivered((DAY_ONE, ["a", "new_column"], 4, D1.isoformat()))
        with pytest.raises(StorageError, match=r"storage_test.raw partition 2026-11-20: PostgreSQL read 3 rows"):
            replace_partitions_from_files(conn, RAW, wrong, [D1])
        conn.rollback()
        # A day never loaded before gets no (empty) partition from a failed load.
        wrong = delivered((DAY_ONE, ["a", "new_column"], 4, D2.isoformat()))
        with pytest.raises(StorageError, match="PostgreSQL read 3 rows"):
            replace_partitions_from_files(conn, RAW, wrong, [D2])
        conn.rollback()
        assert conn.execute("SELECT to_regclass('storage_test.raw_p20261121')").fetchone() == (None,)
    assert rows(archive_dsn) == [("2026-11-20", "z", None)]


def test_withheld_days_are_left_as_they_are(clean_databases):
    product_dsn, archive_dsn = clean_databases
    with psycopg.connect(archive_dsn) as conn:
        replace_partitions_from_files(conn, RAW, delivered((DAY_TWO, ["a"], 1, D1.isoformat())), [D1])
    files = delivered((b"A\nw\n", ["a"], 1, D2.isoformat()))
    files.withhold(D1.isoformat())
    with pytest.raises(ValueError, match="has delivered files"):
        files.withhold(D2.isoformat())
    manager = PartitionedTableIOManager(archive=PostgresDatabase(role="archive", dsn=archive_dsn),
                                        product=PostgresDatabase(role="product", dsn=product_dsn))
    # The output covers both days (a range run); only the day with a delivery is replaced.
    context = dg.build_output_context(
        asset_key=RAW.asset_key, asset_partitions_def=dg.DailyPartitionsDefinition("2026-11-01"),
        asset_partition_key_range=dg.PartitionKeyRange("2026-11-20", "2026-11-21"),
    )
    manager.handle_output(context, files)
    with psycopg.connect(archive_dsn) as conn:
        stored = conn.execute("SELECT report_date::text, a FROM storage_test.raw ORDER BY 1, 2").fetchall()
    assert stored == [("2026-11-20", "z"), ("2026-11-21", "w")]


def test_files_outside_the_partitions_or_with_unknown_columns_are_refused(clean_databases):
    _, archive_dsn = clean_databases
    with psycopg.connect(archive_dsn) as conn:
        with pytest.raises(StorageError, match="outside the partitions"):
            replace_partitions_from_files(conn, RAW, delivered((DAY_TWO, ["a"], 1, D2.isoformat())), [D1])
        with pytest.raises(StorageError, match="not in the table definition"):
            replace_partitions_from_files(conn, TYPED, delivered((DAY_TWO, ["surprise"], 1, D1.isoformat())), [D1])


def test_files_must_be_spooled_inside_their_directory(tmp_path):
    stray = tmp_path / "x.csv"
    stray.write_bytes(DAY_TWO)
    with pytest.raises(ValueError, match="must be spooled there"):
        DeliveredFiles().add(stray, ["a"], 1, "2026-11-20")


def test_partition_batches_read_every_row_back_in_blocks(clean_databases, monkeypatch):
    _, archive_dsn = clean_databases
    many = b"A\n" + b"".join(f'"row {i}, with a comma"\n'.encode() for i in range(5000))
    with psycopg.connect(archive_dsn) as conn:
        replace_partitions_from_files(conn, RAW, delivered((many, ["a"], 5000, D1.isoformat())), [D1])
    # Tiny blocks force several batches, as a million-row day has.
    monkeypatch.setattr("adpipes.lib.storage.postgres.READ_BLOCK_BYTES", 16 << 10)
    batches = list(PartitionBatches(PostgresDatabase(role="archive", dsn=archive_dsn), RAW, [D1], "Asia/Seoul"))
    assert len(batches) > 1
    assert sum(len(b) for b in batches) == 5000
    assert {v for b in batches for v in b["a"]} == {f"row {i}, with a comma" for i in range(5000)}
    assert {v for b in batches for v in b["report_date"]} == {"2026-11-20"}


def test_a_malformed_dsn_is_named_without_echoing_the_password():
    database = PostgresDatabase(role="product", dsn="postgresql://u:SECRET%zzPW@127.0.0.1:1/product")
    with pytest.raises(StorageError, match="ADPIPES_PRODUCT_DSN is not a valid PostgreSQL DSN") as caught:
        with database.connect():
            pass
    assert "SECRET" not in str(caught.value)


# HEAP_XMIN_FROZEN (src/include/access/htup_details.h): both xmin hint bits set.
XMIN_FROZEN = 0x0300


def unfrozen_tuples(conn: psycopg.Connection, table: str) -> tuple[int, int]:
    """(tuples, tuples not frozen) on the heap pages of ``table``, read with pageinspect."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
    pages = conn.execute(f"SELECT pg_relation_size('{table}') / current_setting('block_size')::int").fetchone()[0]
    total = unfrozen = 0
    for page in range(pages):
        for (mask,) in conn.execute(
            f"SELECT t_infomask FROM heap_page_items(get_raw_page('{table}', {page})) WHERE t_infomask IS NOT NULL"
        ).fetchall():
            total += 1
            unfrozen += (mask & XMIN_FROZEN) != XMIN_FROZEN
    return total, unfrozen


def test_loaded_days_are_written_frozen(clean_databases):
    # A replaced day's table is truncated and loaded in one transaction, so COPY writes its rows
    # frozen (FREEZE): the first read sets no hint bits and autovacuum finds nothing to rewrite
    # while the next step reads the day back (issue 15).
    product_dsn, archive_dsn = clean_databases
    files = delivered((DAY_ONE, ["a", "new_column"], 3, D1.isoformat()))
    with psycopg.connect(archive_dsn) as conn:
        replace_partitions_from_files(conn, RAW, files, [D1])
        assert unfrozen_tuples(conn, "storage_test.raw_p20261120") == (3, 0)
    with psycopg.connect(product_dsn) as conn:
        replace_partitions(conn, TYPED, typed_frame(D1, 5), [D1], timezone="Asia/Seoul")
        assert unfrozen_tuples(conn, "storage_test.typed_p20261120") == (5, 0)
    files.cleanup()


def test_a_large_file_loads_without_queueing_it_in_memory(clean_databases):
    # The file is read far faster than a server parses it: the queue each database's writer
    # thread sends from must stay short, or the whole file (here 64 MB) waits in memory.
    import tracemalloc

    product_dsn, archive_dsn = clean_databases
    row = b"x" * 1000 + b"\n"
    count = (64 << 20) // len(row)
    files = delivered((b"A\n" + row * count, ["a"], count, D1.isoformat()))
    tracemalloc.start()
    try:
        with psycopg.connect(archive_dsn) as archive, psycopg.connect(product_dsn) as product:
            assert replace_partitions_from_files([archive, product], RAW, files, [D1]) == {D1.isoformat(): count}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        files.cleanup()
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MB held while loading a 64 MB file"
    with psycopg.connect(product_dsn) as conn:
        assert conn.execute("SELECT count(*), min(length(a)) FROM storage_test.raw").fetchone() == (count, 1000)


def test_a_constant_column_fills_every_row_of_its_file(clean_databases):
    # DeliveredCsv.constants: columns the file does not carry that every one of its rows gets
    # (e.g. the app id the report was requested for).
    _, archive_dsn = clean_databases
    files = delivered((DAY_ONE, ["a", "new_column"], 3, D1.isoformat()))  # the column exists
    path = files.directory / "constant.csv"
    path.write_bytes(b"A\np\nq\n")
    files.add(path, ["a"], 2, report_date=D2.isoformat(), constants={"new_column": "id123"})
    with psycopg.connect(archive_dsn) as conn:
        assert replace_partitions_from_files(conn, RAW, files, [D1, D2]) == {"2026-11-20": 3, "2026-11-21": 2}
    assert rows(archive_dsn)[3:] == [("2026-11-21", "p", "id123"), ("2026-11-21", "q", "id123")]
    files.cleanup()


def test_a_constant_may_not_replace_a_delivered_column():
    files = DeliveredFiles()
    path = files.directory / "0.csv"
    path.write_bytes(DAY_ONE)
    with pytest.raises(ValueError, match=r"0.csv carries \['new_column'\] itself"):
        files.add(path, ["a", "new_column"], 3, report_date=D1.isoformat(), constants={"new_column": "x"})
    assert files.files == []
    files.cleanup()


def test_rows_by_date_adds_up_the_files_of_one_day():
    # A day can come in several files (a window's file split by day, several source reports).
    files = delivered((DAY_ONE, ["a", "new_column"], 3, D1.isoformat()), (DAY_TWO, ["a"], 1, D1.isoformat()),
                      (DAY_TWO, ["a"], 1, D2.isoformat()))
    assert files.rows_by_date() == {"2026-11-20": 4, "2026-11-21": 1}
    assert files.row_count == 5
    files.cleanup()


def test_cleanup_of_a_directory_already_gone_does_not_fail():
    # The spool may be gone before the IO manager cleans up (removed by hand, or by a sweep that
    # took its owner for dead); cleaning up must not fail the step that wrote the rows.
    import shutil

    files = delivered((DAY_TWO, ["a"], 1, D1.isoformat()))
    shutil.rmtree(files.directory)
    files.cleanup()
    assert not files.directory.exists()
