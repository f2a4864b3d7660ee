"""What the UI shows about every table before any run: each column described, raw report columns
by the header AppsFlyer delivers them under, nullability true to the rules, and group names that
match the keys the user sees (issue 14, "Descriptions")."""

import importlib
import re

import dagster as dg
import pandas as pd
import pandera.pandas as pandera
import pytest

from adpipes.appsflyer.schemas import raw_data_schema
from adpipes.definitions import defs
from adpipes.lib.quality.rules import CheckGroup, rule
from adpipes.lib.storage.tables import (
    ARCHIVE,
    PRODUCT,
    TABLES,
    TableRegistry,
    TableSpec,
    postgres_type,
    report_date_column,
)

# The raw report headers and the columns they are stored as, transcribed from the column table of
# the original scripts (vendor-docs/appsflyer-pull-api-original-scripts.ko.txt, "2. 테이블 설계").
VENDOR_RAW_COLUMNS = """
Attributed Touch Type|attributed_touch_type
Attributed Touch Time|attributed_touch_time
Install Time|install_time
Event Time|event_time
Event Name|event_name
Event Value|event_value
Event Revenue|event_revenue
Event Revenue Currency|event_revenue_currency
Event Revenue USD|event_revenue_usd
Event Source|event_source
Is Receipt Validated|is_receipt_validated
Partner|partner
Media Source|media_source
Channel|channel
Keywords|keywords
Campaign|campaign
Campaign ID|campaign_id
Adset|adset
Adset ID|adset_id
Ad|ad
Ad ID|ad_id
Ad Type|ad_type
Site ID|site_id
Sub Site ID|sub_site_id
Sub Param 1|sub_param_1
Sub Param 2|sub_param_2
Sub Param 3|sub_param_3
Sub Param 4|sub_param_4
Sub Param 5|sub_param_5
Cost Model|cost_model
Cost Value|cost_value
Cost Currency|cost_currency
Contributor 1 Partner|contributor_1_partner
Contributor 1 Media Source|contributor_1_media_source
Contributor 1 Campaign|contributor_1_campaign
Contributor 1 Touch Type|contributor_1_touch_type
Contributor 1 Touch Time|contributor_1_touch_time
Contributor 2 Partner|contributor_2_partner
Contributor 2 Media Source|contributor_2_media_source
Contributor 2 Campaign|contributor_2_campaign
Contributor 2 Touch Type|contributor_2_touch_type
Contributor 2 Touch Time|contributor_2_touch_time
Contributor 3 Partner|contributor_3_partner
Contributor 3 Media Source|contributor_3_media_source
Contributor 3 Campaign|contributor_3_campaign
Contributor 3 Touch Type|contributor_3_touch_type
Contributor 3 Touch Time|contributor_3_touch_time
Region|region
Country Code|country_code
State|state
City|city
Postal Code|postal_code
DMA|dma
IP|ip
WIFI|wifi
Operator|operator
Carrier|carrier
Language|language
AppsFlyer ID|appsflyer_id
Advertising ID|advertising_id
IDFA|idfa
Android ID|android_id
Customer User ID|customer_user_id
IMEI|imei
IDFV|idfv
Platform|platform
Device Type|device_type
OS Version|os_version
App Version|app_version
SDK Version|sdk_version
App ID|app_id
App Name|app_name
Bundle ID|bundle_id
Is Retargeting|is_retargeting
Retargeting Conversion Type|retargeting_conversion_type
Attribution Lookback|attribution_lookback
Reengagement Window|reengagement_window
Is Primary Attribution|is_primary_attribution
User Agent|user_agent
HTTP Referrer|http_referrer
Original URL|original_url
"""
RAW_HEADERS = dict(line.split("|")[::-1] for line in VENDOR_RAW_COLUMNS.strip().splitlines())
# The daily report's headers and columns, from the same document's daily report table.
DAILY_REPORT_HEADERS = {
    "date": "Date", "agency": "Agency/PMD (af_prt)", "media_source": "Media Source (pid)", "campaign": "Campaign (c)",
    "impressions": "Impressions", "clicks": "Clicks", "ctr": "CTR", "installs": "Installs",
    "conversion_rate": "Conversion Rate", "sessions": "Sessions", "loyal_users": "Loyal Users",
    "loyal_users_over_installs": "Loyal Users/Installs", "total_cost": "Total Cost", "average_ecpi": "Average eCPI",
}
# The raw report assets of the README's asset table: appsflyer/{android,ios}_<report>.
RAW_REPORT_NAMES = ("installs", "in_app_events", "uninstalls", "reinstalls", "organic_installs",
                    "organic_in_app_events", "organic_uninstalls", "organic_reinstalls",
                    "retargeting_installs", "retargeting_in_app_events")
