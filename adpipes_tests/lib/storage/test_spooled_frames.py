"""Typed rows spooled a block at a time and loaded into both databases, on real PostgreSQL."""

import datetime as dt

import pandas as pd
import psycopg
import pytest

from adpipes.lib.storage.postgres import StorageError, replace_partitions, replace_partitions_from_files
from adpipes.lib.storage.spooled_frames import SpooledFrames
from adpipes_tests.lib.storage.test_postgres import TYPED, TZ, typed_frame

D1, D2, D3 = dt.date(2026, 11, 20), dt.date(2026, 11, 21), dt.date(2026, 11, 22)
KEYS = [D1.isoformat(), D2.isoformat(), D3.isoformat()]


def stored(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT report_date::text, name, n, flag, at, amount FROM storage_test.typed ORDER BY report_date, n"
        ).fetchall()


def test_blocks_spooled_by_day_load_into_both_databases_as_a_frame_would(clean_databases):
    product_dsn, archive_dsn = clean_databases
    # Three blocks: one day alone, one spanning two days, one of the second day again; D3 gets none.
    blocks = [typed_frame(D1, 7), pd.concat([typed_frame(D1, 3, offset=100), typed_frame(D2, 5)]),
              typed_frame(D2, 4, offset=200)]
    spool = SpooledFrames(TYPED, KEYS, prefix="adpipes-test-frames-")
    for block in blocks:
        spool.write(block)
    spool.finish()
    assert spool.rows_by_date() == {"2026-11-20": 10, "2026-11-21": 9}
    # One file per day, each with the header line once (10 and 9 data rows).
    assert sorted(p.name for p in spool.directory.glob("*.csv")) == ["2026-11-20.csv", "2026-11-21.csv"]
    with psycopg.connect(archive_dsn) as archive, psycopg.connect(product_dsn) as product:
        counts = replace_partitions_from_files([archive, product], TYPED, spool, [D1, D2, D3])
    assert counts == {"2026-11-20": 10, "2026-11-21": 9, "2026-11-22": 0}
    directory = spool.directory
    spool.cleanup()
    assert not directory.exists()

    # The same rows written as one DataFrame (the path every other asset takes) read back equal:
    # nulls, empty strings, commas, booleans, timestamps with their zone, numeric amounts.
    expected_rows = pd.concat(blocks, ignore_index=True)
    spooled = stored(archive_dsn)
    assert stored(product_dsn) == spooled
    with psycopg.connect(archive_dsn) as conn:
        replace_partitions(conn, TYPED, expected_rows, [D1, D2, D3], timezone=TZ)
    assert stored(archive_dsn) == spooled
    assert len(spooled) == 19
    # By hand, from typed_frame: n=0 has no name (null), n=3 an empty one, n=1 "row,1"; flags
    # alternate from False; amounts start at -1.5.
    first = {row[2]: row for row in spooled if row[0] == "2026-11-20"}
    assert first[0][1] is None and first[3][1] == "" and first[1][1] == "row,1"
    assert first[1][3] is True and first[2][3] is False
    assert first[1][5] == pytest.approx(-0.5)


def test_a_row_outside_the_partitions_or_after_finishing_is_refused(clean_databases):
    spool = SpooledFrames(TYPED, [D1.isoformat()], prefix="adpipes-test-frames-")
    try:
        with pytest.raises(StorageError, match=r"report_date \['2026-11-21'\] outside the partitions"):
            spool.write(typed_frame(D2, 2))
        with pytest.raises(StorageError, match=r"lack columns \['amount'\]"):
            spool.write(typed_frame(D1, 2).drop(columns=["amount"]))
        # A row without its day cannot go to any day's file: the error names the table and column.
        undated = typed_frame(D1, 2).astype({"report_date": "str"})
        undated.loc[1, "report_date"] = None
        with pytest.raises(StorageError, match=r"^storage_test\.typed: rows without report_date; nothing was written$"):
            spool.write(undated)
        spool.write(typed_frame(D1, 2))
        spool.finish()
        with pytest.raises(StorageError, match="after the spool was finished"):
            spool.write(typed_frame(D1, 1))
        assert spool.rows_by_date() == {"2026-11-20": 2}
    finally:
        spool.cleanup()


def test_a_file_whose_rows_copy_counts_differently_loads_nowhere(clean_databases):
    product_dsn, archive_dsn = clean_databases
    with psycopg.connect(archive_dsn) as archive, psycopg.connect(product_dsn) as product:
        replace_partitions([archive, product], TYPED, typed_frame(D1, 4), [D1], timezone=TZ)
    before = stored(archive_dsn)
    spool = SpooledFrames(TYPED, [D1.isoformat()], prefix="adpipes-test-frames-")
    try:
        spool.write(typed_frame(D1, 6))
        spool.finish()
        # The spool claims one row more than its file holds: COPY's count disagrees.
        spool.files[0] = spool.files[0].__class__(**{**spool.files[0].__dict__, "rows": 7})
        with psycopg.connect(archive_dsn) as archive, psycopg.connect(product_dsn) as product:
            with pytest.raises(StorageError, match="read 6 rows .* counted 7"):
                replace_partitions_from_files([archive, product], TYPED, spool, [D1])
    finally:
        spool.cleanup()
    # Neither database changed.
    assert stored(archive_dsn) == before and stored(product_dsn) == before


def test_a_spooled_output_prints_as_its_table_and_rows():
    # Dagster, a debugger or a log may print the output object: it names its table and rows
    # rather than raising.
    spool = SpooledFrames(TYPED, KEYS, prefix="adpipes-test-frames-")
    try:
        spool.write(typed_frame(D1, 7))
        shown = repr(spool)
        assert TYPED.qualified_name in shown and "7 rows" in shown
    finally:
        spool.cleanup()
