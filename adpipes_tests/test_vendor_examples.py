"""The vendor examples the tests use are exactly what the vendors' documents print.

Every fixture in ``fixtures/vendor_examples`` must equal a JSON value printed in its document in
``../shared/vendor-docs``; the error messages and value formats the tests quote must appear there
as written. The clients' and the sandbox's own tests then hold them to these examples.
"""

import json

import pytest

from adpipes_tests.fixtures.vendor_examples import (
    EXAMPLES,
    EXAMPLES_DIR,
    PULL_API_ERROR_MESSAGES,
    PULL_API_NOTES,
    S2S,
    S2S_EVENT_VALUE,
    S2S_INVALID_REVENUES,
    S2S_VALID_REVENUES,
    VENDOR_DOCS,
    conforms,
    document_text,
    documented_json_values,
)



@pytest.fixture(autouse=True)
def vendor_documents():
    # Not a skip: without the documents nothing ties the fixtures to the vendor, and CI always
    # has ../shared beside the checkout.
    if not VENDOR_DOCS.is_dir():
        pytest.fail(f"the vendor documents are not at {VENDOR_DOCS}: check out the project with "
                    "../shared beside it (as CI does)")


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_fixture_is_printed_in_its_document(name):
    example = EXAMPLES[name]
    assert example.load() in documented_json_values(document_text(example.document)), (
        f"{example.path.name} is not what {example.document} prints ({example.what})"
    )


def test_every_fixture_file_is_listed():
    assert sorted(p.stem for p in EXAMPLES_DIR.glob("*.json")) == sorted(EXAMPLES)


def test_pull_api_error_messages_and_s2s_formats_are_quoted_as_printed():
    notes = document_text(PULL_API_NOTES)
    for status, message in PULL_API_ERROR_MESSAGES.values():
        assert f"{status} `{message}`" in notes
    s2s = document_text(S2S)
    assert json.dumps(S2S_EVENT_VALUE) in s2s
    assert all(value in s2s for value in S2S_VALID_REVENUES + S2S_INVALID_REVENUES)


def test_shapes_are_compared_key_by_key_and_kind_by_kind():
    documented = {"data": {"rows": [{"value": 1, "isMasked": False}], "hasNext": False}}
    assert conforms({"data": {"rows": [], "hasNext": True}}, documented) == []
    assert conforms({"data": {"rows": [{"value": 2.5, "isMasked": True}], "hasNext": False}}, documented) == []
    assert conforms({"data": {"rows": [{"value": None, "isMasked": True}], "hasNext": False}}, documented) == [
        "$.data.rows[0].value: null None where the document has a number"
    ]
    assert conforms({"data": {"rows": [], "hasNext": "no", "extra": 1}}, documented) == [
        "$.data: keys ['extra'] are not in the document",
        "$.data.hasNext: string 'no' where the document has a boolean",
    ]
