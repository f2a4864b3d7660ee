"""The row key a failure is filed under (docs/checks.md: the sample's and quality.failures' row_key)
names each key column of the table with the failing row's value."""

import pandas as pd
import pandera.pandas as pa

from adpipes.lib.quality import CheckGroup, QualityReport, check_groups, rule

POSITIVE = CheckGroup("positive", "Amounts are positive.")
SCHEMA = pa.DataFrameSchema({
    "report_date": pa.Column("str"),
    "app": pa.Column("str", nullable=True),
    "key": pa.Column("str", nullable=True),
    "amount": pa.Column("Int64", rule(POSITIVE, pa.Check.gt(0), "amount > 0"), nullable=True),
})


def failing_row_keys(row_key: list[str]) -> dict[int, object]:
    frame = pd.DataFrame({
        "report_date": ["d1"] * 4,
        "app": pd.Series(["a1", "a2", None, "a3"], dtype="str"),
        "key": pd.Series(["x1", "x2", "x3", "x4"], dtype="str"),
        "amount": pd.Series([1, -2, -3, 4], dtype="Int64"),
    })
    report = QualityReport(check_groups(SCHEMA), ["d1"], row_key=row_key)
    report.check_rows([(SCHEMA, frame)], keys=frame[list(dict.fromkeys(["report_date", *row_key]))])
    failures = report.failures
    return dict(zip(failures["row"].astype(int), failures["row_key"]))


def parse(row_key: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in row_key.split(", "))


def test_a_failure_names_every_key_column_with_its_value():
    keys = failing_row_keys(["app", "key"])
    assert set(keys) == {1, 2}
    assert parse(keys[1]) == {"app": "a2", "key": "x2"}
    # An empty key value is shown empty, not as a placeholder.
    assert parse(keys[2]) == {"app": "", "key": "x3"}
    assert keys[1].startswith("app=") and keys[1].count(", ") == 1
    # Three key columns: all three.
    assert parse(failing_row_keys(["report_date", "app", "key"])[1]) == {"report_date": "d1", "app": "a2", "key": "x2"}


def test_a_table_without_a_row_key_files_failures_without_one():
    keys = failing_row_keys([])
    assert set(keys) == {1, 2} and all(pd.isna(k) for k in keys.values())
