"""Issue 13 end to end: every Pull API raw report, several apps per platform, over real HTTP (the
sandbox) into a real PostgreSQL, and what raw_data makes of them."""

import dagster as dg
import psycopg
import pytest

from adpipes.appsflyer.assets import build_raw_assets, build_raw_report_asset
from adpipes.appsflyer.raw_data_api import ORGANIC, RAW_REPORTS, RETARGETING, AppsFlyerRawDataApi
from adpipes.appsflyer.resources import AppsFlyerApps
from adpipes.appsflyer.schemas import PLATFORMS
from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID
from adpipes.lib.storage.postgres import PostgresDatabase
from adpipes_tests.appsflyer.test_assets import TZ, node_failure, recent_day, served_rows, step_failure_message

SECOND_ANDROID_APP_ID = "com.adpipes.second"
APPS = {"android": (SANDBOX_ANDROID_APP_ID, SECOND_ANDROID_APP_ID), "ios": (SANDBOX_IOS_APP_ID,)}
ALL_ASSETS = build_raw_assets(tuple(RAW_REPORTS))


def _resources(sandbox, storage_resources, apps=APPS):
    return {
        "appsflyer_raw_data_api": AppsFlyerRawDataApi(api_token=sandbox.appsflyer_token, base_url=sandbox.base_url,
                                                      timezone=TZ, backoff_seconds=0.01, max_attempts=2),
        "appsflyer_apps": AppsFlyerApps(android_app_id=",".join(apps["android"]), ios_app_id=",".join(apps["ios"]),
                                        currency="KRW"),
        **storage_resources,
    }


@pytest.fixture
def three_apps(clean_sandbox):
    clean_sandbox.configure(apps=[*APPS["android"], *APPS["ios"]])
    return clean_sandbox


def _query(dsn: str, statement: str, params=()) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(statement, params).fetchall()


def test_every_report_of_two_android_apps_and_one_ios_app_lands_with_its_attribution(
        three_apps, storage_resources, clean_databases):
    product_dsn, archive_dsn = clean_databases
    day = recent_day(2)
    result = dg.materialize(ALL_ASSETS, resources=_resources(three_apps, storage_resources), partition_key=day)
    assert result.success

    served = served_rows(three_apps)
    for report in RAW_REPORTS.values():
        for platform in PLATFORMS:
            table = f"appsflyer.{platform}_{report.short}"
            archived = dict(_query(archive_dsn, f"SELECT requested_app_id, count(*) FROM {table} GROUP BY 1"))
            # Each report's rows are exactly what the sandbox served, app by app.
            assert archived == {app: served[(app, report.name)] for app in APPS[platform]}, table
            assert all(n > 0 for n in archived.values()), table

    # raw_data: every archived row once (no row of this sandbox breaks a rule), per report, app and
    # with the report's attribution.
    assert _query(archive_dsn, "SELECT count(*) FROM quality.quarantine") == [(0,)]
    unified = {(r, a): (att, n) for r, a, att, n in _query(
        product_dsn, "SELECT source_report, app_id, attribution, count(*) FROM appsflyer.raw_data GROUP BY 1, 2, 3")}
    expected = {(report.name, app): (report.attribution, served[(app, report.name)])
                for report in RAW_REPORTS.values() for platform in PLATFORMS for app in APPS[platform]}
    assert unified == expected
    assert _query(archive_dsn, "SELECT count(*) FROM appsflyer.raw_data") == [(sum(n for _, n in expected.values()),)]

    # Organic rows are valid without a media source (the sandbox leaves it empty) and stored with
    # AppsFlyer's aggregate spelling, organic; event names are as delivered.
    organic_sources = _query(product_dsn, "SELECT DISTINCT media_source FROM appsflyer.raw_data WHERE attribution = %s",
                             (ORGANIC,))
    assert organic_sources == [("organic",)]
    names = dict(_query(product_dsn, "SELECT source_report, array_agg(DISTINCT event_name) FROM appsflyer.raw_data "
                                     "WHERE source_report IN ('uninstall_events_report', 'reinstalls', "
                                     "'installs-retarget', 'organic_installs_report') GROUP BY 1"))
    assert names["uninstall_events_report"] == ["uninstall"]
    assert names["reinstalls"] == ["reinstall"]
    assert names["organic_installs_report"] == ["install"]
    assert set(names["installs-retarget"]) <= {"re-engagement", "re-attribution"}
    retargeted = _query(product_dsn, "SELECT bool_and(is_retargeting), count(*) FROM appsflyer.raw_data "
                                     "WHERE attribution = %s", (RETARGETING,))
    assert retargeted[0][0] is True and retargeted[0][1] > 0

    # The ledger counts each app's calls on its own.
    ledger = _query(archive_dsn, "SELECT app_id, count(DISTINCT report), sum(calls) FROM quota.api_calls "
                                 "GROUP BY 1 ORDER BY 1")
    assert ledger == sorted((app, len(RAW_REPORTS), len(RAW_REPORTS)) for apps in APPS.values() for app in apps)


