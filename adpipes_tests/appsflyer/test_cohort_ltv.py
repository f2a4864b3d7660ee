"""appsflyer/cohort_ltv end to end: sandbox Cohort API over real HTTP -> asset -> PostgreSQL.

Expected figures come from the sandbox's own answer to the body the asset sent (the call log),
read with the documents' key forms ``{kpi}_{function}_day_{N}`` and, for an event's Sum,
``sum_{event}_day_{N}`` (footnote 3), not through adpipes' parser."""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest
import requests

from adpipes.airbridge.schemas import REVENUE_KEY
from adpipes.appsflyer.cohort import cohort_ltv
from adpipes.appsflyer.cohort_api import AppsFlyerCohortApi
from adpipes.appsflyer.resources import AppsFlyerApps
from adpipes.appsflyer.schemas import COHORT_LTV_KEY
from adpipes.dev.sandbox.appsflyer_cohort import APP_TIMEZONE, cohort_cells, cohort_records, configure_cohort
from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_APP_CURRENCY, SANDBOX_IOS_APP_ID
from adpipes.schedules import TRIGGER_TAG, daily_run_requests
from adpipes_tests.fixtures.sandbox import appsflyer_client_settings

APPS = {"android": SANDBOX_ANDROID_APP_ID, "ios": SANDBOX_IOS_APP_ID}
# (platform, media source, campaign) cohorts the sandbox has each day.
COHORTS = sum(len(cohort_cells(app)) for app in APPS.values())
NODE = "appsflyer__cohort_ltv"
FUNCTIONS = ("count", "cvr", "rate", "sum", "unique_users")
STORED = ("SELECT cohort_type, platform, media_source, campaign, period, kpi, users, cost, "
          + ", ".join(FUNCTIONS) + ", currency, extra_functions FROM appsflyer.cohort_ltv "
          "ORDER BY cohort_type, platform, media_source, campaign, kpi, period")


def today() -> dt.date:
    return dt.datetime.now(ZoneInfo(APP_TIMEZONE)).date()


def days_ago(n: int) -> str:
    return (today() - dt.timedelta(days=n)).isoformat()


