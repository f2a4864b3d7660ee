"""The Cohort API client and the sandbox against the vendor documents: the printed request bodies,
the request the client sends, the KPI x function table, the documented errors and limits, and the
answer shapes the client refuses. Real HTTP to the sandbox, the call ledger on a real PostgreSQL."""

import datetime as dt
import json
import time
from zoneinfo import ZoneInfo

import psycopg
import pytest
import requests

from adpipes.appsflyer.api import AppsFlyerAuthError, AppsFlyerCohortRequestError, AppsFlyerNotFoundError
from adpipes.appsflyer.cohort_api import (
    AppsFlyerCohortApi,
    CohortFormatError,
    CohortQuery,
    CohortTruncatedError,
    parse_cohort_answer,
)
from adpipes.dev.sandbox.appsflyer_cohort import cohort_cells, cohort_records, configure_cohort, validate_cohort_body
from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID
from adpipes_tests.fixtures.sandbox import appsflyer_client_settings
from adpipes_tests.fixtures.vendor_examples import example, kind

TZ = "Asia/Seoul"
PRINTED_REQUESTS = (
    "cohort_curl_request", "cohort_curl_request_zh", "cohort_python_request",
    "cohort_retention_use_case_request", "cohort_campaign_purchase_use_case_request",
    "cohort_period_filter_request",
)
# The documents' enums (the support page's tables and the OpenAPI file).
DOCUMENTED = {
    "cohort_type": {"user_acquisition", "retargeting", "unified"},
    "aggregation_type": {"cumulative", "on_day"},
    "groupings": {"af_ad", "af_ad_id", "c", "af_c_id", "af_channel", "pid", "af_sub1", "af_keywords",
                  "af_prt", "cohort_type", "site_id", "attributed_touch_type", "af_adset", "af_adset_id",
                  "geo", "date"},
}
REQUIRED_FIELDS = ("cohort_type", "from", "to", "groupings", "kpis", "aggregation_type")
# The record keys of each printed request's KPI, per period N: its documented functions (the KPI x
# function table) as {kpi}_{function}_day_{N}, an event's Sum as footnote 3 spells it
# (sum_event_name, with the _day_{N} every other key has). Every printed sessions request is on_day.
PRINTED_KPI_KEYS = {
    "sessions": ("sessions_count_day_{n}", "sessions_rate_day_{n}", "sessions_unique_users_day_{n}"),
    "roas": ("roas_rate_day_{n}",),
    "revenue": ("revenue_count_day_{n}", "revenue_sum_day_{n}"),
    "Checkout Start": ("checkout_start_count_day_{n}", "checkout_start_cvr_day_{n}", "sum_checkout_start_day_{n}",
                       "checkout_start_unique_users_day_{n}"),
}


def today() -> dt.date:
    return dt.datetime.now(ZoneInfo(TZ)).date()


def make_api(sandbox, **overrides) -> AppsFlyerCohortApi:
    return AppsFlyerCohortApi(**appsflyer_client_settings(sandbox, **{"cohort_rate_window_seconds": 1.0, **overrides}))


def query_for(api: AppsFlyerCohortApi, app_id: str, days_ago: int = 3, kpi: str | None = None,
              cohort_type: str = "user_acquisition") -> CohortQuery:
    day = (today() - dt.timedelta(days=days_ago)).isoformat()
    kpi = kpi or api.kpis[0]
    return CohortQuery(app_id, dt.date.fromisoformat(day), kpi, cohort_type, api.request_body(day, kpi, cohort_type))


def cohort_calls(sandbox) -> list[dict]:
    return [c for c in sandbox.calls() if c["report"] == "cohort"]


@pytest.fixture
def ledger(storage_resources):
    return storage_resources["api_calls"]


def post(sandbox, body, answer_format: str = "json") -> requests.Response:
    return requests.post(
        f"{sandbox.base_url}/api/cohorts/v1/data/app/{SANDBOX_ANDROID_APP_ID}",
        params={"format": answer_format}, data=json.dumps(body),
        headers={"Content-Type": "application/json", "Accept": "application/json",
                 "Authorization": f"Bearer {sandbox.appsflyer_token}"},
        timeout=30,
    )


