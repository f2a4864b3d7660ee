"""The sandbox HTTP server: a route table, shared fault/config/call-log state and a control API.

Vendor protocols (``adpipes.dev.sandbox.appsflyer``; Airbridge and the aggregate/cohort endpoints
later) register ``(method, regex, handler)`` routes on a :class:`SandboxServer`. Handlers are plain
functions ``handler(server, request) -> Response`` so a new vendor is one module with a
``register(server)`` function; the server itself knows nothing about any vendor.

The server binds loopback addresses only: it holds a bearer token and serves a control API
without authentication, so it must never be reachable from another machine.
"""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger("adpipes.sandbox")

CONTROL_PREFIX = "/_sandbox/"
FAULT_KINDS = (
    "429",
    "500",
    "503",
    "empty_200",
    "quota",
    "quota_403",
    "token_revoked",
    "slow",
    # A 200 that is not the report: an HTML maintenance page, a plain-text notice, or (raw reports
    # only) CSV with a row that does not parse.
    "html_200",
    "text_200",
    "malformed_csv",
    # Airbridge revenue report: the async task ends FAILURE / CANCELED, or never finishes.
    "task_failure",
    "task_canceled",
    "task_stuck",
)
_LOOPBACK_NAMES = ("localhost",)


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: Mapping[str, str]
    body: bytes
    match: re.Match[str]
    client_host: str

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8") or "{}")


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    # What the call log records for vendor API calls (None for control calls: not logged).
    call: dict[str, Any] | None = None
    # Seconds to wait before answering ("slow" fault: lets tests exercise client timeouts).
    delay: float = 0.0

    @classmethod
    def json_body(cls, status: int, payload: Any, **kwargs: Any) -> Response:
        return cls(status, json.dumps(payload).encode("utf-8"), "application/json", **kwargs)

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain", **kwargs: Any) -> Response:
        return cls(status, text.encode("utf-8"), content_type, **kwargs)


Handler = Callable[["SandboxServer", Request], Response]


@dataclass
class Fault:
    kind: str
    app_id: str | None = None
    report: str | None = None
    times: int = 1
    retry_after: float | None = None
    seconds: float = 2.0

    def matches(self, app_id: str | None, report: str | None) -> bool:
        return (self.app_id is None or self.app_id == app_id) and (
            self.report is None or self.report == report
        )


