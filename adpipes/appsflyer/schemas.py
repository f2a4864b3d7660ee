"""Table definitions (pandera schemas) of the AppsFlyer assets.

The raw per-platform reports are archived as delivered: every vendor column as text under its
snake_case name, including columns AppsFlyer adds later. ``appsflyer/raw_data`` is the unified,
typed table that product queries join with the app's own data.
"""

from __future__ import annotations

import datetime as dt
from functools import cache

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
from pandera.engines import pandas_engine

from adpipes.appsflyer.checks import (
    CUMULATIVE_GROWTH,
    NON_NEGATIVE,
    PARSEABLE_VALUES,
    PARTITION_DATE,
    PERCENTAGE_RANGES,
    RATE_RANGES,
    TIME_ORDER,
    VALID_CUSTOMER_USER_ID,
    VALID_PLATFORM,
)
from adpipes.appsflyer.cohort_api import (
    COHORT_FUNCTIONS,
    COUNT,
    CVR,
    DOCUMENTED_KPI_FUNCTIONS,
    EVENT_KPI_FUNCTIONS,
    RATE,
    SUM,
    UNIQUE_USERS,
)
from adpipes.appsflyer.raw_data_api import ORGANIC, RAW_REPORTS, RETARGETING, exact_strptime
from adpipes.lib.quality import REQUIRED_VALUES, rule
from adpipes.lib.storage.names import column_name, snake_case_name
from adpipes.lib.storage.tables import (
    ARCHIVE,
    PRODUCT,
    TABLES,
    TableSpec,
    TEXT,
    report_date_column,
)

PLATFORMS = ("android", "ios")

# Header names of the raw-data reports as AppsFlyer delivers them (installs and in-app events
# share them). Parsing goes by these names, never by position: AppsFlyer adds columns over time.
RAW_REPORT_COLUMNS = (
    "Attributed Touch Type", "Attributed Touch Time", "Install Time", "Event Time", "Event Name",
    "Event Value", "Event Revenue", "Event Revenue Currency", "Event Revenue USD", "Event Source",
    "Is Receipt Validated", "Partner", "Media Source", "Channel", "Keywords", "Campaign",
    "Campaign ID", "Adset", "Adset ID", "Ad", "Ad ID", "Ad Type", "Site ID", "Sub Site ID",
    "Sub Param 1", "Sub Param 2", "Sub Param 3", "Sub Param 4", "Sub Param 5", "Cost Model",
    "Cost Value", "Cost Currency",
    "Contributor 1 Partner", "Contributor 1 Media Source", "Contributor 1 Campaign",
    "Contributor 1 Touch Type", "Contributor 1 Touch Time",
    "Contributor 2 Partner", "Contributor 2 Media Source", "Contributor 2 Campaign",
    "Contributor 2 Touch Type", "Contributor 2 Touch Time",
    "Contributor 3 Partner", "Contributor 3 Media Source", "Contributor 3 Campaign",
    "Contributor 3 Touch Type", "Contributor 3 Touch Time",
    "Region", "Country Code", "State", "City", "Postal Code", "DMA", "IP", "WIFI", "Operator",
    "Carrier", "Language", "AppsFlyer ID", "Advertising ID", "IDFA", "Android ID",
    "Customer User ID", "IMEI", "IDFV", "Platform", "Device Type", "OS Version", "App Version",
    "SDK Version", "App ID", "App Name", "Bundle ID", "Is Retargeting",
    "Retargeting Conversion Type", "Attribution Lookback", "Reengagement Window",
    "Is Primary Attribution", "User Agent", "HTTP Referrer", "Original URL",
)  # fmt: skip

