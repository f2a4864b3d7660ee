"""The sandbox speaks the AppsFlyer raw-data protocol with the vendor's quirks, over real HTTP."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests

from adpipes.dev.sandbox import RAW_REPORT_COLUMNS, SandboxServer
from adpipes.dev.sandbox.appsflyer import default_rows_for_day, generate_day
from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID

TZ = "Asia/Seoul"
ANDROID, IOS = SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID
INSTALLS, EVENTS = "installs_report", "in_app_events_report"


def recent_day(days_ago: int = 1) -> str:
    return (dt.datetime.now(ZoneInfo(TZ)).date() - dt.timedelta(days=days_ago)).isoformat()


def export(sandbox: SandboxServer, app_id: str = ANDROID, report: str = INSTALLS, token: str | None = None,
           **params: str) -> requests.Response:
    day = recent_day()
    query = {"from": day, "to": day, "timezone": TZ, **params}
    headers = {"Accept": "text/csv"}
    token = sandbox.appsflyer_token if token is None else token
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(
        f"{sandbox.base_url}/api/raw-data/export/app/{app_id}/{report}/v5",
        params=query, headers=headers, timeout=10,
    )


def rows_of(response: requests.Response) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(response.text))
    header = next(reader)
    return header, [dict(zip(header, row)) for row in reader]


def _truthy(flag: str) -> bool:
    return flag in ("true", "True", "1")


def test_binds_loopback_only():
    with pytest.raises(ValueError, match="loopback"):
        SandboxServer(host="0.0.0.0", appsflyer_token="t")


def test_day_report_is_deterministic_csv(clean_sandbox):
    # Two days ago: past its late-events close whatever the hour, so the day is whole.
    day = recent_day(2)
    first, second = (export(clean_sandbox, IOS, EVENTS, **{"from": day, "to": day}) for _ in range(2))
    assert first.status_code == 200 and first.headers["Content-Type"].startswith("text/csv")
    assert first.content == second.content
    header, rows = rows_of(first)
    assert header == RAW_REPORT_COLUMNS
    assert len(rows) == default_rows_for_day(IOS, EVENTS, dt.date.fromisoformat(day))
    assert all(len(r) == len(RAW_REPORT_COLUMNS) for r in rows)
    event_times = [r["Event Time"] for r in rows]
    assert event_times == sorted(event_times)
    assert all(t.startswith(day) for t in event_times)


def test_split_windows_concatenate_to_the_day(clean_sandbox):
    day = recent_day()
    _, whole = rows_of(export(clean_sandbox, ANDROID, EVENTS))
    _, morning = rows_of(export(clean_sandbox, ANDROID, EVENTS, **{"from": f"{day} 00:00", "to": f"{day} 11:59"}))
    _, afternoon = rows_of(export(clean_sandbox, ANDROID, EVENTS, **{"from": f"{day} 12:00:00", "to": f"{day} 23:59:59"}))
    assert morning + afternoon == whole and morning and afternoon


def test_multi_day_window_concatenates_days(clean_sandbox):
    first, second = recent_day(3), recent_day(2)
    _, both = rows_of(export(clean_sandbox, IOS, INSTALLS, **{"from": first, "to": second}))
    _, one = rows_of(export(clean_sandbox, IOS, INSTALLS, **{"from": first, "to": first}))
    _, two = rows_of(export(clean_sandbox, IOS, INSTALLS, **{"from": second, "to": second}))
    assert both == one + two


def test_empty_report_is_just_the_header(clean_sandbox):
    tomorrow = recent_day(-1)
    response = export(clean_sandbox, **{"from": tomorrow, "to": tomorrow})
    assert response.status_code == 200
    assert response.text == ",".join(RAW_REPORT_COLUMNS) + "\n"


def test_maximum_rows_truncates_silently(clean_sandbox):
    response = export(clean_sandbox, ANDROID, EVENTS, maximum_rows="7")
    _, rows = rows_of(response)
    assert len(rows) == 7 and clean_sandbox.calls()[-1]["rows"] == 7
    clean_sandbox.configure(truncate_at=3)
    assert len(rows_of(export(clean_sandbox, ANDROID, EVENTS, maximum_rows="7"))[1]) == 3


def test_value_quirks(clean_sandbox):
    _, android = rows_of(export(clean_sandbox, ANDROID, EVENTS))
    _, ios = rows_of(export(clean_sandbox, IOS, EVENTS))
    _, installs = rows_of(export(clean_sandbox, IOS, INSTALLS))
    everything = android + ios + installs
    spellings = {r["WIFI"] for r in everything}
    assert spellings == {"true", "false", "True", "False", "1", "0"}
    for flag in ("Is Retargeting", "Is Primary Attribution", "Is Receipt Validated"):
        assert {r[flag] for r in everything} <= spellings
    with_cuid = [r["Customer User ID"] for r in everything if r["Customer User ID"]]
    assert 0.6 < len(with_cuid) / len(everything) < 0.8 and all(c.isdigit() for c in with_cuid)
    for r in everything:
        assert r["Install Time"] <= r["Event Time"]
        if r["Attributed Touch Time"]:
            assert r["Attributed Touch Time"] < r["Install Time"]
        dt.datetime.strptime(r["Event Time"], "%Y-%m-%d %H:%M:%S")
    assert all(r["Event Name"] == "install" and r["Event Time"] == r["Install Time"] and not r["Event Value"]
               for r in installs)
    assert {r["Event Name"] for r in android} == {
        "af_purchase", "af_login", "af_level_achieved", "af_tutorial_completion"
    }
    for platform_rows, receipt_ok in ((android, lambda v: v.startswith("GPA.")), (ios, str.isdigit)):
        purchases = [r for r in platform_rows if r["Event Name"] == "af_purchase"]
        assert purchases
        for r in purchases:
            value = json.loads(r["Event Value"])
            assert receipt_ok(value["af_receipt_id"]) and value["af_revenue"] == r["Event Revenue"]
            assert r["Event Revenue Currency"] == value["af_currency"]
        others = [r for r in platform_rows if r["Event Name"] != "af_purchase"]
        assert all(not r["Event Revenue"] and json.loads(r["Event Value"]) for r in others)
    # Non-organic reports: every row has its media source (organic users have their own reports).
    assert {r["Media Source"] for r in android} == {"googleadwords_int", "Facebook Ads", "tiktokglobal_int"}
    assert all(not _truthy(r["Is Retargeting"]) for r in everything)
    assert "Apple Search Ads" in {r["Media Source"] for r in ios}
    assert all(r["IDFA"] and not r["Advertising ID"] and r["Platform"] == "ios" for r in ios)
    assert all(r["Advertising ID"] and not r["IDFA"] and r["Platform"] == "android" for r in android)
    assert any('"' in r["Campaign"] and "," in r["Campaign"] for r in everything)
    assert any(r["Contributor 1 Media Source"] for r in everything)
    assert sum(bool(r["Contributor 1 Media Source"]) for r in everything) < len(everything) / 4


@pytest.mark.parametrize(
    "kwargs,status,text",
    [
        ({"token": ""}, 401, "Supplied API token is invalid"),
        ({"token": "wrong"}, 401, "Supplied API token is invalid"),
        ({"app_id": "com.nope"}, 404, "<html"),
        ({"report": "clicks_report"}, 400, "report"),
        ({"timezone": "+09:00"}, 400, "timezone"),
        ({"timezone": "Mars/Olympus"}, 400, "timezone"),
        ({"maximum_rows": "0"}, 400, '{"message": "Invalid limit type"}'),
        ({"currency": "KRW"}, 400, "currency"),
        ({"from": ""}, 400, "required"),
        ({"from": "20261101"}, 400, "from"),
        ({"from": "2020-01-01", "to": "2020-01-02"}, 400,
         '{"message": "Raw reports historical lookback is limited to 90 days"}'),
    ],
)
def test_errors_like_the_real_api(clean_sandbox, kwargs, status, text):
    response = export(clean_sandbox, **kwargs)
    assert response.status_code == status
    assert text in response.text


def test_to_is_inclusive(clean_sandbox):
    day = recent_day()
    _, by_date = rows_of(export(clean_sandbox, ANDROID, EVENTS, **{"from": day, "to": day}))
    _, by_second = rows_of(export(clean_sandbox, ANDROID, EVENTS, **{"from": f"{day} 00:00:00", "to": f"{day} 23:59:59"}))
    assert by_date == by_second
    last = by_date[-1]["Event Time"]
    _, to_last = rows_of(export(clean_sandbox, ANDROID, EVENTS, **{"from": day, "to": last}))
    assert to_last == by_date


def test_faults_over_http(clean_sandbox):
    base = clean_sandbox.base_url
    faults = [
        {"kind": "429", "retry_after": 3, "app_id": IOS},
        {"kind": "503"},
        {"kind": "empty_200"},
        {"kind": "quota"},
        {"kind": "quota_403", "report": EVENTS},
        {"kind": "token_revoked"},
    ]
    assert requests.post(f"{base}/_sandbox/faults", json={"faults": faults}, timeout=5).status_code == 200
    # The 429 only matches the iOS app, so Android requests take the others in order.
    assert export(clean_sandbox, ANDROID).status_code == 503
    empty = export(clean_sandbox, ANDROID)
    assert empty.status_code == 200 and empty.content == b""
    assert export(clean_sandbox, ANDROID).json() == {
        "message": "Your API call limit has been reached for the given report type"
    }
    limited = export(clean_sandbox, ANDROID, EVENTS)
    assert limited.status_code == 403 and limited.text == f"Limit reached for {EVENTS}"
    revoked = export(clean_sandbox, ANDROID)
    assert revoked.status_code == 401 and revoked.json() == {"message": "Supplied API token is invalid"}
    assert export(clean_sandbox, ANDROID).status_code == 200
    throttled = export(clean_sandbox, IOS)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "3"
    assert export(clean_sandbox, IOS).status_code == 200

    calls = requests.get(f"{base}/_sandbox/calls", timeout=5).json()
    assert [c["status"] for c in calls] == [503, 200, 400, 403, 401, 200, 429, 200]
    assert set(calls[0]) >= {"method", "path", "app_id", "report", "params", "status", "rows"}
    assert clean_sandbox.appsflyer_token not in json.dumps(calls)

    assert requests.post(f"{base}/_sandbox/faults", json={"faults": [{"kind": "nope"}]}, timeout=5).status_code == 400
    requests.post(f"{base}/_sandbox/faults", json={"faults": [{"kind": "503", "times": 3}]}, timeout=5)
    assert requests.post(f"{base}/_sandbox/reset", timeout=5).status_code == 200
    assert requests.get(f"{base}/_sandbox/calls", timeout=5).json() == []
    assert export(clean_sandbox).status_code == 200


def test_slow_fault_delays_the_answer(clean_sandbox):
    clean_sandbox.add_faults(kind="slow", seconds=0.5)
    began = time.monotonic()
    assert export(clean_sandbox).status_code == 200
    assert time.monotonic() - began >= 0.5


def test_config_over_http(clean_sandbox):
    base, day = clean_sandbox.base_url, recent_day()
    config = {
        "rows_per_day": {f"{ANDROID}|{INSTALLS}": 12},
        "extra_columns": ["New Vendor Column"],
        "drop_columns": ["Event Time"],
        "apps": [ANDROID, "id42"],
        "row_overrides": [{"app_id": ANDROID, "report": INSTALLS, "day": day, "row": 0,
                           "values": {"Customer User ID": "user-abc"}}],
    }
    assert requests.post(f"{base}/_sandbox/config", json=config, timeout=5).status_code == 200
    header, rows = rows_of(export(clean_sandbox, ANDROID, INSTALLS))
    assert len(rows) == 12
    assert "Event Time" not in header and header[-1] == "New Vendor Column"
    assert rows[0]["Customer User ID"] == "user-abc" and all(r["New Vendor Column"] for r in rows)
    assert export(clean_sandbox, IOS).status_code == 404
    _, new_app = rows_of(export(clean_sandbox, "id42", EVENTS))
    assert new_app and all(r["IDFA"] for r in new_app)
    assert requests.post(f"{base}/_sandbox/config", json={"bogus": 1}, timeout=5).status_code == 400
    clean_sandbox.reset()
    assert export(clean_sandbox, IOS).status_code == 200


def test_generation_is_deterministic_and_each_day_its_own():
    # No bound on how long it takes (issue 16): what it produces. Distinct days, distinct rows;
    # the same day again, the same rows (also when generated anew, not from the cache).
    days = [generate_day("com.speed.test", EVENTS, dt.date(2026, 1, 5 + day), TZ, 1000) for day in range(3)]
    assert [len(rows) for rows in days] == [1000, 1000, 1000]
    assert len({rows for rows in days}) == 3
    again = generate_day.__wrapped__("com.speed.test", EVENTS, dt.date(2026, 1, 5), TZ, 1000)
    assert again == days[0]


def test_dst_day_has_25_hours_of_events():
    # America/New_York falls back on 2026-11-01: the local day has 25 hours.
    rows = generate_day(ANDROID, EVENTS, dt.date(2026, 11, 1), "America/New_York", 2000)
    times = [r[RAW_REPORT_COLUMNS.index("Event Time")] for r in rows]
    assert all(t.startswith("2026-11-01") for t in times)


def test_command_line_server(tmp_path: Path):
    token = secrets.token_hex(16)
    token_file, state_file = tmp_path / "token", tmp_path / "state" / "sandbox.json"
    token_file.write_text(token)
    process = subprocess.Popen(
        [sys.executable, "-m", "adpipes.dev.sandbox", "--port", "0",
         "--state-file", str(state_file), "--token-file", str(token_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        # Waits as long as the server is starting (the test's time limit bounds it, not a deadline).
        while not state_file.exists():
            assert process.poll() is None, process.stdout.read()
            time.sleep(0.05)
        state = json.loads(state_file.read_text())
        assert state["pid"] == process.pid
        day = recent_day()
        response = requests.get(
            f"http://127.0.0.1:{state['port']}/api/raw-data/export/app/{IOS}/{INSTALLS}/v5",
            params={"from": day, "to": day, "timezone": TZ},
            headers={"Authorization": f"Bearer {token}"}, timeout=10,
        )
        assert response.status_code == 200 and len(rows_of(response)[1]) > 0
    finally:
        os.kill(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert token not in output
    assert not state_file.exists()
