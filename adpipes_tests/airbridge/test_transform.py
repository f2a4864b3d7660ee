"""Flattening nested revenue rows: shapes adpipes reads, and shapes it refuses loudly."""

import datetime as dt

import pandas as pd
import pytest

from adpipes.airbridge.schemas import revenue_schema
from adpipes.lib.quality import find_failures
from adpipes.airbridge.resources import RevenueReport, RevenueTask
from adpipes.airbridge.transform import RevenueShapeError, revenue_frame

DAY = dt.date(2026, 11, 20)


def report(rows) -> RevenueReport:
    return RevenueReport(app_name="app", tasks=[RevenueTask(task_id="t-1", start=DAY, end=DAY, rows=rows)])


def entry(values, date=DAY.isoformat()):
    return {"date": date, "values": values, "total": {"cost": "10.5", "revenue": 3, "uniqueUsers": 7}}


def test_nested_and_flat_rows_give_the_same_long_rows():
    values = [{"value": 1.5, "isMasked": False}, {"value": None, "isMasked": True}]
    metadata = {"channel": "tiktok", "campaign": "c1", "ad_group": "g"}
    nested = revenue_frame(report([{"metadata": metadata, "data": [entry(values)]}]), "app_revenue", "cumulative")
    flat = revenue_frame(report([{"metadata": metadata, **entry(values)}]), "app_revenue", "cumulative")
    pd.testing.assert_frame_equal(nested.frame, flat.frame)
    frame = nested.frame
    assert frame["day_n"].tolist() == [0, 1]
    assert frame["value"].tolist()[0] == 1.5 and pd.isna(frame["value"].tolist()[1])
    assert frame["is_masked"].tolist() == [False, True]
    assert frame["cohort_cost"].tolist() == [10.5, 10.5] and frame["cohort_unique_users"].tolist() == [7, 7]
    # Group-bys beyond channel and campaign are kept, not dropped.
    assert '"ad_group": "g"' in frame["group_values"][0]
    assert find_failures(revenue_schema(), frame).empty


def test_a_date_outside_the_task_range_is_refused_naming_the_task():
    rows = [{"metadata": {"channel": "a", "campaign": "b"}, "data": [entry([{"value": 1}], "2026-11-25")]}]
    with pytest.raises(RevenueShapeError, match=r"task t-1 .*2026-11-25"):
        revenue_frame(report(rows), "app_revenue", "cumulative")


def test_missing_group_by_values_are_refused():
    with pytest.raises(RevenueShapeError, match="campaign"):
        revenue_frame(report([{"metadata": {"channel": "a"}, "data": [entry([])]}]), "m", "cumulative")


def test_non_numeric_values_are_refused():
    rows = [{"metadata": {"channel": "a", "campaign": "b"}, "data": [entry([{"value": "lots"}])]}]
    with pytest.raises(RevenueShapeError, match=r"values\[0\]\.value"):
        revenue_frame(report(rows), "m", "cumulative")


def test_duplicate_rows_break_the_unique_key_rule():
    row = {"metadata": {"channel": "a", "campaign": "b"}, "data": [entry([{"value": 1, "isMasked": False}])]}
    frame = revenue_frame(report([row, row]), "m", "cumulative").frame
    failures = find_failures(revenue_schema(), frame)
    assert set(failures["check_name"]) == {"unique_keys"}
    assert sorted(failures["row"].unique()) == [0, 1]


def test_a_masked_flag_that_is_not_a_boolean_is_left_for_the_check():
    values = [{"value": 1, "isMasked": "false"}, {"value": -2.5, "isMasked": False}]
    frame = revenue_frame(report([{"metadata": {"channel": "a", "campaign": "b"}, "data": [entry(values)]}]),
                          "m", "cumulative").frame
    failures = find_failures(revenue_schema(), frame)
    # Day 0's "false" string is not read as masked; Day 1's negative revenue (a refund) is valid.
    assert failures[["check_name", "row"]].values.tolist() == [["masked_flag", 0]]
