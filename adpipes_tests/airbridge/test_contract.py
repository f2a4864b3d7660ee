"""Airbridge's printed examples are the contract: the client reads them as printed, its request
has the printed request's shape with documented values, and the sandbox accepts the printed
request and answers in the printed shapes (``conforms``)."""

import datetime as dt

import pytest
import requests

from adpipes.airbridge.contract import (
    AGGREGATION_TYPES,
    GRANULARITIES,
    METRICS,
    REQUIRED_BODY_FIELDS,
    RETURN_EVENTS,
    START_EVENTS,
    AnswerShapeError,
    read_catalog,
    read_created,
    read_problem,
    read_result_page,
    read_status,
)
from adpipes.airbridge.resources import AirbridgeBadRequestError, AirbridgeNotFoundError
from adpipes.dev.sandbox import airbridge as sandbox_airbridge
from adpipes.lib.settings import SANDBOX_AIRBRIDGE_APP_NAME
from adpipes_tests.fixtures.vendor_examples import conforms, example

APP = SANDBOX_AIRBRIDGE_APP_NAME


def api_get(sandbox, path, **params):
    return requests.get(f"{sandbox.base_url}{path}", params=params, timeout=10,
                        headers={"Authorization": f"Bearer {sandbox.airbridge_token}"})


def api_post(sandbox, body, app=APP):
    return requests.post(f"{sandbox.base_url}/reports/api/v3/apps/{app}/revenue/query", json=body, timeout=10,
                         headers={"Authorization": f"Bearer {sandbox.airbridge_token}"})


# -- the client reads the printed answers --------------------------------------------------------

def test_the_result_page_parser_reads_every_field_of_the_printed_page():
    page = read_result_page(example("airbridge_revenue_result_response"), "printed page", ["channel"])
    assert (page.status, page.task_id, page.ended_at) == (
        "SUCCESS", "5e286bd4-b4b1-4c04-8f6a-670dc7ce637d", "2022-01-17T19:10:00.286939+09:00")
    assert page.has_next is False and page.total_count == 48
    (group,) = page.rows
    assert group.group == {"channel": "<groupBy>"}
    (day,) = group.dates
    assert day.date == "2021-11-01"
    assert [(f.value, f.is_masked) for f in day.values] == [(1, False), (2, False), (3, False), (4, False)]
    # totalCost and totalRevenue are printed without isMasked: not masked.
    assert (day.total.cost.value, day.total.cost.is_masked) == (0, False)
    assert (day.total.revenue.value, day.total.revenue.is_masked) == (10, False)
    assert (day.total.unique_users.value, day.total.unique_users.is_masked) == (1, True)
    assert [(f.value, f.is_masked) for f in group.total_rows] == [(1, False), (2, False), (3, False), (4, False)]
    assert (group.total.cost.value, group.total.revenue.value, group.total.unique_users.value) == (0, 10.45, 1)
    assert group.total.unique_users.is_masked is False
    (notice,) = page.notifications
    assert (notice.code, notice.type, notice.message) == (
        "AGG_DATA_MASKING_BY_FACEBOOK", "info", "some data is masked by facebook privacy policy.")
    assert page.unknown_fields == [] and page.page_fields == {}


def test_the_printed_create_answer_and_status_are_read_where_printed():
    assert read_created(example("airbridge_revenue_query_response"), "w") == (
        "5e286bd4-b4b1-4c04-8f6a-asdf1234zxcv", {})
    assert read_status(example("airbridge_revenue_result_response"), "w") == "SUCCESS"
    # The text says task.status; the printed JSON has data.status, which wins.
    with pytest.raises(AnswerShapeError, match=r"data\.status .*\['task'\]"):
        read_status({"task": {"status": "SUCCESS"}}, "w")
    with pytest.raises(AnswerShapeError, match=r"'DONE'.*data\.\['status', 'taskId'\]"):
        read_status({"data": {"status": "DONE", "taskId": "t"}}, "w")


def test_the_printed_404_and_metadata_answers_are_read():
    assert read_problem(example("airbridge_not_found")) == {
        "type": "about:blank", "title": "Not Found", "status": 404, "traceId": "1-000000-000000000000000"}
    assert read_problem(example("airbridge_revenue_query_error")) is None
    catalog = read_catalog(example("airbridge_metrics_response"), example("airbridge_groupbys_response"),
                           example("airbridge_events_response"), "w")
    assert catalog.metrics == {"app_revenue": ["cumulative", "on-day"],
                               "app_user_count": ["on-day", "unique-cumulative"],
                               "customer_acquisition_cost": None, "start_event_users": None}
    assert catalog.group_bys == {"is_first_event_per_user_id": True, "is_first_event_per_device_id": True,
                                 "channel": True, "campaign": True}
    assert catalog.start_events == ["app_install", "app_deeplink_open"]
    assert catalog.return_events == ["app_first_order_complete", "app_order_complete"]


