"""The Airbridge revenue report client against the sandbox over real HTTP."""

import datetime as dt
import logging
from zoneinfo import ZoneInfo

import pytest

from adpipes.airbridge.resources import (
    AirbridgeAuthError,
    AirbridgeBadRequestError,
    AirbridgeTaskFailedError,
    AirbridgeTaskTimeoutError,
    AirbridgeTransientError,
    day_ranges,
)
from adpipes.lib.sandbox import airbridge as sandbox_airbridge
from adpipes.lib.settings import SANDBOX_AIRBRIDGE_APP_NAME

APP = SANDBOX_AIRBRIDGE_APP_NAME


def recent(days_ago: int) -> dt.date:
    return dt.datetime.now(ZoneInfo("Asia/Seoul")).date() - dt.timedelta(days=days_ago)


def revenue_calls(sandbox, method=None):
    return [c for c in sandbox.calls() if c["report"] == "revenue" and (method is None or c["method"] == method)]


def test_polls_through_pending_and_running_then_pages_every_row(airbridge_api, clean_sandbox):
    sandbox_airbridge.configure(clean_sandbox, polls_pending=2, polls_running=3, groups_per_day=120)
    report = airbridge_api.fetch_revenue([recent(2)])

    (task,) = report.tasks
    # 120 groups at the default page size of 50: three pages, none lost.
    assert len(task.rows) == 120 and task.pages == 3
    assert len({(r["metadata"]["channel"], r["metadata"]["campaign"]) for r in task.rows}) == 120
    gets = revenue_calls(clean_sandbox, "GET")
    served = [c["status_served"] for c in gets]
    assert served == ["PENDING", "PENDING", "RUNNING", "RUNNING", "RUNNING", "SUCCESS", "SUCCESS", "SUCCESS"]
    assert [c["params"]["skip"] for c in gets[-3:]] == ["0", "50", "100"]
    assert all(c["params"]["size"] == "50" for c in gets)
    assert report.calls == 1 + len(gets)


def test_request_body_uses_documented_fields(airbridge_api, clean_sandbox):
    airbridge_api.fetch_revenue([recent(3), recent(2)])
    (post,) = revenue_calls(clean_sandbox, "POST")
    body = post["body"]
    assert body["from"] == recent(3).isoformat() and body["to"] == recent(2).isoformat()
    assert body["groupBy"] == {"fields": ["channel", "campaign"]}
    assert body["granularity"] == "day"
    assert body["startEvents"] == ["app_install"] and body["returnEvents"] == ["app_order_complete"]
    assert body["metric"] == "app_revenue" and body["aggregationType"] == "cumulative"


def test_ranges_are_split_into_tasks_of_at_most_max_days(airbridge_api, clean_sandbox):
    days = [recent(n) for n in range(5, 0, -1)]
    report = airbridge_api.model_copy(update={"max_days_per_task": 2}).fetch_revenue(days)
    assert [t.window for t in report.tasks] == [
        f"{recent(5)}..{recent(4)}", f"{recent(3)}..{recent(2)}", f"{recent(1)}..{recent(1)}"
    ]
    assert len(revenue_calls(clean_sandbox, "POST")) == 3


def test_day_ranges_respect_the_92_day_limit_and_gaps():
    start = dt.date(2026, 1, 1)
    days = [start + dt.timedelta(days=i) for i in range(100)]
    ranges = day_ranges(days)
    assert ranges == [(start, start + dt.timedelta(days=91)),
                      (start + dt.timedelta(days=92), start + dt.timedelta(days=99))]
    gap = day_ranges([start, start + dt.timedelta(days=2)])
    assert gap == [(start, start), (start + dt.timedelta(days=2), start + dt.timedelta(days=2))]


@pytest.mark.parametrize(("kind", "status"), [("task_failure", "FAILURE"), ("task_canceled", "CANCELED")])
def test_failed_or_canceled_task_names_task_app_and_range(airbridge_api, clean_sandbox, kind, status):
    clean_sandbox.add_faults(kind=kind, app_id=APP, report="revenue")
    with pytest.raises(AirbridgeTaskFailedError) as caught:
        airbridge_api.fetch_revenue([recent(2)])
    (post,) = revenue_calls(clean_sandbox, "POST")
    message = str(caught.value)
    assert post["task_id"] in message and caught.value.task_id == post["task_id"]
    assert APP in message and recent(2).isoformat() in message and status in message
    assert clean_sandbox.airbridge_token not in message


def test_task_that_never_finishes_times_out_clearly(airbridge_api, clean_sandbox):
    clean_sandbox.add_faults(kind="task_stuck", app_id=APP, report="revenue")
    api = airbridge_api.model_copy(update={"task_timeout_seconds": 0.5, "poll_interval_seconds": 0.1})
    with pytest.raises(AirbridgeTaskTimeoutError) as caught:
        api.fetch_revenue([recent(2)])
    (post,) = revenue_calls(clean_sandbox, "POST")
    message = str(caught.value)
    assert post["task_id"] in message and "RUNNING" in message and "task_timeout_seconds" in message
    # Bounded: a handful of polls, not an endless loop.
    assert 2 <= len(revenue_calls(clean_sandbox, "GET")) <= 10


def test_429_backs_off_then_succeeds(airbridge_api, clean_sandbox, caplog):
    clean_sandbox.add_faults(kind="429", app_id=APP, report="revenue", times=2, retry_after=0.1)
    with caplog.at_level(logging.WARNING):
        report = airbridge_api.fetch_revenue([recent(2)])
    assert report.row_count == 8
    statuses = [c["status"] for c in revenue_calls(clean_sandbox)]
    assert statuses[:3] == [429, 429, 200]
    assert "HTTP 429" in caplog.text and clean_sandbox.airbridge_token not in caplog.text


def test_persistent_429_gives_a_clear_error(airbridge_api, clean_sandbox):
    clean_sandbox.add_faults(kind="429", app_id=APP, report="revenue", times=10, retry_after=0)
    with pytest.raises(AirbridgeTransientError, match="429"):
        airbridge_api.fetch_revenue([recent(2)])
    assert len(revenue_calls(clean_sandbox)) == airbridge_api.max_attempts


def test_wrong_token_is_an_auth_error_without_the_token(airbridge_api, clean_sandbox):
    api = airbridge_api.model_copy(update={"api_token": "not-the-token-123"})
    with pytest.raises(AirbridgeAuthError) as caught:
        api.fetch_revenue([recent(2)])
    assert "AIRBRIDGE_API_TOKEN" in str(caught.value)
    assert "not-the-token-123" not in str(caught.value) and "not-the-token-123" not in repr(api)


def test_bad_query_settings_are_refused_with_the_reason(airbridge_api):
    api = airbridge_api.model_copy(update={"aggregation_type": "sideways"})
    with pytest.raises(AirbridgeBadRequestError, match="aggregationType"):
        api.fetch_revenue([recent(2)])


def test_group_by_must_keep_channel_and_campaign(airbridge_api):
    with pytest.raises(ValueError, match="channel"):
        airbridge_api.model_copy(update={"group_by": ["campaign"]}).fetch_revenue([recent(2)])


def test_notifications_are_returned_per_task(airbridge_api, clean_sandbox):
    sandbox_airbridge.configure(clean_sandbox, notifications=["SAN_PERIOD_LIMIT"])
    (task,) = airbridge_api.fetch_revenue([recent(2)]).tasks
    codes = [n["code"] for n in task.notifications]
    assert codes == [sandbox_airbridge.MASKING_CODE, "SAN_PERIOD_LIMIT"]