def test_one_failing_app_writes_the_day_for_no_app(three_apps, storage_resources, clean_databases):
    _, archive_dsn = clean_databases
    day = recent_day(2)
    asset = build_raw_report_asset("android", RAW_REPORTS["organic_installs_report"])
    resources = _resources(three_apps, storage_resources)
    assert dg.materialize([asset], resources=resources, partition_key=day).success
    before = _query(archive_dsn, "SELECT requested_app_id, count(*), md5(string_agg(appsflyer_id, ',' ORDER BY "
                                 "appsflyer_id)) FROM appsflyer.android_organic_installs GROUP BY 1 ORDER BY 1")
    assert [row[0] for row in before] == sorted(APPS["android"])

    # The second app's answer is a maintenance page: the day is refused for both apps.
    three_apps.add_faults(kind="html_200", app_id=SECOND_ANDROID_APP_ID, report="organic_installs_report")
    result = dg.materialize([asset], resources=resources, partition_key=day, raise_on_error=False)
    assert not result.success
    message = node_failure(result, "appsflyer__android_organic_installs")
    assert f"- {day}: app {SECOND_ANDROID_APP_ID}: the answer is an HTML page" in message
    assert "was not written, for any app" in message
    after = _query(archive_dsn, "SELECT requested_app_id, count(*), md5(string_agg(appsflyer_id, ',' ORDER BY "
                                "appsflyer_id)) FROM appsflyer.android_organic_installs GROUP BY 1 ORDER BY 1")
    assert after == before

    # An error of the first app after retries: the run fails before anything is written, naming it.
    three_apps.add_faults(kind="500", app_id=SANDBOX_ANDROID_APP_ID, report="organic_installs_report", times=5)
    result = dg.materialize([asset], resources=resources, partition_key=day, raise_on_error=False)
    assert not result.success
    assert SANDBOX_ANDROID_APP_ID in step_failure_message(result)
    assert _query(archive_dsn, "SELECT requested_app_id, count(*), md5(string_agg(appsflyer_id, ',' ORDER BY "
                               "appsflyer_id)) FROM appsflyer.android_organic_installs GROUP BY 1 ORDER BY 1") == before


def test_an_app_removed_from_the_settings_cannot_drop_its_archived_rows(three_apps, storage_resources,
                                                                       clean_databases):
    _, archive_dsn = clean_databases
    day = recent_day(2)
    asset = build_raw_report_asset("android", RAW_REPORTS["uninstall_events_report"])
    assert dg.materialize([asset], resources=_resources(three_apps, storage_resources), partition_key=day).success
    archived = dict(_query(archive_dsn, "SELECT requested_app_id, count(*) FROM appsflyer.android_uninstalls GROUP BY 1"))

    one_app = {"android": (SANDBOX_ANDROID_APP_ID,), "ios": APPS["ios"]}
    result = dg.materialize([asset], resources=_resources(three_apps, storage_resources, one_app),
                            partition_key=day, raise_on_error=False)
    assert not result.success
    message = node_failure(result, "appsflyer__android_uninstalls")
    assert f"app {SECOND_ANDROID_APP_ID}: 0 rows delivered, {archived[SECOND_ANDROID_APP_ID]:,} archived" in message
    assert dict(_query(archive_dsn, "SELECT requested_app_id, count(*) FROM appsflyer.android_uninstalls "
                                    "GROUP BY 1")) == archived


