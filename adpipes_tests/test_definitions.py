"""The code location loads as a whole, the way the webserver and the daemon load it."""

import dagster as dg

from adpipes.definitions import defs


def test_the_code_location_loads_with_every_job_schedule_and_sensor():
    # Resolving the repository checks names across assets, jobs, ops, schedules and sensors
    # (e.g. an op named like its job), which materializing single assets in tests does not.
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    assert {job.name for job in repository.get_all_jobs()} >= {"prune_product_partitions"}
    assert {s.name for s in repository.schedule_defs} == {"daily_schedule", "late_events_schedule"}
    assert {s.name for s in repository.sensor_defs} == {"product_retention_sensor", "analytics_automation_sensor"}


def test_every_vendor_api_step_is_in_its_pool():
    from adpipes.appsflyer.raw_data_api import RAW_REPORTS

    graph = defs.resolve_asset_graph()
    pools = {key.to_user_string(): graph.get(key).pools for key in graph.get_all_asset_keys()}
    raw_reports = {f"appsflyer/{platform}_{report.short}": {"appsflyer_raw_data_api"}
                   for report in RAW_REPORTS.values() for platform in ("android", "ios")}
    assert len(raw_reports) == 20
    assert {k: v for k, v in pools.items() if k not in raw_reports} | raw_reports == pools
    assert {k: v for k, v in pools.items() if k not in raw_reports} == {
        "appsflyer/raw_data": set(),  # no API call: it reads the archived raw reports
        "appsflyer/customer_user_map": set(),  # no API call: it reads the archive's raw_data
        "appsflyer/daily_report": {"appsflyer_aggregate_api"},
        "appsflyer/cohort_ltv": {"appsflyer_cohort_api"},
        "airbridge/revenue": {"airbridge_api"},
        "analytics/cohort_roas": set(),  # no API call: SQL over product tables
        "analytics/media_source_daily": set(),
    }


def test_the_raw_reports_are_those_of_the_setting_grouped_by_platform():
    import dagster as dg

    from adpipes.definitions import build_definitions
    from adpipes.lib.settings import load_settings

    chosen = build_definitions(load_settings({"APPSFLYER_RAW_REPORTS": "installs_report,organic_installs_report"}))
    graph = chosen.resolve_asset_graph()
    raw = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()
           if graph.get(k).group_name in ("appsflyer_android", "appsflyer_ios")}
    # A platform's raw reports are the group named like their keys' prefix (appsflyer/android_...).
    assert raw == {
        "appsflyer/android_installs": "appsflyer_android", "appsflyer/ios_installs": "appsflyer_ios",
        "appsflyer/android_organic_installs": "appsflyer_android",
        "appsflyer/ios_organic_installs": "appsflyer_ios",
    }
    # The attribution is a tag: the UI selects a report family with tag:attribution=organic.
    assert {k: graph.get(dg.AssetKey.from_user_string(k)).tags["attribution"] for k in raw} == {
        "appsflyer/android_installs": "non_organic", "appsflyer/ios_installs": "non_organic",
        "appsflyer/android_organic_installs": "organic", "appsflyer/ios_organic_installs": "organic",
    }
    # raw_data is built from exactly those.
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey(["appsflyer", "raw_data"])).parent_keys}
    assert parents == set(raw)
    everything = defs.resolve_asset_graph()
    groups = {everything.get(k).group_name for k in everything.get_all_asset_keys()}
    assert {"appsflyer_android", "appsflyer_ios", "appsflyer", "airbridge"} <= groups
