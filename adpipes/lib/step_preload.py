"""Work every step process would otherwise repeat, done once in the server steps fork from.

The step executor (``adpipes.definitions.STEP_EXECUTOR``) forks each step from a forkserver
that imports the modules listed in its ``preload_modules``; this is one of them, and nothing
else imports it (the CLI, the webserver and the daemon do not pay for it). Measured on the 2-core
development machine, each step process would otherwise spend:

- 0.6-0.7 s importing pandera's pandas backends (some 110 modules, hypothesis's strategies among
  them) at its first validation. One small validation here loads them.
- ~1.5 s importing what Dagster's instance storage needs (SQLAlchemy, Alembic, rich, pygments:
  some 390 modules, imported lazily when a step process opens the run's instance). Opening a
  throwaway SQLite instance here imports them, and the modules of the run's own instance
  (``DAGSTER_HOME``'s storage, e.g. ``dagster_postgres``) are imported without connecting: a
  connection opened here would be shared by every forked step.
- ~0.3 s importing Dagster's CLI package, which each forked process re-runs as the ``dagster``
  command's main module.

Not done here: ``gc.freeze`` (a forked step's first collection copies ~54 MB of the server's pages
into the step; frozen, 8 MB). Measured end to end at 300K events per platform, the run took 5 s
longer with it (56 s against 51 s), for 25-40 MB less peak memory.
"""

import importlib
import os
import tempfile
from pathlib import Path

import dagster._cli  # noqa: F401
import pandas as pd
import pandera.pandas as pa
from dagster._core.instance.ref import InstanceRef

pa.DataFrameSchema({"preloaded": pa.Column(int, pa.Check.ge(0))}).validate(
    pd.DataFrame({"preloaded": [1]}), lazy=True)


def _import_instance_storage() -> None:
    with tempfile.TemporaryDirectory(prefix="adpipes-step-server-") as home:
        Path(home, "dagster.yaml").write_text("")
        InstanceRef.from_dir(home).storage.dispose()
    home = os.environ.get("DAGSTER_HOME")
    if not home or not Path(home, "dagster.yaml").is_file():
        return
    try:
        ref = InstanceRef.from_dir(home)
    except Exception:  # noqa: BLE001 - a broken dagster.yaml is reported by the run itself
        return
    for data in (ref.storage_data, ref.run_storage_data, ref.event_storage_data, ref.schedule_storage_data,
                 ref.compute_logs_data):
        if data is not None:
            importlib.import_module(data.module_name)


_import_instance_storage()
