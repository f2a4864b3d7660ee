"""The code location loads as a whole, the way the webserver and the daemon load it."""

import subprocess
import sys

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


def test_no_token_or_password_in_the_instances_run_storage(clean_sandbox, clean_databases, tmp_path):
    """configuration.md: tokens and DSNs are passed as dagster.EnvVar; their values are read when
    a run starts and never appear in run config, config snapshots, URLs, logs or error messages.
    Runs of the prod CLI (one succeeding, one failing) against a persistent instance: neither
    token nor either database password is in anything the instance stored, read back through its
    own API (runs with their config and tags, job and execution plan snapshots, every event log
    entry) and as the bytes of every file under DAGSTER_HOME."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    from dagster._core.instance.ref import InstanceRef
    from dagster._serdes import serialize_value

    from adpipes.dev.sandbox import airbridge as sandbox_airbridge
    from adpipes.lib.settings import SANDBOX_AIRBRIDGE_APP_NAME
    from adpipes_tests.fixtures.sandbox import prod_cli_env

    product_dsn, archive_dsn = clean_databases
    # The test cluster trusts every local connection: a password in the DSN is sent and ignored.
    passwords = {"product": "pw-product-7d3e1a", "archive": "pw-archive-c2b9f0"}
    dsns = {role: dsn.replace("postgres@", f"postgres:{passwords[role]}@", 1)
            for role, dsn in (("product", product_dsn), ("archive", archive_dsn))}
    assert all(passwords[role] in dsn for role, dsn in dsns.items())
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = prod_cli_env(clean_sandbox, dsns["product"], dsns["archive"], str(home))
    env["APPSFLYER_RAW_REPORTS"] = "installs_report"
    sandbox_airbridge.configure(clean_sandbox, polls_pending=0, polls_running=0)
    day = (dt.datetime.now(ZoneInfo("Asia/Seoul")).date() - dt.timedelta(days=2)).isoformat()
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "adpipes.definitions",
               "--select", "appsflyer/android_installs,airbridge/revenue",
               "--partition", day]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # A failing run: errors are where a careless client would print what it sent.
    clean_sandbox.add_faults(kind="token_revoked", report="installs_report", times=5)
    clean_sandbox.add_faults(kind="task_failure", app_id=SANDBOX_AIRBRIDGE_APP_NAME, report="revenue")
    failed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0
    secrets = [clean_sandbox.appsflyer_token, clean_sandbox.airbridge_token, *passwords.values()]
    assert all(len(secret) >= 16 for secret in secrets)

    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    runs = instance.get_runs()
    assert len(runs) == 2 and {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE}
    stored = []
    for run in runs:
        stored.append(serialize_value(run))  # run config, tags, selection
        stored.append(serialize_value(instance.get_job_snapshot(run.job_snapshot_id)))
        stored.append(serialize_value(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)))
        stored.extend(serialize_value(entry) for entry in instance.all_logs(run.run_id))
    text = "\n".join(stored)
    # What was read is the real thing: the failure and the resources' variable names are there.
    assert "FAILURE" in text and "APPSFLYER_API_TOKEN" in text and "AIRBRIDGE_API_TOKEN" in text
    assert "ADPIPES_PRODUCT_DSN" in text
    assert [s for s in secrets if s in text] == []
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)
    assert [(str(p), s) for p in files for s in secrets if s.encode() in p.read_bytes()] == []
    assert [s for s in secrets if s in done.stdout + done.stderr + failed.stdout + failed.stderr] == []


def test_steps_fork_from_a_server_that_preloaded_adpipes():
    """Every job runs each step in its own process forked from a server that imported
    adpipes.definitions once (docs/development.md, the ingest benchmark): Dagster would preload
    only `dagster`, and each step would import pandas, pandera and adpipes again."""
    from adpipes.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    executor = job.executor_def
    assert executor.name == "forkserver_multiprocess_executor"
    # The config Dagster resolves for a run that sets none (run config cannot change it).
    resolved = executor.config_schema.resolve_config({}).value["config"]
    assert resolved["start_method"] == {"forkserver": {"preload_modules": ["adpipes.definitions",
                                                                           "adpipes.lib.step_preload"]}}


def test_the_preloaded_server_has_pandera_ready_to_validate():
    """A step's first validation would import pandera's pandas backends (0.6 s a step): the
    forkserver's preload does it once. Checked in a fresh interpreter, as the forkserver is."""
    probe = ("import sys, adpipes.definitions; before = 'pandera.backends.pandas.container' in sys.modules; "
             "import adpipes.lib.step_preload; "
             "print(before, 'pandera.backends.pandas.container' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    # Not loaded by the definitions alone (the CLI and the webserver do not pay), loaded by the preload.
    assert done.stdout.split() == ["False", "True"], done.stderr


def test_a_forked_step_starts_with_pandera_and_the_instance_storage_loaded():
    """What a step process forks with (docs/development.md, "Benchmarks"): pandera's backends and
    the modules Dagster's instance storage imports are loaded. A real forkserver with the preload the executor resolves (Python skips a preload
    module that fails in silence); the probe run in the step imports nothing of adpipes itself."""
    import multiprocessing

    from adpipes.definitions import STEP_EXECUTOR
    from adpipes_tests.forked_probe import PRELOADED, step_state

    preload = STEP_EXECUTOR.config_schema.resolve_config({}).value["config"]["start_method"]["forkserver"]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(preload["preload_modules"])
    results = context.Queue()
    step = context.Process(target=step_state, args=(results,))
    step.start()
    try:
        loaded = results.get(timeout=300)
    finally:
        step.join(timeout=60)
    assert loaded == dict.fromkeys(PRELOADED, True)
