"""Normalization of raw reports into raw_data (pure functions, no I/O)."""

import pandas as pd
import pyarrow as pa

from adpipes.appsflyer.schemas import RAW_REPORT_COLUMNS, raw_data_schema, snake_case
from adpipes.appsflyer.transform import snake_case_columns, unify_raw_reports


def _report(rows: list[dict[str, str]], extra: tuple[str, ...] = ()) -> pa.Table:
    headers = list(RAW_REPORT_COLUMNS) + list(extra)
    return pa.table({h: [r.get(h, "") for r in rows] for h in headers})


def test_snake_case_names():
    assert snake_case("Media Source") == "media_source"
    assert snake_case("Event Revenue USD") == "event_revenue_usd"
    assert snake_case("AppsFlyer ID") == "appsflyer_id"
    assert snake_case("Contributor 1 Touch Time") == "contributor_1_touch_time"
    assert snake_case("Loyal Users/Installs") == "loyal_users_installs"


def _unify(rows, platform="ios"):
    # The shape the archive hands raw_data: snake_case columns and the partition's report_date.
    table = _report(rows)
    frame = table.rename_columns(snake_case_columns(table.column_names)).to_pandas()
    frame.insert(0, "report_date", "2026-11-20")
    return unify_raw_reports([("in_app_events_report", frame)], timezone="Asia/Seoul",
                             app_ids={"ios": "id1", "android": "com.x"})


def test_unify_normalizes_values():
    rows = [
        {
            "Event Time": "2026-11-20 10:00:00", "Install Time": "2026-11-19 09:00:00",
            "Attributed Touch Time": "2026-11-19 08:59:00", "Event Name": "af_purchase",
            "Event Value": '{"af_revenue":"4.99","af_currency":"USD","af_receipt_id":2000000812345678901}',
            "Event Revenue": "4.99", "Event Revenue Currency": "USD", "WIFI": "True",
            "Is Retargeting": "0", "Is Primary Attribution": "true", "AppsFlyer ID": "af-1",
            "IDFA": "ABCD-EF", "Advertising ID": "", "Customer User ID": "1000000186.0",
            "Platform": "ios", "App ID": "",
        },
        {
            "Event Time": "2026-11-20 11:00:00", "Event Name": "af_login", "Event Value": '{"a":"1"}',
            "WIFI": "false", "AppsFlyer ID": "af-2", "Advertising ID": "gaid-2", "IDFA": "",
            "Customer User ID": "user-abc", "Platform": "iOS", "App ID": "id1",
            "Event Revenue": "-1.50",
        },
    ]
    result = _unify(rows)
    frame = result.frame
    assert list(frame.columns) == list(raw_data_schema().columns)
    first, second = frame.iloc[0], frame.iloc[1]
    assert first["event_value"] == "2000000812345678901"
    assert pd.isna(second["event_value"])
    assert first["advertising_id"] == "ABCD-EF" and second["advertising_id"] == "gaid-2"
    assert first["wifi"] is True or first["wifi"] == True  # noqa: E712
    assert bool(second["wifi"]) is False
    assert frame["is_retargeting"].iloc[0] == False  # noqa: E712
    assert first["customer_user_id"] == 1000000186
    assert pd.isna(second["customer_user_id"])
    assert first["app_id"] == "id1" and second["platform"] == "ios"
    assert second["event_revenue"] == -1.5  # refunds are negative revenue, kept
    assert str(first["event_time"]) == "2026-11-20 10:00:00+09:00"
    assert pd.isna(frame["keywords"].iloc[0])  # empty cells become NULL in raw_data
    problems = result.problems
    assert problems[["column", "value", "appsflyer_id"]].values.tolist() == [
        ["customer_user_id", "user-abc", "af-2"]
    ]


def test_unparseable_timestamp_and_flag_are_reported_not_dropped():
    result = _unify([
        {"Event Time": "20/11/2026 10:00", "AppsFlyer ID": "af-3", "WIFI": "maybe", "Platform": "ios"},
    ])
    assert len(result.frame) == 1
    assert pd.isna(result.frame["event_time"].iloc[0])
    assert sorted(result.problems["column"]) == ["event_time", "wifi"]


def test_android_gpa_receipt_kept_as_text():
    result = _unify([{
        "Event Time": "2026-11-20 10:00:00", "Event Name": "af_purchase", "AppsFlyer ID": "a",
        "Event Value": '{"af_receipt_id":"GPA.3345-6789-0123-45678","af_revenue":1.0}', "Platform": "android",
    }])
    assert result.frame["event_value"].iloc[0] == "GPA.3345-6789-0123-45678"
