"""The adpipes code location: every asset, resource and IO manager, configured from the environment.

``ADPIPES_ENV=dev`` (the default) points the API clients at the built-in sandbox and, unless DSNs
are given, the IO manager at an embedded PostgreSQL; ``ADPIPES_ENV=prod`` requires every
credential and fails at load with one message listing what is missing. Secrets and DSNs are
passed as ``dagster.EnvVar`` so their values never enter config snapshots or run config.
"""

from __future__ import annotations

import dagster as dg

from adpipes.airbridge.assets import revenue as airbridge_revenue
from adpipes.airbridge.resources import airbridge_api_from_settings
from adpipes.appsflyer.assets import raw_data, raw_report_assets
from adpipes.appsflyer.cohort import cohort_ltv
from adpipes.appsflyer.daily_report import daily_report
from adpipes.appsflyer.resources import AppsFlyerApps, AppsFlyerPullApi
from adpipes.lib.settings import (
    DEFAULT_APPSFLYER_BASE_URL,
    SANDBOX_ANDROID_APP_ID,
    SANDBOX_IOS_APP_ID,
    Settings,
    load_settings,
)
from adpipes.lib.quality import QualityStore
from adpipes.lib.quota import ApiCallLedger
from adpipes.lib.retention import build_retention_sensor, prune_product_partitions_job
from adpipes.schedules import build_daily_schedule
from adpipes.lib.storage.postgres import PartitionedTableIOManager, PostgresDatabase


def _env_or(settings: Settings, name: str, default: str | None) -> dg.EnvVar | str | None:
    """EnvVar when the variable is set (its value is resolved at run time), else the default."""
    return dg.EnvVar(name) if settings.is_set(name) else default


def build_resources(settings: Settings) -> dict[str, object]:
    daily_quotas = settings.appsflyer_daily_quotas
    if settings.is_dev:
        # Dev always talks to the sandbox (None = find or start it); real credentials are only
        # used with ADPIPES_ENV=prod so a dev run never spends a real API quota.
        # The sandbox does not enforce AppsFlyer's one-call-per-minute rule for short aggregate
        # ranges unless a test switches it on, so dev seeding need not wait a minute per day.
        appsflyer_api = AppsFlyerPullApi(api_token=None, base_url=None, timezone=settings.timezone,
                                         aggregate_min_interval_seconds=0, daily_quotas=daily_quotas)
        apps = AppsFlyerApps(android_app_id=SANDBOX_ANDROID_APP_ID, ios_app_id=SANDBOX_IOS_APP_ID)
    else:
        appsflyer_api = AppsFlyerPullApi(
            api_token=dg.EnvVar("APPSFLYER_API_TOKEN"),
            base_url=_env_or(settings, "APPSFLYER_BASE_URL", DEFAULT_APPSFLYER_BASE_URL),
            timezone=settings.timezone,
            daily_quotas=daily_quotas,
        )
        apps = AppsFlyerApps(
            android_app_id=dg.EnvVar("APPSFLYER_ANDROID_APP_ID"),
            ios_app_id=dg.EnvVar("APPSFLYER_IOS_APP_ID"),
        )
    archive = PostgresDatabase(role="archive", dsn=_env_or(settings, "ADPIPES_ARCHIVE_DSN", None))
    product = PostgresDatabase(role="product", dsn=_env_or(settings, "ADPIPES_PRODUCT_DSN", None))
    io_manager = PartitionedTableIOManager(archive=archive, product=product, timezone=settings.timezone)
    quality = QualityStore(
        archive=archive,
        max_quarantined_share=settings.max_quarantined_share,
        volume_band_factor=settings.volume_band_factor,
    )
    return {
        "appsflyer_api": appsflyer_api,
        "appsflyer_apps": apps,
        "airbridge_api": airbridge_api_from_settings(settings),
        "io_manager": io_manager,
        "quality": quality,
        # Vendor calls per app, report and UTC day, against the daily quotas (archive database).
        "api_calls": ApiCallLedger(archive=archive),
        "archive_db": archive,
        "product_db": product,
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[*raw_report_assets, raw_data, daily_report, cohort_ltv, airbridge_revenue],
        jobs=[prune_product_partitions_job],
        schedules=[build_daily_schedule(settings.timezone, settings.schedule_time, settings.start_date)],
        sensors=[build_retention_sensor(settings.product_retention_days, settings.retention_overrides,
                                        settings.timezone)],
        resources=build_resources(settings),
    )


defs = build_definitions(load_settings())
