"""The quality tables in the archive database, and the quality policy, as one Dagster resource.

``quality.failure_cases``  every failing (row, rule, column) of the latest run of each asset
                           partition: check, rule, column, row key and the offending value.
``quality.quarantine``     every row kept out of product because an ERROR rule failed, as the
                           vendor delivered it (JSON), with the reasons.
``quality.rejected_deliveries``  vendor answers that could not be used at all (a structural
                           failure of a report that has no archive table of its own), as delivered.
``quality.partition_rows`` rows checked and quarantined per asset partition: the history the
                           row_volume check compares a partition with.

A run replaces the rows of the partitions it validated (in one transaction), so re-running a
partition never duplicates failure cases, and a clean re-run after a fix clears them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import dagster as dg
import pandas as pd
from psycopg import sql
from pydantic import Field

from adpipes.lib.quality.validation import QualityReport
from adpipes.lib.storage.postgres import PostgresDatabase, arrow_table, copy_arrow_table, create_if_missing

SCHEMA = "quality"
FAILURE_CASES = "failure_cases"
QUARANTINE = "quarantine"
REJECTED_DELIVERIES = "rejected_deliveries"
PARTITION_ROWS = "partition_rows"

_DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.{FAILURE_CASES} (
        asset_key text NOT NULL,
        report_date date NOT NULL,
        check_name text NOT NULL,
        rule text NOT NULL,
        column_name text,
        row_number bigint,
        row_key text,
        value text,
        run_id text NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now())""",
    f"CREATE INDEX IF NOT EXISTS failure_cases_asset_date ON {SCHEMA}.{FAILURE_CASES} (asset_key, report_date)",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.{QUARANTINE} (
        asset_key text NOT NULL,
        report_date date NOT NULL,
        row_number bigint NOT NULL,
        row_key text,
        reasons text NOT NULL,
        row_values jsonb NOT NULL,
        run_id text NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now())""",
    f"CREATE INDEX IF NOT EXISTS quarantine_asset_date ON {SCHEMA}.{QUARANTINE} (asset_key, report_date)",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.{REJECTED_DELIVERIES} (
        asset_key text NOT NULL,
        report_date date NOT NULL,
        problem text NOT NULL,
        content text NOT NULL,
        run_id text NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now())""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.{PARTITION_ROWS} (
        asset_key text NOT NULL,
        report_date date NOT NULL,
        checked_rows bigint NOT NULL,
        quarantined_rows bigint NOT NULL,
        run_id text NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (asset_key, report_date))""",
    f"COMMENT ON TABLE {SCHEMA}.{FAILURE_CASES} IS 'adpipes: every failing row, rule and value of the latest run of each asset partition'",
    f"COMMENT ON TABLE {SCHEMA}.{QUARANTINE} IS 'adpipes: rows kept out of product by an ERROR rule, as delivered, with the reasons'",
]


class QualityStore(dg.ConfigurableResource):
    """Where failure cases and quarantined rows go (the archive database) and the quality policy."""

    archive: PostgresDatabase
    max_quarantined_share: float = Field(
        default=0.0,
        description="Share of a partition's rows (0-1) that may be quarantined before the failing "
        "ERROR check blocks downstream assets and fails the run (ADPIPES_MAX_QUARANTINED_SHARE). "
        "At or below it, the check still fails, with severity WARN.",
    )
    volume_band_factor: float = Field(
        default=2.0,
        description="row_volume warns when a partition has fewer than median/factor or more than "
        "median*factor rows, the median taken over the 7 partitions before it "
        "(ADPIPES_VOLUME_BAND_FACTOR).",
    )
    volume_min_history: int = Field(
        default=3, description="Partitions of the previous 7 that must exist before row_volume judges."
    )

    def row_count_history(self, asset_key: dg.AssetKey, first: dt.date, last: dt.date) -> dict[str, int]:
        """Rows checked per partition of ``asset_key`` from ``first`` to ``last`` (earlier runs)."""
        with self.archive.connect() as conn:
            exists = conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.{PARTITION_ROWS}",)).fetchone()[0]
            if exists is None:
                return {}
            rows = conn.execute(
                sql.SQL("SELECT report_date, checked_rows FROM {} WHERE asset_key = %s "
                        "AND report_date BETWEEN %s AND %s").format(sql.Identifier(SCHEMA, PARTITION_ROWS)),
                (asset_key.to_user_string(), first, last),
            ).fetchall()
        return {day.isoformat(): int(count) for day, count in rows}

    def record(self, run_id: str, asset_key: dg.AssetKey, report: QualityReport,
               rejected: Sequence[tuple[str, str, str]] = ()) -> None:
        """Replace the quality rows of the report's partitions with this run's, in one transaction.

        ``rejected``: (partition, problem, content as delivered) of unusable vendor answers.
        """
        asset = asset_key.to_user_string()
        partitions = sorted(report.rows)
        with self.archive.connect() as conn, conn.cursor() as cur:
            create_if_missing(cur, SCHEMA, (FAILURE_CASES, QUARANTINE, REJECTED_DELIVERIES, PARTITION_ROWS), _DDL)
            for table in (FAILURE_CASES, QUARANTINE, REJECTED_DELIVERIES):
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE asset_key = %s AND report_date = ANY(%s::date[])").format(
                        sql.Identifier(SCHEMA, table)
                    ),
                    (asset, partitions),
                )
            failures = report.failures.rename(columns={"row": "row_number"})
            self._copy(cur, FAILURE_CASES, failures.assign(asset_key=asset, run_id=run_id))
            quarantine = report.quarantine.rename(columns={"row": "row_number"})
            self._copy(cur, QUARANTINE, quarantine.assign(asset_key=asset, run_id=run_id))
            if rejected:
                self._copy(cur, REJECTED_DELIVERIES, pd.DataFrame(
                    [{"report_date": p, "problem": problem, "content": content} for p, problem, content in rejected]
                ).assign(asset_key=asset, run_id=run_id))
            for partition, rows in report.rows.items():
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} (asset_key, report_date, checked_rows, quarantined_rows, run_id) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (asset_key, report_date) DO UPDATE SET "
                        "checked_rows = EXCLUDED.checked_rows, quarantined_rows = EXCLUDED.quarantined_rows, "
                        "run_id = EXCLUDED.run_id, recorded_at = now()"
                    ).format(sql.Identifier(SCHEMA, PARTITION_ROWS)),
                    (asset, partition, rows.checked, rows.quarantined, run_id),
                )
            conn.commit()

    @staticmethod
    def _copy(cur, table: str, frame: pd.DataFrame) -> None:
        if not len(frame):
            return
        columns = list(frame.columns)
        copy_arrow_table([cur], sql.Identifier(SCHEMA, table), columns, arrow_table(frame, columns))
