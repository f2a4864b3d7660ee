"""Materialize the most recent daily partitions in dev so the UI shows data on first start.

Run by ``scripts/dev`` beside ``dagster dev`` (in the background: the UI comes up while it runs)
with ``DAGSTER_HOME`` set, so the materializations land in the same instance the UI reads.
Partitions already materialized are skipped, which makes a restart of ``scripts/dev`` quick.

The terminal gets a start and an end line: the run's own events (DEBUG and INFO) are kept in the
Dagster instance, where the UI's run page shows them, and only its warnings are echoed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import dagster as dg

# Two weeks of history: enough for the row-volume checks' trailing medians and for the UI's
# per-partition plots to show a shape (issue 14). ADPIPES_SEED_DAYS overrides it.
DEFAULT_DAYS = 14
# The console logger of the seed's runs: the terminal shows warnings (failed checks, vendor
# notices); every event, DEBUG included, is still written to the run's event log.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def seed(days: int) -> list[str]:
    from adpipes.definitions import defs
    from adpipes.lib.settings import load_settings

    settings = load_settings()
    if not settings.is_dev:
        raise SystemExit("devseed only runs with ADPIPES_ENV=dev (it would spend real API quota)")
    instance = dg.DagsterInstance.get()
    assets = list(defs.assets or [])
    partitions_def = assets[0].partitions_def
    keys = partitions_def.get_partition_keys()[-days:] if days > 0 else []
    done: set[str] | None = None
    for asset in assets:
        for key in asset.keys:
            materialized = instance.get_materialized_partitions(key)
            done = materialized if done is None else done & materialized
    missing = [key for key in keys if key not in (done or set())]
    # Consecutive missing days are one run, as a backfill would be: the vendor clients cover a
    # range with as few calls as their APIs allow, so seeding many days stays within the quotas.
    ranges: list[list[str]] = []
    for index, key in enumerate(keys):
        if key not in missing:
            continue
        if ranges and keys.index(ranges[-1][-1]) == index - 1:
            ranges[-1].append(key)
        else:
            ranges.append([key])
    seeded = []
    for days_range in ranges:
        first, last = days_range[0], days_range[-1]
        print(f"adpipes dev seed: materializing partitions {first}..{last} of {len(assets)} assets "
              "(progress: the UI's Runs page)", flush=True)
        result = dg.materialize(
            assets, resources=defs.resources, instance=instance, run_config=RUN_CONFIG,
            tags={"adpipes/trigger": "devseed", "dagster/asset_partition_range_start": first,
                  "dagster/asset_partition_range_end": last},
        )
        if not result.success:
            raise SystemExit(f"seeding partitions {first}..{last} failed; see the run in the Dagster UI")
        seeded.extend(days_range)
    return seeded


def _default_days() -> int:
    raw = os.environ.get("ADPIPES_SEED_DAYS", "").strip()
    if not raw:
        return DEFAULT_DAYS
    if not raw.isdigit():
        raise SystemExit(f"ADPIPES_SEED_DAYS={raw!r} must be a whole number of days")
    return int(raw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=None,
                        help=f"how many recent partitions (default: ADPIPES_SEED_DAYS or {DEFAULT_DAYS})")
    args = parser.parse_args(argv)
    # WARNING, not INFO: alembic logs ~23 INFO lines while it creates the instance's SQLite
    # tables on a fresh DAGSTER_HOME. The seed's own lines are printed.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    started = time.monotonic()
    try:
        seeded = seed(args.days if args.days is not None else _default_days())
    except SystemExit as exc:
        print(f"adpipes dev seed: {exc}", flush=True)
        return 1
    print(f"adpipes dev seed: materialized {len(seeded)} new partition(s) in {time.monotonic() - started:.0f} s: "
          f"{', '.join(seeded) or '-'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
