"""Settings read from the environment, as production reads them: os.environ set (monkeypatch),
then ``build_definitions(load_settings())`` as ``adpipes.definitions`` does at import, and runs of
the definitions' own job and resources against the sandbox over real HTTP and the test
PostgreSQL. What each setting must do comes from docs/configuration.md and docs/checks.md.

- ``ADPIPES_MAX_QUARANTINED_SHARE``: a failing ERROR check fails the run when the quarantined rows
  exceed the share of a partition; at or below it the check fails as a WARN and the run goes on;
- ``ADPIPES_VOLUME_BAND_FACTOR``: row_volume warns below median/factor or above median x factor
  (median of the 7 previous partitions);
- ``ADPIPES_PRODUCT_RETENTION_OVERRIDES``: per-table retention, ``asset/key=days``.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest

from adpipes.lib.settings import DEFAULT_START_DATE, SANDBOX_ANDROID_APP_ID, load_settings
from adpipes_tests.fixtures.sandbox import prod_cli_env

TZ = "Asia/Seoul"
PREFIXES = ("ADPIPES_", "APPSFLYER_", "AIRBRIDGE_")
RAW_DATA = dg.AssetKey(["appsflyer", "raw_data"])
ANDROID_INSTALLS = dg.AssetKey(["appsflyer", "android_installs"])
CLASSIC = ["android_installs", "ios_installs", "android_in_app_events", "ios_in_app_events"]


def recent_day(days_ago: int) -> str:
    return (dt.datetime.now(ZoneInfo(TZ)).date() - dt.timedelta(days=days_ago)).isoformat()


def query(dsn: str, statement: str, params=()) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(statement, params).fetchall()


@pytest.fixture
def environment(monkeypatch, clean_sandbox, clean_databases, tmp_path):
    """The process environment of a prod code location pointed at the sandbox and the test
    databases (the first wave's two raw reports); returns ``definitions(**variables)``: set those
    variables too and build the definitions from the environment, as production loads them."""
    from adpipes.definitions import build_definitions

    for name in list(os.environ):
        if name.startswith(PREFIXES):
            monkeypatch.delenv(name)
    product_dsn, archive_dsn = clean_databases
    for name, value in prod_cli_env(clean_sandbox, product_dsn, archive_dsn, str(tmp_path), TZ).items():
        if name.startswith(PREFIXES):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("ADPIPES_START_DATE", DEFAULT_START_DATE)
    monkeypatch.setenv("APPSFLYER_RAW_REPORTS", "installs_report,in_app_events_report")

    def definitions(**variables: str) -> dg.Definitions:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return build_definitions(load_settings())

    return definitions


def run(defs: dg.Definitions, keys: list[dg.AssetKey], *, day: str | None = None,
        days: tuple[str, str] | None = None) -> dg.ExecuteInProcessResult:
    """One run of the definitions' own asset job and resources (in process)."""
    tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[1]} \
        if days else {}
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=keys, partition_key=day, tags=tags, raise_on_error=False,
        instance=dg.DagsterInstance.ephemeral())


def check(result: dg.ExecuteInProcessResult, asset: str, name: str) -> dg.AssetCheckEvaluation:
    (found,) = [e for e in result.get_asset_check_evaluations()
                if e.asset_key.to_user_string() == asset and e.check_name == name]
    return found


# -- ADPIPES_MAX_QUARANTINED_SHARE -------------------------------------------------------------------

def test_max_quarantined_share_from_the_environment_and_its_boundary(environment, clean_sandbox, clean_databases):
    """checks.md: a failing ERROR check fails the run when the quarantined rows exceed
    ADPIPES_MAX_QUARANTINED_SHARE of any partition (default 0: any quarantined row); at or below
    it the check still fails, with severity WARN, and the run goes on. One bad row of N: the share
    1/N exactly passes, the next smaller number fails."""
    product_dsn, archive_dsn = clean_databases
    day = recent_day(2)
    clean_sandbox.configure(row_overrides=[{"app_id": SANDBOX_ANDROID_APP_ID, "report": "in_app_events_report",
                                            "day": day, "row": 0,
                                            "values": {"Platform": "windows", "AppsFlyer ID": "af-windows"}}])
    raw_keys = [dg.AssetKey(["appsflyer", t]) for t in CLASSIC]
    assert run(environment(), raw_keys, day=day).success
    rows = sum(query(archive_dsn, f"SELECT count(*) FROM appsflyer.{t} WHERE report_date = %s", (day,))[0][0]
               for t in CLASSIC)
    share = 1 / rows

    # The default (unset): no quarantined row is tolerated.
    result = run(environment(), [RAW_DATA], day=day)
    assert not result.success
    assert check(result, "appsflyer/raw_data", "valid_platform").severity == dg.AssetCheckSeverity.ERROR

    # Just below the share of the day's one bad row: the run fails.
    result = run(environment(ADPIPES_MAX_QUARANTINED_SHARE=repr(math.nextafter(share, 0))), [RAW_DATA], day=day)
    assert not result.success
    evaluation = check(result, "appsflyer/raw_data", "valid_platform")
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR

    # Exactly at it: the check fails as a WARN, the run goes on, the valid rows are written.
    result = run(environment(ADPIPES_MAX_QUARANTINED_SHARE=repr(share)), [RAW_DATA], day=day)
    assert result.success
    evaluation = check(result, "appsflyer/raw_data", "valid_platform")
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["checked_rows"].value == rows
    assert query(product_dsn, "SELECT count(*) FROM appsflyer.raw_data WHERE report_date = %s", (day,)) == [
        (rows - 1,)]
    assert query(archive_dsn, "SELECT row_values->>'appsflyer_id' FROM quality.quarantine") == [("af-windows",)]