# What each raw report column holds, from AppsFlyer's raw data field dictionary (the V5 spec)
# and the original scripts' column table (vendor-docs). Every raw column's description starts
# with the header AppsFlyer delivers it under, so a reader finds it in AppsFlyer's documents.
RAW_COLUMN_DOCS = {
    "Attributed Touch Type": "type of the touch that won the attribution: click, impression, TV or "
                             "pre-install. Empty for organic users.",
    "Attributed Touch Time": "when the touch that won the attribution happened (for retargeting, "
                             "the re-engagement touch). Empty for organic users.",
    "Install Time": "when the user first opened the app after installing it (AppsFlyer's install).",
    "Event Time": "when the row's event happened: the install time on install rows, the "
                  "re-engagement on retargeting installs, the detection time on uninstalls. "
                  "Partitions follow it.",
    "Event Name": "install, re-engagement, re-attribution, reinstall, uninstall, or the in-app event's "
                  "name as the app sent it (af_purchase, ...).",
    "Event Value": "the in-app event's parameters as the app sent them, a JSON string (revenue, "
                   "currency, af_receipt_id, ...).",
    "Event Revenue": "revenue the event carried, in Event Revenue Currency; refunds are negative.",
    "Event Revenue Currency": "ISO 4217 code of Event Revenue, as the app sent it.",
    "Event Revenue USD": "Event Revenue converted by AppsFlyer to US dollars.",
    "Event Source": "how the event reached AppsFlyer: SDK or S2S.",
    "Is Receipt Validated": "whether AppsFlyer validated the purchase receipt with the store "
                            "(true/false); empty when receipts are not validated.",
    "Partner": "agency or preferred marketing partner (af_prt) that ran the attributed campaign.",
    "Media Source": "media source (pid) the user is attributed to, e.g. googleadwords_int, "
                    "Facebook Ads; organic in the organic reports.",
    "Channel": "channel of the media source (af_channel), e.g. YouTube, Instagram.",
    "Keywords": "search keywords the network reported (af_keywords).",
    "Campaign": "campaign name (c).",
    "Campaign ID": "campaign id (af_c_id).",
    "Adset": "ad set name (af_adset).",
    "Adset ID": "ad set id (af_adset_id).",
    "Ad": "ad name (af_ad).",
    "Ad ID": "ad id (af_ad_id).",
    "Ad Type": "ad type (af_ad_type), e.g. video, banner, playable.",
    "Site ID": "publisher (site) id (af_siteid).",
    "Sub Site ID": "sub-publisher id (af_sub_siteid).",
    **{f"Sub Param {n}": f"free-form attribution link parameter af_sub{n}." for n in range(1, 6)},
    "Cost Model": "cost model the attribution link reported (af_cost_model), e.g. CPI.",
    "Cost Value": "cost the attribution link reported (af_cost_value), in Cost Currency.",
    "Cost Currency": "ISO 4217 code of Cost Value (af_cost_currency).",
    **{
        f"Contributor {n} {part}": f"assisting touch {n} (a touch that contributed to the install "
                                   f"without winning its attribution): {meaning}"
        for n in (1, 2, 3)
        for part, meaning in (
            ("Partner", "agency or partner (af_prt)."),
            ("Media Source", "media source (pid)."),
            ("Campaign", "campaign name."),
            ("Touch Type", "click or impression."),
            ("Touch Time", "when the touch happened."),
        )
    },
    "Region": "region (continent code, e.g. AS, EU) resolved from the device's IP address.",
    "Country Code": "ISO 3166-1 alpha-2 country code resolved from the device's IP address.",
    "State": "state or province resolved from the device's IP address.",
    "City": "city resolved from the device's IP address.",
    "Postal Code": "postal code resolved from the device's IP address.",
    "DMA": "US designated market area resolved from the device's IP address.",
    "IP": "the device's IP address (AppsFlyer may mask it by privacy setting).",
    "WIFI": "whether the device was on Wi-Fi (true/false, True/False or 1/0).",
    "Operator": "mobile network operator of the device.",
    "Carrier": "carrier name of the device's SIM.",
    "Language": "the device's language setting.",
    "AppsFlyer ID": "AppsFlyer's id of the app's install on a device (a reinstall gets a new one); "
                    "the id S2S events name.",
    "Advertising ID": "Google advertising id (GAID) on Android; empty on iOS, whose id is in IDFA.",
    "IDFA": "Apple's identifier for advertisers (iOS); empty without the user's ATT consent.",
    "Android ID": "Android device id (collected only when the app enables it).",
    "Customer User ID": "the app's own user id (CUID) set through the SDK; empty until the app sets it.",
    "IMEI": "device IMEI (collected only when the app enables it).",
    "IDFV": "Apple's identifier for vendors (iOS).",
    "Platform": "android or ios.",
    "Device Type": "device model, e.g. iPhone14,2 or SM-G991N.",
    "OS Version": "operating system version of the device.",
    "App Version": "version of the app on the device.",
    "SDK Version": "version of the AppsFlyer SDK in the app.",
    "App ID": "AppsFlyer app id (Android package name, or id followed by digits on iOS), as delivered.",
    "App Name": "the app's name in its store.",
    "Bundle ID": "the app's package name or bundle id.",
    "Is Retargeting": "whether the row belongs to a retargeting campaign (true/false).",
    "Retargeting Conversion Type": "re-engagement or re-attribution, on retargeting rows.",
    "Attribution Lookback": "lookback window of the attributed touch, e.g. 7d (click) or 1d (impression).",
    "Reengagement Window": "how long a re-engagement stays attributed to its retargeting campaign.",
    "Is Primary Attribution": "false on a user-acquisition row of a user who is in a re-engagement window "
                              "(the retargeting report has the row as primary); true otherwise.",
    "User Agent": "user agent of the device at the attributed click.",
    "HTTP Referrer": "HTTP referrer of the attributed click.",
    "Original URL": "the attribution link (URL) of the attributed touch.",
}

if set(RAW_COLUMN_DOCS) != set(RAW_REPORT_COLUMNS):
    raise RuntimeError(f"raw columns without a description: {set(RAW_REPORT_COLUMNS) ^ set(RAW_COLUMN_DOCS)}")


def vendor_described(header: str, text: str) -> str:
    """A column description that names the vendor's header first: ``Event Time — when ...``."""
    return f"{header} — {text}"


