"""The asset checks a schema gives, built while the test runs (docs/checks.md): one check per kind
of rule, its description saying what it means, its severity and its rules; ERROR checks block,
WARN checks never do; the checks are partitioned like their asset."""

import dagster as dg
import pandera.pandas as pa

from adpipes.lib.quality import ROW_VOLUME, CheckGroup, check_groups, quality_check_specs, rule
from adpipes.lib.quality.rules import ERROR, UNKNOWN_COLUMNS, WARN
from adpipes.lib.storage.tables import report_date_column

POSITIVE = CheckGroup("spec_positive", "Amounts are positive.")
SHORT = CheckGroup("spec_short_notes", "Notes are short.", severity=WARN)
DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01")


def test_each_check_describes_what_it_means_its_severity_and_its_rules():
    schema = pa.DataFrameSchema({
        "report_date": report_date_column(),
        "id": pa.Column("str", nullable=False),
        "amount": pa.Column("Int64", rule(POSITIVE, pa.Check.gt(0), "amount > 0"), nullable=True),
        "refund": pa.Column("Int64", rule(POSITIVE, pa.Check.gt(0), "refund > 0"), nullable=True),
        "note": pa.Column("str", rule(SHORT, pa.Check.str_length(max_value=10), "note has at most 10 characters"),
                          nullable=True),
    }, unique=["id"])
    groups = check_groups(schema, extra=[ROW_VOLUME, UNKNOWN_COLUMNS, ROW_VOLUME])
    specs = {s.name: s for s in quality_check_specs(dg.AssetKey(["spec_test", "t"]), groups, [schema], DAYS)}
    # One check per kind of rule the schema has, and the extra checks the asset asks for, each once.
    assert [g.name for g in groups].count("row_volume") == 1
    assert set(specs) == {"required_columns", "required_values", "spec_positive", "spec_short_notes",
                          "unique_keys", "row_volume", "unknown_columns"}
    for group, rules in ((POSITIVE, ["- amount > 0", "- refund > 0"]),
                         (SHORT, ["- note has at most 10 characters"])):
        spec = specs[group.name]
        lines = spec.description.splitlines()
        # What it means first, then its severity, then its rules, one list item each.
        assert lines[0] == group.description
        assert [line for line in lines if line.startswith("- ")] == rules
        severity_line = next(line for line in lines if group.severity.value in line)
        assert lines.index(severity_line) < lines.index(rules[0])
        # ERROR checks block the assets downstream; WARN checks never block.
        assert spec.blocking == (group.severity == ERROR)
        assert ("never block" in spec.description.lower()) == (group.severity == WARN)
        assert spec.partitions_def == DAYS
    # The built-in kinds list the schema's own columns.
    assert any("id" in line for line in specs["required_values"].description.splitlines() if line.startswith("- "))
    assert any("id" in line for line in specs["unique_keys"].description.splitlines() if line.startswith("- "))