RAW_KEYS = {f"appsflyer/{platform}_{name}": platform for platform in ("android", "ios") for name in RAW_REPORT_NAMES}

GRAPH = defs.resolve_asset_graph()
ASSETS = {key.to_user_string(): GRAPH.get(key) for key in GRAPH.materializable_asset_keys}


def columns(key: str) -> dict[str, dg.TableColumn]:
    schema = ASSETS[key].metadata.get("dagster/column_schema")
    assert schema is not None, f"{key} has no dagster/column_schema"
    return {column.name: column for column in schema.columns}


def test_every_column_of_every_table_has_a_description():
    assert set(RAW_KEYS) <= set(ASSETS)  # the raw reports are among them
    undescribed = {key: [name for name, column in columns(key).items() if not (column.description or "").strip()]
                   for key in ASSETS}
    assert {key: names for key, names in undescribed.items() if names} == {}


@pytest.mark.parametrize("key", sorted(RAW_KEYS))
def test_raw_report_columns_are_described_by_their_vendor_header(key):
    found = columns(key)
    for column, header in RAW_HEADERS.items():
        assert column in found, f"{key} lacks {column} ({header})"
        assert found[column].description.startswith(f"{header} — "), (key, column, found[column].description)
        # Said what it holds, not only named.
        assert len(found[column].description) > len(f"{header} — ") + 10, (key, column)
    # Besides the vendor's columns: the partition key and the app id the report was requested for.
    assert set(found) - set(RAW_HEADERS) == {"report_date", "requested_app_id"}
    # Archived as delivered: nothing but the partition key is refused for being empty.
    assert [name for name, column in found.items() if not column.constraints.nullable] == ["report_date"]


def test_raw_data_names_the_vendor_header_of_each_column_it_takes_from_one():
    found = columns("appsflyer/raw_data")
    # app_id is the app the report was requested for (README), not AppsFlyer's App ID column.
    from_vendor = {c: h for c, h in RAW_HEADERS.items() if c in found and c != "app_id"}
    assert len(from_vendor) > 40
    for column, header in from_vendor.items():
        assert found[column].description.startswith(f"{header} — "), (column, found[column].description)
    # advertising_id takes iOS ids from the IDFA column: its description says so.
    assert "IDFA" in found["advertising_id"].description


def test_raw_data_requires_event_time_and_media_source():
    # The README lists them among the columns a raw report row cannot do without; organic rows,
    # which AppsFlyer may deliver without a media source, are stored as "organic".
    found = columns("appsflyer/raw_data")
    assert found["event_time"].constraints.nullable is False
    assert found["media_source"].constraints.nullable is False
    assert "organic" in found["media_source"].description
    for column in ("appsflyer_id", "install_time", "event_name", "platform", "app_id"):
        assert found[column].constraints.nullable is False, column


def test_daily_report_columns_name_the_vendor_header():
    found = columns("appsflyer/daily_report")
    for column, header in DAILY_REPORT_HEADERS.items():
        assert found[column].description.startswith(f"{header} — "), (column, found[column].description)


