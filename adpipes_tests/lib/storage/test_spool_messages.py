"""What the refusal of a too small TMPDIR tells the operator to do (docs/operations.md).

It names TMPDIR as the variable is spelled (environment variable names are case-sensitive: a
``tmpdir`` is another variable) and the ways out: free space there, point TMPDIR at a larger disk,
or materialize fewer days at once.
"""

import re
import shutil

import pytest

from adpipes.lib.storage.delivered import SpoolSpaceError, require_spool_space


def _has_phrase(text: str, phrase: str) -> bool:
    """``phrase`` as whole words of ``text`` (any case), not run into the text around it."""
    return re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text, re.IGNORECASE) is not None


def test_too_little_space_names_tmpdir_as_spelled_and_what_to_do(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(SpoolSpaceError) as caught:
        require_spool_space(free + 10**9, "appsflyer/android_in_app_events 2026-11-01..2026-11-30", root=tmp_path)
    message = str(caught.value)
    mentions = re.findall(r"tmpdir", message, re.IGNORECASE)
    assert mentions and all(mention == "TMPDIR" for mention in mentions), message
    assert _has_phrase(message, "free space"), message
    assert _has_phrase(message, "point TMPDIR at a larger disk"), message
    assert _has_phrase(message, "materialize fewer days"), message
    # docs/operations.md gives the ways out in these words; TMPDIR is an upper-case variable and
    # the advice around it a sentence, not a shout.
    for words in ("point TMPDIR at a larger disk", "materialize fewer days at once"):
        assert re.search(r"(?<!\w)" + re.escape(words) + r"(?!\w)", message), (words, message)
