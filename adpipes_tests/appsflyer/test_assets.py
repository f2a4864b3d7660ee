"""The AppsFlyer assets end to end: sandbox over real HTTP -> assets -> real PostgreSQL."""

import datetime as dt
import gzip
import os
import subprocess
import sys
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest

from adpipes.appsflyer.assets import RawReportConfig, build_raw_assets
from adpipes.appsflyer.raw_data_api import AppsFlyerRawDataApi
from adpipes.appsflyer.resources import AppsFlyerApps
from adpipes.lib.quality import QualityStore
from adpipes.dev.sandbox.appsflyer import MAINTENANCE_HTML, MAINTENANCE_TEXT, default_rows_for_day
from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID
from adpipes_tests.fixtures.sandbox import prod_cli_env

TZ = "Asia/Seoul"
# The two reports of the first wave: most tests need no more (every report is covered by
# test_raw_reports.py), and each report costs a sandbox call per app and day.
CLASSIC_REPORTS = ("installs_report", "in_app_events_report")
ASSETS = build_raw_assets(CLASSIC_REPORTS)
raw_report_assets, raw_data = ASSETS[:-1], ASSETS[-1]
RAW_TABLES = ["android_installs", "ios_installs", "android_in_app_events", "ios_in_app_events"]


def recent_day(days_ago: int = 1) -> str:
    return (dt.datetime.now(ZoneInfo(TZ)).date() - dt.timedelta(days=days_ago)).isoformat()


@pytest.fixture
def resources(clean_sandbox, storage_resources):
    return {
        "appsflyer_raw_data_api": AppsFlyerRawDataApi(
            api_token=clean_sandbox.appsflyer_token,
            base_url=clean_sandbox.base_url,
            timezone=TZ,
            backoff_seconds=0.01,
        ),
        "appsflyer_apps": AppsFlyerApps(android_app_id=SANDBOX_ANDROID_APP_ID, ios_app_id=SANDBOX_IOS_APP_ID,
                                        currency="KRW"),
        **storage_resources,
    }


def counts(dsn: str, tables: list[str]) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM appsflyer.{t}").fetchone()[0] for t in tables}


def served_rows(sandbox) -> dict[tuple[str, str], int]:
    served: dict[tuple[str, str], int] = {}
    for call in sandbox.calls():
        if call["status"] == 200:
            key = (call["app_id"], call["report"])
            served[key] = served.get(key, 0) + call["rows"]
    return served


def test_day_lands_in_archive_and_product_exactly_once(resources, clean_sandbox, clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = recent_day()
    result = dg.materialize(ASSETS, resources=resources, partition_key=day)
    assert result.success

    served = served_rows(clean_sandbox)
    archived = counts(archive_dsn, RAW_TABLES)
    assert archived["android_installs"] == served[(SANDBOX_ANDROID_APP_ID, "installs_report")] > 0
    assert archived["ios_installs"] == served[(SANDBOX_IOS_APP_ID, "installs_report")] > 0
    assert archived["android_in_app_events"] == served[(SANDBOX_ANDROID_APP_ID, "in_app_events_report")] > 0
    assert archived["ios_in_app_events"] == served[(SANDBOX_IOS_APP_ID, "in_app_events_report")] > 0
    total = sum(archived.values())
    assert counts(product_dsn, ["raw_data"]) == {"raw_data": total}
    assert counts(archive_dsn, ["raw_data"]) == {"raw_data": total}

    materialization = result.asset_materializations_for_node("appsflyer__raw_data")[0]
    assert materialization.metadata["dagster/partition_row_count"].value == total
    assert "dagster/column_schema" in materialization.metadata

    # A second run replaces the partition: identical counts, no duplicates.
    assert dg.materialize(ASSETS, resources=resources, partition_key=day).success
    assert counts(archive_dsn, RAW_TABLES) == archived
    assert counts(product_dsn, ["raw_data"]) == {"raw_data": total}


def test_raw_data_is_cleaned(resources, clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = recent_day()
    assert dg.materialize(ASSETS, resources=resources, partition_key=day).success
    with psycopg.connect(product_dsn) as conn:
        conn.execute("SET TimeZone = 'Asia/Seoul'")
        outside_day = conn.execute(
            "SELECT count(*) FROM appsflyer.raw_data WHERE event_time::date <> report_date"
        ).fetchone()[0]
        ios_without_ad_id = conn.execute(
            "SELECT count(*) FROM appsflyer.raw_data WHERE platform = 'ios' AND advertising_id IS NULL"
        ).fetchone()[0]
        receipts = conn.execute(
            "SELECT platform, event_value FROM appsflyer.raw_data WHERE event_name = 'af_purchase'"
        ).fetchall()
        non_purchase_values = conn.execute(
            "SELECT count(*) FROM appsflyer.raw_data WHERE event_name <> 'af_purchase' AND event_value IS NOT NULL"
        ).fetchone()[0]
        flags = conn.execute(
            "SELECT count(*) FROM appsflyer.raw_data WHERE wifi IS NULL"
        ).fetchone()[0]
        types = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'appsflyer' AND table_name = 'raw_data'"
        ).fetchall())
    with psycopg.connect(archive_dsn) as conn:
        raw_idfa = conn.execute(
            "SELECT count(*) FROM appsflyer.ios_installs WHERE idfa <> ''"
        ).fetchone()[0]
    assert outside_day == 0
    assert ios_without_ad_id == 0 and raw_idfa > 0
    assert receipts and all(
        (v.startswith("GPA.") if p == "android" else v.isdigit()) for p, v in receipts
    )
    assert non_purchase_values == 0
    assert flags == 0
    assert types["event_time"] == "timestamp with time zone"
    assert types["customer_user_id"] == "bigint"
    assert types["wifi"] == "boolean"
    assert types["report_date"] == "date"


def check_results(result) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def query(dsn: str, statement: str, params=()) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(statement, params).fetchall()


BAD_ROWS = {
    # AppsFlyer ID planted on the row -> (column overridden, bad value, the check that must fail)
    "af-windows": ("Platform", "windows", "valid_platform"),
    "af-bad-time": ("Event Time", "2026-13-45 99:00:00", "parseable_values"),
    "af-bad-cuid": ("Customer User ID", "user-abc", "valid_customer_user_id"),
}


