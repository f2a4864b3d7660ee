"""PostgreSQL connection strings: checked at load, described without their secrets.

A DSN holds a password. libpq's own messages quote the part of a URI it could not parse, so an
unencoded ``@`` in a password ends up in an error as part of a "host name"
(``failed to resolve host 'Secret99@127.0.0.1'``). adpipes therefore checks a DSN's syntax itself
at load, naming the variable and the rule but never the value, and describes a connection by the
parts it parsed (host, port, database, role), never by the driver's text.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote

from psycopg.conninfo import conninfo_to_dict

URI_SCHEMES = ("postgresql", "postgres")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PORT = re.compile(r"\d*")
ENCODE_HINT = (
    "percent-encode special characters in the user name and password (@ as %40, : as %3A, "
    "/ as %2F, ? as %3F, # as %23, % as %25, space as %20), or keep the password out of the DSN "
    "(~/.pgpass or PGPASSWORD)"
)


def dsn_problem(dsn: str) -> str | None:
    """What makes ``dsn`` ambiguous or unparseable, in words that never quote it; None if fine."""
    text = dsn.strip()
    if not text:
        return "it is empty"
    if "://" not in text:
        try:
            conninfo_to_dict(text)
        except Exception:  # noqa: BLE001 - the driver's message may quote the value
            return "it is neither a postgresql:// URI nor a valid key=value connection string"
        return None
    scheme, _, rest = text.partition("://")
    if scheme not in URI_SCHEMES:
        return f"its scheme must be one of {', '.join(URI_SCHEMES)}"
    if _PERCENT.search(text):
        return "it has a % that does not start a %XX escape; " + ENCODE_HINT
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if authority.count("@") > 1:
        return "its user name or password holds an unencoded @; " + ENCODE_HINT
    userinfo, at, hosts = authority.rpartition("@")
    # The database name, read as libpq reads it: what follows the authority up to ? or #.
    # (urllib's urlsplit is not used: it takes a [ in a password for an IPv6 host and raises.)
    path = re.split(r"[?#]", rest[len(authority):], maxsplit=1)[0].lstrip("/")
    if "@" in path or "/" in path or (not at and "@" in rest):
        return "an unencoded @ or / in the user name or password moved the database name; " + ENCODE_HINT
    for host in filter(None, hosts.split(",")):
        # The port follows the bracketed address of an IPv6 host, which libpq ends at its first ]
        # (a second ] is then read as part of the port); a ] anywhere else (a password's, when the
        # @host was forgotten) does not end an address.
        tail = host.split("]", 1)[-1] if host.startswith("[") else host
        if tail.count(":") > 1:
            # libpq reads h:5432:6543 (or [::1]:5432:6543) as port "5432:6543", and an
            # unbracketed ::1 as no host.
            return ("a host holds more than one ':' (write an IPv6 address in brackets, e.g. "
                    "[::1]:5432; or is it an unencoded : in the password?); " + ENCODE_HINT)
        port = tail.rpartition(":")[2] if ":" in tail else ""
        if not _PORT.fullmatch(port):
            return "its port is not a number (an unencoded : or / in the password?); " + ENCODE_HINT
    try:
        conninfo_to_dict(text)
    except Exception:  # noqa: BLE001 - the driver's message may quote the value
        return "libpq cannot parse it; " + ENCODE_HINT
    return None


def dsn_digest(dsn: str) -> str:
    """Which server and database a DSN names, comparable without keeping its password around."""
    return hashlib.sha256(dsn.encode()).hexdigest()


def describe_dsn(dsn: str) -> str:
    """``host 127.0.0.1, port 5432, database archive, role adpipes``: the parts a reader needs to
    find the server, never the password (or the DSN itself). A DSN with a syntax problem is not
    described: its "host" may be the tail of a password."""
    if dsn_problem(dsn) is not None:
        return "a DSN that cannot be read unambiguously"
    try:
        parts = conninfo_to_dict(dsn.strip())
    except Exception:  # noqa: BLE001 - the driver's message may quote the value
        return "an unparseable DSN"
    shown = [
        f"{label} {unquote(str(parts[key]))}"
        for key, label in (("host", "host"), ("port", "port"), ("dbname", "database"), ("user", "role"))
        if parts.get(key)
    ]
    return ", ".join(shown) or "the libpq defaults (PGHOST, PGPORT, ...)"


# The driver's words for common failures, mapped to ours (its text itself is never repeated: it
# may quote a misparsed password).
_REASONS = (
    ("password authentication failed", "the password was refused"),
    ("no password supplied", "the server wants a password and none was given"),
    ("connection refused", "the server refused the connection (is PostgreSQL running on that host and port?)"),
    ("could not translate host name", "the host name is unknown"),
    ("failed to resolve host", "the host name is unknown"),
    ("timeout expired", "the connection timed out"),
    ("does not exist", "the database or role does not exist"),
    ("no pg_hba.conf entry", "the server's pg_hba.conf does not allow this host, role or database"),
    ("too many connections", "the server has too many connections"),
    ("ssl", "an SSL problem"),
)


def connection_failure_reason(error: Exception) -> str:
    """Why a connection failed, in adpipes' words (see ``_REASONS``)."""
    text = str(error).lower()
    return next((ours for theirs, ours in _REASONS if theirs in text), "the connection failed")
