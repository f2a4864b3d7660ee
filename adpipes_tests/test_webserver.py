"""The Dagster UI's view of a 3-day range run, read through the GraphQL API of a real
``dagster-webserver``: what a user sees per day must be the database's truth.

A single-run range backfill materializes the AppsFlyer and Airbridge assets for 3 days with the
``dagster`` CLI (the shipped definitions, pointed at the sandbox and the test databases); then
``dagster-webserver`` serves that instance on a free port of 127.0.0.1 and the test asks it:

- each day's latest materialization has ``dagster/row_count`` equal to ``select count(*)`` of that
  day in the table (product; the archive for the raw reports, which are archived only), and
  numeric (plottable) metadata;
- each asset's checks have a status per day: the rule checks passed every day, and ``row_volume``
  (no history before the range) is skipped, not passed;
- the analysis assets are in the asset graph.

Slow by nature (a CLI run whose steps are processes, and a webserver start): about a minute or two.
"""

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
import requests

from adpipes_tests.fixtures.sandbox import prod_cli_env

ROOT = Path(__file__).resolve().parents[1]
TZ = "Asia/Seoul"
BIN = Path(sys.executable).parent
# Two raw reports keep the run short: 4 raw report steps instead of 20.
RAW_REPORTS = ("installs_report", "in_app_events_report")
# asset key -> the database whose table the UI's row count must equal.
TABLES = {
    ("appsflyer", "android_installs"): "archive",
    ("appsflyer", "raw_data"): "product",
    ("appsflyer", "daily_report"): "product",
    ("appsflyer", "cohort_ltv"): "product",
    ("airbridge", "revenue"): "product",
}
ANALYSIS_ASSETS = [["analytics", "cohort_roas"], ["analytics", "media_source_daily"]]

MATERIALIZATIONS = """
query ($path: [String!]!, $partitions: [String!]) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions) {
        partition
        runId
        timestamp
        metadataEntries {
          label
          __typename
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
        }
      }
    }
  }
}
"""
CHECKS = """
query ($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    __typename
    ... on AssetNode {
      assetChecksOrError {
        __typename
        ... on AssetChecks {
          checks {
            name
            partitionStatuses {
              __typename
              ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } }
            }
          }
        }
      }
    }
  }
}
"""
GRAPH = "{ assetNodes { assetKey { path } } }"


def local_day(days_ago: int) -> str:
    return (dt.datetime.now(ZoneInfo(TZ)).date() - dt.timedelta(days=days_ago)).isoformat()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def count_by_day(dsn: str, table: str, days: list[str]) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {day: conn.execute(f"SELECT count(*) FROM {table} WHERE report_date = %s", (day,)).fetchone()[0]
                for day in days}


class Webserver:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, text: str, **variables) -> dict:
        answer = requests.post(f"{self.url}/graphql", json={"query": text, "variables": variables}, timeout=60)
        answer.raise_for_status()
        body = answer.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


@pytest.fixture
def seeded_instance(clean_sandbox, clean_databases, tmp_path):
    """A DAGSTER_HOME whose instance holds a 3-day single-run range of every AppsFlyer and
    Airbridge asset, the env that ran it, and the 3 days."""
    product_dsn, archive_dsn = clean_databases
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    # The default local instance (SQLite under DAGSTER_HOME): the webserver reads what the run wrote.
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    days = [local_day(5), local_day(4), local_day(3)]
    env = {
        **prod_cli_env(clean_sandbox, product_dsn, archive_dsn, str(dagster_home), timezone=TZ),
        "ADPIPES_START_DATE": local_day(10),
        "APPSFLYER_RAW_REPORTS": ",".join(RAW_REPORTS),
    }
    done = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "adpipes.definitions",
         "--select", 'key:"appsflyer/*" or key:"airbridge/*"', "--partition-range", f"{days[0]}...{days[-1]}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-5000:])
    return env, days


@pytest.fixture
def webserver(seeded_instance, tmp_path):
    env, _ = seeded_instance
    port = free_port()
    log_path = tmp_path / "webserver.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-m", "adpipes.definitions"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"dagster-webserver exited: {log_path.read_text()[-4000:]}")
            try:
                # The code location is loaded once the asset graph answers.
                answer = requests.post(f"{url}/graphql", json={"query": GRAPH}, timeout=10)
                if answer.ok and answer.json().get("data", {}).get("assetNodes"):
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dagster-webserver did not answer in time: {log_path.read_text()[-4000:]}")
            time.sleep(1)
        yield Webserver(url)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_the_ui_shows_each_days_own_row_count_and_check_results(webserver, seeded_instance, clean_databases):
    _, days = seeded_instance
    dsns = dict(zip(("product", "archive"), clean_databases))

    for path, database in TABLES.items():
        name = "/".join(path)
        stored = count_by_day(dsns[database], ".".join(path), days)
        # Days of different sizes: a day showing the run's total (or a neighbour's) would fail.
        assert all(stored.values()), (name, stored)
        answer = webserver.query(MATERIALIZATIONS, path=list(path), partitions=days)["assetOrError"]
        assert answer["__typename"] == "Asset", (name, answer)
        latest: dict[str, dict] = {}
        for event in sorted(answer["assetMaterializations"], key=lambda e: float(e["timestamp"]), reverse=True):
            latest.setdefault(event["partition"], {e["label"]: e for e in event["metadataEntries"]})
        assert sorted(latest) == days, name
        for day in days:
            entries = latest[day]
            assert entries["dagster/row_count"]["__typename"] == "IntMetadataEntry"
            assert entries["dagster/row_count"]["intValue"] == stored[day], (name, day)
            assert entries["dagster/partition_row_count"]["intValue"] == stored[day], (name, day)
            # Numbers the UI plots by partition, beyond the row count.
            numeric = {label for label, e in entries.items()
                       if e["__typename"] in ("IntMetadataEntry", "FloatMetadataEntry")}
            assert numeric - {"dagster/row_count", "dagster/partition_row_count"}, (name, day, sorted(entries))
        if name != "appsflyer/android_installs":
            # Validated assets: how many of the day's rows were checked and quarantined.
            assert all(latest[d]["checked_rows"]["intValue"] >= stored[d] for d in days), name
            assert all(latest[d]["quarantined_rows"]["__typename"] == "IntMetadataEntry" for d in days), name

        node = webserver.query(CHECKS, path=list(path))["assetNodeOrError"]
        checks = node["assetChecksOrError"]["checks"]
        assert checks, name
        for check in checks:
            statuses = check["partitionStatuses"]
            assert statuses and statuses["__typename"] == "AssetCheckTimePartitionStatuses", (name, check)
            by_day = {}
            for found in statuses["ranges"]:
                first, last = dt.date.fromisoformat(found["startKey"]), dt.date.fromisoformat(found["endKey"])
                while first <= last:
                    by_day[first.isoformat()] = found["status"]
                    first += dt.timedelta(days=1)
            # Before the range nothing was loaded: row_volume cannot judge any of the 3 days and
            # must say so (skipped), never pass. The sandbox's data breaks no rule.
            expected = "SKIPPED" if check["name"] == "row_volume" else "SUCCEEDED"
            assert {day: by_day.get(day) for day in days} == dict.fromkeys(days, expected), (name, check["name"])

    graph = {"/".join(node["assetKey"]["path"]) for node in webserver.query(GRAPH)["assetNodes"]}
    for path in ANALYSIS_ASSETS:
        assert "/".join(path) in graph
