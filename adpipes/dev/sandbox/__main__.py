"""Run the sandbox in the foreground: ``python -m adpipes.dev.sandbox --state-file S --token-file T``.

The AppsFlyer token is read from ``--token-file`` (never from argv, where ``ps`` shows it to every
user, and never printed); ``--airbridge-token-file`` optionally gives Airbridge its own token
(default: the same one). Once the socket listens, ``{"port": ..., "pid": ...}`` is written to
``--state-file`` atomically (temporary file + rename), so a process polling for it never reads a
half-written file. SIGTERM/SIGINT stop the server and remove the state file if it is still ours.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from pathlib import Path

from adpipes.dev.sandbox.server import SandboxServer

log = logging.getLogger("adpipes.sandbox")


def write_state(path: Path, state: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, path)


def _remove_state_if_ours(path: Path) -> None:
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m adpipes.dev.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0 = any free port)")
    parser.add_argument("--state-file", type=Path, required=True, help='where to write {"port", "pid"}')
    parser.add_argument("--token-file", type=Path, required=True, help="file holding the AppsFlyer token")
    parser.add_argument("--apps", default="", help="comma-separated app ids (default: the sandbox apps)")
    parser.add_argument("--airbridge-token-file", type=Path, default=None,
                        help="file holding the Airbridge token (default: the AppsFlyer token)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    token = args.token_file.read_text(encoding="utf-8").strip()
    if not token:
        parser.error(f"token file {args.token_file} is empty")
    apps = [a.strip() for a in args.apps.split(",") if a.strip()] or None
    airbridge_token = None
    if args.airbridge_token_file is not None:
        airbridge_token = args.airbridge_token_file.read_text(encoding="utf-8").strip()
        if not airbridge_token:
            parser.error(f"token file {args.airbridge_token_file} is empty")
    server = SandboxServer(host=args.host, port=args.port, appsflyer_token=token, apps=apps,
                           airbridge_token=airbridge_token)
    server.bind()

    def _stop(signum: int, frame: object) -> None:
        # shutdown() blocks until serve_forever returns, so it must run in another thread.
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    write_state(args.state_file, {"port": server.port, "pid": os.getpid(), "host": server.host})
    log.info("sandbox listening on %s (state in %s)", server.base_url, args.state_file)
    try:
        server.serve_forever()
    finally:
        _remove_state_if_ours(args.state_file)
        log.info("sandbox stopped")


if __name__ == "__main__":
    main()
