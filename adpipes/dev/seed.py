"""Materialize the most recent daily partitions in dev so the UI shows data on first start.

Run by ``scripts/dev`` before ``dagster dev`` with ``DAGSTER_HOME`` set, so the materializations
land in the same instance the UI reads. Partitions already materialized are skipped, which makes
a restart of ``scripts/dev`` quick.
"""

from __future__ import annotations

import argparse
import logging

import dagster as dg

log = logging.getLogger("adpipes.devseed")


def seed(days: int) -> list[str]:
    from adpipes.definitions import defs
    from adpipes.lib.settings import load_settings

    settings = load_settings()
    if not settings.is_dev:
        raise SystemExit("devseed only runs with ADPIPES_ENV=dev (it would spend real API quota)")
    instance = dg.DagsterInstance.get()
    assets = list(defs.assets or [])
    partitions_def = assets[0].partitions_def
    keys = partitions_def.get_partition_keys()[-days:]
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
        log.info("materializing partitions %s..%s of %d assets", first, last, len(assets))
        result = dg.materialize(
            assets, resources=defs.resources, instance=instance,
            tags={"adpipes/trigger": "devseed", "dagster/asset_partition_range_start": first,
                  "dagster/asset_partition_range_end": last},
        )
        if not result.success:
            raise SystemExit(f"seeding partitions {first}..{last} failed; see the run in the Dagster UI")
        seeded.extend(days_range)
    return seeded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=3, help="how many recent partitions")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    seeded = seed(args.days)
    print(f"adpipes dev seed: materialized {len(seeded)} new partition(s): {', '.join(seeded) or '-'}")


if __name__ == "__main__":
    main()
