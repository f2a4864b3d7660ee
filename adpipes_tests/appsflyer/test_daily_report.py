"""appsflyer/daily_report end to end: sandbox aggregate API over real HTTP -> asset -> PostgreSQL."""

import datetime as dt
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import psycopg
import pyarrow as pa
import pytest

from adpipes.appsflyer.daily_report import (
    daily_report,
    daily_report_frame,
    daily_report_refresh_run_request,
    refresh_range,
)
from adpipes.appsflyer import aggregate_api as aggregate_api_module
from adpipes.appsflyer.aggregate_api import AppsFlyerAggregateApi
from adpipes.appsflyer.api import AppsFlyerQuotaError
from adpipes.appsflyer.cohort_api import AppsFlyerCohortApi
from adpipes.appsflyer.resources import AppsFlyerApps
from adpipes.appsflyer.schemas import daily_report_delivered_schema, daily_report_schema
from adpipes.lib.quality import find_failures
from adpipes.dev.sandbox.appsflyer_aggregate import daily_report_cells, daily_report_figures
from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID
from adpipes_tests.fixtures.sandbox import prod_cli_env

TZ = "Asia/Seoul"
APPS = {"android": SANDBOX_ANDROID_APP_ID, "ios": SANDBOX_IOS_APP_ID}
SPACING = 0.6


def recent_day(days_ago: int) -> str:
    return (dt.datetime.now(ZoneInfo(TZ)).date() - dt.timedelta(days=days_ago)).isoformat()


def client_settings(sandbox) -> dict:
    return dict(api_token=sandbox.appsflyer_token, base_url=sandbox.base_url, timezone=TZ,
                backoff_seconds=0.01, max_backoff_seconds=0.5, timeout_seconds=10)


def make_api(sandbox, **overrides) -> AppsFlyerAggregateApi:
    return AppsFlyerAggregateApi(**{**client_settings(sandbox), "aggregate_min_interval_seconds": SPACING,
                                    **overrides})


def make_cohort_api(sandbox, **overrides) -> AppsFlyerCohortApi:
    return AppsFlyerCohortApi(**{**client_settings(sandbox), "cohort_rate_window_seconds": 1.0, **overrides})


@pytest.fixture
def resources(clean_sandbox, storage_resources):
    return {
        "appsflyer_aggregate_api": make_api(clean_sandbox),
        "appsflyer_cohort_api": make_cohort_api(clean_sandbox),
        "appsflyer_apps": AppsFlyerApps(android_app_id=SANDBOX_ANDROID_APP_ID, ios_app_id=SANDBOX_IOS_APP_ID,
                                        currency="KRW"),
        **storage_resources,
    }


def report_calls(sandbox) -> list[dict]:
    return [c for c in sandbox.calls() if c["report"] == "daily_report"]


