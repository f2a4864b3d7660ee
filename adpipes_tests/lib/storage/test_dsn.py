"""DSNs are checked without being echoed, and connections are described by their parsed parts."""

import pytest

from adpipes.lib.storage.dsn import describe_dsn, dsn_problem
from adpipes.lib.storage.postgres import PostgresDatabase, StorageError

SECRET = "LeakCanary99"


@pytest.mark.parametrize("dsn, fragment", [
    (f"postgresql://adpipes:{SECRET}@x@127.0.0.1:5432/archive", "unencoded @"),
    (f"postgresql://adpipes:{SECRET}/x@127.0.0.1:5432/archive", "moved the database name"),
    (f"postgresql://adpipes:{SECRET}#x@127.0.0.1:5432/archive", "moved the database name"),
    (f"postgresql://adpipes:{SECRET}%zz@127.0.0.1:5432/archive", "% that does not start"),
    (f"postgresql://adpipes@127.0.0.1:54x2/archive", "port is not a number"),
    (f"mysql://adpipes:{SECRET}@127.0.0.1/archive", "scheme"),
    (f"host=127.0.0.1 password={SECRET} bogus_option=1", "neither a postgresql:// URI"),
])
def test_ambiguous_dsns_are_refused_without_quoting_them(dsn, fragment):
    problem = dsn_problem(dsn)
    assert problem is not None and fragment in problem
    assert SECRET not in problem and "x@127" not in problem
    assert SECRET not in describe_dsn(dsn)


@pytest.mark.parametrize("dsn, described", [
    ("postgresql://adpipes:p%40ss@db.internal:5433/archive", "host db.internal, port 5433, database archive, role adpipes"),
    ("host=db port=5432 dbname=product user=app password=x", "host db, port 5432, database product, role app"),
    ("postgresql:///archive?host=/var/run/postgresql", "host /var/run/postgresql, database archive"),
    ("postgresql://h1:5432,h2:5433/archive", "host h1,h2, port 5432,5433, database archive"),
])
def test_valid_dsns_are_described_by_their_parts_never_the_password(dsn, described):
    assert dsn_problem(dsn) is None
    assert describe_dsn(dsn) == described


def test_a_connection_failure_names_host_port_database_and_role_not_the_driver_text():
    # Port 1 on loopback: nothing listens, the connection is refused.
    database = PostgresDatabase(role="archive", dsn=f"postgresql://adpipes:{SECRET}@127.0.0.1:1/archive")
    with pytest.raises(StorageError) as caught:
        with database.connect():
            pass
    message = str(caught.value)
    assert "host 127.0.0.1, port 1, database archive, role adpipes" in message
    assert "refused" in message and "ADPIPES_ARCHIVE_DSN" in message
    assert SECRET not in message and "connection to server" not in message  # no libpq text


def test_an_unencoded_at_sign_never_reaches_libpq():
    database = PostgresDatabase(role="product", dsn=f"postgresql://adpipes:{SECRET}@x@127.0.0.1:1/product")
    with pytest.raises(StorageError, match="ADPIPES_PRODUCT_DSN is not a valid PostgreSQL DSN") as caught:
        with database.connect():
            pass
    assert SECRET not in str(caught.value) and "x@127.0.0.1" not in str(caught.value)
