"""A projected read-back (some columns, each row with its locator) and rows read again whole by
their locators (rows_at), on real PostgreSQL: what raw_data uses to read only its own columns and
still keep a quarantined row as delivered."""

import contextlib
import datetime as dt

import pandas as pd
import psycopg
import pytest

from adpipes.lib.storage.postgres import (
    ROW_LOCATOR,
    PartitionBatches,
    PostgresDatabase,
    StorageError,
    replace_partitions_from_files,
    rows_at,
)
from adpipes_tests.lib.storage.test_delivered import delivered
from adpipes_tests.lib.storage.test_postgres import RAW

D1, D2 = dt.date(2026, 11, 20), dt.date(2026, 11, 21)
TZ = "Asia/Seoul"
HEADER = b"A,New Column,Long Text\n"
DAY1 = HEADER + b'a1,n1,"two\nlines"\na2,,""\na3,n3,plain\n'  # 3 rows
DAY2 = HEADER + b"b1,m1,x\nb2,m2,\n"  # 2 rows


def load(dsn: str, *days: tuple[bytes, int, dt.date]) -> None:
    with psycopg.connect(dsn) as conn:
        replace_partitions_from_files(
            conn, RAW, delivered(*[(content, ["a", "new_column", "long_text"], rows, day.isoformat())
                                   for content, rows, day in days]),
            [day for *_, day in days])


@pytest.fixture
def archive(clean_databases) -> PostgresDatabase:
    _, archive_dsn = clean_databases
    load(archive_dsn, (DAY1, 3, D1), (DAY2, 2, D2))
    return PostgresDatabase(role="archive", dsn=archive_dsn)


def test_a_projected_read_has_the_columns_asked_and_rows_at_gives_rows_back_whole_in_the_order_asked(archive):
    whole = pd.concat(list(PartitionBatches(archive, RAW, [D1, D2], TZ)), ignore_index=True)
    # A column the table does not have is left out, as for an older table without it.
    projected = pd.concat(list(PartitionBatches(archive, RAW, [D1, D2], TZ, columns=["a", "report_date", "nope"])),
                          ignore_index=True)
    assert list(projected.columns) == [ROW_LOCATOR, "report_date", "a"]  # the locator, then table order
    assert sorted(projected["a"]) == ["a1", "a2", "a3", "b1", "b2"]
    asked = projected.iloc[[4, 0, 2]]  # across both day partitions, not in stored order
    again = rows_at(archive, asked[ROW_LOCATOR].tolist(), timezone=TZ, expected=asked[["report_date", "a"]])
    assert list(again.columns) == list(whole.columns)
    assert again.index.equals(pd.RangeIndex(3))
    expected = whole.set_index("a").loc[asked["a"].tolist()].reset_index()[list(whole.columns)]
    assert again.equals(expected)
    # Values as the full read-back has them: the line break kept, the empty string not null.
    a1 = again[again["a"] == "a1"].iloc[0]
    assert a1["long_text"] == "two\nlines" and a1["report_date"] == "2026-11-20"
    a2 = rows_at(archive, projected.loc[projected["a"] == "a2", ROW_LOCATOR].tolist(), timezone=TZ).iloc[0]
    assert pd.isna(a2["new_column"]) and a2["long_text"] == ""


def test_rows_at_refuses_a_row_that_is_not_where_it_was_read(archive, clean_databases):
    _, archive_dsn = clean_databases
    projected = pd.concat(list(PartitionBatches(archive, RAW, [D1], TZ, columns=["a"])), ignore_index=True)
    locators = projected[ROW_LOCATOR].tolist()
    oid = locators[0].split("/")[0]
    with pytest.raises(StorageError, match=r"1 of 1 rows are no longer stored where they were read .*re-run"):
        rows_at(archive, [f"{oid}/(999,1)"], timezone=TZ)
    # The day replaced since it was read: the same places hold other rows now.
    load(archive_dsn, (HEADER + b"z1,n,t\nz2,n,t\nz3,n,t\n", 3, D1))
    with pytest.raises(StorageError, match=r"3 of 3 rows are no longer stored where they were read"):
        rows_at(archive, locators, timezone=TZ, expected=projected[["a"]])


def test_a_projected_read_holds_its_day_until_the_caller_has_taken_every_block(archive, clean_databases):
    # rows_at reads rows by where they are stored while the caller handles a block: the day must
    # not be replaced meanwhile, also after the server has sent the last row.
    _, archive_dsn = clean_databases
    with contextlib.closing(iter(PartitionBatches(archive, RAW, [D1], TZ, columns=["a"]))) as batches:
        first = next(batches)
        assert len(first) == 3  # the whole day: the COPY is over, its transaction is not
        with psycopg.connect(archive_dsn) as conn:
            conn.execute("SET lock_timeout = '300ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                conn.execute("LOCK TABLE storage_test.raw IN ACCESS EXCLUSIVE MODE")
        assert rows_at(archive, first[ROW_LOCATOR].tolist(), timezone=TZ)["a"].tolist() == ["a1", "a2", "a3"]
        assert list(batches) == []
    with psycopg.connect(archive_dsn) as conn:
        conn.execute("SET lock_timeout = '5s'")
        conn.execute("LOCK TABLE storage_test.raw IN ACCESS EXCLUSIVE MODE")  # released once read
