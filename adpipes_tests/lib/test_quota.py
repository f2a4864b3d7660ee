"""The API call ledger on a real PostgreSQL: counting, refusing and concurrency."""

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import psycopg
import pytest

from adpipes.lib.quota import (
    ApiCallLedger,
    QuotaExceeded,
    is_scheduled_run,
    quota_reset_time,
    require_calls,
)
from adpipes.lib.storage.postgres import PostgresDatabase
from adpipes_tests.appsflyer.test_assets import step_failure_message


@pytest.fixture
def ledger(clean_databases) -> ApiCallLedger:
    _, archive_dsn = clean_databases
    return ApiCallLedger(archive=PostgresDatabase(role="archive", dsn=archive_dsn))


def ledger_rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT app_id, report, utc_day, calls, quota_calls, daily_quota "
                            "FROM quota.api_calls ORDER BY app_id, report, utc_day").fetchall()


def test_calls_are_counted_per_app_report_and_utc_day(ledger, clean_databases):
    _, archive_dsn = clean_databases
    installs = ledger.meter("appsflyer", "com.example", "installs_report", 24)
    aggregate = ledger.meter("appsflyer", "com.example", "daily_report", 24)
    assert [installs.spend(), installs.spend()] == [1, 2]
    # A <= 2-day aggregate call is counted, but not against the daily quota.
    assert aggregate.spend(counts_against_quota=False) == 0
    today = dt.datetime.now(dt.timezone.utc).date()
    assert ledger_rows(archive_dsn) == [
        ("com.example", "daily_report", today, 1, 0, 24),
        ("com.example", "installs_report", today, 2, 2, 24),
    ]
    assert installs.status().used == 2 and installs.status().left == 22
    assert ledger.meter("appsflyer", "id1", "installs_report", 24).status().used == 0


def test_a_spent_quota_refuses_the_call_and_counts_nothing_more(ledger, clean_databases):
    _, archive_dsn = clean_databases
    meter = ledger.meter("appsflyer", "com.example", "in_app_events_report", 2)
    meter.spend(), meter.spend()
    with pytest.raises(QuotaExceeded) as refused:
        meter.spend()
    message = str(refused.value)
    assert "in_app_events_report for app com.example" in message and "quota of 2 calls is spent" in message
    assert "not sent" in message and f"{quota_reset_time():%Y-%m-%d} 00:00 UTC" in message
    assert refused.value.calls_left == 0
    assert ledger_rows(archive_dsn)[0][3:5] == (2, 2)
    # Calls that do not count against the quota still go through.
    assert meter.spend(counts_against_quota=False) == 2


def test_yesterdays_calls_do_not_count_today(ledger, clean_databases):
    _, archive_dsn = clean_databases
    meter = ledger.meter("appsflyer", "com.example", "installs_report", 3)
    meter.spend()
    yesterday = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    with psycopg.connect(archive_dsn) as conn:
        conn.execute("INSERT INTO quota.api_calls (vendor, app_id, report, utc_day, calls, quota_calls, "
                     "daily_quota) VALUES ('appsflyer', 'com.example', 'installs_report', %s, 3, 3, 3)",
                     (yesterday,))
    assert meter.status().used == 1
    assert meter.spend() == 2


def test_require_refuses_a_range_before_any_call(ledger, clean_databases):
    _, archive_dsn = clean_databases
    meter = ledger.meter("appsflyer", "com.example", "in_app_events_report", 12)
    for _ in range(11):
        meter.spend()
    assert meter.require(1, "one day").left == 1
    with pytest.raises(dg.Failure) as refused:
        require_calls([(meter, 3)], "appsflyer/android_in_app_events partitions 2026-09-01..2026-11-02",
                      hint="materialize fewer days now")
    message = refused.value.description
    assert "partitions 2026-09-01..2026-11-02 needs 3 calls" in message
    assert "only 1 of today's 12 are left (11 spent" in message and "Nothing was called" in message
    assert "resets at" in message and "materialize fewer days now" in message
    assert refused.value.metadata["calls_needed"].value == {"com.example in_app_events_report": 3}
    assert refused.value.metadata["calls_left"].value == {"com.example in_app_events_report": 1}
    # Refusing spent nothing.
    assert ledger_rows(archive_dsn)[0][3:5] == (11, 11)


def spend_in_parallel(meter, calls: int) -> list[bool]:
    """``calls`` spends of ``meter`` from 8 threads at once: which were granted."""
    def spend() -> bool:
        try:
            meter.spend()
            return True
        except QuotaExceeded:
            return False

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda _: spend(), range(calls)))