def query(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def cohort_calls(sandbox) -> list[dict]:
    return [c for c in sandbox.calls() if c["report"] == "cohort"]


def make_resources(sandbox, storage_resources, **api: object) -> dict[str, object]:
    return {
        "appsflyer_cohort_api": AppsFlyerCohortApi(
            **appsflyer_client_settings(sandbox, **{"cohort_rate_window_seconds": 1.0, **api})),
        "appsflyer_apps": AppsFlyerApps(android_app_id=SANDBOX_ANDROID_APP_ID, ios_app_id=SANDBOX_IOS_APP_ID,
                                        currency=SANDBOX_APP_CURRENCY),
        **storage_resources,
    }


def served(sandbox) -> dict[tuple, float]:
    """What the sandbox served for the logged calls: (cohort_type, app, pid, c, kpi, function,
    period) -> value, from its own answer to the same body. ``kpi`` as the table stores it (a
    documented KPI lowercased, an event as written); keys begin with it lowercased and snake-cased."""
    values = {}
    for call in cohort_calls(sandbox):
        body = call["body"]
        kpi = body["kpis"][0]
        prefix = kpi.lower().replace(" ", "_")
        stored_kpi = kpi.lower() if kpi.lower() in ("revenue", "roas", "roi", "sessions", "uninstalls") else kpi
        for record in cohort_records(call["app_id"], body, today()):
            for key, value in record.items():
                if key.startswith(f"sum_{prefix}_day_"):  # footnote 3: an event's Sum
                    function, period = "sum", key.rsplit("_day_", 1)[1]
                elif key.startswith(f"{prefix}_"):
                    function, period = key[len(prefix) + 1:].rsplit("_day_", 1)
                else:
                    continue
                values[(body["cohort_type"], call["app_id"], record["pid"], record["c"], stored_kpi,
                        function, int(period))] = float(value)
    return values


def stored(dsn: str) -> dict[tuple, float]:
    """The same keys from the table: one entry per non-null function column."""
    values = {}
    for row in query(dsn, STORED):
        cohort_type, platform, source, campaign, period, kpi = row[:6]
        for function, value in zip(FUNCTIONS, row[8:13]):
            if value is not None:
                values[(cohort_type, APPS[platform], source, campaign, kpi, function, period)] = float(value)
    return values


def test_revenue_roas_and_sessions_land_typed_and_a_maturity_repull_keeps_all_three(
        clean_sandbox, storage_resources, clean_databases):
    product_dsn, archive_dsn = clean_databases
    resources = make_resources(clean_sandbox, storage_resources, kpis=["revenue", "roas", "sessions"])
    day = days_ago(3)  # complete periods 0, 1, 2
    assert dg.materialize([cohort_ltv], resources=resources, partition_key=day).success
    assert sorted(c["body"]["kpis"][0] for c in cohort_calls(clean_sandbox)) == sorted(
        ["revenue", "roas", "sessions"] * 2)
    expected = served(clean_sandbox)
    for dsn in (product_dsn, archive_dsn):
        landed = stored(dsn)
        assert landed.keys() == expected.keys()
        assert all(landed[k] == pytest.approx(v) for k, v in expected.items())
    # Each KPI has exactly its documented functions: revenue count+sum, roas rate, sessions count+rate.
    functions = query(product_dsn, "SELECT kpi, count(*), " + ", ".join(f"count({f})" for f in FUNCTIONS)
                      + " FROM appsflyer.cohort_ltv GROUP BY kpi ORDER BY kpi")
    cells = COHORTS * 3  # (platform, media source, campaign) cohorts x 3 periods
    assert functions == [("revenue", cells, cells, 0, 0, cells, 0), ("roas", cells, 0, 0, cells, 0, 0),
                         ("sessions", cells, cells, 0, cells, 0, 0)]
    types = dict(query(product_dsn, "SELECT column_name, data_type FROM information_schema.columns "
                       "WHERE table_schema = 'appsflyer' AND table_name = 'cohort_ltv'"))
    assert all(types[f] == "numeric" for f in FUNCTIONS) and types["extra_functions"] == "jsonb"
    assert types["kpi"] == types["cohort_type"] == "text" and types["users"] == types["period"] == "bigint"
    before = query(product_dsn, STORED)

    # The schedule's maturity re-pull of this cohort (3 days old): no run config, all three KPIs.
    (repull,) = [r for r in daily_run_requests(today(), dt.date(2026, 1, 1), [COHORT_LTV_KEY, REVENUE_KEY])
                 if r.tags[TRIGGER_TAG] == "maturity" and r.partition_key == day]
    assert COHORT_LTV_KEY in repull.asset_selection and not repull.run_config
    clean_sandbox.reset()
    result = dg.materialize([cohort_ltv], resources=resources, partition_key=repull.partition_key,
                            tags=repull.tags, selection=[COHORT_LTV_KEY])
    assert result.success
    assert sorted(c["body"]["kpis"][0] for c in cohort_calls(clean_sandbox)) == sorted(
        ["revenue", "roas", "sessions"] * 2)
    assert query(product_dsn, STORED) == before
    assert {k for (k,) in query(archive_dsn, "SELECT DISTINCT kpi FROM appsflyer.cohort_ltv")} == {
        "revenue", "roas", "sessions"}


# The sandbox's answer for the iOS app's user-acquisition revenue cohort of 2026-11-01, written
# out by hand from its JSON answer (POST /api/cohorts/v1/data/app/id1000000001?format=json with the
# body the asset sends, groupings date, pid, c), read with the documents' key forms
# revenue_count_day_N and revenue_sum_day_N; users and cost are the sandbox's daily report
# figures of the same cell and day. (media source, campaign) -> users, cost, [(period, count, sum)].
IOS_REVENUE_2026_11_01 = {
    ("Apple Search Ads", "ASA Generic, Puzzle"): (203, 274.33, [(0, 45, 496.45), (1, 73, 786.34), (2, 93, 1013.17)]),
    ("Facebook Ads", "Lookalike 1%, KR"): (386, 336.15, [(0, 102, 649.12), (1, 165, 1054.17), (2, 212, 1331.38)]),
    ("Apple Search Ads", "ASA_Brand_KR"): (72, 248.12, [(0, 19, 197.94), (1, 31, 308.94), (2, 40, 394.83)]),
}


def test_revenue_lands_as_the_sandbox_answers_it_written_out_by_hand(clean_sandbox, storage_resources,
                                                                    clean_databases):
    """Figures written in the test, not computed by adpipes or by the sandbox's code: a fixed
    cohort day (its periods 0-2 are complete and never change)."""
    product_dsn, archive_dsn = clean_databases
    resources = make_resources(clean_sandbox, storage_resources, kpis=["revenue"])
    assert dg.materialize([cohort_ltv], resources=resources, partition_key="2026-11-01").success
    for dsn in (product_dsn, archive_dsn):
        rows = query(dsn, "SELECT media_source, campaign, users, cost::float, period, count::bigint, sum::float, "
                          "currency FROM appsflyer.cohort_ltv WHERE platform = 'ios' AND kpi = 'revenue' "
                          "AND cohort_type = 'user_acquisition' AND period <= 2 ORDER BY 1, 2, 5")
        landed: dict[tuple, tuple] = {}
        for source, campaign, users, cost, period, count, revenue, currency in rows:
            assert currency == "USD"
            entry = landed.setdefault((source, campaign), (users, cost, []))
            assert entry[:2] == (users, cost)
            entry[2].append((period, count, revenue))
        for cell, (users, cost, periods) in IOS_REVENUE_2026_11_01.items():
            assert landed[cell][:2] == (users, pytest.approx(cost)), (dsn, cell)
            assert [(p, c) for p, c, _ in landed[cell][2]] == [(p, c) for p, c, _ in periods], (dsn, cell)
            assert [v for _, _, v in landed[cell][2]] == pytest.approx([v for _, _, v in periods]), (dsn, cell)
        # The iOS app's five cells (four of the daily report, one of a printed filter), three periods each.
        assert len(rows) == 5 * 3


def test_removing_a_kpi_or_cohort_type_keeps_its_stored_rows(clean_sandbox, storage_resources, clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = days_ago(3)
    by_pair = "SELECT cohort_type, kpi, count(*) FROM appsflyer.cohort_ltv GROUP BY 1, 2 ORDER BY 1, 2"
    kept = STORED.replace("ORDER BY", "WHERE (cohort_type, kpi) <> ('user_acquisition', 'revenue') ORDER BY")
    both_types = ["user_acquisition", "retargeting"]
    first = make_resources(clean_sandbox, storage_resources, kpis=["revenue", "roas"], cohort_types=both_types)
    assert dg.materialize([cohort_ltv], resources=first, partition_key=day).success
    before = {dsn: query(dsn, kept) for dsn in (product_dsn, archive_dsn)}
    assert len(before[archive_dsn]) == 3 * COHORTS * 3

    # roas and retargeting removed from the settings; revenue changes (a larger smallest cohort).
    clean_sandbox.reset()
    second = make_resources(clean_sandbox, storage_resources, kpis=["revenue"], min_cohort_size=150)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([cohort_ltv], resources=second, partition_key=day, instance=instance)
    assert result.success
    assert {(c["body"]["cohort_type"], c["body"]["kpis"][0]) for c in cohort_calls(clean_sandbox)} == {
        ("user_acquisition", "revenue")}
    expected = served(clean_sandbox)
    for dsn in (product_dsn, archive_dsn):
        # The rows this run did not pull are still there, unchanged ...
        assert query(dsn, kept) == before[dsn]
        # ... and the revenue rows are this run's answer, the first run's gone.
        revenue = {k: v for k, v in stored(dsn).items() if k[:1] == ("user_acquisition",) and k[4] == "revenue"}
        assert revenue.keys() == expected.keys() and all(revenue[k] == pytest.approx(v) for k, v in expected.items())
        assert 0 < len({k[2:4] for k in revenue}) < COHORTS
    pairs = [{"cohort_type": t, "kpi": k, "rows": COHORTS * 3, "partitions": [day], "app_ids": sorted(APPS.values())}
             for t, k in [("retargeting", "revenue"), ("retargeting", "roas"), ("user_acquisition", "roas")]]
    metadata = result.asset_materializations_for_node(NODE)[0].metadata
    assert metadata["appsflyer/carried_over"].value == pairs
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("kept the stored rows of what this run did not pull" in m and "user_acquisition 'roas': "
               f"{COHORTS * 3} row(s) of {day}" in m for m in logged)

    # Pulled again, a pair is replaced, not carried over.
    clean_sandbox.reset()
    result = dg.materialize([cohort_ltv], resources=first, partition_key=day)
    assert result.asset_materializations_for_node(NODE)[0].metadata["appsflyer/carried_over"].value == []
    assert query(archive_dsn, by_pair) == query(product_dsn, by_pair) == [
        (t, k, COHORTS * 3) for t in ("retargeting", "user_acquisition") for k in ("revenue", "roas")]


def test_an_event_kpi_lands_its_sum_from_the_footnotes_key(clean_sandbox, storage_resources, clean_databases):
    product_dsn, _ = clean_databases
    resources = make_resources(clean_sandbox, storage_resources, kpis=["Checkout Start"])
    assert dg.materialize([cohort_ltv], resources=resources, partition_key=days_ago(3)).success
    expected = served(clean_sandbox)
    assert {k[5] for k in expected} == {"count", "cvr", "sum", "unique_users"}
    landed = stored(product_dsn)
    assert landed.keys() == expected.keys() and all(landed[k] == pytest.approx(v) for k, v in expected.items())
    assert query(product_dsn, "SELECT DISTINCT kpi, count(sum) = count(*) FROM appsflyer.cohort_ltv GROUP BY 1") == [
        ("Checkout Start", True)]


def test_unknown_top_level_answer_keys_are_flagged_and_the_rows_stored(clean_sandbox, storage_resources,
                                                                       clean_databases):
    product_dsn, _ = clean_databases
    control = requests.post(f"{clean_sandbox.base_url}/_sandbox/appsflyer/cohort",
                            json={"extra_answer_keys": {"data_freshness": "delayed"}}, timeout=10)
    assert control.status_code == 200, control.text
    day = days_ago(2)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([cohort_ltv], resources=make_resources(clean_sandbox, storage_resources),
                            partition_key=day, instance=instance)
    assert result.success
    assert query(product_dsn, "SELECT count(*) FROM appsflyer.cohort_ltv") == [(COHORTS * 2,)]
    metadata = result.asset_materializations_for_node(NODE)[0].metadata
    carried = metadata["appsflyer/unknown_answer_keys"].value["data_freshness"]
    # Every value is kept with the query that carried it: one per app and KPI of the day.
    assert {(c["partition"], c["value"]) for c in carried} == {(day, "delayed")}
    assert sorted(c["app_id"] for c in carried) == sorted([SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID])
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "unknown_columns"]
    assert not check.passed and check.metadata["unknown_columns"].value == ["answer.data_freshness"]
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("top-level key(s) ['data_freshness']" in m and '"delayed"' in m for m in logged)


def test_cohort_types_coexist_and_uninstalls_is_not_asked_with_unified(clean_sandbox, storage_resources,
                                                                      clean_databases):
    product_dsn, _ = clean_databases
    resources = make_resources(clean_sandbox, storage_resources, kpis=["revenue", "uninstalls"],
                               cohort_types=["user_acquisition", "retargeting", "unified"])
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([cohort_ltv], resources=resources, partition_key=days_ago(2), instance=instance)
    assert result.success
    asked = sorted((c["body"]["cohort_type"], c["body"]["kpis"][0]) for c in cohort_calls(clean_sandbox))
    assert asked == sorted([("user_acquisition", "revenue"), ("user_acquisition", "uninstalls"),
                            ("retargeting", "revenue"), ("retargeting", "uninstalls"), ("unified", "revenue")] * 2)
    rows = query(product_dsn, "SELECT cohort_type, kpi, count(*), sum(users) FROM appsflyer.cohort_ltv "
                 "GROUP BY 1, 2 ORDER BY 1, 2")
    cells = COHORTS * 2  # complete periods 0 and 1
    assert [r[:3] for r in rows] == [("retargeting", "revenue", cells), ("retargeting", "uninstalls", cells),
                                     ("unified", "revenue", cells), ("user_acquisition", "revenue", cells),
                                     ("user_acquisition", "uninstalls", cells)]
    users = {(t, k): u for t, k, _, u in rows}
    assert users["retargeting", "revenue"] < users["user_acquisition", "revenue"] < users["unified", "revenue"]
    metadata = result.asset_materializations_for_node(NODE)[0].metadata
    assert metadata["appsflyer/skipped_kpis"].value == [
        {"kpi": "uninstalls", "cohort_type": "unified", "reason": "not available with unified (documents)"}]
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("'uninstalls' is not available with cohort_type unified" in m for m in logged)


def test_currency_column_says_usd_or_the_apps_currency(clean_sandbox, storage_resources, clean_databases):
    product_dsn, _ = clean_databases
    day = days_ago(2)
    figures = ("SELECT platform, media_source, campaign, kpi, currency, sum, rate, cost FROM appsflyer.cohort_ltv "
               "ORDER BY platform, media_source, campaign, kpi")
    for preferred in (False, True):
        resources = make_resources(clean_sandbox, storage_resources, kpis=["revenue", "roas"],
                                   preferred_currency=preferred)
        assert dg.materialize([cohort_ltv], resources=resources, partition_key=day).success
        if not preferred:
            in_usd = query(product_dsn, figures)
    in_krw = query(product_dsn, figures)
    assert {r[4] for r in in_usd} == {"USD"} and {r[4] for r in in_krw} == {"KRW"}
    for usd, krw in zip(in_usd, in_krw, strict=True):
        assert usd[:4] == krw[:4]
        if usd[3] == "revenue":
            assert float(krw[5]) == pytest.approx(float(usd[5]) * 1350, rel=1e-3)
        else:  # roas is a ratio: the same in any currency
            assert float(krw[6]) == pytest.approx(float(usd[6]), rel=1e-3)
        if usd[7] is not None:
            assert float(krw[7]) == pytest.approx(float(usd[7]) * 1350, rel=1e-3)


def test_min_cohort_size_is_sent_and_smaller_cohorts_are_not_stored(clean_sandbox, storage_resources,
                                                                    clean_databases):
    product_dsn, _ = clean_databases
    resources = make_resources(clean_sandbox, storage_resources, min_cohort_size=150)
    assert dg.materialize([cohort_ltv], resources=resources, partition_key=days_ago(2)).success
    assert {c["body"]["min_cohort_size"] for c in cohort_calls(clean_sandbox)} == {150}
    sizes = [u for (u,) in query(product_dsn, "SELECT users FROM appsflyer.cohort_ltv")]
    assert sizes and min(sizes) >= 150
    assert len({r for r in query(product_dsn, "SELECT platform, media_source, campaign FROM appsflyer.cohort_ltv")}) < COHORTS


def test_days_beyond_the_history_depth_fail_before_any_call(clean_sandbox, storage_resources):
    resources = make_resources(clean_sandbox, storage_resources, history_days=3)
    result = dg.materialize([cohort_ltv], resources=resources, partition_key=days_ago(5), raise_on_error=False)
    assert not result.success
    message = str(result.failure_data_for_node(NODE).error)
    assert days_ago(5) in message and "more than 3 days" in message and "Nothing was called" in message
    assert cohort_calls(clean_sandbox) == []


def test_a_run_the_accounts_daily_quota_cannot_pay_for_is_refused_before_any_call(
        clean_sandbox, storage_resources):
    resources = make_resources(clean_sandbox, storage_resources, kpis=["revenue", "sessions"],
                               account_daily_calls=3)
    result = dg.materialize([cohort_ltv], resources=resources, partition_key=days_ago(2), raise_on_error=False)
    assert not result.success
    message = str(result.failure_data_for_node(NODE).error)
    assert "needs 4 calls of appsflyer cohort for app account" in message and "3 of today's 3" in message
    assert cohort_calls(clean_sandbox) == []


def test_an_undocumented_function_is_kept_in_extra_functions_and_flagged(clean_sandbox, storage_resources,
                                                                         clean_databases):
    product_dsn, _ = clean_databases
    configure_cohort(clean_sandbox, extra_functions=["avg"])
    result = dg.materialize([cohort_ltv], resources=make_resources(clean_sandbox, storage_resources),
                            partition_key=days_ago(2))
    assert result.success
    extras = query(product_dsn, "SELECT extra_functions->>'avg', count FROM appsflyer.cohort_ltv")
    assert extras and all(float(avg) == float(count) for avg, count in extras)
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "unknown_columns"]
    assert not check.passed and "extra_functions.avg" in str(check.metadata)


