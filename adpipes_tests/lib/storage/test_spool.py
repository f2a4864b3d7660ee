"""Spool directories of killed runs are swept, and TMPDIR's space is checked and named."""

import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from adpipes.lib.storage.delivered import (
    OWNER_FILE,
    DeliveredFiles,
    SpoolSpaceError,
    make_spool_directory,
    require_spool_space,
    sweep_abandoned_spools,
)


def spool_of_a_dead_process(root: Path) -> Path:
    """A spool directory made by a process that then died without cleaning up (as SIGKILL does)."""
    code = (
        "import os, tempfile; from adpipes.lib.storage.delivered import make_spool_directory; "
        "d = make_spool_directory('adpipes-test-'); open(os.path.join(d, 'day.csv'), 'w').write('x' * 5000); "
        "print(d); os._exit(0)"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TMPDIR": str(root)},
                         capture_output=True, text=True, check=True).stdout.strip()
    return Path(out)


def test_spools_of_dead_processes_are_removed_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = spool_of_a_dead_process(tmp_path)
    # A pid that now belongs to another process (this one) but started at another time: reused.
    reused = tmp_path / "adpipes-reused-1"
    reused.mkdir()
    (reused / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "started": "1"}))
    unmarked = tmp_path / "adpipes-test-pg-cluster"  # e.g. a test cluster: not a spool
    unmarked.mkdir()
    other = tmp_path / "someone-else"
    other.mkdir()
    live = make_spool_directory("adpipes-live-")
    assert not dead.exists() and not reused.exists()  # swept by the make_spool_directory above
    assert live.exists() and unmarked.exists() and other.exists()
    assert sweep_abandoned_spools(tmp_path) == []  # a live owner's directory stays
    files = DeliveredFiles(prefix="adpipes-delivered-")
    assert files.directory.parent == tmp_path and (files.directory / OWNER_FILE).exists()


def test_sweep_reports_what_it_removed(tmp_path):
    dead = spool_of_a_dead_process(tmp_path)
    (removed,) = sweep_abandoned_spools(tmp_path)
    assert removed[0] == dead and removed[1] >= 5000 and not dead.exists()


