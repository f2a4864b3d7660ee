"""Table definition (pandera schema) of the Airbridge revenue report asset."""

from __future__ import annotations

from functools import cache

import dagster as dg
import pandera.pandas as pa

from adpipes.airbridge.checks import MASKED_VALUES, TOTAL_COUNT, VALUE_RANGES
from adpipes.lib.quality import rule
from adpipes.lib.storage.tables import ARCHIVE, PRODUCT, TABLES, TEXT, TableSpec, report_date_column

REVENUE_KEY = dg.AssetKey(["airbridge", "revenue"])
# One row per (start-event day, group, Day N): the table's natural key.
REVENUE_KEY_COLUMNS = ["report_date", "app_name", "group_values", "day_n"]
# The group-bys that are declared columns; any other configured group-by (AIRBRIDGE_GROUP_BY)
# becomes a text column named after it, added to the table when first loaded.
GROUP_BY_COLUMNS = ("channel", "campaign")
# (figure column, its masked flag) pairs: a figure is null only where Airbridge masked it.
MASKED_PAIRS = (
    ("value", "is_masked"),
    ("total_cost", "total_cost_is_masked"),
    ("total_revenue", "total_revenue_is_masked"),
    ("total_unique_users", "total_unique_users_is_masked"),
)
_MASKED_NOTE = (
    " When masked, the column keeps the figure Airbridge sent (not the real one; null if Airbridge "
    "sent none) and {flag} is true."
)


def _text(description: str, nullable: bool = False) -> pa.Column:
    return pa.Column(TEXT, nullable=nullable, description=description)


def _flag(description: str) -> pa.Column:
    return pa.Column("boolean", nullable=False, description=description)


def _money(description: str, flag: str, *checks: pa.Check) -> pa.Column:
    return pa.Column("Float64", list(checks), nullable=True, metadata={"pg_type": "numeric"},
                     description=description + _MASKED_NOTE.format(flag=flag))


def _null_only_when_masked(figure: str, flag: str) -> pa.Check:
    return rule(
        MASKED_VALUES,
        pa.Check(lambda frame: frame[figure].notna() | frame[flag], ignore_na=False),
        f"{figure} is null only where {flag} is true",
        columns=(figure, flag),
    )