def refusal(sandbox, ledger, error: type[Exception], api: dict, **behaviour) -> str:
    """The message of ``error`` raised by a query of a client with ``api`` fields, the sandbox
    behaving as ``behaviour`` says (see configure_cohort)."""
    configure_cohort(sandbox, **behaviour)
    client = make_api(sandbox, **api)
    with pytest.raises(error) as failure:
        client.fetch_cohort(query_for(client, SANDBOX_IOS_APP_ID), ledger=ledger)
    message = str(failure.value)
    assert sandbox.appsflyer_token not in message
    return message


def in_served_window(body: dict, to: dt.date) -> dict:
    """The printed body with its range moved to end on ``to`` (same length)."""
    first, last = dt.date.fromisoformat(body["from"]), dt.date.fromisoformat(body["to"])
    return {**body, "from": (to - (last - first)).isoformat(), "to": to.isoformat()}


# -- the printed requests ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", PRINTED_REQUESTS)
def test_every_printed_request_passes_the_sandbox_validation(name):
    body = example(name)
    assert validate_cohort_body(body) == body


@pytest.mark.parametrize("name", PRINTED_REQUESTS)
def test_printed_requests_over_http_history_limit_then_answered(name, clean_sandbox):
    printed = example(name)
    refused = post(clean_sandbox, printed)
    # The printed dates (2019-2021) are older than the 720 days the documents serve.
    assert refused.status_code == 422
    error = refused.json()
    assert set(error) == {"error", "expose"} and error["expose"] is False
    assert "from" in error["error"] and "720 days" in error["error"]

    # Periods up to 60 are complete for a range ending 70 days ago.
    body = in_served_window(printed, today() - dt.timedelta(days=70))
    answered = post(clean_sandbox, body)
    assert answered.status_code == 200, answered.text
    payload = answered.json()
    assert set(payload) == {"query", "results"} and payload["query"] == body
    records = payload["results"]
    assert records, f"the sandbox has no data for the filters {body.get('filters')}"
    # Complete periods only: N < today - to (70), of the filter or the documented default.
    periods = [n for n in body.get("filters", {}).get("period", [*range(31), 60, 90, 180]) if n < 70]
    expected = {key.format(n=n) for key in PRINTED_KPI_KEYS[body["kpis"][0]] for n in periods}
    for record in records:
        assert set(record) == set(body["groupings"]) | {"users", "cost", "ecpi"} | expected
    # Each value of a filter on a grouped dimension has data (e.g. both media sources asked for).
    for dimension, wanted in body.get("filters", {}).items():
        if dimension in body["groupings"]:
            assert {r[dimension] for r in records} == ({wanted} if isinstance(wanted, str) else set(wanted))
    # CSV by default: the same records as a table.
    assert post(clean_sandbox, body, "csv").headers["Content-Type"] == "text/csv"


def test_sandbox_answers_the_documented_422s(clean_sandbox):
    body = in_served_window(example("cohort_python_request"), today() - dt.timedelta(days=5))
    refusals = {
        "uninstalls with unified": {**body, "kpis": ["uninstalls"], "cohort_type": "unified"},
        "two KPIs": {**body, "kpis": ["roas", "revenue"]},
        "partial_data with on_day": {**body, "aggregation_type": "on_day", "partial_data": True},
        "a string boolean": {**body, "per_user": "false"},
        "min_cohort_size 0": {**body, "min_cohort_size": 0},
        "period 181": {**body, "filters": {"period": [181]}},
        "8 groupings": {**body, "groupings": ["pid", "c", "geo", "af_prt", "af_ad", "af_adset", "date", "site_id"]},
        "61 days": in_served_window(
            {**body, "from": "2020-01-01", "to": "2020-03-01"}, today() - dt.timedelta(days=5)),
        "missing cohort_type": {k: v for k, v in body.items() if k != "cohort_type"},
    }
    for what, refused in refusals.items():
        answer = post(clean_sandbox, refused)
        assert answer.status_code == 422, what
        assert answer.json()["expose"] is False
    assert post(clean_sandbox, {**body, "filters": {"geo": "US", "pid": ["Meta ads"]}}).status_code == 200


