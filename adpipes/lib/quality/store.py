"""The quality tables in the archive database, and the quality policy, as one Dagster resource.

``quality.failure_cases``  every failing (row, rule, column) of the latest run of each asset
                           partition: check, rule, column, row key and the offending value.
``quality.quarantine``     every row kept out of product because an ERROR rule failed, as the
                           vendor delivered it (JSON), with the reasons.
``quality.rejected_deliveries``  vendor answers that were not written, kept whole as delivered:
                           a report that cannot be used (a structural failure: an HTML page, a
                           missing column, CSV that does not parse) and a raw report with fewer
                           rows than the day already archived. Small answers as text
                           (``content``), raw report files gzip-compressed (``content_gzip``), with
                           their row count, columns, the rows archived at the time and the reason.
``quality.partition_rows`` rows checked and quarantined per asset partition: the history the
                           row_volume check compares a partition with.

``failure_cases``, ``quarantine`` and ``partition_rows`` describe the data stored for each
partition: a run replaces the rows of the partitions it wrote (in one transaction), after their
data is committed, so re-running a partition never duplicates them, a clean re-run after a fix
clears them, and a failed load leaves them as they were. A refused delivery changes no stored
data, so it replaces only the failure cases of its partitions (they say why it was refused).
``rejected_deliveries`` is never replaced nor deleted by adpipes: a refused delivery may hold rows
the archive does not have.
"""

from __future__ import annotations

import binascii
import datetime as dt
import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
from psycopg import sql
from pydantic import Field

from adpipes.lib.quality.validation import QualityReport
from adpipes.lib.storage.postgres import (
    PostgresDatabase,
    _lock_schema_ddl,
    arrow_table,
    copy_arrow_table,
    create_if_missing,
)

SCHEMA = "quality"
FAILURE_CASES = "failure_cases"
QUARANTINE = "quarantine"
REJECTED_DELIVERIES = "rejected_deliveries"
PARTITION_ROWS = "partition_rows"

# Columns added when rejected deliveries began to keep raw report files (tables created before
# get them on first use): the file gzip-compressed, its name, row count and columns, and the rows
# the archive held for the day when it was refused.
_REJECTED_UPGRADE = [
    f"ALTER TABLE {SCHEMA}.{REJECTED_DELIVERIES} ALTER COLUMN content DROP NOT NULL",
    f"ALTER TABLE {SCHEMA}.{REJECTED_DELIVERIES} ADD COLUMN IF NOT EXISTS id bigint GENERATED ALWAYS AS IDENTITY",
    f"ALTER TABLE {SCHEMA}.{REJECTED_DELIVERIES} ADD COLUMN IF NOT EXISTS content_gzip bytea",
    f"ALTER TABLE {SCHEMA}.{REJECTED_DELIVERIES} ADD COLUMN IF NOT EXISTS file_name text",
    f"ALTER TABLE {SCHEMA}.{REJECTED_DELIVERIES} ADD COLUMN IF NOT EXISTS row_count bigint",
    f"ALTER TABLE {SCHEMA}.{REJECTED_DELIVERIES} ADD COLUMN IF NOT EXISTS columns jsonb",
    f"ALTER TABLE {SCHEMA}.{REJECTED_DELIVERIES} ADD COLUMN IF NOT EXISTS archived_rows bigint",
]
_TABLES = (FAILURE_CASES, QUARANTINE, REJECTED_DELIVERIES, PARTITION_ROWS)
_REJECTED_COLUMNS = ("asset_key", "report_date", "problem", "content", "content_gzip", "file_name",
                     "row_count", "columns", "archived_rows", "run_id")
# Bytes of a delivered file read (and compressed) at a time: memory stays flat for a 600 MB day.
_GZIP_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class RejectedDelivery:
    """A vendor answer that is not written, to be kept whole: ``content`` (a small answer, kept as
    text) or ``path`` (a delivered file, kept gzip-compressed), the reason, and for a raw report
    file its row count (None when it could not be counted), its columns and the rows the archive
    held for the day (None when nothing was archived)."""

    report_date: str
    problem: str
    content: str | None = None
    path: Path | None = None
    rows: int | None = None
    columns: Sequence[str] = ()
    archived_rows: int | None = None