def test_an_unknown_answer_shape_fails_the_run_and_stores_nothing(clean_sandbox, storage_resources,
                                                                  clean_databases):
    product_dsn, _ = clean_databases
    configure_cohort(clean_sandbox, extra_keys={"af_new_metric": 3})
    result = dg.materialize([cohort_ltv], resources=make_resources(clean_sandbox, storage_resources),
                            partition_key=days_ago(2), raise_on_error=False)
    assert not result.success
    assert "'af_new_metric'" in str(result.failure_data_for_node(NODE).error)
    assert query(product_dsn, "SELECT to_regclass('appsflyer.cohort_ltv')") == [(None,)]


def test_429_then_success(clean_sandbox, storage_resources, clean_databases):
    product_dsn, _ = clean_databases
    clean_sandbox.add_faults(kind="429", retry_after=0, app_id=SANDBOX_ANDROID_APP_ID, report="cohort")
    resources = make_resources(clean_sandbox, storage_resources)
    assert dg.materialize([cohort_ltv], resources=resources, partition_key=days_ago(3)).success
    statuses = [c["status"] for c in cohort_calls(clean_sandbox) if c["app_id"] == SANDBOX_ANDROID_APP_ID]
    assert statuses == [429, 200]
    assert query(product_dsn, "SELECT count(*) FROM appsflyer.cohort_ltv WHERE platform = 'android'") == [
        (len(cohort_cells(SANDBOX_ANDROID_APP_ID)) * 3,)]