def query(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def expected(platform: str, day: str) -> dict[str, float]:
    figures = [daily_report_figures(APPS[platform], dt.date.fromisoformat(day), s, c)
               for s, _, c in daily_report_cells(APPS[platform])]
    return {"rows": len(figures), "installs": sum(f["installs"] for f in figures),
            "cost": round(sum(f["total_cost"] or 0 for f in figures), 2)}


def test_day_lands_typed_with_vendor_nulls(resources, clean_sandbox, clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = recent_day(3)
    result = dg.materialize([daily_report], resources=resources, partition_key=day)
    assert result.success
    calls = report_calls(clean_sandbox)
    assert sorted(c["app_id"] for c in calls) == sorted(APPS.values())
    assert all(c["params"]["from"] == c["params"]["to"] == day and c["params"]["timezone"] == TZ for c in calls)

    for dsn in (product_dsn, archive_dsn):
        per_platform = {p: (n, int(i), float(c)) for p, n, i, c in query(dsn, (
            "SELECT platform, count(*), sum(installs), sum(total_cost) FROM appsflyer.daily_report "
            f"WHERE report_date = '{day}' GROUP BY 1"))}
        for platform in APPS:
            want = expected(platform, day)
            assert per_platform[platform] == (want["rows"], want["installs"], pytest.approx(want["cost"]))
    organic = query(product_dsn, "SELECT agency, campaign, impressions, clicks, ctr, total_cost, "
                    "average_ecpi, installs FROM appsflyer.daily_report WHERE media_source = 'organic'")
    assert len(organic) == 2
    assert all(row[:7] == (None,) * 7 and row[7] > 0 for row in organic)
    agencies = {r[0] for r in query(product_dsn, "SELECT DISTINCT agency FROM appsflyer.daily_report")}
    assert agencies == {None, "adpipes_agency"}
    types = dict(query(product_dsn, "SELECT column_name, data_type FROM information_schema.columns "
                       "WHERE table_schema = 'appsflyer' AND table_name = 'daily_report'"))
    assert types["installs"] == types["loyal_users"] == types["impressions"] == "bigint"
    assert types["total_cost"] == types["ctr"] == types["average_ecpi"] == "numeric"
    assert types["report_date"] == types["date"] == "date"
    assert "loyal_users" in types and not any("loyal_usres" in c for c in types)
    assert query(product_dsn, "SELECT count(*) FROM appsflyer.daily_report WHERE date <> report_date") == [(0,)]
    # Aggregate reports are in the app's currency, whatever is asked: every row says which.
    for dsn in (product_dsn, archive_dsn):
        assert query(dsn, "SELECT DISTINCT currency FROM appsflyer.daily_report") == [("KRW",)]
    metadata = result.asset_materializations_for_node("appsflyer__daily_report")[0].metadata
    assert metadata["appsflyer/api_calls"].value == 2
    assert metadata["installs_by_platform"].value == {p: expected(p, day)["installs"] for p in APPS}


def test_unknown_vendor_column_is_kept_and_flagged(resources, clean_sandbox, clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = recent_day(4)
    clean_sandbox.configure(aggregate_extra_columns=["Retargeting Installs"])
    result = dg.materialize([daily_report], resources=resources, partition_key=day)
    assert result.success
    metadata = result.asset_materializations_for_node("appsflyer__daily_report")[0].metadata
    assert metadata["appsflyer/unknown_columns"].value == ["retargeting_installs"]
    for dsn in (archive_dsn, product_dsn):
        values = {r[0] for r in query(dsn, "SELECT retargeting_installs FROM appsflyer.daily_report")}
        assert values == {f"retargeting_installs:{day[5:7]}{day[8:]}"}
    # The known columns are still mapped by name although the header grew.
    assert query(product_dsn, "SELECT count(*) FROM appsflyer.daily_report WHERE installs IS NULL") == [(0,)]


def test_header_order_does_not_matter_and_bad_numbers_break_a_rule():
    shuffled = pa.table({
        "Installs": ["12"], "Campaign (c)": ["None"], "Total Cost": ["N/A"], "Date": ["2026-11-01"],
        "Media Source (pid)": ["organic"], "Agency/PMD (af_prt)": ["None"], "Brand New": [""],
    })
    parsed = daily_report_frame(shuffled.to_pandas(), "ios", "id1", "KRW")
    assert parsed.frame["currency"].tolist() == ["KRW"]
    row = parsed.frame.iloc[0]
    assert row["installs"] == 12 and row["report_date"] == "2026-11-01" and row["platform"] == "ios"
    assert row.isna()[["campaign", "agency", "total_cost", "impressions"]].all()
    assert parsed.unknown_columns == ["brand_new"] and "Clicks" in parsed.missing_columns
    bad = pa.table({"Date": ["2026-11-01", "2026-11-01"], "Media Source (pid)": ["a", "b"],
                    "Installs": ["12.5", "-3"]})
    failures = find_failures(daily_report_delivered_schema(), bad.to_pandas())
    assert failures[["row", "check_name", "value"]].values.tolist() == [[0, "parseable_values", "12.5"]]
    typed = daily_report_frame(bad.to_pandas(), "ios", "id1", "KRW").frame
    assert pd.isna(typed["installs"].iloc[0])
    failures = find_failures(daily_report_schema(), typed)
    assert failures[["row", "check_name", "value"]].values.tolist() == [[1, "non_negative", "-3"]]


def test_a_report_without_date_is_rejected_whole_and_kept_as_delivered(resources, clean_sandbox,
                                                                      clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = recent_day(2)
    assert dg.materialize([daily_report], resources=resources, partition_key=day).success
    before = query(product_dsn, "SELECT count(*) FROM appsflyer.daily_report")
    clean_sandbox.configure(aggregate_drop_columns=["Date"])
    result = dg.materialize([daily_report], resources=resources, partition_key=day, raise_on_error=False)
    assert not result.success
    evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}["required_columns"]
    assert not evaluation.passed and "Date" in evaluation.metadata["sample"].value
    message = [e.event_specific_data.error.message for e in result.all_events
               if e.event_type_value == "STEP_FAILURE"][0]
    assert "appsflyer/daily_report" in message and day in message and "Date" in message
    # Product keeps the previous load of the day untouched; the archive keeps what was delivered.
    assert query(product_dsn, "SELECT count(*) FROM appsflyer.daily_report") == before
    rejected = query(archive_dsn, "SELECT report_date::text, problem, content FROM quality.rejected_deliveries")
    assert len(rejected) == 2 and {r[0] for r in rejected} == {day}
    assert all("Media Source (pid)" in r[2].splitlines()[0] and "Date" not in r[2].splitlines()[0]
               for r in rejected)


def test_range_is_one_call_per_platform_with_per_partition_counts(resources, clean_sandbox, clean_databases):
    product_dsn, _ = clean_databases
    day = recent_day(2)
    request = daily_report_refresh_run_request(day)
    first, last = refresh_range(day)
    assert (first, last) == (recent_day(4), day)
    result = dg.materialize([daily_report], resources=resources, tags=request.tags)
    assert result.success
    calls = report_calls(clean_sandbox)
    assert len(calls) == 2
    assert {(c["params"]["from"], c["params"]["to"]) for c in calls} == {(first, last)}
    metadata = result.asset_materializations_for_node("appsflyer__daily_report")[0].metadata
    per_partition = metadata["partition_row_counts"].value
    want = {d: sum(expected(p, d)["rows"] for p in APPS) for d in (recent_day(4), recent_day(3), day)}
    assert per_partition == want
    assert dict(query(product_dsn, "SELECT report_date::text, count(*) FROM appsflyer.daily_report GROUP BY 1")) == want


def test_second_run_leaves_identical_tables(resources, clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = recent_day(5)
    snapshot = "SELECT * FROM appsflyer.daily_report ORDER BY platform, media_source, campaign"
    assert dg.materialize([daily_report], resources=resources, partition_key=day).success
    first = (query(product_dsn, snapshot), query(archive_dsn, snapshot))
    assert dg.materialize([daily_report], resources=resources, partition_key=day).success
    assert (query(product_dsn, snapshot), query(archive_dsn, snapshot)) == first
    assert len(first[0]) == sum(expected(p, day)["rows"] for p in APPS)


def test_short_ranges_are_spaced_a_minute_apart(clean_sandbox):
    # The sandbox enforces the real rule: a second <= 2-day call within the interval is a 403.
    clean_sandbox.configure(aggregate_minute_quota=SPACING)
    api = make_api(clean_sandbox)
    day = dt.date.fromisoformat(recent_day(3))
    finished = []
    for _ in range(3):
        api.fetch_aggregate_report(SANDBOX_IOS_APP_ID, "daily_report", day, day)
        finished.append(time.monotonic())
    gaps = [b - a for a, b in zip(finished, finished[1:])]
    assert all(gap >= SPACING * 0.95 for gap in gaps), gaps
    calls = report_calls(clean_sandbox)
    assert len(calls) == 3 and all(c["status"] == 200 for c in calls)


def test_limit_reached_for_short_range_waits_and_retries(clean_sandbox):
    api = make_api(clean_sandbox)
    clean_sandbox.add_faults(kind="quota_403", app_id=SANDBOX_ANDROID_APP_ID, report="daily_report")
    day = dt.date.fromisoformat(recent_day(3))
    started = time.monotonic()
    report = api.fetch_aggregate_report(SANDBOX_ANDROID_APP_ID, "daily_report", day, day)
    assert time.monotonic() - started >= SPACING * 0.95
    assert report.calls == 2 and report.to_arrow().num_rows == expected("android", day.isoformat())["rows"]
    assert [c["status"] for c in report_calls(clean_sandbox)] == [403, 200]


def test_limit_reached_every_time_fails_naming_app_and_report(clean_sandbox):
    api = make_api(clean_sandbox, aggregate_quota_retries=1)
    clean_sandbox.add_faults(kind="quota_403", report="daily_report", times=5)
    day = dt.date.fromisoformat(recent_day(3))
    with pytest.raises(AppsFlyerQuotaError, match=rf"daily_report for app {SANDBOX_IOS_APP_ID}.*one-call-per-minute"):
        api.fetch_aggregate_report(SANDBOX_IOS_APP_ID, "daily_report", day, day)
    assert len(report_calls(clean_sandbox)) == 2


def test_daily_quota_for_long_range_fails_at_once(clean_sandbox):
    api = make_api(clean_sandbox)
    clean_sandbox.add_faults(kind="quota_403", report="daily_report", times=5)
    last = dt.date.fromisoformat(recent_day(3))
    with pytest.raises(AppsFlyerQuotaError, match="00:00 UTC"):
        api.fetch_aggregate_report(SANDBOX_IOS_APP_ID, "daily_report", last - dt.timedelta(days=6), last)
    assert len(report_calls(clean_sandbox)) == 1


def test_429_then_success(resources, clean_sandbox, clean_databases):
    product_dsn, _ = clean_databases
    day = recent_day(3)
    clean_sandbox.add_faults(kind="429", retry_after=0, app_id=SANDBOX_IOS_APP_ID, report="daily_report")
    assert dg.materialize([daily_report], resources=resources, partition_key=day).success
    assert [c["status"] for c in report_calls(clean_sandbox) if c["app_id"] == SANDBOX_IOS_APP_ID] == [429, 200]
    assert query(product_dsn, "SELECT sum(installs) FROM appsflyer.daily_report WHERE platform = 'ios'") == [
        (expected("ios", day)["installs"],)]


def test_prod_cli_materializes_daily_report_and_cohort_ltv(clean_sandbox, clean_databases, tmp_path):
    product_dsn, archive_dsn = clean_databases
    day = recent_day(3)
    env = prod_cli_env(clean_sandbox, product_dsn, archive_dsn, str(tmp_path), timezone=TZ)
    # Two Android apps in one variable: the resource reads it through EnvVar and splits it at run time.
    second = "com.adpipes.second"
    clean_sandbox.configure(apps=[*APPS.values(), second])
    env["APPSFLYER_ANDROID_APP_ID"] = f"{SANDBOX_ANDROID_APP_ID},{second}"
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "adpipes.definitions",
               "--select", "appsflyer/daily_report,appsflyer/cohort_ltv", "--partition", day]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert clean_sandbox.appsflyer_token not in done.stdout + done.stderr
    apps = {**{app_id: p for p, app_id in APPS.items()}, second: "android"}
    for dsn in (product_dsn, archive_dsn):
        installs = dict(query(dsn, "SELECT app_id, sum(installs) FROM appsflyer.daily_report GROUP BY 1"))
        assert installs == {a: sum(daily_report_figures(a, dt.date.fromisoformat(day), s, c)["installs"]
                                   for s, _, c in daily_report_cells(a)) for a in apps}
        periods = query(dsn, "SELECT app_id, platform, array_agg(DISTINCT period ORDER BY period) "
                             "FROM appsflyer.cohort_ltv GROUP BY 1, 2 ORDER BY 1")
        assert periods == [(a, apps[a], [0, 1, 2]) for a in sorted(apps)]
    assert {c["report"] for c in clean_sandbox.calls()} == {"daily_report", "cohort"}
    assert sorted(c["app_id"] for c in clean_sandbox.calls() if c["report"] == "daily_report") == sorted(apps)


def test_only_ranges_of_three_days_or_more_count_against_the_daily_quota(resources, clean_sandbox,
                                                                         clean_databases):
    _, archive_dsn = clean_databases
    api = make_api(clean_sandbox, daily_quotas={"daily_report": 1})
    resources = {**resources, "appsflyer_aggregate_api": api}
    request = daily_report_refresh_run_request(recent_day(2))  # 3 days: one call per app, counted
    assert dg.materialize([daily_report], resources=resources, tags=request.tags).success
    # A 1-day run is limited per minute, not per day: it still runs with the daily quota spent.
    assert dg.materialize([daily_report], resources=resources, partition_key=recent_day(6)).success
    assert query(archive_dsn, "SELECT app_id, calls, quota_calls FROM quota.api_calls ORDER BY 1") == [
        (SANDBOX_ANDROID_APP_ID, 2, 1), (SANDBOX_IOS_APP_ID, 2, 1)
    ]
    calls_before = len(report_calls(clean_sandbox))
    refused = dg.materialize([daily_report], resources=resources, tags=request.tags, raise_on_error=False)
    assert not refused.success
    message = [e.event_specific_data.error.message for e in refused.all_events
               if e.event_type_value == "STEP_FAILURE"][0]
    # Both apps are checked before either is called, and both are named.
    for app_id in APPS.values():
        assert f"daily_report for app {app_id}, but only 0 of today's 1 are left" in message
    assert "resets at" in message
    assert len(report_calls(clean_sandbox)) == calls_before


def test_short_ranges_wait_for_calls_made_by_other_processes(resources, clean_sandbox, monkeypatch):
    # Another run process called the report just now: only the ledger knows, not this process.
    monkeypatch.setattr(aggregate_api_module, "_AGGREGATE_SPACING", aggregate_api_module.MinuteSpacing())
    clean_sandbox.configure(aggregate_minute_quota=SPACING)
    api = make_api(clean_sandbox)
    meter = api.quota_meter(resources["api_calls"], SANDBOX_IOS_APP_ID, "daily_report")
    meter.spend(counts_against_quota=False)
    started = time.monotonic()
    day = dt.date.fromisoformat(recent_day(3))
    api.fetch_aggregate_report(SANDBOX_IOS_APP_ID, "daily_report", day, day, quota=meter)
    assert time.monotonic() - started >= SPACING * 0.9
    assert [c["status"] for c in report_calls(clean_sandbox)] == [200]


# -- several apps per platform ----------------------------------------------------------------------

SECOND_ANDROID_APP_ID = "com.adpipes.second"
# Android first, in the order configured (AppsFlyerApps.platform_apps).
SEVERAL = {SANDBOX_ANDROID_APP_ID: "android", SECOND_ANDROID_APP_ID: "android", SANDBOX_IOS_APP_ID: "ios"}
BY_APP = ("SELECT app_id, platform, count(*), sum(installs), sum(total_cost)::float8 FROM appsflyer.daily_report "
          "WHERE report_date = '{day}' GROUP BY 1, 2 ORDER BY 1")
SNAPSHOT = "SELECT * FROM appsflyer.daily_report ORDER BY report_date, app_id, media_source, campaign"


def several_apps(sandbox, resources, apps=tuple(SEVERAL)) -> dict:
    sandbox.configure(apps=list(SEVERAL))
    android = ",".join(a for a in apps if SEVERAL[a] == "android")
    ios = ",".join(a for a in apps if SEVERAL[a] == "ios")
    return {**resources, "appsflyer_apps": AppsFlyerApps(android_app_id=android, ios_app_id=ios, currency="KRW")}


def expected_by_app(app_id: str, day: str) -> tuple:
    figures = [daily_report_figures(app_id, dt.date.fromisoformat(day), s, c) for s, _, c in daily_report_cells(app_id)]
    return (app_id, SEVERAL[app_id], len(figures), sum(f["installs"] for f in figures),
            pytest.approx(sum(f["total_cost"] or 0 for f in figures)))


def step_failure(result) -> str:
    return [e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]


def test_two_android_apps_and_an_ios_app_each_land_with_their_app_id_and_calls(resources, clean_sandbox,
                                                                              clean_databases):
    product_dsn, archive_dsn = clean_databases
    resources = several_apps(clean_sandbox, resources)
    request = daily_report_refresh_run_request(recent_day(2))  # a 3-day range: counted against the quota
    result = dg.materialize([daily_report], resources=resources, tags=request.tags)
    assert result.success
    first, last = refresh_range(recent_day(2))
    # One call per app for the whole range, every app asked for its own report.
    assert sorted((c["app_id"], c["params"]["from"], c["params"]["to"]) for c in report_calls(clean_sandbox)) == sorted(
        (app_id, first, last) for app_id in SEVERAL)
    for dsn in (product_dsn, archive_dsn):
        for day in (first, recent_day(3), last):
            assert query(dsn, BY_APP.format(day=day)) == sorted(expected_by_app(a, day) for a in SEVERAL)
        assert query(dsn, "SELECT count(*) FROM appsflyer.daily_report WHERE app_id IS NULL") == [(0,)]
    # The two Android apps have the same media sources and campaigns, told apart by app_id.
    assert query(product_dsn, f"SELECT count(DISTINCT (media_source, campaign)) FROM appsflyer.daily_report "
                              f"WHERE platform = 'android' AND report_date = '{last}'") == [
        (len(list(daily_report_cells(SECOND_ANDROID_APP_ID))),)]
    # Each app has its own calls and quota in the ledger.
    assert query(archive_dsn, "SELECT app_id, report, calls, quota_calls FROM quota.api_calls ORDER BY 1") == [
        (app_id, "daily_report", 1, 1) for app_id in sorted(SEVERAL)]
    metadata = result.asset_materializations_for_node("appsflyer__daily_report")[0].metadata
    assert metadata["appsflyer/api_calls_by_app"].value == dict.fromkeys(SEVERAL, 1)
    assert metadata["appsflyer/app_ids"].value == list(SEVERAL)
    assert set(metadata["appsflyer/quota"].value) == {f"{app_id} daily_report" for app_id in SEVERAL}


def test_one_app_failing_leaves_the_stored_day_of_every_app_as_it_was(resources, clean_sandbox, clean_databases):
    product_dsn, archive_dsn = clean_databases
    resources = several_apps(clean_sandbox, resources)
    day = recent_day(3)
    assert dg.materialize([daily_report], resources=resources, partition_key=day).success
    before = (query(product_dsn, SNAPSHOT), query(archive_dsn, SNAPSHOT))
    assert {row[2] for row in before[0]} == set(SEVERAL)  # app_id: every app has rows of the day
    clean_sandbox.reset()
    clean_sandbox.configure(apps=list(SEVERAL), aggregate_extra_columns=["Retargeting Installs"])
    # The second Android app's quota is spent (not retried); the first app has answered already.
    clean_sandbox.add_faults(kind="quota", app_id=SECOND_ANDROID_APP_ID, report="daily_report")
    result = dg.materialize([daily_report], resources=resources, partition_key=day, raise_on_error=False)
    assert not result.success
    message = step_failure(result)
    assert f"appsflyer/daily_report partition {day}: app {SECOND_ANDROID_APP_ID} failed" in message
    assert "API call limit" in message and "00:00 UTC" in message
    assert f"Nothing of the partition {day} was written, for any app" in message and "re-run" in message
    assert f"calls per app before the failure: {SANDBOX_ANDROID_APP_ID} 1;" in message
    assert f"not called: {SANDBOX_IOS_APP_ID}" in message
    assert [(c["app_id"], c["status"]) for c in report_calls(clean_sandbox)] == [
        (SANDBOX_ANDROID_APP_ID, 200), (SECOND_ANDROID_APP_ID, 400)]
    # Neither the first app's new answer (it has a new column) nor anything else was written.
    assert (query(product_dsn, SNAPSHOT), query(archive_dsn, SNAPSHOT)) == before
    for dsn in (product_dsn, archive_dsn):
        assert query(dsn, "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'appsflyer' "
                          "AND table_name = 'daily_report' AND column_name = 'retargeting_installs'") == [(0,)]


def test_a_report_without_date_for_one_app_writes_nothing_and_names_the_app(resources, clean_sandbox,
                                                                           clean_databases):
    product_dsn, _ = clean_databases
    resources = several_apps(clean_sandbox, resources, apps=(SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID))
    day = recent_day(4)
    assert dg.materialize([daily_report], resources=resources, partition_key=day).success
    before = query(product_dsn, SNAPSHOT)
    clean_sandbox.configure(aggregate_drop_columns=["Date"])
    result = dg.materialize([daily_report], resources=resources, partition_key=day, raise_on_error=False)
    assert not result.success
    message = step_failure(result)
    assert f"app {SANDBOX_ANDROID_APP_ID} (android)" in message and f"app {SANDBOX_IOS_APP_ID} (ios)" in message
    assert "Nothing of the partition" in message and "for any app" in message and "Date" in message
    assert query(product_dsn, SNAPSHOT) == before


def test_an_app_removed_from_the_settings_cannot_drop_its_archived_rows(resources, clean_sandbox,
                                                                       clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = recent_day(5)
    assert dg.materialize([daily_report], resources=several_apps(clean_sandbox, resources), partition_key=day).success
    before = [query(dsn, BY_APP.format(day=day)) for dsn in (product_dsn, archive_dsn)]
    assert SECOND_ANDROID_APP_ID in [r[0] for r in before[1]]
    calls = len(clean_sandbox.calls())
    fewer = several_apps(clean_sandbox, resources, apps=(SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID))
    result = dg.materialize([daily_report], resources=fewer, partition_key=day, raise_on_error=False)
    assert not result.success
    message = step_failure(result)
    assert f"app(s) {SECOND_ANDROID_APP_ID}" in message and "no longer configured" in message
    assert "nothing was called or written" in message
    assert len(clean_sandbox.calls()) == calls
    assert [query(dsn, BY_APP.format(day=day)) for dsn in (product_dsn, archive_dsn)] == before


def test_a_table_of_the_first_layout_is_kept_as_layout1(resources, clean_sandbox, clean_databases):
    day = recent_day(3)
    for dsn in clean_databases:
        with psycopg.connect(dsn) as conn:
            # Layout 1 (no layout comment): one app per platform, no app_id.
            conn.execute("CREATE SCHEMA appsflyer")
            conn.execute("CREATE TABLE appsflyer.daily_report (report_date date, platform text, media_source text, "
                         "installs bigint) PARTITION BY RANGE (report_date)")
            conn.execute(f"CREATE TABLE appsflyer.daily_report_d PARTITION OF appsflyer.daily_report "
                         f"FOR VALUES FROM ('{day}') TO ('{recent_day(2)}')")
            conn.execute(f"INSERT INTO appsflyer.daily_report VALUES ('{day}', 'ios', 'organic', 7)")
    assert dg.materialize([daily_report], resources=resources, partition_key=day).success
    for dsn in clean_databases:
        assert query(dsn, "SELECT report_date::text, platform, media_source, installs "
                          "FROM appsflyer.daily_report_layout1") == [(day, "ios", "organic", 7)]
        assert query(dsn, "SELECT app_id, count(*) FROM appsflyer.daily_report GROUP BY 1 ORDER BY 1") == [
            (SANDBOX_ANDROID_APP_ID, expected("android", day)["rows"]), (SANDBOX_IOS_APP_ID, expected("ios", day)["rows"])]
        assert query(dsn, "SELECT is_nullable FROM information_schema.columns WHERE table_schema = 'appsflyer' "
                          "AND table_name = 'daily_report' AND column_name = 'app_id'") == [("NO",)]


# -- bad rows through the asset: what reaches product and quality.quarantine ----------------------

@pytest.fixture
def edited_answers(clean_sandbox):
    """Edit the sandbox's daily_report CSV before it is sent (the aggregate endpoint has no row
    overrides): ``edit({(app_id, media source, campaign): {header: value}})``. The answer still
    travels over real HTTP; the route is restored after the test."""
    import csv
    import io

    from adpipes.dev.sandbox.appsflyer_aggregate import AGGREGATE_PATH

    edits: dict[tuple[str, str, str], dict[str, str]] = {}
    index = next(i for i, (_, pattern, _) in enumerate(clean_sandbox.routes) if pattern.pattern == AGGREGATE_PATH)
    method, pattern, original = clean_sandbox.routes[index]

    def edited(server, request):
        response = original(server, request)
        if response.status != 200:
            return response
        rows = list(csv.DictReader(io.StringIO(response.body.decode("utf-8"))))
        for row in rows:
            row.update(edits.get((request.match["app_id"], row["Media Source (pid)"], row["Campaign (c)"]), {}))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        response.body = out.getvalue().encode("utf-8")
        return response

    clean_sandbox.routes[index] = (method, pattern, edited)
    try:
        yield edits.update
    finally:
        clean_sandbox.routes[index] = (method, pattern, original)


def test_bad_rows_are_quarantined_and_a_ctr_out_of_range_is_written_and_reported(resources, clean_databases,
                                                                                 edited_answers):
    """assets.md: a row with a value that is not a number, or a negative count or cost, is
    quarantined (checks.md: parseable_values, non_negative, ERROR), the other rows written, and
    with the default ADPIPES_MAX_QUARANTINED_SHARE (0) the run fails; checks.md: rate_ranges
    (WARN) fails on a ctr outside [0, 1], and the row is written and reported."""
    product_dsn, archive_dsn = clean_databases
    day = recent_day(3)
    android, ios = SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID
    edited_answers({
        (android, "googleadwords_int", "KR_UAC_Install, AOS"): {"Installs": "many"},
        (android, "tiktokglobal_int", "TT_KR_Install"): {"Total Cost": "-3"},
        (ios, "Apple Search Ads", "ASA_Brand_KR"): {"CTR": "1.5"},
    })
    result = dg.materialize([daily_report], resources=resources, partition_key=day, raise_on_error=False)
    assert not result.success
    message = [e.event_specific_data.error.message for e in result.all_events
               if e.event_type_value == "STEP_FAILURE"][0]
    assert "appsflyer/daily_report" in message and "quality.quarantine" in message

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    for name in ("parseable_values", "non_negative"):
        assert not checks[name].passed and checks[name].severity == dg.AssetCheckSeverity.ERROR, name
        assert checks[name].metadata["failing_rows"].value == 1, name
    assert not checks["rate_ranges"].passed and checks["rate_ranges"].severity == dg.AssetCheckSeverity.WARN
    assert checks["rate_ranges"].metadata["failing_rows"].value == 1

    served = sum(expected(p, day)["rows"] for p in APPS)
    assert query(product_dsn, "SELECT count(*) FROM appsflyer.daily_report") == [(served - 2,)]
    assert query(product_dsn, "SELECT count(*) FROM appsflyer.daily_report WHERE media_source = "
                              "'tiktokglobal_int' OR campaign = 'KR_UAC_Install, AOS'") == [(0,)]
    assert query(product_dsn, "SELECT ctr::float8 FROM appsflyer.daily_report WHERE campaign = 'ASA_Brand_KR'") == [
        (1.5,)]
    # Kept as delivered (the vendor's headers), with the reasons.
    quarantined = query(archive_dsn, "SELECT row_values->>'Media Source (pid)', reasons FROM quality.quarantine "
                                     "WHERE asset_key = 'appsflyer/daily_report' ORDER BY 1")
    assert [source for source, _ in quarantined] == ["googleadwords_int", "tiktokglobal_int"]
    assert "many" in quarantined[0][1] and "-3" in quarantined[1][1]
    cases = query(archive_dsn, "SELECT check_name, column_name, value FROM quality.failure_cases "
                               "WHERE asset_key = 'appsflyer/daily_report' ORDER BY 1")
    assert [(name, column) for name, column, _ in cases] == [
        ("non_negative", "total_cost"), ("parseable_values", "Installs"), ("rate_ranges", "ctr")]
    assert float(cases[0][2]) == -3 and cases[1][2] == "many" and float(cases[2][2]) == 1.5