def _copy_text(value: object) -> bytes:
    """A value as a field of COPY's text format (NULL as \\N)."""
    if value is None:
        return b"\\N"
    text = str(value)
    for char, escaped in (("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        text = text.replace(char, escaped)
    return text.encode("utf-8")


def _gzip_hex(path: Path) -> Iterable[bytes]:
    """The file gzip-compressed, as a bytea field of COPY's text format (hex: ``\\x`` then the
    digits, its backslash escaped for COPY), a chunk at a time."""
    yield b"\\\\x"
    compressor = zlib.compressobj(wbits=31)  # 31: gzip format, so gunzip reads it as it is
    with path.open("rb") as handle:
        while chunk := handle.read(_GZIP_CHUNK_BYTES):
            yield binascii.hexlify(compressor.compress(chunk))
    yield binascii.hexlify(compressor.flush())


def _ensure_tables(cur) -> None:
    create_if_missing(cur, SCHEMA, _TABLES, _DDL)
    cur.execute("SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'content_gzip'",
                (f"{SCHEMA}.{REJECTED_DELIVERIES}",))
    if cur.fetchone() is None:
        _lock_schema_ddl(cur, SCHEMA)
        for statement in _REJECTED_UPGRADE:
            cur.execute(statement)


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
        content text,
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
    *_REJECTED_UPGRADE,
    f"CREATE INDEX IF NOT EXISTS rejected_deliveries_asset_date ON {SCHEMA}.{REJECTED_DELIVERIES} (asset_key, report_date)",
    f"COMMENT ON TABLE {SCHEMA}.{REJECTED_DELIVERIES} IS 'adpipes: vendor answers that were not written, kept "
    "whole as delivered (never deleted by adpipes); content_gzip: a raw report file, gzip'",
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
    max_row_drop: float = Field(
        default=0.0,
        description="Share (0-1) by which a raw delivery of a day may have fewer rows than the day "
        "already archived and still replace it (ADPIPES_MAX_ROW_DROP). A delivery that falls "
        "shorter is refused: the archived day is kept and the delivery goes to "
        "quality.rejected_deliveries.",
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

    def row_drop_refused(self, archived: int, delivered: int) -> bool:
        """Whether a delivery of ``delivered`` rows may not replace a day archived with ``archived``."""
        return delivered < archived and archived - delivered > archived * self.max_row_drop

    def record(self, run_id: str, asset_key: dg.AssetKey, report: QualityReport,
               partitions: Sequence[str] | None = None) -> None:
        """Replace the failure cases, quarantined rows and row counts of ``partitions`` (default:
        all the report's) with this run's, in one transaction. Call it once their data is stored:
        the tables describe what the databases hold."""
        partitions = sorted(report.rows if partitions is None else partitions)
        if not partitions:
            return
        asset = asset_key.to_user_string()
        with self.archive.connect() as conn, conn.cursor() as cur:
            _ensure_tables(cur)
            self._replace_failures(cur, asset, run_id, report, partitions)
            self._delete(cur, QUARANTINE, asset, partitions)
            quarantine = report.quarantine.rename(columns={"row": "row_number"})
            quarantine = quarantine[quarantine["report_date"].isin(partitions)]
            self._copy(cur, QUARANTINE, quarantine.assign(asset_key=asset, run_id=run_id))
            for partition in partitions:
                rows = report.rows[partition]
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

    def record_refusal(self, run_id: str, asset_key: dg.AssetKey, report: QualityReport,
                       partitions: Sequence[str], rejected: Sequence[RejectedDelivery] = ()) -> None:
        """What a refusal leaves, in one transaction: the failure cases of the refused
        ``partitions`` (why) replace theirs, and the ``rejected`` deliveries are added, kept whole.
        Stored data is unchanged, so quarantined rows and row counts are left as they are."""
        asset = asset_key.to_user_string()
        with self.archive.connect() as conn, conn.cursor() as cur:
            _ensure_tables(cur)
            if partitions:
                self._replace_failures(cur, asset, run_id, report, sorted(partitions))
            self._add_rejected(cur, asset, run_id, rejected)
            conn.commit()

    def _replace_failures(self, cur, asset: str, run_id: str, report: QualityReport,
                          partitions: Sequence[str]) -> None:
        self._delete(cur, FAILURE_CASES, asset, partitions)
        failures = report.failures.rename(columns={"row": "row_number"})
        failures = failures[failures["report_date"].isin(partitions)]
        self._copy(cur, FAILURE_CASES, failures.assign(asset_key=asset, run_id=run_id))

    @staticmethod
    def _delete(cur, table: str, asset: str, partitions: Sequence[str]) -> None:
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE asset_key = %s AND report_date = ANY(%s::date[])").format(
                sql.Identifier(SCHEMA, table)
            ),
            (asset, list(partitions)),
        )

    @staticmethod
    def _add_rejected(cur, asset: str, run_id: str, rejected: Sequence[RejectedDelivery]) -> None:
        """COPY the deliveries in, a file streamed through gzip: a raw day can be 600 MB of CSV."""
        if not rejected:
            return
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(SCHEMA, REJECTED_DELIVERIES), sql.SQL(", ").join(map(sql.Identifier, _REJECTED_COLUMNS)))
        with cur.copy(statement) as copy:
            for delivery in rejected:
                head = [asset, delivery.report_date, delivery.problem, delivery.content]
                tail = [
                    None if delivery.path is None else delivery.path.name,
                    delivery.rows,
                    json.dumps(list(delivery.columns)) if delivery.path is not None else None,
                    delivery.archived_rows,
                    run_id,
                ]
                copy.write(b"\t".join(map(_copy_text, head)) + b"\t")
                if delivery.path is None:
                    copy.write(b"\\N")
                else:
                    for chunk in _gzip_hex(delivery.path):
                        copy.write(chunk)
                copy.write(b"\t" + b"\t".join(map(_copy_text, tail)) + b"\n")

    @staticmethod
    def _copy(cur, table: str, frame: pd.DataFrame) -> None:
        if not len(frame):
            return
        columns = list(frame.columns)
        copy_arrow_table([cur], sql.Identifier(SCHEMA, table), columns, arrow_table(frame, columns))
