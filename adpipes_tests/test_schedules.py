"""The schedules' run requests for a tick: partitions, tags and the tick time; the daily schedule's
in the app timezone, the late-events schedule's in UTC for the day whose late-arrival window closed."""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from adpipes.definitions import build_definitions, defs
from adpipes.lib.settings import load_settings
from adpipes.schedules import (
    LATE_EVENTS_SCHEDULE_NAME,
    build_daily_schedule,
    build_late_events_schedule,
    late_events_days,
)

TZ = "Asia/Seoul"
UTC = dt.timezone.utc
# The cohort ages the maturity runs re-pull, as the documents state them (docs/operations.md, the
# schedule table: "the cohorts 2, 3, 7, 14, 31, 61, 91 and 181 days old"; docs/cohort-api.md:
# "ages 2, 3, 7, 14, 31, 61, 91, 181 days"), written here, not read from adpipes.schedules.
DOCUMENTED_MATURITY_AGES = (2, 3, 7, 14, 31, 61, 91, 181)


def evaluate_at(schedule: dg.ScheduleDefinition, moment: dt.datetime,
                definitions: dg.Definitions = defs):
    # The schedule targets every asset of the code location: evaluate it within it.
    repository = dg.Definitions(assets=definitions.assets, schedules=[schedule],
                                resources=definitions.resources).get_repository_def()
    with dg.build_schedule_context(scheduled_execution_time=moment, repository_def=repository) as context:
        return schedule.evaluate_tick(context)


def evaluate(schedule: dg.ScheduleDefinition, hour: int = 6) -> list[dg.RunRequest]:
    moment = dt.datetime(2026, 11, 23, hour, 0, tzinfo=ZoneInfo(TZ))
    return list(evaluate_at(schedule, moment).run_requests or [])


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
    assert daily.tags["adpipes/raw_day"] == "2026-11-22"  # one run per raw day at a time
    every_asset = {k.to_user_string() for k in defs.get_repository_def().asset_graph.materializable_asset_keys}
    # The analysis tables are derived by their automation sensor once all their inputs are in.
    analysis = {"analytics/cohort_roas", "analytics/media_source_daily"}
    assert analysis <= every_asset
    assert {k.to_user_string() for k in daily.asset_selection} == every_asset - {"appsflyer/daily_report"} - analysis
    assert {"appsflyer/android_installs", "appsflyer/raw_data", "appsflyer/cohort_ltv", "airbridge/revenue"} \
        <= every_asset
    (late,) = by_trigger["late-data"]
    assert [k.to_user_string() for k in late.asset_selection] == ["appsflyer/daily_report"]
    # One 3-day range: one call per app, not a <= 2-day call under the one-a-minute rule.
    assert (late.tags["dagster/asset_partition_range_start"], late.tags["dagster/asset_partition_range_end"]) \
        == ("2026-11-20", "2026-11-22")
    maturity = by_trigger["maturity"]
    assert [r.partition_key for r in maturity] == [
        "2026-11-21", "2026-11-20", "2026-11-16", "2026-11-09", "2026-10-23", "2026-09-23", "2026-08-24",
        "2026-05-26",
    ]
    assert [r.partition_key for r in maturity] == [
        (dt.date(2026, 11, 23) - dt.timedelta(days=age)).isoformat() for age in DOCUMENTED_MATURITY_AGES
    ]
    assert all({k.to_user_string() for k in r.asset_selection} == {"appsflyer/cohort_ltv", "airbridge/revenue"}
               for r in maturity)
    assert [r.tags["adpipes/cohort_age_days"] for r in maturity] == [str(a) for a in DOCUMENTED_MATURITY_AGES]
    # Each run has its own key, made of its days (what lets a tick evaluated again request
    # nothing new: see the next test).
    assert len({r.run_key for r in requests}) == len(requests)


