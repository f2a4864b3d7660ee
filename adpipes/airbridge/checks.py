"""Names and meanings of the Airbridge asset checks that are specific to Airbridge data.

The rules live in the pandera schema (``schemas.py``); the standard groups (required_values,
unique_keys, row_volume, ...) come from :mod:`adpipes.lib.quality`.
"""

from adpipes.lib.quality import CheckGroup

MASKED_FLAG = CheckGroup(
    "masked_flag",
    "Each Day-N figure says whether Airbridge masked it, as a JSON boolean: a figure whose "
    "isMasked is missing its meaning (e.g. a string) cannot be told apart from a real value.",
)
VALUE_RANGES = CheckGroup(
    "value_ranges",
    "Day N is 0-120 and cohort ad cost and user counts are not negative. Revenue may be negative "
    "(refunds and cancellations) and is not checked for sign.",
)
