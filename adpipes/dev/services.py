"""Dev-mode embedded services: a private PostgreSQL and the sandbox vendor APIs.

With ``ADPIPES_ENV=dev`` every Dagster process (webserver, daemon, each run's workers) needs the
same database and the same sandbox. Each service is started by whichever process asks first and
found again by the others through a state file under the project's data directory, guarded by an
``flock`` so two processes never start two copies. Services outlive the process that started them
(the sandbox in its own session, PostgreSQL daemonized by pg_ctl); ``stop_all()`` or
``python -m adpipes.dev.services down`` stops them.

Layout under ``settings.data_dir`` (``ADPIPES_DATA_DIR``, default ``<checkout>/.adpipes``)::

    postgres/            a PostgresCluster (see adpipes.dev.postgres_server), databases product + archive
    sandbox/state.json   {"port": ..., "pid": ...}, written by the sandbox once it listens
    sandbox/token        the sandbox's bearer token (mode 0600; never printed or logged)
    sandbox/sandbox.log  the sandbox's stdout/stderr
    sandbox/lock         the start/stop lock

Root and non-traversable directories: as root PostgreSQL runs as the unprivileged ``adpipes-pg``
user, which must be able to enter the data directory. When the *default* data directory is not
reachable by it (a checkout under ``/root``, mode 0700), the cluster goes to
``/var/tmp/adpipes-<hash of the data dir>/postgres`` instead (one per project, found again by
every process, and kept across reboots unlike ``/tmp``) and a warning says so. An explicitly set
``ADPIPES_DATA_DIR`` is never relocated: an unreachable one is an error that says what to change.

CLI: ``python -m adpipes.dev.services up|down|status`` prints the DSNs (trust authentication on
loopback: there is no password) and the sandbox URL, never the token; ``up`` prints the block
``scripts/dev`` shows (``service_block``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import adpipes
from adpipes.dev.postgres_server import (
    ClusterError,
    PostgresCluster,
    file_lock,
    pid_alive,
    server_user,
)
from adpipes.lib.settings import Settings, load_settings

log = logging.getLogger(__name__)

PRODUCT_DATABASE = "product"
ARCHIVE_DATABASE = "archive"

# The sandbox server (adpipes.dev.sandbox). A module constant so tests can substitute a stand-in.
SANDBOX_COMMAND: tuple[str, ...] = (sys.executable, "-m", "adpipes.dev.sandbox")
SANDBOX_PROBE_PATH = "/_sandbox/calls"
SANDBOX_START_TIMEOUT_S = 15.0
SANDBOX_STOP_TIMEOUT_S = 5.0
# How long a live sandbox that does not answer the probe is waited for before it is replaced as
# hung. Busy is not hung: generating a 300K-row raw report on a loaded 2-core machine kept it from
# answering the 2 s probe, and replacing it then broke the requests it was serving.
SANDBOX_HUNG_AFTER_S = 60.0
SANDBOX_HOST = "127.0.0.1"

# Where the cluster goes when root's server user cannot reach the default data directory.
ROOT_FALLBACK_PARENT = Path("/var/tmp")


class DevServiceError(Exception):
    """A dev service could not be started or found; the message says what to look at."""


@dataclass(frozen=True)
class DevPostgres:
    product_dsn: str
    archive_dsn: str
    cluster: PostgresCluster


@dataclass(frozen=True)
class DevSandbox:
    base_url: str
    # repr=False: these objects end up in logs and tracebacks; the token must not.
    appsflyer_token: str = field(repr=False)
    airbridge_token: str = field(repr=False)
    pid: int = 0


_memo_lock = threading.Lock()
_postgres_memo: dict[Path, DevPostgres] = {}


# --------------------------------------------------------------------------- PostgreSQL


def postgres_dir(settings: Settings | None = None) -> Path:
    """Where the dev cluster lives (see the module docstring for the root fallback)."""
    settings = settings or load_settings()
    directory = settings.data_dir / "postgres"
    if os.geteuid() != 0 or settings.is_set("ADPIPES_DATA_DIR"):
        return directory
    user = server_user()
    if user.can_traverse(directory) is None:
        return directory
    digest = hashlib.sha256(str(settings.data_dir).encode()).hexdigest()[:12]
    parent = ROOT_FALLBACK_PARENT if ROOT_FALLBACK_PARENT.is_dir() else Path(tempfile.gettempdir())
    fallback = parent / f"adpipes-{digest}" / "postgres"
    log.warning(
        "%s is not reachable by the PostgreSQL user %r (needed when running as root); using %s. "
        "Set ADPIPES_DATA_DIR to a directory every user can traverse to choose the location.",
        directory,
        user.name,
        fallback,
    )
    fallback.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    return fallback


def ensure_postgres(settings: Settings | None = None) -> DevPostgres:
    """Start (or find) the dev PostgreSQL with databases ``product`` and ``archive``; memoized."""
    directory = postgres_dir(settings)
    with _memo_lock:
        found = _postgres_memo.get(directory)
        if found is not None:
            return found
        cluster = PostgresCluster(directory)
        cluster.ensure_running()
        for name in (PRODUCT_DATABASE, ARCHIVE_DATABASE):
            cluster.create_database(name)
        found = DevPostgres(
            product_dsn=cluster.dsn(PRODUCT_DATABASE),
            archive_dsn=cluster.dsn(ARCHIVE_DATABASE),
            cluster=cluster,
        )
        _postgres_memo[directory] = found
        return found


def stop_postgres(settings: Settings | None = None) -> None:
    directory = postgres_dir(settings)
    with _memo_lock:
        _postgres_memo.pop(directory, None)
    if (directory / "pgdata").exists():
        PostgresCluster(directory).stop()


# --------------------------------------------------------------------------- sandbox


@dataclass(frozen=True)
class _SandboxPaths:
    directory: Path

    @property
    def state(self) -> Path:
        return self.directory / "state.json"

    @property
    def token(self) -> Path:
        return self.directory / "token"

    @property
    def log(self) -> Path:
        return self.directory / "sandbox.log"

    @property
    def lock(self) -> Path:
        return self.directory / "lock"


def _sandbox_paths(settings: Settings | None) -> _SandboxPaths:
    settings = settings or load_settings()
    return _SandboxPaths(settings.data_dir / "sandbox")


def _read_state(paths: _SandboxPaths) -> tuple[int, int] | None:
    try:
        data = json.loads(paths.state.read_text())
        return int(data["pid"]), int(data["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_token(paths: _SandboxPaths) -> str | None:
    try:
        return paths.token.read_text().strip() or None
    except OSError:
        return None


def _http_ok(port: int, token: str, timeout: float = 2) -> bool:
    request = urllib.request.Request(
        f"http://{SANDBOX_HOST}:{port}{SANDBOX_PROBE_PATH}",
        headers={"Authorization": f"Bearer {token}"},
    )
    # No proxies: an http_proxy variable would otherwise send a loopback probe to the proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _running_sandbox(paths: _SandboxPaths, probe_timeout: float = 2) -> DevSandbox | None:
    state = _read_state(paths)
    token = _read_token(paths)
    if state is None or token is None:
        return None
    pid, port = state
    if not pid_alive(pid) or not _http_ok(port, token, probe_timeout):
        return None
    return DevSandbox(
        base_url=f"http://{SANDBOX_HOST}:{port}",
        appsflyer_token=token,
        airbridge_token=token,
        pid=pid,
    )


def _is_our_sandbox(pid: int, paths: _SandboxPaths) -> bool:
    """Guard against pid reuse: only signal a process started with this state file."""
    try:
        return str(paths.state).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc (macOS): the state file is our best knowledge


def _terminate(pid: int, timeout: float = SANDBOX_STOP_TIMEOUT_S) -> None:
    # The sandbox leads its own session (start_new_session), so signal its whole process group.
    try:
        target_group = os.getpgid(pid) == pid
    except ProcessLookupError:
        return
    kill = os.killpg if target_group else os.kill
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def _write_token(paths: _SandboxPaths) -> str:
    token = secrets.token_hex(24)
    tmp = paths.token.with_name(f".token.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    # Created 0600 from the start (not chmod-ed afterwards), so no window where others can read it.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    os.replace(tmp, paths.token)
    return token


def _log_tail(paths: _SandboxPaths, secret: str, lines: int = 20) -> str:
    try:
        text = paths.log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.replace(secret, "<token>").splitlines()[-lines:])


def _busy_sandbox(paths: _SandboxPaths, pid: int) -> DevSandbox | None:
    """The live sandbox ``pid`` once it answers within :data:`SANDBOX_HUNG_AFTER_S`, or None."""
    deadline = time.monotonic() + SANDBOX_HUNG_AFTER_S
    while pid_alive(pid) and time.monotonic() < deadline:
        state = _read_state(paths)
        if state is None or state[0] != pid:
            return None
        found = _running_sandbox(paths, probe_timeout=max(0.1, min(10.0, deadline - time.monotonic())))
        if found is not None:
            return found
        time.sleep(0.2)
    return None


def _start_sandbox(paths: _SandboxPaths) -> DevSandbox:
    stale = _read_state(paths)
    if stale is not None and pid_alive(stale[0]) and _is_our_sandbox(stale[0], paths):
        busy = _busy_sandbox(paths, stale[0])
        if busy is not None:
            return busy
        _terminate(stale[0])  # alive but not answering for a minute: hung, replace it
    paths.state.unlink(missing_ok=True)
    token = _write_token(paths)

    env = dict(os.environ)
    # Make adpipes importable by the child even when it is not installed (a bare checkout).
    package_root = str(Path(adpipes.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    command = [
        *SANDBOX_COMMAND,
        "--port", "0",
        "--state-file", str(paths.state),
        "--token-file", str(paths.token),
    ]
    with open(paths.log, "ab") as log_handle:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            cwd=str(paths.directory),
            env=env,
            # Its own session: a Ctrl-C in `dagster dev` or the end of a run worker must not
            # take down the sandbox other processes are using.
            start_new_session=True,
        )
    deadline = time.monotonic() + SANDBOX_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DevServiceError(
                f"the sandbox API exited with code {process.returncode} while starting. "
                f"Last lines of {paths.log}:\n{_log_tail(paths, token)}"
            )
        found = _running_sandbox(paths)
        if found is not None:
            return found
        time.sleep(0.05)
    _terminate(process.pid)
    raise DevServiceError(
        f"the sandbox API did not answer within {SANDBOX_START_TIMEOUT_S:.0f}s. "
        f"Last lines of {paths.log}:\n{_log_tail(paths, token)}"
    )


def ensure_sandbox(settings: Settings | None = None) -> DevSandbox:
    """Find the running sandbox API, or start it; its URL and token are returned, never logged."""
    paths = _sandbox_paths(settings)
    found = _running_sandbox(paths)  # fast path, no lock
    if found is not None:
        return found
    paths.directory.mkdir(parents=True, exist_ok=True)
    try:
        with file_lock(paths.lock, timeout=SANDBOX_START_TIMEOUT_S * 3, what="starting the sandbox"):
            found = _running_sandbox(paths)
            if found is not None:
                return found
            return _start_sandbox(paths)
    except ClusterError as exc:  # a lock timeout
        raise DevServiceError(str(exc)) from None


def sandbox_status(settings: Settings | None = None) -> DevSandbox | None:
    """The running sandbox, or None; never starts one."""
    return _running_sandbox(_sandbox_paths(settings))


def stop_sandbox(settings: Settings | None = None) -> None:
    paths = _sandbox_paths(settings)
    if not paths.directory.exists():
        return
    with file_lock(paths.lock, what="stopping the sandbox"):
        state = _read_state(paths)
        if state is not None and pid_alive(state[0]) and _is_our_sandbox(state[0], paths):
            _terminate(state[0])
        paths.state.unlink(missing_ok=True)


# --------------------------------------------------------------------------- both


def stop_all(settings: Settings | None = None) -> None:
    """Stop the sandbox and the dev PostgreSQL (data is kept)."""
    settings = settings or load_settings()
    stop_sandbox(settings)
    stop_postgres(settings)


def _print_status(settings: Settings) -> bool:
    directory = postgres_dir(settings)
    cluster = PostgresCluster(directory)
    running = True
    if (directory / "pgdata").exists() and cluster.is_running():
        print(f"postgres: running in {directory}")
        print(f"  ADPIPES_PRODUCT_DSN={cluster.dsn(PRODUCT_DATABASE)}")
        print(f"  ADPIPES_ARCHIVE_DSN={cluster.dsn(ARCHIVE_DATABASE)}")
    else:
        print(f"postgres: not running ({directory})")
        running = False
    sandbox = sandbox_status(settings)
    if sandbox is not None:
        print(f"sandbox:  running at {sandbox.base_url} (pid {sandbox.pid}); "
              f"token in {_sandbox_paths(settings).token}")
    else:
        print("sandbox:  not running")
        running = False
    return running


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is inside it (shorter to read and copy)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def service_block(settings: Settings, ui_url: str | None = None, seed: str | None = None) -> str:
    """The one block ``scripts/dev`` prints: where the UI, both databases and the sandbox are.

    Starts (or finds) PostgreSQL and the sandbox. DSNs carry no password (trust authentication,
    loopback only); the sandbox's token is named by its file, never printed.
    """
    postgres = ensure_postgres(settings)
    sandbox = ensure_sandbox(settings)
    rows = []
    if ui_url:
        rows.append(("Dagster UI", f"{ui_url}  (ready when dagster-webserver says 'Serving')"))
    rows += [
        ("product DB", f"{postgres.product_dsn}  (ADPIPES_PRODUCT_DSN)"),
        ("archive DB", f"{postgres.archive_dsn}  (ADPIPES_ARCHIVE_DSN)"),
        ("sandbox API", f"{sandbox.base_url}  (AppsFlyer + Airbridge; token in "
                        f"{_shown(_sandbox_paths(settings).token)})"),
        ("data", _shown(settings.data_dir)),
    ]
    if seed:
        rows.append(("seed", seed))
    rows.append(("stop", "Ctrl-C stops Dagster; `.venv/bin/python -m adpipes.dev.services down` "
                         "stops PostgreSQL and the sandbox (data kept)"))
    width = max(len(name) for name, _ in rows)
    lines = ["adpipes dev (ADPIPES_ENV=dev): sandbox vendor APIs, embedded PostgreSQL"]
    lines += [f"  {name.ljust(width)}  {value}" for name, value in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adpipes.dev.services",
        description="Start, stop or show the dev-mode PostgreSQL and sandbox APIs.",
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--ui-url", help="up: the Dagster UI's URL, shown in the block")
    parser.add_argument("--seed", help="up: what the dev seed does, shown in the block")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    settings = load_settings()
    try:
        if args.command == "up":
            print(service_block(settings, args.ui_url, args.seed), flush=True)
        elif args.command == "down":
            stop_all(settings)
            print("stopped postgres and sandbox (data kept)")
        else:
            return 0 if _print_status(settings) else 3
    except (ClusterError, DevServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