@cache
def revenue_schema() -> pa.DataFrameSchema:
    columns = {
        "report_date": report_date_column(),
        "app_name": _text("Airbridge app name the report was requested for."),
        "channel": _text(
            "Airbridge channel of the group (e.g. google.adwords); null when channel is not one of "
            "the group-bys (AIRBRIDGE_GROUP_BY).", nullable=True,
        ),
        "campaign": _text(
            "Campaign of the group; null when campaign is not one of the group-bys "
            "(AIRBRIDGE_GROUP_BY). Empty when Airbridge has none (e.g. unattributed).", nullable=True,
        ),
        "group_values": _text(
            "Every group-by value of the row as a JSON object (group-by key -> value, sorted keys): "
            "the group's key. Each group-by also has its own column (channel, campaign, and a text "
            "column per other configured group-by)."
        ),
        "metric": _text("Airbridge metric of value (airbridge_api.metric, default app_revenue)."),
        "aggregation_type": _text(
            "cumulative: value is the metric from Day 0 through Day N; on-day: on Day N only."
        ),
        "currency": _text(
            "ISO code of the app's currency in Airbridge (AIRBRIDGE_CURRENCY): Airbridge reports "
            "money in the app's local currency. Applies to total_cost, total_revenue, and to value "
            "when metric is app_revenue, app_arpu or app_arppu (not counts or app_roas).",
        ),
        "day_n": pa.Column(
            "int64", checks=rule(VALUE_RANGES, pa.Check.in_range(0, 120), "day_n is 0-120"), nullable=False,
            description="Days since the start event (e.g. install): 0 is report_date itself.",
        ),
        "value": _money(
            "The metric for Day N of the users whose start event was on report_date (values[n] "
            "of Airbridge's answer).", "is_masked",
        ),
        "is_masked": _flag("Airbridge masked value (privacy thresholds, Meta's data policy)."),
        "total_cost": _money(
            "Per-date total: ad cost of the group on report_date (total.totalCost; repeated on "
            "each Day-N row of the date: take it once per date, never sum it over Day-N rows).",
            "total_cost_is_masked", rule(VALUE_RANGES, pa.Check.ge(0), "total_cost >= 0"),
        ),
        "total_cost_is_masked": _flag(
            "Airbridge masked total_cost (its answer may omit the flag for cost: absent means false)."
        ),
        "total_revenue": _money(
            "Per-date total: revenue of the group's users whose start event was on report_date "
            "(total.totalRevenue; repeated on each Day-N row of the date, like total_cost).",
            "total_revenue_is_masked",
        ),
        "total_revenue_is_masked": _flag(
            "Airbridge masked total_revenue (its answer may omit the flag: absent means false)."
        ),
        "total_unique_users": pa.Column(
            "Int64", rule(VALUE_RANGES, pa.Check.ge(0), "total_unique_users >= 0"), nullable=True,
            description="Per-date total: unique users of the group with a start event on "
            "report_date (total.totalUniqueUsers; repeated on each Day-N row of the date)."
            + _MASKED_NOTE.format(flag="total_unique_users_is_masked"),
        ),
        "total_unique_users_is_masked": _flag("Airbridge masked total_unique_users."),
        "extra_fields": pa.Column(
            TEXT, nullable=True, metadata={"pg_type": "jsonb"},
            description="Keys Airbridge sent that its document does not print, as delivered, from the "
            "objects this row comes from: the group row (with its range total), the date row, its total "
            "and totals, and the Day-N value. A JSON object {path relative to the group row "
            "(data.stats.rows[]): value}, [] marking this row's own date and Day-N value, e.g. "
            '{"rows[].total.totalCost.currency": "KRW", "rows[].values[].note": "x"}. Flagged by the '
            "unknown_columns check. Null when there are none.",
        ),
    }
    return pa.DataFrameSchema(
        columns,
        checks=[_null_only_when_masked(figure, flag) for figure, flag in MASKED_PAIRS],
        strict=True, unique=REVENUE_KEY_COLUMNS, name="airbridge/revenue", coerce=False,
    )


TOTAL_COUNT_MISMATCH_COLUMN = "total_count_mismatch"


@cache
def revenue_task_schema() -> pa.DataFrameSchema:
    """What a row's report task said about the rows it served, validated beside the table's rows
    (one column per row, same order) and never stored: a rule about the task, reported per row
    and so per partition."""
    return pa.DataFrameSchema(
        {
            TOTAL_COUNT_MISMATCH_COLUMN: pa.Column(
                TEXT,
                rule(TOTAL_COUNT, pa.Check(lambda values: values.isna(), ignore_na=False),
                     "the row's report task had a totalCount matching the rows paging returned"),
                nullable=True,
                description="Null, or what the row's report task served against its totalCount "
                "(task, range, totalCount, group rows, group-date rows, pages) when it matched "
                "neither and AIRBRIDGE_TOTAL_COUNT_MISMATCH=warn let the task load.",
            ),
        },
        strict=True, name="airbridge/revenue report task", coerce=False,
    )


# Layout 2: Airbridge's documented answer (per-date totals with masked flags, currency, group-by
# columns, undocumented keys in extra_fields); layout 1 (cohort_* columns read from an
# undocumented shape) is kept as revenue_layout1.
# keep_unknown_columns: the configured group-bys beyond channel and campaign are text columns.
REVENUE_TABLE = TABLES.register(
    TableSpec(asset_key=REVENUE_KEY, dataframe_schema=revenue_schema(), databases=(ARCHIVE, PRODUCT),
              row_key=("app_name", "group_values", "day_n"), keep_unknown_columns=True, layout_version=2)
)
