"""Column names made from vendor headers (docs/assets.md, "Raw report tables") against survivors
of the first mutation run over adpipes/lib/storage/names.py. Each test is new, so mutmut maps it
to the functions it calls (docs/development.md, "Mutation testing")."""

from __future__ import annotations

import re

import pytest

from adpipes.lib.storage.names import column_names

SNAKE_CASE = re.compile(r"[a-z0-9]+(_[a-z0-9]+)*")


# A limit far above what four names take, so a name search that never ends fails here (and
# inside mutmut) instead of waiting for the suite-wide limit.
@pytest.mark.timeout(60)
def test_a_header_whose_plain_and_numbered_names_are_all_taken_gets_a_free_snake_case_name():
    # docs/assets.md: every vendor column is kept, under a snake_case name (`Media Source` ->
    # `media_source`); the names of one delivery are its columns, so no two are the same. Here the
    # second "A" finds `a` and the numbered names `a_0`, `a_1`, `a_2` already taken by other headers.
    headers = ["A 1", "A 0", "A 2", "A", "A"]
    names = column_names(headers)
    assert names[:4] == ["a_1", "a_0", "a_2", "a"]
    assert len(set(names)) == len(headers)
    assert all(SNAKE_CASE.fullmatch(name) for name in names), names
    assert names[4].startswith("a_")


def test_headers_that_make_the_same_name_get_the_next_free_numbers_in_header_order():
    # docs/assets.md, "Raw report tables": the later ones get the next free numbered name.
    assert column_names(["Event Time", "event_time", "EVENT TIME"]) == ["event_time", "event_time_2", "event_time_3"]
    assert column_names(["A", "A 2", "A"]) == ["a", "a_2", "a_3"]
