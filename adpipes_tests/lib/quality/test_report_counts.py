"""QualityReport's bookkeeping across blocks: a partition's rows checked in several blocks add up,
and the unknown columns of a partition seen in several blocks are each named once."""

from adpipes.lib.quality import QualityReport
from adpipes.lib.quality.rules import UNKNOWN_COLUMNS


def test_rows_of_a_partition_checked_in_several_blocks_add_up():
    report = QualityReport([UNKNOWN_COLUMNS], ["d1", "d2"])
    report.add_row_counts({"d1": 100, "d2": 5})
    report.add_row_counts({"d1": 20})
    assert (report.rows["d1"].checked, report.rows["d2"].checked) == (120, 5)
    # A partition the report was not told of counts too.
    report.add_row_counts({"d3": 7})
    assert report.rows["d3"].checked == 7


def test_unknown_columns_seen_in_several_blocks_are_named_once_each():
    report = QualityReport([UNKNOWN_COLUMNS], ["d1", "d2"])
    report.add_unknown_columns("d1", iter(["new_a", "new_b"]))  # any iterable
    report.add_unknown_columns("d1", ["new_b", "new_c"])
    report.add_unknown_columns("d2", [])
    assert report.unknown_columns == {"d1": ["new_a", "new_b", "new_c"]}
    assert report.unknown_column_names() == ["new_a", "new_b", "new_c"]


def test_the_unknown_columns_check_names_them_per_day_and_passes_as_warn_elsewhere():
    """docs/checks.md: unknown_columns (WARN) names the columns the vendor sent that adpipes does
    not know; they are kept. A passing WARN check shows WARN, never ERROR."""
    import dagster as dg

    from adpipes.lib.quality import QualityStore
    from adpipes.lib.quality.checks import _unknown_columns_results, _Verdict
    from adpipes.lib.storage.postgres import PostgresDatabase

    report = QualityReport([UNKNOWN_COLUMNS], ["d1", "d2"])
    report.add_row_counts({"d1": 10, "d2": 10})
    report.add_unknown_columns("d1", ["zeta_col", "alpha_col"])
    store = QualityStore(archive=PostgresDatabase(role="archive", dsn=None))
    results = _unknown_columns_results(report, _Verdict(report, store))
    found, clean = results["d1"], results["d2"]
    assert not found.passed and found.severity == dg.AssetCheckSeverity.WARN
    assert sorted(found.metadata["unknown_columns"].value) == ["alpha_col", "zeta_col"]
    assert found.metadata["unknown_column_count"].value == 2
    assert found.description.startswith("d1") and "alpha_col" in found.description and "zeta_col" in found.description
    assert "kept" in found.description
    assert clean.passed and clean.severity == dg.AssetCheckSeverity.WARN
    assert clean.metadata["unknown_columns"].value == [] and clean.metadata["unknown_column_count"].value == 0
    assert clean.description.startswith("d2")
