"""Table definitions of the analysis assets (schema ``analytics`` of the product database).

The tables are derived inside product from product tables, so they live in product only; their
pandera schemas exist for what every adpipes table derives from one: the DDL, the column
comments and the ``dagster/column_schema`` shown in the UI. Rows are never validated in Python
(they never leave PostgreSQL).
"""

from __future__ import annotations

from functools import cache

import dagster as dg
import pandera.pandas as pa

from adpipes.lib.storage.tables import PRODUCT, TABLES, TEXT, TableSpec, report_date_column

COHORT_ROAS_KEY = dg.AssetKey(["analytics", "cohort_roas"])
MEDIA_SOURCE_DAILY_KEY = dg.AssetKey(["analytics", "media_source_daily"])

# cohort_roas.source: which product table a row was derived from.
APPSFLYER_COHORT = "appsflyer_cohort"
AIRBRIDGE = "airbridge"

# Why a ratio is NULL. A ratio is never computed from a missing or zero denominator and never
# shown as 0 in its place: the reason says which figure was missing.
COST_MISSING = "cost_missing"
COST_ZERO = "cost_zero"
REVENUE_MISSING = "revenue_missing"
USERS_MISSING = "users_missing"
USERS_ZERO = "users_zero"
NO_DAILY_REPORT_ROW = "no_daily_report_row"
INSTALLS_MISSING = "installs_missing"
INSTALLS_ZERO = "installs_zero"
COST_CURRENCY_MIXED = "cost_currency_mixed"

# The in-app event counted as a purchase in media_source_daily (AppsFlyer's standard purchase
# event, the one the original scripts kept the receipt id of).
PURCHASE_EVENT = "af_purchase"


def _text(description: str, nullable: bool = True) -> pa.Column:
    return pa.Column(TEXT, nullable=nullable, description=description)


def _typed(dtype: str, pg_type: str, description: str, nullable: bool = True) -> pa.Column:
    return pa.Column(dtype, nullable=nullable, description=description, metadata={"pg_type": pg_type})


def _money(description: str) -> pa.Column:
    return _typed("Float64", "numeric", description)


@cache
def cohort_roas_schema() -> pa.DataFrameSchema:
    columns = {
        "report_date": report_date_column(),
        "source": _text(
            f"Where the row comes from: {APPSFLYER_COHORT} (appsflyer/cohort_ltv, the Cohort API's revenue "
            f"KPI) or {AIRBRIDGE} (airbridge/revenue, the revenue report). report_date is the cohort's "
            "install (start-event) day in both. Never add the two sources up: they measure the same "
            "users twice.", nullable=False),
        "cohort_type": _text(
            "appsflyer_cohort: the cohort's attribution type as pulled (user_acquisition, retargeting or "
            "unified; unified includes the other two, so filter on one type before summing). airbridge: "
            "null (the cohort is the users of the report's start events, app_install by default)."),
        "platform": _text("appsflyer_cohort: android or ios (the platform of `app`). airbridge: null (an "
                          "Airbridge app covers both platforms)."),
        "app": _text("appsflyer_cohort: the AppsFlyer app id (appsflyer.cohort_ltv.app_id). airbridge: the "
                     "Airbridge app name (airbridge.revenue.app_name).", nullable=False),
        "media_source": _text(
            "appsflyer_cohort: the media source (pid) as delivered (organic users: AppsFlyer's own "
            "spelling). airbridge: the channel (null when channel is not in AIRBRIDGE_GROUP_BY)."),
        "campaign": _text("The campaign as delivered; null when the source's grouping leaves it out."),
        "day_n": _typed("Int64", "integer",
                        "Days since the install day (0 = the install day itself): appsflyer_cohort's period "
                        "(0-30, 60, 90, 180; only complete periods exist), airbridge's day_n (0-120).",
                        nullable=False),
        "users": _typed("Int64", "bigint",
                        "Users in the cohort: appsflyer_cohort's users, airbridge's total_unique_users "
                        "(the group's users with a start event on report_date). The same on every day_n."),
        "revenue": _money(
            "Cumulative revenue of the cohort's users from the install day through day_n, in `currency`: "
            "appsflyer_cohort: the revenue KPI's sum (cohort_ltv.sum where kpi = 'revenue'); airbridge: "
            "value where metric = 'app_revenue' (summed over Days 0..N when the report is on-day; "
            "null then if one of those days is null). Refunds lower it."),
        "cost": _money(
            "Ad cost of the cohort, in `currency`, from the same source as revenue: appsflyer_cohort: "
            "cohort_ltv.cost (AppsFlyer's cost of the install day's campaign, the one its own roas KPI "
            "divides by); airbridge: total_cost (the group's ad cost on report_date). The same on every "
            "day_n: take it once per cohort. Null when the source reports none (organic users, "
            "campaigns without cost data)."),
        "currency": _text(
            "ISO 4217 code of revenue, cost and ltv_per_user: cohort_ltv.currency (the apps' currency or "
            "USD, APPSFLYER_CURRENCY) or airbridge.revenue.currency (AIRBRIDGE_CURRENCY). Revenue and "
            "cost of a row are always in this one currency; never sum rows of different currencies.",
            nullable=False),
        "roas": _money(
            "Return on ad spend through day_n as a ratio (not a percentage): revenue / cost. 1.0 means "
            "the cohort has paid back its cost. Null when it cannot be computed; roas_null_reason says "
            "why."),
        "roas_null_reason": _text(
            f"Null when roas is set; otherwise {COST_MISSING} (the source reported no cost), {COST_ZERO} "
            f"(cost is 0: no ratio) or {REVENUE_MISSING} (the source reported no revenue for day_n, e.g. "
            "masked by Airbridge)."),
        "ltv_per_user": _money(
            "Lifetime value per user through day_n, in `currency`: revenue / users. Null when it cannot "
            "be computed; ltv_null_reason says why."),
        "ltv_null_reason": _text(
            f"Null when ltv_per_user is set; otherwise {USERS_MISSING}, {USERS_ZERO} or {REVENUE_MISSING}."),
        "masked": _typed("boolean", "boolean",
                         "airbridge: Airbridge masked one of the row's figures (value, total_cost or "
                         "total_unique_users; privacy thresholds): the figure is what Airbridge sent, not "
                         "the real one. appsflyer_cohort: always false.", nullable=False),
    }
    return pa.DataFrameSchema(columns, strict=True, name="analytics/cohort_roas")