def test_too_little_space_is_refused_naming_tmpdir(tmp_path):
    free = __import__("shutil").disk_usage(tmp_path).free
    with pytest.raises(SpoolSpaceError) as caught:
        require_spool_space(free + 10**9, "appsflyer/android_in_app_events 2026-11-01..2026-11-30", root=tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message and "Nothing was called" in message and "TMPDIR" in message
    require_spool_space(1, "a small day", root=tmp_path)


def test_a_disk_filling_up_mid_download_names_tmpdir(clean_sandbox):
    """A 1 MB tmpfs as the spool's disk: the download fills it; the error names TMPDIR, not Errno 28."""
    from adpipes.appsflyer.raw_data_api import AppsFlyerRawDataApi
    from adpipes.lib.partitions import day_window
    from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID
    from adpipes_tests.fixtures.sandbox import appsflyer_client_settings

    mount = Path(tempfile.mkdtemp(prefix="adpipes-test-tmpfs-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    try:
        spool = mount / "adpipes-appsflyer-x"
        spool.mkdir()
        clean_sandbox.configure(rows_per_day={f"{SANDBOX_ANDROID_APP_ID}|in_app_events_report": 3000})
        day = (dt.date.today() - dt.timedelta(days=2)).isoformat()
        start, end = day_window(day, "Asia/Seoul")
        api = AppsFlyerRawDataApi(**appsflyer_client_settings(clean_sandbox))
        with pytest.raises(SpoolSpaceError) as caught:
            api.fetch_raw_report(SANDBOX_ANDROID_APP_ID, "in_app_events_report", start, end, directory=spool)
        assert f"TMPDIR ({mount})" in str(caught.value) and "Errno" not in str(caught.value)
        assert list(spool.iterdir()) == []  # the partial file is gone
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()


def test_the_expected_space_follows_the_largest_archived_day(archive_dsn):
    import psycopg

    from adpipes.lib.storage.delivered import expected_spool_bytes

    with psycopg.connect(archive_dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS spool_test CASCADE")
        conn.execute("CREATE SCHEMA spool_test")
        conn.execute("CREATE TABLE spool_test.raw (report_date date, v text) PARTITION BY RANGE (report_date)")
        assert expected_spool_bytes(conn, "spool_test.raw", 3) == 0  # nothing archived: nothing to go by
        conn.execute("CREATE TABLE spool_test.raw_p20261120 PARTITION OF spool_test.raw "
                     "FOR VALUES FROM ('2026-11-20') TO ('2026-11-21')")
        conn.execute("INSERT INTO spool_test.raw SELECT '2026-11-20', repeat('x', 200) FROM generate_series(1, 20000)")
        (day_bytes,) = conn.execute("SELECT pg_table_size('spool_test.raw_p20261120')").fetchone()
        assert day_bytes > 4_000_000
        assert expected_spool_bytes(conn, "spool_test.raw", 3) == 6 * day_bytes
        conn.execute("DROP SCHEMA spool_test CASCADE")


def test_a_raw_report_refuses_before_its_call_when_tmpdir_cannot_hold_the_range(
        clean_sandbox, storage_resources, monkeypatch):
    import dagster as dg

    from adpipes.appsflyer.raw_data_api import AppsFlyerRawDataApi
    from adpipes.appsflyer.resources import AppsFlyerApps
    from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID
    from adpipes_tests.appsflyer.test_assets import android_events_asset, step_failure_message
    from adpipes_tests.fixtures.sandbox import appsflyer_client_settings

    clean_sandbox.configure(rows_per_day={f"{SANDBOX_ANDROID_APP_ID}|in_app_events_report": 3000})
    resources = {
        **storage_resources,
        "appsflyer_raw_data_api": AppsFlyerRawDataApi(**appsflyer_client_settings(clean_sandbox)),
        "appsflyer_apps": AppsFlyerApps(android_app_id=SANDBOX_ANDROID_APP_ID, ios_app_id=SANDBOX_IOS_APP_ID,
                                        currency="KRW"),
    }
    day = (dt.date.today() - dt.timedelta(days=3)).isoformat()
    assert dg.materialize([android_events_asset()], resources=resources, partition_key=day).success
    calls_before = len(clean_sandbox.calls())
    mount = Path(tempfile.mkdtemp(prefix="adpipes-test-tmpfs-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        mount.rmdir()
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(mount))
        result = dg.materialize([android_events_asset()], resources=resources, partition_key=day,
                                raise_on_error=False)
    finally:
        monkeypatch.undo()
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()
    assert not result.success
    message = step_failure_message(result)
    assert f"TMPDIR ({mount})" in message and "Nothing was called" in message and day in message
    assert len(clean_sandbox.calls()) == calls_before  # the vendor was not called


def _owned(root: Path, name: str, owner: dict) -> Path:
    directory = root / name
    directory.mkdir()
    (directory / OWNER_FILE).write_text(json.dumps(owner))
    return directory


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process states are read from /proc (Linux)")
def test_an_exited_but_unreaped_owner_and_an_impossible_pid_count_as_gone(tmp_path):
    from adpipes.lib.storage.delivered import _process_start

    # A child that exited and was not waited for is a zombie: its pid still answers kill(0).
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = _process_start(child.pid)
    for _ in range(200):
        if Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        __import__("time").sleep(0.05)
    zombie = _owned(tmp_path, "adpipes-zombie-1", {"pid": child.pid, "started": started})
    no_pid = _owned(tmp_path, "adpipes-nopid-1", {})
    negative = _owned(tmp_path, "adpipes-negative-1", {"pid": -1})
    # A live owner recorded before start times were (no "started"), and one with its own start.
    legacy = _owned(tmp_path, "adpipes-legacy-1", {"pid": os.getpid()})
    current = _owned(tmp_path, "adpipes-current-1", {"pid": os.getpid(), "started": _process_start(os.getpid())})
    # Owner files this code did not write (valid JSON, not its object) are left alone.
    foreign = [_owned(tmp_path, f"adpipes-foreign-{i}", value) for i, value in enumerate([None, [1], "x", 7])]
    removed = {path for path, _ in sweep_abandoned_spools(tmp_path)}
    child.wait()
    assert removed == {zombie, no_pid, negative}
    assert legacy.exists() and current.exists() and all(f.exists() for f in foreign)


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (0, "0 bytes"), (999, "999 bytes"), (1_000, "1 KB"), (64_000, "64 KB"), (999_499, "999 KB"),
        (1_200_000, "1.2 MB"), (9_950_000, "9.9 MB"), (10_000_000, "10 MB"), (340_000_000, "340 MB"), (1_200_000_000, "1.2 GB"),
        (25_000_000_000, "25 GB"), (3_400_000_000_000, "3.4 TB"), (5_000_000_000_000_000, "5,000 TB"),
    ],
)
def test_sizes_in_messages_read_at_a_glance(count, shown):
    # Decimal units (1 KB = 1,000 bytes, as disk sizes are sold and `df -H` shows them); one
    # decimal below 10 of a unit from MB up, whole numbers otherwise.
    from adpipes.lib.storage.delivered import human_bytes

    assert human_bytes(count) == shown


def test_the_space_refusal_names_both_sizes(tmp_path):
    from adpipes.lib.storage.delivered import human_bytes

    free = __import__("shutil").disk_usage(tmp_path).free
    with pytest.raises(SpoolSpaceError) as caught:
        require_spool_space(free + 2 * 10**12, "a 31-day backfill", root=tmp_path)
    message = str(caught.value)
    assert message.startswith(f"a 31-day backfill needs about {human_bytes(free + 2 * 10**12)} of temporary space")
    assert re.search(r" but TMPDIR \(.+\) has \d[\d,.]* (bytes|KB|MB|GB|TB) free\. Nothing was called\.", message), message


def proc5_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat split as proc(5) describes it: the command name (field 2) is in
    parentheses and may itself hold ``)`` and spaces, so it ends at the *last* ``)``. Returned
    with the pid and the name left out: [0] is field 3 (state), [19] field 22 (starttime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2:].split(" ")


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process states are read from /proc (Linux)")


@needs_proc
def test_a_spool_records_its_owner_pid_and_start_time():
    directory = make_spool_directory("adpipes-owner-")
    try:
        owner = json.loads((directory / OWNER_FILE).read_text())
        assert owner == {"pid": os.getpid(), "started": proc5_fields(os.getpid())[19]}
    finally:
        __import__("shutil").rmtree(directory)


@needs_proc
def test_the_start_time_of_a_process_that_is_gone_is_unknown():
    from adpipes.lib.storage.delivered import _process_start

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its /proc entry is gone
    assert _process_start(child.pid) is None
    assert _process_start(os.getpid()) == proc5_fields(os.getpid())[19]


# A command name with ")" and spaces in it (15 bytes at most: the kernel's TASK_COMM_LEN).
ODD_NAME = b"svc) (w) q"


@needs_proc
def test_a_live_owner_whose_name_holds_parentheses_keeps_its_spool(tmp_path):
    code = ("import ctypes, sys, time; ctypes.CDLL(None).prctl(15, %r, 0, 0, 0); "
            "print('ready', flush=True); time.sleep(60)" % ODD_NAME)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert Path(f"/proc/{child.pid}/comm").read_text().strip() == ODD_NAME.decode()
        owned = _owned(tmp_path, "adpipes-odd-1", {"pid": child.pid, "started": proc5_fields(child.pid)[19]})
        assert sweep_abandoned_spools(tmp_path) == []
        assert owned.exists()
    finally:
        child.kill()
        child.wait()
    # Once the owner is gone its spool is removed.
    assert [path for path, _ in sweep_abandoned_spools(tmp_path)] == [owned]


def test_the_sweep_does_not_signal_a_live_owner(tmp_path):
    # kill(pid, 0) only asks whether the process exists; any other signal would hit the owner.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owned = _owned(tmp_path, "adpipes-live-1", {"pid": child.pid})
        assert sweep_abandoned_spools(tmp_path) == []
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=1)  # still running
        assert owned.exists()
    finally:
        child.kill()
        child.wait()