def test_a_documented_key_that_is_missing_fails_naming_row_and_key():
    answer = example("airbridge_revenue_result_response")
    del answer["data"]["stats"]["rows"][0]["rows"][0]["total"]["totalRevenue"]
    with pytest.raises(AnswerShapeError, match=r"data\.stats\.rows\[3\]\.rows\[0\]\.total lacks .*'totalRevenue'"):
        read_result_page(answer, "task t", ["channel"], first_row=3)


@pytest.mark.parametrize(("date", "problem"), [("2021/11/01", "not a date YYYY-MM-DD"),
                                             ("2021-11-00", "not a calendar date")])
def test_a_date_that_is_not_a_calendar_date_fails(date, problem):
    answer = example("airbridge_revenue_result_response")
    answer["data"]["stats"]["rows"][0]["rows"][0]["date"] = date
    with pytest.raises(AnswerShapeError, match=rf"data\.stats\.rows\[0\]\.rows\[0\]\.date is '{date}', {problem}"):
        read_result_page(answer, "task t", ["channel"])


def test_a_null_value_is_accepted_only_when_masked():
    answer = example("airbridge_revenue_result_response")
    values = answer["data"]["stats"]["rows"][0]["rows"][0]["values"]
    values[0] = {"value": None, "isMasked": True}
    assert read_result_page(answer, "w", ["channel"]).rows[0].dates[0].values[0].value is None
    values[0] = {"value": None, "isMasked": False}
    with pytest.raises(AnswerShapeError, match=r"values\[0\]\.value is null but isMasked is not true"):
        read_result_page(answer, "w", ["channel"])


# -- the client's request ----------------------------------------------------------------------

def test_the_request_has_the_printed_shape_with_documented_values(airbridge_api, clean_sandbox):
    airbridge_api.fetch_revenue([dt.date.today() - dt.timedelta(days=2)])
    (post,) = [c for c in clean_sandbox.calls() if c["method"] == "POST"]
    sent, printed = post["body"], example("airbridge_revenue_query_request")
    assert set(sent) == set(printed) and set(REQUIRED_BODY_FIELDS) <= set(sent)
    assert conforms(sent, printed) == []
    assert sent["granularity"] in GRANULARITIES and sent["aggregationType"] in AGGREGATION_TYPES
    assert set(sent["startEvents"]) <= set(START_EVENTS) and set(sent["returnEvents"]) <= set(RETURN_EVENTS)
    assert sent["metric"] in METRICS
    assert sent["filters"] == []
    # Default sorts: the group-bys ascending, a stable order to page over.
    assert sent["sorts"] == [{"fieldName": "channel", "isAscending": True},
                             {"fieldName": "campaign", "isAscending": True}]


def test_on_day_is_sent_as_documented(airbridge_api, clean_sandbox):
    api = airbridge_api.model_copy(update={"aggregation_type": "on-day"})
    report = api.fetch_revenue([dt.date.today() - dt.timedelta(days=2)])
    (post,) = [c for c in clean_sandbox.calls() if c["method"] == "POST"]
    assert post["body"]["aggregationType"] == "on-day" and post["status"] == 200
    assert len(report.tasks[0].rows) == 8


# -- the sandbox answers as printed --------------------------------------------------------------

def test_the_sandbox_accepts_the_printed_request_and_answers_in_the_printed_shapes(clean_sandbox):
    sandbox_airbridge.configure(clean_sandbox, polls_pending=0, polls_running=0)
    created = api_post(clean_sandbox, example("airbridge_revenue_query_request"))
    assert created.status_code == 200
    assert conforms(created.json(), example("airbridge_revenue_query_response")) == []
    task_id = created.json()["data"]["taskId"]
    page = api_get(clean_sandbox, f"/reports/api/v3/apps/{APP}/revenue/query/{task_id}", skip=0, size=50).json()
    assert conforms(page, example("airbridge_revenue_result_response")) == []
    # The printed request filters campaign IN ["App"] and groups by channel: the one channel
    # running a campaign "App", one row per day of 2022-11-04..2022-11-11.
    (row,) = page["data"]["stats"]["rows"]
    assert row["metadata"] == ["apple.searchads"]
    assert [d["date"] for d in row["rows"]] == [f"2022-11-{d:02d}" for d in range(4, 12)]
    assert sandbox_airbridge.SAN_CODE in [n["code"] for n in page["notification"]]


