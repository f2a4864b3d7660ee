"""Filing pandera failure cases under rules and checks, and the QualityReport's bookkeeping."""

import pandas as pd
import pandera.pandas as pa
import pytest

from adpipes.lib.quality import (
    REQUIRED_COLUMNS,
    REQUIRED_VALUES,
    UNIQUE_KEYS,
    WARN,
    CheckGroup,
    QualityReport,
    check_groups,
    find_failures,
    header_failures,
    rule,
)

POSITIVE = CheckGroup("positive", "Amounts are positive.")
ORDER = CheckGroup("order", "a <= b.", WARN)


def schema() -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            "report_date": pa.Column("str"),
            "key": pa.Column("str", nullable=False),
            "a": pa.Column("Int64", rule(POSITIVE, pa.Check.gt(0), "a > 0"), nullable=True),
            "b": pa.Column("Int64", nullable=True, required=False),
        },
        checks=[rule(ORDER, pa.Check(lambda f: f["a"].isna() | f["b"].isna() | (f["a"] <= f["b"])),
                     "a <= b", columns=("a", "b"))],
        unique=["report_date", "key"],
    )


def frame(**columns) -> pd.DataFrame:
    base = {"report_date": ["d1", "d1", "d1"], "key": ["x", "y", "z"], "a": [1, 2, 3], "b": [5, 5, 5]}
    base.update(columns)
    return pd.DataFrame({
        "report_date": pd.Series(base["report_date"], dtype="str"),
        "key": pd.Series(base["key"], dtype="str"),
        "a": pd.Series(base["a"], dtype="Int64"),
        "b": pd.Series(base["b"], dtype="Int64"),
    })


def test_groups_come_from_the_schema_in_order():
    assert [g.name for g in check_groups(schema())] == [
        "required_columns", "required_values", "positive", "order", "unique_keys"
    ]


def test_each_failure_is_filed_under_its_rule_with_the_row_and_value():
    failures = find_failures(schema(), frame(a=[0, 7, None], key=["x", None, "x"]))
    found = sorted(
        (r.row, r.check_name, r.column_name, None if pd.isna(r.value) else r.value)
        for r in failures.itertuples()
    )
    assert found == [
        (0, "positive", "a", "0"),
        (0, "unique_keys", "key", "x"),
        (0, "unique_keys", "report_date", "d1"),
        (1, "order", "a", "7"),
        (1, "order", "b", "5"),
        (1, "required_values", "key", None),
        (2, "unique_keys", "key", "x"),
        (2, "unique_keys", "report_date", "d1"),
    ]


def test_missing_columns_and_wrong_types_are_structural():
    failures = find_failures(schema(), frame().drop(columns=["key"]).astype({"a": "float64"}))
    assert set(failures["check_name"]) == {REQUIRED_COLUMNS.name}
    assert failures["row"].isna().all()
    assert set(failures["column_name"]) == {"key", "a"}
    header = header_failures(schema(), ["key", "b"])
    assert header["column_name"].tolist() == ["a"]  # report_date is added by adpipes, not expected


def test_find_failures_needs_positions():
    with pytest.raises(ValueError, match="RangeIndex"):
        find_failures(schema(), frame().iloc[1:])


def test_report_keeps_valid_rows_and_quarantines_error_rows_only():
    report = QualityReport(check_groups(schema()), ["d1"], row_key=["key"])
    first = frame(a=[0, 7, 3])  # row 0 breaks an ERROR rule, row 1 only a WARN rule
    keep = report.check_rows([(schema(), first)], keys=first)
    assert keep.tolist() == [False, True, True]
    second = frame(key=["p", "q", "r"])
    assert report.check_rows([(schema(), second)], keys=second).all()
    assert report.rows["d1"].checked == 6 and report.rows["d1"].quarantined == 1
    quarantine = report.quarantine
    assert quarantine[["row", "row_key"]].values.tolist() == [[0, "key=x"]]
    assert "positive: a > 0 (a=0)" in quarantine["reasons"][0]
    assert '"a":0' in quarantine["row_values"][0]
    # Rows are numbered across blocks: the third block starts at 6.
    third = frame(a=[1, 1, -1], key=["s", "t", "u"])
    report.check_rows([(schema(), third)], keys=third)
    assert report.quarantine["row"].tolist() == [0, 8]


def test_a_rule_of_a_group_the_asset_does_not_report_is_refused():
    report = QualityReport([REQUIRED_COLUMNS, REQUIRED_VALUES, UNIQUE_KEYS], ["d1"])
    bad = frame(a=[0, 1, 1])
    with pytest.raises(ValueError, match="positive"):
        report.check_rows([(schema(), bad)], keys=bad)
