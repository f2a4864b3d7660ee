"""The revenue report's group rows as the long ``airbridge/revenue`` table.

Each group row of the answer has one entry per start-event date (``rows[]``), each with its
Day-N figures (``values[n]`` is Day n) and its per-date totals. The table has one row per
(date, group, Day N); the per-date totals are repeated on each Day-N row of their date (the
client refuses a date without values, so every date's totals have rows). The group's ``total``
over the task's whole range is not a partition's figure and is not stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from adpipes.airbridge.contract import Figure
from adpipes.airbridge.resources import RevenueReport
from adpipes.airbridge.schemas import (
    GROUP_BY_COLUMNS,
    REVENUE_TABLE,
    TOTAL_COUNT_MISMATCH_COLUMN,
    revenue_task_schema,
)


class RevenueShapeError(Exception):
    """A figure cannot be stored as its column's type; the message names task and row."""


@dataclass
class RevenueFrame:
    frame: pd.DataFrame
    # Group-bys beyond channel and campaign: text columns of the frame (added to the table).
    extra_group_columns: list[str]


def _users(figure: Figure, where: str) -> int | None:
    if figure.value is None:
        return None
    if not figure.value.is_integer():
        raise RevenueShapeError(f"{where}: total.totalUniqueUsers.value {figure.value!r} is not a whole number")
    return int(figure.value)


def revenue_frame(report: RevenueReport, *, group_by: list[str], metric: str, aggregation_type: str,
                  currency: str) -> RevenueFrame:
    """The long table: one row per (report_date, group, day_n), typed per the pandera schema, plus
    a text column per group-by beyond channel and campaign. ``extra_fields`` gathers the keys the
    document does not print from the group row, the date row and the Day-N value of each row."""
    extra = [name for name in group_by if name not in GROUP_BY_COLUMNS]
    records: list[dict[str, Any]] = []
    for task in report.tasks:
        for index, row in enumerate(task.rows):
            group_values = json.dumps(row.group, sort_keys=True, ensure_ascii=False)
            named = {name: row.group.get(name) for name in (*GROUP_BY_COLUMNS, *extra)}
            for date_row in row.dates:
                where = (f"Airbridge revenue report for app {report.app_name}, task {task.task_id}, "
                         f"group row {index} {group_values}, date {date_row.date}")
                total = date_row.total
                totals = {
                    "total_cost": total.cost.value, "total_cost_is_masked": total.cost.is_masked,
                    "total_revenue": total.revenue.value, "total_revenue_is_masked": total.revenue.is_masked,
                    "total_unique_users": _users(total.unique_users, where),
                    "total_unique_users_is_masked": total.unique_users.is_masked,
                }
                for day_n, figure in enumerate(date_row.values):
                    undocumented = {**row.extra_fields, **date_row.extra_fields, **figure.extra_fields}
                    records.append({
                        "report_date": date_row.date, "app_name": report.app_name, **named,
                        "group_values": group_values, "metric": metric, "aggregation_type": aggregation_type,
                        "currency": currency, "day_n": day_n, "value": figure.value,
                        "is_masked": figure.is_masked, **totals,
                        "extra_fields": (json.dumps(undocumented, sort_keys=True, ensure_ascii=False)
                                         if undocumented else None),
                    })
    columns = REVENUE_TABLE.column_names + extra
    frame = pd.DataFrame.from_records(records, columns=columns)
    dtypes = {name: str(column.dtype) for name, column in REVENUE_TABLE.dataframe_schema.columns.items()}
    dtypes.update({name: dtypes["group_values"] for name in extra})
    return RevenueFrame(frame.astype(dtypes), extra)


def total_count_view(report: RevenueReport, report_dates: pd.Series) -> pd.DataFrame:
    """The rows' view for :func:`~adpipes.airbridge.schemas.revenue_task_schema`, in the order of
    ``report_dates`` (the table rows' start-event days): what the row's task served against its
    totalCount when the mismatch was let through (``total_count_mismatch="warn"``), else null.
    Tasks cover disjoint ranges, so a row's day names its task."""
    mismatch: dict[str, str] = {}
    for task in report.tasks:
        found = task.total_count_mismatch
        if not found:
            continue
        text = (f"task {found['task_id']} ({found['range']}): totalCount {found['total_count']} on every "
                f"page, paging returned {found['group_rows']} group rows ({found['group_date_rows']} "
                f"group-date rows) in {found['pages']} page(s)")
        mismatch.update(dict.fromkeys(task.days, text))
    dtype = str(revenue_task_schema().columns[TOTAL_COUNT_MISMATCH_COLUMN].dtype)
    values = pd.Series([mismatch.get(day) for day in report_dates.astype("str")], index=report_dates.index,
                       dtype=dtype)
    return pd.DataFrame({TOTAL_COUNT_MISMATCH_COLUMN: values})
