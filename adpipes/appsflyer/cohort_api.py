"""AppsFlyer Cohort API: the client of ``POST /api/cohorts/v1/data/app/{app_id}``.

Queries are paced to the API's 60 calls a minute per account; a 422 names app, KPI and the API's
reason.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from adpipes.appsflyer.api import (
    BODY_EXCERPT_CHARS,
    TOKEN_VARIABLE,
    AppsFlyerApiBase,
    AppsFlyerApiError,
    AppsFlyerCohortRequestError,
    default_log,
)
from adpipes.lib.http import bearer_session, redact

COHORT_PATH = "/api/cohorts/v1/data/app/{app_id}"
# The sandbox's fault/call-log name of Cohort API calls (the API has no report name).
COHORT_REPORT = "cohort"
# Dagster concurrency pool of the steps calling the Cohort API.
COHORT_API_POOL = "appsflyer_cohort_api"


class SlidingWindowLimiter:
    """At most ``limit`` calls per ``window`` seconds per key (the Cohort API's 60 calls/minute)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, deque[float]] = {}

    def acquire(self, key: str, limit: int, window: float) -> float:
        """Block until a call is allowed; returns seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                calls = self._calls.setdefault(key, deque())
                while calls and calls[0] <= now - window:
                    calls.popleft()
                if len(calls) < max(1, limit):
                    calls.append(now)
                    return waited
                pause = calls[0] + window - now
            time.sleep(pause)
            waited += pause



_COHORT_LIMITER = SlidingWindowLimiter()


@dataclass
class CohortResult:
    """The JSON records of one Cohort API query (one app, one KPI)."""

    app_id: str
    kpi: str
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)
    # HTTP requests made, including retried attempts.
    calls: int = 0

    def count_call(self) -> None:
        self.calls += 1


class AppsFlyerCohortApi(AppsFlyerApiBase):
    """AppsFlyer Cohort API (one KPI per query, JSON answers)."""

    cohort_calls_per_minute: int = Field(
        default=60, description="Cohort API rate limit per account (calls per rate window)."
    )
    cohort_rate_window_seconds: float = Field(
        default=60.0, description="Length of the Cohort API rate window (the API's is one minute)."
    )
    def fetch_cohort(self, app_id: str, body: dict[str, Any], log: Any = None) -> CohortResult:
        """POST one Cohort API query (exactly one KPI) and return its JSON result records.

        Calls are limited in-process to ``cohort_calls_per_minute`` per account; 429/5xx are
        retried with backoff. A 422 (the API rejected the body) raises
        :class:`AppsFlyerCohortRequestError` naming app, KPI and the API's message.
        """
        log = log or default_log
        kpis = list(body.get("kpis") or [])
        kpi = kpis[0] if len(kpis) == 1 else ",".join(map(str, kpis))
        base_url, token = self._connection()
        waited = _COHORT_LIMITER.acquire(base_url, self.cohort_calls_per_minute,
                                         self.cohort_rate_window_seconds)
        if waited:
            log.info(f"AppsFlyer Cohort API: waited {waited:.1f} s to stay within "
                     f"{self.cohort_calls_per_minute} calls per {self.cohort_rate_window_seconds:g} s")
        window = f"cohorts {body.get('from')}..{body.get('to')} ({self.timezone})"
        report = f"cohort (kpi {kpi})"
        result = CohortResult(app_id=app_id, kpi=kpi)
        url = base_url + COHORT_PATH.format(app_id=app_id)
        with bearer_session(base_url, token, accept="application/json", token_variable=TOKEN_VARIABLE) as session:
            try:
                content = self._call(session, "POST", url, token, log, app_id=app_id, report=report,
                                     window=window, on_attempt=result.count_call,
                                     params={"format": "json"}, json=body)
            except AppsFlyerApiError as exc:
                if exc.status != 422:
                    raise
                raise AppsFlyerCohortRequestError(
                    f"AppsFlyer Cohort API rejected the query for app {app_id}, KPI {kpi!r}, "
                    f"{window}: {exc}. Fix the cohort_ltv configuration (kpis, groupings, "
                    f"cohort_type) and re-run; the query sent was {json.dumps(body, sort_keys=True)}",
                    app_id=app_id, report=report, window=window, status=422,
                ) from None
        try:
            payload = json.loads(content)
        except ValueError:
            payload = None
        records = payload.get("results") if isinstance(payload, dict) else payload
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            excerpt = redact(content[:BODY_EXCERPT_CHARS].decode("utf-8", errors="replace"), token)
            raise AppsFlyerApiError(
                f"AppsFlyer {report} for app {app_id}, {window}: the answer is not the JSON "
                f"record list adpipes expects (a 'results' list of objects): {excerpt!r}",
                app_id=app_id, report=report, window=window, status=200,
            )
        result.records = records
        return result
