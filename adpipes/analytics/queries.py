"""The SQL of the analysis assets: one ``INSERT ... SELECT`` per asset and day, run in product.

Each statement reads one day of its input tables and writes that day's rows; the asset empties the
day's partition first, in the same transaction, so a re-run replaces the day and never adds to it.
Table names are composed with ``psycopg.sql.Identifier`` and the day and lists are parameters:
no value is ever formatted into the SQL text.

Two rules hold throughout:

- A sum over rows of which one is NULL would silently understate the figure, so a group's figure
  is NULL unless every row has it (``CASE WHEN count(x) = count(*) THEN sum(x) END``), except where
  the column says otherwise (the daily report's N/A metrics).
- A ratio is never computed from a missing or zero denominator: it is NULL and its ``*_null_reason``
  column names the missing figure.
"""

from __future__ import annotations

from psycopg import sql

from adpipes.airbridge.schemas import REVENUE_TABLE
from adpipes.analytics.schemas import (
    AIRBRIDGE,
    APPSFLYER_COHORT,
    COHORT_ROAS_TABLE,
    COST_CURRENCY_MIXED,
    COST_MISSING,
    COST_ZERO,
    INSTALLS_MISSING,
    INSTALLS_ZERO,
    MEDIA_SOURCE_DAILY_TABLE,
    NO_DAILY_REPORT_ROW,
    PURCHASE_EVENT,
    REVENUE_MISSING,
    USERS_MISSING,
    USERS_ZERO,
)
from adpipes.appsflyer.raw_data_api import ORGANIC, RAW_REPORTS
from adpipes.appsflyer.schemas import COHORT_LTV_TABLE, DAILY_REPORT_TABLE, RAW_DATA_TABLE
from adpipes.lib.storage.tables import TableSpec

# The cohort_ltv KPI whose `sum` is the cohort's cumulative revenue (AppsFlyer's documents: the
# revenue KPI returns count and sum).
REVENUE_KPI = "revenue"
# The Airbridge metric whose Day-N value is revenue in the app's currency.
AIRBRIDGE_REVENUE_METRIC = "app_revenue"
# raw_data's in-app event rows: those of the raw reports of in-app events (organic, non-organic and
# retargeting); installs, uninstalls and reinstalls carry no revenue.
IN_APP_EVENT_REPORTS = sorted(r.name for r in RAW_REPORTS.values() if r.kind == "events")


def _table(spec: TableSpec) -> sql.Identifier:
    return sql.Identifier(spec.schema_name, spec.table_name)


def _columns(spec: TableSpec) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names)


# Ratios and their reasons, over the columns of the union of both sources.
_RATIOS = """
    CASE WHEN cost IS NULL OR cost = 0 OR revenue IS NULL THEN NULL ELSE revenue / cost END,
    CASE WHEN cost IS NULL THEN {cost_missing} WHEN cost = 0 THEN {cost_zero}
         WHEN revenue IS NULL THEN {revenue_missing} END,
    CASE WHEN users IS NULL OR users = 0 OR revenue IS NULL THEN NULL ELSE revenue / users END,
    CASE WHEN users IS NULL THEN {users_missing} WHEN users = 0 THEN {users_zero}
         WHEN revenue IS NULL THEN {revenue_missing} END,
"""