def test_a_re_pull_after_the_late_window_closes_adds_the_late_events(clean_sandbox, storage_resources,
                                                                     clean_databases):
    """Events of day D arrive until 02:00 UTC on D+1 (the S2S document): a pull before then misses
    them, the re-pull after it has every row, and the archive takes the bigger delivery."""
    import datetime as dt

    from adpipes.appsflyer.raw_data_api import late_events_close
    from adpipes.dev.sandbox.appsflyer import default_rows_for_day

    product_dsn, archive_dsn = clean_databases
    day = recent_day(2)
    close = late_events_close(dt.date.fromisoformat(day), TZ)
    report = RAW_REPORTS["in_app_events_report"]
    assets = build_raw_assets((report.name,))
    resources = _resources(clean_sandbox, storage_resources, {"android": (SANDBOX_ANDROID_APP_ID,),
                                                              "ios": (SANDBOX_IOS_APP_ID,)})
    complete = default_rows_for_day(SANDBOX_ANDROID_APP_ID, report.name, dt.date.fromisoformat(day))

    clean_sandbox.configure(now=(close - dt.timedelta(minutes=1)).isoformat())
    assert dg.materialize(assets, resources=resources, partition_key=day).success
    early = _query(archive_dsn, "SELECT count(*) FROM appsflyer.android_in_app_events")[0][0]
    assert 0 < early < complete

    clean_sandbox.configure(now=(close + dt.timedelta(minutes=60)).isoformat())
    assert dg.materialize(assets, resources=resources, partition_key=day).success
    assert _query(archive_dsn, "SELECT count(*) FROM appsflyer.android_in_app_events") == [(complete,)]
    assert _query(product_dsn, "SELECT count(*) FROM appsflyer.raw_data WHERE app_id = %s",
                  (SANDBOX_ANDROID_APP_ID,)) == [(complete,)]


def _repull_with_rows_replaced(clean_sandbox, storage_resources, archive_dsn: str, rows: range,
                               snapshot: str) -> tuple[list[tuple], str, list[tuple]]:
    """Archive a day of Android installs, then re-pull it with the delivered ``rows`` given new
    AppsFlyer IDs (archived rows the delivery lacks): (``snapshot`` before, the step's failure,
    ``snapshot`` after)."""
    day = recent_day(2)
    asset = build_raw_report_asset("android", RAW_REPORTS["installs_report"])
    resources = _resources(clean_sandbox, storage_resources, {"android": (SANDBOX_ANDROID_APP_ID,),
                                                              "ios": (SANDBOX_IOS_APP_ID,)})
    assert dg.materialize([asset], resources=resources, partition_key=day).success
    before = _query(archive_dsn, snapshot)
    clean_sandbox.configure(row_overrides=[
        {"app_id": SANDBOX_ANDROID_APP_ID, "report": "installs_report", "day": day, "row": row,
         "values": {"AppsFlyer ID": f"1700000000000-replacement-{row}"}} for row in rows])
    result = dg.materialize([asset], resources=resources, partition_key=day, raise_on_error=False)
    assert not result.success
    return before, node_failure(result, "appsflyer__android_installs"), _query(archive_dsn, snapshot)


def test_a_delivery_as_long_as_the_archived_day_but_lacking_archived_rows_is_refused(
        clean_sandbox, storage_resources, clean_databases):
    """The archive compares rows, not only counts: a re-pull with the same number of rows, one of
    which replaces an archived row (e.g. AppsFlyer removed a fraudulent install and another came
    in late), would lose the archived row."""
    _, archive_dsn = clean_databases
    snapshot = ("SELECT count(*), md5(string_agg(appsflyer_id || event_time, ',' ORDER BY appsflyer_id, event_time)) "
                "FROM appsflyer.android_installs")
    before, message, after = _repull_with_rows_replaced(clean_sandbox, storage_resources, archive_dsn,
                                                        range(5, 6), snapshot)
    count = before[0][0]
    assert f"app {SANDBOX_ANDROID_APP_ID}: {count:,} rows delivered, {count:,} archived, 1 of them not in the delivery" in message
    assert after == before


