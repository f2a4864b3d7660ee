"""The dev seed that ``scripts/dev`` runs before the UI: the last days of every asset, as range runs,
against its own embedded PostgreSQL and sandbox (what a first start on a new machine does)."""

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

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


def run_seed(settings: Settings, dagster_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # As scripts/dev runs it: dev mode, no ADPIPES_START_DATE (dev's recent partitions).
    env = {name: value for name, value in os.environ.items() if not name.startswith(("ADPIPES_", "DAGSTER_"))}
    env.update(ADPIPES_ENV="dev", ADPIPES_DATA_DIR=str(settings.data_dir), DAGSTER_HOME=str(dagster_home))
    done = subprocess.run([sys.executable, "-m", "adpipes.dev.seed", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def seed(settings: Settings, dagster_home: Path, days: int) -> str:
    return run_seed(settings, dagster_home, "--days", str(days)).stdout


def materialized(stdout: str) -> list[str]:
    """The days of the seed's last line, 'materialized N new partition(s) in S s: day, day'."""
    found = re.search(r"materialized (\d+) new partition\(s\) in \d+ s: (.*)$", stdout.strip())
    assert found, stdout
    days = [] if found.group(2) == "-" else found.group(2).split(", ")
    assert int(found.group(1)) == len(days)
    return days


def fresh_home(tmp_path: Path) -> Path:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(ROOT / "config" / "dagster.dev.yaml", dagster_home / "dagster.yaml")
    return dagster_home


def test_seed_fills_the_last_14_days_quietly_and_keeps_every_event(dev_settings, tmp_path):
    """Issue 14: the seed fills 14 days; the terminal shows its own lines, no Dagster warning,
    no DEBUG event and no alembic INFO; the run's events are all in the instance."""
    dagster_home = fresh_home(tmp_path)
    done = run_seed(dev_settings, dagster_home)  # no --days, no ADPIPES_SEED_DAYS: the default

    # The 14 days before today in the app timezone (the last complete day is yesterday).
    today = dt.datetime.now(ZoneInfo(dev_settings.timezone)).date()
    expected = [(today - dt.timedelta(days=n)).isoformat() for n in range(14, 0, -1)]
    assert materialized(done.stdout) == expected
    # stdout: the start line and the end line, nothing else.
    assert len(done.stdout.strip().splitlines()) == 2, done.stdout
    for noise in ("Warning", "DEBUG", " - INFO - ", "alembic"):
        assert noise not in done.stderr, f"{noise!r} in the seed's stderr:\n{done.stderr[-3000:]}"

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        (run,) = instance.get_run_records(dg.RunsFilter(tags={"adpipes/trigger": "devseed"}))
        assert run.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        # The DEBUG events the terminal no longer shows (step starts, ...) are in the run's log.
        levels = {entry.level for entry in instance.all_logs(run.dagster_run.run_id)}
        assert {10, 20} <= levels  # logging.DEBUG, logging.INFO
        steps = [entry for entry in instance.all_logs(run.dagster_run.run_id,
                                                      of_type=dg.DagsterEventType.STEP_START)]
        assert len(steps) >= 6  # every asset of the code location was a step of the run


def test_seeding_materializes_the_missing_recent_days_once_as_range_runs(dev_settings, tmp_path):
    dagster_home = fresh_home(tmp_path)
    days = dg.DailyPartitionsDefinition(start_date=dev_settings.start_date,
                                        timezone=dev_settings.timezone).get_partition_keys()[-4:]

    assert materialized(seed(dev_settings, dagster_home, 2)) == [days[2], days[3]]
    # Two more days: the two older ones, consecutive, so one more run; the seeded ones are skipped.
    assert materialized(seed(dev_settings, dagster_home, 4)) == [days[0], days[1]]
    assert materialized(seed(dev_settings, dagster_home, 4)) == []

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
