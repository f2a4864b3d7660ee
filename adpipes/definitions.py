"""The adpipes code location: every asset, resource and IO manager, configured from the environment.

``ADPIPES_ENV=dev`` (the default) points the API clients at the built-in sandbox and, unless DSNs
are given, the IO manager at an embedded PostgreSQL; ``ADPIPES_ENV=prod`` requires every
credential and fails at load with one message listing what is missing. Secrets and DSNs are
passed as ``dagster.EnvVar`` so their values never enter config snapshots or run config.
"""

from __future__ import annotations

import dagster as dg

from adpipes.airbridge.assets import revenue as airbridge_revenue
from adpipes.airbridge.resources import AirbridgeApi, airbridge_api_from_settings
from adpipes.analytics.assets import ANALYTICS_ASSETS, analytics_automation_sensor
from adpipes.appsflyer.assets import build_raw_assets
from adpipes.appsflyer.cohort import cohort_ltv
from adpipes.appsflyer.customer_user_map import customer_user_map
from adpipes.appsflyer.daily_report import daily_report
from adpipes.appsflyer.aggregate_api import DEFAULT_DAILY_QUOTAS as AGGREGATE_DEFAULT_QUOTAS
from adpipes.appsflyer.aggregate_api import AppsFlyerAggregateApi
from adpipes.appsflyer.cohort_api import AppsFlyerCohortApi
from adpipes.appsflyer.raw_data_api import DEFAULT_DAILY_QUOTAS as RAW_DEFAULT_QUOTAS
from adpipes.appsflyer.raw_data_api import AppsFlyerRawDataApi
from adpipes.appsflyer.resources import AppsFlyerApps
from adpipes.lib.step_server import STEP_PRELOAD
from adpipes.lib.settings import (
    DEFAULT_APPSFLYER_BASE_URL,
    Settings,
    load_settings,
)
from adpipes.lib.quality import QualityStore
from adpipes.lib.quota import ApiCallLedger
from adpipes.lib.retention import build_retention_sensor, prune_product_partitions_job
from adpipes.schedules import build_daily_schedule, build_late_events_schedule
from adpipes.lib.storage.postgres import PartitionedTableIOManager, PostgresDatabase


def _env_or(settings: Settings, name: str, default: str | None) -> dg.EnvVar | str | None:
    """EnvVar when the variable is set (its value is resolved at run time), else the default."""
    return dg.EnvVar(name) if settings.is_set(name) else default