_COHORT_ROAS = """
WITH appsflyer AS (
    SELECT report_date, {appsflyer}::text AS source, cohort_type, platform, app_id AS app, media_source,
           campaign, period::integer AS day_n,
           CASE WHEN count(users) = count(*) THEN sum(users) END AS users,
           CASE WHEN count("sum") = count(*) THEN sum("sum") END AS revenue,
           CASE WHEN count(cost) = count(*) THEN sum(cost) END AS cost,
           currency, false AS masked
    FROM {cohort_ltv}
    WHERE report_date = %(day)s AND kpi = {revenue_kpi}
    GROUP BY report_date, cohort_type, platform, app_id, media_source, campaign, period, currency
),
airbridge_rows AS (
    -- Day N's cumulative revenue: the value itself, or (on-day reports) the sum of Days 0..N,
    -- null unless all of Days 0..N are there with a value.
    SELECT report_date, app_name, channel, campaign, day_n, currency, total_unique_users, total_cost,
           CASE WHEN aggregation_type = 'cumulative' THEN value
                WHEN count(value) OVER days = day_n + 1 AND count(*) OVER days = day_n + 1
                THEN sum(value) OVER days END AS revenue,
           CASE WHEN aggregation_type = 'cumulative' THEN is_masked ELSE bool_or(is_masked) OVER days END
               OR total_cost_is_masked OR total_unique_users_is_masked AS masked
    FROM {airbridge_revenue}
    WHERE report_date = %(day)s AND metric = {revenue_metric}
    WINDOW days AS (PARTITION BY app_name, group_values, aggregation_type ORDER BY day_n)
),
airbridge AS (
    -- Groups beyond channel and campaign (AIRBRIDGE_GROUP_BY) are disjoint sets of users: added up.
    SELECT report_date, {airbridge}::text AS source, NULL::text AS cohort_type, NULL::text AS platform,
           app_name AS app, channel AS media_source, campaign, day_n::integer AS day_n,
           CASE WHEN count(total_unique_users) = count(*) THEN sum(total_unique_users) END AS users,
           CASE WHEN count(revenue) = count(*) THEN sum(revenue) END AS revenue,
           CASE WHEN count(total_cost) = count(*) THEN sum(total_cost) END AS cost,
           currency, bool_or(masked) AS masked
    FROM airbridge_rows
    GROUP BY report_date, app_name, channel, campaign, day_n, currency
),
cohorts AS (
    SELECT * FROM appsflyer UNION ALL SELECT * FROM airbridge
)
INSERT INTO {target} ({columns})
SELECT report_date, source, cohort_type, platform, app, media_source, campaign, day_n, users, revenue, cost,
       currency, """ + _RATIOS + """
       masked
FROM cohorts
"""

_MEDIA_SOURCE_DAILY = """
WITH report AS (
    SELECT platform, app_id,
           CASE WHEN lower(media_source) = {organic} THEN {organic} ELSE media_source END AS media_source,
           campaign, impressions, clicks, installs, total_cost, currency
    FROM {daily_report}
    WHERE report_date = %(day)s
),
report_groups AS (
    -- Summed over agencies. Costs in more than one currency are never added up.
    SELECT platform, app_id, media_source, campaign,
           sum(impressions) AS impressions, sum(clicks) AS clicks, sum(installs) AS installs,
           count(DISTINCT coalesce(currency, '')) FILTER (WHERE total_cost IS NOT NULL) > 1 AS mixed,
           sum(total_cost) AS cost, min(currency) FILTER (WHERE total_cost IS NOT NULL) AS cost_currency
    FROM report
    GROUP BY platform, app_id, media_source, campaign
),
events AS (
    -- In-app events of the day, each counted once: under its primary attribution.
    SELECT platform, app_id,
           CASE WHEN attribution = {organic} THEN {organic} ELSE media_source END AS media_source,
           campaign, event_name, event_revenue, event_revenue_currency, event_revenue_usd
    FROM {raw_data}
    WHERE report_date = %(day)s AND source_report = ANY(%(event_reports)s)
      AND is_primary_attribution IS DISTINCT FROM false
),
by_currency AS (
    SELECT platform, app_id, media_source, campaign,
           jsonb_object_agg(currency, revenue ORDER BY currency) AS revenue_by_currency
    FROM (SELECT platform, app_id, media_source, campaign, coalesce(event_revenue_currency, 'unknown') AS currency,
                 sum(event_revenue) AS revenue
          FROM events WHERE event_revenue IS NOT NULL
          GROUP BY platform, app_id, media_source, campaign, 5) AS sums
    GROUP BY platform, app_id, media_source, campaign
),
event_groups AS (
    SELECT platform, app_id, media_source, campaign,
           count(*) FILTER (WHERE event_name = {purchase}) AS purchases,
           coalesce(sum(event_revenue_usd), 0) AS revenue_usd
    FROM events
    GROUP BY platform, app_id, media_source, campaign
),
sides AS (
    -- One row per group and side; grouping (not a join) matches a NULL campaign with a NULL one.
    SELECT platform, app_id, media_source, campaign, impressions, clicks, installs, mixed, cost, cost_currency,
           true AS in_report, 0::bigint AS purchases, 0::numeric AS revenue_usd, NULL::jsonb AS revenue_by_currency
    FROM report_groups
    UNION ALL
    SELECT e.platform, e.app_id, e.media_source, e.campaign, NULL, NULL, NULL, false, NULL, NULL,
           false, e.purchases, e.revenue_usd, c.revenue_by_currency
    FROM event_groups e
    LEFT JOIN by_currency c ON c.platform = e.platform AND c.app_id = e.app_id
        AND c.media_source IS NOT DISTINCT FROM e.media_source AND c.campaign IS NOT DISTINCT FROM e.campaign
),
groups AS (
    SELECT platform, app_id, media_source, campaign,
           max(impressions) AS impressions, max(clicks) AS clicks, max(installs) AS installs,
           bool_or(mixed) AS mixed, bool_or(in_report) AS in_report,
           max(cost) AS cost, max(cost_currency) AS cost_currency,
           sum(purchases) AS purchases, sum(revenue_usd) AS revenue_usd,
           max(revenue_by_currency::text)::jsonb AS revenue_by_currency
    FROM sides
    GROUP BY platform, app_id, media_source, campaign
)
INSERT INTO {target} ({columns})
SELECT %(day)s::date, platform, app_id, media_source, campaign, impressions, clicks, installs,
       CASE WHEN mixed THEN NULL ELSE cost END,
       CASE WHEN mixed THEN NULL ELSE cost_currency END,
       CASE WHEN mixed OR cost IS NULL OR installs IS NULL OR installs = 0 THEN NULL ELSE cost / installs END,
       CASE WHEN NOT in_report THEN {no_report_row} WHEN mixed THEN {mixed_currency}
            WHEN cost IS NULL THEN {cost_missing} WHEN installs IS NULL THEN {installs_missing}
            WHEN installs = 0 THEN {installs_zero} END,
       purchases, revenue_usd, revenue_by_currency
FROM groups
"""


