"""Run inside a process forked from the step server (test_definitions.py): reports what the step
starts with. Imports nothing of adpipes, so what it finds was loaded by the server's preload."""

import sys


def step_state(results) -> None:
    results.put("pandera.backends.pandas.container" in sys.modules)