def test_range_is_one_query_per_day_and_a_rerun_changes_nothing(clean_sandbox, storage_resources,
                                                                clean_databases):
    product_dsn, archive_dsn = clean_databases
    resources = make_resources(clean_sandbox, storage_resources)
    first, last = days_ago(6), days_ago(5)
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    result = dg.materialize([cohort_ltv], resources=resources, tags=tags)
    assert result.success
    # One query per cohort day and app (see adpipes.appsflyer.cohort for why not one per range).
    assert sorted((c["body"]["from"], c["body"]["to"], c["app_id"]) for c in cohort_calls(clean_sandbox)) == sorted(
        (d, d, a) for d in (first, last) for a in APPS.values())
    per_partition = result.asset_materializations_for_node(NODE)[0].metadata["partition_row_counts"].value
    assert per_partition == {first: COHORTS * 6, last: COHORTS * 5}
    assert dict(query(product_dsn, "SELECT report_date::text, count(*) FROM appsflyer.cohort_ltv GROUP BY 1")) == per_partition
    before = (query(product_dsn, STORED), query(archive_dsn, STORED))
    assert dg.materialize([cohort_ltv], resources=resources, tags=tags).success
    assert (query(product_dsn, STORED), query(archive_dsn, STORED)) == before


def test_a_table_of_the_wide_layout_is_kept_as_layout1(clean_sandbox, storage_resources, clean_databases):
    day = days_ago(2)
    for dsn in clean_databases:
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE SCHEMA appsflyer")
            conn.execute("CREATE TABLE appsflyer.cohort_ltv (report_date date, platform text, period bigint, "
                         "revenue_sum numeric) PARTITION BY RANGE (report_date)")
            conn.execute("CREATE TABLE appsflyer.cohort_ltv_2026_01_01 PARTITION OF appsflyer.cohort_ltv "
                         "FOR VALUES FROM ('2026-01-01') TO ('2026-01-02')")
            conn.execute("INSERT INTO appsflyer.cohort_ltv VALUES ('2026-01-01', 'ios', 7, 12.5)")
            # A row of the day being pulled: layout 1 has no kpi or cohort_type to carry it over by.
            conn.execute(f"CREATE TABLE appsflyer.cohort_ltv_d PARTITION OF appsflyer.cohort_ltv "
                         f"FOR VALUES FROM ('{day}') TO ('{days_ago(1)}')")
            conn.execute(f"INSERT INTO appsflyer.cohort_ltv VALUES ('{day}', 'ios', 0, 1.5)")
    result = dg.materialize([cohort_ltv], resources=make_resources(clean_sandbox, storage_resources),
                            partition_key=day)
    assert result.success
    assert result.asset_materializations_for_node(NODE)[0].metadata["appsflyer/carried_over"].value == []
    for dsn in clean_databases:
        assert query(dsn, "SELECT report_date::text, platform, period, revenue_sum::float "
                     "FROM appsflyer.cohort_ltv_layout1 ORDER BY 1") == [("2026-01-01", "ios", 7, 12.5),
                                                                        (day, "ios", 0, 1.5)]
        assert query(dsn, "SELECT DISTINCT kpi FROM appsflyer.cohort_ltv") == [("revenue",)]


