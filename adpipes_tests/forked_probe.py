"""Run inside a process forked from the step server (test_definitions.py): reports what the step
starts with. Imports nothing of adpipes, so what it finds was loaded by the server's preload."""

import sys

# What a step would otherwise import itself: pandera's validation backends, and what Dagster's
# instance storage needs (SQLAlchemy's SQLite dialect, Alembic's migration scripts).
PRELOADED = ("pandera.backends.pandas.container", "sqlalchemy.dialects.sqlite", "alembic.script")


def step_state(results) -> None:
    results.put({name: name in sys.modules for name in PRELOADED})