def test_parallel_runs_cannot_count_past_the_quota(ledger, clean_databases):
    _, archive_dsn = clean_databases
    meter = ledger.meter("appsflyer", "com.example", "installs_report", 10)
    granted = spend_in_parallel(meter, 24)
    assert granted.count(True) == 10
    assert ledger_rows(archive_dsn)[0][3:5] == (10, 10)


def _meter_in_own_process(archive_dsn: str, spends: int, counts_against_quota: bool, start=None) -> dict:
    """In a process of its own: the daily_report meter of com.example as this process sees it
    (calls since the last one, before and after), after ``spends`` spends of its own."""
    import os

    from adpipes.lib.quota import ApiCallLedger
    from adpipes.lib.storage.postgres import PostgresDatabase

    meter = ApiCallLedger(archive=PostgresDatabase(role="archive", dsn=archive_dsn)).meter(
        "appsflyer", "com.example", "daily_report", 24)
    before = meter.seconds_since_last_call()
    if start is not None:
        start.wait()
    for _ in range(spends):
        meter.spend(counts_against_quota=counts_against_quota)
    return {"pid": os.getpid(), "before": before, "after": meter.seconds_since_last_call(),
            "used": meter.status().used}


def test_the_last_call_and_the_count_are_seen_by_every_process(clean_databases):
    """Separate processes (spawned, each with its own ledger and connections) share one ledger in
    the archive database: the call one makes is the last call every other one sees, and the
    calls they count at the same time add up."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _, archive_dsn = clean_databases
    context = multiprocessing.get_context("spawn")

    def in_a_new_process(*args) -> dict:
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            return pool.submit(_meter_in_own_process, archive_dsn, *args).result(timeout=300)

    # A first process: no call yet, then one (a <= 2-day aggregate call: counted, not against the quota).
    first = in_a_new_process(1, False)
    assert first["before"] is None and first["after"] is not None
    # A call an hour old (written by hand), then a call by one process: another process sees the
    # new call as the last one, not the hour-old one.
    with psycopg.connect(archive_dsn) as conn:
        conn.execute("UPDATE quota.api_calls SET last_call_at = now() - interval '1 hour'")
    second = in_a_new_process(1, False)
    assert second["before"] >= 3600
    reader = in_a_new_process(0, False)
    # The second call, not the hour-old one; and reading counts no call.
    assert reader["before"] < 1800 and reader["after"] >= reader["before"]
    assert len({first["pid"], second["pid"], reader["pid"]}) == 3
    # Three processes counting 4 calls each at the same time: the shared count is 12, and each
    # process's own view of it is the shared count at its last call.
    processes = 3
    with context.Manager() as manager, ProcessPoolExecutor(processes, mp_context=context) as pool:
        start = manager.Barrier(processes)
        futures = [pool.submit(_meter_in_own_process, archive_dsn, 4, True, start) for _ in range(processes)]
        results = [f.result(timeout=300) for f in futures]
    assert len({r["pid"] for r in results}) == processes
    assert max(r["used"] for r in results) == 12 and all(4 <= r["used"] <= 12 for r in results)
    rows = ledger_rows(archive_dsn)  # one row a UTC day: summed, in case the test straddles midnight
    assert {r[:2] for r in rows} == {("com.example", "daily_report")}
    assert (sum(r[3] for r in rows), sum(r[4] for r in rows)) == (2 + 12, 12)


def test_a_quota_below_one_is_a_configuration_error(ledger):
    with pytest.raises(ValueError, match="at least 1"):
        ledger.meter("appsflyer", "com.example", "installs_report", 0)


def test_without_a_quota_calls_are_counted_but_never_refused(ledger, clean_databases):
    _, archive_dsn = clean_databases
    meter = ledger.meter("appsflyer", "com.example", "installs_report", None)
    assert meter.require(1000, "a long range").left is None
    for _ in range(30):
        meter.spend()
    assert ledger_rows(archive_dsn)[0][3:6] == (30, 30, None)


def test_a_plan_naming_some_reports_keeps_the_defaults_of_the_others(ledger):
    from adpipes.appsflyer.aggregate_api import AppsFlyerAggregateApi
    from adpipes.appsflyer.raw_data_api import AppsFlyerRawDataApi

    raw = AppsFlyerRawDataApi(api_token=None, base_url=None, daily_quotas={"in_app_events_report": 3})
    assert raw.quota_meter(ledger, "com.example", "in_app_events_report").daily_quota == 3
    assert raw.quota_meter(ledger, "com.example", "installs_report").daily_quota == 24
    aggregate = AppsFlyerAggregateApi(api_token=None, base_url=None, daily_quotas={})
    assert aggregate.quota_meter(ledger, "com.example", "daily_report").daily_quota == 24


# -- the rate window shared by processes (the Cohort API's 60 calls a minute per account) ---------

RATE_LIMIT, RATE_WINDOW_SECONDS = 3, 0.6


def _take_rate_slots(archive_dsn: str, scope: str, slots: int, start) -> list[str]:
    """One process's share of the race: ``slots`` grants, each as its database time."""
    from adpipes.lib.quota import ApiCallLedger
    from adpipes.lib.storage.postgres import PostgresDatabase

    window = ApiCallLedger(archive=PostgresDatabase(role="archive", dsn=archive_dsn)).rate_window(
        "appsflyer", scope, RATE_LIMIT, RATE_WINDOW_SECONDS)
    start.wait()
    return [window.acquire_slot()[0].isoformat() for _ in range(slots)]


