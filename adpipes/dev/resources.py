"""Dev mode's resources: the production clients and databases, pointed at the local services.

``adpipes.definitions`` picks these only when ``ADPIPES_ENV=dev``. A client whose ``base_url`` or
``api_token`` is None finds (or starts) the shared sandbox; a database with no DSN finds (or
starts) the embedded PostgreSQL. Production code never imports this package, so a prod
deployment cannot silently fall back to a sandbox or a private server.
"""

from __future__ import annotations

from adpipes.airbridge.resources import AirbridgeApi
from adpipes.appsflyer.aggregate_api import AppsFlyerAggregateApi
from adpipes.appsflyer.cohort_api import AppsFlyerCohortApi
from adpipes.appsflyer.raw_data_api import AppsFlyerRawDataApi
from adpipes.dev.services import ensure_postgres, ensure_sandbox
from adpipes.lib.storage.postgres import PRODUCT, PostgresDatabase


class _UsesSandbox:
    """Fills a None ``base_url``/``api_token`` from the dev sandbox (its one token serves both
    vendors' endpoints)."""

    def _connection(self) -> tuple[str, str]:
        base_url, token = getattr(self, "base_url"), getattr(self, "api_token")
        if base_url is None or token is None:
            sandbox = ensure_sandbox()
            base_url = base_url or sandbox.base_url
            token = token or (sandbox.airbridge_token if isinstance(self, AirbridgeApi) else sandbox.appsflyer_token)
        return base_url.rstrip("/"), token


class SandboxRawDataApi(_UsesSandbox, AppsFlyerRawDataApi):
    """AppsFlyer Pull API (raw data) client on the dev sandbox."""


class SandboxAggregateApi(_UsesSandbox, AppsFlyerAggregateApi):
    """AppsFlyer Pull API (aggregate) client on the dev sandbox."""


class SandboxCohortApi(_UsesSandbox, AppsFlyerCohortApi):
    """AppsFlyer Cohort API client on the dev sandbox."""


class SandboxAirbridgeApi(_UsesSandbox, AirbridgeApi):
    """Airbridge revenue report client on the dev sandbox."""


class EmbeddedPostgresDatabase(PostgresDatabase):
    """A database whose DSN, when unset, is the embedded PostgreSQL's (started once, found again)."""

    def resolved_dsn(self) -> str:
        if self.dsn:
            return self.dsn
        dev = ensure_postgres()
        return dev.product_dsn if self.role == PRODUCT else dev.archive_dsn
