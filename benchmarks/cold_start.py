"""Cold start: seconds from `./scripts/dev` on a fresh clone to the Dagster UI answering.

    python3 benchmarks/cold_start.py [--repo PATH] [--keep]

Clones the repository (``--repo``, default: this checkout's committed HEAD) into a temporary
directory and runs its ``scripts/dev`` with nothing to reuse: no .venv, empty pip and uv caches
(every package is downloaded again), its own data directory (a new PostgreSQL cluster and
sandbox) and DAGSTER_HOME, and a free port, so it shares nothing with a dev instance already
running. Prints when the service block appears, when the UI answers ``/server_info`` (the
figure), and when the background seed reports its end; then stops Dagster, PostgreSQL and the
sandbox and removes the clone (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UI_TIMEOUT_S = 600
SEED_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ui_answers(port: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _default_signals() -> None:
    # A shell or CI runner may have started us with SIGINT/SIGTERM ignored, which children inherit;
    # Dagster must be stoppable by them. Its own session: the whole tree is signalled at the end.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setsid()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=str(ROOT), help="repository to clone (default: this checkout)")
    parser.add_argument("--keep", action="store_true", help="keep the clone and its data directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="adpipes-cold-"))
    work.chmod(0o755)  # as root, PostgreSQL runs as an unprivileged user that must enter it
    clone = work / "adpipes"
    subprocess.run(["git", "clone", "--quiet", args.repo, str(clone)], check=True)
    port = free_port()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("ADPIPES_", "APPSFLYER_", "AIRBRIDGE_", "DAGSTER_", "VIRTUAL_ENV"))}
    env.update(
        DAGSTER_PORT=str(port),
        # Nothing cached: every package is downloaded and built as on a new machine.
        PIP_NO_CACHE_DIR="1",
        UV_CACHE_DIR=str(work / "uv-cache"),
    )
    output = work / "dev.log"
    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    with open(output, "w") as log:
        process = subprocess.Popen(["./scripts/dev"], cwd=clone, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   preexec_fn=_default_signals)

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append((time.monotonic() - started, line))
                log.write(line)
                log.flush()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        def seen(fragment: str) -> float | None:
            return next((at for at, line in list(lines) if fragment in line), None)

        ui_at = None
        try:
            while time.monotonic() - started < UI_TIMEOUT_S and process.poll() is None:
                if ui_answers(port):
                    ui_at = time.monotonic() - started
                    break
                time.sleep(0.25)
            seed_end = None
            if ui_at is not None:
                while time.monotonic() - started < ui_at + SEED_TIMEOUT_S and process.poll() is None:
                    # Its last line: "materialized N new partition(s)", or what failed.
                    seed_end = next((at for at, line in list(lines) if "adpipes dev seed: " in line
                                     and "dev seed: materializing" not in line), None)
                    if seed_end is not None:
                        break
                    time.sleep(0.5)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            reader.join(timeout=5)
            venv_python = clone / ".venv" / "bin" / "python"
            if venv_python.exists():
                subprocess.run([str(venv_python), "-m", "adpipes.dev.services", "down"], cwd=clone, env=env,
                               capture_output=True, timeout=120)

    block_at = seen("adpipes dev (ADPIPES_ENV=dev)")
    warnings = [line.rstrip() for _, line in lines if "Warning" in line]
    print(f"clone:            {clone}  (log: {output})")
    print(f"service block at: {block_at:.1f} s" if block_at is not None else "service block: not seen")
    if ui_at is None:
        print(f"UI:               did not answer within {UI_TIMEOUT_S} s (see {output})")
    else:
        print(f"UI answered at:   {ui_at:.1f} s  <- cold start to UI")
    print(f"seed finished at: {seed_end:.1f} s" if ui_at is not None and seed_end is not None
          else "seed:             did not finish while measured")
    print(f"warning lines:    {len(warnings)}")
    for line in warnings[:5]:
        print(f"  {line[:200]}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ui_at is not None else 1


if __name__ == "__main__":
    sys.exit(main())