# -- several apps per platform ----------------------------------------------------------------------

SECOND_ANDROID_APP_ID = "com.adpipes.second"
SEVERAL = {SANDBOX_ANDROID_APP_ID: "android", SECOND_ANDROID_APP_ID: "android", SANDBOX_IOS_APP_ID: "ios"}
BY_APP = ("SELECT app_id, platform, kpi, period, media_source, campaign, users, count, sum FROM appsflyer.cohort_ltv "
          "ORDER BY app_id, kpi, period, media_source, campaign")


def several_apps(sandbox, storage_resources, apps=tuple(SEVERAL), **api: object) -> dict[str, object]:
    sandbox.configure(apps=list(SEVERAL))
    return {**make_resources(sandbox, storage_resources, **api), "appsflyer_apps": AppsFlyerApps(
        android_app_id=",".join(a for a in apps if SEVERAL[a] == "android"),
        ios_app_id=",".join(a for a in apps if SEVERAL[a] == "ios"), currency=SANDBOX_APP_CURRENCY)}


def stored_by_app(dsn: str) -> dict[tuple, float]:
    """(cohort_type, app_id, pid, c, kpi, function, period) -> value, as served() keys them."""
    values = {}
    for row in query(dsn, "SELECT cohort_type, app_id, media_source, campaign, kpi, period, "
                          + ", ".join(FUNCTIONS) + " FROM appsflyer.cohort_ltv"):
        cohort_type, app_id, source, campaign, kpi, period = row[:6]
        for function, value in zip(FUNCTIONS, row[6:]):
            if value is not None:
                values[(cohort_type, app_id, source, campaign, kpi, function, period)] = float(value)
    return values


