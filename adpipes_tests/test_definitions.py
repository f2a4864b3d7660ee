"""The code location loads as a whole, the way the webserver and the daemon load it."""

import dagster as dg

from adpipes.definitions import defs


def test_the_code_location_loads_with_every_job_schedule_and_sensor():
    # Resolving the repository checks names across assets, jobs, ops, schedules and sensors
    # (e.g. an op named like its job), which materializing single assets in tests does not.
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    assert {job.name for job in repository.get_all_jobs()} >= {"prune_product_partitions"}
    assert {s.name for s in repository.schedule_defs} == {"daily_schedule"}
    assert {s.name for s in repository.sensor_defs} == {"product_retention_sensor"}


def test_every_vendor_api_step_is_in_its_pool():
    graph = defs.resolve_asset_graph()
    pools = {key.to_user_string(): graph.get(key).pools for key in graph.get_all_asset_keys()}
    assert pools == {
        "appsflyer/android_installs": {"appsflyer_raw_data_api"},
        "appsflyer/ios_installs": {"appsflyer_raw_data_api"},
        "appsflyer/android_in_app_events": {"appsflyer_raw_data_api"},
        "appsflyer/ios_in_app_events": {"appsflyer_raw_data_api"},
        "appsflyer/raw_data": set(),  # no API call: it reads the archived raw reports
        "appsflyer/daily_report": {"appsflyer_aggregate_api"},
        "appsflyer/cohort_ltv": {"appsflyer_cohort_api"},
        "airbridge/revenue": {"airbridge_api"},
    }