def test_sandbox_cohorts_come_from_several_countries(clean_sandbox):
    body = in_served_window(example("cohort_python_request"), today() - dt.timedelta(days=5))
    by_geo = post(clean_sandbox, {**body, "groupings": ["geo"]}).json()["results"]
    (whole,) = post(clean_sandbox, {**body, "groupings": ["cohort_type"]}).json()["results"]
    assert {r["geo"] for r in by_geo} == {"KR", "US", "CN"}
    assert sum(r["users"] for r in by_geo) == whole["users"]
    us = post(clean_sandbox, {**body, "groupings": ["geo"], "filters": {"geo": "US"}}).json()["results"]
    assert [r["geo"] for r in us] == ["US"] and 0 < us[0]["users"] < whole["users"] / 2


# -- the request the client sends -----------------------------------------------------------------

def test_the_client_sends_every_documented_field_with_documented_values(clean_sandbox, ledger):
    api = make_api(clean_sandbox, kpis=["roas"], min_cohort_size=3, preferred_currency=True)
    api.fetch_cohort(query_for(api, SANDBOX_IOS_APP_ID), ledger=ledger)
    (call,) = cohort_calls(clean_sandbox)
    body = call["body"]
    assert call["status"] == 200 and call["params"] == {"format": "json"}
    assert call["content_type"] == "application/json" and call["accept"] == "application/json"
    assert all(field in body for field in REQUIRED_FIELDS)
    assert body["cohort_type"] in DOCUMENTED["cohort_type"]
    assert body["aggregation_type"] in DOCUMENTED["aggregation_type"]
    assert set(body["groupings"]) <= DOCUMENTED["groupings"] and 1 <= len(body["groupings"]) <= 7
    assert body["kpis"] == ["roas"] and body["from"] == body["to"]
    assert all(isinstance(p, int) and 0 <= p <= 180 for p in body["filters"]["period"])
    assert body["min_cohort_size"] == 3 and body["preferred_currency"] is True and body["partial_data"] is False
    # Every field is printed in one of the documents' examples, with the same kind of value.
    printed: dict[str, str] = {}
    for name in PRINTED_REQUESTS:
        printed.update({key: kind(value) for key, value in example(name).items()})
    assert {key: kind(value) for key, value in body.items()} == {key: printed[key] for key in body}


def test_preferred_currency_converts_money_and_min_cohort_size_leaves_small_cohorts_out(clean_sandbox, ledger):
    usd, preferred = make_api(clean_sandbox, kpis=["revenue"]), make_api(clean_sandbox, kpis=["revenue"],
                                                                         preferred_currency=True)
    in_usd = usd.fetch_cohort(query_for(usd, SANDBOX_ANDROID_APP_ID), ledger=ledger)
    in_krw = preferred.fetch_cohort(query_for(preferred, SANDBOX_ANDROID_APP_ID), ledger=ledger)
    pairs = list(zip(in_usd.periods, in_krw.periods, strict=True))
    assert pairs and all(a.functions["count"] == b.functions["count"] for a, b in pairs)
    assert all(b.functions["sum"] == pytest.approx(a.functions["sum"] * 1350, rel=1e-3) for a, b in pairs)
    assert all(b.cost == pytest.approx(a.cost * 1350, rel=1e-3) for a, b in pairs if a.cost is not None)

    smallest = min(p.users for p in in_usd.periods)
    large = make_api(clean_sandbox, kpis=["revenue"], min_cohort_size=smallest + 1)
    kept = large.fetch_cohort(query_for(large, SANDBOX_ANDROID_APP_ID), ledger=ledger)
    assert cohort_calls(clean_sandbox)[-1]["body"]["min_cohort_size"] == smallest + 1
    assert 0 < len(kept.periods) < len(in_usd.periods) and all(p.users > smallest for p in kept.periods)


# -- what the documents' KPI x function table promises -------------------------------------------

