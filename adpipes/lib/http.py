"""HTTP machinery shared by the vendor API clients (AppsFlyer, Airbridge).

Every vendor client makes calls the same way: a ``requests.Session`` carrying a Bearer token in
its headers (never in a URL), a connect and read timeout on every call, and tenacity retries with
exponential backoff for answers that are worth trying again — 429 (honouring ``Retry-After``),
5xx, connection errors, timeouts, and whatever a client's own check declares transient (e.g.
AppsFlyer's zero-byte 200). Errors that retrying cannot fix (quota, auth, bad request) are raised
by the client's check and go straight through. The client turns an exhausted retry
(:class:`RetriesExhausted`) into its own error naming vendor, app, report and window.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress
import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import dagster as dg
import requests
import tenacity
from pydantic import Field

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
CONNECT_TIMEOUT_SECONDS = 30.0

T = TypeVar("T")
_default_log = logging.getLogger("adpipes.http")


class VendorApiError(Exception):
    """A vendor API call failed. The message names what failed and what to do; the keyword
    arguments (app, report, window, task id, ...) are kept as attributes for callers and tests."""

    status: int | None = None

    def __init__(self, message: str, *, status: int | None = None, **context: Any) -> None:
        super().__init__(message)
        self.status = status
        for name, value in context.items():
            setattr(self, name, value)


class TransientError(Exception):
    """One failed attempt worth retrying: ``what`` says what went wrong, for logs and errors."""

    def __init__(self, what: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.status = status
        self.retry_after = retry_after


class RetriesExhausted(Exception):
    """Every attempt failed transiently; ``last`` is the final attempt's failure."""

    def __init__(self, last: TransientError, attempts: int) -> None:
        super().__init__(f"still failing after {attempts} attempts; last: {last.what}")
        self.last = last
        self.attempts = attempts


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RequestNotSent(Exception):
    """The request could not be sent at all (a malformed header or URL); not worth a retry."""


def bearer_session(base_url: str, token: str, accept: str = "application/json",
                   token_variable: str = "the API token variable") -> requests.Session:
    """A session that sends the token as ``Authorization: Bearer`` (never as a URL parameter).

    Secrets mounted from files or CRLF ``.env`` files often end in a line break, which requests
    would reject with an error quoting the whole header (token included): strip it, and refuse
    anything else a header cannot carry without echoing the value.
    """
    token = token.strip()
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError(
            f"the token in {token_variable} has spaces or characters an HTTP header cannot carry; "
            "copy it again from the vendor's console (the value is not shown here)"
        )
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {token}", "Accept": accept})
    if is_loopback_url(base_url):
        # The local sandbox: an http_proxy variable must not route loopback calls away.
        session.trust_env = False
    return session


def api_path(template: str, **parts: object) -> str:
    """``template`` with each part percent-encoded as one path segment: an app id or a task id
    with a ``/`` or ``..`` in it names a resource, never another path."""
    return template.format(**{name: quote(str(value), safe="") for name, value in parts.items()})


def redact(text: str, secret: str | None) -> str:
    """Defensive: never let an echoed token reach an exception message or a log line."""
    return text.replace(secret, "***") if secret else text


def send(session: requests.Session, method: str, url: str, *, timeout_seconds: float,
         **kwargs: Any) -> requests.Response:
    """One HTTP call with a connect and a read timeout; network failures become TransientError."""
    try:
        return session.request(
            method, url, timeout=(min(CONNECT_TIMEOUT_SECONDS, timeout_seconds), timeout_seconds),
            **kwargs,
        )
    except requests.Timeout:
        raise TransientError(f"no answer within {timeout_seconds:g} s (timeout)") from None
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        raise TransientError(f"connection failed ({type(exc).__name__})") from None
    except requests.RequestException as exc:
        # Its message may quote headers (the token) or the URL: name the kind only.
        raise RequestNotSent(f"the request could not be sent ({type(exc).__name__})") from None


