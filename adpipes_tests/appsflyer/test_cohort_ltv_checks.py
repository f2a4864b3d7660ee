"""The checks of appsflyer/cohort_ltv through the asset: the sandbox's Cohort API over real HTTP
answers with a value that breaks a rule, and what lands in product, archive and quality.quarantine
is what docs/checks.md promises:

- ``non_negative`` (ERROR): a negative count is quarantined, the other rows written;
- ``unique_keys`` (ERROR): two rows sharing the table's key are quarantined, both of them;
- ``cumulative_growth`` (WARN): a cumulative function lower than at the previous period is
  written and reported.

The bad values come from the sandbox's ``extra_keys`` (added to every record of the answer).
Expected counts come from the sandbox's own answer to the body the asset sent, without the
change, and the rules of docs/checks.md, never from adpipes' parser or schema."""

import dagster as dg

from adpipes.appsflyer.cohort import cohort_ltv
from adpipes.dev.sandbox.appsflyer_cohort import cohort_records, configure_cohort
from adpipes_tests.appsflyer.test_cohort_ltv import NODE, cohort_calls, days_ago, make_resources, query, today

ASSET = "appsflyer/cohort_ltv"


def undisturbed_records(sandbox) -> list[tuple[str, dict]]:
    """(app_id, record) of what the sandbox serves for the logged bodies, as the documents have it."""
    return [(call["app_id"], record) for call in cohort_calls(sandbox)
            for record in cohort_records(call["app_id"], call["body"], today())]


