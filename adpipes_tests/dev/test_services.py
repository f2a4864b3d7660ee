"""Dev-mode services: the embedded PostgreSQL and the sandbox API, started once and found again."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from adpipes.dev import services as devservices
from adpipes.dev.services import DevServiceError, ensure_postgres, ensure_sandbox, stop_all
from adpipes.dev.postgres_server import pid_alive
from adpipes.lib.settings import Settings, load_settings
from adpipes_tests.fixtures.postgres import make_test_dir

REAL_SANDBOX = Path(devservices.__file__).parent / "sandbox" / "__main__.py"

# A minimal stand-in with the sandbox's command-line contract: reads the token file, listens on
# 127.0.0.1, answers GET /_sandbox/calls, then writes {"port", "pid"} atomically.
STAND_IN = textwrap.dedent(
    """
    import argparse, http.server, json, os
    from pathlib import Path
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    parser.add_argument("--state-file", type=Path)
    parser.add_argument("--token-file", type=Path)
    args = parser.parse_args()
    token = args.token_file.read_text().strip()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == "/_sandbox/calls" and self.headers.get("Authorization") == f"Bearer {token}"
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(b"[]")

    server = http.server.HTTPServer(("127.0.0.1", args.port), Handler)
    tmp = args.state_file.with_name(".state.tmp")
    tmp.write_text(json.dumps({"port": server.server_address[1], "pid": os.getpid()}))
    os.replace(tmp, args.state_file)
    server.serve_forever()
    """
)


@pytest.fixture
def settings() -> Iterator[Settings]:
    directory = make_test_dir("adpipes-test-dev-")
    loaded = load_settings({"ADPIPES_DATA_DIR": str(directory)})
    yield loaded
    stop_all(loaded)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "stand_in_sandbox.py"
    script.write_text(STAND_IN)
    monkeypatch.setattr(devservices, "SANDBOX_COMMAND", (sys.executable, str(script)))
    return script


def run_cli(settings: Settings, command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ADPIPES_DATA_DIR": str(settings.data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "adpipes.dev.services", command],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


# --------------------------------------------------------------------------- PostgreSQL


def test_ensure_postgres_creates_both_databases(settings: Settings) -> None:
    dev = ensure_postgres(settings)
    assert ensure_postgres(settings) is dev  # memoized per process
    for dsn, name in ((dev.product_dsn, "product"), (dev.archive_dsn, "archive")):
        assert dsn.startswith("postgresql://postgres@127.0.0.1:") and dsn.endswith("/" + name)
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
    assert dev.cluster.data_dir == settings.data_dir / "postgres"

    status = run_cli(settings, "status")
    assert dev.product_dsn in status.stdout and dev.archive_dsn in status.stdout

    stop_all(settings)
    assert not dev.cluster.is_running()
    # Found again (and restarted) after a stop, on the same port: DSNs written down stay valid.
    assert ensure_postgres(settings).product_dsn == dev.product_dsn


@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback only applies to root")
def test_root_falls_back_when_default_dir_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    directory = make_test_dir("adpipes-test-dev-")
    try:
        private = directory / "home"
        private.mkdir(mode=0o700)
        fallback_parent = directory / "var-tmp"
        fallback_parent.mkdir()
        monkeypatch.setattr(devservices, "ROOT_FALLBACK_PARENT", fallback_parent)
        default = dataclasses.replace(load_settings({}), data_dir=private / ".adpipes")
        chosen = devservices.postgres_dir(default)
        assert chosen.parent.parent == fallback_parent and chosen.name == "postgres"
        assert devservices.postgres_dir(default) == chosen  # every process finds the same one
        # An explicit ADPIPES_DATA_DIR is never relocated (the cluster reports it instead).
        explicit = load_settings({"ADPIPES_DATA_DIR": str(private / "data")})
        assert devservices.postgres_dir(explicit) == private / "data" / "postgres"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------- sandbox


def test_sandbox_is_started_once_and_found_again(settings: Settings, stand_in: Path) -> None:
    sandbox = ensure_sandbox(settings)
    assert sandbox.base_url.startswith("http://127.0.0.1:")
    token_file = settings.data_dir / "sandbox" / "token"
    assert sandbox.appsflyer_token == token_file.read_text() == sandbox.airbridge_token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert sandbox.appsflyer_token not in repr(sandbox)

    again = ensure_sandbox(settings)
    assert (again.pid, again.base_url, again.appsflyer_token) == (
        sandbox.pid,
        sandbox.base_url,
        sandbox.appsflyer_token,
    )

    status = run_cli(settings, "status")
    assert sandbox.base_url in status.stdout
    assert sandbox.appsflyer_token not in status.stdout + status.stderr

    # Gone without cleaning up (kill -9): the next caller starts a new one with a new token.
    os.kill(sandbox.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(sandbox.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    restarted = ensure_sandbox(settings)
    assert restarted.pid != sandbox.pid
    assert restarted.appsflyer_token != sandbox.appsflyer_token

    stop_all(settings)
    assert not pid_alive(restarted.pid)
    assert not (settings.data_dir / "sandbox" / "state.json").exists()


def test_a_busy_sandbox_is_waited_for_and_a_hung_one_replaced(
    settings: Settings, stand_in: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = ensure_sandbox(settings)
    # Busy (here: stopped) for 4 s, longer than the 2 s probe: another process asking for the
    # sandbox meanwhile gets the same one, which the requests it is serving need alive.
    os.kill(sandbox.pid, signal.SIGSTOP)
    resume = threading.Timer(4.0, os.kill, (sandbox.pid, signal.SIGCONT))
    resume.start()
    try:
        again = ensure_sandbox(settings)
    finally:
        resume.join()
    assert (again.pid, again.base_url) == (sandbox.pid, sandbox.base_url)
    assert pid_alive(sandbox.pid)

    # Not answering past the patience window (shortened here): replaced.
    monkeypatch.setattr(devservices, "SANDBOX_HUNG_AFTER_S", 3.0)
    os.kill(sandbox.pid, signal.SIGSTOP)
    try:
        replaced = ensure_sandbox(settings)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(sandbox.pid, signal.SIGCONT)
    assert replaced.pid != sandbox.pid
    deadline = time.monotonic() + 10
    while pid_alive(sandbox.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(sandbox.pid)


def test_sandbox_that_dies_at_start_is_reported(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "broken.py"
    script.write_text("import sys\nprint('cannot bind: boom', file=sys.stderr)\nsys.exit(3)\n")
    monkeypatch.setattr(devservices, "SANDBOX_COMMAND", (sys.executable, str(script)))
    with pytest.raises(DevServiceError, match="exited with code 3") as error:
        ensure_sandbox(settings)
    assert "cannot bind: boom" in str(error.value)
    token = (settings.data_dir / "sandbox" / "token").read_text()
    assert token not in str(error.value)


@pytest.mark.skipif(not REAL_SANDBOX.exists(), reason="adpipes.dev.sandbox is not there yet")
def test_real_sandbox_from_concurrent_processes(settings: Settings) -> None:
    script = (
        "import json, sys\n"
        "from adpipes.dev.services import ensure_sandbox\n"
        "from adpipes.lib.settings import load_settings\n"
        "s = ensure_sandbox(load_settings())\n"
        "print(json.dumps({'pid': s.pid, 'url': s.base_url}))\n"
    )
    env = {**os.environ, "ADPIPES_DATA_DIR": str(settings.data_dir)}
    processes = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(3)
    ]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in processes]
    assert len({(r["pid"], r["url"]) for r in results}) == 1

    sandbox = ensure_sandbox(settings)
    assert sandbox.pid == results[0]["pid"]
    request = urllib.request.Request(
        sandbox.base_url + "/_sandbox/calls",
        headers={"Authorization": f"Bearer {sandbox.appsflyer_token}"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        assert response.status == 200
