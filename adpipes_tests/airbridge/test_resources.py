"""The Airbridge revenue report client against the sandbox over real HTTP: polling, paging and
its checks, the documented limits before any call, failures and retries."""

import copy
import datetime as dt
import logging
from zoneinfo import ZoneInfo

import pytest

from adpipes.airbridge.resources import (
    AirbridgeApi,
    AirbridgeAuthError,
    AirbridgeQueryError,
    AirbridgeResponseError,
    AirbridgeTaskFailedError,
    AirbridgeTaskTimeoutError,
    AirbridgeTransientError,
    airbridge_api_from_settings,
    day_ranges,
)
from adpipes.dev.sandbox import airbridge as sandbox_airbridge
from adpipes.lib.settings import (
    SANDBOX_AIRBRIDGE_APP_NAME,
    ConfigurationError,
    load_settings,
)
from adpipes_tests.fixtures.environ import prod_environ
from adpipes_tests.fixtures.vendor_examples import example

APP = SANDBOX_AIRBRIDGE_APP_NAME
PRINTED_TASK = "5e286bd4-b4b1-4c04-8f6a-670dc7ce637d"
# The printed page's day; with totalCount 48, plausibly 8 days x 6 channels from here.
PRINTED_DAYS = [dt.date(2021, 11, 1) + dt.timedelta(days=n) for n in range(8)]


def recent(days_ago: int) -> dt.date:
    return dt.datetime.now(ZoneInfo("Asia/Seoul")).date() - dt.timedelta(days=days_ago)


def revenue_calls(sandbox, method=None):
    return [c for c in sandbox.calls() if c["report"] == "revenue" and (method is None or c["method"] == method)]


def serve_printed(sandbox, *answers):
    """The sandbox answers the next task's GETs with these answers verbatim, under the printed
    page's task id."""
    sandbox_airbridge.configure(sandbox, next_task_ids=[PRINTED_TASK], canned_answers=list(answers))


# -- polling and paging -------------------------------------------------------------------------

def test_polls_through_pending_and_running_then_pages_every_group_row(airbridge_api, clean_sandbox):
    sandbox_airbridge.configure(clean_sandbox, polls_pending=2, polls_running=3, groups_per_day=120)
    report = airbridge_api.fetch_revenue([recent(2)])

    (task,) = report.tasks
    # 120 groups at the default page size of 50: three pages, none lost, none twice.
    assert len(task.rows) == 120 and task.pages == 3 and task.total_count == 120
    assert len({tuple(r.group.values()) for r in task.rows}) == 120
    gets = revenue_calls(clean_sandbox, "GET")
    served = [c["status_served"] for c in gets]
    assert served == ["PENDING", "PENDING", "RUNNING", "RUNNING", "RUNNING", "SUCCESS", "SUCCESS", "SUCCESS"]
    assert [c["params"]["skip"] for c in gets[-3:]] == ["0", "50", "100"]
    assert all(c["params"]["size"] == "50" for c in gets)
    assert report.calls == 1 + len(gets)


def test_total_count_of_group_date_rows_is_accepted_too(airbridge_api, clean_sandbox):
    sandbox_airbridge.configure(clean_sandbox, total_count_unit="group_date_rows")
    (task,) = airbridge_api.fetch_revenue([recent(4), recent(3), recent(2)]).tasks
    assert len(task.rows) == 8 and task.total_count == 8 * 3 == task.date_rows


def test_the_printed_page_as_the_only_page_fails_on_its_total_count(airbridge_api, clean_sandbox):
    # One group row with one date, totalCount 48 and hasNext false: 47 rows would be missing.
    serve_printed(clean_sandbox, example("airbridge_revenue_result_response"))
    api = airbridge_api.model_copy(update={"group_by": ["channel"]})
    with pytest.raises(AirbridgeResponseError) as caught:
        api.fetch_revenue(PRINTED_DAYS)
    message = str(caught.value)
    assert ("Airbridge reported totalCount=48 on every page but paging returned 1 group rows (1 group-date "
            "rows) in 1 page(s), nothing was loaded") in message
    assert APP in message and "2021-11-01..2021-11-08" in message and PRINTED_TASK in message
    # The switch is named as it is set: a setting, not run config.
    assert "set AIRBRIDGE_TOTAL_COUNT_MISMATCH=warn to page by hasNext alone" in message