def checks_by_name(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_negative_count_is_quarantined_and_the_other_rows_written(clean_sandbox, storage_resources,
                                                                   clean_databases):
    """checks.md: non_negative (ERROR) fails when a count is negative; the row is quarantined,
    the valid rows of the partition are written, and with the default
    ADPIPES_MAX_QUARANTINED_SHARE (0) the run fails."""
    product_dsn, archive_dsn = clean_databases
    day = days_ago(2)  # complete periods 0 and 1
    # Every cohort's revenue count on day 0 comes back as -1; day 1 stays as served.
    configure_cohort(clean_sandbox, extra_keys={"revenue_count_day_0": -1})
    result = dg.materialize([cohort_ltv], resources=make_resources(clean_sandbox, storage_resources),
                            partition_key=day, raise_on_error=False)
    assert not result.success
    served = undisturbed_records(clean_sandbox)
    cohorts = len(served)
    assert cohorts > 0
    message = str(result.failure_data_for_node(NODE).error)
    assert ASSET in message and "quality.quarantine" in message

    check = checks_by_name(result)["non_negative"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["failing_rows"].value == cohorts
    assert check.metadata["quarantined_rows"].value == cohorts
    # The valid rows (day 1 of every cohort) are in product; no day-0 row is.
    assert query(product_dsn, "SELECT period, count(*) FROM appsflyer.cohort_ltv GROUP BY 1") == [(1, cohorts)]
    quarantined = query(archive_dsn, "SELECT report_date::text, row_values->>'period', row_values->>'count', reasons "
                                     f"FROM quality.quarantine WHERE asset_key = '{ASSET}'")
    assert len(quarantined) == cohorts
    assert {(d, p) for d, p, _, _ in quarantined} == {(day, "0")}
    assert all(float(c) == -1 and "count" in reasons for _, _, c, reasons in quarantined)
    cases = query(archive_dsn, "SELECT check_name, column_name, value, count(*) FROM quality.failure_cases "
                               f"WHERE asset_key = '{ASSET}' GROUP BY 1, 2, 3")
    assert [(name, column, float(value), n) for name, column, value, n in cases] == [
        ("non_negative", "count", -1.0, cohorts)]


def test_rows_sharing_the_tables_key_are_quarantined_both(clean_sandbox, storage_resources, clean_databases):
    """checks.md: unique_keys (ERROR) fails when two rows share the table's key; the rows are
    quarantined. Every record comes back with the same campaign: the cohorts of a media source
    with several campaigns then share a key (day, cohort type, app, media source, campaign,
    period, KPI); a media source with one campaign keeps its key to itself."""
    product_dsn, archive_dsn = clean_databases
    day = days_ago(2)  # complete periods 0 and 1
    configure_cohort(clean_sandbox, extra_keys={"c": "one campaign"})
    result = dg.materialize([cohort_ltv], resources=make_resources(clean_sandbox, storage_resources),
                            partition_key=day, raise_on_error=False)
    assert not result.success
    sources: dict[tuple[str, str], int] = {}
    for app_id, record in undisturbed_records(clean_sandbox):
        sources[(app_id, record["pid"])] = sources.get((app_id, record["pid"]), 0) + 1
    shared = {key: n for key, n in sources.items() if n > 1}
    alone = {key for key, n in sources.items() if n == 1}
    assert shared and alone, "the sandbox must have both kinds of media source for this test to mean anything"
    periods = 2
    duplicated_rows = sum(shared.values()) * periods

    check = checks_by_name(result)["unique_keys"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["failing_rows"].value == duplicated_rows
    assert check.metadata["quarantined_rows"].value == duplicated_rows
    stored = query(product_dsn, "SELECT app_id, media_source, campaign, count(*) FROM appsflyer.cohort_ltv "
                                "GROUP BY 1, 2, 3")
    assert {(a, s): (c, n) for a, s, c, n in stored} == {key: ("one campaign", periods) for key in alone}
    quarantined = query(archive_dsn, "SELECT row_values->>'app_id', row_values->>'media_source', count(*) "
                                     f"FROM quality.quarantine WHERE asset_key = '{ASSET}' GROUP BY 1, 2")
    assert {(a, s): n for a, s, n in quarantined} == {key: n * periods for key, n in shared.items()}


def test_a_cumulative_value_lower_than_the_day_before_is_written_and_reported(clean_sandbox, storage_resources,
                                                                             clean_databases):
    """checks.md: cumulative_growth (WARN) fails when a cumulative KPI function is lower than at
    the cohort's previous period (refunds can do that); the rows are written and reported, and
    the run goes on."""
    product_dsn, archive_dsn = clean_databases
    day = days_ago(3)  # complete periods 0, 1 and 2
    # Every cohort's cumulative revenue sum drops to 0 on day 1 (a refund), then grows again.
    configure_cohort(clean_sandbox, extra_keys={"revenue_sum_day_1": 0})
    result = dg.materialize([cohort_ltv], resources=make_resources(clean_sandbox, storage_resources),
                            partition_key=day)
    assert result.success
    served = undisturbed_records(clean_sandbox)
    lower = sum(1 for _, record in served if float(record["revenue_sum_day_0"]) > 0)
    assert lower > 0, "the sandbox must serve cohorts with day-0 revenue"

    check = checks_by_name(result)["cumulative_growth"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["failing_rows"].value == lower
    assert all(checks_by_name(result)[name].passed for name in ("non_negative", "unique_keys"))
    # Written: every period of every cohort, the day-1 sums as delivered.
    for dsn in (product_dsn, archive_dsn):
        assert query(dsn, "SELECT period, count(*), count(*) FILTER (WHERE sum = 0) FROM appsflyer.cohort_ltv "
                          "GROUP BY 1 ORDER BY 1")[1] == (1, len(served), len(served))
        assert query(dsn, "SELECT count(*) FROM appsflyer.cohort_ltv") == [(3 * len(served),)]
    assert query(archive_dsn, f"SELECT count(*) FROM quality.quarantine WHERE asset_key = '{ASSET}'") == [(0,)]
    cases = query(archive_dsn, "SELECT DISTINCT check_name, report_date::text FROM quality.failure_cases "
                               f"WHERE asset_key = '{ASSET}'")
    assert cases == [("cumulative_growth", day)]


def test_an_unknown_function_lands_in_extra_functions_of_both_databases_and_warns(
        clean_sandbox, storage_resources, clean_databases):
    """assets.md / checks.md: a Cohort API KPI function adpipes does not know is kept in
    extra_functions ({"<token>": value}, as delivered) and fails unknown_columns as a WARN: the
    run goes on and every row is written."""
    product_dsn, archive_dsn = clean_databases
    day = days_ago(2)  # complete periods 0 and 1
    configure_cohort(clean_sandbox, extra_functions=["avg"])
    result = dg.materialize([cohort_ltv], resources=make_resources(clean_sandbox, storage_resources),
                            partition_key=day)
    assert result.success
    # What the sandbox served under revenue_avg_day_{N}, per app, media source, campaign and period.
    served = {}
    for call in cohort_calls(clean_sandbox):
        for record in cohort_records(call["app_id"], call["body"], today(), {"extra_functions": ["avg"]}):
            for period in (0, 1):
                served[(call["app_id"], record["pid"], record["c"], period)] = float(record[f"revenue_avg_day_{period}"])
    assert len(served) == 2 * len(undisturbed_records(clean_sandbox))
    for dsn in (product_dsn, archive_dsn):
        stored = query(dsn, "SELECT app_id, media_source, campaign, period, extra_functions FROM appsflyer.cohort_ltv")
        assert {(a, s, c, p): {k: float(v) for k, v in extra.items()} for a, s, c, p, extra in stored} == {
            key: {"avg": value} for key, value in served.items()}
    check = checks_by_name(result)["unknown_columns"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["unknown_columns"].value == ["extra_functions.avg"]