def test_pid_1_and_this_process_are_live_owners(tmp_path):
    # In a container the process that spools can be pid 1. The sweep runs in a pid namespace of
    # its own (as a container's processes do), where pid 1 is the sweeping process itself: never
    # the machine's init, which this test must not touch.
    # This process's own spool is kept too, swept here in the test's process (in a root of its
    # own, without pid 1's: this process must not check the machine's init), so that mutmut, which
    # maps a test to the functions it calls in its own process, runs this test for the owner check
    # (mutmut maps only tests new to it: hence this test's name, new after the change).
    from adpipes.lib.storage.delivered import _process_start

    (tmp_path / "self").mkdir()
    mine = _owned(tmp_path / "self", "adpipes-self-1", {"pid": os.getpid(), "started": _process_start(os.getpid())})
    assert sweep_abandoned_spools(tmp_path / "self") == [] and mine.exists()
    owned = _owned(tmp_path, "adpipes-init-1", {"pid": 1})
    code = ("import os, sys; from adpipes.lib.storage.delivered import sweep_abandoned_spools as s; "
            f"print(os.getpid(), len(s({str(tmp_path)!r})))")
    run = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
                         capture_output=True, text=True, env=os.environ)
    if run.returncode and "unshare" in run.stderr:
        pytest.skip(f"a pid namespace needs root (CI runs as root): {run.stderr.strip()}")
    assert run.stdout.split() == ["1", "0"], run.stderr
    assert owned.exists()


