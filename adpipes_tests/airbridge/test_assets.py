"""The airbridge/revenue asset end to end: sandbox over real HTTP -> asset -> real PostgreSQL."""

import datetime as dt
import json
import logging
import subprocess
import sys
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest
import requests

from adpipes.airbridge.assets import revenue
from adpipes.airbridge.resources import AirbridgeApi
from adpipes.definitions import build_definitions
from adpipes.dev.sandbox import airbridge as sandbox_airbridge
from adpipes.lib.settings import SANDBOX_AIRBRIDGE_APP_NAME, ConfigurationError, load_settings
from adpipes_tests.fixtures.sandbox import prod_cli_env
from adpipes_tests.fixtures.vendor_examples import example

TZ = "Asia/Seoul"
APP = SANDBOX_AIRBRIDGE_APP_NAME
NODE = "airbridge__revenue"


def today() -> dt.date:
    return dt.datetime.now(ZoneInfo(TZ)).date()


def recent_day(days_ago: int = 1) -> str:
    return (today() - dt.timedelta(days=days_ago)).isoformat()


@pytest.fixture
def resources(airbridge_api: AirbridgeApi, storage_resources):
    return {"airbridge_api": airbridge_api, **storage_resources}


def configured(api: AirbridgeApi, **changes) -> AirbridgeApi:
    # A new resource: Dagster builds a run's resources from their config, which model_copy does
    # not change.
    return AirbridgeApi(**{**api.model_dump(), **changes})