def test_a_tick_evaluated_again_launches_nothing_new():
    """The scheduler daemon's own tick loop (dagster's launch_scheduled_runs, the code
    dagster-daemon runs) on a real instance, the shipped code location loaded in process, time
    frozen: the tick of 2026-11-23 06:00 KST launches its runs, then fails at its very end (a crash
    flag of Dagster's); the daemon evaluates the same tick again, and the second evaluation finds
    a run for every request it makes: it launches nothing new."""
    import logging

    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.scheduler.instigation import TickStatus
    from dagster._core.test_utils import (
        InProcessTestWorkspaceLoadTarget,
        create_test_daemon_workspace_context,
        freeze_time,
        instance_for_test,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._scheduler.scheduler import launch_scheduled_runs

    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger(f"adpipes_tests.scheduler.{id(messages)}")  # this test's own
    logger.addHandler(Collect())
    logger.setLevel(logging.INFO)
    target = InProcessTestWorkspaceLoadTarget(InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="adpipes.definitions", attribute="defs")))
    launcher = {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"}
    with instance_for_test(overrides={"run_launcher": launcher}) as instance, \
            create_test_daemon_workspace_context(target, instance) as workspace:

        def daemon_iteration(moment: dt.datetime, **options) -> None:
            with freeze_time(moment):
                list(launch_scheduled_runs(workspace, logger, moment.astimezone(UTC), {}, **options))

        def ticks():
            return [t for state in instance.all_instigator_state() if state.instigator_name == "daily_schedule"
                    for t in instance.get_ticks(state.instigator_origin_id, state.selector_id)]

        # The daemon sees the schedule (RUNNING by default) a minute before its tick ...
        daemon_iteration(dt.datetime(2026, 11, 23, 5, 59, tzinfo=ZoneInfo(TZ)))
        assert instance.get_runs() == [] and ticks() == []
        # ... launches the tick's runs, and fails before it could record the tick a success.
        daemon_iteration(dt.datetime(2026, 11, 23, 6, 0, 30, tzinfo=ZoneInfo(TZ)),
                         debug_crash_flags={"daily_schedule": {"TICK_SUCCESS": RuntimeError("crash after launch")}})
        (failed,) = ticks()
        assert failed.status == TickStatus.FAILURE
        first = {r.run_id: r.tags["dagster/run_key"] for r in instance.get_runs()}
        assert first and set(failed.run_ids) == set(first)

        # The next iteration evaluates the same tick again (Dagster retries a failed tick) ...
        daemon_iteration(dt.datetime(2026, 11, 23, 6, 1, tzinfo=ZoneInfo(TZ)), max_tick_retries=1)
        assert any("Retrying previously failed schedule execution" in m for m in messages), messages
        (retried,) = ticks()
        assert retried.timestamp == failed.timestamp and retried.status == TickStatus.SUCCESS
        # ... and every run it requests is one already launched: no run is new.
        assert {r.run_id: r.tags["dagster/run_key"] for r in instance.get_runs()} == first
        assert set(retried.run_ids) == set(first)
        # The runs: yesterday, the late-data range and the eight maturity ages (docs/operations.md).
        assert sorted(first.values()) == sorted(
            ["daily:2026-11-22", "daily_report:2026-11-20..2026-11-22"]
            + [f"maturity:{(dt.date(2026, 11, 23) - dt.timedelta(days=a)).isoformat()}:{a}"
               for a in DOCUMENTED_MATURITY_AGES])


def test_nothing_before_the_first_partition():
    requests = evaluate(build_daily_schedule(TZ, (6, 0), "2026-11-21"))
    late = [r for r in requests if r.tags["adpipes/trigger"] == "late-data"]
    assert [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
            for r in late] == [("2026-11-21", "2026-11-22")]
    assert [r.partition_key for r in requests if r.tags["adpipes/trigger"] == "maturity"] == ["2026-11-21"]


# -- late events: day D again once AppsFlyer accepts no more of its events --------------------------

RAW_GROUPS = {"appsflyer_android", "appsflyer_ios"}  # the raw reports, one group per platform


def late_tick(timezone: str, moment: dt.datetime, *, first: str = "2026-01-01", daily_at=(6, 0),
              margin: int = 60, definitions: dg.Definitions = defs):
    return evaluate_at(build_late_events_schedule(timezone, margin, first, daily_at), moment, definitions)


def raw_and_built_from_raw(definitions: dg.Definitions = defs) -> set[str]:
    graph = definitions.get_repository_def().asset_graph
    raw = {k.to_user_string() for k in graph.materializable_asset_keys if graph.get(k).group_name in RAW_GROUPS}
    assert raw  # the test is about them
    return raw | {"appsflyer/raw_data", "appsflyer/customer_user_map"}


def test_the_late_events_schedule_ticks_in_utc_after_the_late_arrival_window():
    schedule = build_late_events_schedule(TZ, 60, "2026-01-01", (6, 0))
    assert schedule.name == LATE_EVENTS_SCHEDULE_NAME
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 3 * * *", "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert build_late_events_schedule(TZ, 95, "2026-01-01", (6, 0)).cron_schedule == "35 3 * * *"
    assert build_late_events_schedule(TZ, 0, "2026-01-01", (6, 0)).cron_schedule == "0 2 * * *"
    # The code location has both schedules.
    assert {s.name for s in defs.schedules} == {"daily_schedule", LATE_EVENTS_SCHEDULE_NAME}


def test_seoul_yesterday_is_pulled_again_at_noon_kst():
    # Seoul's 2026-11-22 ends at 2026-11-22 15:00 UTC: its events are accepted until 11-23 02:00 UTC.
    tick = dt.datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    assert tick.astimezone(ZoneInfo(TZ)).hour == 12
    (run,) = late_tick(TZ, tick).run_requests
    assert run.partition_key == "2026-11-22"
    assert run.run_key == "late-events:2026-11-22"
    assert run.tags["adpipes/trigger"] == "late-events"
    # The same tag as the daily run of the day: the shipped instance queues one behind the other.
    assert run.tags["adpipes/raw_day"] == "2026-11-22"
    # The tag the call ledger recognises a scheduled run by: this run may use the reserved calls.
    assert run.tags["dagster/schedule_name"] == LATE_EVENTS_SCHEDULE_NAME
    # Every raw report asset of the code location and what is built from them; nothing else.
    assert {k.to_user_string() for k in run.asset_selection} == raw_and_built_from_raw()
    assert len(run.asset_selection) == 2 * 10 + 2


def test_west_of_utc_the_day_closes_two_utc_days_later():
    # Los Angeles' 2026-11-21 ends at 11-22 08:00 UTC (PST), so its window closes 11-23 02:00 UTC:
    # the 11-23 tick pulls 11-21 (19:00 local on 11-22), not 11-22, which is still open.
    (run,) = late_tick("America/Los_Angeles", dt.datetime(2026, 11, 23, 3, 0, tzinfo=UTC)).run_requests
    assert run.partition_key == "2026-11-21" and run.run_key == "late-events:2026-11-21"
    # Summer time (PDT) too.
    (run,) = late_tick("America/Los_Angeles", dt.datetime(2026, 7, 10, 3, 0, tzinfo=UTC)).run_requests
    assert run.partition_key == "2026-07-08"


def test_at_utc_the_day_closes_the_next_morning():
    # UTC's 2026-11-22 closes 11-23 02:00 UTC. With a daily run before that (01:00), the 03:00 tick
    # pulls it again.
    (run,) = late_tick("UTC", dt.datetime(2026, 11, 23, 3, 0, tzinfo=UTC), daily_at=(1, 0)).run_requests
    assert run.partition_key == "2026-11-22"
    # With the 06:00 default the daily run of 11-22 comes at 11-23 06:00 UTC, after the window
    # closed: it is final itself, and the tick says why it requests nothing.
    result = late_tick("UTC", dt.datetime(2026, 11, 23, 3, 0, tzinfo=UTC))
    assert not result.run_requests
    assert "2026-11-22: the daily run pulls it at 2026-11-23 06:00 UTC" in result.skip_message


def test_every_day_is_pulled_again_once_across_a_year_and_its_clock_changes():
    first = dt.date(2026, 1, 1)
    for timezone, daily_at in [(TZ, (6, 0)), ("America/Los_Angeles", (6, 0)), ("Europe/Berlin", (0, 30)),
                               ("UTC", (1, 0)), ("Pacific/Kiritimati", (6, 0)), ("Pacific/Pago_Pago", (6, 0))]:
        ticks = [dt.datetime(2026, 1, 1, 3, 0, tzinfo=UTC) + dt.timedelta(days=n) for n in range(370)]
        days = [d for tick in ticks for d in late_events_days(tick, timezone, 60, first, daily_at)]
        assert days == [first + dt.timedelta(days=n) for n in range(len(days))], timezone
        assert len(days) >= 367, timezone


def test_the_daily_run_is_final_itself_where_it_comes_after_the_window():
    tick = dt.datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    # Moscow (UTC+3): the daily run of 11-22 at 11-23 06:00 MSK is 03:00 UTC, the very minute the
    # late-events tick would pull it again.
    assert late_events_days(tick, "Europe/Moscow", 60, dt.date(2026, 1, 1), (6, 0)) == []
    # Dubai (UTC+4): the daily run is at 02:00 UTC, before the window closed.
    assert late_events_days(tick, "Asia/Dubai", 60, dt.date(2026, 1, 1), (6, 0)) == [dt.date(2026, 11, 22)]
    # A bigger margin moves the tick, and which daily runs come after it.
    assert late_events_days(dt.datetime(2026, 11, 23, 5, 0, tzinfo=UTC), "Europe/Moscow", 180,
                            dt.date(2026, 1, 1), (6, 0)) == [dt.date(2026, 11, 22)]


def test_late_events_nothing_before_the_first_partition():
    tick = dt.datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    assert not late_tick(TZ, tick, first="2026-11-23").run_requests
    assert [r.partition_key for r in late_tick(TZ, tick, first="2026-11-22").run_requests] == ["2026-11-22"]
    assert not late_tick("America/Los_Angeles", tick, first="2026-11-22").run_requests


def test_the_late_events_run_follows_the_raw_reports_configured():
    definitions = build_definitions(load_settings({"APPSFLYER_RAW_REPORTS": "installs_report,organic_installs_report"}))
    (run,) = late_tick(TZ, dt.datetime(2026, 11, 23, 3, 0, tzinfo=UTC), definitions=definitions).run_requests
    assert {k.to_user_string() for k in run.asset_selection} == {
        "appsflyer/android_installs", "appsflyer/ios_installs", "appsflyer/android_organic_installs",
        "appsflyer/ios_organic_installs", "appsflyer/raw_data", "appsflyer/customer_user_map",
    }


def test_the_shipped_instance_runs_one_run_per_raw_day_at_a_time():
    """The daily and late-events runs of a day queue behind each other (config/dagster.yaml)
    instead of the second failing on the day's partition lock."""
    from pathlib import Path

    import yaml
    from dagster._core.instance.config import dagster_instance_config_schema
    from dagster._config import process_config

    from adpipes.schedules import RAW_DAY_TAG

    shipped = yaml.safe_load((Path(__file__).parents[1] / "config" / "dagster.yaml").read_text())
    limits = shipped["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": RAW_DAY_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    checked = process_config(dagster_instance_config_schema(), {"concurrency": shipped["concurrency"]})
    assert checked.success, checked.errors
