"""The product retention prune (docs/retention.md, "The check") against survivors of the first
mutation run over adpipes/lib/storage/retention.py. Against a real PostgreSQL; each test is new, so
mutmut maps it to the functions it calls (docs/development.md, "Mutation testing")."""

from __future__ import annotations

import psycopg
from psycopg import sql

from adpipes.lib.storage import retention as storage_retention
from adpipes.lib.storage.retention import drop_derived_partitions, prune_table
from adpipes_tests.lib.storage.test_retention import (
    COMPARED,
    D1,
    D2,
    DERIVED,
    VALUED,
    compared_days,
    rows_by_day,
    seed_compared,
    seed_table,
    seed_valued,
    stored,
)


class _AtDrop(psycopg.Connection):
    """A real connection that runs ``before_drop`` (set by the test) just before it sends a
    ``DROP TABLE``: the moment between a prune's check and its drop."""

    before_drop = None

    def execute(self, query, params=None, **kwargs):
        text = query.as_string(self) if isinstance(query, sql.Composable) else str(query)
        if self.before_drop is not None and text.lstrip().upper().startswith("DROP TABLE"):
            self.before_drop(self)
        return super().execute(query, params, **kwargs)


def _terminate(dsn: str):
    """A ``before_drop`` that has the server end the connection (as a restart or an
    administrator would), waiting until its backend is gone."""
    def terminate(conn: psycopg.Connection) -> None:
        with psycopg.connect(dsn, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", (conn.info.backend_pid,)).fetchone() == (True,)
    return terminate


def _valued_day(product_dsn: str, archive_dsn: str) -> None:
    """One day of valued_test.daily: product's amount 1.5, the archive's 1.50 (docs/retention.md:
    one numeric by value, two different texts)."""
    seed_valued(product_dsn, 5)
    seed_valued(archive_dsn, 5)
    with psycopg.connect(archive_dsn) as conn:
        conn.execute("UPDATE valued_test.daily SET amount = 1.50")
        assert conn.execute("SELECT amount::text FROM valued_test.daily").fetchone() == ("1.50",)


def test_a_server_of_the_first_version_with_hash_record_extended_hashes_by_value(clean_databases, monkeypatch):
    # docs/retention.md: values are hashed by their type's hash function on "PostgreSQL 14+",
    # i.e. from the first version that has it on. The test servers stand in for that first version.
    product_dsn, archive_dsn = clean_databases
    _valued_day(product_dsn, archive_dsn)
    with psycopg.connect(product_dsn) as product, psycopg.connect(archive_dsn) as archive:
        monkeypatch.setattr(storage_retention, "HASH_RECORD_VERSION",
                            min(product.info.server_version, archive.info.server_version))
        result = prune_table(product, archive, VALUED, D2)
    assert result.pruned == {"2026-08-01": 1} and result.refused == {}
    assert rows_by_day(product_dsn, VALUED) == {}


def test_before_the_first_version_with_hash_record_extended_rows_are_hashed_as_text(clean_databases, monkeypatch):
    # docs/retention.md: "On PostgreSQL 13 and older, each row is hashed as its text form", so
    # 1.5 and 1.50 differ there. The test servers stand in for an older one.
    product_dsn, archive_dsn = clean_databases
    _valued_day(product_dsn, archive_dsn)
    with psycopg.connect(product_dsn) as product, psycopg.connect(archive_dsn) as archive:
        monkeypatch.setattr(storage_retention, "HASH_RECORD_VERSION",
                            max(product.info.server_version, archive.info.server_version) + 1)
        result = prune_table(product, archive, VALUED, D2)
    assert result.pruned == {} and set(result.refused) == {"2026-08-01"}
    assert rows_by_day(product_dsn, VALUED) == {"2026-08-01": 1}


def test_no_writer_can_change_product_between_the_check_and_the_drop(clean_databases):
    # docs/retention.md, "The check", step 1: the day's product partition is locked against
    # writers (SHARE) before the fingerprints, so the rows dropped are the rows compared. A write
    # tried between the check and the drop waits for the prune and gives up after its own timeout.
    product_dsn, archive_dsn = clean_databases
    seed_compared(product_dsn, {D1: 2})
    seed_compared(archive_dsn, {D1: 2})
    writes = []

    def write(_conn: psycopg.Connection) -> None:
        with psycopg.connect(product_dsn) as writer:
            writer.execute("SET lock_timeout = '200ms'")
            try:
                writer.execute("INSERT INTO compared_test.daily (report_date, name) VALUES ('2026-08-01', 'late')")
                writer.commit()
                writes.append("written")
            except psycopg.errors.LockNotAvailable:
                writes.append("waited for the prune")

    product = _AtDrop.connect(product_dsn)
    product.before_drop = write
    try:
        with psycopg.connect(archive_dsn) as archive:
            result = prune_table(product, archive, COMPARED, D2)
    finally:
        product.close()
    assert writes == ["waited for the prune"]
    assert result.pruned == {"2026-08-01": 2} and result.refused == {}
    assert compared_days(product_dsn) == {}


def test_a_day_product_cannot_drop_is_kept_naming_the_error(clean_databases):
    # A day whose drop fails stays in product, refused with the day and PostgreSQL's error named.
    product_dsn, archive_dsn = clean_databases
    seed_compared(product_dsn, {D1: 2})
    seed_compared(archive_dsn, {D1: 2})
    with psycopg.connect(product_dsn) as conn:
        conn.execute("CREATE VIEW compared_test.first_day AS SELECT * FROM compared_test.daily_p20260801")
    with psycopg.connect(product_dsn) as product, psycopg.connect(archive_dsn) as archive:
        result = prune_table(product, archive, COMPARED, D2)
    assert result.pruned == {} and set(result.refused) == {"2026-08-01"}
    reason = result.refused["2026-08-01"]
    assert isinstance(reason, str) and reason.startswith("compared_test.daily 2026-08-01 ")
    assert "DependentObjectsStillExist" in reason and "because other objects depend on it" in reason
    assert reason.endswith("product keeps it")
    assert compared_days(product_dsn) == {"2026-08-01": 2}


def test_a_prune_whose_product_connection_is_lost_keeps_the_day_and_returns(clean_databases):
    # The server ends product's connection just before the drop: the prune reports the day as kept
    # (naming the lost connection) instead of raising, and product still holds the day.
    product_dsn, archive_dsn = clean_databases
    seed_compared(product_dsn, {D1: 2})
    seed_compared(archive_dsn, {D1: 2})
    product = _AtDrop.connect(product_dsn)
    product.before_drop = _terminate(product_dsn)
    try:
        with psycopg.connect(archive_dsn) as archive:
            result = prune_table(product, archive, COMPARED, D2)
    finally:
        product.close()
    assert result.pruned == {} and set(result.refused) == {"2026-08-01"}
    assert result.refused["2026-08-01"].endswith("product keeps it")
    assert compared_days(product_dsn) == {"2026-08-01": 2}


def test_a_derived_prune_whose_connection_is_lost_keeps_the_day_and_returns(clean_databases):
    # The same for a table derived in product (docs/analytics.md, "Retention").
    product_dsn, _ = clean_databases
    seed_table(product_dsn, DERIVED, {D1: 2})
    product = _AtDrop.connect(product_dsn)
    product.before_drop = _terminate(product_dsn)
    try:
        result = drop_derived_partitions(product, DERIVED, D2)
    finally:
        product.close()
    assert result.pruned == {} and set(result.refused) == {"2026-08-01"}
    assert result.refused["2026-08-01"].endswith("product keeps it")
    assert stored(product_dsn) == {"2026-08-01": 2}