def test_the_rate_window_holds_across_processes(ledger, clean_databases):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _, archive_dsn = clean_databases
    processes, slots = 4, 4
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(processes, mp_context=context) as pool:
        start = manager.Barrier(processes)
        futures = [pool.submit(_take_rate_slots, archive_dsn, "cohort:test", slots, start) for _ in range(processes)]
        granted = sorted(dt.datetime.fromisoformat(t) for f in futures for t in f.result(timeout=120))
    assert len(granted) == processes * slots
    window = dt.timedelta(seconds=RATE_WINDOW_SECONDS)
    # No window of that length, wherever it starts, holds more than the limit.
    busiest = max(sum(1 for t in granted if first <= t < first + window) for first in granted)
    assert busiest == RATE_LIMIT
    # 16 grants at 3 per 0.6 s cannot take less than 5 full windows.
    assert granted[-1] - granted[0] >= 5 * window
    with psycopg.connect(archive_dsn) as conn:
        left = conn.execute("SELECT count(*) FROM quota.rate_window_calls WHERE scope = 'cohort:test'").fetchone()[0]
    assert left <= RATE_LIMIT  # rows that left the window are deleted


def test_the_rate_window_tells_how_long_to_wait(ledger):
    window = ledger.rate_window("appsflyer", "cohort:short", 1, 30.0)
    before_first = time.monotonic()
    assert window.try_acquire()[0] is not None
    granted, wait = window.try_acquire()
    since_first = time.monotonic() - before_first
    # The rest of the first grant's 30 s, however long the two calls took (no bound on that).
    assert granted is None and 30 - since_first - 0.05 <= wait <= 30
    # Another scope (account) has its own window.
    assert ledger.rate_window("appsflyer", "cohort:other", 1, 30.0).try_acquire()[0] is not None
    with pytest.raises(ValueError, match="limit >= 1"):
        ledger.rate_window("appsflyer", "cohort:bad", 0, 30.0)


# -- the reserve kept for the scheduled runs (APPSFLYER_RESERVED_CALLS) ----------------------------

RESERVED_REPORTS = ["installs_report", "in_app_events_report", "daily_report"]


def reserving_ledger(archive_dsn: str, reserved: int = 2, run_tags: dict[str, str] | None = None) -> ApiCallLedger:
    """A ledger keeping ``reserved`` calls of the Pull API reports, initialized as Dagster does for
    a step of a run with ``run_tags`` (None: used outside a run)."""
    ledger = ApiCallLedger(archive=PostgresDatabase(role="archive", dsn=archive_dsn), reserved_calls=reserved,
                           reserved_reports=RESERVED_REPORTS)
    if run_tags is None:
        return ledger
    definition = ledger.get_resource_definition()
    context = dg.InitResourceContext(resource_config=None, resources=None, resource_def=definition,
                                     all_resource_defs={}, dagster_run=dg.DagsterRun(job_name="job", tags=run_tags))
    # What Dagster does when a step starts: a copy of the resource, set up with the run's context.
    with definition.resource_fn(context) as initialized:
        return initialized


SCHEDULED = {"dagster/schedule_name": "daily_schedule", "adpipes/trigger": "daily"}
BACKFILL = {"dagster/backfill": "abcdefgh"}


def test_a_scheduled_run_is_one_a_schedule_launched():
    assert is_scheduled_run(SCHEDULED)
    assert not is_scheduled_run(BACKFILL) and not is_scheduled_run({})
    # A backfill's run is never a scheduled one, whoever launched the backfill.
    assert not is_scheduled_run({**SCHEDULED, **BACKFILL})