def snake_case(header: str) -> str:
    """``Media Source`` -> ``media_source``, ``Event Revenue USD`` -> ``event_revenue_usd``.

    A name over PostgreSQL's 63 bytes is cut and ends in a hash of the full name; a header that
    cannot name a column (markup, control characters, no letters) raises ``UnusableHeader``
    (see :mod:`adpipes.lib.storage.names`).
    """
    return column_name(snake_case_name(header), header)


RAW_COLUMN_NAMES = tuple(snake_case(h) for h in RAW_REPORT_COLUMNS)


# How AppsFlyer writes timestamps and booleans in raw reports (read by appsflyer/transform.py).
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
TRUE_SPELLINGS = ("true", "1", "yes", "t")
FALSE_SPELLINGS = ("false", "0", "no", "f")
# bigint range: longer digit strings would overflow customer_user_id.
CUSTOMER_USER_ID_PATTERN = r"\d{1,18}(?:\.0+)?"  # "1000000186.0": ids that went through a float

# Columns without which a raw report row cannot be placed (who, what, when, from where).
RAW_REQUIRED_COLUMNS = ("appsflyer_id", "event_time", "install_time", "event_name", "platform", "media_source")
# Organic users came from no media source and no touch: a delivered organic row may leave Media
# Source empty, and is valid (raw_data stores it as ORGANIC_MEDIA_SOURCE, see transform.py).
ORGANIC_OPTIONAL_VALUES = ("media_source",)
# The column adpipes adds to each archived raw report row: the app id the report was requested
# for (the path's app id). AppsFlyer's own App ID column is kept as delivered beside it; rows
# archived before several apps per platform were supported have it empty.
REQUESTED_APP_ID = "requested_app_id"
RAW_TIME_COLUMNS = ("attributed_touch_time", "install_time", "event_time") + tuple(
    f"contributor_{n}_touch_time" for n in (1, 2, 3)
)
RAW_FLAG_COLUMNS = ("wifi", "is_retargeting", "is_primary_attribution")
RAW_MONEY_COLUMNS = ("event_revenue", "event_revenue_usd")


def parse_timestamps(values: pd.Series) -> pd.Series:
    """AppsFlyer's offset-less ``yyyy-mm-dd hh:mm:ss`` wall times as naive datetimes; anything
    else is NaT. Arrow's strptime: five times faster than pandas' on a million values."""
    parsed = exact_strptime(pa_arrow.array(values, type=pa_arrow.string(), from_pandas=True), TIMESTAMP_FORMAT)
    return parsed.to_pandas().set_axis(values.index).astype("datetime64[us]")


def _blank(values: pd.Series) -> pd.Series:
    # The archive reads empty cells back as null; "" is what a vendor frame may still carry.
    return values.isna() | (values == "")


def _parseable_time(values: pd.Series) -> pd.Series:
    return _blank(values) | parse_timestamps(values).notna()


def _parseable_flag(values: pd.Series) -> pd.Series:
    return _blank(values) | values.str.strip().str.lower().isin(TRUE_SPELLINGS + FALSE_SPELLINGS)


def _parseable_number(values: pd.Series) -> pd.Series:
    return _blank(values) | pd.to_numeric(values.str.strip(), errors="coerce").notna()


def _whole_number(values: pd.Series) -> pd.Series:
    return _blank(values) | values.str.strip().str.fullmatch(CUSTOMER_USER_ID_PATTERN).fillna(False).astype(bool)


def _present(values: pd.Series) -> pd.Series:
    return ~_blank(values)


def _raw_value_checks(name: str, attribution: str | None = None) -> list[pa.Check]:
    checks = []
    if name in RAW_REQUIRED_COLUMNS and not (attribution == ORGANIC and name in ORGANIC_OPTIONAL_VALUES):
        checks.append(rule(REQUIRED_VALUES, pa.Check(_present, ignore_na=False), f"{name} is not empty"))
    if name in RAW_TIME_COLUMNS:
        checks.append(rule(PARSEABLE_VALUES, pa.Check(_parseable_time),
                           f"{name} is a timestamp in yyyy-mm-dd hh:mm:ss form"))
    if name in RAW_FLAG_COLUMNS:
        checks.append(rule(PARSEABLE_VALUES, pa.Check(_parseable_flag),
                           f"{name} is true/false (or True/False, 1/0, yes/no)"))
    if name in RAW_MONEY_COLUMNS:
        checks.append(rule(PARSEABLE_VALUES, pa.Check(_parseable_number), f"{name} is a number"))
    if name == "customer_user_id":
        checks.append(rule(VALID_CUSTOMER_USER_ID, pa.Check(_whole_number),
                           "customer_user_id is a non-negative whole number (at most 18 digits)"))
    return checks


