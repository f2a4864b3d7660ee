"""The Airbridge part of the sandbox answers like the real API: validation, auth, paging."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import requests

from adpipes.lib.sandbox import airbridge as sandbox_airbridge
from adpipes.lib.settings import SANDBOX_AIRBRIDGE_APP_NAME

APP = SANDBOX_AIRBRIDGE_APP_NAME


def body(start: dt.date, end: dt.date, **changes) -> dict:
    return {"from": start.isoformat(), "to": end.isoformat(), "groupBy": {"fields": ["channel", "campaign"]},
            "granularity": "day", "startEvents": ["app_install"], "returnEvents": ["app_order_complete"],
            "metric": "app_revenue", "aggregationType": "cumulative", **changes}


def post(sandbox, payload, token=None, app=APP):
    return requests.post(f"{sandbox.base_url}/reports/api/v3/apps/{app}/revenue/query", json=payload,
                         headers={"Authorization": f"Bearer {token or sandbox.airbridge_token}"}, timeout=10)


def today() -> dt.date:
    return dt.datetime.now(ZoneInfo(sandbox_airbridge.TIMEZONE)).date()


@pytest.mark.parametrize(("start_ago", "end_ago", "message"), [
    (100, 8, "92 days"),
    (1, -1, "future"),
    (2, 3, "earlier"),
])
def test_refuses_bad_ranges(clean_sandbox, start_ago, end_ago, message):
    d = today()
    answer = post(clean_sandbox, body(d - dt.timedelta(days=start_ago), d - dt.timedelta(days=end_ago)))
    assert answer.status_code == 400 and message in answer.json()["message"]


def test_92_days_are_accepted(clean_sandbox):
    d = today() - dt.timedelta(days=1)
    answer = post(clean_sandbox, body(d - dt.timedelta(days=91), d))
    assert answer.status_code == 200 and answer.json()["data"]["taskId"]


def test_airbridge_token_and_app_are_checked(clean_sandbox):
    d = today() - dt.timedelta(days=1)
    assert post(clean_sandbox, body(d, d), token=clean_sandbox.appsflyer_token).status_code == 401
    assert post(clean_sandbox, body(d, d), app="no-such-app").status_code == 404


def test_default_page_is_50_rows_and_reset_forgets_tasks(clean_sandbox):
    sandbox_airbridge.configure(clean_sandbox, polls_pending=0, polls_running=0, groups_per_day=60)
    d = today() - dt.timedelta(days=1)
    task_id = post(clean_sandbox, body(d, d)).json()["data"]["taskId"]
    url = f"{clean_sandbox.base_url}/reports/api/v3/apps/{APP}/revenue/query/{task_id}"
    headers = {"Authorization": f"Bearer {clean_sandbox.airbridge_token}"}
    report = requests.get(url, headers=headers, timeout=10).json()["data"]["report"]
    assert len(report["rows"]) == 50 and report["totalCount"] == 60
    clean_sandbox.reset()
    assert requests.get(url, headers=headers, timeout=10).status_code == 404