def test_a_refused_delivery_names_how_many_archived_rows_it_lacks_and_the_first_three_by_key(
        clean_sandbox, storage_resources, clean_databases):
    """docs/archive-safety.md: the failure names how many rows are missing and shows a few of
    their keys, the first in key order (appsflyer_id, event_name, event_time)."""
    _, archive_dsn = clean_databases
    keys_query = "SELECT appsflyer_id, event_name, event_time FROM appsflyer.android_installs"
    archived, message, _ = _repull_with_rows_replaced(clean_sandbox, storage_resources, archive_dsn,
                                                      range(3, 8), keys_query)
    # The lost keys, found without the code under test: replace the archived day on purpose with
    # the same delivery and see which keys went.
    replace = {"ops": {"appsflyer__android_installs": {"config": {"replace_archived": True}}}}
    asset = build_raw_report_asset("android", RAW_REPORTS["installs_report"])
    one_app = {"android": (SANDBOX_ANDROID_APP_ID,), "ios": (SANDBOX_IOS_APP_ID,)}
    assert dg.materialize([asset], resources=_resources(clean_sandbox, storage_resources, one_app),
                          partition_key=recent_day(2), run_config=replace).success
    lost = sorted({tuple(r) for r in archived} - {tuple(r) for r in _query(archive_dsn, keys_query)})
    assert len(lost) == 5
    assert f"{len(archived):,} archived, 5 of them not in the delivery (e.g. " in message
    sample = message.split("not in the delivery (e.g. ", 1)[1].split(")", 1)[0].split("; ")
    assert [tuple(k.split(" / ")) for k in sample] == lost[:3]


def test_rows_archived_before_requested_app_id_count_for_the_platforms_only_app(
        clean_sandbox, storage_resources, clean_databases):
    """A first-wave archive has no requested_app_id (and AppsFlyer's App ID may be empty): its rows
    belong to the one app the platform had then, so a re-pull with one app compares with them."""
    _, archive_dsn = clean_databases
    day = recent_day(2)
    asset = build_raw_report_asset("android", RAW_REPORTS["installs_report"])
    one_app = {"android": (SANDBOX_ANDROID_APP_ID,), "ios": (SANDBOX_IOS_APP_ID,)}
    assert dg.materialize([asset], resources=_resources(clean_sandbox, storage_resources, one_app),
                          partition_key=day).success
    with psycopg.connect(archive_dsn) as conn:
        conn.execute("UPDATE appsflyer.android_installs SET requested_app_id = NULL, app_id = NULL")
    archived = _query(archive_dsn, "SELECT count(*) FROM appsflyer.android_installs")[0][0]

    assert dg.materialize([asset], resources=_resources(clean_sandbox, storage_resources, one_app),
                          partition_key=day).success
    assert _query(archive_dsn, "SELECT requested_app_id, count(*) FROM appsflyer.android_installs GROUP BY 1") == [
        (SANDBOX_ANDROID_APP_ID, archived)]

    # With two apps the old rows' app cannot be known: the re-pull is refused, never guessed.
    clean_sandbox.configure(apps=[*APPS["android"], *APPS["ios"]])
    with psycopg.connect(archive_dsn) as conn:
        conn.execute("UPDATE appsflyer.android_installs SET requested_app_id = NULL, app_id = NULL")
    result = dg.materialize([asset], resources=_resources(clean_sandbox, storage_resources), partition_key=day,
                            raise_on_error=False)
    assert not result.success
    assert f"app (unknown): 0 rows delivered, {archived:,} archived" in step_failure_message(result)
    assert _query(archive_dsn, "SELECT count(*), count(requested_app_id) FROM appsflyer.android_installs") == [
        (archived, 0)]


