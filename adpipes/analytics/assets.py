"""The analysis assets: the questions the data is pulled for, answered inside the product database.

``analytics/cohort_roas`` (what each install cohort is worth by day N against what it cost) and
``analytics/media_source_daily`` (what each media source cost per install, and what its users
bought, each day). Each day is one ``INSERT ... SELECT`` (:mod:`adpipes.analytics.queries`) from
the same day of the input tables in product, in the transaction that empties the day's partition
first: nothing goes through Python, a re-run replaces the day, and a failure leaves the day as it
was. A day whose input partitions are not in product (never loaded, or pruned past retention)
fails before anything is written, naming them.

They are re-derived when an input is re-materialized (a maturity re-pull of a cohort, the
late-data re-pull of the daily report, the late-events rebuild of raw_data): ``DERIVE_ON_INPUT_UPDATE``,
evaluated by ``analytics_automation_sensor``. The tables live in product only and follow product
retention (``ADPIPES_PRODUCT_RETENTION_OVERRIDES`` takes their keys); a pruned day is not
verified against an archive copy, since there is none: it can be derived again while its inputs are
in product.
"""


import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg
import psycopg
from psycopg import sql

from adpipes.airbridge.schemas import REVENUE_TABLE
from adpipes.analytics.partitions import analytics_daily_partitions
from adpipes.analytics.queries import (
    cohort_roas_statement,
    media_source_daily_parameters,
    media_source_daily_statement,
)
from adpipes.analytics.schemas import COHORT_ROAS_TABLE, MEDIA_SOURCE_DAILY_TABLE
from adpipes.appsflyer.schemas import COHORT_LTV_TABLE, DAILY_REPORT_TABLE, RAW_DATA_TABLE
from adpipes.lib.assets import add_partition_metadata
from adpipes.lib.retention import DERIVED_IN_PRODUCT
from adpipes.lib.storage.postgres import (
    PostgresDatabase,
    create_partitions,
    ensure_table,
    missing_partitions,
    partition_table_name,
    stored_layout_version,
)
from adpipes.lib.storage.tables import TableSpec

GROUP = "analytics"
AUTOMATION_SENSOR = "analytics_automation_sensor"
TRIGGER_TAG = "adpipes/trigger"

# Dagster's eager condition (any input updated since this asset was last requested or updated,
# no input missing or in progress) for every day, not only the latest: inputs of past days are
# re-materialized too (cohort maturity re-pulls up to 180 days back, backfills), and each such
# day must be derived again.
DERIVE_ON_INPUT_UPDATE = (
    dg.AutomationCondition.eager()
    .without(dg.AutomationCondition.in_latest_time_window())
    .with_label("derive again when an input day is updated")
)

COHORT_ROAS_INPUTS = (COHORT_LTV_TABLE, REVENUE_TABLE)
MEDIA_SOURCE_DAILY_INPUTS = (DAILY_REPORT_TABLE, RAW_DATA_TABLE)

for _spec, _inputs in ((COHORT_ROAS_TABLE, COHORT_ROAS_INPUTS), (MEDIA_SOURCE_DAILY_TABLE, MEDIA_SOURCE_DAILY_INPUTS)):
    DERIVED_IN_PRODUCT[_spec.asset_key.to_user_string()] = ", ".join(
        i.asset_key.to_user_string() for i in _inputs)


def _refuse_missing_inputs(conn: psycopg.Connection, target: TableSpec, inputs: Sequence[TableSpec],
                           days: Sequence[dt.date]) -> None:
    problems = []
    for spec in inputs:
        version = stored_layout_version(conn, spec)
        conn.rollback()
        if version is not None and version < spec.layout_version:
            problems.append(f"{spec.qualified_name} has layout {version}, not {spec.layout_version}: "
                            f"materialize {spec.asset_key.to_user_string()} for these days first (it "
                            "keeps the old table aside and writes the current layout)")
            continue
        missing = missing_partitions(conn, spec, days)
        if missing:
            problems.append(f"{spec.asset_key.to_user_string()} has no product partition for "
                            f"{', '.join(d.isoformat() for d in missing)}")
    if problems:
        raise dg.Failure(
            description=f"{target.asset_key.to_user_string()} is derived in product from "
            f"{', '.join(s.asset_key.to_user_string() for s in inputs)} and cannot be derived for "
            f"{days[0]}..{days[-1]}: " + "; ".join(problems) + ". Nothing was written. Materialize the "
            "inputs for those days (a day pruned from product past retention can be derived again only "
            "after its inputs are materialized again).",
            metadata={"adpipes/missing_inputs": dg.MetadataValue.json(problems)},
        )


