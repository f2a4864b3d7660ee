"""The shared retry machinery of the vendor clients (the HTTP paths are tested against the sandbox)."""

import email.utils
import time

import pytest

from adpipes.lib.http import (
    RetriesExhausted,
    TransientError,
    bearer_session,
    call_with_retries,
    redact,
    retry_after_seconds,
)


def test_retry_after_is_read_as_seconds_or_http_date():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    # An HTTP date is whole seconds: a minute from a whole second, read however long after.
    written = float(int(time.time()))
    in_a_minute = email.utils.formatdate(written + 60, usegmt=True)
    waited = retry_after_seconds(in_a_minute)
    read_at = time.time()
    # The date less the moment it was read, which lies between writing and read_at.
    assert written + 60 - read_at - 1e-3 <= waited <= 60


def test_transient_failures_are_retried_until_success_honouring_retry_after():
    attempts = []

    def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise TransientError("HTTP 429", 429, retry_after=0.2)
        return "ok"

    assert call_with_retries(flaky, where="test", max_attempts=5, backoff_seconds=0.01,
                             max_backoff_seconds=5) == "ok"
    assert len(attempts) == 3 and attempts[1] - attempts[0] >= 0.2


def test_exhausted_retries_name_the_last_failure_and_other_errors_pass_at_once():
    calls = []

    def always_503() -> None:
        calls.append(1)
        raise TransientError("HTTP 503: busy", 503)

    with pytest.raises(RetriesExhausted, match="after 3 attempts; last: HTTP 503: busy") as caught:
        call_with_retries(always_503, where="test", max_attempts=3, backoff_seconds=0.01, max_backoff_seconds=0.01)
    assert caught.value.last.status == 503 and len(calls) == 3

    def quota() -> None:
        calls.append(1)
        raise ValueError("quota spent")

    with pytest.raises(ValueError):
        call_with_retries(quota, where="test", max_attempts=3, backoff_seconds=0.01, max_backoff_seconds=0.01)
    assert len(calls) == 4


def test_redact_hides_the_token():
    assert redact("bad token abc123", "abc123") == "bad token ***"


def test_bearer_session_strips_line_breaks_and_never_echoes_a_bad_token():
    assert bearer_session("http://127.0.0.1:1", "abc123\r\n").headers["Authorization"] == "Bearer abc123"
    with pytest.raises(ValueError, match="APPSFLYER_API_TOKEN") as caught:
        bearer_session("http://127.0.0.1:1", "abc 123", token_variable="APPSFLYER_API_TOKEN")
    assert "abc" not in str(caught.value)


def test_path_parts_are_one_encoded_segment_each():
    from adpipes.lib.http import api_path

    assert api_path("/api/raw-data/export/app/{app_id}/{report}/v5", app_id="com.x/../admin", report="installs_report") == (
        "/api/raw-data/export/app/com.x%2F..%2Fadmin/installs_report/v5"
    )
    assert api_path("/apps/{app_name}/revenue/query/{task_id}", app_name="a b", task_id="t?x=1#y") == (
        "/apps/a%20b/revenue/query/t%3Fx%3D1%23y"
    )