def test_group_names_are_the_prefix_of_their_keys():
    # "Group names match what the user sees in the keys": a group is named by the prefix its
    # assets' keys share, with "/" written "_" (group names cannot hold "/"), and an asset is in
    # the longest such group: appsflyer/android_installs is in appsflyer_android, not appsflyer.
    groups = {asset.group_name for asset in ASSETS.values()}
    for key, asset in ASSETS.items():
        spelled = key.replace("/", "_")
        assert spelled.startswith(asset.group_name + "_"), (key, asset.group_name)
        longest = max((g for g in groups if spelled.startswith(g + "_")), key=len)
        assert asset.group_name == longest, (key, asset.group_name, longest)
    # The README's asset table, group by group.
    by_group: dict[str, set[str]] = {}
    for key, asset in ASSETS.items():
        if key.startswith(("appsflyer/", "airbridge/")):
            by_group.setdefault(asset.group_name, set()).add(key)
    assert by_group == {
        "appsflyer_android": {k for k, platform in RAW_KEYS.items() if platform == "android"},
        "appsflyer_ios": {k for k, platform in RAW_KEYS.items() if platform == "ios"},
        "appsflyer": {"appsflyer/raw_data", "appsflyer/customer_user_map", "appsflyer/daily_report",
                      "appsflyer/cohort_ltv"},
        "airbridge": {"airbridge/revenue"},
    }


# Called here, while the test runs (the table specs call them when adpipes is imported): the
# PostgreSQL type of each kind of pandera column, as PostgreSQL documents its types (8-byte
# integers are bigint, smaller ones fit integer, 8-byte floats are double precision, times with
# a zone timestamptz and without one timestamp), and the documented types of raw_data's columns
# (docs/assets.md: timestamps timestamptz, flags boolean, customer_user_id bigint, money numeric,
# report_date the day).
@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("str", "text"), (object, "text"), (pd.StringDtype(), "text"),
        (pd.DatetimeTZDtype(tz="Asia/Seoul"), "timestamptz"), ("datetime64[ns]", "timestamp"),
        ("boolean", "boolean"), (bool, "boolean"),
        ("Int64", "bigint"), ("int64", "bigint"), ("int32", "integer"), ("int16", "integer"), ("int8", "integer"),
        ("Float64", "double precision"), ("float32", "double precision"),
    ],
)
def test_postgres_type_of_each_kind_of_column(dtype, expected):
    assert postgres_type(pandera.Column(dtype, name="c")) == expected


def test_postgres_type_override_and_unknown_dtype():
    assert postgres_type(pandera.Column("Float64", name="amount", metadata={"pg_type": "numeric"})) == "numeric"
    with pytest.raises(TypeError, match=r"no PostgreSQL type for pandera column 'shape' of dtype"):
        postgres_type(pandera.Column("category", name="shape"))


def test_raw_data_columns_have_the_documented_types():
    columns = raw_data_schema().columns
    documented = {"event_time": "timestamptz", "install_time": "timestamptz", "wifi": "boolean",
                  "is_retargeting": "boolean", "customer_user_id": "bigint", "event_revenue": "numeric",
                  "event_revenue_usd": "numeric", "media_source": "text", "report_date": "date"}
    assert {name: postgres_type(columns[name]) for name in documented} == documented
    day = report_date_column()
    # The day of the row: text in the frames (the partition key), a date in PostgreSQL, never empty.
    assert (postgres_type(day), day.nullable) == ("date", False)
    assert postgres_type(pandera.Column(day.dtype, name="report_date")) == "text"
    assert "app timezone" in day.description


# TableSpec and the registry, built while the test runs (adpipes' own specs are built and
# registered when it is imported, where mutmut cannot see them). README: the asset key
# [schema, table] is the table schema.table, every table has report_date, and a table is stored
# in the archive, the product database or both; docs/checks.md: the columns, types and
# descriptions shown on the asset (dagster/column_schema) come from the pandera schema, with each
# column's rules as constraints.
AMOUNTS_KEY = dg.AssetKey(["tables_test", "amounts"])
POSITIVE = CheckGroup("positive_amounts", "Amounts are positive.")


def amounts_schema(**extra: pandera.Column) -> pandera.DataFrameSchema:
    return pandera.DataFrameSchema({
        "report_date": report_date_column(),
        "name": pandera.Column("str", nullable=False, description="Name of the row."),
        "amount": pandera.Column("Int64", rule(POSITIVE, pandera.Check.gt(0), "amount > 0"), nullable=True,
                                 description="Amount in USD."),
        **extra,
    })


