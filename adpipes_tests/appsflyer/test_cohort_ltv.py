"""appsflyer/cohort_ltv end to end: sandbox Cohort API over real HTTP -> asset -> PostgreSQL."""

import time

import dagster as dg
import pytest

from adpipes.appsflyer.cohort import CohortLtvConfig, cohort_ltv, cohort_query
from adpipes.appsflyer.api import AppsFlyerCohortRequestError
from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID
from adpipes_tests.appsflyer.test_daily_report import make_cohort_api as make_api, query, recent_day
from adpipes_tests.appsflyer.test_daily_report import resources  # noqa: F401  (fixture)

SNAPSHOT = "SELECT * FROM appsflyer.cohort_ltv ORDER BY platform, media_source, campaign, period"


def cohort_calls(sandbox) -> list[dict]:
    return [c for c in sandbox.calls() if c["report"] == "cohort"]


def run_config(**config) -> dg.RunConfig:
    return dg.RunConfig(ops={"appsflyer__cohort_ltv": CohortLtvConfig(**config)})


def test_only_complete_periods_are_stored_and_match_the_api(resources, clean_sandbox, clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = recent_day(3)  # complete periods: 0, 1, 2
    result = dg.materialize([cohort_ltv], resources=resources, partition_key=day)
    assert result.success
    calls = cohort_calls(clean_sandbox)
    assert sorted(c["app_id"] for c in calls) == sorted([SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID])
    body = calls[0]["body"]
    assert body["from"] == body["to"] == day and body["kpis"] == ["revenue"]
    assert body["groupings"] == ["date", "pid", "c"] and body["aggregation_type"] == "cumulative"
    assert body["filters"]["period"] == [*range(31), 60, 90, 180] and body["preferred_timezone"] is True

    for dsn in (product_dsn, archive_dsn):
        periods = query(dsn, "SELECT period, count(*) FROM appsflyer.cohort_ltv GROUP BY 1 ORDER BY 1")
        cells = query(dsn, "SELECT count(DISTINCT (platform, media_source, campaign)) FROM appsflyer.cohort_ltv")[0][0]
        # Immature periods (3..30, 60, 90, 180) are absent, not zero rows.
        assert periods == [(0, cells), (1, cells), (2, cells)] and cells == 9
    # Cumulative: never decreasing with the period.
    assert query(product_dsn, """
        SELECT count(*) FROM appsflyer.cohort_ltv a JOIN appsflyer.cohort_ltv b
        USING (platform, media_source, campaign) WHERE b.period = a.period + 1
        AND b.revenue_sum < a.revenue_sum""") == [(0,)]

    # Revenue at the latest complete period equals what the Cohort API answers for it.
    api = make_api(clean_sandbox)
    answer = api.fetch_cohort(SANDBOX_IOS_APP_ID, cohort_query(day, "revenue", CohortLtvConfig()))
    api_revenue = {(r["pid"], None if r["c"] == "None" else r["c"]): (r["revenue_sum_day_2"], r["users"], r["cost"])
                   for r in answer.records}
    stored = {(s, c): (float(v), u, None if cost is None else float(cost)) for s, c, v, u, cost in query(
        product_dsn, "SELECT media_source, campaign, revenue_sum, users, cost FROM appsflyer.cohort_ltv "
        "WHERE platform = 'ios' AND period = 2")}
    assert stored.keys() == api_revenue.keys() and len(stored) == 4
    for key, (revenue, users, cost) in api_revenue.items():
        assert stored[key] == (pytest.approx(revenue), users, cost if cost is None else pytest.approx(cost))
    types = dict(query(product_dsn, "SELECT column_name, data_type FROM information_schema.columns "
                       "WHERE table_schema = 'appsflyer' AND table_name = 'cohort_ltv'"))
    assert types["revenue_sum"] == types["cost"] == "numeric" and types["users"] == types["period"] == "bigint"
    assert types["extra_kpis"] == "jsonb"
    metadata = result.asset_materializations_for_node("appsflyer__cohort_ltv")[0].metadata
    assert metadata["latest_complete_period"].value == {day: 2}


def test_each_kpi_is_its_own_call(resources, clean_sandbox, clean_databases):
    product_dsn, _ = clean_databases
    day = recent_day(4)
    result = dg.materialize([cohort_ltv], resources=resources, partition_key=day,
                            run_config=run_config(kpis=["revenue", "sessions", "roas"]))
    assert result.success
    kpis = sorted(c["body"]["kpis"][0] for c in cohort_calls(clean_sandbox))
    assert kpis == ["ROAS", "ROAS", "revenue", "revenue", "sessions", "sessions"]
    rows = query(product_dsn, "SELECT count(*), count(revenue_sum), count(revenue_count), count(sessions_sum), "
                 "count(roas_sum), count(uninstalls_sum) FROM appsflyer.cohort_ltv")[0]
    assert rows[0] == 9 * 4 and rows[1:5] == (rows[0],) * 4 and rows[5] == 0
    # One row per (platform, media source, campaign, period): the KPIs are merged, not stacked.
    assert query(product_dsn, "SELECT count(*) FROM (SELECT 1 FROM appsflyer.cohort_ltv GROUP BY "
                 "platform, media_source, campaign, period HAVING count(*) > 1) d") == [(0,)]


def test_429_then_success(resources, clean_sandbox, clean_databases):
    product_dsn, _ = clean_databases
    clean_sandbox.add_faults(kind="429", retry_after=0, app_id=SANDBOX_ANDROID_APP_ID, report="cohort")
    assert dg.materialize([cohort_ltv], resources=resources, partition_key=recent_day(3)).success
    statuses = [c["status"] for c in cohort_calls(clean_sandbox) if c["app_id"] == SANDBOX_ANDROID_APP_ID]
    assert statuses == [429, 200]
    assert query(product_dsn, "SELECT count(*) FROM appsflyer.cohort_ltv WHERE platform = 'android'") == [(5 * 3,)]


def test_422_names_app_kpi_and_the_api_message(clean_sandbox):
    api = make_api(clean_sandbox)
    body = cohort_query(recent_day(3), "revenue", CohortLtvConfig())
    body["groupings"] = ["date", "media_source"]
    with pytest.raises(AppsFlyerCohortRequestError) as failure:
        api.fetch_cohort(SANDBOX_IOS_APP_ID, body)
    message = str(failure.value)
    assert SANDBOX_IOS_APP_ID in message and "'revenue'" in message
    assert "Invalid value: media_source for key: groupings" in message
    assert clean_sandbox.appsflyer_token not in message
    assert len(cohort_calls(clean_sandbox)) == 1  # a bad body is not retried


def test_unsupported_kpi_in_config_fails_before_any_call(resources, clean_sandbox):
    result = dg.materialize([cohort_ltv], resources=resources, partition_key=recent_day(3),
                            run_config=run_config(kpis=["revenue", "ltv_magic"]), raise_on_error=False)
    assert not result.success
    assert "ltv_magic" in str(result.failure_data_for_node("appsflyer__cohort_ltv").error)
    assert cohort_calls(clean_sandbox) == []


def test_calls_are_paced_to_the_rate_limit(clean_sandbox):
    api = make_api(clean_sandbox, cohort_calls_per_minute=2, cohort_rate_window_seconds=1.0)
    body = cohort_query(recent_day(3), "revenue", CohortLtvConfig())
    time.sleep(1.0)  # an earlier test's calls must not count against this window
    started = time.monotonic()
    for _ in range(3):
        api.fetch_cohort(SANDBOX_ANDROID_APP_ID, body)
    assert time.monotonic() - started >= 0.95
    assert len(cohort_calls(clean_sandbox)) == 3


def test_range_and_rerun(resources, clean_sandbox, clean_databases):
    product_dsn, archive_dsn = clean_databases
    first, last = recent_day(6), recent_day(5)
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    result = dg.materialize([cohort_ltv], resources=resources, tags=tags)
    assert result.success
    # One query per cohort day and app (see adpipes.appsflyer.cohort for why not one per range).
    assert sorted((c["body"]["from"], c["app_id"]) for c in cohort_calls(clean_sandbox)) == sorted(
        (d, a) for d in (first, last) for a in (SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID))
    per_partition = result.asset_materializations_for_node("appsflyer__cohort_ltv")[0].metadata[
        "partition_row_counts"].value
    assert per_partition == {first: 9 * 6, last: 9 * 5}
    assert dict(query(product_dsn, "SELECT report_date::text, count(*) FROM appsflyer.cohort_ltv GROUP BY 1")) == per_partition
    before = (query(product_dsn, SNAPSHOT), query(archive_dsn, SNAPSHOT))
    assert dg.materialize([cohort_ltv], resources=resources, tags=tags).success
    assert (query(product_dsn, SNAPSHOT), query(archive_dsn, SNAPSHOT)) == before