def test_raw_data_of_a_day_past_the_lookback_is_built_from_the_reports_archived_for_it(
        clean_sandbox, storage_resources, clean_databases, monkeypatch):
    """After an upgrade adds reports, days older than AppsFlyer's 90 days can never get them:
    raw_data is rebuilt from the reports archived then, saying which are missing; within the
    lookback it still asks for them first."""
    import datetime as dt

    import adpipes.appsflyer.assets as assets_module

    product_dsn, _ = clean_databases
    day = recent_day(2)
    resources = _resources(clean_sandbox, storage_resources, {"android": (SANDBOX_ANDROID_APP_ID,),
                                                              "ios": (SANDBOX_IOS_APP_ID,)})
    # A first-wave day: installs and in-app events were archived, the other reports never were.
    assert dg.materialize(build_raw_assets(("installs_report", "in_app_events_report")), resources=resources,
                          partition_key=day).success
    archived = _query(product_dsn, "SELECT count(*) FROM appsflyer.raw_data")[0][0]
    everything = build_raw_assets(tuple(RAW_REPORTS))
    raw_data = everything[-1]

    # Within the lookback: the missing reports can still be pulled, so nothing is built.
    result = dg.materialize(everything, resources=resources, partition_key=day, selection=[raw_data.key],
                            raise_on_error=False)
    assert not result.success
    message = step_failure_message(result)
    assert f"appsflyer/android_organic_installs: {day}" in message and "Materialize those raw reports" in message

    # Once the day is past the lookback (here: the lookback moved past it), it is built from
    # the two reports archived for it, and says which were not.
    monkeypatch.setattr(assets_module, "raw_lookback_start",
                        lambda timezone, today=None: dt.date.fromisoformat(day) + dt.timedelta(days=1))
    result = dg.materialize(everything, resources=resources, partition_key=day, selection=[raw_data.key])
    assert result.success
    assert _query(product_dsn, "SELECT count(*), array_agg(DISTINCT source_report ORDER BY source_report) "
                               "FROM appsflyer.raw_data") == [(archived, ["in_app_events_report", "installs_report"])]
    metadata = result.asset_materializations_for_node("appsflyer__raw_data")[0].metadata
    assert set(metadata["adpipes/reports_not_archived"].value) == {
        f"appsflyer/{platform}_{report.short}" for platform in PLATFORMS for report in RAW_REPORTS.values()
        if report.name not in ("installs_report", "in_app_events_report")}


def test_the_customer_user_map_holds_every_pair_of_raw_data_and_keeps_it_after_the_prune(
        three_apps, storage_resources, clean_databases):
    """The issue's end to end: every report of three apps over the sandbox -> raw_data -> the map,
    which still holds every pair once raw_data's product partition is pruned."""
    import datetime as dt

    from adpipes.appsflyer.customer_user_map import customer_user_map
    from adpipes.lib.retention import PRUNE_OP, prune_product_partitions_job

    product_dsn, archive_dsn = clean_databases
    day = recent_day(2)
    resources = _resources(three_apps, storage_resources)
    assert dg.materialize([*ALL_ASSETS, customer_user_map], resources=resources, partition_key=day).success
    pairs = ("SELECT app_id, customer_user_id, appsflyer_id, platform, min(event_time), max(event_time) "
             "FROM appsflyer.raw_data WHERE customer_user_id IS NOT NULL GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3")
    mapped = ("SELECT app_id, customer_user_id, appsflyer_id, platform, first_seen, last_seen "
              "FROM appsflyer.customer_user_map ORDER BY 1, 2, 3")
    expected = _query(product_dsn, pairs)
    assert {row[0] for row in expected} == {app for apps in APPS.values() for app in apps}
    organic = _query(product_dsn, "SELECT count(DISTINCT appsflyer_id) FROM appsflyer.raw_data "
                                  "WHERE attribution = 'organic' AND customer_user_id IS NOT NULL")[0][0]
    assert organic > 0  # organic users are mapped too
    assert _query(product_dsn, mapped) == _query(archive_dsn, mapped) == expected

    cutoff = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
    pruned = prune_product_partitions_job.execute_in_process(
        run_config={"ops": {PRUNE_OP: {"config": {"cutoffs": {"appsflyer/raw_data": cutoff}}}}}, resources=resources)
    assert pruned.success
    assert _query(product_dsn, "SELECT count(*) FROM appsflyer.raw_data") == [(0,)]
    assert _query(product_dsn, mapped) == expected