@cache
def raw_report_schema(attribution: str | None = None) -> pa.DataFrameSchema:
    """A raw report as delivered: every column text (nullable: the archive keeps whatever came),
    the columns adpipes needs required, and the rules their values must meet to be unified.
    ``attribution`` (organic, ...) relaxes what its rows may leave empty (None: the strictest)."""
    columns = {"report_date": report_date_column()}
    for header, name in zip(RAW_REPORT_COLUMNS, RAW_COLUMN_NAMES):
        columns[name] = pa.Column(
            TEXT, checks=_raw_value_checks(name, attribution), nullable=True, required=name in RAW_REQUIRED_COLUMNS,
            description=vendor_described(header, RAW_COLUMN_DOCS[header]),
        )
    columns[REQUESTED_APP_ID] = pa.Column(
        TEXT, nullable=True, required=False,
        description="Added by adpipes: the app id the report was requested for (the request path's "
        "app id). AppsFlyer's own App ID column is kept as delivered. Empty for rows archived "
        "before adpipes recorded it.")
    # strict=False: unknown vendor columns are kept (the archive table grows a text column).
    return pa.DataFrameSchema(columns, strict=False, name="appsflyer raw report (as delivered)")


@cache
def raw_values_schema(attribution: str | None = None) -> pa.DataFrameSchema:
    """The value rules of :func:`raw_report_schema` alone: what ``raw_data`` checks on each
    delivered row before unifying it (the raw report assets themselves check only the header)."""
    schema = raw_report_schema(attribution)
    checked = [name for name, column in schema.columns.items() if column.checks]
    return schema.select_columns(checked)


def raw_asset_key(platform: str, report_short: str) -> dg.AssetKey:
    return dg.AssetKey(["appsflyer", f"{platform}_{report_short}"])


RAW_DATA_KEY = dg.AssetKey(["appsflyer", "raw_data"])

_TS = "Timestamp in the app timezone (AppsFlyer sends it without offset, in the requested timezone)."


def _text(description: str, nullable: bool = True) -> pa.Column:
    return pa.Column(TEXT, nullable=nullable, description=description)


# Any timezone: frames carry the app timezone, the IO manager writes timestamptz with offsets.
TIMESTAMP_DTYPE = pandas_engine.DateTime(unit="us", tz=dt.timezone.utc, time_zone_agnostic=True)


def _platform(description: str) -> pa.Column:
    return pa.Column(
        TEXT, rule(VALID_PLATFORM, pa.Check.isin(PLATFORMS), "platform is android or ios"),
        nullable=False, description=description,
    )


def _time(description: str, nullable: bool = True) -> pa.Column:
    return pa.Column(TIMESTAMP_DTYPE, nullable=nullable, description=f"{description} {_TS}")


def _flag(description: str) -> pa.Column:
    return pa.Column(
        "boolean", nullable=True, description=f"{description} (normalized from true/True/1 spellings)"
    )


def _money(description: str) -> pa.Column:
    return pa.Column("Float64", nullable=True, description=description, metadata={"pg_type": "numeric"})


# What raw_data calls AppsFlyer's organic media source: the spelling of AppsFlyer's aggregate
# reports and cohorts (and of the organic raw reports' Media Source), so raw_data joins them.
ORGANIC_MEDIA_SOURCE = "organic"


