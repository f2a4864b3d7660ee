"""Names and meanings of the Airbridge asset checks that are specific to Airbridge data.

The rules live in the pandera schema (``schemas.py``); the standard groups (required_values,
unique_keys, unknown_columns, row_volume, ...) come from :mod:`adpipes.lib.quality`.
"""

from adpipes.lib.quality import CheckGroup

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
