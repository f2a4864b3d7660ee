"""The step server started while a run's process loads (adpipes/lib/step_server.py): only in the
commands that run steps, with the preload the executor configures, and used by the executor."""

import os
import subprocess
import sys

import pytest

from adpipes.lib.step_server import STEP_PRELOAD, runs_steps_here

# What the probe prints: the pid of the server adpipes' import started (None when it did not),
# and the preload it was given.
PROBE = (
    "import sys; sys.argv = {argv!r}; import adpipes; "
    "import multiprocessing.forkserver as f; "
    "print(f._forkserver._forkserver_pid, f._forkserver._preload_modules)"
)


@pytest.mark.parametrize(("argv", "expected"), [
    (["/venv/bin/dagster", "asset", "materialize", "-m", "adpipes.definitions"], True),
    (["/venv/bin/dagster", "job", "execute", "-m", "adpipes.definitions", "-j", "daily"], True),
    (["/venv/bin/dagster", "api", "execute_run", "{}"], True),
    (["/venv/lib/python3.11/site-packages/dagster/__main__.py", "asset", "materialize"], True),
    (["/venv/bin/dagster", "dev"], False),
    (["/venv/bin/dagster", "api", "grpc", "-m", "adpipes.definitions"], False),
    (["/venv/bin/dagster-daemon", "run"], False),
    (["/venv/bin/dagster-webserver"], False),
    (["/venv/bin/dagster", "asset", "list"], False),
    (["-c"], False),  # the step server itself, importing adpipes.definitions
    ([], False),
])
def test_only_the_commands_that_run_steps_in_their_own_process_start_it(argv, expected):
    assert runs_steps_here(argv) is expected


def probe(argv: list[str], **environ: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **environ})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(maxsplit=1)


def test_importing_adpipes_in_a_run_command_starts_the_server_with_the_executors_preload():
    from adpipes.definitions import STEP_EXECUTOR

    pid, preload = probe(["/venv/bin/dagster", "asset", "materialize", "-m", "adpipes.definitions"])
    assert pid.isdigit()
    configured = STEP_EXECUTOR.config_schema.resolve_config({}).value["config"]["start_method"]["forkserver"]
    # Dagster puts its executor module first; the rest is what the executor is configured with,
    # so the executor finds this server running and forks from it.
    assert preload == str(["dagster._core.executor.multiprocess", *configured["preload_modules"]])
    assert configured["preload_modules"] == list(STEP_PRELOAD)


def test_importing_adpipes_elsewhere_starts_nothing():
    pid, preload = probe(["/venv/bin/dagster", "dev"])
    assert pid == "None"
    assert "adpipes.definitions" not in preload  # Python's own default (['__main__']) is left alone


def test_the_server_and_the_steps_never_start_another():
    # They inherit the run process's environment, where the server's start is recorded; adpipes
    # refuses unknown ADPIPES_ variables, so the record must not start with ADPIPES_.
    from adpipes.lib.settings import load_settings

    argv = ["/venv/bin/dagster", "asset", "materialize", "-m", "adpipes.definitions"]
    assert probe(argv, _ADPIPES_STEP_SERVER_STARTED_BY="1")[0] == "None"
    load_settings({"_ADPIPES_STEP_SERVER_STARTED_BY": "1"})