def test_raw_data_is_not_rebuilt_without_a_report_taken_out_of_the_setting(
        clean_sandbox, storage_resources, clean_databases):
    """Its rows stay in the archive's raw_data: a rebuild without the report would drop them."""
    _, archive_dsn = clean_databases
    day = recent_day(2)
    resources = _resources(clean_sandbox, storage_resources, {"android": (SANDBOX_ANDROID_APP_ID,),
                                                              "ios": (SANDBOX_IOS_APP_ID,)})
    assert dg.materialize(build_raw_assets(("installs_report", "uninstall_events_report")), resources=resources,
                          partition_key=day).success
    before = _query(archive_dsn, "SELECT source_report, count(*) FROM appsflyer.raw_data GROUP BY 1 ORDER BY 1")
    fewer = build_raw_assets(("installs_report",))
    result = dg.materialize(fewer, resources=resources, partition_key=day, selection=[fewer[-1].key],
                            raise_on_error=False)
    assert not result.success
    message = step_failure_message(result)
    assert "uninstall_events_report" in message and "APPSFLYER_RAW_REPORTS no longer lists" in message
    assert _query(archive_dsn, "SELECT source_report, count(*) FROM appsflyer.raw_data GROUP BY 1 ORDER BY 1") == before


def test_an_archive_role_without_temporary_tables_is_refused_before_any_call(
        clean_sandbox, storage_resources, clean_databases):
    """docs/configuration.md: a re-pulled raw day is compared with the archive in a temporary
    table, so the archive's role needs TEMPORARY; without it the step fails before any call,
    naming the GRANT to run."""
    _, archive_dsn = clean_databases
    role = "adpipes_no_temporary"
    admin = psycopg.connect(archive_dsn, autocommit=True)
    try:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"CREATE ROLE {role} LOGIN IN ROLE pg_read_all_data")
        admin.execute("REVOKE TEMPORARY ON DATABASE archive FROM PUBLIC")
        restricted = archive_dsn.replace("://postgres@", f"://{role}@")
        resources = {**_resources(clean_sandbox, storage_resources),
                     "archive_db": PostgresDatabase(role="archive", dsn=restricted)}
        asset = build_raw_report_asset("android", RAW_REPORTS["installs_report"])
        result = dg.materialize([asset], resources=resources, partition_key=recent_day(2), raise_on_error=False)
        assert not result.success
        message = node_failure(result, "appsflyer__android_installs")
        assert f"GRANT TEMPORARY ON DATABASE archive TO {role}" in message and "nothing was called" in message
        assert clean_sandbox.calls() == []
    finally:
        admin.execute("GRANT TEMPORARY ON DATABASE archive TO PUBLIC")
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()


def _temporary_files(dsn: str) -> int:
    """Temporary files PostgreSQL has written for the database so far (sorts and hashes that did
    not fit in work_mem), read in a new session so the statistics are fresh."""
    return _query(dsn, "SELECT temp_files FROM pg_stat_database WHERE datname = current_database()")[0][0]


def test_a_re_pulled_day_is_compared_with_the_archive_in_memory_not_on_disk(
        clean_sandbox, storage_resources, clean_databases):
    """docs/archive-safety.md: the comparison of a re-pulled day with the archive runs with work_mem
    raised to 32 MB for its transaction. With PostgreSQL's default (4 MB) the server sorted the
    keys of an 80K-event day on disk (a 300K-event day: 5.5 s against 2.7 s in memory)."""
    import time

    _, archive_dsn = clean_databases
    day = recent_day(2)
    clean_sandbox.configure(rows_per_day={f"{SANDBOX_ANDROID_APP_ID}|in_app_events_report": 80_000})
    asset = build_raw_report_asset("android", RAW_REPORTS["in_app_events_report"])
    resources = _resources(clean_sandbox, storage_resources, {"android": (SANDBOX_ANDROID_APP_ID,),
                                                              "ios": (SANDBOX_IOS_APP_ID,)})
    assert dg.materialize([asset], resources=resources, partition_key=day).success  # archived: nothing compared
    assert _query(archive_dsn, "SELECT count(*) FROM appsflyer.android_in_app_events") == [(80_000,)]
    before = _temporary_files(archive_dsn)
    assert dg.materialize([asset], resources=resources, partition_key=day).success  # re-pulled: compared
    # A session's statistics reach pg_stat_database when it ends: give the step's a moment.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert _temporary_files(archive_dsn) == before
        time.sleep(0.5)
