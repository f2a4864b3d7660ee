"""Property tests: any revenue answer in the document's shape becomes the long table figure for
figure, and a figure written as text (thousands separators, currency signs, or even a plain number
in quotes) is refused, whatever else the answer holds.

The document (vendor-docs/airbridge-revenue-report-api.ko.txt) prints every figure as a JSON
number (``"value": 10.45``, ``"value": 0``) in ``{"value", "isMasked"}``; the table has one row per
(start-event date, group, Day N), the date's totals repeated on each of its Day-N rows. The
expected rows below are built from the generated answer itself, not by the code under test.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from decimal import Decimal

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from adpipes.airbridge.contract import AnswerShapeError, read_result_page
from adpipes.airbridge.resources import RevenueReport, RevenueTask
from adpipes.airbridge.schemas import REVENUE_TABLE, revenue_task_schema
from adpipes.airbridge.transform import RevenueShapeError, revenue_frame, total_count_view
from adpipes.lib.quality import find_failures

FIELDS = ["channel", "campaign"]
FIRST_DAY = dt.date(2021, 11, 1)
# Deterministic (derandomize), no per-example deadline. scripts/mutation sets PROPERTY_TEST_EXAMPLES:
# fewer examples and no shrinking (a mutant is killed by the first failing example).
PROPERTIES = settings(max_examples=int(os.environ.get("PROPERTY_TEST_EXAMPLES", 40)), deadline=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate] if "PROPERTY_TEST_EXAMPLES" in os.environ else list(Phase))

# A number as the document prints them: optional minus, digits, optional decimals (no exponent,
# no separators), e.g. 0, 10, 10.45, -3.5 (refunds make revenue negative).
number_text = st.builds(
    lambda sign, whole, decimals: f"{sign}{whole}{'.' + decimals if decimals else ''}",
    st.sampled_from(["", "-"]),
    st.integers(min_value=0, max_value=10**12).map(str),
    st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=6)),
)
whole_text = st.integers(min_value=0, max_value=10**9).map(str)
# Group-by values as apps name their channels and campaigns: any script, always some non-ASCII.
label = st.builds(lambda head, tail: head + tail, st.sampled_from(["봄 세일", "été", "tiktok ✓", "Ω"]),
                  st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=10))


@st.composite
def figure(draw, masked_flag_printed=True, text=number_text):
    """(JSON text of a {value, isMasked} figure, expected value or None, expected flag)."""
    masked = draw(st.booleans())
    if masked and draw(st.booleans()):
        return '{"value": null, "isMasked": true}', None, True
    value = draw(text)
    if not masked_flag_printed and not masked and draw(st.booleans()):
        return f'{{"value": {value}}}', value, False  # the document prints totalCost without isMasked
    return f'{{"value": {value}, "isMasked": {"true" if masked else "false"}}}', value, masked


@st.composite
def answers(draw):
    """The JSON text of a result page and the table rows it must give, in order."""
    groups, expected = [], []
    for _ in range(draw(st.integers(1, 3))):
        channel, campaign = draw(label), draw(label)
        days = draw(st.lists(st.integers(0, 30), min_size=1, max_size=3, unique=True))
        date_rows = []
        for offset in days:
            day = (FIRST_DAY + dt.timedelta(days=offset)).isoformat()
            values = draw(st.lists(figure(), min_size=1, max_size=4))
            cost, revenue = draw(figure(False)), draw(figure(False))
            users = draw(figure(True, whole_text))
            total = (f'{{"totalCost": {cost[0]}, "totalRevenue": {revenue[0]}, '
                     f'"totalUniqueUsers": {users[0]}}}')
            date_rows.append(f'{{"date": "{day}", "total": {total}, "values": [{", ".join(v[0] for v in values)}]}}')
            for day_n, (_, value, masked) in enumerate(values):
                expected.append({
                    "report_date": day, "channel": channel, "campaign": campaign, "day_n": day_n,
                    "value": value, "is_masked": masked,
                    "total_cost": cost[1], "total_cost_is_masked": cost[2],
                    "total_revenue": revenue[1], "total_revenue_is_masked": revenue[2],
                    "total_unique_users": users[1], "total_unique_users_is_masked": users[2],
                })
        group_total = ('{"rows": [], "totalCost": {"value": 0}, "totalRevenue": {"value": 0}, '
                       '"totalUniqueUsers": {"value": 0, "isMasked": false}}')
        groups.append(f'{{"rows": [{", ".join(date_rows)}], "total": {group_total}, '
                      f'"metadata": {json.dumps([channel, campaign])}}}')
    answer = ('{"data": {"stats": {"rows": [' + ", ".join(groups) + ']}, "status": "SUCCESS", '
              '"taskId": "t-1", "endedAt": "2022-01-17T19:10:00.286939+09:00", "hasNext": false, '
              '"metadata": {"totalCount": ' + str(len(groups)) + '}}}')
    return answer, expected


def _frame(answer: str):
    page = read_result_page(json.loads(answer), "property page", FIELDS)
    task = RevenueTask(task_id="t-1", start=FIRST_DAY, end=FIRST_DAY + dt.timedelta(days=30), body={}, rows=page.rows)
    return revenue_frame(RevenueReport(app_name="app", tasks=[task]), group_by=FIELDS, metric="app_revenue",
                         aggregation_type="cumulative", currency="KRW").frame


def _same_number(got, literal: str | None) -> bool:
    if literal is None:
        return got is None or (isinstance(got, float) and math.isnan(got)) or str(got) in ("<NA>", "nan")
    return got is not None and math.isclose(float(got), float(Decimal(literal)), rel_tol=1e-15, abs_tol=0)


@PROPERTIES
@given(answers())
def test_every_documented_figure_lands_on_its_row_as_the_number_sent(case):
    answer, expected = case
    frame = _frame(answer)
    assert len(frame) == len(expected)
    for got, want in zip(frame.to_dict("records"), expected):
        for column in ("report_date", "channel", "campaign", "day_n", "is_masked", "total_cost_is_masked",
                       "total_revenue_is_masked", "total_unique_users_is_masked"):
            assert got[column] == want[column], (column, got, want)
        for column in ("value", "total_cost", "total_revenue", "total_unique_users"):
            assert _same_number(got[column], want[column]), (column, got[column], want[column])
        assert got["app_name"] == "app" and got["currency"] == "KRW" and got["metric"] == "app_revenue"
        # The group's key (docs/airbridge-revenue.md): every group-by value as a JSON object with
        # sorted keys, the values as delivered, so a reader finds a channel by its own text.
        assert got["group_values"] == '{"campaign": %s, "channel": %s}' % (
            json.dumps(want["campaign"], ensure_ascii=False), json.dumps(want["channel"], ensure_ascii=False))
        assert json.loads(got["group_values"]) == {"channel": want["channel"], "campaign": want["campaign"]}
    assert list(frame.columns) == REVENUE_TABLE.column_names


def test_an_answer_without_group_rows_is_an_empty_table_with_every_column():
    frame = _frame('{"data": {"stats": {"rows": []}, "status": "SUCCESS", "taskId": "t-1", "endedAt": "x", '
                   '"hasNext": false, "metadata": {"totalCount": 0}}}')
    assert frame.empty and list(frame.columns) == REVENUE_TABLE.column_names


# Figures written as text instead of a JSON number. "1,234.56" is how a spreadsheet writes 1234.56;
# a quoted "-123.45" is a valid number's digits but still not the number the document prints.
text_figures = st.one_of(
    st.builds(lambda head, tail, decimals: f"{head},{tail:03d}{decimals}", st.integers(1, 999),
              st.integers(0, 999), st.sampled_from(["", ".56", ".5"])),
    st.builds(lambda sign, n: f"{sign}{n}", st.sampled_from(["$", "₩", "USD ", "KRW"]), number_text),
    number_text,
    st.sampled_from(["", "N/A", "-", "null", "NaN"]),
)


@PROPERTIES
@given(answers(), text_figures, st.data())
def test_a_figure_sent_as_text_is_refused_not_read(case, text, data):
    answer, _ = case
    parsed = json.loads(answer)
    date_row = data.draw(st.sampled_from([d for g in parsed["data"]["stats"]["rows"] for d in g["rows"]]))
    where = data.draw(st.sampled_from(["values", "totalCost", "totalRevenue", "totalUniqueUsers"]))
    target = date_row["values"][0] if where == "values" else date_row["total"][where]
    target["value"], target["isMasked"] = text, data.draw(st.booleans())
    with pytest.raises(AnswerShapeError, match="the document prints a number"):
        read_result_page(parsed, "property page", FIELDS)


@PROPERTIES
@given(answers(), st.data())
def test_an_unmasked_figure_without_a_value_is_refused(case, data):
    answer, _ = case
    parsed = json.loads(answer)
    date_row = data.draw(st.sampled_from([d for g in parsed["data"]["stats"]["rows"] for d in g["rows"]]))
    date_row["values"][-1] = {"value": None, "isMasked": False}
    with pytest.raises(AnswerShapeError, match="is null but isMasked is not true"):
        read_result_page(parsed, "property page", FIELDS)


@PROPERTIES
@given(answers(), st.integers(0, 10**6), st.sampled_from(["0.5", "0.25", "0.001"]), st.data())
def test_a_user_count_that_is_not_whole_is_refused(case, whole, fraction, data):
    answer, _ = case
    parsed = json.loads(answer)
    date_row = data.draw(st.sampled_from([d for g in parsed["data"]["stats"]["rows"] for d in g["rows"]]))
    date_row["total"]["totalUniqueUsers"] = {"value": float(Decimal(whole) + Decimal(fraction)), "isMasked": False}
    with pytest.raises(RevenueShapeError, match="is not a whole number"):
        _frame(json.dumps(parsed))


@st.composite
def tasks_with_mismatches(draw):
    """Tasks over consecutive disjoint day ranges, some of which let a totalCount mismatch through
    (total_count_mismatch="warn"), and the start-event days of some table rows."""
    tasks, start = [], FIRST_DAY
    for index in range(draw(st.integers(1, 4))):
        end = start + dt.timedelta(days=draw(st.integers(0, 5)))
        task = RevenueTask(task_id=f"task-{index}", start=start, end=end, body={})
        if draw(st.booleans()):
            task.total_count_mismatch = {
                "task_id": task.task_id, "range": task.window, "total_count": draw(st.integers(0, 10**6)),
                "group_rows": draw(st.integers(0, 999)), "group_date_rows": draw(st.integers(0, 9999)),
                "pages": draw(st.integers(1, 99)),
            }
        tasks.append(task)
        start = end + dt.timedelta(days=1)
    days = [day for task in tasks for day in task.days]
    return tasks, draw(st.lists(st.sampled_from(days), max_size=12))


@PROPERTIES
@given(tasks_with_mismatches(), st.integers(0, 1000))
def test_each_row_shows_the_mismatch_of_the_task_that_served_its_day(case, first_index):
    import pandas as pd

    tasks, row_days = case
    # The table rows' days, with the index the rows have (not necessarily 0, 1, 2, ...).
    index = pd.Index(range(first_index + 2 * len(row_days), first_index, -2)[:len(row_days)])
    view = total_count_view(RevenueReport(app_name="app", tasks=tasks), pd.Series(row_days, index=index, dtype="str"))
    assert list(view.columns) == ["total_count_mismatch"] and view.index.equals(index)
    # Validated beside the rows: the total_count rule fails on exactly the rows of a task whose
    # totalCount did not match, and nothing else fails.
    failures = find_failures(revenue_task_schema(), view.reset_index(drop=True))
    assert set(failures["check_name"]) <= {"total_count"}
    assert set(failures["row"].astype(int)) == {
        i for i, day in enumerate(row_days) if any(day in t.days and t.total_count_mismatch for t in tasks)}
    for day, got in zip(row_days, view["total_count_mismatch"]):
        (task,) = [t for t in tasks if day in t.days]
        found = task.total_count_mismatch
        if not found:
            assert pd.isna(got)
            continue
        # What came against the count: every figure of the mismatch, named.
        assert got.startswith(f"task {task.task_id} ({task.window}): totalCount {found['total_count']}")
        for figure in (f"{found['group_rows']} group rows", f"({found['group_date_rows']} group-date rows)",
                       f"in {found['pages']} page(s)"):
            assert figure in got
