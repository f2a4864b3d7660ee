"""The analysis assets end to end: a day's inputs pulled from the sandbox over real HTTP through the
real assets into a real PostgreSQL, then the analysis tables derived from them in product.

Every expected figure is computed here, in Python, from the input tables' rows as stored (plain
SELECTs), following the semantics of docs/analytics.md: ROAS = revenue / cost, LTV = revenue /
users, eCPI = cost / installs.
"""

import datetime as dt
import re
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest

from adpipes.airbridge.assets import revenue as airbridge_revenue
from adpipes.analytics.assets import ANALYTICS_ASSETS, cohort_roas, media_source_daily
from adpipes.analytics.schemas import COHORT_ROAS_TABLE, MEDIA_SOURCE_DAILY_TABLE
from adpipes.appsflyer.aggregate_api import AppsFlyerAggregateApi
from adpipes.appsflyer.assets import build_raw_assets
from adpipes.appsflyer.cohort import cohort_ltv
from adpipes.appsflyer.cohort_api import AppsFlyerCohortApi
from adpipes.appsflyer.daily_report import daily_report
from adpipes.appsflyer.raw_data_api import RAW_REPORTS, AppsFlyerRawDataApi
from adpipes.appsflyer.resources import AppsFlyerApps
from adpipes.lib.retention import (
    PRUNE_OP,
    PruneConfig,
    check_retention_overrides,
    cutoffs_due,
    prune_product_partitions_job,
)
from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_APP_CURRENCY, SANDBOX_IOS_APP_ID
from adpipes_tests.fixtures.sandbox import appsflyer_client_settings

TZ = "Asia/Seoul"
INPUTS = [*build_raw_assets(tuple(RAW_REPORTS)), daily_report, cohort_ltv, airbridge_revenue]
# The in-app event reports, written out (the vendor's names): installs, uninstalls and reinstalls
# carry no revenue.
EVENT_REPORTS = {"in_app_events_report", "organic_in_app_events_report", "in-app-events-retarget"}


def days_ago(n: int) -> str:
    return (dt.datetime.now(ZoneInfo(TZ)).date() - dt.timedelta(days=n)).isoformat()


# Three days back: AppsFlyer's late events of the day have arrived, and cohort periods 0-2 are complete.
DAY = days_ago(3)


