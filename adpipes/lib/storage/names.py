"""Column names for vendor headers: always a valid PostgreSQL identifier, the same on every run.

PostgreSQL cuts an identifier longer than 63 bytes (``NAMEDATALEN - 1``) to 63 bytes with only a
NOTICE. A vendor header longer than that would become a column under the cut name, the next load
would not find its full name among the table's columns, add it again and fail with
``DuplicateColumn``: every later load of the table would break. So a name longer than 63 bytes
(bytes, not characters: a Korean letter takes three) is cut here instead, at a character
boundary, and ends in ``_`` + the first 8 hex digits of the SHA-256 of the full name: unique,
within the limit, and the same in every run and process (no salted ``hash()``).

A header that cannot name a column is refused with :class:`UnusableHeader`, whatever checks the
caller makes of the delivery: control characters, markup (an HTML page served in place of a
report), a header longer than any vendor's, nothing left after snake-casing, a system column.

The original header of a vendor column is kept where a reader finds it: the column's comment
(``vendor header: <header as delivered>``), written when :func:`add_vendor_columns` adds the
column. The header of each name is remembered in the process that made the name
(:func:`remember_header`): the asset step that reads the delivery is the one whose IO manager
creates the columns.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from psycopg import sql

# NAMEDATALEN - 1: PostgreSQL's identifier limit in bytes, the same in every supported version.
MAX_IDENTIFIER_BYTES = 63
# 8 hex digits (32 bits) tell apart the few long headers one table ever has.
HASH_CHARS = 8
# No vendor header comes near this; a longer "header" is a sentence or a page, not a column.
MAX_HEADER_CHARS = 256
# The comment of a vendor column: this prefix and the header exactly as delivered.
COMMENT_PREFIX = "vendor header: "
# Names PostgreSQL reserves for every table (ADD COLUMN refuses them).
SYSTEM_COLUMNS = frozenset({"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"})

# Tags of the pages that come instead of a report (maintenance pages, proxies, login walls). Not
# any text between angle brackets: a header like "Revenue <USD>" is odd but not markup.
_MARKUP = re.compile(
    r"<\s*(?:!doctype|!--|!\[cdata\[|\?xml|/\s*[a-z]"
    r"|(?:html|head|body|title|meta|link|script|style|div|span|p|a|br|hr|h[1-6]|pre|center|table"
    r"|tr|td|th|form|iframe|noscript|img|ul|ol|li|b|i|strong|em)\b)",
    re.IGNORECASE,
)

_default_log = logging.getLogger("adpipes.storage")
_NON_WORD = re.compile(r"[\W_]+")
# Column name -> the header it was made from, in this process; and the names that were shortened.
_headers: dict[str, str] = {}
_shortened: set[str] = set()


class UnusableHeader(ValueError):
    """A delivered header that cannot become a column name; the delivery is not a usable report."""


class ColumnNameError(ValueError):
    """A column name PostgreSQL would not store as given (too long, empty, a system column)."""


def _shown(header: str) -> str:
    # Enough of the header to recognize it, never a whole page in an error message.
    return repr(header if len(header) <= 80 else header[:77] + "...")


def header_problem(header: str) -> str | None:
    """Why ``header`` cannot name a column, or None."""
    if any(unicodedata.category(ch) == "Cc" for ch in header):
        return "it holds control characters"
    if _MARKUP.search(header):
        return "it is markup (an HTML or XML page came instead of a report)"
    if len(header) > MAX_HEADER_CHARS:
        return f"it is {len(header)} characters long (more than {MAX_HEADER_CHARS}: text, not a column header)"
    return None


def check_header(header: str, position: int | None = None) -> None:
    """Raise :class:`UnusableHeader` when ``header`` cannot name a column."""
    problem = header_problem(header)
    if problem:
        where = "" if position is None else f" (column {position + 1})"
        raise UnusableHeader(
            f"header {_shown(header)}{where} cannot be a column name: {problem}. The delivery is "
            "not a report adpipes can store."
        )


def headers_problem(headers: Sequence[str]) -> str | None:
    """Why the headers of a delivery cannot all name columns (the first reason), or None: for a
    caller that keeps such a delivery aside instead of failing on :class:`UnusableHeader`."""
    try:
        column_names(headers)
    except UnusableHeader as exc:
        return str(exc)
    return None


def fit_identifier(name: str) -> str:
    """``name`` if it fits PostgreSQL's 63 bytes, else its longest prefix that leaves room for
    ``_`` + 8 hex digits of the full name's SHA-256."""
    encoded = name.encode("utf-8")
    if len(encoded) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:HASH_CHARS]
    room = MAX_IDENTIFIER_BYTES - HASH_CHARS - 1
    # "ignore" drops a multibyte character cut in half at the end of the prefix.
    prefix = encoded[:room].decode("utf-8", "ignore").rstrip("_")
    return f"{prefix}_{digest}"


