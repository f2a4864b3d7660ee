"""The API call ledger on a real PostgreSQL: counting, refusing and concurrency."""

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import psycopg
import pytest

from adpipes.lib.quota import ApiCallLedger, QuotaExceeded, quota_reset_time, require_calls
from adpipes.lib.storage.postgres import PostgresDatabase


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


def test_parallel_runs_cannot_count_past_the_quota(ledger, clean_databases):
    _, archive_dsn = clean_databases
    meter = ledger.meter("appsflyer", "com.example", "installs_report", 10)

    def spend() -> bool:
        try:
            meter.spend()
            return True
        except QuotaExceeded:
            return False

    with ThreadPoolExecutor(max_workers=8) as pool:
        granted = list(pool.map(lambda _: spend(), range(24)))
    assert granted.count(True) == 10
    assert ledger_rows(archive_dsn)[0][3:5] == (10, 10)


def test_the_last_call_is_seen_by_every_process(ledger):
    meter = ledger.meter("appsflyer", "com.example", "daily_report", 24)
    assert meter.seconds_since_last_call() is None
    meter.spend(counts_against_quota=False)
    assert 0 <= meter.seconds_since_last_call() < 5


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
    assert window.try_acquire()[0] is not None
    granted, wait = window.try_acquire()
    assert granted is None and 29 < wait <= 30
    # Another scope (account) has its own window.
    assert ledger.rate_window("appsflyer", "cohort:other", 1, 30.0).try_acquire()[0] is not None
    with pytest.raises(ValueError, match="limit >= 1"):
        ledger.rate_window("appsflyer", "cohort:bad", 0, 30.0)