def query(dsn: str, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(statement, params).fetchall()


def ratio(numerator, denominator) -> float | None:
    return None if numerator is None or not denominator else float(numerator) / float(denominator)


@pytest.fixture
def resources(clean_sandbox, storage_resources, airbridge_api):
    return {
        "appsflyer_raw_data_api": AppsFlyerRawDataApi(**appsflyer_client_settings(clean_sandbox)),
        "appsflyer_aggregate_api": AppsFlyerAggregateApi(**appsflyer_client_settings(clean_sandbox),
                                                         aggregate_min_interval_seconds=0),
        "appsflyer_cohort_api": AppsFlyerCohortApi(**appsflyer_client_settings(clean_sandbox),
                                                   cohort_rate_window_seconds=1.0),
        "appsflyer_apps": AppsFlyerApps(android_app_id=SANDBOX_ANDROID_APP_ID, ios_app_id=SANDBOX_IOS_APP_ID,
                                        currency=SANDBOX_APP_CURRENCY),
        "airbridge_api": airbridge_api,
        **storage_resources,
    }


@pytest.fixture
def seeded_day(resources, clean_databases):
    """DAY's inputs materialized through the real assets, then the analysis assets; returns the
    instance (it holds the materializations the automation condition reads)."""
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(INPUTS, resources=resources, partition_key=DAY, instance=instance).success
    assert dg.materialize(ANALYTICS_ASSETS, resources=resources, partition_key=DAY, instance=instance).success
    return instance


# -- what cohort_roas must hold, from cohort_ltv and airbridge.revenue ---------------------------

def expected_cohort_roas(dsn: str) -> dict[tuple, dict]:
    expected = {}
    for cohort_type, platform, app_id, source, campaign, period, users, revenue, cost, currency in query(
            dsn, "SELECT cohort_type, platform, app_id, media_source, campaign, period, users, sum, cost, currency "
                 "FROM appsflyer.cohort_ltv WHERE report_date = %s AND kpi = 'revenue'", (DAY,)):
        key = ("appsflyer_cohort", cohort_type, platform, app_id, source, campaign, period)
        assert key not in expected  # one revenue row per cohort and period
        expected[key] = {"users": users, "revenue": revenue, "cost": cost, "currency": currency}
    rows = query(dsn, "SELECT app_name, channel, campaign, day_n, total_unique_users, value, total_cost, currency, "
                      "aggregation_type FROM airbridge.revenue WHERE report_date = %s AND metric = 'app_revenue'",
                 (DAY,))
    for app, channel, campaign, day_n, users, value, cost, currency, aggregation in rows:
        assert aggregation == "cumulative"  # the default: Day N's value is the revenue through day N
        key = ("airbridge", None, None, app, channel, campaign, day_n)
        assert key not in expected  # the default group-by is channel and campaign
        expected[key] = {"users": users, "revenue": value, "cost": cost, "currency": currency}
    return expected


def stored_cohort_roas(dsn: str) -> dict[tuple, dict]:
    rows = query(dsn, "SELECT source, cohort_type, platform, app, media_source, campaign, day_n, users, revenue, "
                      "cost, currency, roas, roas_null_reason, ltv_per_user, ltv_null_reason "
                      "FROM analytics.cohort_roas WHERE report_date = %s", (DAY,))
    stored = {}
    for row in rows:
        assert row[:7] not in stored
        stored[row[:7]] = dict(zip(("users", "revenue", "cost", "currency", "roas", "roas_null_reason",
                                    "ltv_per_user", "ltv_null_reason"), row[7:]))
    return stored


def test_cohort_roas_holds_revenue_over_cost_of_each_cohort_and_day_n(seeded_day, clean_databases):
    product_dsn, _ = clean_databases
    expected, stored = expected_cohort_roas(product_dsn), stored_cohort_roas(product_dsn)
    assert stored.keys() == expected.keys()
    assert {k[0] for k in stored} == {"appsflyer_cohort", "airbridge"}
    computed = 0
    for key, want in expected.items():
        got = stored[key]
        assert (got["users"], got["revenue"], got["cost"], got["currency"]) == (
            want["users"], want["revenue"], want["cost"], want["currency"]), key
        roas, ltv = ratio(want["revenue"], want["cost"]), ratio(want["revenue"], want["users"])
        if roas is None:
            assert got["roas"] is None and got["roas_null_reason"] == (
                "cost_missing" if want["cost"] is None else "cost_zero" if want["cost"] == 0 else "revenue_missing")
        else:
            computed += 1
            assert float(got["roas"]) == pytest.approx(roas, rel=1e-12) and got["roas_null_reason"] is None
        assert (None if got["ltv_per_user"] is None else float(got["ltv_per_user"])) == pytest.approx(ltv, rel=1e-12)
    # Most cohorts have a cost; organic users (AppsFlyer reports no cost for them) have none.
    assert computed > len(expected) / 2
    organic = [v for k, v in stored.items() if k[0] == "appsflyer_cohort" and k[4].lower() == "organic"]
    assert organic and all(v["roas"] is None and v["roas_null_reason"] == "cost_missing" for v in organic)
    # The sum a marketer takes: a media source's day-2 ROAS over its campaigns, by hand.
    source = next(k[4] for k, v in expected.items() if k[0] == "appsflyer_cohort" and v["cost"])
    cells = [v for k, v in expected.items() if k[:3] == ("appsflyer_cohort", "user_acquisition", "android")
             and k[4] == source and k[6] == 2]
    by_sql = query(product_dsn, "SELECT sum(revenue) / sum(cost) FROM analytics.cohort_roas WHERE report_date = %s "
                                "AND source = 'appsflyer_cohort' AND cohort_type = 'user_acquisition' "
                                "AND platform = 'android' AND media_source = %s AND day_n = 2", (DAY, source))
    assert cells and float(by_sql[0][0]) == pytest.approx(
        float(sum(v["revenue"] for v in cells)) / float(sum(v["cost"] for v in cells)), rel=1e-12)


def test_a_zero_cost_gives_no_roas_and_says_why(seeded_day, resources, clean_databases):
    product_dsn, _ = clean_databases
    # A campaign with spend recorded as 0 (AppsFlyer's sandbox has none): set in the input table.
    with psycopg.connect(product_dsn) as conn:
        (target,) = conn.execute(
            "SELECT cohort_type, app_id, media_source, campaign FROM appsflyer.cohort_ltv WHERE report_date = %s "
            "AND kpi = 'revenue' AND cost > 0 AND sum > 0 LIMIT 1", (DAY,)).fetchall()
        conn.execute("UPDATE appsflyer.cohort_ltv SET cost = 0 WHERE report_date = %s AND cohort_type = %s "
                     "AND app_id = %s AND media_source = %s AND campaign IS NOT DISTINCT FROM %s", (DAY, *target))
    assert dg.materialize([cohort_roas], resources=resources, partition_key=DAY).success
    rows = query(product_dsn,
                 "SELECT cost, revenue, roas, roas_null_reason, ltv_per_user FROM analytics.cohort_roas "
                 "WHERE report_date = %s AND source = 'appsflyer_cohort' AND cohort_type = %s AND app = %s "
                 "AND media_source = %s AND campaign IS NOT DISTINCT FROM %s", (DAY, *target))
    assert rows and all(cost == 0 and revenue > 0 and roas is None and reason == "cost_zero" and ltv is not None
                        for cost, revenue, roas, reason, ltv in rows)


# -- what media_source_daily must hold, from daily_report and raw_data ----------------------------

def expected_media_source_daily(dsn: str) -> dict[tuple, dict]:
    groups: dict[tuple, dict] = defaultdict(lambda: {"impressions": None, "clicks": None, "installs": None,
                                                     "cost": None, "currencies": set(), "in_report": False,
                                                     "purchases": 0, "revenue_usd": Decimal(0), "by_currency": {}})

    def add(total, value):
        return value if total is None else total if value is None else total + value

    for platform, app_id, source, campaign, impressions, clicks, installs, cost, currency in query(
            dsn, "SELECT platform, app_id, media_source, campaign, impressions, clicks, installs, total_cost, currency "
                 "FROM appsflyer.daily_report WHERE report_date = %s", (DAY,)):
        group = groups[(platform, app_id, "organic" if source.lower() == "organic" else source, campaign)]
        group["in_report"] = True
        for name, value in (("impressions", impressions), ("clicks", clicks), ("installs", installs), ("cost", cost)):
            group[name] = add(group[name], value)
        if cost is not None:
            group["currencies"].add(currency)
    for platform, app_id, attribution, source, campaign, name, revenue, currency, usd, report, primary in query(
            dsn, "SELECT platform, app_id, attribution, media_source, campaign, event_name, event_revenue, "
                 "event_revenue_currency, event_revenue_usd, source_report, is_primary_attribution "
                 "FROM appsflyer.raw_data WHERE report_date = %s", (DAY,)):
        if report not in EVENT_REPORTS or primary is False:
            continue
        group = groups[(platform, app_id, "organic" if attribution == "organic" else source, campaign)]
        group["purchases"] += name == "af_purchase"
        group["revenue_usd"] += usd or 0
        if revenue is not None:
            group["by_currency"][currency] = group["by_currency"].get(currency, 0) + revenue
    return dict(groups)


def test_media_source_daily_holds_the_daily_reports_cost_and_the_raw_datas_purchases(seeded_day, clean_databases):
    product_dsn, _ = clean_databases
    expected = expected_media_source_daily(product_dsn)
    rows = query(product_dsn, "SELECT platform, app_id, media_source, campaign, impressions, clicks, installs, cost, "
                              "cost_currency, ecpi, ecpi_null_reason, purchases, revenue_usd, revenue_by_currency "
                              "FROM analytics.media_source_daily WHERE report_date = %s", (DAY,))
    stored = {row[:4]: row[4:] for row in rows}
    assert len(stored) == len(rows) and stored.keys() == expected.keys()
    with_ecpi = 0
    for key, want in expected.items():
        impressions, clicks, installs, cost, currency, ecpi, reason, purchases, revenue_usd, by_currency = stored[key]
        assert (impressions, clicks, installs, cost) == (want["impressions"], want["clicks"], want["installs"],
                                                          want["cost"]), key
        assert currency == (next(iter(want["currencies"])) if want["currencies"] else None)
        assert (purchases, revenue_usd) == (want["purchases"], want["revenue_usd"]), key
        assert {c: Decimal(str(v)) for c, v in (by_currency or {}).items()} == want["by_currency"], key
        if not want["in_report"]:
            assert ecpi is None and reason == "no_daily_report_row"
        elif want["cost"] is None:
            assert ecpi is None and reason == "cost_missing"
        elif not want["installs"]:
            assert ecpi is None and reason in ("installs_missing", "installs_zero")
        else:
            with_ecpi += 1
            assert float(ecpi) == pytest.approx(float(want["cost"]) / want["installs"], rel=1e-12) and reason is None
    assert with_ecpi > 0
    # Every raw_data purchase and every daily-report install of the day is in exactly one row.
    assert sum(v["purchases"] for v in expected.values()) == query(
        product_dsn, "SELECT sum(purchases) FROM analytics.media_source_daily WHERE report_date = %s", (DAY,))[0][0] > 0
    assert query(product_dsn, "SELECT sum(installs) FROM analytics.media_source_daily WHERE report_date = %s", (DAY,)) \
        == query(product_dsn, "SELECT sum(installs) FROM appsflyer.daily_report WHERE report_date = %s", (DAY,))


# -- re-runs, re-derivation, retention --------------------------------------------------------------

def snapshot(dsn: str) -> dict[str, list[tuple]]:
    return {spec.qualified_name: query(dsn, f"SELECT * FROM {spec.qualified_name} ORDER BY 1, 2, 3, 4, 5, 6, 7")
            for spec in (COHORT_ROAS_TABLE, MEDIA_SOURCE_DAILY_TABLE)}


def test_a_re_run_replaces_the_day_and_metadata_counts_its_rows(seeded_day, resources, clean_databases):
    product_dsn, _ = clean_databases
    before = snapshot(product_dsn)
    assert all(before.values())
    result = dg.materialize(ANALYTICS_ASSETS, resources=resources, partition_key=DAY)
    assert result.success and snapshot(product_dsn) == before
    for asset, spec in ((cohort_roas, COHORT_ROAS_TABLE), (media_source_daily, MEDIA_SOURCE_DAILY_TABLE)):
        (materialization,) = result.asset_materializations_for_node(asset.op.name)
        assert materialization.partition == DAY
        assert materialization.metadata["dagster/row_count"].value == len(before[spec.qualified_name])


def test_a_re_materialized_input_day_is_derived_again(seeded_day, resources, clean_databases):
    instance = seeded_day
    defs = dg.Definitions(assets=[*INPUTS, *ANALYTICS_ASSETS], resources=resources)
    selection = dg.AssetSelection.assets(*ANALYTICS_ASSETS)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)
    assert first.total_requested == 0  # everything is derived from the inputs it has
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                               cursor=first.cursor)
    assert second.total_requested == 0
    # A maturity re-pull of the cohort: cohort_roas of that day (and only it) is requested again.
    assert dg.materialize([cohort_ltv], resources=resources, partition_key=DAY, instance=instance).success
    third = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                              cursor=second.cursor)
    assert third.get_requested_partitions(cohort_roas.key) == {DAY}
    assert third.get_requested_partitions(media_source_daily.key) == set()


