"""The airbridge/revenue asset end to end: sandbox over real HTTP -> asset -> real PostgreSQL."""

import datetime as dt
import logging
import subprocess
import sys
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest

from adpipes.airbridge.assets import revenue
from adpipes.airbridge.resources import AirbridgeApi
from adpipes.lib.sandbox import airbridge as sandbox_airbridge
from adpipes.lib.settings import SANDBOX_AIRBRIDGE_APP_NAME
from adpipes_tests.fixtures.sandbox import prod_cli_env

TZ = "Asia/Seoul"
APP = SANDBOX_AIRBRIDGE_APP_NAME
NODE = "airbridge__revenue"


def today() -> dt.date:
    return dt.datetime.now(ZoneInfo(TZ)).date()


def recent_day(days_ago: int = 1) -> str:
    return (today() - dt.timedelta(days=days_ago)).isoformat()


@pytest.fixture
def resources(airbridge_api: AirbridgeApi, storage_resources):
    return {
        "airbridge_api": airbridge_api,
        **storage_resources,
    }


def query(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def table_snapshot(dsn: str) -> list[tuple]:
    return query(dsn, "SELECT * FROM airbridge.revenue ORDER BY report_date, group_values, day_n")


def served_revenue_by_channel(day: str) -> dict[str, float]:
    """What the sandbox serves for the day: the sum of every unmasked Day-N value per channel."""
    totals: dict[str, float] = {}
    for channel, campaign in sandbox_airbridge.groups(len(sandbox_airbridge._BASE_GROUPS)):
        entry = sandbox_airbridge.cohort(APP, dt.date.fromisoformat(day), channel, campaign, 30, True, today())
        served = sum(v["value"] for v in entry["values"] if v["value"] is not None)
        totals[channel] = round(totals.get(channel, 0.0) + served, 2)
    return totals


def test_day_lands_in_both_databases_matching_what_was_served(resources, clean_databases, clean_sandbox):
    product_dsn, archive_dsn = clean_databases
    day = recent_day(3)
    result = dg.materialize([revenue], resources=resources, partition_key=day)
    assert result.success

    expected = served_revenue_by_channel(day)
    for dsn in (product_dsn, archive_dsn):
        stored = dict(query(dsn, "SELECT channel, coalesce(sum(value), 0)::float8 FROM airbridge.revenue GROUP BY 1"))
        assert {k: round(v, 2) for k, v in stored.items()} == pytest.approx(expected)
    # A 3-day-old cohort has Day 0..3 for each of the 8 groups.
    assert query(product_dsn, "SELECT count(*), min(day_n), max(day_n) FROM airbridge.revenue") == [(32, 0, 3)]
    types = dict(query(product_dsn, "SELECT column_name, data_type FROM information_schema.columns "
                                    "WHERE table_schema = 'airbridge' AND table_name = 'revenue'"))
    assert types["value"] == "numeric" and types["cohort_cost"] == "numeric"
    assert types["is_masked"] == "boolean" and types["report_date"] == "date"

    metadata = result.asset_materializations_for_node(NODE)[0].metadata
    assert metadata["dagster/partition_row_count"].value == 32
    (post,) = [c for c in clean_sandbox.calls() if c["method"] == "POST"]
    assert metadata["airbridge/task_ids"].value == {f"{day}..{day}": post["task_id"]}

    # A second run replaces the partition: identical tables, nothing duplicated.
    before = (table_snapshot(product_dsn), table_snapshot(archive_dsn))
    assert dg.materialize([revenue], resources=resources, partition_key=day).success
    assert (table_snapshot(product_dsn), table_snapshot(archive_dsn)) == before


def test_masked_values_are_stored_flagged(resources, clean_databases):
    product_dsn, _ = clean_databases
    day = recent_day(2)
    result = dg.materialize([revenue], resources=resources, partition_key=day)
    assert result.success
    masked = query(product_dsn, "SELECT channel, campaign, count(*), count(value) FROM airbridge.revenue "
                                "WHERE is_masked GROUP BY 1, 2")
    assert masked == [("facebook.business", "Lookalike 1%, KR", 3, 0)]
    assert query(product_dsn, "SELECT count(*) FROM airbridge.revenue WHERE NOT is_masked AND value IS NULL") == [(0,)]
    metadata = result.asset_materializations_for_node(NODE)[0].metadata
    assert metadata["airbridge/masked_values"].value == 3


def test_notifications_are_surfaced_in_metadata(resources, clean_sandbox):
    sandbox_airbridge.configure(clean_sandbox, notifications=["SAN_PERIOD_LIMIT"])
    day = recent_day(2)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([revenue], resources=resources, partition_key=day, instance=instance)
    assert result.success
    metadata = result.asset_materializations_for_node(NODE)[0].metadata
    notices = metadata["airbridge/notifications"].value
    assert [n["code"] for n in notices] == [sandbox_airbridge.MASKING_CODE, "SAN_PERIOD_LIMIT"]
    assert all(n["range"] == f"{day}..{day}" and n["task_id"] for n in notices)
    assert metadata["airbridge/notification_codes"].value == f"{sandbox_airbridge.MASKING_CODE}, SAN_PERIOD_LIMIT"
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert any("Airbridge notification 'SAN_PERIOD_LIMIT'" in w and day in w for w in warnings)


def test_polling_and_paging_inside_a_run(resources, clean_databases, clean_sandbox):
    product_dsn, _ = clean_databases
    sandbox_airbridge.configure(clean_sandbox, polls_pending=2, polls_running=2, groups_per_day=75)
    day = recent_day(1)
    assert dg.materialize([revenue], resources=resources, partition_key=day).success
    gets = [c for c in clean_sandbox.calls() if c["method"] == "GET"]
    assert [c["status_served"] for c in gets] == ["PENDING", "PENDING", "RUNNING", "RUNNING", "SUCCESS", "SUCCESS"]
    # 75 groups over two pages of 50, Day 0 and Day 1 each.
    assert query(product_dsn, "SELECT count(DISTINCT group_values), count(*) FROM airbridge.revenue") == [(75, 150)]


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
    # Each cohort has Day 0 through its age, for 8 groups.
    assert per_partition == {first: 8 * 5, recent_day(3): 8 * 4, last: 8 * 3}
    for dsn in (product_dsn, archive_dsn):
        rows = dict(query(dsn, "SELECT report_date::text, count(*) FROM airbridge.revenue GROUP BY 1"))
        assert rows == per_partition


def test_prod_cli_materializes_a_day(clean_sandbox, clean_databases, tmp_path):
    product_dsn, archive_dsn = clean_databases
    # The resource's default poll interval is 5 s; a task finishing at once keeps the test short.
    sandbox_airbridge.configure(clean_sandbox, polls_pending=0, polls_running=0)
    day = recent_day(2)
    env = prod_cli_env(clean_sandbox, product_dsn, archive_dsn, str(tmp_path), TZ)
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "adpipes.definitions",
               "--select", "airbridge/revenue", "--partition", day]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert clean_sandbox.airbridge_token not in done.stdout + done.stderr
    assert clean_sandbox.appsflyer_token not in done.stdout + done.stderr
    expected = served_revenue_by_channel(day)
    for dsn in (product_dsn, archive_dsn):
        stored = dict(query(dsn, "SELECT channel, coalesce(sum(value), 0)::float8 FROM airbridge.revenue GROUP BY 1"))
        assert {k: round(v, 2) for k, v in stored.items()} == pytest.approx(expected)
        assert query(dsn, "SELECT DISTINCT report_date::text FROM airbridge.revenue") == [(day,)]
