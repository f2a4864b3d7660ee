"""Flatten the nested revenue report rows into the long ``airbridge/revenue`` table.

A report row is one group (``metadata`` holds its group-by values) with one entry per cohort
date; each entry has a ``values`` list whose position n is Day n, each with an ``isMasked``
flag, and the date's ``total`` (cost, revenue, unique users). The docs describe that nesting but
not every key name, so the keys read here follow the design notes (and the sandbox): ``data`` for
the per-date entries (a row holding ``date`` itself is read as its own single entry), ``values``,
``isMasked``, ``total.cost``, ``total.revenue``, ``total.uniqueUsers``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from adpipes.airbridge.resources import REQUIRED_GROUP_BY, RevenueReport, RevenueTask
from adpipes.airbridge.schemas import REVENUE_TABLE


class RevenueShapeError(Exception):
    """A report row does not have the shape adpipes reads; the message names task and row."""


@dataclass
class FlattenResult:
    frame: pd.DataFrame
    # (report_date, group_values) entries that came without any Day-N value.
    entries_without_values: list[tuple[str, str]] = field(default_factory=list)


def _number(value: Any, what: str, where: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RevenueShapeError(f"{where}: {what} is a boolean ({value!r}), expected a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RevenueShapeError(f"{where}: {what} is not a number: {value!r}") from None


def _users(value: Any, where: str) -> int | None:
    number = _number(value, "total.uniqueUsers", where)
    if number is None:
        return None
    if not number.is_integer():
        raise RevenueShapeError(f"{where}: total.uniqueUsers is not a whole number: {value!r}")
    return int(number)


def _entries(row: dict[str, Any], where: str) -> Iterable[dict[str, Any]]:
    if "date" in row:
        return [row]
    entries = row.get("data")
    if not isinstance(entries, list):
        raise RevenueShapeError(f"{where}: the row has neither a date nor a data list: {json.dumps(row)[:300]}")
    return entries


def task_records(task: RevenueTask, app_name: str, metric: str, aggregation_type: str,
                 result: FlattenResult) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for index, row in enumerate(task.rows):
        where = f"Airbridge revenue report for app {app_name}, task {task.task_id} ({task.window}), row {index}"
        metadata = row.get("metadata")
        if not isinstance(metadata, dict) or any(name not in metadata for name in REQUIRED_GROUP_BY):
            raise RevenueShapeError(
                f"{where}: metadata must hold the group-by values {list(REQUIRED_GROUP_BY)}, got {metadata!r}"
            )
        group_values = json.dumps(metadata, sort_keys=True, ensure_ascii=False)
        channel, campaign = ("" if metadata[n] is None else str(metadata[n]) for n in REQUIRED_GROUP_BY)
        for entry in _entries(row, where):
            day = entry.get("date")
            if not isinstance(day, str) or not task.start.isoformat() <= day[:10] <= task.end.isoformat():
                raise RevenueShapeError(
                    f"{where}: date {day!r} is outside the task's range {task.window}; nothing was loaded"
                )
            day = day[:10]
            total = entry.get("total") or {}
            totals = {
                "cohort_cost": _number(total.get("cost"), "total.cost", where),
                "cohort_revenue": _number(total.get("revenue"), "total.revenue", where),
                "cohort_unique_users": _users(total.get("uniqueUsers"), where),
            }
            values = entry.get("values") or []
            if not values:
                result.entries_without_values.append((day, group_values))
            for day_n, figure in enumerate(values):
                if not isinstance(figure, dict):
                    figure = {"value": figure}
                records.append({
                    "report_date": day, "app_name": app_name, "channel": channel, "campaign": campaign,
                    "group_values": group_values, "metric": metric, "aggregation_type": aggregation_type,
                    "day_n": day_n,
                    "value": _number(figure.get("value"), f"values[{day_n}].value", where),
                    # Absent means not masked; anything but a JSON boolean is left null for the
                    # masked_flag check to quarantine (bool("false") would read as masked).
                    "is_masked": _masked_flag(figure.get("isMasked", False)),
                    **totals,
                })
    return records


def _masked_flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def revenue_frame(report: RevenueReport, metric: str, aggregation_type: str) -> FlattenResult:
    """The long table: one row per (report_date, group, day_n), typed per the pandera schema."""
    result = FlattenResult(frame=pd.DataFrame())
    records = [r for task in report.tasks
               for r in task_records(task, report.app_name, metric, aggregation_type, result)]
    columns = REVENUE_TABLE.column_names
    frame = pd.DataFrame.from_records(records, columns=columns)
    dtypes = {name: str(column.dtype) for name, column in REVENUE_TABLE.dataframe_schema.columns.items()}
    result.frame = frame.astype(dtypes)
    return result
