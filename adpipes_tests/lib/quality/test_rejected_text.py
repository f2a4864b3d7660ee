"""A refused answer kept as text (docs/checks.md: quality.rejected_deliveries keeps it whole):
byte for byte, also with the CRLF line ends, tabs and backslashes a vendor CSV can hold."""

import dagster as dg
import psycopg

from adpipes.lib.quality import QualityReport, RejectedDelivery
from adpipes_tests.lib.quality.test_checks import CHECKS


def test_a_text_answer_is_kept_whole_with_its_crlf_tabs_and_backslashes(storage_resources, clean_databases):
    _, archive_dsn = clean_databases
    content = 'Date,Agency/PMD (af_prt),Media Source\r\n2026-11-20,"a\tb",C:\\media\\x\r\n\r\n'
    kept = RejectedDelivery("2026-11-20", "no Installs column\r\n(second line)", content=content)
    storage_resources["quality"].record_refusal("run-1", dg.AssetKey(["quality_test", "amounts"]),
                                                QualityReport(CHECKS, []), [], [kept])
    with psycopg.connect(archive_dsn) as conn:
        row = conn.execute("SELECT problem, content, content_gzip, file_name, row_count, columns, archived_rows "
                           "FROM quality.rejected_deliveries").fetchone()
    assert row[0] == kept.problem and row[1] == content
    # A text answer has no file: no compressed copy, file name, row count or column list.
    assert row[2:] == (None, None, None, None, None)
