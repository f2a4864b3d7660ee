"""The ``sample`` of a failed check (docs/checks.md): up to 20 failing rows, each with its
partition, row number, row key, rule and the offending ``column=value``."""

from adpipes_tests.lib.quality.test_checks import evaluations, run


def markdown_rows(table: str) -> tuple[list[str], list[list[str]]]:
    """Header and cells of a markdown table, read independently of the code that wrote it."""
    lines = [line.strip() for line in table.strip().splitlines()]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    assert set(lines[1].replace("|", "")) <= {"-", ":", " "}, lines[1]
    return cells[0], cells[2:]


def test_the_sample_shows_20_failing_rows_with_partition_row_key_rule_and_value(storage_resources,
                                                                               clean_databases):
    day = "2026-03-02"
    # 25 rows, the first 22 with amount -1 (the rule: amount > 0), named <day>-<n>.
    result = run(storage_resources, day, rows=25, bad=22)
    check = evaluations(result)["positive_amounts"]
    assert not check.passed and check.metadata["failing_rows"].value == 22
    header, rows = markdown_rows(check.metadata["sample"].value)
    assert header == ["partition", "row", "row_key", "rule", "values"]
    assert len(rows) == 20  # up to 20 of the 22
    failing_names = {f"{day}-{n}" for n in range(22)}
    shown, offsets = set(), set()
    for partition, row, row_key, rule, values in rows:
        assert partition == day and row.isdigit()
        name = row_key.removeprefix("name=")
        assert row_key.startswith("name=") and name in failing_names, row_key
        # The row number is the row's: <day>-<n> is the n-th row (counted from 0 or from 1, the
        # same for every row).
        offsets.add(int(row) - int(name.rsplit("-", 1)[1]))
        assert rule == "amount > 0" and values == "amount=-1"
        shown.add(name)
    assert len(shown) == 20 and len(offsets) == 1 and offsets <= {0, 1}