def test_with_total_count_mismatch_warn_paging_relies_on_has_next(airbridge_api, clean_sandbox, caplog):
    serve_printed(clean_sandbox, example("airbridge_revenue_result_response"))
    api = airbridge_api.model_copy(update={"group_by": ["channel"], "total_count_mismatch": "warn"})
    with caplog.at_level(logging.WARNING, logger="adpipes.airbridge"):
        (task,) = api.fetch_revenue(PRINTED_DAYS).tasks
    assert len(task.rows) == 1 and task.rows[0].dates[0].total.revenue.value == 10
    assert task.total_count == 48
    assert task.total_count_mismatch == {"task_id": PRINTED_TASK, "range": "2021-11-01..2021-11-08",
                                         "total_count": 48, "group_rows": 1, "group_date_rows": 1, "pages": 1}
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "totalCount=48 on every page but paging returned 1 group rows" in warning and PRINTED_TASK in warning
    assert "AIRBRIDGE_TOTAL_COUNT_MISMATCH=warn" in warning and "total_count check" in warning


# The result set moved while paging: rows may have been skipped. Even when the last page's count
# matches the rows received (3 then 2, two group rows), and whatever the switch says.
@pytest.mark.parametrize("mode", ["fail", "warn"])
def test_a_total_count_that_changes_between_pages_always_fails(airbridge_api, clean_sandbox, mode):
    first = example("airbridge_revenue_result_response")
    first["data"]["hasNext"] = True
    first["data"]["metadata"]["totalCount"] = 3
    second = copy.deepcopy(first)
    second["data"]["hasNext"] = False
    second["data"]["metadata"]["totalCount"] = 2
    second["data"]["stats"]["rows"][0]["metadata"] = ["other channel"]
    serve_printed(clean_sandbox, first, second)
    api = airbridge_api.model_copy(update={"group_by": ["channel"], "total_count_mismatch": mode})
    with pytest.raises(AirbridgeResponseError) as caught:
        api.fetch_revenue(PRINTED_DAYS)
    message = str(caught.value)
    assert ("totalCount changed between pages (3 from page 1, 2 from page 2; paging returned 2 group rows "
            "(2 group-date rows) in 2 page(s))") in message
    assert "rows may have been skipped" in message and PRINTED_TASK in message
    assert "Nothing was loaded, whatever AIRBRIDGE_TOTAL_COUNT_MISMATCH says" in message


def test_the_printed_page_with_a_matching_count_is_read_as_printed(airbridge_api, clean_sandbox):
    page = example("airbridge_revenue_result_response")
    page["data"]["metadata"]["totalCount"] = 1
    serve_printed(clean_sandbox, page)
    (task,) = airbridge_api.model_copy(update={"group_by": ["channel"]}).fetch_revenue(PRINTED_DAYS).tasks
    assert task.task_id == PRINTED_TASK and task.ended_at == "2022-01-17T19:10:00.286939+09:00"
    assert task.rows[0].dates[0].total.revenue.value == 10
    assert [n.code for n in task.notifications] == ["AGG_DATA_MASKING_BY_FACEBOOK"]


def test_metadata_that_does_not_match_the_requested_group_bys_fails(airbridge_api, clean_sandbox):
    page = example("airbridge_revenue_result_response")
    page["data"]["metadata"]["totalCount"] = 1
    serve_printed(clean_sandbox, page)
    # Asked for channel and campaign, served one metadata value.
    with pytest.raises(AirbridgeResponseError) as caught:
        airbridge_api.fetch_revenue(PRINTED_DAYS)
    message = str(caught.value)
    assert PRINTED_TASK in message and "data.stats.rows[0].metadata holds 1 value(s)" in message
    assert "['channel', 'campaign']" in message