@pytest.mark.parametrize("kpi, functions", [
    ("revenue", {"count", "sum"}), ("roas", {"rate"}), ("ROAS", {"rate"}), ("roi", {"rate"}),
    ("sessions", {"count", "rate"}), ("uninstalls", {"count", "rate"}),
    ("Checkout Start", {"count", "cvr", "sum", "unique_users"}),
])
def test_each_kpi_lands_its_documented_functions(kpi, functions, clean_sandbox, ledger):
    api = make_api(clean_sandbox, kpis=[kpi])
    answer = api.fetch_cohort(query_for(api, SANDBOX_IOS_APP_ID, days_ago=4), ledger=ledger)
    assert {p.period for p in answer.periods} == {0, 1, 2, 3}  # complete periods of a 4-day-old cohort
    assert all(set(p.functions) == functions and not p.extra_functions for p in answer.periods)
    assert answer.records == len({(p.media_source, p.campaign) for p in answer.periods}) == len(
        cohort_cells(SANDBOX_IOS_APP_ID))


@pytest.mark.parametrize("form", ["footnote", "function"])
def test_an_events_sum_is_read_in_either_spelling(form, clean_sandbox, ledger):
    """Footnote 3: an event's Sum shows as sum_event_name (the sandbox's default); the other
    functions' spelling {event}_sum_day_N is read too, into the same column."""
    configure_cohort(clean_sandbox, event_sum_form=form)
    api = make_api(clean_sandbox, kpis=["Checkout Start"])
    query = query_for(api, SANDBOX_IOS_APP_ID, days_ago=4)
    answer = api.fetch_cohort(query, ledger=ledger)
    (call,) = cohort_calls(clean_sandbox)
    # What the sandbox served, keyed as the form asked: its own answer to the body sent.
    records = cohort_records(SANDBOX_IOS_APP_ID, call["body"], today(), {"event_sum_form": form})
    served = {(r["pid"], r["c"], int(k.rsplit("_", 1)[1])): v for r in records
              for k, v in r.items() if k.startswith("sum_" if form == "footnote" else "checkout_start_sum_")}
    assert served and {(p.media_source, p.campaign, p.period): p.functions["sum"] for p in answer.periods} == served
    assert not answer.unknown_functions


def test_an_events_sum_in_both_spellings_at_once_fails_loudly(clean_sandbox, ledger):
    message = refusal(clean_sandbox, ledger, CohortFormatError, {"kpis": ["Checkout Start"]}, event_sum_form="both")
    assert "function 'sum' of period 0 twice" in message
    assert "'sum_checkout_start_day_0'" in message and "'checkout_start_sum_day_0'" in message


def test_unknown_top_level_answer_keys_are_listed_not_refused(clean_sandbox, ledger):
    # Through the sandbox's HTTP control, as a developer would set it.
    control = requests.post(f"{clean_sandbox.base_url}/_sandbox/appsflyer/cohort",
                            json={"extra_answer_keys": {"warnings": ["data delayed"], "next": None}}, timeout=10)
    assert control.status_code == 200, control.text
    api = make_api(clean_sandbox)
    answer = api.fetch_cohort(query_for(api, SANDBOX_IOS_APP_ID), ledger=ledger)
    assert answer.unknown_keys == {"warnings": ["data delayed"], "next": None} and answer.periods
    clean_sandbox.reset()
    assert api.fetch_cohort(query_for(api, SANDBOX_IOS_APP_ID), ledger=ledger).unknown_keys == {}


# -- errors -------------------------------------------------------------------------------------------

def test_a_422_naming_roas_says_the_documents_disagree_on_its_spelling(clean_sandbox, ledger):
    message = refusal(clean_sandbox, ledger, AppsFlyerCohortRequestError, {"kpis": ["roas"]}, refused_kpis=["roas"])
    assert SANDBOX_IOS_APP_ID in message and "KPI 'roas'" in message
    assert "Invalid value: roas for key: kpis" in message
    assert "documents disagree" in message and "Write 'ROAS' instead of 'roas' in APPSFLYER_COHORT_KPIS" in message
    assert len(cohort_calls(clean_sandbox)) == 1  # a refused body is not retried
    # The other spelling goes through.
    other = make_api(clean_sandbox, kpis=["ROAS"])
    assert other.fetch_cohort(query_for(other, SANDBOX_IOS_APP_ID), ledger=ledger).periods