@cache
def raw_data_schema() -> pa.DataFrameSchema:
    # Columns from a vendor header name it first (vendor_described), as on the raw reports; the
    # columns adpipes adds say so. The required columns (RAW_REQUIRED_COLUMNS) are not nullable
    # here: a row without one (or with one that does not read) is quarantined, never stored.
    v = vendor_described
    columns: dict[str, pa.Column] = {
        "report_date": report_date_column(),
        "app_id": _text("Added by adpipes: the AppsFlyer app id the report was requested for (Android "
                        "package name, or id followed by digits on iOS); for rows archived before "
                        "adpipes recorded it, AppsFlyer's App ID column, else the platform's only app.", False),
        "platform": _platform(v("Platform", "android or ios (lowercased as delivered).")),
        "source_report": _text("Added by adpipes: the AppsFlyer raw report the row came from, as AppsFlyer names it (installs_report, organic_installs_report, installs-retarget, uninstall_events_report, ...).", False),
        # Set by adpipes from the report's registry entry (never from the vendor's values).
        "attribution": pa.Column(
            TEXT, nullable=False,
            description="Added by adpipes: what the user is attributed to, from the report the row came "
            "from: non_organic (a media source's install or its users' events), organic (no media "
            "source or touch: media_source is organic, the touch columns are empty) or retargeting "
            "(a re-engagement or re-attribution)."),
        "attributed_touch_type": _text(v("Attributed Touch Type", "click or impression that won the attribution; null for organic users.")),
        "attributed_touch_time": _time(v("Attributed Touch Time", "When the attributed touch happened; null for organic users.")),
        "install_time": _time(v("Install Time", "When the app was first opened."), nullable=False),
        "event_time": _time(v("Event Time", "When the event happened (the install time for installs)."), nullable=False),
        "event_name": _text(v("Event Name", "As delivered: install, re-engagement, re-attribution, reinstall, uninstall, or the in-app event name (af_purchase, ...)."), False),
        "event_value": _text(v("Event Value", "Purchase receipt id: the af_receipt_id of the Event Value JSON (key in any case), for every event that carries one, whatever its name; otherwise null. Kept as text: receipt ids are long digit strings or GPA.xxxx ids.")),
        "event_revenue": _money(v("Event Revenue", "Event revenue in event_revenue_currency; refunds are negative.")),
        "event_revenue_currency": _text(v("Event Revenue Currency", "ISO currency code of event_revenue.")),
        "event_revenue_usd": _money(v("Event Revenue USD", "Event revenue converted to USD by AppsFlyer.")),
        "partner": _text(v("Partner", "Agency/partner (af_prt).")),
        "media_source": _text(v("Media Source", "Media source (pid), e.g. googleadwords_int; organic for "
                                "organic users (AppsFlyer's spelling in every report, filled in by adpipes "
                                "where an organic report leaves it empty)."), False),
        "channel": _text(v("Channel", "Channel (af_channel).")),
        "keywords": _text(v("Keywords", "Keywords (af_keywords).")),
        "campaign": _text(v("Campaign", "Campaign name (c).")),
        "campaign_id": _text(v("Campaign ID", "Campaign id (af_c_id).")),
        "adset": _text(v("Adset", "Adset name (af_adset).")),
        "adset_id": _text(v("Adset ID", "Adset id (af_adset_id).")),
        "ad": _text(v("Ad", "Ad name (af_ad).")),
        "ad_id": _text(v("Ad ID", "Ad id (af_ad_id).")),
        "ad_type": _text(v("Ad Type", "Ad type (af_ad_type).")),
        "site_id": _text(v("Site ID", "Publisher site id (af_siteid).")),
    }
    for n in (1, 2, 3):
        columns[f"contributor_{n}_partner"] = _text(v(f"Contributor {n} Partner", f"Assist contributor {n}: partner."))
        columns[f"contributor_{n}_media_source"] = _text(v(f"Contributor {n} Media Source", f"Assist contributor {n}: media source."))
        columns[f"contributor_{n}_campaign"] = _text(v(f"Contributor {n} Campaign", f"Assist contributor {n}: campaign."))
        columns[f"contributor_{n}_touch_type"] = _text(v(f"Contributor {n} Touch Type", f"Assist contributor {n}: touch type."))
        columns[f"contributor_{n}_touch_time"] = _time(v(f"Contributor {n} Touch Time", f"Assist contributor {n}: touch time."))
    columns.update(
        {
            "wifi": _flag(v("WIFI", "Device was on Wi-Fi")),
            "appsflyer_id": _text(v("AppsFlyer ID", "AppsFlyer's device id."), False),
            "advertising_id": _text(v("Advertising ID", "GAID on Android; on iOS the IDFA (AppsFlyer delivers it in a separate IDFA column, copied here).")),
            "customer_user_id": pa.Column("Int64", nullable=True, description=v("Customer User ID", "The app's own user id (CUID), a whole number (rows with any other value are quarantined; see valid_customer_user_id).")),
            "is_retargeting": _flag(v("Is Retargeting", "Row belongs to a retargeting campaign")),
            "retargeting_conversion_type": _text(v("Retargeting Conversion Type", "re-engagement or re-attribution.")),
            "attribution_lookback": _text(v("Attribution Lookback", "Attribution lookback window, e.g. 7d.")),
            "reengagement_window": _text(v("Reengagement Window", "Re-engagement window for retargeting.")),
            "is_primary_attribution": _flag(v("Is Primary Attribution", "Primary attribution for retargeting")),
        }
    )
    checks = [
        rule(PARTITION_DATE, pa.Check(_on_partition_day), "event_time falls on report_date (app timezone)",
             columns=("report_date", "event_time")),
        rule(TIME_ORDER, pa.Check(_event_after_install), "event_time >= install_time",
             columns=("event_time", "install_time")),
        rule(TIME_ORDER, pa.Check(_touch_before_install),
             "attributed_touch_time <= install_time (retargeting: <= event_time)",
             columns=("attributed_touch_time", "install_time", "event_time", "attribution")),
    ]
    return pa.DataFrameSchema(columns, checks=checks, strict=True, name="appsflyer/raw_data")


def _on_partition_day(frame: pd.DataFrame) -> pd.Series:
    event_time = frame["event_time"]
    # Local midnight of the row's time vs its partition day; report_date has few distinct values.
    local_day = event_time.dt.tz_localize(None).dt.normalize()
    days = frame["report_date"].map({d: pd.Timestamp(d) for d in frame["report_date"].unique()})
    return event_time.isna() | (local_day == days)


def _event_after_install(frame: pd.DataFrame) -> pd.Series:
    event, install = frame["event_time"], frame["install_time"]
    return event.isna() | install.isna() | (event >= install)


def _touch_before_install(frame: pd.DataFrame) -> pd.Series:
    # A retargeting touch re-engages a user who installed earlier: it comes before the
    # re-engagement (event_time), after the original install.
    touch, install = frame["attributed_touch_time"], frame["install_time"]
    converted = install.where(frame["attribution"] != RETARGETING, frame["event_time"])
    return touch.isna() | converted.isna() | (touch <= converted)