def query(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def table_snapshot(dsn: str) -> list[tuple]:
    return query(dsn, "SELECT * FROM airbridge.revenue ORDER BY report_date, group_values, day_n")


def served(sandbox, body: dict) -> dict[tuple[str, str], dict]:
    """What the sandbox serves the app for a query body (see :func:`served_for`)."""
    return served_for(sandbox, APP, body)


def serve_printed_page(sandbox, page: dict, day: str, total_count: int = 1) -> None:
    """The sandbox answers the next task with the printed page (one group row; by default a
    totalCount that matches it), its (first) date moved to ``day``."""
    page["data"]["metadata"]["totalCount"] = total_count
    for date_row in page["data"]["stats"]["rows"][0]["rows"][:1]:
        date_row["date"] = day
    page["data"]["taskId"] = "printed-task"
    sandbox_airbridge.configure(sandbox, next_task_ids=["printed-task"], canned_answers=[page])


def test_a_day_over_several_pages_stores_what_was_served(resources, airbridge_api, clean_databases, clean_sandbox):
    """Done when: one day over several pages; per-date total revenue as served, masked flags
    kept, the notification code in the run's log and metadata, in product and archive."""
    product_dsn, archive_dsn = clean_databases
    day = recent_day(3)
    instance = dg.DagsterInstance.ephemeral()
    resources = {**resources, "airbridge_api": configured(airbridge_api, page_size=3)}
    result = dg.materialize([revenue], resources=resources, partition_key=day, instance=instance)
    assert result.success
    gets = [c for c in clean_sandbox.calls() if c["method"] == "GET" and c["status_served"] == "SUCCESS"]
    assert [c["params"]["skip"] for c in gets] == ["0", "3", "6"]

    (post,) = [c for c in clean_sandbox.calls() if c["method"] == "POST"]
    expected = served(clean_sandbox, post["body"])
    assert len(expected) == 8
    for dsn in (product_dsn, archive_dsn):
        stored = query(dsn, "SELECT DISTINCT group_values, report_date::text, total_revenue::float8, total_cost::float8, "
                            "total_unique_users, total_unique_users_is_masked FROM airbridge.revenue")
        assert {(g, d): (rev, cost, users, masked) for g, d, rev, cost, users, masked in stored} == {
            key: (row["total"]["totalRevenue"]["value"], row["total"]["totalCost"]["value"],
                  row["total"]["totalUniqueUsers"]["value"], row["total"]["totalUniqueUsers"]["isMasked"])
            for key, row in expected.items()}
        # A 3-day-old day has Day 0..3 for each of the 8 groups, each value as served.
        values = query(dsn, "SELECT group_values, day_n, value::float8, is_masked FROM airbridge.revenue")
        assert len(values) == 32
        assert {(g, n): (v, m) for g, n, v, m in values} == {
            (key[0], n): (f["value"], f["isMasked"]) for key, row in expected.items() for n, f in enumerate(row["values"])}
    masked = query(product_dsn, "SELECT channel, campaign, count(*), count(value) FROM airbridge.revenue "
                                "WHERE is_masked GROUP BY 1, 2")
    # The small group is masked: its figures keep the value Airbridge sent, flagged.
    assert masked == [("facebook.business", "Lookalike 1%, KR", 4, 4)]
    assert query(product_dsn, "SELECT DISTINCT currency FROM airbridge.revenue") == [("KRW",)]

    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["total_count"].passed and checks["unknown_columns"].passed
    metadata = result.asset_materializations_for_node(NODE)[0].metadata
    assert metadata["airbridge/notification_codes"].value == sandbox_airbridge.MASKING_CODE
    assert [n["code"] for n in metadata["airbridge/notifications"].value] == [sandbox_airbridge.MASKING_CODE]
    assert metadata["airbridge/pages"].value == 3 and metadata["dagster/partition_row_count"].value == 32
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert any(f"Airbridge notification '{sandbox_airbridge.MASKING_CODE}'" in w and day in w for w in warnings)

    # A second run replaces the partition: identical tables, nothing duplicated.
    before = (table_snapshot(product_dsn), table_snapshot(archive_dsn))
    assert dg.materialize([revenue], resources=resources, partition_key=day).success
    assert (table_snapshot(product_dsn), table_snapshot(archive_dsn)) == before


def test_an_extra_group_by_lands_as_a_named_column(resources, airbridge_api, clean_databases, clean_sandbox):
    product_dsn, archive_dsn = clean_databases
    api = configured(airbridge_api, group_by=["channel", "campaign", "ad_group"])
    day = recent_day(2)
    assert dg.materialize([revenue], resources={**resources, "airbridge_api": api}, partition_key=day).success
    for dsn in (product_dsn, archive_dsn):
        rows = query(dsn, "SELECT DISTINCT channel, campaign, ad_group, group_values FROM airbridge.revenue "
                          "WHERE channel = 'tiktok'")
        assert rows == [("tiktok", "TT_KR_Install", "TT_KR_Install / ad_group",
                         '{"ad_group": "TT_KR_Install / ad_group", "campaign": "TT_KR_Install", "channel": "tiktok"}')]


def test_grouped_by_channel_only_campaign_is_null(resources, airbridge_api, clean_databases):
    product_dsn, _ = clean_databases
    api = configured(airbridge_api, group_by=["channel"])
    assert dg.materialize([revenue], resources={**resources, "airbridge_api": api}, partition_key=recent_day(2)).success
    assert query(product_dsn, "SELECT count(DISTINCT channel), count(campaign) FROM airbridge.revenue") == [(6, 0)]


def test_undocumented_fields_are_kept_and_flagged(resources, airbridge_api, clean_databases, clean_sandbox):
    """Keys the document does not print: those in a group row land in extra_fields of its rows
    (jsonb, both databases), those beside it in the run's metadata with their values; all of
    them fail the unknown_columns check as a warning."""
    product_dsn, archive_dsn = clean_databases
    # The printed date has Days 0..3: 3 days must have passed.
    day = recent_day(3)
    page = example("airbridge_revenue_result_response")
    page["data"]["region"] = "kr"
    date_row = page["data"]["stats"]["rows"][0]["rows"][0]
    date_row["adCost"] = {"value": 3}
    date_row["total"]["totalCost"]["currency"] = "KRW"
    date_row["values"][3]["note"] = "late"
    serve_printed_page(clean_sandbox, page, day)
    api = configured(airbridge_api, group_by=["channel"])
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([revenue], resources={**resources, "airbridge_api": api}, partition_key=day,
                            instance=instance)
    assert result.success
    paths = ["data.region", "data.stats.rows[].rows[].adCost", "data.stats.rows[].rows[].total.totalCost.currency",
             "data.stats.rows[].rows[].values[].note"]
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "unknown_columns"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["unknown_columns"].value == paths
    metadata = result.asset_materializations_for_node(NODE)[0].metadata
    assert metadata["airbridge/unknown_fields"].value == paths
    assert metadata["airbridge/unknown_page_fields"].value == [
        {"app_name": APP, "task_id": "printed-task", "range": f"{day}..{day}", "answer": "result page",
         "pages": [1], "path": "data.region", "value": "kr"}]
    shared = {"rows[].adCost": {"value": 3}, "rows[].total.totalCost.currency": "KRW"}
    for dsn in (product_dsn, archive_dsn):
        assert query(dsn, "SELECT day_n, value::float8, extra_fields FROM airbridge.revenue ORDER BY day_n") == [
            (0, 1.0, shared), (1, 2.0, shared), (2, 3.0, shared), (3, 4.0, {**shared, "rows[].values[].note": "late"})]
        assert query(dsn, "SELECT data_type FROM information_schema.columns WHERE table_schema = 'airbridge' "
                          "AND table_name = 'revenue' AND column_name = 'extra_fields'") == [("jsonb",)]
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert any("kept in airbridge.revenue.extra_fields" in w and "data.stats.rows[].rows[].adCost" in w
               for w in warnings)
    assert any("airbridge/unknown_page_fields" in w and 'data.region="kr"' in w for w in warnings)


def test_unknown_columns_flags_the_partitions_whose_rows_carried_the_key(resources, airbridge_api, clean_databases,
                                                                        clean_sandbox):
    """A key inside a group row flags only the dates whose rows keep it; a key beside the group
    rows flags every partition of the task."""
    first, second = recent_day(4), recent_day(3)
    page = example("airbridge_revenue_result_response")
    page["data"]["region"] = "kr"
    group = page["data"]["stats"]["rows"][0]
    on_first = group["rows"][0]
    on_first["date"] = first
    on_first["values"][2]["note"] = "late"
    group["rows"].append({**json.loads(json.dumps(on_first)), "date": second})
    del group["rows"][1]["values"][2]["note"]
    # A second group with only the first date: its own key goes with that date's rows.
    page["data"]["stats"]["rows"].append({**json.loads(json.dumps(group)), "rows": [group["rows"][1] | {"date": first}],
                                          "metadata": ["other"], "segment": "s"})
    serve_printed_page(clean_sandbox, page, first, total_count=2)
    api = configured(airbridge_api, group_by=["channel"])
    result = dg.materialize([revenue], resources={**resources, "airbridge_api": api},
                            tags={"dagster/asset_partition_range_start": first,
                                  "dagster/asset_partition_range_end": second})
    assert result.success
    # One evaluation per partition, each with the keys its own rows carried.
    checks = {c.partition: c for c in result.get_asset_check_evaluations() if c.check_name == "unknown_columns"}
    assert all(not c.passed and c.severity == dg.AssetCheckSeverity.WARN for c in checks.values())
    assert {day: c.metadata["unknown_columns"].value for day, c in checks.items()} == {
        first: ["data.region", "data.stats.rows[].rows[].values[].note", "data.stats.rows[].segment"],
        second: ["data.region"],
    }


@pytest.mark.parametrize(("problem", "says"), [
    ("empty values", "date {day} came with an empty values list"),
    ("empty rows", 'group row 0 {{"channel": "<groupBy>"}} came with an empty rows list (no dates)'),
    ("padded values", "date {day} has 10 Day-N values, but only"),
], ids=["empty values", "empty rows", "padded values"])
def test_an_answer_of_an_unknown_shape_fails_the_run_and_keeps_the_previous_rows(
        resources, airbridge_api, clean_databases, clean_sandbox, problem, says):
    product_dsn, archive_dsn = clean_databases
    day = recent_day(2)
    api = configured(airbridge_api, group_by=["channel"])
    assert dg.materialize([revenue], resources={**resources, "airbridge_api": api}, partition_key=day).success
    before = (table_snapshot(product_dsn), table_snapshot(archive_dsn))
    assert len(before[0]) >= 6 * 3
    page = example("airbridge_revenue_result_response")
    date_row = page["data"]["stats"]["rows"][0]["rows"][0]
    if problem == "empty values":
        date_row["values"] = []
    elif problem == "padded values":
        # Days 0..9 for a day 2 (past midnight, 3) days old.
        date_row["values"] += [{"value": 5, "isMasked": False}] * 6
    else:
        page["data"]["stats"]["rows"][0]["rows"] = []
    serve_printed_page(clean_sandbox, page, day)
    result = dg.materialize([revenue], resources={**resources, "airbridge_api": api}, partition_key=day,
                            raise_on_error=False)
    assert not result.success
    failure = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert "printed-task" in failure and says.format(day=day) in failure
    assert (table_snapshot(product_dsn), table_snapshot(archive_dsn)) == before


@pytest.mark.parametrize("mode", ["fail", "warn"])
def test_a_total_count_mismatch_fails_or_warns_as_configured(resources, airbridge_api, clean_databases,
                                                               clean_sandbox, mode):
    product_dsn, archive_dsn = clean_databases
    first, last = recent_day(4), recent_day(3)
    # As printed: totalCount 48 beside one group row, here with two dates of Days 0..3.
    page = example("airbridge_revenue_result_response")
    dates = page["data"]["stats"]["rows"][0]["rows"]
    dates.append({**json.loads(json.dumps(dates[0])), "date": last})
    serve_printed_page(clean_sandbox, page, first, total_count=48)
    api = configured(airbridge_api, group_by=["channel"], total_count_mismatch=mode)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([revenue], resources={**resources, "airbridge_api": api}, instance=instance,
                            tags={"dagster/asset_partition_range_start": first,
                                  "dagster/asset_partition_range_end": last}, raise_on_error=False)
    if mode == "fail":
        assert not result.success
        failure = str(result.get_step_failure_events()[0].step_failure_data.error)
        assert "totalCount=48" in failure and "AIRBRIDGE_TOTAL_COUNT_MISMATCH=warn" in failure
        assert query(product_dsn, "SELECT to_regclass('airbridge.revenue') IS NULL") == [(True,)]
        return
    assert result.success
    metadata = result.asset_materializations_for_node(NODE)[0].metadata
    assert metadata["airbridge/total_count_mismatches"].value == [
        {"app_name": APP, "task_id": "printed-task", "range": f"{first}..{last}", "total_count": 48,
         "group_rows": 1, "group_date_rows": 2, "pages": 1}]
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert any("totalCount=48 on every page but paging returned 1 group rows" in w for w in warnings)
    assert query(product_dsn, "SELECT count(*), sum(value)::float8 FROM airbridge.revenue") == [(8, 20.0)]
    # Visible in the checks view: a failed WARN check on the task's partitions, its rows named.
    # One evaluation per partition: the task's rows of each day fail as a warning.
    by_day = {c.partition: c for c in result.get_asset_check_evaluations() if c.check_name == "total_count"}
    assert all(not c.passed and c.severity == dg.AssetCheckSeverity.WARN for c in by_day.values())
    assert {day: c.metadata["failing_rows"].value for day, c in by_day.items()} == {first: 4, last: 4}
    assert f"total_count_mismatch=task printed-task ({first}..{last}): totalCount 4" in by_day[first].metadata["sample"].value
    others = [c for c in result.get_asset_check_evaluations() if c.check_name in ("unknown_columns", "masked_values")]
    assert len(others) == 4 and all(c.passed for c in others)
    # Each failing row's value names the task and its whole range, in the archive's failure cases.
    value = (f"task printed-task ({first}..{last}): totalCount 48 on every page, paging returned 1 group rows "
             "(2 group-date rows) in 1 page(s)")
    assert query(archive_dsn, "SELECT report_date::text, count(*), min(value), max(value) FROM quality.failure_cases "
                              "WHERE check_name = 'total_count' GROUP BY 1 ORDER BY 1") == [
        (first, 4, value, value), (last, 4, value, value)]


def test_failed_task_fails_the_run_and_keeps_the_previous_rows(resources, clean_databases, clean_sandbox):
    product_dsn, _ = clean_databases
    day = recent_day(2)
    assert dg.materialize([revenue], resources=resources, partition_key=day).success
    before = table_snapshot(product_dsn)
    clean_sandbox.add_faults(kind="task_failure", app_id=APP, report="revenue")
    result = dg.materialize([revenue], resources=resources, partition_key=day, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    posts = [c for c in clean_sandbox.calls() if c["method"] == "POST"]
    assert posts[-1]["task_id"] in str(failure) and "FAILURE" in str(failure)
    assert clean_sandbox.airbridge_token not in str(failure)
    assert table_snapshot(product_dsn) == before


def test_range_backfill_is_one_task_with_per_partition_rows(resources, clean_databases, clean_sandbox):
    product_dsn, archive_dsn = clean_databases
    first, last = recent_day(4), recent_day(2)
    result = dg.materialize(
        [revenue], resources=resources,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )
    assert result.success
    (post,) = [c for c in clean_sandbox.calls() if c["method"] == "POST"]
    assert (post["body"]["from"], post["body"]["to"]) == (first, last)
    per_partition = result.asset_materializations_for_node(NODE)[0].metadata["partition_row_counts"].value
    # Each day has Day 0 through its age, for 8 groups.
    assert per_partition == {first: 8 * 5, recent_day(3): 8 * 4, last: 8 * 3}
    for dsn in (product_dsn, archive_dsn):
        rows = dict(query(dsn, "SELECT report_date::text, count(*) FROM airbridge.revenue GROUP BY 1"))
        assert rows == per_partition


def test_a_group_by_that_is_a_table_column_fails_the_load():
    with pytest.raises(ConfigurationError, match="AIRBRIDGE_GROUP_BY names day_n"):
        build_definitions(load_settings({"AIRBRIDGE_GROUP_BY": "channel,day_n"}))


def test_prod_cli_materializes_a_day_with_configured_group_bys(clean_sandbox, clean_databases, tmp_path):
    product_dsn, archive_dsn = clean_databases
    # The resource's default poll interval is 5 s; a task finishing at once keeps the test short.
    sandbox_airbridge.configure(clean_sandbox, polls_pending=0, polls_running=0)
    day = recent_day(2)
    env = prod_cli_env(clean_sandbox, product_dsn, archive_dsn, str(tmp_path), TZ)
    env["AIRBRIDGE_GROUP_BY"] = "channel,campaign,ad_creative"
    # Two apps in one variable: the resource reads it through EnvVar and splits it at run time.
    sandbox_airbridge.configure(clean_sandbox, apps=[APP, "adpipes-second"])
    env["AIRBRIDGE_APP_NAME"] = f"{APP},adpipes-second"
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "adpipes.definitions",
               "--select", "airbridge/revenue", "--partition", day]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert clean_sandbox.airbridge_token not in done.stdout + done.stderr
    assert clean_sandbox.appsflyer_token not in done.stdout + done.stderr
    posts = [c for c in clean_sandbox.calls() if c["method"] == "POST"]
    assert [c["app_id"] for c in posts] == [APP, "adpipes-second"]
    assert all(c["body"]["groupBy"] == {"fields": ["channel", "campaign", "ad_creative"]} for c in posts)
    for dsn in (product_dsn, archive_dsn):
        assert query(dsn, "SELECT DISTINCT report_date::text, currency FROM airbridge.revenue") == [(day, "KRW")]
        assert query(dsn, "SELECT app_name, count(DISTINCT ad_creative) FROM airbridge.revenue GROUP BY 1 "
                          "ORDER BY 1") == [(APP, 8), ("adpipes-second", 8)]


def test_a_layout_1_table_is_kept_beside_the_new_one(resources, clean_databases):
    product_dsn, archive_dsn = clean_databases
    for dsn in (product_dsn, archive_dsn):
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS airbridge")
            # Layout 1 (no layout comment): cohort_* columns read from an undocumented shape.
            conn.execute("CREATE TABLE airbridge.revenue (report_date date, cohort_revenue numeric)")
            conn.execute("INSERT INTO airbridge.revenue VALUES ('2026-01-01', 12.5)")
    assert dg.materialize([revenue], resources=resources, partition_key=recent_day(2)).success
    for dsn in (product_dsn, archive_dsn):
        assert query(dsn, "SELECT report_date::text, cohort_revenue::float8 FROM airbridge.revenue_layout1") == [
            ("2026-01-01", 12.5)]
        assert query(dsn, "SELECT count(*) FROM airbridge.revenue WHERE total_revenue IS NOT NULL") == [(8 * 3,)]


def test_a_layout_2_table_from_before_extra_fields_gains_the_column_and_keeps_its_rows(resources, clean_databases):
    product_dsn, archive_dsn = clean_databases
    assert dg.materialize([revenue], resources=resources, partition_key=recent_day(3)).success
    for dsn in (product_dsn, archive_dsn):
        with psycopg.connect(dsn) as conn:
            conn.execute("ALTER TABLE airbridge.revenue DROP COLUMN extra_fields")
    assert dg.materialize([revenue], resources=resources, partition_key=recent_day(2)).success
    for dsn in (product_dsn, archive_dsn):
        assert query(dsn, "SELECT report_date::text, count(*), count(extra_fields) FROM airbridge.revenue "
                          "GROUP BY 1 ORDER BY 1") == [(recent_day(3), 8 * 4, 0), (recent_day(2), 8 * 3, 0)]
        assert query(dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = 'airbridge' "
                          "AND tablename LIKE 'revenue_layout%'") == [(0,)]


# -- several apps -------------------------------------------------------------------------------------

SECOND_APP = "adpipes-second"
BY_APP = ("SELECT app_name, report_date::text, group_values, day_n, value::float8, total_revenue::float8 "
          "FROM airbridge.revenue ORDER BY 1, 2, 3, 4")


def two_apps(sandbox, api: AirbridgeApi) -> AirbridgeApi:
    sandbox_airbridge.configure(sandbox, apps=[APP, SECOND_APP])
    return configured(api, app_name=f"{APP},{SECOND_APP}")


def served_for(sandbox, app: str, body: dict) -> dict[tuple[str, str], dict]:
    """What the sandbox serves ``app`` for a query body: (group_values, date) -> the date row."""
    sandbox_airbridge.configure(sandbox, polls_pending=0, polls_running=0)
    headers = {"Authorization": f"Bearer {sandbox.airbridge_token}"}
    base = f"{sandbox.base_url}/reports/api/v3/apps/{app}/revenue/query"
    task_id = requests.post(base, json=body, headers=headers, timeout=10).json()["data"]["taskId"]
    page = requests.get(f"{base}/{task_id}", params={"size": 1000}, headers=headers, timeout=10).json()
    fields = body["groupBy"]["fields"]
    return {
        (json.dumps(dict(zip(fields, row["metadata"])), sort_keys=True, ensure_ascii=False), day["date"]): day
        for row in page["data"]["stats"]["rows"] for day in row["rows"]
    }


def test_two_app_names_each_get_their_report_into_the_same_partition(resources, airbridge_api, clean_databases,
                                                                      clean_sandbox):
    product_dsn, archive_dsn = clean_databases
    day = recent_day(2)
    result = dg.materialize([revenue], resources={**resources, "airbridge_api": two_apps(clean_sandbox, airbridge_api)},
                            partition_key=day)
    assert result.success
    posts = [c for c in clean_sandbox.calls() if c["method"] == "POST"]
    # One report task per app, for the same days.
    assert [(c["app_id"], c["body"]["from"], c["body"]["to"]) for c in posts] == [(APP, day, day), (SECOND_APP, day, day)]
    expected = {app: served_for(clean_sandbox, app, posts[0]["body"]) for app in (APP, SECOND_APP)}
    assert expected[APP] != expected[SECOND_APP]  # the sandbox's figures differ per app
    for dsn in (product_dsn, archive_dsn):
        stored = query(dsn, BY_APP)
        assert stored == sorted(
            (app, d, g, n, figure["value"], row["total"]["totalRevenue"]["value"])
            for app, rows in expected.items() for (g, d), row in rows.items() for n, figure in enumerate(row["values"]))
        # A 2-day-old day: Days 0..2 of the 8 groups, per app.
        assert query(dsn, "SELECT app_name, count(*) FROM airbridge.revenue GROUP BY 1 ORDER BY 1") == [
            (APP, 8 * 3), (SECOND_APP, 8 * 3)]
    metadata = result.asset_materializations_for_node(NODE)[0].metadata
    assert metadata["airbridge/app_names"].value == [APP, SECOND_APP]
    assert set(metadata["airbridge/api_calls_by_app"].value) == {APP, SECOND_APP}
    assert all(n >= 2 for n in metadata["airbridge/api_calls_by_app"].value.values())  # a POST and a poll at least
    assert metadata["airbridge/rows_by_app"].value == {APP: 24, SECOND_APP: 24}
    assert {app for app in metadata["airbridge/task_ids"].value} == {APP, SECOND_APP}
    assert {n["app_name"] for n in metadata["airbridge/notifications"].value} == {APP, SECOND_APP}
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["unique_keys"].passed and checks["total_count"].passed


def test_one_app_failing_leaves_the_stored_day_of_both_apps_as_it_was(resources, airbridge_api, clean_databases,
                                                                      clean_sandbox):
    product_dsn, archive_dsn = clean_databases
    day = recent_day(2)
    resources = {**resources, "airbridge_api": two_apps(clean_sandbox, airbridge_api)}
    assert dg.materialize([revenue], resources=resources, partition_key=day).success
    before = (query(product_dsn, BY_APP), query(archive_dsn, BY_APP))
    assert {row[0] for row in before[0]} == {APP, SECOND_APP}
    clean_sandbox.reset()
    # A day later the first app's figures would be new ones (another task); the second app's task fails.
    sandbox_airbridge.configure(clean_sandbox, apps=[APP, SECOND_APP], groups_per_day=3)
    clean_sandbox.add_faults(kind="task_failure", app_id=SECOND_APP, report="revenue")
    result = dg.materialize([revenue], resources=resources, partition_key=day, raise_on_error=False)
    assert not result.success
    message = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert f"airbridge/revenue partition {day}: app {SECOND_APP} failed" in message
    assert "the report task failed (data.status FAILURE)" in message
    assert f"Nothing of the partition {day} was written, for any app" in message and "re-run" in message
    assert clean_sandbox.airbridge_token not in message
    posts = [c for c in clean_sandbox.calls() if c["method"] == "POST"]
    assert [c["app_id"] for c in posts] == [APP, SECOND_APP]  # the first app's calls were made (and spent)
    assert (query(product_dsn, BY_APP), query(archive_dsn, BY_APP)) == before


def test_an_app_removed_from_the_settings_cannot_drop_its_archived_rows(resources, airbridge_api, clean_databases,
                                                                       clean_sandbox):
    product_dsn, archive_dsn = clean_databases
    day = recent_day(2)
    assert dg.materialize([revenue], resources={**resources, "airbridge_api": two_apps(clean_sandbox, airbridge_api)},
                          partition_key=day).success
    before = (query(product_dsn, BY_APP), query(archive_dsn, BY_APP))
    posts = len([c for c in clean_sandbox.calls() if c["method"] == "POST"])
    # SECOND_APP is gone from AIRBRIDGE_APP_NAME: re-pulling the day would drop its rows.
    result = dg.materialize([revenue], resources={**resources, "airbridge_api": configured(airbridge_api, app_name=APP)},
                            partition_key=day, raise_on_error=False)
    assert not result.success
    message = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert f"app(s) {SECOND_APP}" in message and "AIRBRIDGE_APP_NAME" in message
    assert "nothing was called or written" in message
    assert len([c for c in clean_sandbox.calls() if c["method"] == "POST"]) == posts
    assert (query(product_dsn, BY_APP), query(archive_dsn, BY_APP)) == before


def test_app_names_are_split_and_a_list_needs_a_named_app(airbridge_api, clean_sandbox):
    api = configured(airbridge_api, app_name=f" {APP}, {SECOND_APP} ,")
    assert api.app_names() == (APP, SECOND_APP)
    with pytest.raises(ValueError, match="2 Airbridge apps are configured"):
        api.fetch_revenue([dt.date.fromisoformat(recent_day(2))])
    assert clean_sandbox.calls() == []
    sandbox_airbridge.configure(clean_sandbox, apps=[APP, SECOND_APP], polls_pending=0, polls_running=0)
    report = api.fetch_revenue([dt.date.fromisoformat(recent_day(2))], app_name=SECOND_APP)
    assert report.app_name == SECOND_APP and len(report.tasks[0].rows) == 8
    assert {c["app_id"] for c in clean_sandbox.calls()} == {SECOND_APP}


# -- the ERROR checks through the asset: what reaches product and quality.quarantine ---------------

def group_row(channel: str, day: str, **total: dict) -> dict:
    """A group row of the printed page (one date, ``day``, with Days 0..3) for ``channel``, its
    date's total changed by ``total`` (e.g. ``totalCost={"value": -5}``)."""
    group = example("airbridge_revenue_result_response")["data"]["stats"]["rows"][0]
    group["metadata"] = [channel]
    group["rows"][0]["date"] = day
    group["rows"][0]["total"].update(total)
    return group


def serve_groups(sandbox, day: str, groups: list[dict]) -> None:
    page = example("airbridge_revenue_result_response")
    page["data"]["stats"]["rows"] = groups
    serve_printed_page(sandbox, page, day, total_count=len(groups))


def stored_channels(dsn: str) -> dict[str, int]:
    return dict(query(dsn, "SELECT channel, count(*) FROM airbridge.revenue GROUP BY 1"))


def quarantined_channels(archive_dsn: str) -> dict[str, tuple[int, str]]:
    rows = query(archive_dsn, "SELECT row_values->>'channel', count(*), string_agg(DISTINCT reasons, ' | ') "
                              "FROM quality.quarantine WHERE asset_key = 'airbridge/revenue' GROUP BY 1")
    return {channel: (n, reasons) for channel, n, reasons in rows}


def test_a_negative_total_cost_or_unique_users_is_quarantined_by_value_ranges(resources, airbridge_api,
                                                                             clean_databases, clean_sandbox):
    """checks.md: value_ranges (ERROR) fails on a negative total cost or unique users; the rows
    are quarantined, the other rows written, and the run fails (ADPIPES_MAX_QUARANTINED_SHARE 0)."""
    product_dsn, archive_dsn = clean_databases
    day = recent_day(3)  # the printed date has Days 0..3
    serve_groups(clean_sandbox, day, [
        group_row("good", day),
        group_row("negative_cost", day, totalCost={"value": -5}),
        group_row("negative_users", day, totalUniqueUsers={"value": -1, "isMasked": False}),
    ])
    api = configured(airbridge_api, group_by=["channel"])
    result = dg.materialize([revenue], resources={**resources, "airbridge_api": api}, partition_key=day,
                            raise_on_error=False)
    assert not result.success
    message = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert "airbridge/revenue" in message and "quality.quarantine" in message
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["value_ranges"].passed and checks["value_ranges"].severity == dg.AssetCheckSeverity.ERROR
    # Each bad date total is repeated on its date's 4 Day-N rows: 2 groups x 4 rows.
    assert checks["value_ranges"].metadata["failing_rows"].value == 8
    assert checks["value_ranges"].metadata["quarantined_rows"].value == 8
    assert checks["masked_values"].passed and checks["unique_keys"].passed
    assert stored_channels(product_dsn) == {"good": 4}
    quarantined = quarantined_channels(archive_dsn)
    assert {channel: n for channel, (n, _) in quarantined.items()} == {"negative_cost": 4, "negative_users": 4}
    assert "total_cost" in quarantined["negative_cost"][1]
    assert "total_unique_users" in quarantined["negative_users"][1]


def test_an_empty_figure_is_stored_only_when_flagged_masked(resources, airbridge_api, clean_databases,
                                                             clean_sandbox):
    """airbridge-revenue.md: a figure may be null only when it is masked. A null flagged masked is
    stored as null with its flag; a null without isMasked: true is an answer of an unknown shape:
    the run fails naming task, row and key, and the stored day keeps what it held (the reader
    refuses it before the masked_values check could quarantine it: docs/checks.md's row for
    masked_values describes a backstop no answer reaches)."""
    product_dsn, archive_dsn = clean_databases
    day = recent_day(3)
    api = configured(airbridge_api, group_by=["channel"])
    serve_groups(clean_sandbox, day, [
        group_row("good", day), group_row("masked_empty", day, totalRevenue={"value": None, "isMasked": True})])
    result = dg.materialize([revenue], resources={**resources, "airbridge_api": api}, partition_key=day)
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["masked_values"].passed
    for dsn in (product_dsn, archive_dsn):
        assert stored_channels(dsn) == {"good": 4, "masked_empty": 4}
        assert query(dsn, "SELECT DISTINCT total_revenue, total_revenue_is_masked FROM airbridge.revenue "
                          "WHERE channel = 'masked_empty'") == [(None, True)]
    before = (table_snapshot(product_dsn), table_snapshot(archive_dsn))

    serve_groups(clean_sandbox, day, [
        group_row("good", day), group_row("unmasked_empty", day, totalRevenue={"value": None, "isMasked": False})])
    result = dg.materialize([revenue], resources={**resources, "airbridge_api": api}, partition_key=day,
                            raise_on_error=False)
    assert not result.success
    message = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert "printed-task" in message and "totalRevenue.value is null but isMasked is not true" in message
    assert (table_snapshot(product_dsn), table_snapshot(archive_dsn)) == before
    assert query(archive_dsn, "SELECT count(*) FROM quality.quarantine") == [(0,)]


def test_a_group_and_date_served_twice_fails_the_run_and_keeps_the_day(resources, airbridge_api, clean_databases,
                                                                       clean_sandbox):
    """airbridge-revenue.md: the same (group, date) coming twice is an answer of an unknown shape:
    the run fails and the stored day keeps what it held. Two rows sharing the table's key (day,
    app, group, Day N) so never reach the unique_keys check, whose quarantine (docs/checks.md) is
    a backstop no answer reaches."""
    product_dsn, archive_dsn = clean_databases
    day = recent_day(3)
    api = configured(airbridge_api, group_by=["channel"])
    serve_groups(clean_sandbox, day, [group_row("twice", day), group_row("once", day)])
    assert dg.materialize([revenue], resources={**resources, "airbridge_api": api}, partition_key=day).success
    before = (table_snapshot(product_dsn), table_snapshot(archive_dsn))
    assert stored_channels(product_dsn) == {"twice": 4, "once": 4}

    serve_groups(clean_sandbox, day, [group_row("twice", day), group_row("once", day), group_row("twice", day)])
    result = dg.materialize([revenue], resources={**resources, "airbridge_api": api}, partition_key=day,
                            raise_on_error=False)
    assert not result.success
    message = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert "printed-task" in message and '{"channel": "twice"}' in message and "served twice" in message
    assert (table_snapshot(product_dsn), table_snapshot(archive_dsn)) == before
    assert query(archive_dsn, "SELECT count(*) FROM quality.quarantine") == [(0,)]


# -- server errors, an unknown app, a task failing midway through a range ---------------------------

def test_5xx_answers_are_retried_and_the_day_lands_as_without_them(resources, clean_databases, clean_sandbox):
    """assets.md: 429/5xx back off and retry. A 500 and a 503 before the report task is created:
    the run succeeds and stores what a run without them stores."""
    product_dsn, archive_dsn = clean_databases
    day = recent_day(2)
    clean_sandbox.add_faults([{"kind": "500", "app_id": APP, "report": "revenue"},
                              {"kind": "503", "app_id": APP, "report": "revenue"}])
    result = dg.materialize([revenue], resources=resources, partition_key=day)
    assert result.success
    statuses = [c["status"] for c in clean_sandbox.calls() if c["method"] == "POST"]
    assert statuses == [500, 503, 200]
    after_faults = (table_snapshot(product_dsn), table_snapshot(archive_dsn))
    # A 2-day-old day: Days 0..2 of the sandbox's 8 groups.
    assert len(after_faults[0]) == 8 * 3 and after_faults[0] == after_faults[1]
    clean_sandbox.reset()
    assert dg.materialize([revenue], resources=resources, partition_key=day).success
    assert (table_snapshot(product_dsn), table_snapshot(archive_dsn)) == after_faults


def test_an_unknown_app_404_fails_the_run_naming_app_and_range(resources, airbridge_api, clean_databases,
                                                                clean_sandbox):
    """assets.md: a 404 fails the run naming app and range (no retry: the app does not exist);
    nothing is written."""
    product_dsn, _ = clean_databases
    day = recent_day(2)
    api = configured(airbridge_api, app_name="adpipes-no-such-app")
    result = dg.materialize([revenue], resources={**resources, "airbridge_api": api}, partition_key=day,
                            raise_on_error=False)
    assert not result.success
    message = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert "adpipes-no-such-app" in message and "404" in message and day in message
    assert clean_sandbox.airbridge_token not in message
    assert [c["status"] for c in clean_sandbox.calls()] == [404]
    assert query(product_dsn, "SELECT to_regclass('airbridge.revenue') IS NULL") == [(True,)]


def test_a_range_whose_second_task_fails_writes_none_of_its_days(resources, airbridge_api, clean_databases,
                                                                 clean_sandbox):
    """assets.md: a partition range is one run, split into tasks of at most 92 days per app
    (here 2, the resource's max_days_per_task); a FAILURE fails the run naming app, range and
    task id, and nothing of the partitions is written until all have answered (vendors.md): the
    first task's days keep what they held although its answer came in."""
    product_dsn, archive_dsn = clean_databases
    first, last = recent_day(5), recent_day(2)
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    api = configured(airbridge_api, max_days_per_task=2)
    assert dg.materialize([revenue], resources={**resources, "airbridge_api": api}, tags=tags).success
    posts = [c for c in clean_sandbox.calls() if c["method"] == "POST"]
    assert [(c["body"]["from"], c["body"]["to"]) for c in posts] == [(first, recent_day(4)), (recent_day(3), last)]
    before = (table_snapshot(product_dsn), table_snapshot(archive_dsn))
    assert {row[0].isoformat() for row in before[0]} == {recent_day(n) for n in (5, 4, 3, 2)}
    # The requests of the first task, all answered as usual: the fault after them fails the second.
    first_task = [i for i, c in enumerate(clean_sandbox.calls()) if c["method"] == "POST"][1]
    assert first_task >= 2  # its POST and at least one GET

    clean_sandbox.reset()
    # Other figures now (3 groups a day): a write of the first task's answer would show.
    sandbox_airbridge.configure(clean_sandbox, groups_per_day=3)
    clean_sandbox.add_faults([{"kind": "slow", "seconds": 0, "app_id": APP, "report": "revenue",
                               "times": first_task},
                              {"kind": "task_failure", "app_id": APP, "report": "revenue"}])
    result = dg.materialize([revenue], resources={**resources, "airbridge_api": api}, tags=tags, raise_on_error=False)
    assert not result.success
    calls = clean_sandbox.calls()
    failed_task = [c for c in calls if c["method"] == "POST"][1]["task_id"]
    assert [c["body"]["from"] for c in calls if c["method"] == "POST"] == [first, recent_day(3)]
    message = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert failed_task in message and "FAILURE" in message and APP in message
    assert f"{recent_day(3)}..{last}" in message
    assert (table_snapshot(product_dsn), table_snapshot(archive_dsn)) == before