def raise_for_transient_status(response: requests.Response, secret: str | None = None) -> None:
    """Raise TransientError for 429 (with its ``Retry-After``) and 5xx answers."""
    status = response.status_code
    if status not in RETRYABLE_STATUSES:
        return
    excerpt = redact(response.content[:200].decode("utf-8", errors="replace"), secret).strip()
    retry_after = retry_after_seconds(response.headers.get("Retry-After")) if status == 429 else None
    raise TransientError(f"HTTP {status}: {excerpt[:120]}", status, retry_after)


def call_with_retries(
    attempt: Callable[[], T],
    *,
    where: str,
    max_attempts: int,
    backoff_seconds: float,
    max_backoff_seconds: float,
    log: Any = None,
) -> T:
    """Run ``attempt`` until it returns, retrying TransientError with exponential backoff.

    The wait doubles from ``backoff_seconds`` up to ``max_backoff_seconds``; a ``Retry-After``
    given by the server wins (capped the same way). Other exceptions propagate at once.
    Raises RetriesExhausted when every attempt failed transiently.
    """
    log = log or _default_log
    attempts = max(1, max_attempts)

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return min(exc.retry_after, max_backoff_seconds)
        return min(backoff_seconds * 2 ** (state.attempt_number - 1), max_backoff_seconds)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        pause = state.next_action.sleep if state.next_action else 0.0
        log.warning(f"{where}: {exc} (attempt {state.attempt_number}/{attempts}); retrying in {pause:.1f} s")

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=wait,
        retry=tenacity.retry_if_exception_type(TransientError),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except TransientError as exc:
        raise RetriesExhausted(exc, attempts) from None


class VendorApiResource(dg.ConfigurableResource):
    """Base of the vendor API clients: their timeout and retry settings, and the one way they make
    a call (send, count the attempt, check the answer, retry what is transient)."""

    timeout_seconds: float = Field(default=120, description="Read timeout per HTTP call.")
    max_attempts: int = Field(default=6, description="Attempts per call for transient failures (429, 5xx).")
    backoff_seconds: float = Field(default=2.0, description="First retry wait; doubles per attempt.")
    max_backoff_seconds: float = Field(default=120.0, description="Cap of any single retry wait.")

    # Each client declares ``api_token`` and ``base_url`` and says what to raise when no token is
    # configured; ``adpipes.dev.resources`` subclasses them to fill a None from the dev sandbox.
    def _missing_token_error(self) -> Exception:
        raise NotImplementedError

    def _connection(self) -> tuple[str, str]:
        """Base URL and token of the vendor API."""
        base_url, token = getattr(self, "base_url"), getattr(self, "api_token")
        if not token:
            raise self._missing_token_error()
        if not base_url:
            raise ValueError(f"{type(self).__name__} has no base_url configured")
        return base_url.rstrip("/"), token

    def _call_with_retries(
        self,
        session: requests.Session,
        method: str,
        url: str,
        *,
        check: Callable[[requests.Response], T],
        exhausted: Callable[[RetriesExhausted], Exception],
        where: str,
        log: Any,
        on_attempt: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> T:
        """Send until ``check`` accepts an answer (it raises TransientError for a retry and the
        client's own error otherwise); ``on_attempt`` runs before each request is sent (every
        request may spend quota; it may refuse by raising); ``exhausted`` turns spent retries into the client's error."""

        def attempt() -> T:
            if on_attempt is not None:
                # Before sending: a quota ledger may refuse the request (nothing is sent then).
                on_attempt()
            response = send(session, method, url, timeout_seconds=self.timeout_seconds, **kwargs)
            with response:
                return check(response)

        try:
            return call_with_retries(
                attempt, where=where, max_attempts=self.max_attempts,
                backoff_seconds=self.backoff_seconds, max_backoff_seconds=self.max_backoff_seconds,
                log=log,
            )
        except RetriesExhausted as exc:
            raise exhausted(exc) from None