def raw_table(platform: str, report_short: str) -> TableSpec:
    return TABLES.register(
        TableSpec(
            asset_key=raw_asset_key(platform, report_short),
            dataframe_schema=raw_report_schema(),
            databases=(ARCHIVE,),
            keep_unknown_columns=True,
        )
    )


# Every raw report's table, whether it is pulled (APPSFLYER_RAW_REPORTS) or not: a report once
# pulled stays archived.
RAW_TABLES = {
    (platform, report.short): raw_table(platform, report.short)
    for platform in PLATFORMS for report in RAW_REPORTS.values()
}

# Layout 2: attribution, several apps per platform (app_id in the key). raw_data is rebuilt from
# the archived raw reports; the layout-1 table is kept beside it as raw_data_layout1.
RAW_DATA_TABLE = TABLES.register(
    TableSpec(asset_key=RAW_DATA_KEY, dataframe_schema=raw_data_schema(), databases=(ARCHIVE, PRODUCT),
              row_key=("app_id", "appsflyer_id", "event_name", "event_time", "platform", "source_report"),
              layout_version=2)
)


# -- aggregate daily_report ----------------------------------------------------------------------

DAILY_REPORT_KEY = dg.AssetKey(["appsflyer", "daily_report"])

# Header -> column of AppsFlyer's aggregate daily_report. Parsing goes by header name; headers not
# listed here are kept as text columns (see DAILY_REPORT_TABLE) and flagged.
DAILY_REPORT_HEADERS = {
    "Date": "date",
    "Agency/PMD (af_prt)": "agency",
    "Media Source (pid)": "media_source",
    "Campaign (c)": "campaign",
    "Impressions": "impressions",
    "Clicks": "clicks",
    "CTR": "ctr",
    "Installs": "installs",
    "Conversion Rate": "conversion_rate",
    "Sessions": "sessions",
    "Loyal Users": "loyal_users",
    "Loyal Users/Installs": "loyal_users_over_installs",
    "Total Cost": "total_cost",
    "Average eCPI": "average_ecpi",
}
DAILY_REPORT_TEXT_COLUMNS = ("agency", "media_source", "campaign")
DAILY_REPORT_COUNT_COLUMNS = ("impressions", "clicks", "installs", "sessions", "loyal_users")
DAILY_REPORT_DECIMAL_COLUMNS = ("ctr", "conversion_rate", "loyal_users_over_installs", "total_cost",
                                "average_ecpi")


# How AppsFlyer says "no value" in aggregate reports: the string None (agency, campaign) and N/A
# (metrics a media source does not report, e.g. organic impressions and cost).
AGGREGATE_NULL_MARKERS = frozenset({"", "None", "N/A"})
# Without these a daily report row cannot be placed or counted.
DAILY_REPORT_REQUIRED_HEADERS = ("Date", "Media Source (pid)", "Installs")


def _aggregate_number(whole: bool):
    def check(values: pd.Series) -> pd.Series:
        text = values.str.strip()
        numbers = pd.to_numeric(text, errors="coerce")
        ok = numbers.notna() & ((numbers % 1 == 0) if whole else True)
        return text.isna() | text.isin(AGGREGATE_NULL_MARKERS) | ok

    return check


def _iso_date(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values.str.strip(), format="%Y-%m-%d", errors="coerce").notna()


@cache
def daily_report_delivered_schema() -> pa.DataFrameSchema:
    """The daily report as delivered (header names, every value text): what must be there and
    readable before a row is typed."""
    columns = {}
    for header, column in DAILY_REPORT_HEADERS.items():
        checks = []
        if header == "Date":
            checks.append(rule(PARSEABLE_VALUES, pa.Check(_iso_date, ignore_na=False), "Date is a yyyy-mm-dd date"))
        elif column in DAILY_REPORT_COUNT_COLUMNS:
            checks.append(rule(PARSEABLE_VALUES, pa.Check(_aggregate_number(True)),
                               f"{header} is a whole number, N/A or empty"))
        elif column in DAILY_REPORT_DECIMAL_COLUMNS:
            checks.append(rule(PARSEABLE_VALUES, pa.Check(_aggregate_number(False)),
                               f"{header} is a number, N/A or empty"))
        columns[header] = pa.Column(TEXT, checks=checks, nullable=True,
                                    required=header in DAILY_REPORT_REQUIRED_HEADERS)
    return pa.DataFrameSchema(columns, strict=False, name="appsflyer daily_report (as delivered)")


def _count(name: str, description: str) -> pa.Column:
    return pa.Column(
        "Int64", rule(NON_NEGATIVE, pa.Check.ge(0), f"{name} >= 0"),
        nullable=True, description=description,
    )


def _amount(name: str, description: str) -> pa.Column:
    return pa.Column(
        "Float64", rule(NON_NEGATIVE, pa.Check.ge(0), f"{name} >= 0"), nullable=True,
        description=description, metadata={"pg_type": "numeric"},
    )