# -- ADPIPES_VOLUME_BAND_FACTOR ------------------------------------------------------------------------

def test_volume_band_factor_from_the_environment(environment, clean_sandbox):
    """configuration.md: row_volume warns below median/factor or above median x factor rows
    (median of the 7 previous partitions; default 2). Three days of 10 rows, then a day of 25:
    above 2 x 10, within 3 x 10."""
    history, day = (recent_day(5), recent_day(3)), recent_day(2)
    clean_sandbox.configure(rows_per_day={f"{SANDBOX_ANDROID_APP_ID}|installs_report": 10})
    assert run(environment(), [ANDROID_INSTALLS], days=history).success
    clean_sandbox.configure(rows_per_day={f"{SANDBOX_ANDROID_APP_ID}|installs_report": 25})

    result = run(environment(), [ANDROID_INSTALLS], day=day)  # the default factor, 2
    assert result.success
    evaluation = check(result, "appsflyer/android_installs", "row_volume")
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    metadata = {k: v.value for k, v in evaluation.metadata.items()}
    assert (metadata["rows"], metadata["median"], metadata["band_low"], metadata["band_high"]) == (25, 10, 5, 20)

    result = run(environment(ADPIPES_VOLUME_BAND_FACTOR="3"), [ANDROID_INSTALLS], day=day)
    assert result.success
    evaluation = check(result, "appsflyer/android_installs", "row_volume")
    assert evaluation.passed
    metadata = {k: v.value for k, v in evaluation.metadata.items()}
    assert (metadata["rows"], metadata["median"], metadata["band_high"]) == (25, 10, 30)
    assert metadata["band_low"] == pytest.approx(10 / 3)


# -- ADPIPES_PRODUCT_RETENTION_OVERRIDES ---------------------------------------------------------------

def test_retention_overrides_from_the_environment(environment, clean_databases):
    """configuration.md / operations.md: product keeps ADPIPES_PRODUCT_RETENTION_DAYS days per
    table; ADPIPES_PRODUCT_RETENTION_OVERRIDES sets other retentions per table. Here daily_report
    keeps 5 days and raw_data the default 90: the definitions' own retention sensor asks for
    daily_report's cutoff only, and the prune drops its days before today - 5 from product (the
    archive keeps them) while raw_data keeps the same days."""
    product_dsn, archive_dsn = clean_databases
    first, last = recent_day(7), recent_day(3)
    defs = environment(ADPIPES_PRODUCT_RETENTION_OVERRIDES="appsflyer/daily_report=5")
    assert run(defs, [dg.AssetKey(["appsflyer", "daily_report"]), RAW_DATA,
                      *(dg.AssetKey(["appsflyer", t]) for t in CLASSIC)], days=(first, last)).success
    sensor = defs.get_sensor_def("product_retention_sensor")
    with dg.build_sensor_context(resources=defs.resources, instance=dg.DagsterInstance.ephemeral()) as context:
        request = sensor(context)
    assert isinstance(request, dg.RunRequest), request
    cutoffs = request.run_config["ops"]["drop_verified_partitions"]["config"]["cutoffs"]
    today = dt.datetime.now(ZoneInfo(TZ)).date()
    assert cutoffs == {"appsflyer/daily_report": (today - dt.timedelta(days=5)).isoformat()}

    job = defs.resolve_job_def(request.job_name or "prune_product_partitions")
    assert job.execute_in_process(run_config=request.run_config, instance=dg.DagsterInstance.ephemeral()).success
    days = "SELECT DISTINCT report_date::text FROM appsflyer.{} ORDER BY 1"
    loaded = [(recent_day(n),) for n in (7, 6, 5, 4, 3)]
    # Partitions before the cutoff (today - 5) are dropped; the cutoff day itself is kept.
    assert query(product_dsn, days.format("daily_report")) == loaded[2:]
    assert query(product_dsn, days.format("raw_data")) == loaded
    assert query(archive_dsn, days.format("daily_report")) == loaded