def test_keys_the_document_does_not_print_are_kept_with_their_values(airbridge_api, clean_sandbox):
    page = example("airbridge_revenue_result_response")
    page["data"]["metadata"]["totalCount"] = 2
    page["data"]["hasNext"] = True
    page["data"]["region"] = "kr"
    page["notification"][0]["link"] = "https://example.com/masking"
    page["data"]["stats"]["rows"][0]["rows"][0]["adCost"] = {"value": 3}
    second = copy.deepcopy(page)
    second["data"]["hasNext"] = False
    second["data"]["region"] = "jp"
    second["data"]["stats"]["rows"][0]["metadata"] = ["other channel"]
    serve_printed(clean_sandbox, page, second)
    (task,) = airbridge_api.model_copy(update={"group_by": ["channel"]}).fetch_revenue(PRINTED_DAYS).tasks
    assert task.unknown_fields == {"data.region", "notification[].link", "data.stats.rows[].rows[].adCost"}
    # Page-level keys keep every value, each with the pages that carried it.
    assert task.page_fields == [
        {"answer": "result page", "pages": [1], "path": "data.region", "value": "kr"},
        {"answer": "result page", "pages": [1, 2], "path": "notification[0].link",
         "value": "https://example.com/masking"},
        {"answer": "result page", "pages": [2], "path": "data.region", "value": "jp"},
    ]
    # Keys in group rows travel with the row they came in.
    assert [d.extra_fields for r in task.rows for d in r.dates] == [{"rows[].adCost": {"value": 3}}] * 2


def printed_page(total_count: int = 1) -> dict:
    """The printed page, its totalCount matching the one group row it holds."""
    page = example("airbridge_revenue_result_response")
    page["data"]["metadata"]["totalCount"] = total_count
    return page


# Nothing the document prints has an empty list there, and either would leave figures without a
# table row: a date's totals (no Day-N value), a group's figures and undocumented keys (no date).
@pytest.mark.parametrize(("empty", "where", "printed"), [
    ("values", 'group row 0 {"channel": "<groupBy>"}, date 2021-11-01 came with an empty values list',
     "prints a values list for every date"),
    ("rows", 'group row 1 {"channel": "no dates"} came with an empty rows list (no dates)',
     "prints every group row with its dates in rows[]"),
], ids=["values", "rows"])
def test_an_empty_values_or_rows_list_fails_naming_where_and_what_to_do(airbridge_api, clean_sandbox, empty,
                                                                       where, printed):
    page = printed_page()
    group = page["data"]["stats"]["rows"][0]
    if empty == "values":
        group["rows"][0]["values"] = []
    else:
        page["data"]["metadata"]["totalCount"] = 2
        page["data"]["stats"]["rows"].append({**copy.deepcopy(group), "rows": [], "metadata": ["no dates"],
                                              "segment": "x"})
    serve_printed(clean_sandbox, page)
    with pytest.raises(AirbridgeResponseError) as caught:
        airbridge_api.model_copy(update={"group_by": ["channel"]}).fetch_revenue(PRINTED_DAYS)
    message = str(caught.value)
    assert APP in message and "2021-11-01..2021-11-08" in message and PRINTED_TASK in message
    assert where in message and printed in message and "Nothing was loaded" in message
    assert f"Re-run the partition(s); if it persists, report it to Airbridge with the task id {PRINTED_TASK}" in message


def pin_today(monkeypatch, day: dt.date) -> None:
    """The client's today (app timezone) is ``day``."""
    monkeypatch.setattr(AirbridgeApi, "today", lambda self: day)


# The printed date 2021-11-01 has 4 values, Days 0..3: they exist once 3 days have passed.
@pytest.mark.parametrize(("today", "fails"), [(dt.date(2021, 11, 3), True), (dt.date(2021, 11, 4), False)])
def test_day_n_values_beyond_the_days_passed_fail(airbridge_api, clean_sandbox, monkeypatch, today, fails):
    pin_today(monkeypatch, today)
    serve_printed(clean_sandbox, printed_page())
    api = airbridge_api.model_copy(update={"group_by": ["channel"]})
    if not fails:
        (task,) = api.fetch_revenue([PRINTED_DAYS[0]]).tasks
        assert len(task.rows[0].dates[0].values) == 4
        return
    with pytest.raises(AirbridgeResponseError) as caught:
        api.fetch_revenue([PRINTED_DAYS[0]])
    message = str(caught.value)
    assert APP in message and PRINTED_TASK in message and '{"channel": "<groupBy>"}, date 2021-11-01' in message
    assert ("has 4 Day-N values, but only 2 day(s) have passed since 2021-11-01 (today is 2021-11-03 in "
            "Asia/Seoul, the app's timezone)") in message
    assert "at most Days 0..2 (3 values)" in message and "nothing was loaded" in message