@cache
def daily_report_schema() -> pa.DataFrameSchema:
    columns: dict[str, pa.Column] = {
        "report_date": report_date_column(),
        "platform": _platform("android or ios: the platform of the row's app."),
        "app_id": _text("AppsFlyer app id the report was requested for (several apps of a platform "
                        "share the table).", False),
        "date": pa.Column(TEXT, nullable=False, description=vendor_described("Date", "The day as delivered (equals report_date)."), metadata={"pg_type": "date"}),
        "agency": _text(vendor_described("Agency/PMD (af_prt)", "Agency or preferred marketing partner; null when AppsFlyer says None.")),
        "media_source": _text(vendor_described("Media Source (pid)", "Media source, e.g. googleadwords_int, organic.")),
        "campaign": _text(vendor_described("Campaign (c)", "Campaign name; null when AppsFlyer says None.")),
        "impressions": _count("impressions", vendor_described("Impressions", "Ad impressions reported by the network (null when N/A, e.g. organic).")),
        "clicks": _count("clicks", vendor_described("Clicks", "Ad clicks (null when N/A).")),
        "ctr": pa.Column(
            "Float64", rule(RATE_RANGES, pa.Check.in_range(0, 1), "ctr is within [0, 1]"), nullable=True,
            description=vendor_described("CTR", "Click-through rate, clicks / impressions (null when N/A)."), metadata={"pg_type": "numeric"},
        ),
        "installs": _count("installs", vendor_described("Installs", "Attributed installs of the day.")),
        "conversion_rate": _amount("conversion_rate", vendor_described("Conversion Rate", "Installs / clicks (null when N/A).")),
        "sessions": _count("sessions", vendor_described("Sessions", "App sessions of the day by users of this media source and campaign.")),
        "loyal_users": _count("loyal_users", vendor_described("Loyal Users", "Users who opened the app at least 3 times (AppsFlyer's loyal users).")),
        "loyal_users_over_installs": _amount("loyal_users_over_installs", vendor_described("Loyal Users/Installs", "Loyal users / installs.")),
        "total_cost": _amount("total_cost", vendor_described("Total Cost", "Ad spend reported to AppsFlyer, in `currency` (null when N/A).")),
        "average_ecpi": _amount("average_ecpi", vendor_described("Average eCPI", "Effective cost per install, total_cost / installs, in `currency` (null when N/A).")),
        "currency": _text(
            "ISO 4217 code of total_cost and average_ecpi: the currency set on the app in AppsFlyer "
            "(APPSFLYER_APP_CURRENCY), which aggregate reports are always in whatever currency is asked "
            "for. Null only on rows stored before adpipes recorded it.", False),
    }
    # strict=False: a column AppsFlyer adds later is kept (as text) rather than rejected.
    return pa.DataFrameSchema(columns, strict=False, name="appsflyer/daily_report")


# The table lives in product and archive. keep_unknown_columns: a column AppsFlyer adds to the
# daily report later is stored as a text column exactly as the vendor sent it (in both databases,
# since both hold one table), named in the run's `appsflyer/unknown_columns` metadata and a
# warning; once its meaning is known, add it to DAILY_REPORT_HEADERS with a type (existing text
# columns are not retyped: ALTER it by hand then).
# layout 2: app_id (several apps per platform) is a key column; layout 1 had one app per platform
# and no app_id, and is kept as appsflyer.daily_report_layout1 (its rows never get a NULL app_id).
DAILY_REPORT_TABLE = TABLES.register(
    TableSpec(asset_key=DAILY_REPORT_KEY, dataframe_schema=daily_report_schema(),
              databases=(ARCHIVE, PRODUCT), keep_unknown_columns=True,
              row_key=("platform", "app_id", "agency", "media_source", "campaign"), layout_version=2)
)


# -- Cohort API: cohort_ltv ----------------------------------------------------------------------

COHORT_LTV_KEY = dg.AssetKey(["appsflyer", "cohort_ltv"])

# Long format: one row per cohort (day, type, app, media source, campaign), period and KPI,
# with a typed column per function of the documents' KPI x function table. Why long rather than a
# column per KPI and function: KPIs are configured (in-app event names included, any number of
# them) and one table serves every configuration, so a KPI is a value, not a column.
# app_id is part of the key: several apps of a platform have the same media sources and campaigns.
COHORT_KEY = ("report_date", "cohort_type", "platform", "app_id", "media_source", "campaign", "kpi")
COHORT_FUNCTION_DOCS = {
    COUNT: "Count (a number): how many times the KPI happened. revenue: revenue events; sessions: "
           "sessions; uninstalls: uninstalls; an in-app event: the event.",
    CVR: "CVR (a percentage, as delivered: 12.5 means 12.5 %): share of the cohort's users who "
         "performed the in-app event. In-app event KPIs only.",
    RATE: "Rate (a percentage, as delivered): roas: revenue / cost; roi: (revenue - cost) / cost; "
          "sessions and uninstalls: their rate per cohort user as AppsFlyer computes it.",
    SUM: "Sum (a number, in `currency`): revenue: the cohort's revenue; an in-app event: the "
         "revenue the event brought.",
    UNIQUE_USERS: "Unique users (a number): users who performed the in-app event. sessions have it "
                  "only with aggregation_type on_day, which adpipes does not request.",
}