def test_directories_without_a_readable_owner_do_not_stop_the_sweep(tmp_path):
    # Enough of each that, whatever order the directory listing has, some dead owner's spool
    # comes after a directory without a usable owner file.
    started = proc5_fields(os.getpid())[19] if Path("/proc/self/stat").exists() else None
    unmarked = [tmp_path / f"adpipes-unmarked-{i}" for i in range(8)]
    for directory in unmarked:
        directory.mkdir()
    garbled = [_owned(tmp_path, f"adpipes-garbled-{i}", {}) for i in range(8)]
    for directory in garbled:
        (directory / OWNER_FILE).write_text("{not json")
    # This pid with another start time: a reused pid, the owner is gone.
    dead = {_owned(tmp_path, f"adpipes-dead-{i}", {"pid": os.getpid(), "started": f"{started}0"})
            for i in range(8)}
    assert {path for path, _ in sweep_abandoned_spools(tmp_path)} == dead
    assert all(d.exists() for d in unmarked + garbled)


def test_a_swept_spool_is_logged_with_its_owner(tmp_path, caplog):
    dead = spool_of_a_dead_process(tmp_path)
    owner_pid = json.loads((dead / OWNER_FILE).read_text())["pid"]
    with caplog.at_level("WARNING", logger="adpipes.storage"):
        assert [path for path, _ in sweep_abandoned_spools(tmp_path)] == [dead]
    (record,) = [r for r in caplog.records if r.name == "adpipes.storage"]
    assert str(dead) in record.getMessage() and f"process {owner_pid} " in record.getMessage()


def _mount_tmpfs(mount: Path, size: str = "1m") -> None:
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                      capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")


def test_a_spool_that_cannot_be_removed_is_left_without_failing_the_sweep(tmp_path):
    # A dead owner's spool holding a mount point: rmdir fails (EBUSY). The sweep runs before every
    # spooling step, so it must go on (and report nothing removed) rather than fail the step.
    dead = spool_of_a_dead_process(tmp_path)
    busy = dead / "mounted"
    busy.mkdir()
    _mount_tmpfs(busy)
    try:
        assert sweep_abandoned_spools(tmp_path) == []
        assert dead.exists()
    finally:
        subprocess.run(["umount", str(busy)], check=False)


def test_exactly_enough_space_is_enough(tmp_path):
    # "Refuse when TMPDIR has less free space than needed": a private tmpfs, whose free space no
    # other process changes, holding exactly the space needed passes; one byte more is refused.
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    _mount_tmpfs(mount)
    try:
        free = __import__("shutil").disk_usage(mount).free
        require_spool_space(free, "a day", root=mount)
        with pytest.raises(SpoolSpaceError):
            require_spool_space(free + 1, "a day", root=mount)
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_spool_prefix_must_start_with_adpipes(tmp_path):
    # Only adpipes-* directories are ever swept, so a spool must be named so.
    with pytest.raises(ValueError, match=r"named adpipes-\*, got prefix 'spool-'"):
        make_spool_directory("spool-")