def test_two_android_apps_and_an_ios_app_each_land_with_their_app_id(clean_sandbox, storage_resources,
                                                                     clean_databases):
    product_dsn, archive_dsn = clean_databases
    resources = several_apps(clean_sandbox, storage_resources, kpis=["revenue", "roas"])
    day = days_ago(3)  # complete periods 0, 1, 2
    result = dg.materialize([cohort_ltv], resources=resources, partition_key=day)
    assert result.success
    # One query per app and KPI, each for its own app.
    assert sorted((c["app_id"], c["body"]["kpis"][0]) for c in cohort_calls(clean_sandbox)) == sorted(
        (app_id, kpi) for app_id in SEVERAL for kpi in ("revenue", "roas"))
    expected = served(clean_sandbox)
    assert {k[1] for k in expected} == set(SEVERAL)
    for dsn in (product_dsn, archive_dsn):
        landed = stored_by_app(dsn)
        assert landed.keys() == expected.keys()
        assert all(landed[k] == pytest.approx(v) for k, v in expected.items())
        assert query(dsn, "SELECT app_id, platform, count(*) FROM appsflyer.cohort_ltv GROUP BY 1, 2 ORDER BY 1") == [
            (app_id, SEVERAL[app_id], len(cohort_cells(app_id)) * 3 * 2) for app_id in sorted(SEVERAL)]
    # The two Android apps share media sources and campaigns: app_id keeps their rows apart.
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "unique_keys"]
    assert check.passed
    metadata = result.asset_materializations_for_node(NODE)[0].metadata
    assert metadata["appsflyer/api_calls_by_app"].value == dict.fromkeys(SEVERAL, 2)
    assert metadata["appsflyer/app_ids"].value == list(SEVERAL)
    # The Cohort API's quota is the account's: the ledger counts every app's calls there.
    assert query(archive_dsn, "SELECT app_id, report, calls FROM quota.api_calls") == [("account", "cohort", 6)]


