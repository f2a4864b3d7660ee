"""Normalization of raw reports into raw_data (pure functions, no I/O)."""

import pandas as pd
import pyarrow as pa

from adpipes.appsflyer.schemas import RAW_REPORT_COLUMNS, raw_data_schema, raw_values_schema, snake_case
from adpipes.appsflyer.raw_data_api import RAW_REPORTS
from adpipes.appsflyer.transform import snake_case_columns, unify_raw_block, unify_raw_reports
from adpipes.lib.quality import find_failures
from adpipes_tests.fixtures.vendor_examples import S2S_EVENT_VALUE, S2S_INVALID_REVENUES, S2S_VALID_REVENUES


def _report(rows: list[dict[str, str]], extra: tuple[str, ...] = ()) -> pa.Table:
    headers = list(RAW_REPORT_COLUMNS) + list(extra)
    return pa.table({h: [r.get(h, "") for r in rows] for h in headers})


def test_snake_case_names():
    assert snake_case("Media Source") == "media_source"
    assert snake_case("Event Revenue USD") == "event_revenue_usd"
    assert snake_case("AppsFlyer ID") == "appsflyer_id"
    assert snake_case("Contributor 1 Touch Time") == "contributor_1_touch_time"
    assert snake_case("Loyal Users/Installs") == "loyal_users_installs"


def test_snake_case_names_fit_postgresql_identifiers():
    # More in adpipes_tests/lib/storage/test_names.py (loads, comments, refused headers).
    long_header = "Contributor " * 8 + "Touch Time"  # 106 characters
    name = snake_case(long_header)
    assert len(name.encode()) == 63 and name.startswith("contributor_contributor") and name[-9] == "_"
    assert snake_case(long_header) == name == snake_case_columns([long_header])[0]
    assert snake_case(long_header + " 2") != name
    korean = "광고 " * 15  # 30 characters, 75 bytes
    assert len(snake_case(korean).encode()) <= 63 < len(korean.strip().replace(" ", "_").encode())


def _delivered(rows) -> pd.DataFrame:
    # The shape the archive hands raw_data: snake_case columns and the partition's report_date.
    table = _report(rows)
    frame = table.rename_columns(snake_case_columns(table.column_names)).to_pandas()
    frame.insert(0, "report_date", "2026-11-20")
    return frame.astype("str").replace("", None)


def _unify(rows, platform="ios"):
    frame = _delivered(rows)
    return unify_raw_reports([(RAW_REPORTS["in_app_events_report"], frame)], timezone="Asia/Seoul",
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
            "Platform": "ios", "App ID": "", "Media Source": "googleadwords_int",
        },
        {
            "Event Time": "2026-11-20 11:00:00", "Event Name": "af_login", "Event Value": '{"a":"1"}',
            "WIFI": "false", "AppsFlyer ID": "af-2", "Advertising ID": "gaid-2", "IDFA": "",
            "Customer User ID": "user-abc", "Platform": "iOS", "App ID": "id1",
            "Event Revenue": "-1.50", "Install Time": "2026-11-19 09:00:00", "Media Source": "organic",
        },
    ]
    frame = _unify(rows)
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
    # The rules on the delivered values flag the one value that did not convert.
    failures = find_failures(raw_values_schema(), _delivered(rows))
    assert failures[["check_name", "column_name", "value", "row"]].values.tolist() == [
        ["valid_customer_user_id", "customer_user_id", "user-abc", 1]
    ]
    assert find_failures(raw_data_schema(), frame).empty


def test_a_block_keeps_its_index_and_every_value_stays_on_its_row():
    # unify_raw_block promises the block's own index: a caller may hand it a filtered block (rows
    # 10, 20, 30 of a larger one). A column rebuilt on a fresh 0-based index would be aligned by
    # label and come out null (or another row's) on every row.
    rows = [
        {"Event Time": f"2026-11-20 1{i}:00:00", "Event Name": "af_purchase", "AppsFlyer ID": f"af-{i}",
         "Event Value": f'{{"af_revenue":"1.0","af_receipt_id":"r-{i}"}}',
         "Platform": " iOS ", "App ID": f"id{i}", "Media Source": f"source-{i}", "IDFA": f"idfa-{i}",
         "Advertising ID": "", "Customer User ID": str(100 + i)}
        for i in range(3)
    ]
    block = _delivered(rows).set_axis([10, 20, 30])
    typed = unify_raw_block(RAW_REPORTS["in_app_events_report"], block, "Asia/Seoul")
    assert typed.index.tolist() == [10, 20, 30]
    assert typed["platform"].tolist() == ["ios"] * 3
    assert typed["app_id"].tolist() == ["id0", "id1", "id2"]
    assert typed["advertising_id"].tolist() == ["idfa-0", "idfa-1", "idfa-2"]
    assert typed["media_source"].tolist() == ["source-0", "source-1", "source-2"]
    assert typed["appsflyer_id"].tolist() == ["af-0", "af-1", "af-2"]
    assert typed["event_value"].tolist() == ["r-0", "r-1", "r-2"]


