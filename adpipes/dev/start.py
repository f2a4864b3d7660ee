"""What ``scripts/dev`` runs before it hands over to ``dagster dev``.

1. Start (or find) the dev PostgreSQL and the sandbox, and print the one block that says where
   they are and where the UI will be (``services.service_block``).
2. Create the Dagster instance's storage under ``DAGSTER_HOME`` now: the seed and ``dagster dev``
   open it next, at the same time, and two processes creating a fresh SQLite storage race on its
   tables.
3. Start the dev seed (``adpipes.dev.seed``) in the background, so the UI comes up while the
   last days are materialized (about a minute for 14 days) instead of after them. Its two lines
   (start, end) go to the terminal; anything else it writes (warnings of its runs, a traceback)
   goes to ``<data dir>/seed.log``; every event of its runs is in the Dagster instance.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Sequence

import dagster as dg

from adpipes.dev.seed import DEFAULT_DAYS
from adpipes.dev.services import DevServiceError, service_block
from adpipes.dev.postgres_server import ClusterError
from adpipes.lib.settings import ConfigurationError, load_settings

SEED_LOG = "seed.log"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adpipes.dev.start", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ui-url", required=True, help="where dagster dev will serve the UI")
    parser.add_argument("--seed-days", type=int, default=DEFAULT_DAYS,
                        help=f"recent daily partitions to materialize in the background (0: none; "
                             f"default {DEFAULT_DAYS})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 1
    seed_log = settings.data_dir / SEED_LOG
    seed_text = (f"last {args.seed_days} days, in the background (output: {seed_log})"
                 if args.seed_days > 0 else "off")
    try:
        print(service_block(settings, args.ui_url, seed_text), flush=True)
    except (ClusterError, DevServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    if not os.environ.get("DAGSTER_HOME"):
        print("error: DAGSTER_HOME is not set (scripts/dev sets it)", file=sys.stderr)
        return 1
    dg.DagsterInstance.get().dispose()

    if args.seed_days > 0:
        with open(seed_log, "ab") as log_handle:
            # Same process group as scripts/dev: Ctrl-C in the terminal stops the seed with
            # Dagster, and the next start resumes (days already materialized are skipped).
            subprocess.Popen([sys.executable, "-m", "adpipes.dev.seed", "--days", str(args.seed_days)],
                             stdin=subprocess.DEVNULL, stderr=log_handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