@cache
def media_source_daily_schema() -> pa.DataFrameSchema:
    def report(description: str) -> pa.Column:
        return _typed("Int64", "bigint", description + " Summed over the daily report's agencies; null when "
                      "the daily report has no row for the group (or AppsFlyer said N/A).")

    columns = {
        "report_date": report_date_column(),
        "platform": _text("android or ios: the platform of app_id.", nullable=False),
        "app_id": _text("AppsFlyer app id (daily_report.app_id, raw_data.app_id).", nullable=False),
        "media_source": _text(
            "Media source (pid). 'organic' for organic traffic in both inputs: the daily report's "
            "organic row (any case) and raw_data's rows with attribution = 'organic' (which have no "
            "media source).", nullable=False),
        "campaign": _text("Campaign name (c); null when AppsFlyer has none (organic, or 'None' in the "
                          "daily report)."),
        "impressions": report("Ad impressions (daily_report.impressions)."),
        "clicks": report("Ad clicks (daily_report.clicks)."),
        "installs": report("Attributed installs of the day (daily_report.installs)."),
        "cost": _money("Ad spend of the day in cost_currency (daily_report.total_cost summed over agencies). "
                       "Null when the daily report has no cost (organic: N/A), no row for the group, or rows "
                       f"in several currencies ({COST_CURRENCY_MIXED}: never added up)."),
        "cost_currency": _text("ISO 4217 code of cost and ecpi (daily_report.currency: the app's currency in "
                               "AppsFlyer). Null with cost."),
        "ecpi": _money("Effective cost per install in cost_currency: cost / installs. Null when it cannot be "
                       "computed; ecpi_null_reason says why."),
        "ecpi_null_reason": _text(
            f"Null when ecpi is set; otherwise {NO_DAILY_REPORT_ROW} (the group is only in raw_data), "
            f"{COST_CURRENCY_MIXED}, {COST_MISSING}, {INSTALLS_MISSING} or {INSTALLS_ZERO}."),
        "purchases": _typed("Int64", "bigint",
                            f"In-app events named {PURCHASE_EVENT} on report_date attributed to the group "
                            "(raw_data, primary attribution only: is_primary_attribution not false, so an "
                            "event in both a user-acquisition and a retargeting report counts once). 0 when "
                            "there were none.", nullable=False),
        "revenue_usd": _money(
            "Revenue of every in-app event on report_date attributed to the group, in USD: the sum of "
            "raw_data.event_revenue_usd (AppsFlyer's conversion), primary attribution only; refunds are "
            "negative. 0 when there was none. Events of the day, whatever the user's install day: this "
            "is not cohort revenue (see analytics/cohort_roas)."),
        "revenue_by_currency": _typed(
            "str", "jsonb",
            "The same revenue as delivered, per currency: {event_revenue_currency: sum of event_revenue}, "
            "e.g. {\"KRW\": 33000, \"USD\": 19.98}. Amounts in different currencies are never added up. "
            "Null when there was no revenue."),
    }
    return pa.DataFrameSchema(columns, strict=True, name="analytics/media_source_daily")


COHORT_ROAS_TABLE = TABLES.register(
    TableSpec(asset_key=COHORT_ROAS_KEY, dataframe_schema=cohort_roas_schema(), databases=(PRODUCT,),
              row_key=("source", "cohort_type", "platform", "app", "media_source", "campaign", "day_n",
                       "currency"))
)
MEDIA_SOURCE_DAILY_TABLE = TABLES.register(
    TableSpec(asset_key=MEDIA_SOURCE_DAILY_KEY, dataframe_schema=media_source_daily_schema(),
              databases=(PRODUCT,), row_key=("platform", "app_id", "media_source", "campaign"))
)