def test_retention_prunes_the_analysis_tables_by_their_own_override(seeded_day, resources, clean_databases,
                                                                    storage_resources):
    product_dsn, _ = clean_databases
    overrides = {"analytics/cohort_roas": 1}
    check_retention_overrides(overrides)  # the override names a table product holds
    product_db = storage_resources["product_db"]
    assert cutoffs_due(product_db, 90, {}, TZ) == {}
    due = cutoffs_due(product_db, 90, overrides, TZ)
    assert due == {"analytics/cohort_roas": days_ago(1)}
    result = prune_product_partitions_job.execute_in_process(
        run_config=dg.RunConfig(ops={PRUNE_OP: PruneConfig(cutoffs=due)}),
        resources={"product_db": product_db, "archive_db": storage_resources["archive_db"]})
    assert result.success
    children = {name for (name,) in query(
        product_dsn, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                     "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
                     "WHERE n.nspname = 'analytics'")}
    compact = DAY.replace("-", "")
    assert children == {f"media_source_daily_p{compact}"}
    (observation,) = [e.event_specific_data.asset_observation for e in result.all_events
                      if e.event_type_value == "ASSET_OBSERVATION"]
    assert observation.asset_key == cohort_roas.key and observation.partition == DAY
    assert observation.metadata["adpipes/still_in"].value.startswith("nowhere (derived in product from")

    # Its inputs are still in product: the day can be derived again.
    assert dg.materialize([cohort_roas], resources=resources, partition_key=DAY).success
    assert query(product_dsn, "SELECT count(*) FROM analytics.cohort_roas WHERE report_date = %s", (DAY,))[0][0] > 0


