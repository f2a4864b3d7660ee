"""Check results per day as docs/checks.md describes them: the quarantine share that makes an ERROR
check block (at or below ADPIPES_MAX_QUARANTINED_SHARE it fails with severity WARN), the failure
message naming the asset, the partitions and the rows, the SQL that lists a check's failures, the
unknown_columns and archived_rows results and the failed check's `sample`."""

import re

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import psycopg

from adpipes.lib.quality import (
    ARCHIVED_ROWS,
    REQUIRED_COLUMNS,
    UNKNOWN_COLUMNS,
    CheckGroup,
    QualityReport,
    QualityStore,
    check_groups,
    header_failures,
    rule,
)
from adpipes.lib.quality.checks import (
    _archived_rows_results,
    _blocking_message,
    _check_results,
    _rule_results,
    _unknown_columns_results,
    _Verdict,
)
from adpipes.lib.storage.postgres import PostgresDatabase
from adpipes_tests.lib.quality.test_sample import markdown_rows

ERROR_ASSET = dg.AssetKey(["results_test", "amounts"])
POSITIVE = CheckGroup("positive_amounts", "Amounts are positive.")
SHORT = CheckGroup("short_names", "Names are short.")
SCHEMA = pa.DataFrameSchema({
    "report_date": pa.Column("str"),
    "name": pa.Column("str", rule(SHORT, pa.Check.str_length(max_value=5), "name has at most 5 characters"),
                      nullable=False),
    "amount": pa.Column("Int64", rule(POSITIVE, pa.Check.gt(0), "amount > 0"), nullable=True),
})
ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN


def offline_store(**policy) -> QualityStore:
    return QualityStore(archive=PostgresDatabase(role="archive", dsn=None), **policy)


def day_rows(day: str, rows: int, bad: int, *, long_names: int = 0) -> pd.DataFrame:
    """``rows`` rows of ``day``, the first ``bad`` with amount -1 and the last ``long_names``
    with a name longer than 5 characters."""
    return pd.DataFrame({
        "report_date": pd.Series([day] * rows, dtype="str"),
        "name": pd.Series([f"n{i}" if i < rows - long_names else f"long-name-{i}" for i in range(rows)],
                          dtype="str"),
        "amount": pd.Series([-1 if i < bad else 1 for i in range(rows)], dtype="Int64"),
    })


def validated(days: dict[str, tuple[int, int]], *, row_key=("name",), extra=()) -> QualityReport:
    report = QualityReport(check_groups(SCHEMA, extra=extra), list(days), row_key=list(row_key))
    frame = pd.concat([day_rows(d, rows, bad) for d, (rows, bad) in days.items() if rows],
                      ignore_index=True)
    report.check_rows([(SCHEMA, frame)], keys=frame[["report_date", *row_key]])
    return report


def test_a_quarantine_at_or_below_the_allowed_share_fails_as_warn_above_it_as_error():
    # docs/checks.md, Blocking: above ADPIPES_MAX_QUARANTINED_SHARE of any partition the ERROR check
    # blocks; at or below it the check still fails, with severity WARN. 2 of 10 is exactly 0.2.
    report = validated({"2026-05-01": (10, 2), "2026-05-02": (10, 3), "2026-05-03": (10, 1), "2026-05-04": (0, 0)})
    results = _rule_results(POSITIVE, ERROR_ASSET, _Verdict(report, offline_store(max_quarantined_share=0.2)))
    at, above, below, empty = (results[d] for d in ("2026-05-01", "2026-05-02", "2026-05-03", "2026-05-04"))
    for result, failing in ((at, 2), (above, 3), (below, 1)):
        assert not result.passed and result.metadata["failing_rows"].value == failing
        assert result.metadata["checked_rows"].value == 10
    assert (at.severity, above.severity, below.severity) == (WARN, ERROR, WARN)
    # A day without rows has nothing to quarantine: it passes.
    assert empty.passed and empty.metadata["checked_rows"].value == 0


def test_the_blocking_message_names_the_asset_the_rows_and_each_partition_over_the_share(
        storage_resources, clean_databases):
    _, archive_dsn = clean_databases
    days = {"2026-05-01": (10, 2), "2026-05-02": (10, 5), "2026-05-03": (10, 0)}
    report = validated(days)
    store = QualityStore(archive=storage_resources["quality"].archive, max_quarantined_share=0.3)
    verdict = _Verdict(report, store)
    results, _ = _check_results(ERROR_ASSET, report, store, verdict)
    message = _blocking_message(ERROR_ASSET, report, verdict, results)
    assert message is not None and "results_test/amounts" in message
    # 7 of the 30 rows checked were quarantined; only 2026-05-02 (5 of 10, a share of 50%) is over 0.3.
    assert re.search(r"\b7 of 30 rows\b", message), message
    assert "2026-05-02" in message and re.search(r"\b50(\.0+)?\s?%", message), message
    assert POSITIVE.name in message
    # The quarantine query it gives lists the quarantined rows of the run's partitions.
    store.record("run-1", ERROR_ASSET, report)
    query = re.search(r"SELECT .*? WHERE .*?(?= in the archive database)", message).group(0)
    with psycopg.connect(archive_dsn) as conn:
        listed = conn.execute(query).fetchall()
    assert len(listed) == 7


