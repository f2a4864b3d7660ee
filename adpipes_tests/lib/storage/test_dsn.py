"""DSNs are checked without being echoed, and connections are described by their parsed parts."""

import pytest

from adpipes.lib.settings import ConfigurationError, load_settings
from adpipes.lib.storage.dsn import describe_dsn, dsn_digest, dsn_problem
from adpipes.lib.storage.postgres import PostgresDatabase, StorageError

SECRET = "LeakCanary99"


@pytest.mark.parametrize("dsn, fragment", [
    (f"postgresql://adpipes:{SECRET}@x@127.0.0.1:5432/archive", "unencoded @"),
    (f"postgresql://adpipes:{SECRET}/x@127.0.0.1:5432/archive", "moved the database name"),
    (f"postgresql://adpipes:{SECRET}#x@127.0.0.1:5432/archive", "moved the database name"),
    (f"postgresql://adpipes:{SECRET}%zz@127.0.0.1:5432/archive", "% that does not start"),
    (f"postgresql://adpipes@127.0.0.1:54x2/archive", "port is not a number"),
    # Every host of a multi-host URI has its port checked, not only the last.
    (f"postgresql://adpipes:{SECRET}@h1:54x2,h2:5433/archive", "port is not a number"),
    # libpq refuses a query parameter it does not know.
    (f"postgresql://adpipes:{SECRET}@127.0.0.1/archive?bogus_option=1", "libpq cannot parse it"),
    # A password holding both an @ and a / (no database named): libpq would read host "Canary".
    (f"postgresql://adpipes:{SECRET}@Canary/x@127.0.0.1", "moved the database name"),
    (f"mysql://adpipes:{SECRET}@127.0.0.1/archive", "scheme"),
    # libpq reads the port of h:5432:6543 as "5432:6543" and an unbracketed ::1 as no host.
    (f"postgresql://adpipes:{SECRET}@h:5432:6543/archive", "more than one ':'"),
    (f"postgresql://adpipes:{SECRET}@::1/archive", "more than one ':'"),
    (f"postgresql://adpipes:{SECRET}@[::1]:5432:6543/archive", "more than one ':'"),
    (f"host=127.0.0.1 password={SECRET} bogus_option=1", "neither a postgresql:// URI"),
    # The @host forgotten after a password holding ]: libpq would read host "admin" and the
    # password's tail as the port (a ] ends only a bracketed IPv6 address).
    (f"postgresql://admin:{SECRET}]99/archive", "port is not a number"),
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
    ("postgresql://adpipes@[::1]:5432/archive", "host ::1, port 5432, database archive, role adpipes"),
    # Whitespace or a line break around it (a secret file) is not part of the DSN.
    (" postgresql://adpipes@db:5432/archive\n", "host db, port 5432, database archive, role adpipes"),
    # A host without a port (libpq then uses the default port).
    ("postgresql://adpipes@db.internal/archive", "host db.internal, database archive, role adpipes"),
    # libpq's URI form: query parameters may hold any text, "://" included.
    ("postgresql://adpipes@db:5432/archive?application_name=etl://nightly",
     "host db, port 5432, database archive, role adpipes"),
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


def _connect_error(role: str, dsn: str) -> str:
    with pytest.raises(StorageError) as caught:
        with PostgresDatabase(role=role, dsn=dsn).connect():
            pass
    return str(caught.value)


def test_a_missing_database_or_role_is_named_as_such(archive_dsn):
    # The test server's real answers (trust authentication): FATAL database/role "..." does not exist.
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(archive_dsn)
    no_database = make_conninfo(archive_dsn, dbname="adpipes_no_such_database")
    message = _connect_error("archive", no_database)
    assert "the database or role does not exist" in message
    assert "database adpipes_no_such_database" in message and f"host {parts['host']}" in message
    assert "FATAL" not in message and "adpipes_no_such_database\"" not in message  # no libpq text
    message = _connect_error("product", make_conninfo(archive_dsn, user="adpipes_no_such_role"))
    assert "the database or role does not exist" in message and "role adpipes_no_such_role" in message
    assert "ADPIPES_PRODUCT_DSN" in message


def test_a_failure_the_driver_words_otherwise_is_still_named_without_its_text():
    # A server that accepts the connection and closes it at once: libpq says "server closed the
    # connection unexpectedly", which adpipes does not repeat.
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def close_every_connection():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=close_every_connection, daemon=True).start()
    try:
        message = _connect_error("archive", f"postgresql://adpipes:{SECRET}@127.0.0.1:{port}/archive?sslmode=disable")
    finally:
        listener.close()
    assert f"host 127.0.0.1, port {port}, database archive, role adpipes" in message
    assert "the connection failed" in message.lower() and "ADPIPES_ARCHIVE_DSN" in message
    assert SECRET not in message and "unexpectedly" not in message and "None" not in message


def test_a_dsn_with_a_line_break_around_it_connects(archive_dsn):
    # As a secret file or an environment file may leave it; libpq alone cannot read a URI after
    # leading whitespace, and a trailing line break would end up in the database name.
    for padded in (f" {archive_dsn}", f"{archive_dsn}\n"):
        with PostgresDatabase(role="archive", dsn=padded).connect() as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("archive",)


def test_a_password_holding_brackets_is_read_as_libpq_reads_it(archive_dsn):
    # libpq reads brackets in the user information as part of the password; Python's URL parser
    # took them for an IPv6 host and raised a bare ValueError naming neither variable nor rule.
    scheme, rest = archive_dsn.split("://", 1)
    user_host = rest.split("@", 1)[-1]
    dsn = f"{scheme}://postgres:pa[ss]{SECRET}@{user_host}"
    assert dsn_problem(dsn) is None
    assert "pa[ss" not in describe_dsn(dsn) and SECRET not in describe_dsn(dsn)
    # The test cluster trusts local connections: the password is sent and ignored.
    with PostgresDatabase(role="archive", dsn=dsn).connect() as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("archive",)


@pytest.mark.parametrize("dsn", [
    f"postgresql://adpipes:{SECRET}@[::1/archive",
    f"postgresql://adpipes:{SECRET}@[db.internal:5432/archive",
])
def test_an_ipv6_host_without_its_closing_bracket_fails_the_load_naming_the_variable(dsn):
    # docs/configuration.md: an IPv6 host is written in brackets; a DSN that cannot be read
    # unambiguously fails the load naming the variable, never echoing it.
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"ADPIPES_ARCHIVE_DSN": dsn})
    message = str(caught.value)
    assert "ADPIPES_ARCHIVE_DSN" in message and SECRET not in message


def test_a_dsn_digest_tells_databases_apart_without_holding_the_password():
    # The streamed load compares the databases it loaded into with the IO manager's by digest
    # (docs/development.md: rows streamed into other databases are loaded from the spool files).
    archive = f"postgresql://adpipes:{SECRET}@db:5432/archive"
    assert dsn_digest(archive) == dsn_digest(archive)
    assert dsn_digest(archive) != dsn_digest(archive.replace("/archive", "/product"))
    assert dsn_digest(archive) != dsn_digest(archive.replace("@db:", "@db2:"))
    assert SECRET not in dsn_digest(archive) and "adpipes" not in dsn_digest(archive)


def test_a_port_after_a_second_bracket_is_refused_as_libpq_misreads_it():
    # docs/configuration.md: an IPv6 host is written in brackets ([::1]:5432); a DSN that cannot
    # be read unambiguously fails the load. libpq ends a bracketed address at its first ] and
    # takes everything up to the next / or , as the port: here "1]:5432".
    dsn = "postgresql://adpipes@[::1]:1]:5432/archive"
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"ADPIPES_ARCHIVE_DSN": dsn})
    assert "ADPIPES_ARCHIVE_DSN" in str(caught.value)
