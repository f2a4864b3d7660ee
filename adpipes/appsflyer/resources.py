"""AppsFlyer resources: the configured apps (ids and currency).

The API clients live in one module per AppsFlyer API: ``raw_data_api`` (Pull API raw data),
``aggregate_api`` (Pull API aggregate reports) and ``cohort_api`` (the Cohort API), on the shared
base in ``api``.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class AppsFlyerApps(dg.ConfigurableResource):
    """The two platform apps (not secret, but environment specific): their ids, and the currency
    set on them in AppsFlyer, which aggregate reports are always in (and the Cohort API and raw
    reports when APPSFLYER_CURRENCY=preferred)."""

    android_app_id: str = Field(description="Android package name, e.g. com.example.app")
    ios_app_id: str = Field(description="iOS app id: 'id' + App Store id, e.g. id123456789")
    currency: str = Field(
        default="USD",
        description="ISO 4217 code of the currency set on the apps in AppsFlyer (APPSFLYER_APP_CURRENCY).",
    )

    def app_id(self, platform: str) -> str:
        if platform == "android":
            return self.android_app_id
        if platform == "ios":
            return self.ios_app_id
        raise ValueError(f"unknown platform {platform!r}: use 'android' or 'ios'")