def test_a_check_lists_only_its_own_failures_in_its_full_list(storage_resources, clean_databases):
    _, archive_dsn = clean_databases
    day = "2026-05-10"
    report = QualityReport(check_groups(SCHEMA), [day], row_key=["name"])
    # 6 rows: 2 with a negative amount, 3 with a long name (one of them both).
    frame = day_rows(day, 6, 2, long_names=3)
    frame.loc[0, "name"] = "long-name-first"
    report.check_rows([(SCHEMA, frame)], keys=frame[["report_date", "name"]])
    store = storage_resources["quality"]
    store.record("run-1", ERROR_ASSET, report)
    verdict = _Verdict(report, store)
    positive = _rule_results(POSITIVE, ERROR_ASSET, verdict)[day]
    short = _rule_results(SHORT, ERROR_ASSET, verdict)[day]
    assert positive.metadata["failing_rows"].value == 2 and short.metadata["failing_rows"].value == 4
    with psycopg.connect(archive_dsn) as conn:
        for result, name, failing in ((positive, POSITIVE.name, 2), (short, SHORT.name, 4)):
            listed = conn.execute(result.metadata["full_list"].value.split("--")[0]).fetchall()
            assert len(listed) == failing
            assert {r[2] for r in listed} == {name}  # check_name


def test_unknown_columns_are_judged_per_day_apart_from_the_other_checks():
    """docs/checks.md: unknown_columns (WARN) fails on a day the vendor sent columns adpipes does
    not know, naming them; a failure of another check is no unknown column."""
    strict = pa.DataFrameSchema({
        "report_date": pa.Column("str"),
        "a": pa.Column("Int64", rule(POSITIVE, pa.Check.gt(0), "a > 0"), nullable=True),
    }, strict=True)
    days = ["2026-06-01", "2026-06-02", "2026-06-03"]
    report = QualityReport(check_groups(strict, extra=[UNKNOWN_COLUMNS]), days)
    # 2026-06-01: only a row breaking a > 0; 2026-06-02: columns named by the reader;
    # 2026-06-03: a column the strict schema does not know, found by validation.
    first = pd.DataFrame({"report_date": pd.Series(["2026-06-01"] * 2, dtype="str"),
                          "a": pd.Series([-1, 1], dtype="Int64")})
    report.check_rows([(strict, first)], keys=first)
    report.add_unknown_columns("2026-06-02", ["zeta_col", "alpha_col"])
    third = first.assign(report_date="2026-06-03", surprise=pd.Series(["x", "y"], dtype="str"))
    report.check_rows([(strict, third)], keys=third)
    results = _unknown_columns_results(report, _Verdict(report, offline_store()))
    assert set(results) == set(days)
    clean, named, found = (results[d] for d in days)
    assert clean.passed and clean.metadata["unknown_column_count"].value == 0
    assert not named.passed and named.severity == WARN
    assert set(re.findall(r"\w+", named.description)) >= {"alpha_col", "zeta_col"}
    assert not found.passed and found.severity == WARN and found.description.startswith("2026-06-03")
    assert found.metadata["unknown_column_count"].value == 1
    assert all(isinstance(n, str) for n in found.metadata["unknown_columns"].value)


def test_each_archived_rows_result_starts_with_its_day_and_carries_the_allowed_drop():
    days = ["2026-11-19", "2026-11-22"]
    report = QualityReport([ARCHIVED_ROWS], days)
    report.add_archive_comparison("2026-11-22", 1000, 10, refused=False, max_row_drop=0.1, replaced=True)
    results = _archived_rows_results(dg.AssetKey(["appsflyer", "ios_installs"]),
                                     report, offline_store(max_row_drop=0.1))
    never, on_purpose = results["2026-11-19"], results["2026-11-22"]
    assert on_purpose.passed and on_purpose.description.startswith("2026-11-22")
    assert "replace_archived" in on_purpose.description
    # ADPIPES_MAX_ROW_DROP, the figure every day's result is judged by, on a day never archived too.
    assert never.passed and never.metadata["max_row_drop"].value == 0.1


def test_the_sample_of_a_structural_failure_names_the_partition_the_rule_and_at_most_20_problems():
    needed = [f"column_{i:02d}" for i in range(25)]
    schema = pa.DataFrameSchema({"report_date": pa.Column("str"), **{c: pa.Column("str") for c in needed}})
    report = QualityReport([REQUIRED_COLUMNS], ["2026-07-01"])
    report.add_structural(header_failures(schema, ["other"]), "2026-07-01")
    result = _rule_results(REQUIRED_COLUMNS, ERROR_ASSET, _Verdict(report, offline_store()))["2026-07-01"]
    assert not result.passed
    header, rows = markdown_rows(result.metadata["sample"].value)
    assert "partition" in header and "rule" in header
    assert 0 < len(rows) <= 20
    assert all(r[header.index("partition")] == "2026-07-01" for r in rows)
    assert all(any(c in cell for cell in r for c in needed) for r in rows)


def test_the_sample_shows_failing_rows_of_a_table_without_a_row_key_and_an_empty_value():
    report = QualityReport(check_groups(SCHEMA), ["2026-07-02"], row_key=[])
    frame = day_rows("2026-07-02", 4, 1)
    frame["name"] = pd.Series(["a", None, "c", "d"], dtype="str")  # row 1: required_values
    report.check_rows([(SCHEMA, frame)], keys=frame[["report_date"]])
    verdict = _Verdict(report, offline_store())
    for group, failing in ((POSITIVE, "0"), (check_groups(SCHEMA)[1], "1")):
        result = _rule_results(group, ERROR_ASSET, verdict)["2026-07-02"]
        header, rows = markdown_rows(result.metadata["sample"].value)
        assert "row" in header and "values" in header, header
        assert [r[header.index("row")] for r in rows] == [failing]
        (values,) = (r[header.index("values")] for r in rows)
        assert values.startswith("amount=" if group is POSITIVE else "name=")