def test_masked_result_pages_conform_too(airbridge_api, clean_sandbox):
    sandbox_airbridge.configure(clean_sandbox, polls_pending=0, polls_running=0)
    body = airbridge_api.request_body(dt.date.today() - dt.timedelta(days=3), dt.date.today() - dt.timedelta(days=2))
    task_id = api_post(clean_sandbox, body).json()["data"]["taskId"]
    page = api_get(clean_sandbox, f"/reports/api/v3/apps/{APP}/revenue/query/{task_id}").json()
    assert conforms(page, example("airbridge_revenue_result_response")) == []
    masked = [f for r in page["data"]["stats"]["rows"] for d in r["rows"] for f in d["values"] if f["isMasked"]]
    # A masked figure carries a value, as Airbridge sends one.
    assert masked and all(isinstance(f["value"], (int, float)) for f in masked)
    assert [n["code"] for n in page["notification"]] == [sandbox_airbridge.MASKING_CODE]


@pytest.mark.parametrize("catalog", ["metrics", "groupbys", "events"])
def test_the_sandbox_metadata_endpoints_answer_in_the_printed_shapes(clean_sandbox, catalog):
    answer = api_get(clean_sandbox, f"/dataspec/v1/apps/{APP}/revenue-report/{catalog}")
    assert answer.status_code == 200
    assert conforms(answer.json(), example(f"airbridge_{catalog}_response")) == []
    missing = api_get(clean_sandbox, f"/dataspec/v1/apps/no-such-app/revenue-report/{catalog}")
    assert missing.status_code == 404 and conforms(missing.json(), example("airbridge_not_found")) == []


def test_the_sandbox_answers_a_bad_request_with_the_printed_empty_object(airbridge_api, clean_sandbox):
    body = airbridge_api.request_body(dt.date.today() - dt.timedelta(days=2), dt.date.today() - dt.timedelta(days=2))
    answer = api_post(clean_sandbox, {**body, "aggregationType": "on_day"})
    assert answer.status_code == 400 and answer.json() == example("airbridge_revenue_query_error")
    assert api_post(clean_sandbox, body).status_code == 200


# -- the errors the document prints become clear errors ------------------------------------------

def test_a_400_says_what_was_sent_and_which_group_by_airbridge_does_not_offer(airbridge_api, clean_sandbox):
    api = airbridge_api.model_copy(update={"group_by": ["channel", "no_such_key"]})
    with pytest.raises(AirbridgeBadRequestError) as caught:
        api.fetch_revenue([dt.date.today() - dt.timedelta(days=2)])
    message = str(caught.value)
    assert "HTTP 400 {}" in message and '"groupBy": {"fields": ["channel", "no_such_key"]}' in message
    assert "group-by key 'no_such_key' (groupBy.fields) is not offered" in message
    assert "AIRBRIDGE_GROUP_BY" in message and clean_sandbox.airbridge_token not in message
    asked = sorted(c["catalog"] for c in clean_sandbox.calls() if c["report"] == sandbox_airbridge.METADATA_REPORT)
    assert asked == ["events", "groupbys", "metrics"]


def test_a_400_names_the_aggregation_types_a_metric_supports(airbridge_api, clean_sandbox):
    api = airbridge_api.model_copy(update={"metric": "app_user_count"})
    with pytest.raises(AirbridgeBadRequestError, match="'app_user_count' supports aggregationType on-day, "
                                                       "unique-cumulative, not 'cumulative'"):
        api.fetch_revenue([dt.date.today() - dt.timedelta(days=2)])


def test_a_404_problem_answer_is_a_clear_error(airbridge_api, clean_sandbox):
    api = airbridge_api.model_copy(update={"app_name": "no-such-app"})
    with pytest.raises(AirbridgeNotFoundError) as caught:
        api.fetch_revenue([dt.date.today() - dt.timedelta(days=2)])
    message = str(caught.value)
    assert "HTTP 404, Not Found (traceId 1-" in message and "AIRBRIDGE_APP_NAME" in message
    assert "no-such-app" in message
