"""How a pandera failure is filed (docs/checks.md): under the check and rule it breaks, per row
for a value, once per column and day for the report's shape (a missing column, a wrong type: the
day is refused, nothing of it written); a rule a failure is filed under is one its check lists."""

import re

import dagster as dg
import pandas as pd
import pandera.pandas as pa

from adpipes.lib.quality import (
    REQUIRED_COLUMNS,
    REQUIRED_VALUES,
    UNIQUE_KEYS,
    UNKNOWN_COLUMNS,
    CheckGroup,
    QualityReport,
    check_groups,
    find_failures,
    quality_check_specs,
    rule,
)

POSITIVE = CheckGroup("positive", "Amounts are positive.")
ASSET = dg.AssetKey(["filing_test", "t"])


def listed_rules(groups, schemas) -> dict[str, list[str]]:
    """Check name -> the rules its description lists (the "- " items), as the UI shows them."""
    specs = quality_check_specs(ASSET, groups, schemas)
    return {s.name: [line[2:] for line in s.description.splitlines() if line.startswith("- ")] for s in specs}


def day_frame(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"report_date": pd.Series(["d1"] * n, dtype="str"), **columns})


def test_a_wrong_type_is_one_structural_problem_per_column_that_names_the_column_and_its_type():
    schema = pa.DataFrameSchema({
        "report_date": pa.Column("str"),
        "n": pa.Column("Int64", coerce=True, nullable=True),
        "m": pa.Column("Int64", nullable=True),
    })
    # n cannot be read as a number in two rows; m arrives as text instead of a number.
    frame = day_frame(n=pd.Series(["1", "zz", "yy"], dtype="str"), m=pd.Series(["1", "2", "3"], dtype="str"))
    failures = find_failures(schema, frame)
    assert set(failures["check_name"]) == {REQUIRED_COLUMNS.name}
    assert failures["row"].isna().all()  # the report's shape, not a row
    assert set(failures["column_name"]) == {"n", "m"}
    # One problem per (rule, column), however many rows hold an unreadable value.
    assert not failures.duplicated(["check_name", "rule", "column_name"]).any()
    for case in failures.itertuples():
        assert isinstance(case.rule, str) and case.column_name in case.rule
        assert re.search(r"\btype\b", case.rule), case.rule  # says the type is what is wrong
    # The day is refused whole: no row is quarantined, nothing of it may be written.
    report = QualityReport(check_groups(schema), ["d1"])
    keep = report.check_rows([(schema, frame)], keys=frame)
    assert report.refused_partitions() == ["d1"]
    assert len(report.quarantine) == 0 and report.rows["d1"].quarantined == 0
    assert keep.all()


def test_a_missing_column_has_no_value():
    schema = pa.DataFrameSchema({"report_date": pa.Column("str"), "key": pa.Column("str"), "a": pa.Column("str")})
    failures = find_failures(schema, day_frame(a=pd.Series(["x", "y"], dtype="str")))
    (case,) = failures.itertuples()
    assert (case.check_name, case.column_name) == (REQUIRED_COLUMNS.name, "key")
    assert pd.isna(case.row)
    assert pd.isna(case.value)  # no cell of it was delivered


def test_a_column_beyond_a_strict_schema_is_filed_under_unknown_columns():
    schema = pa.DataFrameSchema({"report_date": pa.Column("str"), "a": pa.Column("str")}, strict=True)
    frame = day_frame(a=pd.Series(["x"], dtype="str"), surprise=pd.Series(["y"], dtype="str"))
    failures = find_failures(schema, frame)
    (case,) = failures.itertuples()
    assert case.check_name == UNKNOWN_COLUMNS.name
    assert isinstance(case.rule, str) and case.rule
    assert "surprise" in {case.column_name, case.value}


def test_a_report_in_another_column_order_fails_required_columns_and_is_refused():
    """A shape check pandera runs beyond presence and type (here: column order) is the report's
    shape too: required_columns, and the day is refused."""
    schema = pa.DataFrameSchema({"report_date": pa.Column("str"), "a": pa.Column("str"), "b": pa.Column("str")},
                                ordered=True)
    frame = pd.DataFrame({"report_date": pd.Series(["d1"], dtype="str"), "b": pd.Series(["x"], dtype="str"),
                          "a": pd.Series(["y"], dtype="str")})
    failures = find_failures(schema, frame)
    assert len(failures) and set(failures["check_name"]) == {REQUIRED_COLUMNS.name}
    assert failures["row"].isna().all()
    assert all(isinstance(r, str) and r for r in failures["rule"])
    report = QualityReport(check_groups(schema), ["d1"])
    report.check_rows([(schema, frame)], keys=frame)
    assert report.refused_partitions() == ["d1"]


