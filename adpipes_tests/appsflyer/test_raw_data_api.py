"""The AppsFlyer Pull API raw data client against the sandbox over real HTTP: data, retries, errors, splits."""

from __future__ import annotations

import datetime as dt
import logging
import time
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
import requests

from adpipes.appsflyer.api import (
    AppsFlyerApiError,
    AppsFlyerAuthError,
    AppsFlyerLookbackError,
    AppsFlyerNotFoundError,
    AppsFlyerQuotaError,
    AppsFlyerTransientError,
    AppsFlyerTruncationError,
)
from adpipes.appsflyer.raw_data_api import (
    IN_APP_EVENTS_REPORT,
    INSTALLS_REPORT,
    AppsFlyerRawDataApi,
    SpooledChunk,
    SpooledReport,
    count_report_rows,
    parse_report_csv,
)
from adpipes.lib.partitions import day_window
from adpipes_tests.fixtures.sandbox import appsflyer_client_settings
from adpipes_tests.fixtures.vendor_examples import PULL_API_ERROR_MESSAGES
from adpipes.dev.sandbox.appsflyer import RAW_REPORT_COLUMNS, default_rows_for_day
from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID

TZ = "Asia/Seoul"
ANDROID, IOS = SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID


def recent_day(days_ago: int = 1) -> str:
    return (dt.datetime.now(ZoneInfo(TZ)).date() - dt.timedelta(days=days_ago)).isoformat()


def client(sandbox, **overrides) -> AppsFlyerRawDataApi:
    return AppsFlyerRawDataApi(**appsflyer_client_settings(sandbox, **overrides))


def row_keys(table: pa.Table) -> list[tuple[str, str, str]]:
    return list(zip(
        table["AppsFlyer ID"].to_pylist(), table["Event Time"].to_pylist(), table["Event Name"].to_pylist()
    ))


def assert_no_token(sandbox, *texts: str) -> None:
    for text in texts:
        assert sandbox.appsflyer_token not in text


@pytest.mark.parametrize("app_id", [ANDROID, IOS])
@pytest.mark.parametrize("report", [INSTALLS_REPORT, IN_APP_EVENTS_REPORT])
def test_day_has_every_column_and_every_row(appsflyer_raw_data_api, clean_sandbox, app_id, report):
    # Two days ago: yesterday's late in-app events are held back until 02:00 UTC after it.
    day = recent_day(2)
    start, end = day_window(day, TZ)
    fetched = appsflyer_raw_data_api.fetch_raw_report(app_id, report, start, end)
    table = fetched.to_arrow()

    served = clean_sandbox.calls()
    assert [c["status"] for c in served] == [200]
    assert served[0]["params"] == {
        "from": f"{day} 00:00:00", "to": f"{day} 23:59:59", "timezone": TZ, "maximum_rows": "1000000",
        "currency": "USD",
    }
    expected = default_rows_for_day(app_id, report, dt.date.fromisoformat(day))
    assert fetched.row_count == table.num_rows == served[0]["rows"] == expected > 0
    assert fetched.calls == 1 and fetched.windows == [(start, end)] and len(fetched.chunks) == 1
    assert table.column_names == RAW_REPORT_COLUMNS
    assert all(t == pa.string() for t in table.schema.types)
    assert all(table[c].null_count == 0 for c in table.column_names)  # empty cells are ""

    rows = table.to_pylist()
    assert all(r["Event Time"][:10] == day for r in rows)
    assert {r["App ID"] for r in rows} == {app_id}  # no column shift despite quoted commas
    assert any("," in r["Campaign"] for r in rows)
    if app_id == IOS:
        assert all(r["IDFA"] and r["IDFA"] == r["IDFA"].upper() and not r["Advertising ID"] for r in rows)
        assert {r["Platform"] for r in rows} == {"ios"}
    else:
        assert all(r["Advertising ID"] and not r["IDFA"] for r in rows)
        assert {r["Platform"] for r in rows} == {"android"}


