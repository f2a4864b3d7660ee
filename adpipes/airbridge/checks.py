"""Names and meanings of the Airbridge asset checks that are specific to Airbridge data.

The rules live in the pandera schema (``schemas.py``); the standard groups (required_values,
unique_keys, unknown_columns, row_volume, ...) come from :mod:`adpipes.lib.quality`.
"""

from adpipes.lib.quality import WARN, CheckGroup

MASKED_VALUES = CheckGroup(
    "masked_values",
    "A figure (Day-N value, total cost, revenue or unique users) is empty only where Airbridge "
    "flagged it masked: an empty figure that is not masked would read as a real zero or a gap.",
)
VALUE_RANGES = CheckGroup(
    "value_ranges",
    "Day N is 0-120 and ad cost and unique users are not negative. Revenue may be negative "
    "(refunds and cancellations) and is not checked for sign.",
)
TOTAL_COUNT = CheckGroup(
    "total_count",
    "The rows came from a report task whose data.metadata.totalCount matched the rows paging "
    "returned (its group rows or its (group, date) rows). With AIRBRIDGE_TOTAL_COUNT_MISMATCH=warn, "
    "a task whose totalCount was the same on every page but matched neither is loaded as paging "
    "(hasNext) returned it, and its rows fail this check as a warning, by partition: nothing "
    "confirmed that no row is missing, so compare those days with the Airbridge dashboard. By "
    "default (fail) such a task fails the run and nothing is loaded; a totalCount that changes "
    "between pages always fails the run.",
    WARN,
)