def plant_bad_rows(sandbox, day: str) -> None:
    sandbox.configure(row_overrides=[
        {"app_id": SANDBOX_ANDROID_APP_ID, "report": "in_app_events_report", "day": day, "row": n,
         "values": {column: value, "AppsFlyer ID": af_id}}
        for n, (af_id, (column, value, _)) in enumerate(BAD_ROWS.items())
    ])


def test_bad_rows_are_quarantined_and_reported(resources, clean_sandbox, clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = recent_day()
    plant_bad_rows(clean_sandbox, day)
    result = dg.materialize(ASSETS, resources=resources, partition_key=day, raise_on_error=False)
    # The default policy tolerates no quarantined row: the blocking checks fail the run...
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    message = failure.event_specific_data.error.message
    assert "appsflyer/raw_data" in message and "3 of" in message and "quality.quarantine" in message

    checks = check_results(result)
    for af_id, (column, value, check) in BAD_ROWS.items():
        evaluation = checks[("appsflyer/raw_data", check)]
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        metadata = evaluation.metadata
        assert metadata["failing_rows"].value == 1
        assert sum(metadata["failing_rows_by_rule"].value.values()) == 1
        assert evaluation.partition == day  # one evaluation per partition
        sample = metadata["sample"].value
        assert value in sample and af_id in sample and day in sample
        assert "quality.failure_cases" in metadata["full_list"].value
    for check in ("required_values", "partition_date", "time_order", "required_columns"):
        assert checks[("appsflyer/raw_data", check)].passed, check

    # ...but the valid rows are in product and the bad ones only in the archive's raw report
    # (as delivered) and in quarantine (with the reasons).
    archived = counts(archive_dsn, RAW_TABLES)
    assert counts(product_dsn, ["raw_data"])["raw_data"] == sum(archived.values()) - 3
    bad_ids = list(BAD_ROWS)
    assert query(product_dsn, "SELECT count(*) FROM appsflyer.raw_data WHERE appsflyer_id = ANY(%s)",
                 (bad_ids,)) == [(0,)]
    assert dict(query(archive_dsn, "SELECT appsflyer_id, platform FROM appsflyer.android_in_app_events "
                                   "WHERE appsflyer_id = ANY(%s)", (bad_ids,)))["af-windows"] == "windows"
    quarantined = query(archive_dsn, "SELECT row_values->>'appsflyer_id', reasons, report_date::text "
                                     "FROM quality.quarantine WHERE asset_key = 'appsflyer/raw_data'")
    assert sorted(q[0] for q in quarantined) == sorted(bad_ids)
    reasons = {q[0]: q[1] for q in quarantined}
    assert "user-abc" in reasons["af-bad-cuid"] and "2026-13-45" in reasons["af-bad-time"]
    # Kept as delivered: every column of the archived raw row, those raw_data does not read (the
    # user agent, the URL) among them, although raw_data reads only its own columns back.
    whole = query(archive_dsn, "SELECT q.row_values::jsonb = to_jsonb(r), q.row_values::jsonb ? 'user_agent', "
                               "r.user_agent IS NOT NULL FROM quality.quarantine q "
                               "JOIN appsflyer.android_in_app_events r ON r.appsflyer_id = q.row_values->>'appsflyer_id' "
                               "WHERE q.asset_key = 'appsflyer/raw_data'")
    assert whole == [(True, True, True)] * 3
    assert {q[2] for q in quarantined} == {day}
    cases = query(archive_dsn, "SELECT check_name, column_name, value FROM quality.failure_cases "
                               "WHERE asset_key = 'appsflyer/raw_data' AND report_date = %s", (day,))
    assert sorted(cases) == sorted([
        ("valid_platform", "platform", "windows"),
        ("parseable_values", "event_time", "2026-13-45 99:00:00"),
        ("valid_customer_user_id", "customer_user_id", "user-abc"),
    ])

    # A re-run replaces the partition's failure cases instead of adding to them.
    dg.materialize(ASSETS, resources=resources, partition_key=day, raise_on_error=False)
    assert len(query(archive_dsn, "SELECT * FROM quality.failure_cases WHERE asset_key = 'appsflyer/raw_data'")) == 3
    assert len(query(archive_dsn, "SELECT * FROM quality.quarantine")) == 3


def test_a_tolerated_share_of_bad_rows_warns_without_failing(resources, clean_sandbox, clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = recent_day()
    plant_bad_rows(clean_sandbox, day)
    tolerant = {**resources, "quality": QualityStore(archive=resources["quality"].archive, max_quarantined_share=0.01)}
    result = dg.materialize(ASSETS, resources=tolerant, partition_key=day)
    assert result.success
    evaluation = check_results(result)[("appsflyer/raw_data", "valid_platform")]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert query(product_dsn, "SELECT count(*) FROM appsflyer.raw_data WHERE appsflyer_id = 'af-windows'") == [(0,)]


def test_a_first_report_without_event_time_is_kept_aside_not_archived(resources, clean_sandbox, clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = recent_day()
    clean_sandbox.configure(drop_columns=["Event Time"])
    result = dg.materialize(ASSETS, resources=resources, partition_key=day, raise_on_error=False)
    assert not result.success
    checks = check_results(result)
    evaluation = checks[("appsflyer/android_in_app_events", "required_columns")]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "event_time" in evaluation.metadata["sample"].value
    assert any("event_time" in p and day in p for p in evaluation.metadata["problems"].value)
    failures = [e.event_specific_data.error.message for e in result.all_events
                if e.event_type_value == "STEP_FAILURE"]
    assert any("appsflyer/android_in_app_events" in m and day in m and "event_time" in m
               and "nothing archived" in m for m in failures)
    # Nothing was archived before, yet a report that cannot be used does not become the archived
    # day (raw_data would read it as a day without events): it is kept whole beside the archive.
    assert query(product_dsn, "SELECT to_regclass('appsflyer.raw_data')") == [(None,)]
    for table in RAW_TABLES:
        assert query(archive_dsn, "SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass(%s)",
                     (f"appsflyer.{table}",)) == [(0,)]
    served = served_rows(clean_sandbox)
    rejected = query(archive_dsn, "SELECT content_gzip, row_count, archived_rows FROM quality.rejected_deliveries "
                                  "WHERE asset_key = 'appsflyer/android_in_app_events' AND report_date = %s", (day,))
    assert len(rejected) == 1
    content, row_count, archived_rows = rejected[0]
    lines = gzip.decompress(content).decode().splitlines()
    assert "Event Time" not in lines[0] and "AppsFlyer ID" in lines[0]
    assert row_count == served[(SANDBOX_ANDROID_APP_ID, "in_app_events_report")] > 0 and archived_rows is None
    assert query(archive_dsn, "SELECT count(*) FROM quality.failure_cases WHERE check_name = 'required_columns' "
                              "AND column_name = 'event_time' AND report_date = %s", (day,)) == [(4,)]
    assert query(archive_dsn, "SELECT count(*) FROM quality.rejected_deliveries") == [(4,)]


def test_a_clean_partition_passes_every_check(resources, clean_databases):
    _, archive_dsn = clean_databases
    day = recent_day()
    for _ in range(2):
        result = dg.materialize(ASSETS, resources=resources, partition_key=day)
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        # 4 checks on each raw report, one per rule group on raw_data, less row_volume (5 of
        # them), which has no earlier day to compare with: not evaluated, rather than passed.
        assert len(evaluations) == 4 * 4 + 8 - 5
        assert "row_volume" not in {e.check_name for e in evaluations}
        assert all(e.passed for e in evaluations), [e.check_name for e in evaluations if not e.passed]
    assert query(archive_dsn, "SELECT count(*) FROM quality.failure_cases") == [(0,)]
    assert query(archive_dsn, "SELECT count(*) FROM quality.partition_rows WHERE report_date = %s", (day,)) == [(5,)]


def test_partition_range_in_one_run(resources, clean_databases):
    product_dsn, _ = clean_databases
    first, last = recent_day(3), recent_day(2)
    # The range tags are what a single-run backfill (UI or --partition-range) puts on the run.
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        ASSETS, resources=resources, instance=instance,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )
    assert result.success
    # raw_data's rows went to both databases while they were typed and validated, a day after the
    # other (lib/storage/streamed_load.py), not from the spool files afterwards.
    loaded = [e.user_message for e in instance.all_logs(result.run_id)
              if "partition(s) of appsflyer.raw_data" in (e.user_message or "")]
    assert loaded == [f"archive and product: replaced 2 partition(s) of appsflyer.raw_data with "
                      f"{sum(result.asset_materializations_for_node('appsflyer__raw_data')[0].metadata['partition_row_counts'].value.values())} "
                      "rows, loaded while they were computed"]
    counts_meta = result.asset_materializations_for_node("appsflyer__raw_data")[0].metadata
    per_partition = counts_meta["partition_row_counts"].value
    assert sorted(per_partition) == [first, last] and all(v > 0 for v in per_partition.values())
    with psycopg.connect(product_dsn) as conn:
        rows = dict(conn.execute(
            "SELECT report_date::text, count(*) FROM appsflyer.raw_data GROUP BY 1"
        ).fetchall())
    assert rows == per_partition


def test_prod_cli_materializes_a_day(clean_sandbox, clean_databases, tmp_path):
    """The 'done when' path: ADPIPES_ENV=prod, real DSNs, an AppsFlyer-compatible endpoint, the CLI."""
    product_dsn, archive_dsn = clean_databases
    day = recent_day()
    env = prod_cli_env(clean_sandbox, product_dsn, archive_dsn, str(tmp_path), timezone=TZ)
    # raw_data is built from the reports pulled: the first wave's two here.
    env["APPSFLYER_RAW_REPORTS"] = ",".join(CLASSIC_REPORTS)
    selection = ",".join(f"appsflyer/{t}" for t in RAW_TABLES + ["raw_data"])
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "adpipes.definitions",
               "--select", selection, "--partition", day]
    for _ in range(2):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert clean_sandbox.appsflyer_token not in done.stdout + done.stderr
    served = served_rows(clean_sandbox)
    archived = counts(archive_dsn, RAW_TABLES)
    # Two runs: the sandbox served each report twice; the archive holds it once.
    assert archived["android_installs"] * 2 == served[(SANDBOX_ANDROID_APP_ID, "installs_report")]
    assert archived["ios_in_app_events"] * 2 == served[(SANDBOX_IOS_APP_ID, "in_app_events_report")]
    assert counts(product_dsn, ["raw_data"])["raw_data"] == sum(archived.values())


def test_prod_without_credentials_fails_at_load_naming_them(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADPIPES_", "APPSFLYER_", "AIRBRIDGE_"))}
    env.update({"ADPIPES_ENV": "prod", "DAGSTER_HOME": str(tmp_path)})
    done = subprocess.run([sys.executable, "-c", "import adpipes.definitions"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    for name in ["ADPIPES_PRODUCT_DSN", "ADPIPES_ARCHIVE_DSN", "APPSFLYER_API_TOKEN",
                 "APPSFLYER_ANDROID_APP_ID", "APPSFLYER_IOS_APP_ID",
                 "AIRBRIDGE_API_TOKEN", "AIRBRIDGE_APP_NAME"]:
        assert name in done.stderr


def step_failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The first step failure's message, with the messages of the errors that caused it."""
    error = [e.event_specific_data.error for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def android_events_asset() -> dg.AssetsDefinition:
    return next(a for a in raw_report_assets if a.key.path[-1] == "android_in_app_events")


def range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


@pytest.mark.parametrize("maximum_rows, calls_expected", [(200_000, 2), (600, 6)])
def test_a_62_day_backfill_is_one_raw_call_per_31_days(resources, clean_sandbox, clean_databases,
                                                       maximum_rows, calls_expected):
    _, archive_dsn = clean_databases
    first, last = recent_day(63), recent_day(2)
    clean_sandbox.configure(rows_per_day={f"{SANDBOX_ANDROID_APP_ID}|in_app_events_report": 20})
    api = AppsFlyerRawDataApi(
        api_token=clean_sandbox.appsflyer_token, base_url=clean_sandbox.base_url, timezone=TZ,
        backoff_seconds=0.01, maximum_rows=maximum_rows,
    )
    result = dg.materialize([android_events_asset()], resources={**resources, "appsflyer_raw_data_api": api},
                            tags=range_tags(first, last))
    assert result.success
    calls = [c for c in clean_sandbox.calls() if c["app_id"] == SANDBOX_ANDROID_APP_ID]
    # 62 days = two 31-day windows; with maximum_rows=600 each 620-row window comes back truncated
    # and is split in two halves (1 truncated + 2 complete calls per window).
    assert len(calls) == calls_expected
    assert sum(c["rows"] for c in calls if c["rows"] < maximum_rows) == 62 * 20
    # Every request was counted in the call ledger, against the app's in-app events quota.
    assert query(archive_dsn, "SELECT app_id, report, calls, quota_calls FROM quota.api_calls") == [
        (SANDBOX_ANDROID_APP_ID, "in_app_events_report", calls_expected, calls_expected)
    ]
    metadata = result.asset_materializations_for_node("appsflyer__android_in_app_events")[0].metadata
    per_partition = metadata["partition_row_counts"].value
    assert len(per_partition) == 62 and set(per_partition.values()) == {20}
    stored = dict(query(archive_dsn, "SELECT report_date::text, count(*) FROM appsflyer.android_in_app_events "
                                     "GROUP BY 1"))
    assert stored == per_partition
    # Every row is in the partition of its own Event Time day.
    assert query(archive_dsn, "SELECT count(*) FROM appsflyer.android_in_app_events "
                              "WHERE left(event_time, 10)::date <> report_date") == [(0,)]


def test_raw_partitions_past_the_lookback_fail_before_any_call(resources, clean_sandbox):
    old = recent_day(95)
    result = dg.materialize([android_events_asset()], resources=resources, partition_key=old,
                            raise_on_error=False)
    assert not result.success
    message = step_failure_message(result)
    assert old in message and "90-day" in message and "archive" in message
    assert clean_sandbox.calls() == []


def test_the_ledger_refuses_a_range_the_daily_quota_cannot_pay_for(resources, clean_sandbox, clean_databases):
    _, archive_dsn = clean_databases
    first, last = recent_day(63), recent_day(2)
    api = AppsFlyerRawDataApi(api_token=clean_sandbox.appsflyer_token, base_url=clean_sandbox.base_url,
                           timezone=TZ, backoff_seconds=0.01, daily_quotas={"in_app_events_report": 3})
    meter = api.quota_meter(resources["api_calls"], SANDBOX_ANDROID_APP_ID, "in_app_events_report")
    meter.spend(), meter.spend()  # two calls earlier today (another run)
    result = dg.materialize([android_events_asset()], resources={**resources, "appsflyer_raw_data_api": api},
                            tags=range_tags(first, last), raise_on_error=False)
    assert not result.success
    message = step_failure_message(result)
    assert f"appsflyer/android_in_app_events partitions {first}..{last} needs 2 calls" in message
    assert f"in_app_events_report for app {SANDBOX_ANDROID_APP_ID}" in message
    assert "only 1 of today's 3 are left" in message and "Nothing was called" in message
    assert "resets at" in message and "00:00 UTC" in message and "up to 31 days" in message
    assert clean_sandbox.calls() == []
    assert query(archive_dsn, "SELECT calls, quota_calls FROM quota.api_calls") == [(2, 2)]


def test_the_ledger_stops_a_split_the_quota_cannot_pay_for(resources, clean_sandbox, clean_databases):
    # 2 calls are needed and 4 are left, but each 31-day window comes back truncated and is split:
    # the first window costs 3 calls, and the second window's split would be the 5th.
    _, archive_dsn = clean_databases
    first, last = recent_day(63), recent_day(2)
    clean_sandbox.configure(rows_per_day={f"{SANDBOX_ANDROID_APP_ID}|in_app_events_report": 20})
    api = AppsFlyerRawDataApi(api_token=clean_sandbox.appsflyer_token, base_url=clean_sandbox.base_url,
                           timezone=TZ, backoff_seconds=0.01, maximum_rows=600,
                           daily_quotas={"in_app_events_report": 4})
    result = dg.materialize([android_events_asset()], resources={**resources, "appsflyer_raw_data_api": api},
                            tags=range_tags(first, last), raise_on_error=False)
    assert not result.success
    message = step_failure_message(result)
    assert "today's quota of 4 calls is spent" in message and "the call was not sent" in message
    assert len(clean_sandbox.calls()) == 4
    assert query(archive_dsn, "SELECT calls, quota_calls FROM quota.api_calls") == [(4, 4)]
    # Nothing of the half-fetched range was written.
    assert query(archive_dsn, "SELECT to_regclass('appsflyer.android_in_app_events')") == [(None,)]


# -- the archive is never made worse ---------------------------------------------------------------

ANDROID = SANDBOX_ANDROID_APP_ID


def android_installs_asset() -> dg.AssetsDefinition:
    return next(a for a in raw_report_assets if a.key.path[-1] == "android_installs")


def archived_day(dsn: str, table: str, day: str) -> list[tuple]:
    """Every row of the archived day, every column, in a fixed order: compared before and after."""
    return query(dsn, f"SELECT * FROM appsflyer.{table} t WHERE report_date = %s ORDER BY t::text", (day,))


def table_columns(dsn: str, table: str) -> list[str]:
    return [r[0] for r in query(dsn, "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                                     "'appsflyer' AND table_name = %s ORDER BY ordinal_position", (table,))]


def fingerprint(dsn: str, table: str, day: str) -> tuple:
    return query(dsn, f"SELECT count(*), md5(string_agg(t::text, E'\\n' ORDER BY t::text)) "
                      f"FROM appsflyer.{table} t WHERE report_date = %s", (day,))[0]


def volume_history(dsn: str, asset: str) -> list[tuple]:
    return query(dsn, "SELECT report_date::text, checked_rows, run_id FROM quality.partition_rows "
                      "WHERE asset_key = %s ORDER BY 1", (asset,))


def rejected_deliveries(dsn: str, asset: str) -> list[tuple]:
    return query(dsn, "SELECT report_date::text, problem, content_gzip, row_count, archived_rows, columns "
                      "FROM quality.rejected_deliveries WHERE asset_key = %s ORDER BY id", (asset,))


def archive_a_day(resources, archive_dsn: str) -> tuple[dg.AssetsDefinition, str, list[tuple]]:
    """appsflyer/android_installs materialized for yesterday: the asset, the day, its archived rows."""
    asset, day = android_installs_asset(), recent_day()
    assert dg.materialize([asset], resources=resources, partition_key=day).success
    return asset, day, archived_day(archive_dsn, "android_installs", day)


def node_failure(result: dg.ExecuteInProcessResult, node: str) -> str:
    return next(e.event_specific_data.error.message for e in result.all_events
                if e.event_type_value == "STEP_FAILURE" and e.step_key == node)


BROKEN_DELIVERIES = {
    # fault -> (how the sandbox is told, what the refusal says, what the kept delivery holds)
    "html_200": ({"kind": "html_200"}, "an HTML page", lambda body: body == MAINTENANCE_HTML.encode()),
    "text_200": ({"kind": "text_200"}, "lacks required columns", lambda body: body == MAINTENANCE_TEXT.encode()),
    "malformed_csv": ({"kind": "malformed_csv"}, "not well-formed UTF-8 CSV",
                      lambda body: body.rstrip().endswith(b",stray")),
    "no_event_time": ({"drop_columns": ["Event Time"]}, "lacks required columns event_time",
                      lambda body: b"Event Time" not in body.split(b"\n")[0]),
    # A CSV whose header cannot name a column: never a column of the archive table.
    "markup_header": ({"extra_columns": ["<b>Bonus Points</b>"]}, "cannot be a column name",
                      lambda body: b"<b>Bonus Points</b>" in body.split(b"\n")[0]),
}


@pytest.mark.parametrize("fault", BROKEN_DELIVERIES)
def test_a_broken_delivery_never_replaces_the_archived_day(resources, clean_sandbox, clean_databases, fault):
    product_dsn, archive_dsn = clean_databases
    how, said, kept = BROKEN_DELIVERIES[fault]
    day = recent_day()
    assert dg.materialize(ASSETS, resources=resources, partition_key=day).success
    before = archived_day(archive_dsn, "android_installs", day)
    columns = table_columns(archive_dsn, "android_installs")
    unified = [fingerprint(dsn, "raw_data", day) for dsn in (product_dsn, archive_dsn)]
    history = volume_history(archive_dsn, "appsflyer/android_installs")
    assert len(before) > 100 and history[0][1] == len(before)

    if "kind" in how:
        clean_sandbox.add_faults(app_id=ANDROID, report="installs_report", **how)
    else:
        clean_sandbox.configure(**how)
    result = dg.materialize(ASSETS, resources=resources, partition_key=day, raise_on_error=False)
    assert not result.success
    message = node_failure(result, "appsflyer__android_installs")
    assert all(s in message for s in ("appsflyer/android_installs", ANDROID, day, said,
                                      f"{len(before):,} rows archived", "quality.rejected_deliveries"))
    # The archived day is unchanged row for row and column for column...
    assert archived_day(archive_dsn, "android_installs", day) == before
    assert table_columns(archive_dsn, "android_installs") == columns
    # ...raw_data was not rebuilt from the delivery...
    assert not result.asset_materializations_for_node("appsflyer__raw_data")
    assert [fingerprint(dsn, "raw_data", day) for dsn in (product_dsn, archive_dsn)] == unified
    # ...the quality history still describes the archived day...
    assert volume_history(archive_dsn, "appsflyer/android_installs") == history
    # ...and the delivery is kept whole beside it.
    [(report_date, problem, content, row_count, archived_rows, _)] = rejected_deliveries(
        archive_dsn, "appsflyer/android_installs")
    assert report_date == day and said in problem and ANDROID in problem
    assert kept(gzip.decompress(content)) and archived_rows == len(before)
    if fault == "no_event_time":
        served = [c["rows"] for c in clean_sandbox.calls()
                  if c["app_id"] == ANDROID and c["report"] == "installs_report"][-1]
        assert row_count == served == gzip.decompress(content).count(b"\n") - 1


def test_a_delivery_with_fewer_rows_is_refused_unless_within_the_share(resources, clean_sandbox, clean_databases):
    _, archive_dsn = clean_databases
    asset, day, before = archive_a_day(resources, archive_dsn)
    archived = len(before)
    clean_sandbox.configure(rows_per_day={f"{ANDROID}|installs_report": archived - 3})
    for attempt in (1, 2):
        result = dg.materialize([asset], resources=resources, partition_key=day, raise_on_error=False)
        assert not result.success
        message = node_failure(result, "appsflyer__android_installs")
        assert all(s in message for s in (
            "appsflyer/android_installs", ANDROID, day, f"{archived - 3:,} rows delivered, {archived:,} archived",
            "ADPIPES_MAX_ROW_DROP=0", "replace_archived: true", "quality.rejected_deliveries"))
        evaluation = check_results(result)[("appsflyer/android_installs", "archived_rows")]
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert evaluation.partition == day and evaluation.metadata["archived_rows"].value == archived
        assert archived_day(archive_dsn, "android_installs", day) == before
        # Every refused delivery is kept, none replaces another.
        kept = rejected_deliveries(archive_dsn, "appsflyer/android_installs")
        assert len(kept) == attempt
        assert kept[-1][3] == archived - 3 and kept[-1][4] == archived
        assert gzip.decompress(kept[-1][2]).count(b"\n") == archived - 3 + 1

    # Within ADPIPES_MAX_ROW_DROP the delivery replaces the day.
    tolerant = {**resources, "quality": QualityStore(archive=resources["quality"].archive, max_row_drop=0.05)}
    result = dg.materialize([asset], resources=tolerant, partition_key=day)
    assert result.success and check_results(result)[("appsflyer/android_installs", "archived_rows")].passed
    assert len(archived_day(archive_dsn, "android_installs", day)) == archived - 3
    strict = {**resources, "quality": QualityStore(archive=resources["quality"].archive, max_row_drop=0.01)}
    clean_sandbox.configure(rows_per_day={f"{ANDROID}|installs_report": archived - 6})  # 3 of archived - 3: > 1%
    assert not dg.materialize([asset], resources=strict, partition_key=day, raise_on_error=False).success
    assert len(archived_day(archive_dsn, "android_installs", day)) == archived - 3


def test_replace_archived_writes_a_smaller_delivery_but_never_a_broken_one(resources, clean_sandbox,
                                                                           clean_databases):
    _, archive_dsn = clean_databases
    asset, day, before = archive_a_day(resources, archive_dsn)
    archived = len(before)
    clean_sandbox.configure(rows_per_day={f"{ANDROID}|installs_report": archived - 20})
    replace = dg.RunConfig(ops={"appsflyer__android_installs": RawReportConfig(replace_archived=True)})
    result = dg.materialize([asset], resources=resources, partition_key=day, run_config=replace)
    assert result.success
    evaluation = check_results(result)[("appsflyer/android_installs", "archived_rows")]
    assert evaluation.passed and "Replaced on purpose" in evaluation.description
    after = archived_day(archive_dsn, "android_installs", day)
    assert len(after) == archived - 20
    # A page that is not a report is never written, on purpose or not.
    clean_sandbox.add_faults(kind="html_200", app_id=ANDROID, report="installs_report")
    result = dg.materialize([asset], resources=resources, partition_key=day, run_config=replace,
                            raise_on_error=False)
    assert not result.success and "an HTML page" in node_failure(result, "appsflyer__android_installs")
    assert archived_day(archive_dsn, "android_installs", day) == after


def test_a_server_capping_below_maximum_rows_is_caught_by_the_archived_day(resources, clean_sandbox,
                                                                          clean_databases):
    # The client asks for 1,000,000 rows; a server that silently stops at 50 cannot be told from a
    # small day in one answer, but the day archived before can.
    _, archive_dsn = clean_databases
    asset, day, before = archive_a_day(resources, archive_dsn)
    clean_sandbox.configure(truncate_at=50)
    result = dg.materialize([asset], resources=resources, partition_key=day, raise_on_error=False)
    assert not result.success
    assert [c["params"]["maximum_rows"] for c in clean_sandbox.calls()][-1] == "1000000"
    assert f"50 rows delivered, {len(before):,} archived" in node_failure(result, "appsflyer__android_installs")
    assert archived_day(archive_dsn, "android_installs", day) == before


def test_a_range_withholds_only_the_refused_day(resources, clean_sandbox, clean_databases):
    _, archive_dsn = clean_databases
    # Two consecutive days, the first with more rows than the second: a delivery of the second
    # day's count for both shrinks the first and leaves the second as it was.
    sizes = {recent_day(n): default_rows_for_day(ANDROID, "installs_report", dt.date.fromisoformat(recent_day(n)))
             for n in range(2, 40)}
    first, last = next((recent_day(n + 1), recent_day(n)) for n in range(2, 39)
                       if sizes[recent_day(n + 1)] > sizes[recent_day(n)])
    asset = android_installs_asset()
    assert dg.materialize([asset], resources=resources, tags=range_tags(first, last)).success
    before = archived_day(archive_dsn, "android_installs", first)
    assert len(before) == sizes[first]
    clean_sandbox.configure(rows_per_day={f"{ANDROID}|installs_report": sizes[last]})
    result = dg.materialize([asset], resources=resources, tags=range_tags(first, last), raise_on_error=False)
    assert not result.success
    message = node_failure(result, "appsflyer__android_installs")
    assert f"- {first}: app {ANDROID}: {sizes[last]:,} rows delivered, {sizes[first]:,} archived" in message and last not in message
    assert archived_day(archive_dsn, "android_installs", first) == before
    metadata = result.asset_materializations_for_node("appsflyer__android_installs")[0].metadata
    assert metadata["adpipes/withheld_partitions"].value == [first]
    assert metadata["partition_row_counts"].value == {last: sizes[last]}
    assert [r[0] for r in volume_history(archive_dsn, "appsflyer/android_installs")] == [first, last]
    assert [r[0] for r in rejected_deliveries(archive_dsn, "appsflyer/android_installs")] == [first]


def test_raw_data_without_archived_raw_reports_fails_naming_them(resources, clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = recent_day()
    assert dg.materialize([android_installs_asset()], resources=resources, partition_key=day).success
    result = dg.materialize(ASSETS, selection=[raw_data.key], resources=resources, partition_key=day,
                            raise_on_error=False)
    assert not result.success
    message = node_failure(result, "appsflyer__raw_data")
    for table in ("android_in_app_events", "ios_installs", "ios_in_app_events"):
        assert f"appsflyer/{table}: {day}" in message
    assert "appsflyer/android_installs" not in message and "Materialize those raw reports" in message
    child = f"appsflyer.raw_data_p{day.replace('-', '')}"
    for dsn in (product_dsn, archive_dsn):
        assert query(dsn, "SELECT to_regclass(%s)", (child,)) == [(None,)]
    assert volume_history(archive_dsn, "appsflyer/raw_data") == []


def test_a_broken_answer_covering_a_range_refuses_every_day_and_is_kept_once(resources, clean_sandbox,
                                                                            clean_databases):
    _, archive_dsn = clean_databases
    first, last = recent_day(3), recent_day(2)
    asset = android_installs_asset()
    assert dg.materialize([asset], resources=resources, partition_key=first).success
    before = archived_day(archive_dsn, "android_installs", first)
    clean_sandbox.configure(drop_columns=["Event Time"])  # the 2-day answer cannot be split by day
    result = dg.materialize([asset], resources=resources, tags=range_tags(first, last), raise_on_error=False)
    assert not result.success
    message = node_failure(result, "appsflyer__android_installs")
    assert f"- {first}: app {ANDROID}: the report lacks required columns event_time" in message
    assert f"; {len(before):,} rows archived" in message and f"- {last}: " in message and "nothing archived" in message
    assert archived_day(archive_dsn, "android_installs", first) == before
    assert archived_day(archive_dsn, "android_installs", last) == []
    [(report_date, problem, content, row_count, _, _)] = rejected_deliveries(archive_dsn, "appsflyer/android_installs")
    assert report_date == first and f"covers {first}..{last}" in problem
    assert gzip.decompress(content).count(b"\n") == row_count + 1 > len(before)


# -- a raw report column AppsFlyer adds later ------------------------------------------------------

def test_a_column_appsflyer_adds_later_becomes_a_text_column_named_in_metadata_and_warned(
        resources, clean_sandbox, clean_databases):
    """assets.md: a column AppsFlyer adds later becomes a new text column of the raw report table
    (snake_case), named in the run's metadata as appsflyer/unknown_columns; checks.md: the
    unknown_columns check fails as a WARN (never blocks: raw_data is still built, without it)."""
    product_dsn, archive_dsn = clean_databases
    before_day, day = recent_day(2), recent_day(1)
    assert dg.materialize(ASSETS, resources=resources, partition_key=before_day).success
    assert "bonus_points" not in table_columns(archive_dsn, "android_installs")

    clean_sandbox.configure(extra_columns=["Bonus Points"])
    result = dg.materialize(ASSETS, resources=resources, partition_key=day)
    assert result.success
    for table in RAW_TABLES:
        assert query(archive_dsn, "SELECT data_type FROM information_schema.columns WHERE table_schema = "
                                  "'appsflyer' AND table_name = %s AND column_name = 'bonus_points'",
                     (table,)) == [("text",)], table
        # The new day's rows carry the values as delivered; the day archived before has none.
        by_day = dict(query(archive_dsn, f"SELECT report_date::text, count(bonus_points) FROM appsflyer.{table} "
                                         "GROUP BY 1"))
        assert by_day[before_day] == 0
        assert by_day[day] == query(archive_dsn, f"SELECT count(*) FROM appsflyer.{table} "
                                                 "WHERE report_date = %s", (day,))[0][0] > 0
        assert query(archive_dsn, f"SELECT count(*) FROM appsflyer.{table} WHERE report_date = %s "
                                  "AND bonus_points !~ '^bonus_points_[0-9]+$'", (day,)) == [(0,)]
        node = f"appsflyer__{table}"
        metadata = result.asset_materializations_for_node(node)[0].metadata
        assert metadata["appsflyer/unknown_columns"].value == ["bonus_points"], table
        check = check_results(result)[(f"appsflyer/{table}", "unknown_columns")]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert check.partition == day and "bonus_points" in str(check.metadata)
    # raw_data keeps its own columns and gets every row.
    assert "bonus_points" not in table_columns(product_dsn, "raw_data")
    assert counts(product_dsn, ["raw_data"])["raw_data"] == sum(counts(archive_dsn, RAW_TABLES).values())


# -- raw_data of a day AppsFlyer no longer serves -------------------------------------------------

def age_archived_day(archive_dsn: str, table: str, day: str, old: str) -> int:
    """Copy the archived rows of ``day`` to a partition of ``old``, every timestamp moved back by
    the days between them: the archive as it is once ``old`` has passed AppsFlyer's 90 days (the
    archive is the only copy then). Returns the rows copied."""
    shift = (dt.date.fromisoformat(day) - dt.date.fromisoformat(old)).days
    columns = table_columns(archive_dsn, table)
    moved = [f"CASE WHEN {c} ~ '^\\d{{4}}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d$' THEN to_char({c}::timestamp - "
             f"interval '{shift} days', 'YYYY-MM-DD HH24:MI:SS') ELSE {c} END" if c.endswith("_time") else
             ("%(old)s::date" if c == "report_date" else c) for c in columns]
    child = f"{table}_p{old.replace('-', '')}"
    with psycopg.connect(archive_dsn) as conn:
        conn.execute(f"CREATE TABLE appsflyer.{child} (LIKE appsflyer.{table} INCLUDING DEFAULTS)")
        conn.execute(f"ALTER TABLE appsflyer.{table} ATTACH PARTITION appsflyer.{child} "
                     f"FOR VALUES FROM ('{old}') TO ('{dt.date.fromisoformat(old) + dt.timedelta(days=1)}')")
        copied = conn.execute(f"INSERT INTO appsflyer.{table} ({', '.join(columns)}) SELECT {', '.join(moved)} "
                              f"FROM appsflyer.{table} WHERE report_date = %(day)s", {"old": old, "day": day})
        return copied.rowcount


def test_raw_data_alone_rebuilds_a_day_older_than_90_days_from_the_archive(resources, clean_sandbox,
                                                                           clean_databases):
    """operations.md: raw data is served for the last 90 days only; to rebuild appsflyer/raw_data
    for older days from the archived raw reports, materialize appsflyer/raw_data alone for them.
    No vendor call is made, and the day holds every archived raw row, in product and in the
    archive. assets.md: a day older than the 90 days can never get a report added since (here
    uninstall_events_report), so it is built from the reports archived for it (installs and in-app
    events), the run listing the missing ones in adpipes/reports_not_archived."""
    product_dsn, archive_dsn = clean_databases
    day, old = recent_day(2), recent_day(100)
    assert dg.materialize(raw_report_assets, resources=resources, partition_key=day).success
    archived = {table: age_archived_day(archive_dsn, table, day, old) for table in RAW_TABLES}
    assert all(archived.values())
    clean_sandbox.reset()

    with_uninstalls = build_raw_assets((*CLASSIC_REPORTS, "uninstall_events_report"))
    result = dg.materialize(with_uninstalls, resources=resources, partition_key=old,
                            selection=[with_uninstalls[-1].key])
    assert result.success
    assert clean_sandbox.calls() == []
    expected = sorted(query(archive_dsn, " UNION ALL ".join(
        f"SELECT appsflyer_id, event_name, event_time FROM appsflyer.{table} WHERE report_date = %(old)s"
        for table in RAW_TABLES), {"old": old}))
    assert len(expected) == sum(archived.values())
    for dsn in (product_dsn, archive_dsn):
        stored = query(dsn, "SELECT appsflyer_id, event_name, to_char(event_time AT TIME ZONE 'Asia/Seoul', "
                            "'YYYY-MM-DD HH24:MI:SS') FROM appsflyer.raw_data WHERE report_date = %s", (old,))
        assert sorted(stored) == expected
        assert query(dsn, "SELECT DISTINCT report_date::text FROM appsflyer.raw_data WHERE report_date < %s",
                     (day,)) == [(old,)]
    metadata = result.asset_materializations_for_node("appsflyer__raw_data")[0].metadata
    assert metadata["dagster/partition_row_count"].value == len(expected)
    assert sorted(metadata["adpipes/reports_not_archived"].value) == [
        "appsflyer/android_uninstalls", "appsflyer/ios_uninstalls"]


# -- what a 90-day backfill costs ------------------------------------------------------------------

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs")


def backfill_cost_in_docs() -> dict[str, object]:
    """operations.md's '90 days' figures, read from the page: the test follows the docs."""
    import re

    text = " ".join(open(os.path.join(DOCS, "operations.md"), encoding="utf-8").read().split())
    found = re.search(
        r"A backfill of the last (\d+) days costs, per app, (\d+) calls of each install-like raw report "
        r"\([^)]*: ([\d +]+) days\) and (\d+) of each in-app events report \(([\d +]+) days\)", text)
    assert found, "operations.md no longer states what a backfill of the last 90 days costs"
    days, installs_calls, installs_windows, events_calls, events_windows = found.groups()
    return {"days": int(days),
            "installs_report": (int(installs_calls), [int(n) for n in installs_windows.split("+")]),
            "in_app_events_report": (int(events_calls), [int(n) for n in events_windows.split("+")])}


def window_days(call: dict) -> int:
    first = dt.date.fromisoformat(call["params"]["from"][:10])
    last = dt.date.fromisoformat(call["params"]["to"][:10])
    return (last - first).days + 1


def test_a_90_day_backfill_costs_what_the_docs_say(resources, clean_sandbox, clean_databases):
    """operations.md: a backfill of the last 90 days costs, per app, 2 calls of each install-like
    report (60 + 30 days) and 3 of each in-app events report (31 + 31 + 28 days), counted in the
    call ledger; every day is archived."""
    _, archive_dsn = clean_databases
    docs = backfill_cost_in_docs()
    assert docs["days"] == 90
    first, last = recent_day(docs["days"]), recent_day(1)
    clean_sandbox.configure(rows_per_day={f"{SANDBOX_ANDROID_APP_ID}|{report}": 3
                                          for report in ("installs_report", "in_app_events_report")})
    assets = [a for a in raw_report_assets if a.key.path[-1] in ("android_installs", "android_in_app_events")]
    result = dg.materialize(assets, resources=resources, tags=range_tags(first, last))
    assert result.success
    ledger = dict(((app, report), calls) for app, report, calls in query(
        archive_dsn, "SELECT app_id, report, sum(calls) FROM quota.api_calls GROUP BY 1, 2"))
    for report in ("installs_report", "in_app_events_report"):
        calls, windows = docs[report]
        assert ledger[(SANDBOX_ANDROID_APP_ID, report)] == calls, report
        made = [c for c in clean_sandbox.calls() if c["report"] == report]
        assert sorted(window_days(c) for c in made) == sorted(windows), report
    for table in ("android_installs", "android_in_app_events"):
        by_day = dict(query(archive_dsn, f"SELECT report_date::text, count(*) FROM appsflyer.{table} GROUP BY 1"))
        assert len(by_day) == 90 and min(by_day) == first and max(by_day) == last


# -- the purchase receipt id -----------------------------------------------------------------------

RECEIPTS = {
    # AppsFlyer ID planted -> (Event Name, Event Value as delivered, the receipt id raw_data keeps)
    "af-purchase": ("purchase", '{"af_revenue":"1.99","af_receipt_id":"GPA.3345-6789-0123-45678"}',
                    "GPA.3345-6789-0123-45678"),
    # A long iOS id as a JSON number beyond 2**53: kept digit for digit, as text.
    "af-sub-purchase": ("subscription_purchase", '{"af_receipt_id":2000000812345678901,"af_revenue":"9.99"}',
                        "2000000812345678901"),
    "af-iap-purchase": ("in_app_purchase", '{"AF_RECEIPT_ID":"190000123456789","af_revenue":4}', "190000123456789"),
    "af-no-receipt": ("purchase", '{"af_revenue":"1.99","af_currency":"USD"}', None),
    "af-level": ("af_level_achieved", '{"af_level":"3"}', None),
}


def test_receipt_ids_of_purchase_events_land_in_event_value(resources, clean_sandbox, clean_databases):
    """assets.md: event_value is the purchase receipt id (af_receipt_id of the Event Value JSON, the
    key in any case) of every event that carries one, whatever the event is called (the original
    scripts kept it for any event with af_receipt_id), null otherwise; kept as text. The archived
    raw report keeps the Event Value as delivered."""
    product_dsn, archive_dsn = clean_databases
    day = recent_day(2)
    clean_sandbox.configure(row_overrides=[
        {"app_id": SANDBOX_ANDROID_APP_ID, "report": "in_app_events_report", "day": day, "row": n,
         "values": {"AppsFlyer ID": af_id, "Event Name": name, "Event Value": value}}
        for n, (af_id, (name, value, _)) in enumerate(RECEIPTS.items())])
    assert dg.materialize(ASSETS, resources=resources, partition_key=day).success
    ids = list(RECEIPTS)
    for dsn in (product_dsn, archive_dsn):
        stored = dict(query(dsn, "SELECT appsflyer_id, event_value FROM appsflyer.raw_data WHERE appsflyer_id = ANY(%s)",
                            (ids,)))
        assert stored == {af_id: receipt for af_id, (_, _, receipt) in RECEIPTS.items()}
    assert query(product_dsn, "SELECT data_type FROM information_schema.columns WHERE table_schema = 'appsflyer' "
                              "AND table_name = 'raw_data' AND column_name = 'event_value'") == [("text",)]
    archived = dict(query(archive_dsn, "SELECT appsflyer_id, event_value FROM appsflyer.android_in_app_events "
                                       "WHERE appsflyer_id = ANY(%s)", (ids,)))
    assert archived == {af_id: value for af_id, (_, value, _) in RECEIPTS.items()}


# -- the spool after a failed run ------------------------------------------------------------------

@pytest.fixture
def spool_dir(tmp_path, monkeypatch):
    """TMPDIR of this process set to an empty directory (tempfile re-reads it)."""
    import tempfile

    directory = tmp_path / "tmpdir"
    directory.mkdir()
    monkeypatch.setenv("TMPDIR", str(directory))
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert tempfile.gettempdir() == str(directory)
    return directory


def left_in(directory) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.mark.parametrize("failure", ["vendor_error_after_another_apps_files", "refused_delivery",
                                     "raw_data_quarantine"])
def test_a_failed_run_leaves_no_spool_files_in_tmpdir(resources, clean_sandbox, clean_databases, spool_dir,
                                                      failure):
    """assets.md: vendor files live in TMPDIR until they are loaded; a run that fails (a vendor
    error after the other app's answer was spooled, a delivery refused by archived_rows, raw_data
    failing on quarantined rows) leaves no adpipes-* file or directory behind."""
    day, first = recent_day(2), recent_day(3)
    untouched = spool_dir.stat().st_mtime_ns
    if failure == "vendor_error_after_another_apps_files":
        clean_sandbox.add_faults(kind="503", app_id=SANDBOX_IOS_APP_ID, times=20)
        result = dg.materialize(raw_report_assets, resources=resources, tags=range_tags(first, day),
                                raise_on_error=False)
        assert any(c["status"] == 200 for c in clean_sandbox.calls())  # the Android files came
    elif failure == "refused_delivery":
        assert dg.materialize([android_installs_asset()], resources=resources, partition_key=day).success
        assert left_in(spool_dir) == []
        clean_sandbox.configure(rows_per_day={f"{SANDBOX_ANDROID_APP_ID}|installs_report": 3})
        result = dg.materialize([android_installs_asset()], resources=resources, partition_key=day,
                                raise_on_error=False)
        assert not check_results(result)[("appsflyer/android_installs", "archived_rows")].passed
    else:
        plant_bad_rows(clean_sandbox, day)
        result = dg.materialize(ASSETS, resources=resources, partition_key=day, raise_on_error=False)
        failed = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert failed == ["appsflyer__raw_data"]
    assert not result.success
    # The run spooled there (entries were made and removed), and nothing is left.
    assert spool_dir.stat().st_mtime_ns != untouched
    assert left_in(spool_dir) == []
