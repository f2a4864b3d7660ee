"""The Airbridge part of the sandbox validates like the document says, applies filters and sorts,
and pages by group rows."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import requests

from adpipes.dev.sandbox import airbridge as sandbox_airbridge
from adpipes.lib.settings import SANDBOX_AIRBRIDGE_APP_NAME
from adpipes_tests.fixtures.vendor_examples import example

APP = SANDBOX_AIRBRIDGE_APP_NAME


def today() -> dt.date:
    return dt.datetime.now(ZoneInfo(sandbox_airbridge.TIMEZONE)).date()


def body(start: dt.date, end: dt.date, **changes) -> dict:
    """The printed request payload for another range (and changes)."""
    return {**example("airbridge_revenue_query_request"), "from": start.isoformat(), "to": end.isoformat(),
            "filters": [], **changes}


def post(sandbox, payload, token=None, app=APP):
    return requests.post(f"{sandbox.base_url}/reports/api/v3/apps/{app}/revenue/query", json=payload,
                         headers={"Authorization": f"Bearer {token or sandbox.airbridge_token}"}, timeout=10)


def result(sandbox, task_id, **params):
    url = f"{sandbox.base_url}/reports/api/v3/apps/{APP}/revenue/query/{task_id}"
    return requests.get(url, params=params, headers={"Authorization": f"Bearer {sandbox.airbridge_token}"},
                        timeout=10)


def refusal(sandbox, payload) -> list[str]:
    answer = post(sandbox, payload)
    assert answer.status_code == 400 and answer.json() == {}
    return sandbox.calls()[-1]["problems"]


D = dt.timedelta


@pytest.mark.parametrize(("changes", "problem"), [
    ({"from": "2026/01/01"}, "from='2026/01/01' must be a date YYYY-MM-DD"),
    ({"intervalsPeriod": 121}, "intervalsPeriod=121 must be a whole number 0..120"),
    ({"granularity": "week", "intervalsPeriod": 53}, "0..52 for granularity week"),
    ({"aggregationType": "daily"}, "aggregationType='daily' must be one of cumulative, on-day"),
    ({"metric": "app_arpu", "aggregationType": "on-day"}, "metric app_arpu supports aggregationType cumulative only"),
    ({"startEvents": ["install"]}, "startEvents ['install'] are not documented values"),
    ({"groupBy": {"fields": ["channel", "os"]}}, "group-by key 'os' (groupBy.fields) is not offered"),
    ({"filters": [{"field": "nope", "filterType": "IN", "values": ["a"]}]}, "filter field 'nope'"),
    ({"sorts": [{"fieldName": "campaign", "isAscending": True}]}, "sorts[0].fieldName='campaign'"),
    ({"cohorts": [{}, {}]}, "cohorts must be a list of at most 1"),
    ({"extra": 1}, "fields ['extra'] are not in the document"),
])
def test_refuses_what_the_document_does_not_allow(clean_sandbox, changes, problem):
    d = today() - D(days=2)
    assert any(problem in p for p in refusal(clean_sandbox, body(d, d, **changes)))


@pytest.mark.parametrize("field", ["filters", "sorts", "groupBy", "metric"])
def test_required_fields_are_required(clean_sandbox, field):
    d = today() - D(days=2)
    payload = body(d, d)
    del payload[field]
    assert refusal(clean_sandbox, payload)[0] == f"required fields ['{field}'] are missing"


@pytest.mark.parametrize(("start_ago", "end_ago", "problem"), [
    (100, 8, "spans 93 days; at most 92"),
    (1, -1, "is in the future"),
    (2, 3, "is before from"),
])
def test_refuses_bad_ranges(clean_sandbox, start_ago, end_ago, problem):
    d = today()
    assert any(problem in p for p in refusal(clean_sandbox, body(d - D(days=start_ago), d - D(days=end_ago))))


def test_92_days_and_intervals_0_are_allowed(clean_sandbox):
    d = today() - D(days=1)
    assert post(clean_sandbox, body(d - D(days=91), d, intervalsPeriod=0)).status_code == 200


def test_token_and_app_are_checked(clean_sandbox):
    d = today() - D(days=1)
    assert post(clean_sandbox, body(d, d), token=clean_sandbox.appsflyer_token).status_code == 401
    missing = post(clean_sandbox, body(d, d), app="no-such-app")
    assert missing.status_code == 404 and missing.json()["title"] == "Not Found"


def test_filters_group_bys_and_sorts_are_applied(clean_sandbox):
    sandbox_airbridge.configure(clean_sandbox, polls_pending=0, polls_running=0)
    d = today() - D(days=2)
    payload = body(d, d, groupBy={"fields": ["campaign", "channel"]},
                   filters=[{"field": "channel", "filterType": "IN", "values": ["google.adwords", "tiktok"]}],
                   sorts=[{"fieldName": "totalRevenue", "isAscending": False}])
    rows = result(clean_sandbox, post(clean_sandbox, payload).json()["data"]["taskId"]).json()["data"]["stats"]["rows"]
    assert sorted(r["metadata"] for r in rows) == [
        ['Brand "Search" KR', "google.adwords"], ["KR_UAC_Install, AOS", "google.adwords"], ["TT_KR_Install", "tiktok"]]
    revenues = [r["total"]["totalRevenue"]["value"] for r in rows]
    assert revenues == sorted(revenues, reverse=True)

    # Grouped by channel only, a channel's campaigns add up.
    by_channel = body(d, d, groupBy={"fields": ["channel"]}, sorts=[{"fieldName": "channel", "isAscending": True}])
    rows = result(clean_sandbox, post(clean_sandbox, by_channel).json()["data"]["taskId"]).json()["data"]["stats"]["rows"]
    assert [r["metadata"] for r in rows] == [[c] for c in sorted(
        {"google.adwords", "facebook.business", "apple.searchads", "tiktok", "naver.searchad", "unattributed"})]
    google = [r for r in rows if r["metadata"] == ["google.adwords"]][0]
    parts = [sandbox_airbridge.date_row(APP, d, "google.adwords", c, 30, True, today())
             for c in ("KR_UAC_Install, AOS", 'Brand "Search" KR')]
    assert google["rows"][0]["total"]["totalCost"]["value"] == pytest.approx(
        sum(p["total"]["totalCost"]["value"] for p in parts))


def test_pages_count_group_rows_and_reset_forgets_tasks(clean_sandbox):
    sandbox_airbridge.configure(clean_sandbox, polls_pending=0, polls_running=0, groups_per_day=60)
    d = today() - D(days=3)
    task_id = post(clean_sandbox, body(d - D(days=1), d, groupBy={"fields": ["channel", "campaign"]},
                                       sorts=[])).json()["data"]["taskId"]
    first = result(clean_sandbox, task_id).json()["data"]
    assert len(first["stats"]["rows"]) == 50 and first["hasNext"] is True
    assert first["metadata"]["totalCount"] == 60 and len(first["stats"]["rows"][0]["rows"]) == 2
    last = result(clean_sandbox, task_id, skip=50, size=50).json()["data"]
    assert len(last["stats"]["rows"]) == 10 and last["hasNext"] is False
    clean_sandbox.reset()
    assert result(clean_sandbox, task_id).status_code == 404


def test_waiting_answers_keep_the_status_at_data_status(clean_sandbox):
    d = today() - D(days=2)
    task_id = post(clean_sandbox, body(d, d)).json()["data"]["taskId"]
    assert result(clean_sandbox, task_id).json() == {"data": {"status": "PENDING", "taskId": task_id}}
    assert result(clean_sandbox, task_id).json()["data"]["status"] == "RUNNING"
    assert result(clean_sandbox, task_id).json()["data"]["status"] == "SUCCESS"


def test_data_is_a_pure_function_of_app_day_group_and_today():
    d = today() - D(days=5)
    first = sandbox_airbridge.date_row(APP, d, "tiktok", "TT_KR_Install", 30, True, today())
    assert first == sandbox_airbridge.date_row(APP, d, "tiktok", "TT_KR_Install", 30, True, today())
    # Day 0..5 have passed; the day keeps its figures as it matures.
    assert len(first["values"]) == 6
    later = sandbox_airbridge.date_row(APP, d, "tiktok", "TT_KR_Install", 30, True, today() + D(days=1))
    assert later["values"][:6] == first["values"] and len(later["values"]) == 7


def test_a_task_is_served_for_the_day_it_was_created(clean_sandbox, monkeypatch):
    sandbox_airbridge.configure(clean_sandbox, polls_pending=0, polls_running=0)
    created_on = today()
    monkeypatch.setattr(sandbox_airbridge, "_today", lambda: created_on)
    d = created_on - D(days=2)
    task_id = post(clean_sandbox, body(d, d)).json()["data"]["taskId"]
    # Midnight passes before the page is read: it still holds Days 0..2, as computed on creation.
    monkeypatch.setattr(sandbox_airbridge, "_today", lambda: created_on + D(days=1))
    rows = result(clean_sandbox, task_id).json()["data"]["stats"]["rows"]
    assert rows and {len(day["values"]) for row in rows for day in row["rows"]} == {3}
