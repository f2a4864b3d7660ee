"""The dev seed that ``scripts/dev`` runs before the UI: the last days of every asset, as range runs,
against its own embedded PostgreSQL and sandbox (what a first start on a new machine does)."""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from adpipes.dev.services import ensure_postgres, stop_all
from adpipes.lib.settings import Settings, load_settings
from adpipes_tests.fixtures.postgres import make_test_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dev_settings() -> Iterator[Settings]:
    directory = make_test_dir("adpipes-test-devseed-")
    loaded = load_settings({"ADPIPES_ENV": "dev", "ADPIPES_DATA_DIR": str(directory)})
    yield loaded
    stop_all(loaded)
    shutil.rmtree(directory, ignore_errors=True)


def seed(settings: Settings, dagster_home: Path, days: int) -> str:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("ADPIPES_", "DAGSTER_"))}
    env.update(ADPIPES_ENV="dev", ADPIPES_DATA_DIR=str(settings.data_dir), DAGSTER_HOME=str(dagster_home))
    done = subprocess.run([sys.executable, "-m", "adpipes.dev.seed", "--days", str(days)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_seeding_materializes_the_missing_recent_days_once_as_range_runs(dev_settings, tmp_path):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(ROOT / "config" / "dagster.dev.yaml", dagster_home / "dagster.yaml")
    days = dg.DailyPartitionsDefinition(start_date=dev_settings.start_date,
                                        timezone=dev_settings.timezone).get_partition_keys()[-4:]

    assert f"materialized 2 new partition(s): {days[2]}, {days[3]}" in seed(dev_settings, dagster_home, 2)
    # Two more days: the two older ones, consecutive, so one more run; the seeded ones are skipped.
    assert f"materialized 2 new partition(s): {days[0]}, {days[1]}" in seed(dev_settings, dagster_home, 4)
    assert "materialized 0 new partition(s)" in seed(dev_settings, dagster_home, 4)

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_run_records(dg.RunsFilter(tags={"adpipes/trigger": "devseed"}))
        assert sorted((r.dagster_run.tags["dagster/asset_partition_range_start"],
                       r.dagster_run.tags["dagster/asset_partition_range_end"]) for r in runs) \
            == [(days[0], days[1]), (days[2], days[3])]
        assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    # Every day reached product, from the dev services the seed started itself.
    with psycopg.connect(ensure_postgres(dev_settings).product_dsn) as conn:
        for table in ("appsflyer.raw_data", "appsflyer.daily_report", "appsflyer.cohort_ltv", "airbridge.revenue"):
            seeded = conn.execute(f"SELECT DISTINCT report_date::text FROM {table} ORDER BY 1").fetchall()
            assert [day for (day,) in seeded] == days, table
