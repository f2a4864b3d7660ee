"""The daily schedule's run requests for a tick: partitions, tags and the hour in the app timezone."""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from adpipes.definitions import defs
from adpipes.schedules import MATURITY_AGES, build_daily_schedule

TZ = "Asia/Seoul"


def evaluate(schedule: dg.ScheduleDefinition, hour: int = 6) -> list[dg.RunRequest]:
    # The schedule targets every asset of the code location: evaluate it within it.
    repository = dg.Definitions(assets=defs.assets, schedules=[schedule], resources=defs.resources).get_repository_def()
    moment = dt.datetime(2026, 11, 23, hour, 0, tzinfo=ZoneInfo(TZ))
    with dg.build_schedule_context(scheduled_execution_time=moment, repository_def=repository) as context:
        return list(schedule.evaluate_tick(context).run_requests or [])


def tick(hour: int = 6) -> list[dg.RunRequest]:
    return evaluate(build_daily_schedule(TZ, (hour, 0), "2026-01-01"), hour)


def test_the_schedule_runs_at_the_configured_local_time():
    schedule = build_daily_schedule(TZ, (7, 30), "2026-01-01")
    assert schedule.cron_schedule == "30 7 * * *" and schedule.execution_timezone == TZ
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_a_tick_requests_yesterday_late_data_and_maturing_cohorts():
    requests = tick()
    by_trigger: dict[str, list[dg.RunRequest]] = {}
    for request in requests:
        by_trigger.setdefault(request.tags["adpipes/trigger"], []).append(request)
    (daily,) = by_trigger["daily"]
    # Every asset but daily_report, which the late-data run pulls for yesterday too.
    assert daily.partition_key == "2026-11-22"
    assert {k.to_user_string() for k in daily.asset_selection} == {
        "appsflyer/android_installs", "appsflyer/ios_installs", "appsflyer/android_in_app_events",
        "appsflyer/ios_in_app_events", "appsflyer/raw_data", "appsflyer/cohort_ltv", "airbridge/revenue",
    }
    (late,) = by_trigger["late-data"]
    assert [k.to_user_string() for k in late.asset_selection] == ["appsflyer/daily_report"]
    # One 3-day range: one call per app, not a <= 2-day call under the one-a-minute rule.
    assert (late.tags["dagster/asset_partition_range_start"], late.tags["dagster/asset_partition_range_end"]) \
        == ("2026-11-20", "2026-11-22")
    maturity = by_trigger["maturity"]
    assert [r.partition_key for r in maturity] == [
        (dt.date(2026, 11, 23) - dt.timedelta(days=age)).isoformat() for age in MATURITY_AGES
    ]
    assert all({k.to_user_string() for k in r.asset_selection} == {"appsflyer/cohort_ltv", "airbridge/revenue"}
               for r in maturity)
    assert [r.tags["adpipes/cohort_age_days"] for r in maturity] == [str(a) for a in MATURITY_AGES]
    # Each run has its own key, made of its days: Dagster launches a key once, so a tick
    # evaluated again requests nothing new.
    assert len({r.run_key for r in requests}) == len(requests)


def test_nothing_before_the_first_partition():
    requests = evaluate(build_daily_schedule(TZ, (6, 0), "2026-11-21"))
    late = [r for r in requests if r.tags["adpipes/trigger"] == "late-data"]
    assert [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
            for r in late] == [("2026-11-21", "2026-11-22")]
    assert [r.partition_key for r in requests if r.tags["adpipes/trigger"] == "maturity"] == ["2026-11-21"]