def test_the_ledger_learns_from_its_runs_tags_whether_it_serves_a_scheduled_run(clean_databases):
    _, archive_dsn = clean_databases
    assert reserving_ledger(archive_dsn, run_tags=SCHEDULED).scheduled_run
    assert not reserving_ledger(archive_dsn, run_tags=BACKFILL).scheduled_run
    assert not reserving_ledger(archive_dsn, run_tags={}).scheduled_run
    assert not reserving_ledger(archive_dsn).scheduled_run
    # The meters it hands out: the reserve for other runs, all of the quota for scheduled ones.
    assert reserving_ledger(archive_dsn, run_tags=BACKFILL).meter("appsflyer", "a", "installs_report", 24).reserved == 2
    assert reserving_ledger(archive_dsn, run_tags=SCHEDULED).meter("appsflyer", "a", "installs_report", 24).reserved == 0


def test_a_backfill_may_not_dip_into_the_reserve(clean_databases):
    _, archive_dsn = clean_databases
    backfill = reserving_ledger(archive_dsn, run_tags=BACKFILL).meter("appsflyer", "com.example", "in_app_events_report", 12)
    for _ in range(7):
        backfill.spend()
    status = backfill.require(3, "three windows")
    assert (status.used, status.reserved, status.left) == (7, 2, 3)
    with pytest.raises(dg.Failure) as refused:
        require_calls([(backfill, 4)], "appsflyer/android_in_app_events partitions 2026-08-01..2026-11-22",
                      hint="materialize fewer days now")
    message = refused.value.description
    assert "partitions 2026-08-01..2026-11-22 needs 4 calls" in message
    # The calls left for it, the reserve, and when the quota resets.
    assert "only 3 of today's 12 are left for it (7 spent on UTC day" in message
    assert "2 more are kept for scheduled runs by APPSFLYER_RESERVED_CALLS" in message
    assert "Nothing was called" in message and f"resets at {quota_reset_time():%Y-%m-%d} 00:00 UTC" in message
    assert refused.value.metadata["calls_left"].value == {"com.example in_app_events_report": 3}
    assert ledger_rows(archive_dsn)[0][3:5] == (7, 7)
    # A scheduled run may use the reserve: the same range fits it.
    scheduled = reserving_ledger(archive_dsn, run_tags=SCHEDULED).meter("appsflyer", "com.example",
                                                                         "in_app_events_report", 12)
    assert scheduled.require(4, "the daily run").left == 5
    assert ledger_rows(archive_dsn)[0][3:5] == (7, 7)


def test_spending_by_other_runs_stops_at_the_reserve_and_scheduled_runs_use_it(clean_databases):
    _, archive_dsn = clean_databases
    manual = reserving_ledger(archive_dsn, run_tags={}).meter("appsflyer", "com.example", "installs_report", 5)
    assert [manual.spend() for _ in range(3)] == [1, 2, 3]
    with pytest.raises(QuotaExceeded) as refused:
        manual.spend()
    message = str(refused.value)
    assert "the 3 of today's 5 calls that runs not launched by a schedule may use are spent" in message
    assert "2 more are kept for scheduled runs by APPSFLYER_RESERVED_CALLS" in message and "not sent" in message
    assert ledger_rows(archive_dsn)[0][3:5] == (3, 3)
    # Calls that do not count against the quota (<= 2-day aggregate ranges) still go through.
    assert manual.spend(counts_against_quota=False) == 3
    scheduled = reserving_ledger(archive_dsn, run_tags=SCHEDULED).meter("appsflyer", "com.example",
                                                                         "installs_report", 5)
    assert [scheduled.spend(), scheduled.spend()] == [4, 5]
    with pytest.raises(QuotaExceeded, match="today's quota of 5 calls is spent"):
        scheduled.spend()
    assert ledger_rows(archive_dsn)[0][3:5] == (6, 5)


def test_parallel_backfills_cannot_count_into_the_reserve(clean_databases):
    _, archive_dsn = clean_databases
    meter = reserving_ledger(archive_dsn, reserved=3, run_tags=BACKFILL).meter("appsflyer", "com.example",
                                                                               "installs_report", 10)
    granted = spend_in_parallel(meter, 24)
    assert granted.count(True) == 7
    assert ledger_rows(archive_dsn)[0][3:5] == (7, 7)


