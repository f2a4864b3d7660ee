"""The step server (Dagster's forkserver) started while the run's process is still loading.

Dagster's multiprocess executor forks each step from a forkserver that imports the modules of
:data:`STEP_PRELOAD` first (``adpipes.definitions``: ~3 s on the 2-core development machine). It
starts that server only once the run begins, after the run's own process (``dagster asset
materialize``, ``dagster job execute``, a run worker) has imported the same definitions: the two
imports ran one after the other, and the first steps waited for both. :func:`start_early`, called
when the ``adpipes`` package is first imported, starts the server at once in a process that is
about to run steps, so the server's import runs beside the CLI's. The executor then finds it
running (``multiprocessing``'s forkserver is one per process, started once) and forks from it.

Only the commands that execute a run in their own process start it (``dagster asset
materialize``, ``dagster job execute``, and ``dagster api execute_run``, the run worker of the
container run launchers): the webserver, the daemon, code servers and tests import adpipes too and
never fork steps. A run worker the code server starts itself (the default run launcher, a
``multiprocessing`` child) starts the server when its run begins, as Dagster does. The server imports the same
modules whoever starts it, so a run whose executor is configured otherwise only leaves it idle
until the process exits.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import sys

# The modules the step server imports before it forks a step, in Dagster's order: the executor's
# own module first (Dagster prepends it), then what adpipes.definitions configures.
STEP_PRELOAD = ("adpipes.definitions", "adpipes.lib.step_preload")
_DAGSTER_FIRST = "dagster._core.executor.multiprocess"

# Set in the run's process when it starts the server (so inherited by the server and the steps);
# not ADPIPES_-prefixed, since adpipes refuses unknown ADPIPES_ variables.
_STARTED_BY = "_ADPIPES_STEP_SERVER_STARTED_BY"

# Command lines (after the program) that execute a run, with its steps, in this process.
_RUNNING_COMMANDS = (("asset", "materialize"), ("job", "execute"), ("api", "execute_run"))


def runs_steps_here(argv: list[str]) -> bool:
    """Whether ``argv`` is a Dagster command that executes a run in this process."""
    program = os.path.basename(argv[0]) if argv else ""
    if program not in ("dagster", "__main__.py"):
        return False
    return tuple(argv[1:3]) in _RUNNING_COMMANDS


def start_early(argv: list[str] | None = None) -> bool:
    """Start the step server now if this process is about to run steps; True if started."""
    if not runs_steps_here(sys.argv if argv is None else argv):
        return False
    if multiprocessing.parent_process() is not None or os.environ.get(_STARTED_BY):
        # A child of a run process, or the server itself importing the definitions: the run's
        # own server serves the steps (and a server must never start another).
        return False
    os.environ[_STARTED_BY] = str(os.getpid())
    multiprocessing.get_context("forkserver").set_forkserver_preload([_DAGSTER_FIRST, *STEP_PRELOAD])
    multiprocessing.forkserver.ensure_running()
    return True