def check_column_name(name: str) -> None:
    """Raise :class:`ColumnNameError` unless PostgreSQL would store ``name`` exactly as given."""
    problem = None
    if not name:
        problem = "it is empty"
    elif len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        problem = (f"it is {len(name.encode('utf-8'))} bytes long and PostgreSQL would cut it to "
                   f"{MAX_IDENTIFIER_BYTES}, so the next load would add it again")
    elif any(unicodedata.category(ch) == "Cc" for ch in name):
        problem = "it holds control characters"
    elif name in SYSTEM_COLUMNS:
        problem = "it is a PostgreSQL system column"
    if problem:
        raise ColumnNameError(
            f"column name {_shown(name)} cannot be added: {problem}. Name vendor headers with "
            "adpipes.lib.storage.names.column_names; nothing was written."
        )


def snake_case_name(header: str, position: int | None = None) -> str:
    """The full snake_case name of ``header`` (any length): ``Media Source`` -> ``media_source``.

    Letters and digits of any script are kept (NFKC-normalized, lower case: ``구매 금액`` ->
    ``구매_금액``), every other run of characters becomes one ``_``. A name starting with a digit
    gets ``c_`` in front, as does a PostgreSQL system column name. Raises :class:`UnusableHeader`.
    """
    check_header(header, position)
    name = _NON_WORD.sub("_", unicodedata.normalize("NFKC", header).strip().lower()).strip("_")
    if not name:
        where = "" if position is None else f" (column {position + 1})"
        raise UnusableHeader(f"header {_shown(header)}{where} cannot be a column name: it has no "
                             "letters or digits. The delivery is not a report adpipes can store.")
    return f"c_{name}" if name[0].isdigit() or name in SYSTEM_COLUMNS else name


def column_name(full_name: str, header: str) -> str:
    """The stored name of ``full_name`` (:func:`fit_identifier`), remembered as made from ``header``."""
    name = fit_identifier(full_name)
    remember_header(name, header, shortened=name != full_name)
    return name


def column_names(headers: Sequence[str]) -> list[str]:
    """The column name of every header of one delivery, unique within it.

    A header whose name another header of the delivery has already taken gets ``_2``, ``_3``, ...
    (in header order), the numbered name fitted to 63 bytes like any other.
    """
    taken: set[str] = set()
    counts: dict[str, int] = {}
    names = []
    for position, header in enumerate(headers):
        full = snake_case_name(header, position)
        counts[full] = counts.get(full, 0) + 1
        candidate = full if counts[full] == 1 else f"{full}_{counts[full]}"
        while fit_identifier(candidate) in taken:  # e.g. "A", "A 2", "A": the third is a_3, not a second a_2
            counts[full] += 1
            candidate = f"{full}_{counts[full]}"
        # Only the name kept is remembered as made from this header: a name tried and found
        # taken belongs to another header (a_2 above is "A 2", whose comment says so).
        name = column_name(candidate, header)
        taken.add(name)
        names.append(name)
    return names


def remember_header(name: str, header: str, *, shortened: bool = False) -> None:
    """Record that column ``name`` was made from vendor header ``header`` (for its comment)."""
    _headers[name] = header
    if shortened:
        _shortened.add(name)


def header_of(name: str) -> str | None:
    """The vendor header ``name`` was made from in this process, if any."""
    return _headers.get(name)


def vendor_comment(header: str) -> str:
    return COMMENT_PREFIX + header


def shortened_names(names: Iterable[str]) -> dict[str, str]:
    """Column -> header of those of ``names`` that are shortened vendor headers (made here)."""
    return {name: _headers[name] for name in names if name in _shortened}


def add_vendor_columns(cur: Any, schema: str, table: str, names: Sequence[str], log: Any = None) -> dict[str, str | None]:
    """Add ``names`` to ``schema.table`` as text columns, each commented with its vendor header.

    Every name is checked first (:func:`check_column_name`), so nothing is added when one of them
    would be cut or refused by PostgreSQL. Returns column -> header (None when not known here).
    """
    for name in names:
        check_column_name(name)
    added: dict[str, str | None] = {}
    for name in names:
        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} text").format(
            sql.Identifier(schema, table), sql.Identifier(name)))
        header = header_of(name)
        if header is not None:
            cur.execute(sql.SQL("COMMENT ON COLUMN {} IS {}").format(
                sql.Identifier(schema, table, name), sql.Literal(vendor_comment(header))))
        added[name] = header
    if added:
        (log or _default_log).info(
            f"{schema}.{table}: new vendor column(s) "
            + ", ".join(f"{name} (header {_shown(header) if header is not None else 'not known'})"
                        for name, header in added.items())
        )
    return added


def vendor_column_headers(cur: Any, schema: str, table: str) -> Mapping[str, str]:
    """Column -> vendor header of every column of ``schema.table`` commented by adpipes."""
    cur.execute(
        "SELECT a.attname, col_description(a.attrelid, a.attnum) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) AND a.attnum > 0 "
        "AND NOT a.attisdropped ORDER BY a.attnum",
        (schema, table),
    )
    return {name: comment.removeprefix(COMMENT_PREFIX) for name, comment in cur.fetchall()
            if comment and comment.startswith(COMMENT_PREFIX)}