def test_a_reserve_as_large_as_the_quota_leaves_other_runs_no_call(clean_databases):
    _, archive_dsn = clean_databases
    meter = reserving_ledger(archive_dsn, reserved=2, run_tags=BACKFILL).meter("appsflyer", "com.example",
                                                                               "installs_report", 2)
    assert meter.status().left == 0
    with pytest.raises(QuotaExceeded, match="the 0 of today's 2 calls"):
        meter.spend()
    with psycopg.connect(archive_dsn) as conn:
        assert conn.execute("SELECT to_regclass('quota.api_calls')").fetchone()[0] is None


def test_the_reserve_applies_to_the_pull_api_reports_only(clean_databases):
    _, archive_dsn = clean_databases
    ledger = reserving_ledger(archive_dsn, run_tags=BACKFILL)
    # The Cohort API's account-wide daily limit is not one of them; a report without a quota neither.
    assert ledger.meter("appsflyer", "account", "cohort", 50_000).reserved == 0
    assert ledger.meter("appsflyer", "com.example", "installs_report", None).reserved == 0
    assert ledger.meter("appsflyer", "com.example", "daily_report", 24).reserved == 2


def test_the_code_location_reserves_calls_of_every_pull_api_report():
    from adpipes.appsflyer.raw_data_api import RAW_REPORTS
    from adpipes.definitions import build_resources
    from adpipes.lib.settings import load_settings

    ledger = build_resources(load_settings({"APPSFLYER_RESERVED_CALLS": "3"}))["api_calls"]
    assert ledger.reserved_calls == 3
    assert set(ledger.reserved_reports) == {*RAW_REPORTS, "daily_report"}
    assert build_resources(load_settings({}))["api_calls"].reserved_calls == 4


# -- end to end: a raw report asset over the sandbox ------------------------------------------------

def _android_installs_run(clean_sandbox, storage_resources, ledger: ApiCallLedger, tags: dict[str, str],
                          **partitions) -> dg.ExecuteInProcessResult:
    from adpipes.appsflyer.assets import build_raw_assets
    from adpipes.appsflyer.raw_data_api import AppsFlyerRawDataApi
    from adpipes.appsflyer.resources import AppsFlyerApps
    from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID

    android_installs = next(a for a in build_raw_assets(["installs_report"]) if a.key.path[-1] == "android_installs")
    resources = {
        **storage_resources,
        "api_calls": ledger,
        # A plan of 3 installs_report calls a day per app, 2 of them reserved.
        "appsflyer_raw_data_api": AppsFlyerRawDataApi(api_token=clean_sandbox.appsflyer_token,
                                                      base_url=clean_sandbox.base_url, timezone="Asia/Seoul",
                                                      backoff_seconds=0.01, daily_quotas={"installs_report": 3}),
        "appsflyer_apps": AppsFlyerApps(android_app_id=SANDBOX_ANDROID_APP_ID, ios_app_id=SANDBOX_IOS_APP_ID,
                                        currency="KRW"),
    }
    return dg.materialize([android_installs], resources=resources, tags=tags, raise_on_error=False, **partitions)


def _local_day(days_ago: int) -> str:
    from zoneinfo import ZoneInfo
    return (dt.datetime.now(ZoneInfo("Asia/Seoul")).date() - dt.timedelta(days=days_ago)).isoformat()


def test_a_backfill_needing_the_reserve_is_refused_before_any_vendor_call(clean_sandbox, clean_databases,
                                                                         storage_resources):
    from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID

    _, archive_dsn = clean_databases
    ledger = ApiCallLedger(archive=PostgresDatabase(role="archive", dsn=archive_dsn), reserved_calls=2,
                           reserved_reports=RESERVED_REPORTS)
    first, last = _local_day(63), _local_day(2)
    # 62 days of installs: 2 calls (60 + 2 days), and a backfill may use 1 of the 3.
    result = _android_installs_run(clean_sandbox, storage_resources, ledger,
                                   {**BACKFILL, "dagster/asset_partition_range_start": first,
                                    "dagster/asset_partition_range_end": last})
    assert not result.success
    message = step_failure_message(result)
    assert f"appsflyer/android_installs partitions {first}..{last} needs 2 calls" in message
    assert f"installs_report for app {SANDBOX_ANDROID_APP_ID}" in message
    assert "only 1 of today's 3 are left for it (0 spent" in message
    assert "2 more are kept for scheduled runs by APPSFLYER_RESERVED_CALLS" in message
    assert clean_sandbox.calls() == []
    with psycopg.connect(archive_dsn) as conn:
        assert conn.execute("SELECT to_regclass('quota.api_calls')").fetchone()[0] is None

    # A day's scheduled run after another run spent the calls backfills may use: it takes one
    # of the reserved calls; a manual run of the same day is refused.
    ledger.meter("appsflyer", SANDBOX_ANDROID_APP_ID, "installs_report", 3).spend()
    manual = _android_installs_run(clean_sandbox, storage_resources, ledger, {}, partition_key=_local_day(1))
    assert not manual.success and clean_sandbox.calls() == []
    assert "only 0 of today's 3 are left for it (1 spent" in step_failure_message(manual)
    scheduled = _android_installs_run(clean_sandbox, storage_resources, ledger, SCHEDULED,
                                      partition_key=_local_day(1))
    assert scheduled.success
    assert len(clean_sandbox.calls()) == 1
    with psycopg.connect(archive_dsn) as conn:
        assert conn.execute("SELECT calls, quota_calls FROM quota.api_calls").fetchall() == [(2, 2)]