def _instant(value: Any) -> dt.datetime:
    """An instant from ``configure(now=...)``: an aware datetime or ISO 8601 text with an offset."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"now must be an ISO 8601 instant like 2026-11-30T03:00:00+00:00, not {value!r}") from None
    if not isinstance(value, dt.datetime):
        raise TypeError(f"now must be an ISO 8601 instant (text) or None, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"now must carry its UTC offset (e.g. +00:00): {value.isoformat()} is ambiguous")
    return value


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _ThreadingServer(ThreadingHTTPServer):
    daemon_threads = True
    # Tests restart sandboxes quickly on fixed ports; do not wait for TIME_WAIT.
    allow_reuse_address = True


class SandboxServer:
    """Deterministic vendor APIs over real HTTP on 127.0.0.1, with fault injection.

    ``start()`` serves in a daemon thread; ``reset()``, ``add_faults()``, ``configure()`` and
    ``calls()`` mirror the ``/_sandbox/`` control API for in-process use (tests).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        appsflyer_token: str,
        apps: Iterable[str] | None = None,
        airbridge_token: str | None = None,
    ) -> None:
        if not _is_loopback(host):
            raise ValueError(
                f"the sandbox only binds loopback addresses (127.0.0.1), not {host!r}: it serves "
                "an unauthenticated control API"
            )
        if not appsflyer_token:
            raise ValueError("appsflyer_token must be a non-empty string")
        from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID

        self.host = host
        self._requested_port = port
        self.appsflyer_token = appsflyer_token
        self.airbridge_token = airbridge_token or appsflyer_token
        self.default_apps: list[str] = list(apps) if apps else [SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID]
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.lock = threading.RLock()
        self._faults: list[Fault] = []
        self._calls: list[dict[str, Any]] = []
        self.config: dict[str, Any] = {}
        self.generation = 0
        self._httpd: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None
        self.reset()
        self._register_control_routes()
        from adpipes.dev.sandbox import appsflyer

        appsflyer.register(self)
        from adpipes.dev.sandbox import airbridge

        airbridge.register(self)

    # -- lifecycle -------------------------------------------------------------------------------

    def bind(self) -> None:
        """Bind the listening socket (``port=0`` picks a free port); idempotent."""
        if self._httpd is None:
            self._httpd = _ThreadingServer((self.host, self._requested_port), _make_handler(self))

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the sandbox is not bound yet: call start() or bind()")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SandboxServer:
        self.bind()
        assert self._httpd is not None
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="adpipes-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``stop()`` is called from another thread."""
        self.bind()
        assert self._httpd is not None
        self._httpd.serve_forever()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        # Never show the token.
        where = self.base_url if self._httpd is not None else "not started"
        return f"SandboxServer({where})"

    # -- routes ----------------------------------------------------------------------------------

    def add_route(self, method: str, pattern: str, handler: Handler) -> None:
        """Register a handler; the first route whose method and full-path regex match wins."""
        self.routes.append((method.upper(), re.compile(pattern), handler))

    def dispatch(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes,
                 client_host: str) -> Response:
        split = urlsplit(raw_path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        path_matched = False
        for route_method, pattern, handler in self.routes:
            match = pattern.fullmatch(split.path)
            if match is None:
                continue
            path_matched = True
            if route_method != method:
                continue
            request = Request(method, split.path, params, headers, body, match, client_host)
            try:
                return handler(self, request)
            except Exception as exc:  # a sandbox bug must answer 500, not hang the client
                log.exception("sandbox handler failed for %s %s", method, split.path)
                return Response.json_body(500, {"message": f"sandbox error: {type(exc).__name__}"})
        if path_matched:
            return Response.json_body(405, {"message": "method not allowed"})
        return Response.text(404, "<html><body><h1>404 Not Found</h1></body></html>", "text/html")

    # -- state: faults, config, call log ---------------------------------------------------------

    def reset(self) -> None:
        """Clear faults, the call log and every configuration override."""
        with self.lock:
            # Requests still in flight (e.g. a "slow" answer a client gave up on) belong to the
            # previous generation and must not appear in the new call log.
            self.generation += 1
            self._faults = []
            self._calls = []
            self.config = {
                "apps": list(self.default_apps),
                "rows_per_day": {},
                "truncate_at": None,
                "extra_columns": [],
                "drop_columns": [],
                "row_overrides": [],
                # The AppsFlyer raw-data clock (ISO 8601 with offset; None: real time), see configure().
                "now": None,
                # AppsFlyer aggregate endpoint (adpipes.dev.sandbox.appsflyer_aggregate; the Cohort
                # API lives in appsflyer_cohort and keeps its own settings under "cohort"):
                # extra vendor columns in daily_report, and the 1 call/minute rule for <= 2-day
                # aggregate ranges (seconds between allowed calls; None = not enforced).
                "aggregate_extra_columns": [],
                "aggregate_drop_columns": [],
                "aggregate_minute_quota": None,
            }

    def add_faults(self, faults: Iterable[Mapping[str, Any]] | None = None, **one: Any) -> None:
        """Append faults; each matching API request consumes one ``times``.

        ``add_faults([{"kind": "429", "retry_after": 1}])`` or ``add_faults(kind="503", times=2)``.
        """
        specs = list(faults or []) + ([one] if one else [])
        parsed = []
        for spec in specs:
            kind = str(spec.get("kind", ""))
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
            times = int(spec.get("times", 1))
            if times < 1:
                raise ValueError("fault 'times' must be >= 1")
            retry_after = spec.get("retry_after")
            parsed.append(
                Fault(
                    kind=kind,
                    app_id=spec.get("app_id"),
                    report=spec.get("report"),
                    times=times,
                    retry_after=None if retry_after is None else float(retry_after),
                    seconds=float(spec.get("seconds", 2.0)),
                )
            )
        with self.lock:
            self._faults.extend(parsed)

    def take_fault(self, app_id: str | None, report: str | None) -> Fault | None:
        """Consume one use of the first pending fault matching this request, if any."""
        with self.lock:
            for fault in self._faults:
                if fault.times > 0 and fault.matches(app_id, report):
                    fault.times -= 1
                    taken = copy.copy(fault)
                    self._faults = [f for f in self._faults if f.times > 0]
                    return taken
        return None

    def pending_faults(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(f.__dict__) for f in self._faults]

    def configure(self, **changes: Any) -> None:
        """Change data settings; keys given replace the current value (``rows_per_day`` merges).

        ``rows_per_day`` ({"app|report": n}), ``truncate_at`` (int or None), ``extra_columns``,
        ``drop_columns``, ``apps`` (any number of Android package names and iOS ``id``+digits
        ids; the platform follows from the form) and ``row_overrides`` (list of {app_id, report,
        day, row, values}).

        ``now``: the AppsFlyer raw-data clock, an ISO 8601 instant with its offset
        (``"2026-11-30T03:00:00+00:00"``) or None for real time (the default; ``reset()`` restores
        it). The clock stands still at that instant. The raw-data endpoints read "now" from it for
        everything: rows later than now are not served, "today" and the 90-day lookback, and the
        late in-app events of a local day D (served only from ``late_events_close(D, timezone)``
        on, 02:00 UTC of the UTC day after D's last instant). The aggregate, Cohort and Airbridge
        endpoints keep real time.
        """
        known = {"apps", "rows_per_day", "truncate_at", "extra_columns", "drop_columns", "row_overrides",
                 "now", "aggregate_extra_columns", "aggregate_drop_columns", "aggregate_minute_quota"}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown sandbox config keys {sorted(unknown)}; known: {sorted(known)}")
        with self.lock:
            for key, value in changes.items():
                if key == "rows_per_day":
                    self.config["rows_per_day"].update({str(k): int(v) for k, v in (value or {}).items()})
                elif key == "truncate_at":
                    self.config["truncate_at"] = None if value is None else int(value)
                elif key == "aggregate_minute_quota":
                    self.config[key] = None if value is None else float(value)
                elif key == "now":
                    self.config[key] = None if value is None else _instant(value).isoformat()
                else:
                    self.config[key] = list(value or [])

    def now(self) -> dt.datetime:
        """The AppsFlyer raw-data clock (``configure(now=...)``), or real time: aware, in UTC."""
        with self.lock:
            configured = self.config["now"]
        if configured is None:
            return dt.datetime.now(dt.timezone.utc)
        return dt.datetime.fromisoformat(configured).astimezone(dt.timezone.utc)

    def config_snapshot(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.config)

    def record_call(self, call: Mapping[str, Any], generation: int | None = None) -> None:
        """Log an API call; a call that began before the last ``reset()`` is not logged."""
        with self.lock:
            if generation is None or generation == self.generation:
                self._calls.append(dict(call))

    def calls(self) -> list[dict[str, Any]]:
        """Every vendor API request served: method, path, app_id, report, params, status, rows."""
        with self.lock:
            return copy.deepcopy(self._calls)

    # -- control API -----------------------------------------------------------------------------

    def _register_control_routes(self) -> None:
        def reset(server: SandboxServer, request: Request) -> Response:
            server.reset()
            return Response.json_body(200, {"ok": True})

        def faults(server: SandboxServer, request: Request) -> Response:
            try:
                server.add_faults(request.json().get("faults", []))
            except (ValueError, TypeError, AttributeError) as exc:
                return Response.json_body(400, {"message": str(exc)})
            return Response.json_body(200, {"ok": True, "pending": server.pending_faults()})

        def config(server: SandboxServer, request: Request) -> Response:
            if request.method == "GET":
                return Response.json_body(200, server.config_snapshot())
            try:
                server.configure(**request.json())
            except (ValueError, TypeError, AttributeError) as exc:
                return Response.json_body(400, {"message": str(exc)})
            return Response.json_body(200, server.config_snapshot())

        def calls(server: SandboxServer, request: Request) -> Response:
            return Response.json_body(200, server.calls())

        def health(server: SandboxServer, request: Request) -> Response:
            return Response.json_body(200, {"ok": True})

        prefix = re.escape(CONTROL_PREFIX)
        self.add_route("POST", prefix + "reset", reset)
        self.add_route("POST", prefix + "faults", faults)
        self.add_route("POST", prefix + "config", config)
        self.add_route("GET", prefix + "config", config)
        self.add_route("GET", prefix + "calls", calls)
        self.add_route("GET", prefix + "health", health)


def _make_handler(server: SandboxServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "adpipes-sandbox/1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            client_host = self.client_address[0]
            generation = server.generation
            if self.path.startswith(CONTROL_PREFIX) and not _is_loopback(client_host):
                response = Response.json_body(403, {"message": "control API is loopback only"})
            else:
                response = server.dispatch(
                    self.command, self.path, self.headers, body, client_host
                )
            if response.delay:
                time.sleep(response.delay)
            if response.call is not None:
                # Before answering: a client that got its answer must find the call logged.
                server.record_call({**response.call, "status": response.status}, generation)
            try:
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(response.body)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (e.g. a timeout test); the call still happened.
                pass

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            # The request line holds path and query only (tokens travel in headers).
            log.debug("%s %s", self.address_string(), format % args)

    return _Handler
