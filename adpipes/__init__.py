"""adpipes: Dagster assets for AppsFlyer and Airbridge reports (see README.md).

Importing the package quiets Dagster's *stability labels* in every process that loads adpipes
code (the webserver's code server, the daemon's, each run's step processes, the CLI, the dev
seed): adpipes uses ``backfill_policy`` (single-run range backfills) on purpose, Dagster itself
passes the beta ``owners`` to sensors, and each would otherwise print a BetaWarning on every
definitions load (one per asset, in every step process of a CLI run). Only Dagster's own warning categories are silenced (and one deprecation
raised inside Dagster itself, which adpipes cannot act on); other warnings, and every run's event
log, are untouched.
"""

import warnings

from dagster_shared.utils.warnings import BetaWarning, PreviewWarning, SupersessionWarning

for _category in (BetaWarning, PreviewWarning, SupersessionWarning):
    warnings.filterwarnings("ignore", category=_category)
# Raised by Dagster's own resource machinery, not by adpipes code (which uses ``context.run``).
warnings.filterwarnings("ignore", message=r"InitResourceContext\.dagster_run is deprecated",
                        category=DeprecationWarning)
del _category

# A process about to run steps starts Dagster's step server now, so its import of the definitions
# runs beside this process's own (adpipes/lib/step_server.py).
from adpipes.lib.step_server import start_early as _start_step_server_early  # noqa: E402

_start_step_server_early()