def test_empty_window_is_a_header_only_table(appsflyer_raw_data_api):
    # Tomorrow has no rows yet (the sandbox, like AppsFlyer, reports no future events).
    start, end = day_window(recent_day(-1), TZ)
    fetched = appsflyer_raw_data_api.fetch_raw_report(ANDROID, INSTALLS_REPORT, start, end)
    table = fetched.to_arrow()
    assert table.num_rows == 0 and fetched.row_count == 0
    assert table.column_names == RAW_REPORT_COLUMNS


def test_schema_drift_keeps_new_columns(appsflyer_raw_data_api, clean_sandbox):
    clean_sandbox.configure(extra_columns=["New Vendor Column"], drop_columns=["Sub Param 5"])
    start, end = day_window(recent_day(), TZ)
    table = appsflyer_raw_data_api.fetch_raw_report(IOS, INSTALLS_REPORT, start, end).to_arrow()
    assert table.column_names[-1] == "New Vendor Column"
    assert "Sub Param 5" not in table.column_names
    assert all(table["New Vendor Column"].to_pylist())


def test_chunks_with_different_columns_are_unified(tmp_path):
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_bytes(b'A,B\n1,"x, y"\n')
    second.write_bytes(b"B,C\n2,\n")
    window = day_window(recent_day(), TZ)
    report = SpooledReport(app_id="a", report="r", timezone=TZ, directory=tmp_path, chunks=[
        SpooledChunk(path, tuple(count_report_rows(path)[0]), count_report_rows(path)[1], window)
        for path in (first, second)
    ])
    assert report.row_count == 2
    table = report.to_arrow()
    assert table.column_names == ["A", "B", "C"]
    assert table.to_pylist() == [
        {"A": "1", "B": "x, y", "C": None},
        {"A": None, "B": "2", "C": ""},
    ]


def test_ids_stay_text():
    table = parse_report_csv(b"Customer User ID,Event Revenue\n1000000186,4.99\n007,\n")
    assert table.to_pylist() == [
        {"Customer User ID": "1000000186", "Event Revenue": "4.99"},
        {"Customer User ID": "007", "Event Revenue": ""},
    ]


# -- retries ---------------------------------------------------------------------------------------

def test_429_honours_retry_after(appsflyer_raw_data_api, clean_sandbox, caplog):
    clean_sandbox.add_faults(kind="429", app_id=ANDROID, retry_after=1)
    start, end = day_window(recent_day(), TZ)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="adpipes.appsflyer"):
        fetched = appsflyer_raw_data_api.fetch_raw_report(ANDROID, INSTALLS_REPORT, start, end)
    elapsed = time.monotonic() - began
    assert elapsed >= 0.9  # backoff_seconds is 0.05: only Retry-After explains the wait
    assert [c["status"] for c in clean_sandbox.calls()] == [429, 200]
    assert fetched.calls == 2 and fetched.row_count > 0
    retry_logs = [r.getMessage() for r in caplog.records]
    assert len(retry_logs) == 1
    assert all(s in retry_logs[0] for s in (ANDROID, INSTALLS_REPORT, "429", "attempt 1/4", recent_day()))
    # The pause taken is the server's Retry-After (1 s), not the client's backoff (0.05 s).
    assert "retrying in 1.0 s" in retry_logs[0]
    assert_no_token(clean_sandbox, *retry_logs)


def test_503_then_success(appsflyer_raw_data_api, clean_sandbox):
    clean_sandbox.add_faults(kind="503", times=2)
    start, end = day_window(recent_day(), TZ)
    fetched = appsflyer_raw_data_api.fetch_raw_report(IOS, IN_APP_EVENTS_REPORT, start, end)
    assert [c["status"] for c in clean_sandbox.calls()] == [503, 503, 200]
    assert fetched.calls == 3 and fetched.row_count == clean_sandbox.calls()[-1]["rows"] > 0


def test_empty_200_is_retried_not_taken_as_no_data(appsflyer_raw_data_api, clean_sandbox):
    clean_sandbox.add_faults(kind="empty_200")
    start, end = day_window(recent_day(), TZ)
    fetched = appsflyer_raw_data_api.fetch_raw_report(ANDROID, IN_APP_EVENTS_REPORT, start, end)
    calls = clean_sandbox.calls()
    assert [(c["status"], c["rows"]) for c in calls][0] == (200, 0)
    assert len(calls) == 2 and fetched.row_count == calls[1]["rows"] > 0
    assert fetched.to_arrow().num_rows == fetched.row_count


