"""What a refused header or column name's message tells its reader (docs/assets.md).

A refused vendor header names its reason among those docs/assets.md lists (control characters,
HTML/XML markup, no letters or digits, over 256 characters). A column name PostgreSQL would not
store as given is refused naming why (PostgreSQL's own reasons: an empty identifier, a system
column name, control characters) and the function that makes names from vendor headers, by the
dotted path Python imports it from.
"""

import importlib
import re

import pytest

from adpipes.lib.storage import names
from adpipes.lib.storage.names import ColumnNameError, UnusableHeader, check_column_name, column_names


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def _has_phrase(text: str, phrase: str) -> bool:
    """``phrase`` as whole words of ``text``, not run into the text around it."""
    return re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text) is not None


def test_a_header_with_a_control_character_is_refused_naming_control_characters():
    with pytest.raises(UnusableHeader) as caught:
        column_names(["Event Time", "Media\x07Source"])
    assert _has_phrase(str(caught.value), "control characters")


@pytest.mark.parametrize("bad, reason", [
    ("", "empty"),
    ("xmin", "system column"),
    ("ctid", "system column"),
    ("a\x01b", "control characters"),
])
def test_a_column_name_postgresql_would_not_store_names_why_and_the_function_to_use(bad, reason):
    with pytest.raises(ColumnNameError) as caught:
        check_column_name(bad)
    message = str(caught.value)
    assert _has_phrase(message, reason)
    # The function to name vendor columns with, by a path that imports.
    pointer = re.search(r"(?<!\w)(adpipes(?:\.\w+)+)", message)
    assert pointer is not None, message
    module, _, attribute = pointer.group(1).rpartition(".")
    assert getattr(importlib.import_module(module), attribute) is names.column_names


def test_a_markup_header_is_refused_naming_html_xml_markup():
    # docs/assets.md: a header that is "HTML/XML markup" is refused, "the refusal naming which of
    # these it is", spelled as the docs spell it.
    with pytest.raises(UnusableHeader) as caught:
        column_names(["<html><body>Service unavailable</body></html>"])
    message = str(caught.value)
    assert _has_phrase(message, "markup") and _has_phrase(message, "HTML") and _has_phrase(message, "XML"), message
