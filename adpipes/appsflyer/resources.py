"""AppsFlyer resources: the configured apps (ids and currency).

The API clients live in one module per AppsFlyer API: ``raw_data_api`` (Pull API raw data),
``aggregate_api`` (Pull API aggregate reports) and ``cohort_api`` (the Cohort API), on the shared
base in ``api``.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field, field_validator

from adpipes.lib.settings import ISO_CURRENCY, split_app_ids


class AppsFlyerApps(dg.ConfigurableResource):
    """The apps of each platform (not secret, but environment specific): their ids, and the
    currency set on them in AppsFlyer, which aggregate reports are always in (and the Cohort API
    and raw reports when APPSFLYER_CURRENCY=preferred). A studio lists several apps of a platform
    with commas; every asset calls, meters and stores each app on its own."""

    android_app_id: str = Field(
        description="Android package name(s), comma-separated, e.g. com.example.app,com.example.two")
    ios_app_id: str = Field(
        description="iOS app id(s), comma-separated: 'id' + App Store id, e.g. id123456789")
    # No default: a figure in the wrong currency is off by orders of magnitude, so it is never
    # assumed (settings require APPSFLYER_APP_CURRENCY in prod; dev uses the sandbox's).
    currency: str = Field(
        description="ISO 4217 code of the currency set on the apps in AppsFlyer (APPSFLYER_APP_CURRENCY).",
    )

    @field_validator("currency")
    @classmethod
    def _iso_code(cls, currency: str) -> str:
        if not ISO_CURRENCY.fullmatch(currency):
            raise ValueError(f"currency must be an ISO 4217 code such as KRW or USD, got {currency!r}")
        return currency

    def app_ids(self, platform: str) -> tuple[str, ...]:
        """The platform's app ids, in the order configured (at least one)."""
        if platform == "android":
            ids = split_app_ids(self.android_app_id)
        elif platform == "ios":
            ids = split_app_ids(self.ios_app_id)
        else:
            raise ValueError(f"unknown platform {platform!r}: use 'android' or 'ios'")
        if not ids:
            variable = f"APPSFLYER_{platform.upper()}_APP_ID"
            raise ValueError(f"no {platform} app is configured: set {variable}")
        return ids

    def platform_apps(self) -> list[tuple[str, str]]:
        """Every configured (platform, app id), Android first."""
        return [(platform, app_id) for platform in ("android", "ios") for app_id in self.app_ids(platform)]