def test_one_app_failing_leaves_the_stored_day_of_every_app_as_it_was(clean_sandbox, storage_resources,
                                                                      clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = days_ago(3)
    assert dg.materialize([cohort_ltv], resources=several_apps(clean_sandbox, storage_resources),
                          partition_key=day).success
    before = (query(product_dsn, BY_APP), query(archive_dsn, BY_APP))
    assert {row[0] for row in before[0]} == set(SEVERAL)
    clean_sandbox.reset()
    # The iOS app's token is refused (401, not retried) after both Android apps answered, with a
    # larger smallest cohort, so their answers differ from what is stored.
    resources = several_apps(clean_sandbox, storage_resources, min_cohort_size=150)
    clean_sandbox.add_faults(kind="token_revoked", app_id=SANDBOX_IOS_APP_ID, report="cohort")
    result = dg.materialize([cohort_ltv], resources=resources, partition_key=day, raise_on_error=False)
    assert not result.success
    message = result.failure_data_for_node(NODE).error.message
    assert f"appsflyer/cohort_ltv partition {day}: app {SANDBOX_IOS_APP_ID} failed" in message
    assert f"Nothing of the partition {day} was written, for any app" in message and "re-run" in message
    assert f"calls per app before the failure: {SANDBOX_ANDROID_APP_ID} 1, {SECOND_ANDROID_APP_ID} 1" in message
    assert [(c["app_id"], c["status"]) for c in cohort_calls(clean_sandbox)] == [
        (SANDBOX_ANDROID_APP_ID, 200), (SECOND_ANDROID_APP_ID, 200), (SANDBOX_IOS_APP_ID, 401)]
    assert (query(product_dsn, BY_APP), query(archive_dsn, BY_APP)) == before


def test_an_app_removed_from_the_settings_keeps_its_stored_rows(clean_sandbox, storage_resources, clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = days_ago(3)
    assert dg.materialize([cohort_ltv], resources=several_apps(clean_sandbox, storage_resources),
                          partition_key=day).success
    second = f"SELECT * FROM appsflyer.cohort_ltv WHERE app_id = '{SECOND_ANDROID_APP_ID}' ORDER BY {', '.join(FUNCTIONS)}"
    before = {dsn: query(dsn, second) for dsn in (product_dsn, archive_dsn)}
    assert len(before[archive_dsn]) == len(cohort_cells(SECOND_ANDROID_APP_ID)) * 3
    clean_sandbox.reset()
    fewer = several_apps(clean_sandbox, storage_resources, apps=(SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID))
    result = dg.materialize([cohort_ltv], resources=fewer, partition_key=day)
    assert result.success
    assert {c["app_id"] for c in cohort_calls(clean_sandbox)} == {SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID}
    for dsn in (product_dsn, archive_dsn):
        assert query(dsn, second) == before[dsn]
    assert result.asset_materializations_for_node(NODE)[0].metadata["appsflyer/carried_over"].value == [
        {"cohort_type": "user_acquisition", "kpi": "revenue", "rows": len(before[archive_dsn]),
         "partitions": [day], "app_ids": [SECOND_ANDROID_APP_ID]}]