def _function_column(function: str) -> pa.Column:
    kpis = [k for k, fns in DOCUMENTED_KPI_FUNCTIONS.items() if function in fns]
    if function in EVENT_KPI_FUNCTIONS:
        kpis.append("in-app event KPIs")
    checks = [rule(PERCENTAGE_RANGES, pa.Check.in_range(0, 100), "cvr is a percentage within [0, 100]")] \
        if function == CVR else []
    if function in (COUNT, UNIQUE_USERS):
        checks.append(rule(NON_NEGATIVE, pa.Check.ge(0), f"{function} >= 0"))
    return pa.Column(
        "Float64", checks, nullable=True, metadata={"pg_type": "numeric"},
        description=f"{COHORT_FUNCTION_DOCS[function]} Cumulative from the install day through day "
        f"`period`. Documented for: {', '.join(kpis)}; null for a KPI without this function.",
    )


@cache
def cohort_ltv_schema() -> pa.DataFrameSchema:
    columns: dict[str, pa.Column] = {
        "report_date": report_date_column(),
        "cohort_type": pa.Column(
            TEXT, nullable=False,
            description="user_acquisition, retargeting or unified: the cohort's attribution (conversion) "
            "type, as asked for (APPSFLYER_COHORT_TYPES). unified combines both; an event attributed to "
            "both counts as retargeting."),
        "platform": _platform("android or ios: the platform of the cohort's app."),
        "app_id": _text("AppsFlyer app id the cohort was reported for.", False),
        "media_source": _text("Media source (pid) the cohort's users were attributed to, as delivered "
                              "(agency traffic shows the agency).", False),
        "campaign": _text("Campaign (c) as delivered (AppsFlyer's own spelling, e.g. 'None', is kept); "
                          "null only when the resource's groupings leave out c."),
        "period": pa.Column("Int64", rule(NON_NEGATIVE, pa.Check.in_range(0, 180), "period is 0-180"),
                            nullable=False, description="Day N after the install day (0 = the install day "
                            "itself). Only complete periods are stored (partial_data false)."),
        "kpi": _text("The KPI: revenue, roas, roi, sessions or uninstalls (lowercased whatever spelling "
                     "was sent), or an in-app event name as written (case-sensitive). A KPI (or cohort "
                     "type) removed from the settings keeps its stored rows, no longer updated.", False),
        "users": pa.Column("Int64", rule(NON_NEGATIVE, pa.Check.ge(0), "users >= 0"), nullable=False,
                           description="Users in the cohort (attributed on report_date); the same on every "
                           "KPI row of the cohort."),
        "cost": _amount("cost", "Ad spend of the cohort, in `currency`; null where AppsFlyer has no cost "
                        "(organic users, campaigns without installs, some groupings). The same on every "
                        "KPI row of the cohort: take it once."),
        "ecpi": _amount("ecpi", "Effective cost per install of the cohort, in `currency`; null with cost."),
    }
    for function in COHORT_FUNCTIONS:
        columns[function] = _function_column(function)
    columns["currency"] = _text(
        "ISO 4217 code of cost, ecpi and sum: the apps' currency (APPSFLYER_APP_CURRENCY) when "
        "APPSFLYER_CURRENCY=preferred (preferred_currency true), otherwise USD.", False)
    columns["extra_functions"] = pa.Column(
        TEXT, nullable=True, metadata={"pg_type": "jsonb"},
        description="Function values the documents do not list for this KPI, as delivered: "
        '{"<token>": value}, flagged by the unknown_columns check. Null when there are none.',
    )
    growth = rule(
        CUMULATIVE_GROWTH, pa.Check(_cumulative_growth),
        "each function value of a cohort's KPI is >= its value at the previous stored period",
        columns=(*COHORT_KEY, "period", *COHORT_FUNCTIONS),
    )
    return pa.DataFrameSchema(columns, checks=[growth], strict=True, unique=[*COHORT_KEY, "period"],
                              name="appsflyer/cohort_ltv")


def _cumulative_growth(frame: pd.DataFrame) -> pd.Series:
    ordered = frame.sort_values("period")
    cohort = ordered.groupby(list(COHORT_KEY), dropna=False, sort=False).ngroup()
    ok = pd.Series(True, index=frame.index)
    for column in COHORT_FUNCTIONS:
        previous = ordered[column].groupby(cohort).shift()
        ok &= ~(ordered[column] < previous).fillna(False).reindex(frame.index)
    return ok


# layout 2: long format (kpi and cohort_type are key columns; one column per function); layout 1
# had a column per KPI and function and is kept as appsflyer.cohort_ltv_layout1. app_id joined the
# key without a new layout: layout 2 has always stored it, filled, on every row.
COHORT_LTV_TABLE = TABLES.register(
    TableSpec(asset_key=COHORT_LTV_KEY, dataframe_schema=cohort_ltv_schema(), databases=(ARCHIVE, PRODUCT),
              row_key=COHORT_KEY[1:] + ("period",), layout_version=2)
)