def test_a_table_spec_shows_each_column_with_its_type_nullability_description_and_rules():
    spec = TableSpec(asset_key=AMOUNTS_KEY, dataframe_schema=amounts_schema(), databases=(ARCHIVE, PRODUCT))
    metadata = spec.definition_metadata()
    assert metadata["dagster/table_name"] == "tables_test.amounts"
    shown = {c.name: c for c in metadata["dagster/column_schema"].columns}
    assert list(shown) == ["report_date", "name", "amount"]
    # report_date: a date in PostgreSQL, never empty.
    assert (shown["report_date"].type, shown["report_date"].constraints.nullable) == ("date", False)
    assert "app timezone" in shown["report_date"].description
    assert (shown["name"].type, shown["name"].constraints.nullable) == ("text", False)
    assert shown["name"].description == "Name of the row."
    assert shown["name"].constraints.other == []
    # An 8-byte integer column is bigint; nullable is exactly True, not merely absent.
    assert shown["amount"].type == "bigint"
    assert shown["amount"].constraints.nullable is True
    assert shown["amount"].description == "Amount in USD."
    assert shown["amount"].constraints.other == ["amount > 0"]


def test_a_table_spec_refuses_a_key_that_is_not_schema_and_table():
    for path in (["amounts"], ["tables_test", "nested", "amounts"]):
        with pytest.raises(ValueError) as refused:
            TableSpec(asset_key=dg.AssetKey(path), dataframe_schema=amounts_schema(), databases=(ARCHIVE,))
        assert path[-1] in str(refused.value)


def test_a_table_spec_refuses_a_database_other_than_archive_and_product():
    with pytest.raises(ValueError) as refused:
        TableSpec(asset_key=AMOUNTS_KEY, dataframe_schema=amounts_schema(), databases=(ARCHIVE, "warehouse"))
    assert "warehouse" in str(refused.value)
    for databases in ((ARCHIVE,), (PRODUCT,), (ARCHIVE, PRODUCT)):
        assert TableSpec(asset_key=AMOUNTS_KEY, dataframe_schema=amounts_schema(), databases=databases)


def test_a_table_spec_refuses_a_schema_without_report_date():
    schema = amounts_schema().remove_columns(["report_date"])
    with pytest.raises(ValueError) as refused:
        TableSpec(asset_key=AMOUNTS_KEY, dataframe_schema=schema, databases=(ARCHIVE,))
    assert "report_date" in str(refused.value)


def test_the_registry_maps_an_asset_key_to_its_one_table():
    registry = TableRegistry()
    spec = TableSpec(asset_key=AMOUNTS_KEY, dataframe_schema=amounts_schema(), databases=(ARCHIVE, PRODUCT))
    assert registry.register(spec) is spec
    assert registry.get(dg.AssetKey(["tables_test", "amounts"])) is spec
    # The same definition again (a module imported twice) is no conflict.
    assert registry.register(spec) is spec
    assert registry.get(AMOUNTS_KEY) is spec and list(registry.all()) == [spec]
    # Another table under the same key is refused, naming the key; the first one stays.
    other = TableSpec(asset_key=AMOUNTS_KEY, dataframe_schema=amounts_schema(), databases=(ARCHIVE,))
    with pytest.raises(ValueError) as refused:
        registry.register(other)
    assert "tables_test/amounts" in str(refused.value)
    assert registry.get(AMOUNTS_KEY) is spec


def test_an_unregistered_asset_names_itself_and_the_registry_to_use():
    registry = TableRegistry()
    with pytest.raises(KeyError) as missing:
        registry.get(dg.AssetKey(["tables_test", "missing"]))
    message = str(missing.value)
    assert "tables_test/missing" in message
    # The message tells where to register a table: that name exists and is the registry's register.
    (named,) = re.findall(r"adpipes(?:\.\w+)+", message, flags=re.IGNORECASE)
    assert resolve(named) == TABLES.register, named


def resolve(dotted: str) -> object:
    """The object a dotted name names: the longest importable module, then its attributes."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute, None)
        return found
    return None


def test_postgres_type_of_an_arrow_int64_column():
    # PostgreSQL's 8-byte integer is bigint, whichever pandas dtype holds it.
    assert postgres_type(pandera.Column("int64[pyarrow]", name="c")) == "bigint"