def derive_days(database: PostgresDatabase, target: TableSpec, inputs: Sequence[TableSpec],
                statement: sql.Composable, parameters: Callable[[dt.date], Mapping[str, Any]],
                days: Sequence[dt.date], summary: sql.Composable, log: Any = None) -> dict[str, dict[str, Any]]:
    """Replace ``days`` of ``target`` with ``statement``'s rows, in one transaction for all days.

    Returns per day the row count and ``summary``'s figures (one row of named columns, run on the
    day's new rows inside the transaction, parameter ``day``).
    """
    figures: dict[str, dict[str, Any]] = {}
    with database.connect() as conn:
        _refuse_missing_inputs(conn, target, inputs, days)
        ensure_table(conn, target, [], log=log)
        with conn.cursor() as cur:
            create_partitions(cur, target, days)
            for day in days:
                child = sql.Identifier(target.schema_name, partition_table_name(target.table_name, day))
                # TRUNCATE waits for readers of the day and is rolled back with the rest if the
                # insert fails; the INSERT's reads of the inputs wait for a load of the same day
                # in progress, so a day is derived from committed inputs only.
                cur.execute(sql.SQL("TRUNCATE {}").format(child))
                cur.execute(statement, parameters(day))
                rows = cur.rowcount
                cur.execute(summary, {"day": day})
                names = [d.name for d in cur.description]
                figures[day.isoformat()] = {"rows": rows, **dict(zip(names, cur.fetchone(), strict=True))}
        conn.commit()
    return figures


def _number(value: Any) -> float | int | None:
    if value is None:
        return None
    return int(value) if isinstance(value, int) else float(value)


def publish(context: dg.AssetExecutionContext, target: TableSpec, figures: Mapping[str, Mapping[str, Any]],
            numeric: Sequence[str], as_json: Sequence[str]) -> dg.MaterializeResult:
    """The materialization: each partition gets its own row count and summary figures (a range
    run records one materialization per day, and a figure of the whole run would show on each)."""
    by_partition = {}
    for day, day_figures in figures.items():
        metadata: dict[str, Any] = {
            "dagster/row_count": dg.MetadataValue.int(day_figures["rows"]),
            "dagster/partition_row_count": dg.MetadataValue.int(day_figures["rows"]),
        }
        for name in numeric:
            value = _number(day_figures[name])
            if value is not None:
                metadata[f"adpipes/{name}"] = value
        for name in as_json:
            metadata[f"adpipes/{name}"] = dg.MetadataValue.json(day_figures[name] or {})
        by_partition[day] = metadata
    add_partition_metadata(context, by_partition)
    return dg.MaterializeResult(metadata={
        "dagster/table_name": target.qualified_name,
        "adpipes/databases": ", ".join(target.write_databases()),
    })


def _days(context: dg.AssetExecutionContext) -> list[dt.date]:
    return [dt.date.fromisoformat(k) for k in context.partition_keys]


def _analytics_asset(target: TableSpec, inputs: Sequence[TableSpec]):
    return dg.asset(
        key=target.asset_key,
        partitions_def=analytics_daily_partitions,
        # A range is one run (the CLI's --partition-range needs it), written in one transaction.
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"postgres", "sql"},
        deps=[spec.asset_key for spec in inputs],
        metadata=target.definition_metadata(),
        automation_condition=DERIVE_ON_INPUT_UPDATE,
    )


_COHORT_ROAS_SUMMARY = sql.SQL(
    "SELECT coalesce(jsonb_object_agg(source, n), '{{}}') AS rows_by_source, "
    "(SELECT coalesce(jsonb_object_agg(reason, n), '{{}}') FROM (SELECT roas_null_reason AS reason, count(*) AS n "
    "FROM {table} WHERE report_date = %(day)s AND roas_null_reason IS NOT NULL GROUP BY 1) r) "
    "AS roas_null_reasons, "
    "(SELECT count(*) FROM {table} WHERE report_date = %(day)s AND roas IS NULL) AS rows_without_roas "
    "FROM (SELECT source, count(*) AS n FROM {table} WHERE report_date = %(day)s GROUP BY 1) s"
).format(table=sql.Identifier(COHORT_ROAS_TABLE.schema_name, COHORT_ROAS_TABLE.table_name))


