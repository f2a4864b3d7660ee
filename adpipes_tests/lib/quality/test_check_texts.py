"""What the Dagster UI shows of a check, as docs/checks.md and docs/archive-safety.md state it: the
check's description (what it means, its severity, its rules) and its `adpipes/severity` metadata;
a failed check's `sample` (row-number order, `column=null` for an empty value, several rules of one
row on one line separated by `; `, partition/rule/column for a report-level failure); the
unknown_columns description of a failing day and the archived_rows description of a day replaced
on purpose."""

import re

import dagster as dg
import pandas as pd
import pandera.pandas as pa

from adpipes.lib.quality import (
    ARCHIVED_ROWS,
    REQUIRED_COLUMNS,
    ROW_VOLUME,
    UNKNOWN_COLUMNS,
    CheckGroup,
    QualityReport,
    check_groups,
    header_failures,
    quality_check_specs,
    rule,
)
from adpipes.lib.quality.checks import (
    _archived_rows_results,
    _rule_results,
    _unknown_columns_results,
    _Verdict,
)
from adpipes_tests.lib.quality.test_check_results import ERROR_ASSET, SCHEMA, day_rows, offline_store
from adpipes_tests.lib.quality.test_sample import markdown_rows

SANE = CheckGroup("text_sane_amounts", "Amounts are sane.")
SANE_SCHEMA = pa.DataFrameSchema({
    "report_date": pa.Column("str"),
    "name": pa.Column("str", nullable=False),
    "amount": pa.Column("Int64", rule(SANE, pa.Check.gt(0), "amount > 0"), nullable=True),
    "refund": pa.Column("Int64", rule(SANE, pa.Check.le(100), "refund <= 100"), nullable=True),
})
DAY = "2026-07-03"


def test_each_check_reads_its_meaning_its_severity_and_its_rules_and_carries_its_severity():
    """docs/checks.md: the description is what the check means, `Severity ERROR (blocks downstream
    assets).` or `Severity WARN (warns only, never blocks).`, then `Rules:` and one `- ` item per
    rule, separated by blank lines; the check carries its severity as `adpipes/severity`."""
    groups = check_groups(SANE_SCHEMA, extra=[ROW_VOLUME])
    specs = {s.name: s for s in quality_check_specs(dg.AssetKey(["text_test", "t"]), groups, [SANE_SCHEMA])}
    assert specs["text_sane_amounts"].description == "\n".join([
        "Amounts are sane.", "", "Severity ERROR (blocks downstream assets).", "",
        "Rules:", "- amount > 0", "- refund <= 100",
    ])
    # A check without rules of its own (row_volume is judged on the row counts) has no list.
    assert specs["row_volume"].description == "\n".join([
        ROW_VOLUME.description, "", "Severity WARN (warns only, never blocks).",
    ])
    assert specs["text_sane_amounts"].metadata["adpipes/severity"] == "ERROR"
    assert specs["row_volume"].metadata["adpipes/severity"] == "WARN"
    assert specs["required_values"].metadata["adpipes/severity"] == "ERROR"


def sane_sample() -> tuple[list[str], list[list[str]]]:
    # Row 1 breaks refund <= 100, row 3 amount > 0, row 4 both: the failures of amount > 0 come
    # first in the report, so rows met in that order would read 3, 4, 1.
    frame = pd.DataFrame({
        "report_date": pd.Series([DAY] * 5, dtype="str"),
        "name": pd.Series(list("abcde"), dtype="str"),
        "amount": pd.Series([1, 1, 1, -1, -2], dtype="Int64"),
        "refund": pd.Series([1, 500, 1, 1, 700], dtype="Int64"),
    })
    report = QualityReport(check_groups(SANE_SCHEMA), [DAY], row_key=["name"])
    report.check_rows([(SANE_SCHEMA, frame)], keys=frame[["report_date", "name"]])
    result = _rule_results(SANE, ERROR_ASSET, _Verdict(report, offline_store()))[DAY]
    assert not result.passed and result.metadata["failing_rows"].value == 3
    return markdown_rows(result.metadata["sample"].value)