def test_a_day_whose_input_is_not_in_product_fails_and_writes_nothing(seeded_day, resources, clean_databases):
    product_dsn, _ = clean_databases
    before = snapshot(product_dsn)
    with psycopg.connect(product_dsn) as conn:
        conn.execute(f"DROP TABLE appsflyer.daily_report_p{DAY.replace('-', '')}")
    result = dg.materialize([media_source_daily], resources=resources, partition_key=DAY, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    assert "appsflyer/daily_report has no product partition for " + DAY in message
    assert snapshot(product_dsn) == before


def test_the_documented_queries_run(seeded_day, clean_databases):
    product_dsn, _ = clean_databases
    text = (Path(__file__).resolve().parents[2] / "docs" / "analytics.md").read_text()
    statements = re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)
    assert len(statements) == 4
    with psycopg.connect(product_dsn) as conn:
        results = [conn.execute(statement).fetchall() for statement in statements]
    # The eCPI query over the seeded day: its installs are the daily report's android installs.
    (android_installs,) = query(product_dsn, "SELECT sum(installs) FROM appsflyer.daily_report "
                                             "WHERE platform = 'android' AND report_date = %s", (DAY,))[0]
    assert sum(row[2] or 0 for row in results[3]) == android_installs


def test_a_range_run_gives_each_day_its_own_row_count(resources, clean_databases):
    product_dsn, _ = clean_databases
    first, last = days_ago(4), DAY
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(INPUTS, resources=resources, tags=tags, instance=instance).success
    result = dg.materialize(ANALYTICS_ASSETS, resources=resources, tags=tags, instance=instance)
    assert result.success
    for asset, spec in ((cohort_roas, COHORT_ROAS_TABLE), (media_source_daily, MEDIA_SOURCE_DAILY_TABLE)):
        by_day = {m.partition: m.metadata["dagster/row_count"].value
                  for m in result.asset_materializations_for_node(asset.op.name)}
        counted = dict(query(product_dsn, f"SELECT report_date::text, count(*) FROM {spec.qualified_name} "
                                          "GROUP BY 1"))
        # Each day its own count (a run total would show the sum of both on each day).
        assert by_day == counted and set(by_day) == {first, last} and all(by_day.values())