@_analytics_asset(COHORT_ROAS_TABLE, COHORT_ROAS_INPUTS)
def cohort_roas(context: dg.AssetExecutionContext, product_db: PostgresDatabase) -> dg.MaterializeResult:
    """What each day's install cohort is worth by day N against what it cost: per install day,
    source (AppsFlyer's Cohort API or Airbridge's revenue report, never to be added up), app,
    media source (Airbridge: channel), campaign and day N, the cohort's users, cumulative revenue
    and ad cost in one currency, ROAS (revenue / cost, a ratio) and LTV per user (revenue /
    users). A ratio that cannot be computed (no cost, cost 0, no revenue) is NULL with its reason
    in roas_null_reason / ltv_null_reason, never 0. Derived in product from appsflyer/cohort_ltv
    (kpi revenue) and airbridge/revenue (metric app_revenue); derived again whenever either is
    re-materialized, as recent cohorts keep maturing. See docs/analytics.md.
    """
    figures = derive_days(product_db, COHORT_ROAS_TABLE, COHORT_ROAS_INPUTS, cohort_roas_statement(),
                          lambda day: {"day": day}, _days(context), _COHORT_ROAS_SUMMARY, context.log)
    return publish(context, COHORT_ROAS_TABLE, figures, numeric=["rows_without_roas"],
                   as_json=["rows_by_source", "roas_null_reasons"])


_MEDIA_SOURCE_DAILY_SUMMARY = sql.SQL(
    "SELECT sum(installs) AS installs, sum(purchases) AS purchases, sum(revenue_usd) AS revenue_usd, "
    "(SELECT coalesce(jsonb_object_agg(cost_currency, cost), '{{}}') FROM (SELECT cost_currency, sum(cost) AS cost "
    "FROM {table} WHERE report_date = %(day)s AND cost IS NOT NULL GROUP BY 1) c) AS cost_by_currency "
    "FROM {table} WHERE report_date = %(day)s"
).format(table=sql.Identifier(MEDIA_SOURCE_DAILY_TABLE.schema_name, MEDIA_SOURCE_DAILY_TABLE.table_name))


@_analytics_asset(MEDIA_SOURCE_DAILY_TABLE, MEDIA_SOURCE_DAILY_INPUTS)
def media_source_daily(context: dg.AssetExecutionContext, product_db: PostgresDatabase) -> dg.MaterializeResult:
    """What each media source costs per install, and what its users bought, day by day: per day,
    app (with its platform), media source and campaign, the daily report's impressions, clicks,
    installs and cost (in the app's currency), eCPI (cost / installs; NULL with its reason when
    it cannot be computed), and from the raw data the day's purchases (af_purchase events) and
    in-app revenue (in USD, and per currency as delivered), each event counted once under its
    primary attribution. Derived in product from appsflyer/daily_report and appsflyer/raw_data;
    derived again whenever either is re-materialized (the daily report's late-data re-pulls,
    raw_data's late-events rebuild). See docs/analytics.md.
    """
    figures = derive_days(product_db, MEDIA_SOURCE_DAILY_TABLE, MEDIA_SOURCE_DAILY_INPUTS,
                          media_source_daily_statement(), lambda day: media_source_daily_parameters(day),
                          _days(context), _MEDIA_SOURCE_DAILY_SUMMARY, context.log)
    return publish(context, MEDIA_SOURCE_DAILY_TABLE, figures, numeric=["installs", "purchases", "revenue_usd"],
                   as_json=["cost_by_currency"])


ANALYTICS_ASSETS = [cohort_roas, media_source_daily]

# Evaluates DERIVE_ON_INPUT_UPDATE for the analysis assets. Dagster's own default automation
# sensor starts stopped; this one starts running, so derived days follow their inputs without
# anyone switching it on (the daemon evaluates it; a day's runs carry adpipes/trigger=automation).
analytics_automation_sensor = dg.AutomationConditionSensorDefinition(
    AUTOMATION_SENSOR,
    target=dg.AssetSelection.assets(*ANALYTICS_ASSETS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    run_tags={TRIGGER_TAG: "automation"},
    description="Derives the analysis tables (group analytics) again for every day whose inputs were "
    "materialized since the day was last derived.",
)