def test_a_rule_that_cannot_run_on_the_delivered_values_refuses_the_day_instead_of_failing_validation():
    schema = pa.DataFrameSchema({
        "report_date": pa.Column("str"),
        # Reads text; a number column makes it raise instead of answering.
        "a": pa.Column("Int64", rule(POSITIVE, pa.Check(lambda s: s.str.len() > 0), "a is not blank"),
                       nullable=True),
    })
    frame = day_frame(a=pd.Series([1, 2], dtype="Int64"))
    report = QualityReport(check_groups(schema), ["d1"])
    keep = report.check_rows([(schema, frame)], keys=frame)
    assert report.refused_partitions() == ["d1"]
    assert keep.all() and len(report.quarantine) == 0


def test_each_row_is_filed_only_under_the_rules_it_breaks():
    schema = pa.DataFrameSchema({
        "report_date": pa.Column("str"),
        "a": pa.Column("Int64", rule(POSITIVE, pa.Check.gt(0), "a > 0"), nullable=False),
    })
    failures = find_failures(schema, day_frame(a=pd.Series([0, None, 3], dtype="Int64")))
    assert sorted(zip(failures["row"], failures["check_name"])) == [(0, POSITIVE.name), (1, REQUIRED_VALUES.name)]


def test_a_failure_is_filed_under_a_rule_its_check_lists():
    schema = pa.DataFrameSchema({
        "report_date": pa.Column("str"),
        "key": pa.Column("str", nullable=False),
        "a": pa.Column("Int64", rule(POSITIVE, pa.Check.gt(0), "a > 0"), nullable=True),
    }, unique=["report_date", "key"])
    groups = check_groups(schema)
    listed = listed_rules(groups, [schema])
    frame = day_frame(key=pd.Series(["x", "x", None], dtype="str"), a=pd.Series([0, 1, 2], dtype="Int64"))
    failures = find_failures(schema, frame)
    assert set(failures["check_name"]) == {POSITIVE.name, UNIQUE_KEYS.name, REQUIRED_VALUES.name}
    for case in failures.itertuples():
        assert case.rule in listed[case.check_name], (case.check_name, case.rule, listed[case.check_name])
    # Both key columns are named in the unique_keys rule, each on its own.
    (unique_rule,) = listed[UNIQUE_KEYS.name]
    assert {"report_date", "key"} <= set(re.findall(r"\w+", unique_rule))


def test_a_column_that_must_be_unique_names_itself_in_the_rule():
    schema = pa.DataFrameSchema({"report_date": pa.Column("str"), "key": pa.Column("str", unique=True)})
    failures = find_failures(schema, day_frame(key=pd.Series(["x", "x"], dtype="str")))
    assert set(failures["check_name"]) == {UNIQUE_KEYS.name} and sorted(failures["row"]) == [0, 1]
    assert all("key" in re.findall(r"\w+", r) for r in failures["rule"])


def test_required_columns_lists_the_columns_a_daily_report_needs():
    """docs/checks.md: the daily report needs `Date, Media Source (pid), Installs`."""
    from adpipes.appsflyer.schemas import daily_report_delivered_schema, raw_report_schema

    listed = listed_rules([REQUIRED_COLUMNS], [daily_report_delivered_schema()])[REQUIRED_COLUMNS.name]
    assert any("Date, Media Source (pid), Installs" in r for r in listed), listed
    # The raw report's: every documented column, each named on its own in a comma-separated list.
    (raw,) = listed_rules([REQUIRED_COLUMNS], [raw_report_schema()])[REQUIRED_COLUMNS.name]
    named = set(re.split(r",\s*", raw.rsplit(":", 1)[-1].strip()))
    assert {"appsflyer_id", "event_time", "install_time", "event_name", "platform", "media_source"} <= named