def test_the_sample_lists_failing_rows_in_row_number_order():
    header, rows = sane_sample()
    assert [r[header.index("row")] for r in rows] == ["1", "3", "4"]
    assert [r[header.index("row_key")] for r in rows] == ["name=b", "name=d", "name=e"]


def test_a_row_breaking_several_rules_shows_them_on_one_line_separated_by_semicolons():
    header, rows = sane_sample()
    (both,) = (r for r in rows if r[header.index("row")] == "4")
    assert both[header.index("rule")] == "amount > 0; refund <= 100"
    assert both[header.index("values")] == "amount=-2; refund=700"


def test_an_empty_value_shows_as_null_in_the_sample():
    report = QualityReport(check_groups(SCHEMA), ["2026-07-02"], row_key=[])
    frame = day_rows("2026-07-02", 3, 0)
    frame["name"] = pd.Series(["a", None, "c"], dtype="str")  # row 1 breaks `name is not empty`
    report.check_rows([(SCHEMA, frame)], keys=frame[["report_date"]])
    required_values = next(g for g in check_groups(SCHEMA) if g.name == "required_values")
    result = _rule_results(required_values, ERROR_ASSET, _Verdict(report, offline_store()))["2026-07-02"]
    header, rows = markdown_rows(result.metadata["sample"].value)
    assert [(r[header.index("row")], r[header.index("values")]) for r in rows] == [("1", "name=null")]


def test_the_sample_of_a_report_level_failure_lists_partition_rule_and_column():
    schema = pa.DataFrameSchema({"report_date": pa.Column("str"), "needed": pa.Column("str")})
    report = QualityReport([REQUIRED_COLUMNS], ["2026-07-01"])
    report.add_structural(header_failures(schema, ["report_date", "other"]), "2026-07-01")
    result = _rule_results(REQUIRED_COLUMNS, ERROR_ASSET, _Verdict(report, offline_store()))["2026-07-01"]
    header, rows = markdown_rows(result.metadata["sample"].value)
    assert header == ["partition", "rule", "column"]
    assert rows and all(r[0] == "2026-07-01" for r in rows)
    assert "needed" in {r[2] for r in rows}


def test_a_failing_unknown_columns_day_names_them_says_they_are_kept_and_to_add_them_to_the_schema():
    """docs/checks.md: the description names the columns, says they are kept and ends with `add
    them to the schema once their meaning is known.`"""
    report = QualityReport([UNKNOWN_COLUMNS], ["2026-06-02"])
    report.add_unknown_columns("2026-06-02", ["zeta_col", "alpha_col"])
    result = _unknown_columns_results(report, _Verdict(report, offline_store()))["2026-06-02"]
    assert not result.passed
    assert {"alpha_col", "zeta_col"} <= set(re.findall(r"\w+", result.description))
    assert re.search(r"\. They are kept\b", result.description), result.description
    assert result.description.endswith("; add them to the schema once their meaning is known.")


def test_an_archived_day_replaced_on_purpose_says_so_at_the_end_of_its_description():
    """docs/archive-safety.md: the check passes and names the days replaced on purpose; the day's
    description ends with `Replaced on purpose (replace_archived).`"""
    report = QualityReport([ARCHIVED_ROWS], ["2026-11-22", "2026-11-23"])
    report.add_archive_comparison("2026-11-22", 1000, 10, refused=False, max_row_drop=0.1, replaced=True)
    report.add_archive_comparison("2026-11-23", 1000, 1000, refused=False, max_row_drop=0.1)
    results = _archived_rows_results(dg.AssetKey(["appsflyer", "ios_installs"]),
                                     report, offline_store(max_row_drop=0.1))
    replaced, kept = results["2026-11-22"], results["2026-11-23"]
    assert replaced.passed and replaced.description.endswith(". Replaced on purpose (replace_archived).")
    assert kept.passed and "replace" not in kept.description.lower()
