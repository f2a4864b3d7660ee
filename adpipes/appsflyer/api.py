"""What the AppsFlyer API clients share: the errors, the connection (token, base URL, timezone)
and the one way an AppsFlyer call is sent, checked and retried.

Each AppsFlyer API has its own client, on this base and on the vendor HTTP machinery of
``adpipes.lib.http``:

- ``raw_data_api.AppsFlyerRawDataApi``: Pull API V2 raw data (CSV, truncation splits);
- ``aggregate_api.AppsFlyerAggregateApi``: Pull API V2 aggregate reports (``daily_report``);
- ``cohort_api.AppsFlyerCohortApi``: the Cohort API (JSON).

The token travels only in the ``Authorization`` header (the V1 ``?api_token=`` form put it in URLs
and therefore in proxy and server logs); it never appears in a URL, log line, error or repr.
Quota answers are never retried (every call spends quota), 429/5xx, connection errors and the
known zero-byte 200 are.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import re
from pathlib import Path
from typing import Any, Optional
from zoneinfo import ZoneInfo

import requests
from pydantic import Field

from adpipes.lib.http import (
    RetriesExhausted,
    TransientError,
    VendorApiError,
    VendorApiResource,
    raise_for_transient_status,
    redact,
)
from adpipes.lib.quota import describe_reset
from adpipes.lib.storage.delivered import SpoolSpaceError, human_bytes

QUOTA_VENDOR = "appsflyer"
PARAM_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# Tokens issued before this moment were revoked by AppsFlyer; a 401 most often means one of those.
TOKEN_REVOCATION_CUTOFF = "2026-03-10 19:00 UTC"
TOKEN_VARIABLE = "APPSFLYER_API_TOKEN"
# Quota answers vary in wording ("Your API call limit has been reached ...", "Limit reached for
# installs_report"): match loosely.
_QUOTA_PATTERN = re.compile(r"limit.*reached|reached.*limit", re.IGNORECASE | re.DOTALL)
BODY_EXCERPT_CHARS = 300

default_log = logging.getLogger("adpipes.appsflyer")


# -- errors --------------------------------------------------------------------------------------

class AppsFlyerApiError(VendorApiError):
    """An AppsFlyer API call failed; the message names app, report and window."""

    app_id = report = window = ""


class AppsFlyerTransientError(AppsFlyerApiError):
    """429/5xx/connection problems/empty answers persisted through every attempt."""


class AppsFlyerQuotaError(AppsFlyerApiError):
    """The daily call quota is spent; it resets at 00:00 UTC."""


class AppsFlyerAuthError(AppsFlyerApiError):
    """401: the token is invalid or revoked."""


class AppsFlyerNotFoundError(AppsFlyerApiError):
    """404: unknown app id, or the token's account has no access to the app."""


class AppsFlyerLookbackError(AppsFlyerApiError):
    """400: the window is older than the 90 days of raw data AppsFlyer serves."""


class AppsFlyerTruncationError(AppsFlyerApiError):
    """A window that cannot be split further still returned ``maximum_rows`` rows."""


class AppsFlyerCohortRequestError(AppsFlyerApiError):
    """422: the Cohort API rejected the request body (a KPI, grouping or filter it does not accept)."""



def spool_body(response: requests.Response, path: Path) -> None:
    """Stream a 200 body into ``path``; a cut-off download or an empty body is worth a retry."""
    written = 0
    try:
        with path.open("wb") as handle:
            for chunk in response.iter_content(chunk_size=1 << 20):
                handle.write(chunk)
                written += len(chunk)
    except requests.RequestException as exc:
        raise TransientError(f"the download broke off after {written} bytes ({type(exc).__name__})") from None
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        path.unlink(missing_ok=True)
        # Not a bare "[Errno 28]": the call has been paid for, so say what to do before a re-run.
        raise SpoolSpaceError(
            f"the disk of TMPDIR ({path.parent.parent}) filled up after {human_bytes(written)} of "
            "the vendor's answer; nothing was loaded. Free space there or point TMPDIR at a larger "
            "disk for the Dagster processes, then re-run (or materialize fewer days at once)."
        ) from None
    if written < 64 and not path.read_bytes().strip():
        # A real empty report still has its header line: zero bytes is a failed export.
        raise TransientError("HTTP 200 with an empty body (not even a header line)", 200)


def fmt_window(start: dt.datetime, end: dt.datetime, timezone: str) -> str:
    tz = ZoneInfo(timezone)
    return (f"[{start.astimezone(tz).strftime(PARAM_TIME_FORMAT)}, "
            f"{end.astimezone(tz).strftime(PARAM_TIME_FORMAT)}) {timezone}")


