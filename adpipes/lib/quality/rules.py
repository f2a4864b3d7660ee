"""The rules of a pandera schema, grouped into the Dagster asset checks that report them.

Every pandera check in an adpipes schema is a *rule*: it belongs to a :class:`CheckGroup` (one
Dagster asset check, e.g. ``valid_platform``) and says in words what it requires. pandera's own
checks map to standard groups: a missing required column or a wrong type to ``required_columns``,
a null in a non-nullable column to ``required_values``, duplicate keys to ``unique_keys``. So the
asset checks, their descriptions in the UI and what a failure case is filed under all come from
the schema; nothing is listed twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import dagster as dg
import pandera.pandas as pa

ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN


@dataclass(frozen=True)
class CheckGroup:
    """One Dagster asset check: the rules it reports and how bad a failure is.

    ``structural``: a failure means the delivered report cannot be used at all (its shape
    changed), so nothing of the partition goes to product. Otherwise failures are per row: with
    severity ERROR the failing rows are quarantined, with WARN they are written and only reported.
    """

    name: str
    description: str
    severity: dg.AssetCheckSeverity = ERROR
    structural: bool = False


REQUIRED_COLUMNS = CheckGroup(
    "required_columns",
    "The delivered report has every column adpipes needs, with the expected types. A failure "
    "means the vendor changed the report's shape: nothing of the partition is written to product "
    "and the run fails; the archive keeps what was delivered.",
    structural=True,
)
REQUIRED_VALUES = CheckGroup(
    "required_values", "Columns that identify a row or its partition are never empty."
)
UNIQUE_KEYS = CheckGroup("unique_keys", "No two rows share the table's key.")
UNKNOWN_COLUMNS = CheckGroup(
    "unknown_columns",
    "The vendor sent columns or fields adpipes does not know yet. Report columns are kept as text "
    "columns, Cohort API functions in extra_functions, Airbridge fields in extra_fields (page-level "
    "ones in the run's metadata); keys beside a Cohort answer's results are quoted in the run's "
    "log and metadata. Add them to the schema once their meaning is known.",
    WARN,
)
ROW_VOLUME = CheckGroup(
    "row_volume",
    "The partition's row count lies within a band around the median row count of the 7 "
    "partitions before it (ADPIPES_VOLUME_BAND_FACTOR, default: half to twice the median). "
    "Skipped until 3 of those 7 partitions have been loaded.",
    WARN,
)

ARCHIVED_ROWS = CheckGroup(
    "archived_rows",
    "A delivery of a day the archive already holds has no fewer rows than the archived day, give "
    "or take ADPIPES_MAX_ROW_DROP (a share, default 0). A delivery with fewer rows (an outage at "
    "the vendor, an answer cut off at a row cap) is not written: the archived day stays as it was, "
    "the delivery is kept whole in quality.rejected_deliveries and the run fails. Run config "
    "replace_archived: true writes it on purpose.",
    structural=True,
)

_RULE_ATTRIBUTE = "_adpipes_rule"


@dataclass(frozen=True)
class Rule:
    group: CheckGroup
    description: str
    # Columns a dataframe-level rule reads: its failure cases show these values, and it is
    # validated on just these columns (pandera files one case per column of a failing row).
    columns: tuple[str, ...] = ()


def rule(
    group: CheckGroup, check: pa.Check, description: str, *, columns: Iterable[str] = ()
) -> pa.Check:
    """Mark a pandera check as a rule of ``group``; ``description`` is what the UI shows."""
    setattr(check, _RULE_ATTRIBUTE, Rule(group, description, tuple(columns)))
    return check


def rule_of(check: pa.Check) -> Rule:
    found = getattr(check, _RULE_ATTRIBUTE, None)
    if found is None:
        raise ValueError(
            f"pandera check {check} is not an adpipes rule: create it with adpipes.lib.quality.rule "
            "so it is reported by an asset check"
        )
    return found


def schema_rules(schema: pa.DataFrameSchema) -> Iterator[Rule]:
    """Every rule of ``schema`` in the order the UI lists them, pandera's built-in ones included."""
    required = [name for name, column in schema.columns.items() if column.required]
    if required:
        yield Rule(REQUIRED_COLUMNS, f"columns present: {', '.join(required)}", tuple(required))
    for name, column in schema.columns.items():
        if not column.nullable:
            yield Rule(REQUIRED_VALUES, f"{name} is not empty", (name,))
        for check in column.checks:
            yield rule_of(check)
    for check in schema.checks:
        found = rule_of(check)
        if not found.columns:
            raise ValueError(f"dataframe-level rule {found.description!r} must name its columns")
        yield found
    if schema.unique:
        yield Rule(UNIQUE_KEYS, f"one row per ({', '.join(schema.unique)})", tuple(schema.unique))


def check_groups(*schemas: pa.DataFrameSchema, extra: Iterable[CheckGroup] = ()) -> list[CheckGroup]:
    """The asset checks reporting ``schemas``' rules (each once, in first-seen order) and ``extra``."""
    groups: dict[str, CheckGroup] = {}
    for schema in schemas:
        for found in schema_rules(schema):
            groups.setdefault(found.group.name, found.group)
    for group in extra:
        groups.setdefault(group.name, group)
    return list(groups.values())


def group_description(group: CheckGroup, schemas: Iterable[pa.DataFrameSchema]) -> str:
    """The check's description: what it means, then its rules as a list."""
    rules = [r.description for s in schemas for r in schema_rules(s) if r.group.name == group.name]
    severity = "blocks downstream assets" if group.severity == ERROR else "warns only, never blocks"
    lines = [group.description, "", f"Severity {group.severity.value} ({severity})."]
    if rules:
        lines += ["", "Rules:", *(f"- {r}" for r in dict.fromkeys(rules))]
    return "\n".join(lines)