def test_today_is_taken_once_per_run_after_the_answers(airbridge_api, clean_sandbox, monkeypatch):
    # Asked on 2021-11-03; midnight passes while Airbridge computes the tasks, whose answers
    # rightly hold Day 3 of 2021-11-01. A "today" taken before the answers would refuse it.
    pages_served_at_each_today: list[int] = []

    def today(self) -> dt.date:
        served = len(revenue_calls(clean_sandbox, "GET"))
        pages_served_at_each_today.append(served)
        return dt.date(2021, 11, 4) if served else dt.date(2021, 11, 3)

    monkeypatch.setattr(AirbridgeApi, "today", today)
    first, second = printed_page(), printed_page()
    second["data"]["stats"]["rows"][0]["rows"][0]["date"] = "2021-11-02"
    second["data"]["stats"]["rows"][0]["rows"][0]["values"].pop()
    sandbox_airbridge.configure(clean_sandbox, next_task_ids=[PRINTED_TASK, PRINTED_TASK],
                                canned_answers=[first, second])
    api = airbridge_api.model_copy(update={"group_by": ["channel"], "max_days_per_task": 1})
    report = api.fetch_revenue(PRINTED_DAYS[:2])
    assert [len(t.rows[0].dates[0].values) for t in report.tasks] == [4, 3]
    # Once before any call (the query's limits), then once for the whole run (both tasks),
    # after the last answer.
    assert pages_served_at_each_today == [0, 2]


def test_a_padded_answer_from_the_sandbox_fails_whenever_it_runs(airbridge_api, clean_sandbox):
    # Ten values for a day two (or, past midnight, three) days old: never a flaky boundary.
    page = printed_page()
    date_row = page["data"]["stats"]["rows"][0]["rows"][0]
    date_row["date"] = recent(2).isoformat()
    date_row["values"] += [{"value": 5, "isMasked": False}] * 6
    serve_printed(clean_sandbox, page)
    with pytest.raises(AirbridgeResponseError, match=r"has 10 Day-N values, but only [23] day\(s\) have passed"):
        airbridge_api.model_copy(update={"group_by": ["channel"]}).fetch_revenue([recent(2)])


# The printed date has 4 values, Days 0..3: too many for intervalsPeriod 2, right for 3; and the
# review's case, 200 values for the default intervalsPeriod 30.
@pytest.mark.parametrize(("intervals", "count", "fails"), [(2, 4, True), (3, 4, False), (30, 200, True)])
def test_more_day_n_values_than_intervals_period_allows_fail(airbridge_api, clean_sandbox, intervals, count, fails):
    page = printed_page()
    values = page["data"]["stats"]["rows"][0]["rows"][0]["values"]
    values += [{"value": 5, "isMasked": False}] * (count - len(values))
    serve_printed(clean_sandbox, page)
    api = airbridge_api.model_copy(update={"group_by": ["channel"], "intervals_period": intervals})
    if not fails:
        (task,) = api.fetch_revenue(PRINTED_DAYS).tasks
        assert [f.value for f in task.rows[0].dates[0].values] == [1, 2, 3, 4]
    else:
        with pytest.raises(AirbridgeResponseError) as caught:
            api.fetch_revenue(PRINTED_DAYS)
        message = str(caught.value)
        assert PRINTED_TASK in message and 'group row 0 {"channel": "<groupBy>"}, date 2021-11-01' in message
        assert f"has {count} Day-N values, but intervalsPeriod={intervals} was requested" in message
        assert f"Days 0..{intervals} ({intervals + 1} values)" in message and "nothing was loaded" in message
    (post,) = revenue_calls(clean_sandbox, "POST")
    assert post["body"]["intervalsPeriod"] == intervals