class AppsFlyerApiBase(VendorApiResource):
    """The connection every AppsFlyer client has: pass ``dagster.EnvVar("APPSFLYER_API_TOKEN")``.
    (Dev mode's subclasses in ``adpipes.dev.resources`` point a None at the local sandbox.)"""

    api_token: Optional[str] = Field(
        default=None, repr=False,
        description="AppsFlyer API V2 token (Bearer).",
    )
    base_url: Optional[str] = Field(
        default=None, description="e.g. https://hq1.appsflyer.com."
    )
    timezone: str = Field(
        default="Asia/Seoul",
        description="IANA name equal to the app's timezone setting in AppsFlyer (offsets are rejected).",
    )

    # -- connection ---------------------------------------------------------------------------

    def _missing_token_error(self) -> Exception:
        return AppsFlyerAuthError(f"no AppsFlyer API token: set {TOKEN_VARIABLE}")

    def _call(self, session: requests.Session, method: str, url: str, token: str, log: Any, *,
              app_id: str, report: str, window: str, on_attempt: Any = None,
              spool_to: Path | None = None, **kwargs: Any) -> bytes:
        """One logical API call with retries; returns the 200 body or raises AppsFlyerApiError.

        ``on_attempt`` is called before each HTTP request is sent (every request spends quota)
        and may refuse it by raising (the call ledger's ``QuotaExceeded``). With
        ``spool_to``, a 200 body is streamed into that file instead (and ``b""`` returned).
        """
        context = dict(app_id=app_id, report=report, window=window)
        where = f"AppsFlyer {report} for app {app_id}, window {window}"

        def check(response: requests.Response) -> bytes:
            if spool_to is not None and response.status_code == 200:
                spool_body(response, spool_to)
                return b""
            return self._check_response(response, token, where, context)

        def exhausted(exc: RetriesExhausted) -> AppsFlyerApiError:
            return AppsFlyerTransientError(
                f"{where}: {exc}. AppsFlyer or the network is having trouble: re-run the partition "
                "later (if it keeps failing, check status.appsflyer.com and the network path to "
                "the API).",
                status=exc.last.status, **context,
            )

        return self._call_with_retries(
            session, method, url, check=check, exhausted=exhausted, where=where, log=log,
            on_attempt=on_attempt, stream=spool_to is not None, **kwargs,
        )

    def _check_response(self, response: requests.Response, token: str, where: str,
                        context: dict[str, str]) -> bytes:
        status = response.status_code
        content = response.content
        if status == 200:
            if not content.strip():
                # A real empty report still has its header line: zero bytes is a failed export.
                raise TransientError("HTTP 200 with an empty body (not even a header line)", status)
            return content
        raise_for_transient_status(response, token)
        body = redact(content.decode("utf-8", errors="replace"), token).strip()
        excerpt = body[:BODY_EXCERPT_CHARS]
        if status in (400, 403) and _QUOTA_PATTERN.search(body):
            raise AppsFlyerQuotaError(
                f"{where}: the daily API call quota is spent (HTTP {status}: {excerpt!r}). "
                f"AppsFlyer resets quotas at 00:00 UTC, next at {describe_reset()}; do not retry "
                "before then (every call spends quota), re-run the failed partitions after the reset.",
                status=status, **context,
            )
        if status == 401:
            raise AppsFlyerAuthError(
                f"{where}: HTTP 401, the API token is invalid or revoked, or the account is "
                f"suspended ({excerpt!r}; AppsFlyer answers 401 for all three). AppsFlyer "
                f"revoked every token issued before {TOKEN_REVOCATION_CUTOFF}. Regenerate the "
                f"token in AppsFlyer (Security center > API tokens, a V2 token) and set "
                f"{TOKEN_VARIABLE}; if it still fails, log in to the dashboard and check the "
                "account status.",
                status=status, **context,
            )
        if status == 404:
            raise AppsFlyerNotFoundError(
                f"{where}: HTTP 404, the app id is wrong or the token belongs to an account "
                "without access to this app. Check APPSFLYER_ANDROID_APP_ID / "
                "APPSFLYER_IOS_APP_ID (Android: the package name; iOS: 'id' + App Store id) and "
                f"that {TOKEN_VARIABLE} comes from the account owning the app.",
                status=status, **context,
            )
        if status == 400 and "lookback" in body.lower():
            raise AppsFlyerLookbackError(
                f"{where}: AppsFlyer serves raw data for the last 90 days only ({excerpt!r}). "
                "Older partitions cannot be fetched again; they live in the archive database.",
                status=status, **context,
            )
        if status == 400 and "invalid limit type" in body.lower():
            raise AppsFlyerApiError(
                f"{where}: AppsFlyer refused maximum_rows ({excerpt!r}): it accepts 200000 or "
                "1000000 only. Fix maximum_rows on the appsflyer_raw_data_api resource.",
                status=status, **context,
            )
        raise AppsFlyerApiError(f"{where}: HTTP {status}: {excerpt}", status=status, **context)