def test_timeout_is_retried(clean_sandbox):
    clean_sandbox.add_faults(kind="slow", seconds=1.5)
    api = client(clean_sandbox, timeout_seconds=0.4)
    start, end = day_window(recent_day(), TZ)
    fetched = api.fetch_raw_report(ANDROID, INSTALLS_REPORT, start, end)
    assert fetched.calls == 2 and fetched.row_count > 0


def test_retries_exhausted(appsflyer_raw_data_api, clean_sandbox):
    clean_sandbox.add_faults(kind="503", times=10)
    start, end = day_window(recent_day(), TZ)
    with pytest.raises(AppsFlyerTransientError) as caught:
        appsflyer_raw_data_api.fetch_raw_report(ANDROID, INSTALLS_REPORT, start, end)
    message = str(caught.value)
    assert len(clean_sandbox.calls()) == 4  # max_attempts
    assert all(s in message for s in (ANDROID, INSTALLS_REPORT, recent_day(), "503", "4 attempts", "re-run"))
    assert_no_token(clean_sandbox, message, repr(caught.value))


def test_connection_refused_is_transient(clean_sandbox):
    with socket_closed_port() as port:
        api = client(clean_sandbox, base_url=f"http://127.0.0.1:{port}", max_attempts=2)
        start, end = day_window(recent_day(), TZ)
        with pytest.raises(AppsFlyerTransientError, match="connection failed"):
            api.fetch_raw_report(ANDROID, INSTALLS_REPORT, start, end)