def test_a_group_and_date_served_twice_fails(airbridge_api, clean_sandbox):
    page = example("airbridge_revenue_result_response")
    page["data"]["metadata"]["totalCount"] = 2
    first = copy.deepcopy(page)
    first["data"]["hasNext"] = True
    serve_printed(clean_sandbox, first, page)
    with pytest.raises(AirbridgeResponseError, match=r"group row 1 \{\"channel\": \"<groupBy>\"\}, date "
                                                     r"2021-11-01 was served twice"):
        airbridge_api.model_copy(update={"group_by": ["channel"]}).fetch_revenue(PRINTED_DAYS)


def test_a_server_that_never_stops_paging_hits_the_page_cap(airbridge_api, clean_sandbox):
    sandbox_airbridge.configure(clean_sandbox, groups_per_day=40)
    api = airbridge_api.model_copy(update={"page_size": 2, "max_pages": 3})
    with pytest.raises(AirbridgeResponseError) as caught:
        api.fetch_revenue([recent(2)])
    message = str(caught.value)
    assert "hasNext=true after 3 pages" in message and "max_pages=3" in message
    (post,) = revenue_calls(clean_sandbox, "POST")
    assert APP in message and recent(2).isoformat() in message and post["task_id"] in message
    assert [c["params"]["skip"] for c in revenue_calls(clean_sandbox, "GET")][-3:] == ["0", "2", "4"]


def test_an_answer_without_a_known_status_fails_naming_its_keys(airbridge_api, clean_sandbox):
    serve_printed(clean_sandbox, {"data": {"state": "DONE"}})
    with pytest.raises(AirbridgeResponseError, match=r"no known status at data\.status .*\['state'\]"):
        airbridge_api.fetch_revenue([recent(2)])


# -- the documented limits, before any call ------------------------------------------------------

@pytest.mark.parametrize(("update", "message"), [
    ({"intervals_period": 121}, "intervalsPeriod=121 must be a whole number 0..120 for granularity day"),
    ({"aggregation_type": "on_day"}, "aggregationType='on_day' must be one of cumulative, on-day"),
    ({"metric": "app_ltv"}, "metric='app_ltv' must be one of app_revenue, app_user_count"),
    ({"metric": "app_roas", "aggregation_type": "on-day"}, "metric app_roas supports aggregationType cumulative only"),
    ({"start_events": ["app_open"]}, "startEvents ['app_open'] are not documented values"),
    ({"return_events": []}, "returnEvents=[] must be a non-empty list"),
    ({"group_by": []}, "groupBy.fields=[] must list at least 1"),
    ({"group_by": ["channel", "day_n"]}, "group_by keys ['day_n'] are columns of airbridge.revenue"),
    ({"filters": [{"field": "campaign", "filterType": "LIKE", "values": ["x"]}]}, "filterType='LIKE' must be one of IN"),
    ({"sorts": [{"fieldName": "cost", "isAscending": True}]}, "sorts[0].fieldName='cost' must be a requested group-by"),
    ({"max_days_per_task": 93}, "max_days_per_task=93 must be 1..92"),
    ({"currency": "won"}, "currency='won' must be an ISO 4217 code"),
])
def test_documented_limits_are_checked_before_any_call(airbridge_api, clean_sandbox, update, message):
    with pytest.raises(AirbridgeQueryError) as caught:
        airbridge_api.model_copy(update=update).fetch_revenue([recent(2)])
    assert message in str(caught.value) and "nothing was sent" in str(caught.value)
    assert clean_sandbox.calls() == []


def test_future_days_and_long_ranges_are_refused_before_any_call(airbridge_api, clean_sandbox):
    with pytest.raises(AirbridgeQueryError, match=r"to=\S+ is in the future"):
        airbridge_api.fetch_revenue([recent(-1)])
    days = [recent(2) - dt.timedelta(days=n) for n in range(93)]
    with pytest.raises(AirbridgeQueryError, match="spans 93 days; at most 92"):
        airbridge_api.model_copy(update={"max_days_per_task": 93}).fetch_revenue(days)
    assert clean_sandbox.calls() == []


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
    assert day_ranges(days) == [(start, start + dt.timedelta(days=91)),
                                (start + dt.timedelta(days=92), start + dt.timedelta(days=99))]
    gap = day_ranges([start, start + dt.timedelta(days=2)])
    assert gap == [(start, start), (start + dt.timedelta(days=2), start + dt.timedelta(days=2))]