def test_unparseable_values_break_the_parseable_values_rules():
    rows = [
        {"Event Time": "20/11/2026 10:00", "Install Time": "2026-11-19 09:00:00", "AppsFlyer ID": "af-3",
         "WIFI": "maybe", "Platform": "ios", "Event Name": "af_login", "Media Source": "organic"},
        {"Event Time": "2026-11-20 10:00:00", "Install Time": "2026-11-19 09:00:00", "AppsFlyer ID": "",
         "Platform": "ios", "Event Name": "af_login", "Media Source": "organic", "Event Revenue": "4,99"},
    ]
    failures = find_failures(raw_values_schema(), _delivered(rows))
    found = sorted(map(tuple, failures[["row", "check_name", "column_name"]].values.tolist()))
    assert found == [
        (0, "parseable_values", "event_time"),
        (0, "parseable_values", "wifi"),
        (1, "parseable_values", "event_revenue"),
        (1, "required_values", "appsflyer_id"),
    ]
    frame = _unify(rows)
    assert len(frame) == 2 and pd.isna(frame["event_time"].iloc[0])


def test_typed_rules_platform_partition_day_and_time_order():
    rows = [
        {"Event Time": "2026-11-20 10:00:00", "Install Time": "2026-11-20 11:00:00", "AppsFlyer ID": "a",
         "Platform": "windows", "Event Name": "x", "Attributed Touch Time": "2026-11-20 12:00:00",
         "App ID": "id1", "Media Source": "googleadwords_int"},
        {"Event Time": "2026-11-21 00:30:00", "Install Time": "2026-11-19 09:00:00", "AppsFlyer ID": "b",
         "Platform": "android", "Event Name": "x", "Media Source": "googleadwords_int"},
    ]
    failures = find_failures(raw_data_schema(), _unify(rows))
    by_row = failures.groupby("row")["rule"].apply(set).to_dict()
    assert by_row == {
        0: {"platform is android or ios", "event_time >= install_time", "attributed_touch_time <= install_time (retargeting: <= event_time)"},
        1: {"event_time falls on report_date (app timezone)"},
    }
    # A dataframe-level rule shows only the columns it reads.
    assert set(failures[failures["row"] == 1]["column_name"]) == {"report_date", "event_time"}


def test_android_gpa_receipt_kept_as_text():
    frame = _unify([{
        "Event Time": "2026-11-20 10:00:00", "Event Name": "af_purchase", "AppsFlyer ID": "a",
        "Event Value": '{"af_receipt_id":"GPA.3345-6789-0123-45678","af_revenue":1.0}', "Platform": "android",
    }])
    assert frame["event_value"].iloc[0] == "GPA.3345-6789-0123-45678"


def test_receipt_id_is_kept_for_any_event_carrying_it_in_any_key_case():
    frame = _unify([
        {"Event Time": "2026-11-20 10:00:00", "Event Name": "subscription_renewal", "AppsFlyer ID": "a",
         "Event Value": '{"af_receipt_id":"GPA.1111-2222-3333-44444","af_revenue":"9.99"}', "Platform": "android"},
        {"Event Time": "2026-11-20 10:01:00", "Event Name": "AF_PURCHASE", "AppsFlyer ID": "b",
         "Event Value": '{"AF_Receipt_Id": 2000000812345678902}', "Platform": "ios"},
        {"Event Time": "2026-11-20 10:02:00", "Event Name": "af_purchase", "AppsFlyer ID": "c",
         "Event Value": '{"af_receipt_id":"esc\\"aped"}', "Platform": "ios"},
        # The S2S document's Event Value example: a purchase-like event without a receipt.
        {"Event Time": "2026-11-20 10:03:00", "Event Name": "af_purchase", "AppsFlyer ID": "d",
         "Event Value": S2S_EVENT_VALUE, "Platform": "ios"},
        {"Event Time": "2026-11-20 10:04:00", "Event Name": "af_login", "AppsFlyer ID": "e",
         "Event Value": "not json", "Platform": "ios"},
    ])
    assert frame["event_value"].tolist()[:3] == ["GPA.1111-2222-3333-44444", "2000000812345678902", 'esc"aped']
    assert frame["event_value"].iloc[3:].isna().all()