class socket_closed_port:
    """A loopback port with nothing listening."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        pass


# -- errors that are not retried -------------------------------------------------------------------

@pytest.mark.parametrize("kind,status", [("quota", 400), ("quota_403", 403)])
def test_quota_is_not_retried(appsflyer_raw_data_api, clean_sandbox, kind, status):
    clean_sandbox.add_faults(kind=kind, times=5)
    start, end = day_window(recent_day(), TZ)
    with pytest.raises(AppsFlyerQuotaError) as caught:
        appsflyer_raw_data_api.fetch_raw_report(IOS, IN_APP_EVENTS_REPORT, start, end)
    assert [c["status"] for c in clean_sandbox.calls()] == [status]
    message = str(caught.value)
    reset = (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)).isoformat()
    assert all(s in message for s in (IOS, IN_APP_EVENTS_REPORT, f"{reset} 00:00 UTC", "do not retry"))
    assert "h " in message and "m)" in message  # "in Xh Ym"
    assert ("limit has been reached" in message) if kind == "quota" else ("Limit reached" in message)
    assert caught.value.status == status
    assert_no_token(clean_sandbox, message, repr(caught.value))


def test_revoked_token(appsflyer_raw_data_api, clean_sandbox):
    clean_sandbox.add_faults(kind="token_revoked")
    start, end = day_window(recent_day(), TZ)
    with pytest.raises(AppsFlyerAuthError) as caught:
        appsflyer_raw_data_api.fetch_raw_report(ANDROID, INSTALLS_REPORT, start, end)
    message = str(caught.value)
    assert "2026-03-10 19:00 UTC" in message and "APPSFLYER_API_TOKEN" in message
    assert ANDROID in message and INSTALLS_REPORT in message
    assert len(clean_sandbox.calls()) == 1


def test_wrong_token_is_an_auth_error_without_the_token(clean_sandbox):
    api = client(clean_sandbox, api_token="not-the-token-" + "x" * 20)
    start, end = day_window(recent_day(), TZ)
    with pytest.raises(AppsFlyerAuthError) as caught:
        api.fetch_raw_report(ANDROID, INSTALLS_REPORT, start, end)
    assert "not-the-token" not in str(caught.value) + repr(caught.value)


def test_unknown_app(appsflyer_raw_data_api, clean_sandbox):
    start, end = day_window(recent_day(), TZ)
    with pytest.raises(AppsFlyerNotFoundError) as caught:
        appsflyer_raw_data_api.fetch_raw_report("com.example.unknown", INSTALLS_REPORT, start, end)
    message = str(caught.value)
    assert "com.example.unknown" in message and "APPSFLYER_ANDROID_APP_ID" in message
    assert len(clean_sandbox.calls()) == 1


def test_lookback(appsflyer_raw_data_api):
    start, end = day_window(recent_day(120), TZ)
    with pytest.raises(AppsFlyerLookbackError) as caught:
        appsflyer_raw_data_api.fetch_raw_report(IOS, INSTALLS_REPORT, start, end)
    assert "90 days" in str(caught.value) and "archive" in str(caught.value)


def test_the_documented_error_answers_are_named(clean_sandbox):
    """Each error answer of AppsFlyer's raw data OpenAPI file, served as printed, becomes the error
    that says what to do (quota and lookback are covered above with their own tests)."""
    start, end = day_window(recent_day(), TZ)
    status, message = PULL_API_ERROR_MESSAGES["invalid_limit"]
    with pytest.raises(AppsFlyerApiError) as caught:
        client(clean_sandbox, maximum_rows=0).fetch_raw_report(IOS, INSTALLS_REPORT, start, end)
    assert caught.value.status == status and message in str(caught.value)
    assert "200000 or 1000000" in str(caught.value)
    status, message = PULL_API_ERROR_MESSAGES["invalid_token"]
    with pytest.raises(AppsFlyerAuthError) as caught:
        client(clean_sandbox, api_token="wrong-token").fetch_raw_report(IOS, INSTALLS_REPORT, start, end)
    assert caught.value.status == status and message in str(caught.value)
    assert "suspended" in str(caught.value)


def test_currency_is_sent_as_configured_and_checked(clean_sandbox):
    start, end = day_window(recent_day(), TZ)
    client(clean_sandbox, currency="preferred").fetch_raw_report(IOS, INSTALLS_REPORT, start, end)
    assert clean_sandbox.calls()[0]["params"]["currency"] == "preferred"
    with pytest.raises(ValueError, match="preferred"):
        client(clean_sandbox, currency="KRW")


def test_other_4xx_is_an_api_error_with_the_body(appsflyer_raw_data_api):
    start, end = day_window(recent_day(), TZ)
    with pytest.raises(AppsFlyerApiError) as caught:
        appsflyer_raw_data_api.fetch_raw_report(IOS, "not_a_report", start, end)
    assert type(caught.value) is AppsFlyerApiError
    assert "HTTP 400" in str(caught.value) and "not_a_report" in str(caught.value)


# -- truncation ------------------------------------------------------------------------------------

def test_truncated_windows_are_split_until_complete(clean_sandbox):
    day = recent_day(2)
    start, end = day_window(day, TZ)
    clean_sandbox.configure(rows_per_day={f"{ANDROID}|{IN_APP_EVENTS_REPORT}": 350})
    whole = client(clean_sandbox).fetch_raw_report(ANDROID, IN_APP_EVENTS_REPORT, start, end)
    assert whole.row_count == 350 and whole.calls == 1
    clean_sandbox.reset()
    clean_sandbox.configure(rows_per_day={f"{ANDROID}|{IN_APP_EVENTS_REPORT}": 350})

    split = client(clean_sandbox, maximum_rows=100).fetch_raw_report(
        ANDROID, IN_APP_EVENTS_REPORT, start, end
    )
    table = split.to_arrow()
    served = clean_sandbox.calls()
    assert split.calls == len(served) > 3
    assert all(c["params"]["maximum_rows"] == "100" for c in served)
    # The windows used tile [start, end) without gaps or overlaps.
    assert len(split.windows) == len(split.chunks) > 2
    assert split.windows[0][0] == start and split.windows[-1][1] == end
    assert all(a[1] == b[0] for a, b in zip(split.windows, split.windows[1:]))
    keys = row_keys(table)
    assert len(keys) == len(set(keys)) == 350
    assert sorted(keys) == sorted(row_keys(whole.to_arrow()))


def test_sandbox_row_cap_is_detected_when_it_equals_maximum_rows(clean_sandbox):
    clean_sandbox.configure(truncate_at=60)
    start, end = day_window(recent_day(), TZ)
    fetched = client(clean_sandbox, maximum_rows=60).fetch_raw_report(IOS, INSTALLS_REPORT, start, end)
    expected = default_rows_for_day(IOS, INSTALLS_REPORT, dt.date.fromisoformat(recent_day()))
    assert fetched.row_count == expected and fetched.calls > 2


def test_an_answer_of_appsflyers_default_cap_is_truncated_whatever_was_asked(clean_sandbox, monkeypatch):
    # A server (or plan) that ignores maximum_rows=1000000 stops at its default, 200,000 rows: a
    # 200,000-row day is far too big for the sandbox, so the default is lowered to 60 here.
    monkeypatch.setattr("adpipes.appsflyer.raw_data_api.DEFAULT_MAXIMUM_ROWS", 60)
    clean_sandbox.configure(truncate_at=60)
    start, end = day_window(recent_day(), TZ)
    fetched = client(clean_sandbox, maximum_rows=1_000_000).fetch_raw_report(IOS, INSTALLS_REPORT, start, end)
    expected = default_rows_for_day(IOS, INSTALLS_REPORT, dt.date.fromisoformat(recent_day()))
    assert fetched.row_count == expected and fetched.calls > 2
    assert all(c["params"]["maximum_rows"] == "1000000" for c in clean_sandbox.calls())


def test_the_known_row_caps():
    api = AppsFlyerRawDataApi(api_token="x", timezone=TZ, maximum_rows=1_000_000)
    assert api.truncated(200_000) and api.truncated(1_000_000)
    assert not api.truncated(199_999) and not api.truncated(200_001) and not api.truncated(0)
    assert AppsFlyerRawDataApi(api_token="x", timezone=TZ, maximum_rows=200_000).truncated(200_000)


@pytest.mark.parametrize("kind, problem", [
    ("html_200", "an HTML page, not a CSV report"),
    ("malformed_csv", "not well-formed UTF-8 CSV"),
])
def test_an_answer_that_is_not_a_report_is_kept_as_delivered_with_its_problem(clean_sandbox, kind, problem):
    clean_sandbox.add_faults(kind=kind)
    start, end = day_window(recent_day(), TZ)
    fetched = client(clean_sandbox).fetch_raw_report(ANDROID, INSTALLS_REPORT, start, end)
    [chunk] = fetched.chunks
    assert problem in chunk.problem and fetched.unreadable == [chunk]
    assert chunk.rows == 0 and chunk.path.exists() and chunk.path.stat().st_size > 0
    assert len(clean_sandbox.calls()) == 1  # not retried: the caller keeps it and fails the run


def test_unsplittable_window_fails_loudly(clean_sandbox):
    api = client(clean_sandbox, maximum_rows=50, min_split_seconds=86400)
    start, end = day_window(recent_day(), TZ)
    with pytest.raises(AppsFlyerTruncationError) as caught:
        api.fetch_raw_report(ANDROID, INSTALLS_REPORT, start, end)
    message = str(caught.value)
    assert all(s in message for s in (ANDROID, INSTALLS_REPORT, "maximum_rows=50", recent_day(), "re-run"))
    assert len(clean_sandbox.calls()) == 1


# -- the token stays secret ------------------------------------------------------------------------

def test_token_never_in_urls_params_or_repr(clean_sandbox, monkeypatch):
    sent_urls: list[str] = []
    original_send = requests.Session.send

    def recording_send(self, request, **kwargs):
        sent_urls.append(request.url)
        assert request.headers["Authorization"] == f"Bearer {clean_sandbox.appsflyer_token}"
        return original_send(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", recording_send)
    clean_sandbox.add_faults(kind="503")
    api = client(clean_sandbox, maximum_rows=100)
    start, end = day_window(recent_day(), TZ)
    api.fetch_raw_report(ANDROID, IN_APP_EVENTS_REPORT, start, end)
    assert len(sent_urls) > 2
    calls = clean_sandbox.calls()
    assert_no_token(clean_sandbox, *sent_urls, repr(calls), repr(api), str(api))


def test_start_and_end_must_be_aware(appsflyer_raw_data_api):
    with pytest.raises(ValueError, match="timezone-aware"):
        appsflyer_raw_data_api.fetch_raw_report(ANDROID, INSTALLS_REPORT, dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2))