# -- settings --------------------------------------------------------------------------------------

def test_a_group_by_that_is_a_table_column_fails_at_load():
    with pytest.raises(ConfigurationError) as caught:
        airbridge_api_from_settings(load_settings({"AIRBRIDGE_GROUP_BY": "channel,currency"}))
    assert "AIRBRIDGE_GROUP_BY" in str(caught.value) and "currency" in str(caught.value)


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_the_total_count_switch_comes_from_settings(env):
    # Scheduled runs and UI launches have no run config for it: the setting is the switch.
    environ = prod_environ() if env == "prod" else {"ADPIPES_ENV": "dev"}
    assert airbridge_api_from_settings(load_settings(environ)).total_count_mismatch == "fail"
    switched = load_settings(environ | {"AIRBRIDGE_TOTAL_COUNT_MISMATCH": "warn"})
    assert airbridge_api_from_settings(switched).total_count_mismatch == "warn"


def test_group_by_and_currency_come_from_settings():
    api = airbridge_api_from_settings(load_settings({"AIRBRIDGE_GROUP_BY": "channel,campaign,ad_group"}))
    assert api.group_by == ["channel", "campaign", "ad_group"] and api.currency == "KRW"
    assert api.request_body(recent(2), recent(2))["sorts"][-1] == {"fieldName": "ad_group", "isAscending": True}


# -- task failures, retries, auth ---------------------------------------------------------------

@pytest.mark.parametrize(("kind", "status"), [("task_failure", "FAILURE"), ("task_canceled", "CANCELED")])
def test_failed_or_canceled_task_names_task_app_and_range(airbridge_api, clean_sandbox, kind, status):
    clean_sandbox.add_faults(kind=kind, app_id=APP, report="revenue")
    with pytest.raises(AirbridgeTaskFailedError) as caught:
        airbridge_api.fetch_revenue([recent(2)])
    (post,) = revenue_calls(clean_sandbox, "POST")
    message = str(caught.value)
    assert post["task_id"] in message and caught.value.task_id == post["task_id"]
    assert APP in message and recent(2).isoformat() in message and f"data.status {status}" in message
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
    assert len(report.tasks[0].rows) == 8
    statuses = [c["status"] for c in revenue_calls(clean_sandbox)]
    assert statuses[:3] == [429, 429, 200]
    assert "HTTP 429" in caplog.text and clean_sandbox.airbridge_token not in caplog.text


def test_persistent_503_gives_a_clear_error(airbridge_api, clean_sandbox):
    clean_sandbox.add_faults(kind="503", app_id=APP, report="revenue", times=10)
    with pytest.raises(AirbridgeTransientError, match="503"):
        airbridge_api.fetch_revenue([recent(2)])
    assert len(revenue_calls(clean_sandbox)) == airbridge_api.max_attempts


def test_wrong_token_is_an_auth_error_without_the_token(airbridge_api, clean_sandbox):
    api = airbridge_api.model_copy(update={"api_token": "not-the-token-123"})
    with pytest.raises(AirbridgeAuthError) as caught:
        api.fetch_revenue([recent(2)])
    assert "AIRBRIDGE_API_TOKEN" in str(caught.value)
    assert "not-the-token-123" not in str(caught.value) and "not-the-token-123" not in repr(api)


def test_notifications_are_kept_per_task(airbridge_api, clean_sandbox):
    sandbox_airbridge.configure(clean_sandbox, notifications=["SAN_PERIOD_LIMIT"])
    (task,) = airbridge_api.fetch_revenue([recent(2)]).tasks
    assert [(n.code, n.type) for n in task.notifications] == [
        (sandbox_airbridge.MASKING_CODE, "info"), ("SAN_PERIOD_LIMIT", "info")]