# -- what the documents say of the reset, the refusal messages and the waits ------------------------

UTC = dt.timezone.utc


@pytest.fixture
def machine_clock_in(monkeypatch):
    """Set the machine's local timezone (TZ) for the test: UTC day and reset must not follow it."""
    import time as time_module

    def set_zone(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time_module.tzset()

    yield set_zone
    monkeypatch.undo()
    time_module.tzset()


def test_the_quota_resets_at_the_next_00_00_utc_whatever_the_zone_of_the_clock(machine_clock_in):
    from adpipes.lib.quota import describe_reset

    # docs/operations.md: at 20:48 UTC on 2026-11-23 the quota "resets at 2026-11-24 00:00 UTC (in 3h 12m)".
    evening = dt.datetime(2026, 11, 23, 20, 48, tzinfo=UTC)
    assert quota_reset_time(evening) == dt.datetime(2026, 11, 24, tzinfo=UTC)
    assert describe_reset(evening) == "2026-11-24 00:00 UTC (in 3h 12m)"
    # 23:30 in New York on the 23rd is 04:30 UTC on the 24th: the next 00:00 UTC is the 25th's,
    # even on a machine whose own clock (UTC−12) still reads the 23rd.
    machine_clock_in("Etc/GMT+12")
    new_york = dt.datetime(2026, 11, 23, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert quota_reset_time(new_york) == dt.datetime(2026, 11, 25, tzinfo=UTC)
    assert describe_reset(new_york) == "2026-11-25 00:00 UTC (in 19h 30m)"
    # Without a time: now, on that machine too.
    before = dt.datetime.now(UTC).date()
    text = describe_reset()
    after = dt.datetime.now(UTC).date()
    import re
    found = re.fullmatch(r"(\d{4}-\d\d-\d\d) 00:00 UTC \(in (\d+)h (\d+)m\)", text)
    assert found, text
    assert found.group(1) in {(d + dt.timedelta(days=1)).isoformat() for d in (before, after)}
    assert int(found.group(2)) < 24 and int(found.group(3)) < 60


def test_today_is_the_utc_day_whatever_the_zone_of_the_clock(ledger, machine_clock_in):
    # AppsFlyer's quotas are per calendar day from 00:00 UTC. At 23:00 UTC a machine at UTC+14
    # reads the next day; the calls counted today are still today's.
    machine_clock_in("Etc/GMT-14")
    meter = ledger.meter("appsflyer", "com.example", "installs_report", 24)
    meter.spend(), meter.spend()
    today = dt.datetime.now(UTC).date()
    late = dt.datetime.combine(today, dt.time(23), tzinfo=UTC)
    status = meter.status(late)
    assert (status.utc_day, status.used, status.left) == (today, 2, 22)


def _next_reset_day() -> set[str]:
    return {(dt.datetime.now(UTC).date() + dt.timedelta(days=1)).isoformat()}


def _next_midnights_utc(since: dt.datetime) -> set[dt.datetime]:
    """The next 00:00 UTC as of ``since`` and as of now (a test may straddle midnight)."""
    return {dt.datetime.combine(moment.date() + dt.timedelta(days=1), dt.time(), tzinfo=UTC)
            for moment in (since, dt.datetime.now(UTC))}


def test_the_refusal_of_a_range_reads_as_documented(ledger):
    """The messages of docs/operations.md ("The call ledger"), with this test's figures."""
    import re

    meter = ledger.meter("appsflyer", "com.example.app", "in_app_events_report", 12)
    for _ in range(11):
        meter.spend()
    day = dt.datetime.now(UTC).date()
    what = "appsflyer/android_in_app_events partitions 2026-08-25..2026-11-22"
    with pytest.raises(QuotaExceeded) as refused:
        meter.require(3, what, hint="materialize fewer days now (one call covers up to 31 days)")
    documented = re.escape(
        f"{what} needs 3 calls of appsflyer in_app_events_report for app com.example.app, but only 1 of "
        f"today's 12 are left (11 spent on UTC day {day}, counted in quota.api_calls of the archive "
        "database). Nothing was called. The quota resets at RESET: materialize the range after that, or "
        "materialize fewer days now (one call covers up to 31 days).")
    documented = documented.replace("RESET", r"(\d{4}-\d\d-\d\d) 00:00 UTC \(in \d+h \d+m\)")
    found = re.fullmatch(documented, str(refused.value))
    assert found, str(refused.value)
    assert found.group(1) in {(day + dt.timedelta(days=1)).isoformat(), *_next_reset_day()}
    # One call: "1 call"; without a hint the sentence ends after "after that".
    meter.spend()
    with pytest.raises(QuotaExceeded) as one:
        meter.require(1, "appsflyer/android_in_app_events partition 2026-11-22")
    message = str(one.value)
    assert "partition 2026-11-22 needs 1 call of appsflyer in_app_events_report" in message
    assert "(12 spent on UTC day" in message and "archive database). Nothing was called." in message
    assert message.endswith(": materialize the range after that.")
    # require_calls without a hint: the same ending.
    with pytest.raises(dg.Failure) as failed:
        require_calls([(meter, 1)], "appsflyer/android_in_app_events partition 2026-11-22")
    assert failed.value.description.endswith(": materialize the range after that.")


def test_the_refusal_of_a_range_dipping_into_the_reserve_reads_as_documented(clean_databases):
    """docs/operations.md ("Calls kept for the scheduled runs"), with this test's figures."""
    _, archive_dsn = clean_databases
    meter = reserving_ledger(archive_dsn, run_tags=BACKFILL).meter("appsflyer", "com.example.app",
                                                                    "installs_report", 24)
    for _ in range(21):
        meter.spend()
    with pytest.raises(QuotaExceeded) as refused:
        meter.require(2, "appsflyer/android_installs partitions 2026-09-20..2026-11-22")
    day = dt.datetime.now(UTC).date()
    assert (
        "appsflyer/android_installs partitions 2026-09-20..2026-11-22 needs 2 calls of appsflyer "
        f"installs_report for app com.example.app, but only 1 of today's 24 are left for it (21 spent on UTC "
        f"day {day}, counted in quota.api_calls of the archive database; 2 more are kept for scheduled "
        "runs by APPSFLYER_RESERVED_CALLS, and this run was not launched by a schedule). Nothing was "
        "called. The quota resets at "
    ) in str(refused.value)


def test_a_refused_call_names_app_report_and_the_reset(ledger):
    # docs/vendors.md: the error names app, report and when the quota resets; one call was refused.
    before = dt.datetime.now(UTC)
    meter = ledger.meter("appsflyer", "com.example", "installs_report", 1)
    assert meter.spend() == 1  # a quota of 1 is a quota: one call, then none
    with pytest.raises(QuotaExceeded) as refused:
        meter.spend()
    error = refused.value
    assert (error.app_id, error.report, error.calls_needed, error.calls_left) == ("com.example", "installs_report", 1, 0)
    assert error.resets_at in _next_midnights_utc(before)
    # Without a reserve the message mentions none.
    assert "APPSFLYER_RESERVED_CALLS" not in str(error) and "archive database), so the call was not sent" in str(error)


def test_a_quota_below_one_names_the_setting_to_fix(ledger):
    with pytest.raises(ValueError) as caught:
        ledger.meter("appsflyer", "com.example", "installs_report", 0)
    # docs/configuration.md: the plan's quotas are APPSFLYER_DAILY_QUOTAS.
    assert str(caught.value).endswith("(APPSFLYER_DAILY_QUOTAS for AppsFlyer)")


def test_every_refusal_of_a_run_is_reported_and_the_ranges_that_fit_are_counted(clean_databases):
    _, archive_dsn = clean_databases
    before = dt.datetime.now(UTC)
    ledger = reserving_ledger(archive_dsn, reserved=2, run_tags=BACKFILL)
    a1 = ledger.meter("appsflyer", "a1", "installs_report", 3)   # 1 left for a backfill
    a2 = ledger.meter("appsflyer", "a2", "installs_report", 3)   # 1 left
    fits = ledger.meter("appsflyer", "a3", "installs_report", 24)
    fits.spend()
    unreserved = ledger.meter("appsflyer", "a3", "cohort", 50)
    assert require_calls([(fits, 2), (unreserved, 5)], "one range") == {
        "a3 installs_report": {"used_before_run": 1, "needed": 2, "daily_quota": 24, "reserved_for_schedules": 2},
        "a3 cohort": {"used_before_run": 0, "needed": 5, "daily_quota": 50},
    }
    with pytest.raises(dg.Failure) as refused:
        require_calls([(a1, 2), (fits, 1), (a2, 3)], "a range", hint="materialize fewer days now")
    lines = refused.value.description.split("\n")
    assert len(lines) == 2
    assert lines[0].startswith("a range needs 2 calls of appsflyer installs_report for app a1, but only 1 ")
    assert lines[1].startswith("a range needs 3 calls of appsflyer installs_report for app a2, but only 1 ")
    metadata = refused.value.metadata
    assert metadata["calls_needed"].value == {"a1 installs_report": 2, "a2 installs_report": 3}
    assert metadata["calls_left"].value == {"a1 installs_report": 1, "a2 installs_report": 1}
    assert dt.datetime.fromisoformat(metadata["quota_resets_at"].value) in _next_midnights_utc(before)


def test_the_last_call_of_a_report_is_seen_by_this_process(ledger, clean_databases):
    _, archive_dsn = clean_databases
    meter = ledger.meter("appsflyer", "com.example", "daily_report", 24)
    assert meter.seconds_since_last_call() is None
    meter.spend(counts_against_quota=False)
    assert 0 <= meter.seconds_since_last_call() < 1800
    with psycopg.connect(archive_dsn) as conn:
        conn.execute("UPDATE quota.api_calls SET last_call_at = now() - interval '1 hour'")
    assert meter.seconds_since_last_call() >= 3600
    # Another report's or another app's call is not this report's last call.
    ledger.meter("appsflyer", "com.example", "installs_report", 24).spend()
    ledger.meter("appsflyer", "other.app", "daily_report", 24).spend()
    ledger.meter("airbridge", "com.example", "daily_report", None).spend()
    assert meter.seconds_since_last_call() >= 3600
    meter.spend(counts_against_quota=False)
    assert meter.seconds_since_last_call() < 1800


def test_a_rate_window_needs_a_positive_length(ledger):
    with pytest.raises(ValueError, match="positive"):
        ledger.rate_window("appsflyer", "cohort:zero", 1, 0)
    # Below a second is a length: it grants, and a full window's wait is at most its length (a
    # second try that came after the window, on a stalled machine, was granted: look again).
    window = ledger.rate_window("appsflyer", "cohort:short", 1, 0.9)
    assert window.try_acquire()[0] is not None
    granted, wait = window.try_acquire()
    while granted is not None:
        granted, wait = window.try_acquire()
    assert 0 < wait <= 0.9


def test_waiting_for_a_slot_takes_the_rest_of_the_window_and_says_so(ledger):
    """RateWindow.try_acquire: (granted_at, 0) when a slot was taken, else (None, the seconds until
    the oldest grant leaves the window); acquire_slot waits for it and returns the seconds waited."""
    window_seconds = 1.0
    window = ledger.rate_window("appsflyer", "cohort:wait", 1, window_seconds)
    first, waited_first = window.acquire_slot()
    assert waited_first == 0.0
    granted, wait = window.try_acquire()
    assert granted is None and 0 < wait <= window_seconds
    second, waited = window.acquire_slot()
    # Granted once the first left the window (database clock), after sleeping about the rest of it.
    assert second - first >= dt.timedelta(seconds=window_seconds)
    assert waited >= 0.8 * window_seconds
    other = ledger.rate_window("appsflyer", "cohort:free", 1, window_seconds)
    assert other.try_acquire()[1] == 0.0 and other.acquire() >= 0.8 * window_seconds


def test_a_slot_taken_in_a_window_already_in_use_waited_nothing(ledger):
    # try_acquire: (granted_at, 0) whenever a slot was taken, also when earlier grants are still
    # in the window (the Cohort API's 60 a minute: the second call of a minute waits for nothing).
    window = ledger.rate_window("appsflyer", "cohort:two", 2, 30.0)
    assert window.try_acquire()[1] == 0.0
    granted, wait = window.try_acquire()
    assert granted is not None and wait == 0.0
    # The third is refused: the window holds two.
    assert window.try_acquire()[0] is None