def test_a_422_naming_an_event_says_event_names_are_case_sensitive(clean_sandbox, ledger):
    message = refusal(clean_sandbox, ledger, AppsFlyerCohortRequestError, {"kpis": ["checkout start"]},
                      refused_kpis=["checkout start"])
    assert "KPI 'checkout start'" in message and "case-sensitive" in message


def test_a_404_names_the_causes_the_documents_list(clean_sandbox, ledger):
    api = make_api(clean_sandbox)
    with pytest.raises(AppsFlyerNotFoundError) as failure:
        api.fetch_cohort(query_for(api, "com.not.in.this.account"), ledger=ledger)
    message = str(failure.value)
    for cause in ("firewall", "most recently issued", "dashboard", "My plan", "APPSFLYER_ANDROID_APP_ID"):
        assert cause in message
    assert clean_sandbox.appsflyer_token not in message and len(cohort_calls(clean_sandbox)) == 1


def test_a_401_says_the_token_is_malformed(clean_sandbox, ledger):
    clean_sandbox.add_faults(kind="token_revoked", report="cohort")
    message = refusal(clean_sandbox, ledger, AppsFlyerAuthError, {})
    assert "malformed" in message and "more than 700 characters" in message and "shorter" in message


def test_429_is_retried_and_every_request_is_counted(clean_sandbox, ledger, clean_databases):
    clean_sandbox.add_faults(kind="429", retry_after=0, report="cohort")
    api = make_api(clean_sandbox)
    answer = api.fetch_cohort(query_for(api, SANDBOX_IOS_APP_ID), ledger=ledger)
    assert [c["status"] for c in cohort_calls(clean_sandbox)] == [429, 200] and answer.calls == 2
    with psycopg.connect(clean_databases[1]) as conn:
        counted = conn.execute("SELECT app_id, report, calls, daily_quota FROM quota.api_calls").fetchall()
    assert counted == [("account", "cohort", 2, 50_000)]


# -- answers the client refuses ------------------------------------------------------------------

def test_an_unknown_record_key_fails_loudly(clean_sandbox, ledger):
    message = refusal(clean_sandbox, ledger, CohortFormatError, {}, extra_keys={"af_new_metric": 3})
    assert "key 'af_new_metric' is neither a requested grouping" in message


def test_a_missing_documented_function_fails_loudly(clean_sandbox, ledger):
    message = refusal(clean_sandbox, ledger, CohortFormatError, {"kpis": ["sessions"]}, drop_functions=["rate"])
    assert "period 0 is complete" in message and "['rate'] of KPI 'sessions'" in message
    assert "the documents promise every function of a KPI" in message


def test_an_undocumented_function_is_kept_aside(clean_sandbox, ledger):
    configure_cohort(clean_sandbox, extra_functions=["avg"])
    api = make_api(clean_sandbox)
    answer = api.fetch_cohort(query_for(api, SANDBOX_IOS_APP_ID), ledger=ledger)
    assert answer.unknown_functions == {"avg"}
    assert all(set(p.extra_functions) == {"avg"} and set(p.functions) == {"count", "sum"} for p in answer.periods)


@pytest.mark.parametrize("cap", [10_000, 30_000])
def test_an_answer_of_a_documented_row_cap_is_treated_as_truncated(cap, clean_sandbox, ledger):
    message = refusal(clean_sandbox, ledger, CohortTruncatedError, {"periods": [0]}, results_count=cap)
    assert f"exactly {cap} records" in message and "10000 on the Chinese page" in message
    assert "30000 on the Korean page" in message and "fewer groupings" in message


def answer_of(payload) -> bytes:
    return json.dumps(payload).encode()


