"""archived_rows (docs/checks.md): a delivery of an archived day with fewer rows than
ADPIPES_MAX_ROW_DROP allows is not written, and the failure names both counts."""

from adpipes.lib.quality import QualityReport
from adpipes.lib.quality.rules import ARCHIVED_ROWS


def test_a_refused_delivery_is_a_structural_failure_naming_both_counts_and_the_allowed_drop():
    report = QualityReport([ARCHIVED_ROWS], ["2026-11-20", "2026-11-21", "2026-11-22"])
    report.add_archive_comparison("2026-11-20", 1000, 800, refused=True, max_row_drop=0.1)
    report.add_archive_comparison("2026-11-21", 1000, 950, refused=False, max_row_drop=0.1)
    report.add_archive_comparison("2026-11-22", 1000, 10, refused=False, max_row_drop=0.1, replaced=True)
    # Only the refused day is kept out.
    assert report.refused_partitions() == ["2026-11-20"]
    (failure,) = report.structural_failures().to_dict("records")
    assert (failure["report_date"], failure["check_name"]) == ("2026-11-20", "archived_rows")
    assert "800" in failure["value"] and "1000" in failure["value"]
    assert "0.1" in failure["rule"]
    # The comparison of every day, and whether it was replaced on purpose (replace_archived).
    assert report.archive_comparison["2026-11-20"]["refused"] is True
    assert (report.archive_comparison["2026-11-20"]["archived"], report.archive_comparison["2026-11-20"]["delivered"]) == (1000, 800)
    assert report.archive_comparison["2026-11-21"]["replaced_on_purpose"] is False
    assert report.archive_comparison["2026-11-22"]["replaced_on_purpose"] is True
