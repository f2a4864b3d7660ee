"""Property tests of the column names made from vendor headers (adpipes/lib/storage/names.py):
for any headers a vendor may send, the names are PostgreSQL identifiers PostgreSQL keeps as given,
unique within a delivery and the same on every run; a header that cannot name a column is refused.

The oracle is the module's documented contract, written out here: letters and digits of any script
(NFKC, lower case) joined by ``_``; ``c_`` before a leading digit or a system column name; a name
over 63 bytes cut at a character boundary to leave room for ``_`` + the first 8 hex digits of the
SHA-256 of the full name; refused: control characters, more than 256 characters, no letter or digit.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from adpipes.lib.storage.names import UnusableHeader, column_names, headers_problem

# Deterministic (derandomize), no per-example deadline. scripts/mutation sets PROPERTY_TEST_EXAMPLES:
# fewer examples and no shrinking (a mutant is killed by the first failing example).
PROPERTIES = settings(max_examples=int(os.environ.get("PROPERTY_TEST_EXAMPLES", 80)), deadline=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate] if "PROPERTY_TEST_EXAMPLES" in os.environ else list(Phase))
LIMIT = 63  # PostgreSQL's NAMEDATALEN - 1, in bytes
SYSTEM_COLUMNS = ("tableoid", "xmin", "cmin", "xmax", "cmax", "ctid")


def oracle_snake_case(header: str) -> str:
    """Letters and digits (str.isalnum, any script) of the NFKC, lower-cased header, each run of
    anything else one ``_``; ``c_`` before a leading digit or a system column name."""
    text = unicodedata.normalize("NFKC", header).strip().lower()
    words, word = [], ""
    for ch in text:
        if ch.isalnum():
            word += ch
        elif word:
            words.append(word)
            word = ""
    words += [word] if word else []
    name = "_".join(words)
    return f"c_{name}" if name[:1].isdigit() or name in SYSTEM_COLUMNS else name


def oracle_refused(header: str) -> bool:
    return (any(unicodedata.category(ch) == "Cc" for ch in header) or len(header) > 256
            or not oracle_snake_case(header))


def oracle_fits(name: str, full: str) -> bool:
    """``name`` is ``full`` if that fits in 63 bytes, else the longest prefix of ``full`` (not
    ending in ``_``) that leaves room for ``_`` + 8 hex digits, then those."""
    if len(full.encode()) <= LIMIT:
        return name == full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    prefix, suffix = name[:-9], name[-9:]
    if suffix != f"_{digest}" or not full.startswith(prefix) or prefix.endswith("_"):
        return False
    room = LIMIT - 9
    rest = full[len(prefix):]
    next_word = len(rest) - len(rest.lstrip("_")) + 1  # the underscores and one more character
    return len(prefix.encode()) <= room < len(full[:len(prefix) + next_word].encode())


# Any text without markup: letters of many scripts, digits, punctuation, spaces, control and
# format characters, compatibility forms (ﬁ, ①, ＡＢＣ) that NFKC changes.
header_text = st.text(st.characters(codec="utf-8", exclude_characters="<"), max_size=40)
long_header = st.text(st.sampled_from(list("abcxyz012 _-가나다éß")), min_size=30, max_size=120)


@PROPERTIES
@given(st.lists(st.one_of(header_text, long_header), min_size=1, max_size=6))
def test_any_headers_give_unique_identifiers_or_are_refused(headers):
    if any(oracle_refused(h) for h in headers):
        with pytest.raises(UnusableHeader):
            column_names(headers)
        assert headers_problem(headers) is not None
        return
    names = column_names(headers)
    assert headers_problem(headers) is None
    assert len(names) == len(headers) and len(set(names)) == len(names)
    for name, header in zip(names, headers):
        assert 0 < len(name.encode()) <= LIMIT
        assert name not in SYSTEM_COLUMNS
        assert not any(unicodedata.category(ch) == "Cc" for ch in name)
    assert column_names(headers) == names  # the same on every run


@PROPERTIES
@given(st.one_of(header_text, long_header).filter(lambda h: not oracle_refused(h)))
def test_a_header_alone_is_its_snake_case_name_fitted_to_63_bytes(header):
    (name,) = column_names([header])
    assert oracle_fits(name, oracle_snake_case(header)), (header, name)


@PROPERTIES
@given(long_header.filter(lambda h: len(oracle_snake_case(h).encode()) > LIMIT), st.integers(2, 3))
def test_repeated_long_headers_are_numbered_then_fitted(header, times):
    names = column_names([header] * times)
    full = oracle_snake_case(header)
    assert oracle_fits(names[0], full)
    for n, name in enumerate(names[1:], start=2):
        assert oracle_fits(name, f"{full}_{n}"), (n, name)
    assert len(set(names)) == times


@PROPERTIES
@given(header_text, st.sampled_from(["\x00", "\x07", "\n", "\r", "\x1b", "\x7f", "\x85"]), st.data())
def test_a_header_with_a_control_character_is_refused(text, control, data):
    at = data.draw(st.integers(0, len(text)))
    with pytest.raises(UnusableHeader, match="control characters"):
        column_names(["Media Source", text[:at] + control + text[at:]])


@PROPERTIES
@given(st.integers(257, 400))
def test_a_header_longer_than_256_characters_is_refused(length):
    with pytest.raises(UnusableHeader, match="characters long"):
        column_names(["Media Source", ("Revenue " * 60)[:length]])
    (name,) = column_names([("Revenue " * 60)[:256]])
    assert len(name.encode()) <= LIMIT
