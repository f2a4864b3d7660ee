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
