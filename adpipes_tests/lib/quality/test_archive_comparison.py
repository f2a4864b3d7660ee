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


def test_the_archived_rows_results_per_day():
    """docs/checks.md: a refused day fails (ERROR) naming both counts; the delivery is in
    quality.rejected_deliveries; replace_archived writes it on purpose; a day never archived
    before passes."""
    import dagster as dg

    from adpipes.lib.quality import QualityStore
    from adpipes.lib.quality.checks import _archived_rows_results
    from adpipes.lib.storage.postgres import PostgresDatabase

    report = QualityReport([ARCHIVED_ROWS], ["2026-11-19", "2026-11-20", "2026-11-21", "2026-11-22"])
    report.add_archive_comparison("2026-11-20", 1000, 800, refused=True, max_row_drop=0.1)
    report.add_archive_comparison("2026-11-21", 1000, 950, refused=False, max_row_drop=0.1)
    report.add_archive_comparison("2026-11-22", 1000, 10, refused=False, max_row_drop=0.1, replaced=True)
    store = QualityStore(archive=PostgresDatabase(role="archive", dsn=None), max_row_drop=0.1)
    results = _archived_rows_results(dg.AssetKey(["appsflyer", "android_installs"]), report, store)
    assert set(results) == {"2026-11-19", "2026-11-20", "2026-11-21", "2026-11-22"}

    def numbers(result) -> dict:
        return {k: v.value for k, v in result.metadata.items() if k != "rejected_deliveries"}

    never = results["2026-11-19"]
    assert never.passed and never.check_name == "archived_rows" and never.description.startswith("2026-11-19")
    kept = results["2026-11-21"]
    assert kept.passed and kept.description.startswith("2026-11-21")
    assert numbers(kept) == {"max_row_drop": 0.1, "archived_rows": 1000, "delivered_rows": 950}
    assert "replace_archived" not in kept.description
    on_purpose = results["2026-11-22"]
    assert on_purpose.passed and "replace_archived" in on_purpose.description
    refused = results["2026-11-20"]
    assert not refused.passed and refused.severity == dg.AssetCheckSeverity.ERROR
    assert numbers(refused) == {"max_row_drop": 0.1, "archived_rows": 1000, "delivered_rows": 800}
    words = refused.description.replace(",", "")
    assert refused.description.startswith("2026-11-20") and "800 rows" in words and "1000 archived" in words
    assert "quality.rejected_deliveries" in refused.description and "0.1" in refused.description
    query = refused.metadata["rejected_deliveries"].value
    assert "quality.rejected_deliveries" in query and "'appsflyer/android_installs'" in query and "'2026-11-20'" in query
