"""Validating an asset's rows against its pandera schemas, and what the checks report from it.

:func:`find_failures` runs pandera (lazily, so every failure is found, not the first) and files
each failure case under its rule and asset check. :class:`QualityReport` collects them while an
asset validates its rows (one block at a time for big partitions): which rows fail which rule,
which rows are quarantined (an ERROR rule failed) and how many rows each partition had.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import pandera.errors
import pandera.pandas as pa

from adpipes.lib.storage.tables import PARTITION_COLUMN
from adpipes.lib.quality.rules import (
    ARCHIVED_ROWS,
    ERROR,
    REQUIRED_COLUMNS,
    REQUIRED_VALUES,
    UNIQUE_KEYS,
    UNKNOWN_COLUMNS,
    CheckGroup,
    Rule,
    rule_of,
)

# One row per failing (row, rule, column). ``row`` is the position in the validated frame; it is
# missing for structural failures, which concern the report, not a row.
FAILURE_COLUMNS = ["check_name", "rule", "column_name", "row", "value"]
MISSING_COLUMN_RULE = "required column present"
READABLE_RULE = "the answer is a CSV report"
_UNIQUENESS_CHECKS = ("field_uniqueness", "multiple_fields_uniqueness", "duplicates")


def _empty_failures() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "check_name": pd.Series(dtype="str"),
            "rule": pd.Series(dtype="str"),
            "column_name": pd.Series(dtype="str"),
            "row": pd.Series(dtype="Int64"),
            "value": pd.Series(dtype="str"),
        }
    )


def _pandera_cases(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame | None:
    try:
        schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        return exc.failure_cases
    return None


def _rule_for(schema: pa.DataFrameSchema, context: str, column: object, check: str,
              number: object) -> tuple[Rule, bool]:
    """The rule a failure case breaks, and whether it concerns the report rather than a row."""
    column = None if column is None or pd.isna(column) else str(column)
    if check == "column_in_dataframe":
        return Rule(REQUIRED_COLUMNS, MISSING_COLUMN_RULE), True
    if check.startswith(("dtype(", "coerce_dtype(")):
        return Rule(REQUIRED_COLUMNS, f"{column} has type {check}"), True
    if check == "column_in_schema":
        return Rule(UNKNOWN_COLUMNS, "no columns beyond the schema"), True
    if check == "not_nullable":
        return Rule(REQUIRED_VALUES, f"{column} is not empty"), False
    if check in _UNIQUENESS_CHECKS:
        return Rule(UNIQUE_KEYS, f"one row per ({', '.join(schema.unique or [column or ''])})"), False
    if number is not None and not pd.isna(number):
        if context == "DataFrameSchema":
            return rule_of(schema.checks[int(number)]), False
        if column in schema.columns:
            return rule_of(schema.columns[column].checks[int(number)]), False
    # A check that raised instead of answering: the data does not have the shape it reads.
    return Rule(REQUIRED_COLUMNS, f"check {check!r} could not run on column {column}"), True


def _filed(schema: pa.DataFrameSchema, cases: pd.DataFrame, only_columns: Sequence[str] = ()) -> pd.DataFrame:
    parts = []
    keys = ["schema_context", "column", "check", "check_number"]
    cases = cases.astype({"check_number": object})
    for context, column, check, number in cases[keys].drop_duplicates().itertuples(index=False):
        found, structural = _rule_for(schema, context, column, str(check), number)
        mask = (cases["check"] == check) & (cases["schema_context"] == context)
        mask &= cases["column"].isna() if column is None or pd.isna(column) else cases["column"] == column
        selected = cases[mask]
        if only_columns:
            selected = selected[selected["column"].isin(only_columns)]
        if check == "column_in_dataframe":
            column_names = selected["failure_case"].astype("str")
        else:
            column_names = pd.Series(column, index=selected.index, dtype="str")
        parts.append(
            pd.DataFrame(
                {
                    "check_name": found.group.name,
                    "rule": found.description,
                    "column_name": column_names,
                    "row": (
                        pd.Series(pd.NA, index=selected.index, dtype="Int64")
                        if structural
                        else pd.to_numeric(selected["index"]).astype("Int64")
                    ),
                    "value": None if check == "column_in_dataframe" else selected["failure_case"].astype("str"),
                },
                index=selected.index,
            )
        )
    if not parts:
        return _empty_failures()
    filed = pd.concat(parts, ignore_index=True)
    # A wrong type is reported per element by pandera; for the report it is one problem.
    structural = filed["row"].isna()
    return pd.concat([filed[~structural], filed[structural].drop_duplicates(["check_name", "rule", "column_name"])],
                     ignore_index=True)


def find_failures(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame:
    """Every failure of ``frame`` (which must have a RangeIndex) under ``schema``'s rules.

    Dataframe-level rules are validated on just the columns they read: pandera files a failure
    case for every column of a failing row, which on a wide table with many failing rows would be
    tens of millions of cases.
    """
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.start != 0:
        raise ValueError("find_failures needs a frame with a 0-based RangeIndex (reset_index first)")
    column_schema = copy.copy(schema)
    column_schema.checks = []
    if schema.unique and not set(schema.unique) <= set(frame.columns):
        # pandera would check the key columns that are there, a false duplicate; the missing
        # ones are reported by required_columns.
        column_schema.unique = None
    parts = []
    cases = _pandera_cases(column_schema, frame)
    if cases is not None:
        parts.append(_filed(column_schema, cases))
    for check in schema.checks:
        found = rule_of(check)
        if not set(found.columns) <= set(frame.columns):
            continue  # the missing columns are reported by required_columns
        narrow = pa.DataFrameSchema(checks=[check])
        cases = _pandera_cases(narrow, frame[list(found.columns)])
        if cases is not None:
            parts.append(_filed(narrow, cases, found.columns))
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else _empty_failures()


def header_failures(schema: pa.DataFrameSchema, columns: Iterable[str]) -> pd.DataFrame:
    """Structural failures of a report with these header columns (its rows are not read; the
    partition column is added by adpipes, so it is not expected in the header)."""
    required = copy.copy(schema)
    required.checks = []
    expected = [c for c in schema.columns if c != PARTITION_COLUMN]
    required.columns = {c: schema.columns[c] for c in expected}
    empty = pd.DataFrame({c: pd.Series(dtype="str") for c in dict.fromkeys(columns)})
    failures = find_failures(required, empty)
    # Only presence: the values (and so their types) are not read here.
    return failures[failures["rule"] == MISSING_COLUMN_RULE].reset_index(drop=True)


def _structural_case(check_name: str, rule: str, column: str | None, value: str | None) -> pd.DataFrame:
    return pd.DataFrame({
        "check_name": pd.Series([check_name], dtype="str"),
        "rule": pd.Series([rule], dtype="str"),
        "column_name": pd.Series([column], dtype="str"),
        "row": pd.Series([pd.NA], dtype="Int64"),
        "value": pd.Series([value], dtype="str"),
    })


@dataclass
class PartitionRows:
    """Row counts of one partition in one run."""

    checked: int = 0
    quarantined: int = 0


class QualityReport:
    """What one asset step found validating its rows, per partition.

    ``check_rows`` validates a block of rows against one or more (schema, frame) views of the
    same rows (e.g. the text as delivered and the typed table) and returns which rows to keep;
    ``add_structural`` records a failure of the report as a whole. The results become asset check
    results and rows in the archive's quality tables (see :mod:`adpipes.lib.quality.checks`).
    """

    def __init__(self, groups: Sequence[CheckGroup], partitions: Sequence[str],
                 row_key: Sequence[str] = ()) -> None:
        self.groups = {g.name: g for g in groups}
        self.partitions = list(partitions)
        self.row_key = list(row_key)
        self.rows = {p: PartitionRows() for p in self.partitions}
        self.unknown_columns: dict[str, list[str]] = {}
        # Partition -> rows archived before and rows delivered now (reports archived as delivered).
        self.archive_comparison: dict[str, dict[str, int | bool]] = {}
        self._failures: list[pd.DataFrame] = []
        self._quarantine: list[pd.DataFrame] = []
        self._offset = 0

    # -- recording -------------------------------------------------------------------------------

    def _group(self, name: str) -> CheckGroup:
        try:
            return self.groups[name]
        except KeyError:
            raise ValueError(f"rule group {name!r} has no asset check on this asset") from None

    def add_structural(self, failures: pd.DataFrame, partition: str) -> None:
        """Structural failures (e.g. from :func:`header_failures`) of ``partition``'s report."""
        if len(failures):
            for name in failures["check_name"].unique():
                self._group(name)
            self._failures.append(failures.assign(report_date=partition, row_key=None, row=pd.NA))

    def add_unreadable(self, partition: str, problem: str) -> None:
        """``partition``'s answer is not a report at all (an HTML page, CSV that does not parse)."""
        self.add_structural(_structural_case(REQUIRED_COLUMNS.name, READABLE_RULE, None, problem), partition)

    def add_archive_comparison(self, partition: str, archived: int, delivered: int, *, refused: bool,
                               max_row_drop: float, replaced: bool = False) -> None:
        """How ``partition``'s delivery compares with the day already archived; a refused one (fewer
        rows than ``max_row_drop`` allows) fails the archived_rows check, a structural failure:
        the delivery is not written."""
        self.archive_comparison[partition] = {"archived": archived, "delivered": delivered,
                                              "refused": refused, "replaced_on_purpose": replaced}
        if refused:
            rule = f"no fewer rows than the archived day (max_row_drop {max_row_drop:g})"
            value = f"{delivered} rows delivered, {archived} archived"
            self.add_structural(_structural_case(ARCHIVED_ROWS.name, rule, None, value), partition)

    def refused_partitions(self) -> list[str]:
        """Partitions with a structural failure: nothing of them may be written."""
        return sorted(set(self.structural_failures()["report_date"].astype("str")))

    def add_unknown_columns(self, partition: str, columns: Iterable[str]) -> None:
        columns = list(columns)
        if columns:
            self.unknown_columns.setdefault(partition, [])
            self.unknown_columns[partition] += [c for c in columns if c not in self.unknown_columns[partition]]

    def unknown_column_names(self) -> list[str]:
        return sorted({c for columns in self.unknown_columns.values() for c in columns})

    def add_row_counts(self, counts: dict[str, int]) -> None:
        """Rows of partitions that are checked only structurally (reports archived as delivered)."""
        for partition, rows in counts.items():
            self.rows.setdefault(partition, PartitionRows()).checked += int(rows)

    def check_rows(
        self,
        views: Sequence[tuple[pa.DataFrameSchema, pd.DataFrame]],
        *,
        keys: pd.DataFrame,
        delivered: pd.DataFrame | Callable[[pd.Index], pd.DataFrame] | None = None,
    ) -> pd.Series:
        """Validate one block of rows; return the mask of rows to write (not quarantined).

        ``views`` are (schema, frame) pairs over the same rows with the same RangeIndex; ``keys``
        holds their ``report_date`` and row-key columns; ``delivered`` is the rows as the vendor
        sent them, stored with quarantined rows (default: the last view), or a function that
        returns them for the given positions (when the block was read with some columns only).
        """
        n = len(keys)
        found = [find_failures(schema, frame) for schema, frame in views]
        # A value that failed in an earlier view (unreadable or empty as delivered) is null once
        # typed: it is reported once, under the rule it broke first, not again as an empty value.
        for i in range(1, len(found)):
            earlier = pd.concat(found[:i], ignore_index=True)
            earlier = set(zip(earlier["row"].dropna(), earlier.loc[earlier["row"].notna(), "column_name"]))
            again = [(row, column) in earlier for row, column in zip(found[i]["row"], found[i]["column_name"])]
            found[i] = found[i][~(pd.Series(again, index=found[i].index, dtype=bool)
                                  & (found[i]["check_name"] == REQUIRED_VALUES.name))]
        failures = pd.concat(found, ignore_index=True)
        structural = failures[failures["row"].isna()]
        for partition in keys["report_date"].dropna().unique():
            self.add_structural(structural, str(partition))
        per_row = failures[failures["row"].notna()].copy()
        if len(per_row):
            for name in per_row["check_name"].unique():
                self._group(name)
            rows = per_row["row"].astype("int64").to_numpy()
            per_row["report_date"] = keys["report_date"].to_numpy()[rows]
            # Keys are formatted for the failing rows only, not for every row of the block.
            failing = pd.unique(rows)
            row_keys = self._row_keys(keys.iloc[failing]).set_axis(failing)
            per_row["row_key"] = row_keys.loc[rows].to_numpy()
            per_row["row"] = rows + self._offset
            self._failures.append(per_row)
        error_groups = [name for name, group in self.groups.items() if group.severity == ERROR]
        errors = per_row[per_row["check_name"].isin(error_groups)]
        bad_rows = pd.Index(errors["row"].unique() - self._offset if len(errors) else [], dtype="int64")
        keep = pd.Series(True, index=keys.index)
        if len(bad_rows):
            keep.iloc[bad_rows] = False
            self._quarantine.append(self._quarantined(errors, bad_rows, keys, delivered if delivered is not None else views[-1][1]))
        dates = keys["report_date"].astype("str")
        for partition, count in dates.value_counts().items():
            self.rows.setdefault(partition, PartitionRows()).checked += int(count)
        for partition, count in dates[~keep].value_counts().items():
            self.rows[partition].quarantined += int(count)
        self._offset += n
        return keep

    def _row_keys(self, keys: pd.DataFrame) -> pd.Series:
        if not self.row_key:
            return pd.Series(None, index=keys.index, dtype="str")
        parts = [c + "=" + keys[c].astype("str").fillna("") for c in self.row_key]
        out = parts[0]
        for part in parts[1:]:
            out = out + ", " + part
        return out

    def _quarantined(self, errors: pd.DataFrame, bad_rows: pd.Index, keys: pd.DataFrame,
                     delivered: pd.DataFrame | Callable[[pd.Index], pd.DataFrame]) -> pd.DataFrame:
        described = errors["check_name"] + ": " + errors["rule"] + " (" + errors["column_name"].fillna("") + \
            "=" + errors["value"].fillna("null") + ")"
        reasons = described.groupby(errors["row"]).agg(lambda r: "; ".join(dict.fromkeys(r)))
        rows = delivered(bad_rows) if callable(delivered) else delivered.iloc[bad_rows]
        if len(rows) != len(bad_rows):
            raise ValueError(f"{len(bad_rows)} quarantined rows, but {len(rows)} delivered rows for them")
        payload = rows.to_json(orient="records", lines=True, date_format="iso")
        return pd.DataFrame(
            {
                "report_date": keys["report_date"].iloc[bad_rows].astype("str").to_numpy(),
                "row": bad_rows + self._offset,
                "row_key": self._row_keys(keys.iloc[bad_rows]).to_numpy(),
                "reasons": reasons.loc[bad_rows + self._offset].to_numpy(),
                "row_values": payload.rstrip("\n").split("\n"),
            }
        )

    # -- results ---------------------------------------------------------------------------------

    @property
    def failures(self) -> pd.DataFrame:
        """Every failure case: report_date, check_name, rule, column_name, row (position in the
        step's rows; missing for structural failures), row_key, value."""
        columns = ["report_date", "check_name", "rule", "column_name", "row", "row_key", "value"]
        if not self._failures:
            return pd.DataFrame({c: pd.Series(dtype="Int64" if c == "row" else "str") for c in columns})
        if len(self._failures) > 1:
            # Collected per block; joined once however often the results are read.
            self._failures = [pd.concat(self._failures, ignore_index=True)[columns]]
        return self._failures[0][columns]

    @property
    def quarantine(self) -> pd.DataFrame:
        columns = ["report_date", "row", "row_key", "reasons", "row_values"]
        if not self._quarantine:
            return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else "str") for c in columns})
        return pd.concat(self._quarantine, ignore_index=True)[columns]

    def structural_failures(self) -> pd.DataFrame:
        failures = self.failures
        return failures[failures["row"].isna()]
