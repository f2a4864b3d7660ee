"""scripts/dev as a user runs it: one block saying where everything is, the UI, the seed beside it,
and no Dagster warning, DEBUG event or alembic line in the terminal (issue 14)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from adpipes.dev.services import stop_all
from adpipes.lib.settings import load_settings
from adpipes_tests.fixtures.postgres import make_test_dir

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str, token: str | None = None) -> int | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with opener.open(request, timeout=3) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def default_signals() -> None:
    # The runner may have started us with SIGINT ignored (children inherit it): Dagster must stop.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setsid()


@pytest.fixture
def data_dir():
    directory = make_test_dir("adpipes-test-devstart-")
    yield directory
    stop_all(load_settings({"ADPIPES_DATA_DIR": str(directory)}))
    shutil.rmtree(directory, ignore_errors=True)


def test_scripts_dev_prints_the_service_block_and_no_warning(data_dir):
    port = free_port()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("ADPIPES_", "APPSFLYER_", "AIRBRIDGE_", "DAGSTER_"))}
    # Its own data directory (PostgreSQL, sandbox, DAGSTER_HOME under it) and port; one seeded day.
    env.update(ADPIPES_DATA_DIR=str(data_dir), DAGSTER_PORT=str(port), ADPIPES_SEED_DAYS="1")
    process = subprocess.Popen([str(ROOT / "scripts" / "dev")], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=default_signals)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    ui = seeded = False
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None and not (ui and seeded):
            ui = ui or http_status(f"http://127.0.0.1:{port}/server_info") == 200
            seeded = any("adpipes dev seed: materialized" in line for line in list(lines))
            time.sleep(0.5)
        assert ui and seeded, "".join(lines)[-4000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        reader.join(timeout=10)
    output = "".join(lines)

    # One block, before Dagster's own output: the UI, both databases, the sandbox.
    block = output[output.index("adpipes dev (ADPIPES_ENV=dev)"):].split("\n\x1b", 1)[0]
    assert f"Dagster UI   http://127.0.0.1:{port}" in block
    product = re.search(r"product DB\s+(postgresql://\S+)", block).group(1)
    archive = re.search(r"archive DB\s+(postgresql://\S+)", block).group(1)
    for dsn, name in ((product, "product"), (archive, "archive")):
        with psycopg.connect(dsn) as conn:  # the printed DSN reaches the database it names
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
    with psycopg.connect(product) as conn:  # the seeded day landed there
        assert conn.execute("SELECT count(*) FROM appsflyer.daily_report").fetchone()[0] > 0
    sandbox = re.search(r"sandbox API\s+(http://127\.0\.0\.1:\d+)", block).group(1)
    token = (data_dir / "sandbox" / "token").read_text().strip()
    assert http_status(f"{sandbox}/_sandbox/calls", token) == 200
    assert token not in output  # the block names the token's file, never the token

    # Quiet: no Python warning (Dagster's beta/supersession labels), no DEBUG event of the seed's
    # run, no alembic INFO from creating the instance's storage.
    for noise in ("Warning", "DEBUG", "alembic"):
        assert noise not in output, f"{noise!r} in scripts/dev's output:\n{output[-4000:]}"
