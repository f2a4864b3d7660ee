"""From documented group rows to the long table: named group-by columns, totals and masked
flags, and the schema's rules."""

import datetime as dt
import json

import pandas as pd
import pytest

from adpipes.airbridge.contract import read_result_page
from adpipes.airbridge.resources import RevenueReport, RevenueTask
from adpipes.airbridge.schemas import revenue_schema
from adpipes.airbridge.transform import RevenueShapeError, revenue_frame
from adpipes.lib.quality import find_failures
from adpipes_tests.fixtures.vendor_examples import example

DAY = dt.date(2021, 11, 1)


def report(answer, fields) -> RevenueReport:
    page = read_result_page(answer, "test page", fields)
    task = RevenueTask(task_id="t-1", start=DAY, end=DAY, body={}, rows=page.rows)
    return RevenueReport(app_name="app", tasks=[task])


def frame_of(answer, fields):
    return revenue_frame(report(answer, fields), group_by=fields, metric="app_revenue",
                         aggregation_type="cumulative", currency="KRW")


def test_the_printed_page_becomes_one_row_per_day_n_with_its_totals():
    table = frame_of(example("airbridge_revenue_result_response"), ["channel"])
    frame = table.frame
    assert frame["day_n"].tolist() == [0, 1, 2, 3] and frame["value"].tolist() == [1, 2, 3, 4]
    assert frame["report_date"].unique().tolist() == ["2021-11-01"]
    # Grouped by channel only: campaign is null, the group key names channel alone.
    assert frame["channel"].unique().tolist() == ["<groupBy>"] and frame["campaign"].isna().all()
    assert frame["group_values"].unique().tolist() == ['{"channel": "<groupBy>"}']
    row = frame.iloc[0]
    assert (row["total_cost"], row["total_revenue"], row["total_unique_users"]) == (0, 10, 1)
    assert (row["total_cost_is_masked"], row["total_revenue_is_masked"], row["total_unique_users_is_masked"]) == (
        False, False, True)
    assert set(frame["currency"]) == {"KRW"} and table.extra_group_columns == []
    assert find_failures(revenue_schema(), frame).empty


def test_other_group_bys_become_named_text_columns():
    answer = example("airbridge_revenue_result_response")
    answer["data"]["stats"]["rows"][0]["metadata"] = ["tiktok", "Spring", "AG 1"]
    table = frame_of(answer, ["channel", "campaign", "ad_group"])
    assert table.extra_group_columns == ["ad_group"]
    frame = table.frame
    assert frame[["channel", "campaign", "ad_group"]].drop_duplicates().values.tolist() == [["tiktok", "Spring", "AG 1"]]
    assert str(frame["ad_group"].dtype) == str(frame["campaign"].dtype)
    assert frame["group_values"][0] == '{"ad_group": "AG 1", "campaign": "Spring", "channel": "tiktok"}'


def test_masked_figures_keep_their_value_and_null_ones_their_flag():
    answer = example("airbridge_revenue_result_response")
    values = answer["data"]["stats"]["rows"][0]["rows"][0]["values"]
    values[1] = {"value": 7.5, "isMasked": True}
    values[2] = {"value": None, "isMasked": True}
    frame = frame_of(answer, ["channel"]).frame
    assert frame["value"].tolist()[:2] == [1, 7.5] and pd.isna(frame["value"][2])
    assert frame["is_masked"].tolist() == [False, True, True, False]
    assert find_failures(revenue_schema(), frame).empty
    # An unmasked empty figure breaks the masked_values rule (the reader refuses it before).
    broken = frame.assign(is_masked=pd.array([False] * 4, dtype="boolean"))
    failures = find_failures(revenue_schema(), broken)
    assert failures[["check_name", "row"]].drop_duplicates().values.tolist() == [["masked_values", 2]]


def test_undocumented_keys_land_in_extra_fields_of_the_rows_they_came_with():
    answer = example("airbridge_revenue_result_response")
    group = answer["data"]["stats"]["rows"][0]
    group["region"] = "kr"
    group["total"]["totalCost"]["currency"] = "USD"
    group["total"]["rows"][1]["note"] = "range day 1"
    day = group["rows"][0]
    day["adCost"] = {"value": 3}
    day["total"]["totalCost"]["currency"] = "KRW"
    day["total"]["installs"] = 7
    day["values"][2]["note"] = "day 2 only"
    page = read_result_page(answer, "test page", ["channel"])
    assert page.unknown_fields == [
        "data.stats.rows[].region", "data.stats.rows[].rows[].adCost", "data.stats.rows[].rows[].total.installs",
        "data.stats.rows[].rows[].total.totalCost.currency", "data.stats.rows[].rows[].values[].note",
        "data.stats.rows[].total.rows[].note", "data.stats.rows[].total.totalCost.currency"]
    assert page.page_fields == {}
    frame = frame_of(answer, ["channel"]).frame
    shared = {"region": "kr", "total.totalCost.currency": "USD", "total.rows[1].note": "range day 1",
              "rows[].adCost": {"value": 3}, "rows[].total.totalCost.currency": "KRW", "rows[].total.installs": 7}
    assert [json.loads(v) for v in frame["extra_fields"]] == [
        shared, shared, {**shared, "rows[].values[].note": "day 2 only"}, shared]
    assert find_failures(revenue_schema(), frame).empty


def test_rows_without_undocumented_keys_have_null_extra_fields():
    frame = frame_of(example("airbridge_revenue_result_response"), ["channel"]).frame
    assert frame["extra_fields"].isna().all() and len(frame) == 4


def test_fractional_unique_users_are_refused_naming_the_row():
    answer = example("airbridge_revenue_result_response")
    answer["data"]["stats"]["rows"][0]["rows"][0]["total"]["totalUniqueUsers"]["value"] = 1.5
    with pytest.raises(RevenueShapeError, match=r"task t-1, group row 0 .* date 2021-11-01: .*1\.5"):
        frame_of(answer, ["channel"])


def test_duplicate_rows_break_the_unique_key_rule():
    answer = example("airbridge_revenue_result_response")
    rows = answer["data"]["stats"]["rows"]
    rows.append(rows[0])
    failures = find_failures(revenue_schema(), frame_of(answer, ["channel"]).frame)
    assert set(failures["check_name"]) == {"unique_keys"}
    assert sorted(failures["row"].unique()) == list(range(8))
