"""What a refused or unreachable DSN's message tells the operator to do (docs/configuration.md).

A message is read by someone about to fix an environment variable: the schemes it names and the
libpq variables it points to must be the ones libpq reads, spelled as libpq reads them
(environment variable names are case-sensitive). libpq's documentation: "The URI scheme
designator can be either postgresql:// or postgres://"; with no host and port in the URI, libpq
takes them from PGHOST and PGPORT.
"""

import re

import pytest

from adpipes.lib.settings import ConfigurationError, load_settings
from adpipes.lib.storage.postgres import PostgresDatabase, StorageError


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def test_a_dsn_with_another_scheme_is_told_both_schemes_libpq_reads():
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"ADPIPES_ARCHIVE_DSN": "mysql://adpipes@127.0.0.1:5432/archive"})
    message = str(caught.value)
    assert "ADPIPES_ARCHIVE_DSN" in message
    refusal = next(line for line in message.splitlines() if "ADPIPES_ARCHIVE_DSN" in line)
    assert "scheme" in _words(refusal)
    # Each scheme named as a word of its own, not run into the text around it.
    assert "postgresql" in _words(refusal) and "postgres" in _words(refusal)


def test_a_dsn_of_only_whitespace_is_refused_as_empty_naming_the_variable():
    database = PostgresDatabase(role="product", dsn=" \n")
    with pytest.raises(StorageError) as caught:
        with database.connect():
            pass
    message = str(caught.value)
    assert "ADPIPES_PRODUCT_DSN" in message
    assert "empty" in _words(message)


def test_a_dsn_naming_no_server_is_described_by_the_libpq_variables_it_falls_back_to(monkeypatch):
    # postgresql:// alone is a valid URI: libpq takes the host and port from PGHOST and PGPORT.
    # Port 1 on loopback: nothing listens, the connection is refused.
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", "1")
    monkeypatch.delenv("PGDATABASE", raising=False)
    monkeypatch.delenv("PGUSER", raising=False)
    database = PostgresDatabase(role="archive", dsn="postgresql://")
    with pytest.raises(StorageError) as caught:
        with database.connect():
            pass
    message = str(caught.value)
    assert "ADPIPES_ARCHIVE_DSN" in message and "refused" in message
    assert "PGHOST" in _words(message) and "PGPORT" in _words(message)
    # Every mention of the variables is spelled as libpq reads them (pghost is another variable).
    mentions = re.findall(r"pg(?:host|port)", message, re.IGNORECASE)
    assert mentions and all(mention.isupper() for mention in mentions)
    # docs/configuration.md: "described as the libpq defaults, PGHOST and PGPORT".
    assert re.search(r"(?<!\w)the libpq defaults(?!\w)", message), message


SECRET = "LeakCanary99"


@pytest.mark.parametrize("dsn", [
    f"postgresql://adpipes:{SECRET}%zz@127.0.0.1:5432/archive",       # a % starting no escape
    f"postgresql://adpipes:{SECRET}@x@127.0.0.1:5432/archive",        # an unencoded @
    f"postgresql://adpipes:{SECRET}/x@127.0.0.1:5432/archive",        # an unencoded /
    f"postgresql://adpipes:{SECRET}@h:5432:6543/archive",             # a host with two ':'
    "postgresql://adpipes@127.0.0.1:54x2/archive",                    # a port that is no number
    f"postgresql://adpipes:{SECRET}@127.0.0.1/archive?bogus_option=1",  # what libpq cannot parse
])
def test_a_dsn_refused_for_its_syntax_says_to_percent_encode(dsn):
    # docs/operations.md: a DSN with an unencoded character is "refused at load naming the
    # variable and 'percent-encode'" (docs/configuration.md: percent-encode @ : / ? # % and spaces
    # in the user name and password), as a word of its own.
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"ADPIPES_ARCHIVE_DSN": dsn})
    message = str(caught.value)
    refusal = next(line for line in message.splitlines() if "ADPIPES_ARCHIVE_DSN" in line)
    assert re.search(r"(?<![\w-])percent-encode(?!\w)", refusal), refusal
    assert SECRET not in message


def test_an_unbracketed_ipv6_host_is_told_to_write_it_in_brackets():
    # docs/configuration.md: "write an IPv6 host in brackets ([::1]:5432)".
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"ADPIPES_ARCHIVE_DSN": f"postgresql://adpipes:{SECRET}@::1/archive"})
    refusal = next(line for line in str(caught.value).splitlines() if "ADPIPES_ARCHIVE_DSN" in line)
    assert "IPv6" in _words(refusal) and "brackets" in _words(refusal) and "[::1]:5432" in refusal, refusal