def test_answer_shapes_outside_the_documents_are_refused():
    api = AppsFlyerCohortApi(api_token="t", base_url="http://127.0.0.1:1", periods=[0, 1])
    query = CohortQuery("com.example", dt.date(2026, 11, 1), "revenue", "user_acquisition",
                        api.request_body("2026-11-01", "revenue", "user_acquisition"))
    organic = {"date": "2026-11-01", "pid": "organic", "c": "None", "users": 10, "cost": "N/A", "ecpi": "N/A",
               "revenue_count_day_0": 2, "revenue_sum_day_0": 3.5, "revenue_count_day_1": 3, "revenue_sum_day_1": 4.0}
    parsed = parse_cohort_answer(answer_of({"query": {}, "results": [organic]}), query, [0, 1])
    # cost and ecpi may be empty (documented: no cost without installs); the campaign is kept as sent.
    assert [(p.period, p.cost, p.campaign, p.functions) for p in parsed.periods] == [
        (0, None, "None", {"count": 2.0, "sum": 3.5}), (1, None, "None", {"count": 3.0, "sum": 4.0})]

    def refused(payload, complete=(0, 1)) -> str:
        with pytest.raises(CohortFormatError) as failure:
            parse_cohort_answer(answer_of(payload), query, complete)
        return str(failure.value)

    assert "a JSON list" in refused([organic])
    assert "top-level keys ['data', 'query']" in refused({"query": {}, "data": [organic]})
    assert "lacks ['users']" in refused({"results": [{k: v for k, v in organic.items() if k != "users"}]})
    assert "lacks ['c']" in refused({"results": [{k: v for k, v in organic.items() if k != "c"}]})
    assert "'revenue_sum_day_1' is 'N/A'" in refused({"results": [{**organic, "revenue_sum_day_1": "N/A"}]})
    assert "dated '2026-11-02'" in refused({"results": [{**organic, "date": "2026-11-02"}]})
    assert "period 5, which was not requested" in refused({"results": [{**organic, "revenue_sum_day_5": 1}]})
    # Footnote 3's spelling belongs to event KPIs: for revenue it is an unknown key.
    assert "'sum_event_name' to in-app event KPIs only" in refused({"results": [{**organic, "sum_revenue_day_0": 1}]})
    # A period that is not complete yet may be absent; a complete one may not.
    young = {k: v for k, v in organic.items() if not k.endswith("_day_1")}
    assert len(parse_cohort_answer(answer_of({"results": [young]}), query, [0]).periods) == 1
    assert "period 1 is complete" in refused({"results": [young]})


def test_an_events_sum_key_as_footnote_3_spells_it_with_each_prefix_spelling():
    api = AppsFlyerCohortApi(api_token="t", base_url="http://127.0.0.1:1", periods=[0])
    query = CohortQuery("com.example", dt.date(2026, 11, 1), "Checkout Start", "user_acquisition",
                        api.request_body("2026-11-01", "Checkout Start", "user_acquisition"))
    record = {"date": "2026-11-01", "pid": "Meta ads", "c": "example_campaign_name", "users": 10, "cost": 5,
              "ecpi": 0.5, "checkout_start_count_day_0": 4, "checkout_start_cvr_day_0": 30.0,
              "checkout_start_unique_users_day_0": 3}
    for prefix in ("Checkout Start", "checkout start", "checkout_start"):
        for key in (f"sum_{prefix}_day_0", f"{prefix}_sum_day_0"):
            (period,) = parse_cohort_answer(answer_of({"results": [{**record, key: 12.5}]}), query, [0]).periods
            assert period.functions == {"count": 4, "cvr": 30.0, "unique_users": 3, "sum": 12.5}, key
    both = {**record, "sum_checkout_start_day_0": 12.5, "Checkout Start_sum_day_0": 12.5}
    with pytest.raises(CohortFormatError, match="gives function 'sum' of period 0 twice"):
        parse_cohort_answer(answer_of({"results": [both]}), query, [0])
    # Another function in the footnote's order is not a documented key.
    with pytest.raises(CohortFormatError, match="key 'count_checkout_start_day_0' is neither"):
        parse_cohort_answer(answer_of({"results": [{**record, "sum_checkout_start_day_0": 1,
                                                     "count_checkout_start_day_0": 4}]}), query, [0])


def test_calls_wait_for_the_accounts_rate_window(clean_sandbox, ledger):
    api = make_api(clean_sandbox, cohort_calls_per_minute=2, cohort_rate_window_seconds=1.0)
    query = query_for(api, SANDBOX_ANDROID_APP_ID)
    started = time.monotonic()
    for _ in range(3):
        api.fetch_cohort(query, ledger=ledger)
    assert time.monotonic() - started >= 0.95
    assert len(cohort_calls(clean_sandbox)) == 3