def _literals(**values: str) -> dict[str, sql.Literal]:
    return {name: sql.Literal(value) for name, value in values.items()}


_REASONS = _literals(cost_missing=COST_MISSING, cost_zero=COST_ZERO, revenue_missing=REVENUE_MISSING,
                     users_missing=USERS_MISSING, users_zero=USERS_ZERO)


def cohort_roas_statement() -> sql.Composed:
    """Writes one day (parameter ``day``) of analytics.cohort_roas from cohort_ltv and airbridge.revenue."""
    return sql.SQL(_COHORT_ROAS).format(
        target=_table(COHORT_ROAS_TABLE), columns=_columns(COHORT_ROAS_TABLE),
        cohort_ltv=_table(COHORT_LTV_TABLE), airbridge_revenue=_table(REVENUE_TABLE),
        **_literals(appsflyer=APPSFLYER_COHORT, airbridge=AIRBRIDGE, revenue_kpi=REVENUE_KPI,
                    revenue_metric=AIRBRIDGE_REVENUE_METRIC),
        **_REASONS,
    )


def media_source_daily_statement() -> sql.Composed:
    """Writes one day (parameters ``day``, ``event_reports``) of analytics.media_source_daily from
    daily_report and raw_data."""
    return sql.SQL(_MEDIA_SOURCE_DAILY).format(
        target=_table(MEDIA_SOURCE_DAILY_TABLE), columns=_columns(MEDIA_SOURCE_DAILY_TABLE),
        daily_report=_table(DAILY_REPORT_TABLE), raw_data=_table(RAW_DATA_TABLE),
        **_literals(organic=ORGANIC, purchase=PURCHASE_EVENT, no_report_row=NO_DAILY_REPORT_ROW,
                    mixed_currency=COST_CURRENCY_MIXED, cost_missing=COST_MISSING,
                    installs_missing=INSTALLS_MISSING, installs_zero=INSTALLS_ZERO),
    )


def media_source_daily_parameters(day: object) -> dict[str, object]:
    return {"day": day, "event_reports": IN_APP_EVENT_REPORTS}