def test_s2s_revenue_formats_read_or_are_flagged():
    """The S2S document's revenue examples: 123, -123.45, 123.456 are valid; 1,234.56 and 1,234 are
    not, so their rows are flagged by parseable_values instead of being read as other numbers."""
    rows = [{"Event Time": "2026-11-20 10:00:00", "Install Time": "2026-11-19 09:00:00", "AppsFlyer ID": f"r{i}",
             "Platform": "ios", "Event Name": "af_purchase", "Media Source": "organic", "Event Revenue": value}
            for i, value in enumerate(S2S_VALID_REVENUES + S2S_INVALID_REVENUES)]
    frame = _unify(rows)
    assert frame["event_revenue"].iloc[:3].tolist() == [123.0, -123.45, 123.456]
    failures = find_failures(raw_values_schema(), _delivered(rows))
    assert sorted(failures["row"].unique().tolist()) == [3, 4]
    assert set(failures["check_name"]) == {"parseable_values"}


def test_organic_rows_without_media_source_are_stored_as_organic():
    # AppsFlyer's aggregate reports and cohorts call organic users' media source "organic": raw_data
    # uses the same spelling, so its media_source is never empty and joins daily_report.
    row = {"Event Time": "2026-11-20 10:00:00", "Install Time": "2026-11-20 10:00:00", "AppsFlyer ID": "a",
           "Platform": "ios", "Event Name": "install"}
    organic = unify_raw_reports([(RAW_REPORTS["organic_installs_report"], _delivered([row, {**row, "Media Source": "organic"}]))],
                                timezone="Asia/Seoul", app_ids={"ios": "id1"})
    assert organic["media_source"].tolist() == ["organic", "organic"]
    assert find_failures(raw_data_schema(), organic).empty
    # A non-organic row without one is not filled in: it breaks the required_values rule.
    paid = unify_raw_reports([(RAW_REPORTS["installs_report"], _delivered([row]))], timezone="Asia/Seoul",
                             app_ids={"ios": "id1"})
    assert paid["media_source"].isna().tolist() == [True]
    assert set(find_failures(raw_data_schema(), paid)["rule"]) == {"media_source is not empty"}


def test_a_time_that_does_not_read_is_reported_once_and_one_that_cannot_be_placed_is_quarantined():
    from adpipes.appsflyer.assets import RAW_DATA_CHECKS
    from adpipes.lib.quality.validation import QualityReport

    report = QualityReport(RAW_DATA_CHECKS, ["2026-11-20"], ("appsflyer_id",))

    def validated(source, delivered, typed):
        # As the raw_data asset checks each block: as delivered, then as typed.
        return report.check_rows([(raw_values_schema(source.attribution), delivered), (raw_data_schema(), typed)],
                                 keys=typed, delivered=delivered)

    base = {"Install Time": "2026-11-19 09:00:00", "Platform": "ios", "Event Name": "af_login",
            "Media Source": "googleadwords_int"}
    rows = [
        {**base, "AppsFlyer ID": "unreadable", "Event Time": "2026-13-45 99:00:00"},
        # Clocks in New York go back at 02:00 on 2026-11-01: 01:30 happens twice, and AppsFlyer's
        # offset-less value cannot say which; event_time would be null, which raw_data refuses.
        {**base, "AppsFlyer ID": "ambiguous", "Event Time": "2026-11-01 01:30:00"},
        {**base, "AppsFlyer ID": "fine", "Event Time": "2026-11-20 10:00:00"},
    ]
    delivered = _delivered(rows)
    delivered.loc[1, "report_date"] = "2026-11-01"
    frame = unify_raw_reports([(RAW_REPORTS["in_app_events_report"], delivered)], timezone="America/New_York",
                              app_ids={"ios": "id1"}, row_filter=validated)
    assert frame["appsflyer_id"].tolist() == ["fine"]
    cases = report.failures
    by_key = cases.groupby("row_key")[["check_name", "rule"]].apply(lambda f: sorted(map(tuple, f.values))).to_dict()
    assert by_key == {
        # Once, as the value it was, not again as an empty event_time.
        "appsflyer_id=unreadable": [("parseable_values", "event_time is a timestamp in yyyy-mm-dd hh:mm:ss form")],
        "appsflyer_id=ambiguous": [("required_values", "event_time is not empty")],
    }
