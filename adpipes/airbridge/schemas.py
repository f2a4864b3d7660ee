"""Table definition (pandera schema) of the Airbridge revenue report asset."""

from __future__ import annotations

from functools import cache

import dagster as dg
import pandera.pandas as pa

from adpipes.airbridge.checks import MASKED_FLAG, VALUE_RANGES
from adpipes.lib.quality import rule
from adpipes.lib.storage.tables import ARCHIVE, PRODUCT, TABLES, TEXT, TableSpec, report_date_column

REVENUE_KEY = dg.AssetKey(["airbridge", "revenue"])
# One row per (cohort day, group, Day N): the table's natural key.
REVENUE_KEY_COLUMNS = ["report_date", "app_name", "group_values", "day_n"]


def _text(description: str, nullable: bool = False) -> pa.Column:
    return pa.Column(TEXT, nullable=nullable, description=description)


def _money(description: str) -> pa.Column:
    return pa.Column("Float64", nullable=True, description=description, metadata={"pg_type": "numeric"})


@cache
def revenue_schema() -> pa.DataFrameSchema:
    columns = {
        "report_date": report_date_column(),
        "app_name": _text("Airbridge app name the report was requested for."),
        "channel": _text("Airbridge channel the cohort was attributed to (e.g. google.adwords, unattributed)."),
        "campaign": _text("Campaign name; empty when Airbridge has none (e.g. unattributed)."),
        "group_values": _text(
            "Every group-by value of the row as JSON (sorted keys), including group-bys beyond "
            "channel and campaign when configured."
        ),
        "metric": _text("Airbridge metric of value (airbridge_api.metric, default app_revenue)."),
        "aggregation_type": _text("cumulative: value is revenue from Day 0 through Day N; otherwise revenue on Day N only."),
        "day_n": pa.Column(
            "int64", checks=rule(VALUE_RANGES, pa.Check.in_range(0, 120), "day_n is 0-120"), nullable=False,
            description="Days since the cohort's start event (install): 0 is the install day.",
        ),
        "value": _money(
            "Metric value for Day N in the app's Airbridge currency; null when Airbridge masked it."
        ),
        "is_masked": pa.Column(
            "boolean", rule(MASKED_FLAG, pa.Check(lambda s: s.notna(), ignore_na=False),
                            "isMasked is a JSON boolean (true or false)"),
            nullable=True,
            description="Airbridge masked this figure (privacy thresholds, Meta data policy): value is not the real figure.",
        ),
        "cohort_cost": pa.Column(
            "Float64", rule(VALUE_RANGES, pa.Check.ge(0), "cohort_cost >= 0"), nullable=True,
            description="Cohort total: ad cost of the group on report_date (repeated on each Day-N row).",
            metadata={"pg_type": "numeric"},
        ),
        "cohort_revenue": _money("Cohort total: revenue of the group's cohort so far (repeated on each Day-N row)."),
        "cohort_unique_users": pa.Column(
            "Int64", nullable=True, checks=rule(VALUE_RANGES, pa.Check.ge(0), "cohort_unique_users >= 0"),
            description="Cohort total: unique users of the start event (repeated on each Day-N row).",
        ),
    }
    return pa.DataFrameSchema(
        columns, strict=True, unique=REVENUE_KEY_COLUMNS, name="airbridge/revenue", coerce=False
    )


REVENUE_TABLE = TABLES.register(
    TableSpec(asset_key=REVENUE_KEY, dataframe_schema=revenue_schema(), databases=(ARCHIVE, PRODUCT),
              row_key=("app_name", "group_values", "day_n"))
)
