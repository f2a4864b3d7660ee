"""A local stand-in for the vendor APIs: deterministic data, real quirks, fault injection.

``SandboxServer`` serves the AppsFlyer Pull API V2 raw-data endpoints (more vendors register
routes the same way) on 127.0.0.1 only, plus a control API under ``/_sandbox/``. Tests start one
in-process; dev mode runs ``python -m adpipes.dev.sandbox`` once for every Dagster process.
"""

from adpipes.dev.sandbox.appsflyer import RAW_REPORT_COLUMNS
from adpipes.dev.sandbox.server import FAULT_KINDS, Request, Response, SandboxServer

__all__ = ["FAULT_KINDS", "RAW_REPORT_COLUMNS", "Request", "Response", "SandboxServer"]