def build_resources(settings: Settings) -> dict[str, object]:
    # The client and database classes: production's, or in dev mode their subclasses that fall
    # back to the sandbox and the embedded PostgreSQL (the only import of adpipes.dev at run time).
    raw_data_class, aggregate_class, cohort_class = AppsFlyerRawDataApi, AppsFlyerAggregateApi, AppsFlyerCohortApi
    airbridge_class, database_class = AirbridgeApi, PostgresDatabase
    if settings.is_dev:
        from adpipes.dev import resources as dev

        raw_data_class, aggregate_class, cohort_class = dev.SandboxRawDataApi, dev.SandboxAggregateApi, dev.SandboxCohortApi
        airbridge_class, database_class = dev.SandboxAirbridgeApi, dev.EmbeddedPostgresDatabase
        # Dev always talks to the sandbox (None = find or start it); real credentials are only
        # used with ADPIPES_ENV=prod so a dev run never spends a real API quota.
        connection: dict[str, object] = dict(api_token=None, base_url=None, timezone=settings.timezone)
        apps = AppsFlyerApps(android_app_id=",".join(settings.android_app_ids),
                             ios_app_id=",".join(settings.ios_app_ids), currency=settings.appsflyer_app_currency)
    else:
        connection = dict(
            api_token=dg.EnvVar("APPSFLYER_API_TOKEN"),
            base_url=_env_or(settings, "APPSFLYER_BASE_URL", DEFAULT_APPSFLYER_BASE_URL),
            timezone=settings.timezone,
        )
        apps = AppsFlyerApps(
            android_app_id=dg.EnvVar("APPSFLYER_ANDROID_APP_ID"),
            ios_app_id=dg.EnvVar("APPSFLYER_IOS_APP_ID"),
            currency=settings.appsflyer_app_currency,
        )
    # One client per AppsFlyer API; APPSFLYER_DAILY_QUOTAS names reports of both Pull APIs.
    quotas = settings.appsflyer_daily_quotas
    raw_data_api = raw_data_class(
        **connection, currency=settings.appsflyer_currency,
        daily_quotas={r: n for r, n in quotas.items() if r in RAW_DEFAULT_QUOTAS},
    )
    aggregate_api = aggregate_class(
        **connection, daily_quotas={r: n for r, n in quotas.items() if r in AGGREGATE_DEFAULT_QUOTAS},
        # The sandbox does not enforce AppsFlyer's one-call-per-minute rule for short aggregate
        # ranges unless a test switches it on, so dev seeding need not wait a minute per day.
        **({"aggregate_min_interval_seconds": 0} if settings.is_dev else {}),
    )
    # What every cohort_ltv run pulls (no run config: a maturity re-pull must pull it all too).
    cohort_api = cohort_class(
        **connection, kpis=list(settings.cohort_kpis), cohort_types=list(settings.cohort_types),
        min_cohort_size=settings.cohort_min_size,
        preferred_currency=settings.appsflyer_currency == "preferred",
    )
    archive = database_class(role="archive", dsn=_env_or(settings, "ADPIPES_ARCHIVE_DSN", None))
    product = database_class(role="product", dsn=_env_or(settings, "ADPIPES_PRODUCT_DSN", None))
    io_manager = PartitionedTableIOManager(archive=archive, product=product, timezone=settings.timezone)
    quality = QualityStore(
        archive=archive,
        max_quarantined_share=settings.max_quarantined_share,
        volume_band_factor=settings.volume_band_factor,
        max_row_drop=settings.max_row_drop,
    )
    return {
        "appsflyer_raw_data_api": raw_data_api,
        "appsflyer_aggregate_api": aggregate_api,
        "appsflyer_cohort_api": cohort_api,
        "appsflyer_apps": apps,
        "airbridge_api": airbridge_api_from_settings(settings, airbridge_class),
        "io_manager": io_manager,
        "quality": quality,
        # Vendor calls per app, report and UTC day, against the daily quotas (archive database).
        # Scheduled runs may use the whole quota of a Pull API report; other runs leave
        # APPSFLYER_RESERVED_CALLS of it (a backfill cannot starve the daily and late-events runs).
        "api_calls": ApiCallLedger(archive=archive, reserved_calls=settings.appsflyer_reserved_calls,
                                   reserved_reports=[*RAW_DEFAULT_QUOTAS, *AGGREGATE_DEFAULT_QUOTAS]),
        "archive_db": archive,
        "product_db": product,
    }


# Each step runs in its own process (a failing or memory-hungry step cannot take the run down
# with it), forked from a server process that imported adpipes once: a fresh interpreter per step
# re-imported Dagster, pandas, pandera and the definitions (about 3 s of CPU each on a 2-core
# machine). Dagster preloads only `dagster` unless told which modules to preload;
# adpipes.lib.step_preload also loads pandera's validation backends there (0.6 s a step).
STEP_EXECUTOR = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": list(STEP_PRELOAD)}}},
    name="forkserver_multiprocess_executor")


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        executor=STEP_EXECUTOR,
        assets=[*build_raw_assets(settings.appsflyer_raw_reports), daily_report, cohort_ltv, customer_user_map, airbridge_revenue,
                *ANALYTICS_ASSETS],
        jobs=[prune_product_partitions_job],
        schedules=[build_daily_schedule(settings.timezone, settings.schedule_time, settings.start_date),
                   build_late_events_schedule(settings.timezone, settings.late_events_margin_minutes,
                                              settings.start_date, settings.schedule_time)],
        sensors=[build_retention_sensor(settings.product_retention_days, settings.retention_overrides,
                                        settings.timezone),
                 analytics_automation_sensor],
        resources=build_resources(settings),
    )


defs = build_definitions(load_settings())
