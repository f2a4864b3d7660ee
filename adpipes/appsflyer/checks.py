"""Names and meanings of the AppsFlyer asset checks that are specific to AppsFlyer data.

The rules themselves live in the pandera schemas (``schemas.py``), each marked with one of these
groups; the standard groups (required_columns, required_values, unknown_columns, row_volume, ...)
come from :mod:`adpipes.lib.quality`.
"""

from adpipes.lib.quality import WARN, CheckGroup

PARSEABLE_VALUES = CheckGroup(
    "parseable_values",
    "Every delivered value of a typed column can be read: timestamps in AppsFlyer's "
    "`yyyy-mm-dd hh:mm:ss` form, true/false flags, numbers. A row with an unreadable value is "
    "quarantined rather than stored with a null in its place.",
)
VALID_CUSTOMER_USER_ID = CheckGroup(
    "valid_customer_user_id",
    "Customer User ID, when present, is the app's own user id: a non-negative whole number that "
    "joins with the app's tables.",
)
VALID_PLATFORM = CheckGroup("valid_platform", "The row's platform is android or ios.")
PARTITION_DATE = CheckGroup(
    "partition_date",
    "report_date is the local date (ADPIPES_TIMEZONE) of the row's time: a row dated another day "
    "means the report was requested in the wrong timezone or the vendor sent a foreign row.",
)
TIME_ORDER = CheckGroup(
    "time_order",
    "Attribution times are in order: touch <= install <= event. AppsFlyer occasionally reports "
    "clock skew from devices and networks, so this warns and keeps the rows.",
    WARN,
)
NON_NEGATIVE = CheckGroup(
    "non_negative",
    "Counts, cost and derived ratios are never negative (revenue may be: refunds are negative).",
)
RATE_RANGES = CheckGroup(
    "rate_ranges",
    "Rates AppsFlyer defines as a share (CTR = clicks / impressions) lie within [0, 1]. Warns "
    "only: the row's counts and cost are still right when a network reports odd clicks.",
    WARN,
)
CUMULATIVE_GROWTH = CheckGroup(
    "cumulative_growth",
    "Cumulative cohort values (each function of each KPI: count, cvr, rate, sum, unique users) do "
    "not decrease from one period to the next. Warns only: refunds and cancellations are reported "
    "as negative revenue and can lower a cumulative sum (and roas/roi with it).",
    WARN,
)
PERCENTAGE_RANGES = CheckGroup(
    "percentage_ranges",
    "Cohort figures the Cohort API documents as percentages of the cohort's users (CVR) lie "
    "within [0, 100]. Warns only: the row's other figures are still right.",
    WARN,
)
