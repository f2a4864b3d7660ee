"""Asset checks from pandera schemas: the specs an asset declares and the results it reports.

An asset validates its rows *before* they are written (a blocking check stops downstream assets
but not its own asset's write), so the checks run inside the asset's step: the asset declares
:func:`quality_check_specs` and ends with :func:`publish`, which yields the output (the rows that
passed), stores the failure cases and quarantined rows in the archive once the output is stored,
yields one result per check, and fails the run when a blocking check failed.

In a single-run range backfill Dagster 1.13 records check results without a partition, so every
result also breaks its figures down by partition in its metadata.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
import pandas as pd
import pandera.pandas as pa

from adpipes.lib.markdown import markdown_table
from adpipes.lib.quality.rules import (
    ARCHIVED_ROWS,
    ERROR,
    ROW_VOLUME,
    UNKNOWN_COLUMNS,
    WARN,
    CheckGroup,
    group_description,
)
from adpipes.lib.quality.store import (
    FAILURE_CASES,
    QUARANTINE,
    REJECTED_DELIVERIES,
    SCHEMA,
    QualityStore,
    RejectedDelivery,
)
from adpipes.lib.quality.validation import QualityReport

SAMPLE_ROWS = 20
VOLUME_WINDOW_DAYS = 7


def quality_check_specs(
    asset_key: dg.AssetKey,
    groups: Sequence[CheckGroup],
    schemas: Sequence[pa.DataFrameSchema],
) -> list[dg.AssetCheckSpec]:
    """One asset check per rule group; ERROR groups block downstream assets.

    The checks are not partitioned: partitioned asset checks are a preview feature in Dagster
    1.13 ("not ready for production use"). Each result names its partitions in its metadata.
    """
    return [
        dg.AssetCheckSpec(
            group.name,
            asset=asset_key,
            description=group_description(group, schemas),
            blocking=group.severity == ERROR,
            metadata={"adpipes/severity": group.severity.value},
        )
        for group in groups
    ]


def _sql_list(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _where(asset_key: dg.AssetKey, partitions: Sequence[str], check: str | None = None) -> str:
    clause = f"asset_key = '{asset_key.to_user_string()}' AND report_date IN ({_sql_list(partitions)})"
    return clause + (f" AND check_name = '{check}'" if check else "")


def _sample(cases: pd.DataFrame) -> str:
    """Up to SAMPLE_ROWS failing rows: partition, row, key and the offending column=value pairs."""
    rows = cases.dropna(subset=["row"])
    if not len(rows):
        columns = cases[["report_date", "rule", "column_name"]].drop_duplicates().head(SAMPLE_ROWS)
        return markdown_table(columns.rename(columns={"report_date": "partition", "column_name": "column"}))
    first = rows["row"].drop_duplicates().head(SAMPLE_ROWS)
    shown = rows[rows["row"].isin(first)]
    offending = shown["column_name"].fillna("") + "=" + shown["value"].fillna("null")
    table = (
        shown.assign(offending=offending)
        .groupby("row", sort=True)
        .agg(
            partition=("report_date", "first"),
            row_key=("row_key", "first"),
            rule=("rule", lambda r: "; ".join(dict.fromkeys(r))),
            values=("offending", lambda r: "; ".join(dict.fromkeys(r))),
        )
        .reset_index()
    )
    return markdown_table(table[["partition", "row", "row_key", "rule", "values"]])


class _Verdict:
    """The report's figures and the policy applied to them, shared by the check results."""

    def __init__(self, report: QualityReport, store: QualityStore) -> None:
        self.report = report
        self.failures = report.failures
        self.checked = sum(r.checked for r in report.rows.values())
        self.quarantined = sum(r.quarantined for r in report.rows.values())
        over = {
            p: r.quarantined / r.checked
            for p, r in report.rows.items()
            if r.checked and r.quarantined / r.checked > store.max_quarantined_share
        }
        self.share_exceeded = over
        self.max_share = store.max_quarantined_share


def _rule_result(group: CheckGroup, asset_key: dg.AssetKey, verdict: _Verdict) -> dg.AssetCheckResult:
    partitions = verdict.report.partitions
    cases = verdict.failures[verdict.failures["check_name"] == group.name]
    metadata: dict[str, Any] = {"checked_rows": verdict.checked, "partitions": dg.MetadataValue.json(partitions)}
    if not len(cases):
        return dg.AssetCheckResult(
            check_name=group.name, passed=True, metadata=metadata,
            description=f"All {verdict.checked:,} rows pass.",
        )
    structural = cases["row"].isna().any()
    rows = cases.dropna(subset=["row"])
    failing = int(rows["row"].nunique())
    metadata.update(
        {
            "failing_rows": failing,
            "failing_rows_by_rule": dg.MetadataValue.json(
                {rule: int(n) for rule, n in rows.groupby("rule")["row"].nunique().items()}
            ),
            "failing_rows_by_partition": dg.MetadataValue.json(
                {p: int(n) for p, n in rows.groupby("report_date")["row"].nunique().items()}
            ),
            "failure_cases": dg.MetadataValue.int(len(cases)),
            "sample": dg.MetadataValue.md(_sample(cases)),
            "full_list": dg.MetadataValue.text(
                f"SELECT * FROM {SCHEMA}.{FAILURE_CASES} WHERE {_where(asset_key, partitions, group.name)} "
                "ORDER BY report_date, row_number  -- in the archive database"
            ),
        }
    )
    if structural:
        problems = cases[cases["row"].isna()]
        missing = sorted({f"{r.report_date}: {_problem(r)}" for r in problems.itertuples()})
        metadata["problems"] = dg.MetadataValue.json(missing)
        return dg.AssetCheckResult(
            check_name=group.name, passed=False, severity=ERROR, metadata=metadata,
            description=f"The report cannot be used: {'; '.join(missing[:5])}. Nothing of these "
            "partitions was written: what they held before is kept, and an unusable vendor answer "
            f"is kept as delivered in {SCHEMA}.{REJECTED_DELIVERIES}.",
        )
    if group.severity == WARN:
        return dg.AssetCheckResult(
            check_name=group.name, passed=False, severity=WARN, metadata=metadata,
            description=f"{failing:,} of {verdict.checked:,} rows break a WARN rule; they were written "
            "as they are.",
        )
    metadata["quarantined_rows"] = failing
    metadata["quarantine"] = dg.MetadataValue.text(
        f"SELECT * FROM {SCHEMA}.{QUARANTINE} WHERE {_where(asset_key, partitions)} ORDER BY report_date, row_number"
    )
    severity = ERROR if verdict.share_exceeded else WARN
    allowed = f"max_quarantined_share {verdict.max_share:g}"
    return dg.AssetCheckResult(
        check_name=group.name, passed=False, severity=severity, metadata=metadata,
        description=f"{failing:,} of {verdict.checked:,} rows break this check and were quarantined "
        f"(kept out of product, stored in {SCHEMA}.{QUARANTINE}); the other rows were written. "
        + ("More than " if severity == ERROR else "Within ") + allowed + ".",
    )


def _problem(case: Any) -> str:
    """A structural failure case in words: the rule and the column (or value) it concerns."""
    detail = case.column_name if isinstance(case.column_name, str) else case.value
    return f"{case.rule} ({detail})" if isinstance(detail, str) else str(case.rule)


def _archived_rows_result(asset_key: dg.AssetKey, report: QualityReport, store: QualityStore) -> dg.AssetCheckResult:
    compared = report.archive_comparison
    metadata: dict[str, Any] = {
        "row_counts": dg.MetadataValue.json(compared),
        "max_row_drop": dg.MetadataValue.float(store.max_row_drop),
    }
    refused = {p: c for p, c in sorted(compared.items()) if c["refused"]}
    if not refused:
        replaced = [p for p, c in sorted(compared.items()) if c["replaced_on_purpose"]]
        description = (
            "No delivered day was archived before." if not compared
            else "No delivery has fewer rows than its archived day allows."
        )
        if replaced:
            description += f" Replaced on purpose (replace_archived): {', '.join(replaced)}."
        return dg.AssetCheckResult(check_name=ARCHIVED_ROWS.name, passed=True, metadata=metadata,
                                   description=description)
    metadata["rejected_deliveries"] = dg.MetadataValue.text(
        f"SELECT id, report_date, problem, row_count, archived_rows, recorded_at FROM {SCHEMA}.{REJECTED_DELIVERIES} "
        f"WHERE {_where(asset_key, list(refused))} ORDER BY id  -- in the archive database"
    )
    shrunk = "; ".join(f"{p}: {c['delivered']:,} rows delivered, {c['archived']:,} archived" for p, c in refused.items())
    return dg.AssetCheckResult(
        check_name=ARCHIVED_ROWS.name, passed=False, severity=ERROR, metadata=metadata,
        description=f"Fewer rows than the archived day ({shrunk}), more than max_row_drop "
        f"{store.max_row_drop:g} allows. Not written: the archived days are kept as they were and "
        f"the deliveries are in {SCHEMA}.{REJECTED_DELIVERIES}.",
    )


def _unknown_columns_result(report: QualityReport, verdict: _Verdict) -> dg.AssetCheckResult:
    cases = verdict.failures[verdict.failures["check_name"] == UNKNOWN_COLUMNS.name]
    unknown = {p: list(c) for p, c in report.unknown_columns.items()}
    for row in cases.itertuples():
        unknown.setdefault(row.report_date, []).append(str(row.column_name))
    names = sorted({c for cols in unknown.values() for c in cols})
    metadata = {"unknown_columns": dg.MetadataValue.json(names),
                "unknown_columns_by_partition": dg.MetadataValue.json(unknown)}
    if not names:
        return dg.AssetCheckResult(check_name=UNKNOWN_COLUMNS.name, passed=True, metadata=metadata,
                                   description="The vendor sent only columns adpipes knows.")
    return dg.AssetCheckResult(
        check_name=UNKNOWN_COLUMNS.name, passed=False, severity=WARN, metadata=metadata,
        description=f"The vendor sent columns adpipes does not know: {', '.join(names)}. They are kept "
        "(as text); add them to the schema once their meaning is known.",
    )


def _volume_result(asset_key: dg.AssetKey, report: QualityReport, store: QualityStore) -> dg.AssetCheckResult:
    days = sorted(report.rows)
    first = dt.date.fromisoformat(days[0]) - dt.timedelta(days=VOLUME_WINDOW_DAYS)
    last = dt.date.fromisoformat(days[-1]) - dt.timedelta(days=1)
    history = store.row_count_history(asset_key, first, last) if days else {}
    judged: dict[str, Any] = {}
    outside = []
    for day in days:
        current = report.rows[day].checked
        start = dt.date.fromisoformat(day)
        previous = [
            history[d] for d in ((start - dt.timedelta(days=n)).isoformat() for n in range(1, VOLUME_WINDOW_DAYS + 1))
            if d in history
        ]
        history[day] = current  # later partitions of the same range compare with this one
        if len(previous) < store.volume_min_history:
            judged[day] = {"rows": current, "skipped": f"{len(previous)} of the {VOLUME_WINDOW_DAYS} previous partitions loaded"}
            continue
        median = statistics.median(previous)
        low, high = median / store.volume_band_factor, median * store.volume_band_factor
        judged[day] = {"rows": current, "median": median, "band": [low, high]}
        if not low <= current <= high:
            outside.append(f"{day}: {current:,} rows (median {median:,.0f}, band {low:,.0f}-{high:,.0f})")
    metadata = {"row_counts": dg.MetadataValue.json(judged)}
    if outside:
        return dg.AssetCheckResult(
            check_name=ROW_VOLUME.name, passed=False, severity=WARN, metadata=metadata,
            description="Row count outside the usual band: " + "; ".join(outside) + ". Check the "
            "vendor's dashboard for an outage or a tracking change.",
        )
    skipped = [d for d, j in judged.items() if "skipped" in j]
    description = (
        "Skipped: not enough history yet." if skipped and len(skipped) == len(judged)
        else "Row counts within the band around the trailing 7-day median."
    )
    return dg.AssetCheckResult(check_name=ROW_VOLUME.name, passed=True, metadata=metadata, description=description)


def _blocking_message(asset_key: dg.AssetKey, report: QualityReport, verdict: _Verdict,
                      results: Sequence[dg.AssetCheckResult]) -> str | None:
    blocking = [r for r in results if not r.passed and r.severity == ERROR]
    if not blocking:
        return None
    asset = asset_key.to_user_string()
    structural = report.structural_failures()
    if len(structural):
        problems = sorted({f"partition {r.report_date}: {_problem(r)}" for r in structural.itertuples()})
        return (
            f"{asset}: the delivered report cannot be used ({'; '.join(problems[:10])}). Nothing of "
            "these partitions was written: what they held before is kept, and an unusable vendor "
            f"answer is kept as delivered in the archive's {SCHEMA}.{REJECTED_DELIVERIES}. "
            f"Review the failed check(s) {', '.join(r.check_name for r in blocking)} in the Dagster UI; "
            "re-run the partitions once the vendor or adpipes' schema is fixed."
        )
    shares = ", ".join(f"{p}: {s:.2%}" for p, s in sorted(verdict.share_exceeded.items()))
    return (
        f"{asset}: {verdict.quarantined:,} of {verdict.checked:,} rows broke ERROR rules "
        f"({', '.join(r.check_name for r in blocking)}) and were quarantined, more than the allowed "
        f"share {verdict.max_share:g} (partitions {shares}). The valid rows were written; downstream "
        f"assets were not run. See SELECT * FROM {SCHEMA}.{QUARANTINE} WHERE {_where(asset_key, report.partitions)} "
        "in the archive database; re-run the partitions after the fix."
    )


def publish(
    context: dg.AssetExecutionContext,
    store: QualityStore,
    report: QualityReport,
    output: dg.Output | None,
    *,
    rejected: Sequence[RejectedDelivery | tuple[str, str, str]] = (),
    written: Sequence[str] | None = None,
    refusal_message: str | None = None,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Yield ``output`` and the check results, record what they found in the archive's quality
    tables, and fail the step if a blocking check failed.

    A partition with a structural failure is refused: nothing of it is written. By default any
    refusal withholds the whole ``output``; an output that leaves the refused partitions out
    itself (a raw report's ``DeliveredFiles.withhold``) names the partitions it writes in
    ``written``. ``rejected`` deliveries ((partition, problem, content) or
    :class:`RejectedDelivery`) are kept whole in ``quality.rejected_deliveries``.

    The quality tables follow the data: what describes a refusal (its failure cases, the rejected
    deliveries) is recorded before the output, since no load can make it untrue and it must
    survive a failing run; what describes the stored rows (failure cases, quarantine, row counts)
    is recorded only once Dagster has stored the output (it calls the IO manager when the output
    is yielded, before this generator resumes), so a failed load leaves the tables as they were.
    ``refusal_message`` replaces the generic failure message of a refusal.
    """
    asset_key = context.asset_key
    run_id = context.run.run_id
    verdict = _Verdict(report, store)
    results = []
    for group in report.groups.values():
        if group.name == ROW_VOLUME.name:
            results.append(_volume_result(asset_key, report, store))
        elif group.name == UNKNOWN_COLUMNS.name:
            results.append(_unknown_columns_result(report, verdict))
        elif group.name == ARCHIVED_ROWS.name:
            results.append(_archived_rows_result(asset_key, report, store))
        else:
            results.append(_rule_result(group, asset_key, verdict))
    refused = report.refused_partitions()
    if written is None:
        written = [] if output is None or refused else list(report.partitions)
    written = [p for p in written if p not in refused]
    if not written:
        output = None
    deliveries = [d if isinstance(d, RejectedDelivery) else RejectedDelivery(d[0], d[1], content=d[2])
                  for d in rejected]
    if refused or deliveries:
        store.record_refusal(run_id, asset_key, report, refused, deliveries)
    if output is not None:
        metadata = {"quarantined_rows": verdict.quarantined, **(output.metadata or {})}
        yield dg.Output(output.value, metadata=metadata)
        # Only reached once the IO manager has committed the output.
        store.record(run_id, asset_key, report, written)
    for result in results:
        if not result.passed:
            log = context.log.error if result.severity == ERROR else context.log.warning
            log(f"{asset_key.to_user_string()} check {result.check_name} failed: {result.description}")
        yield result
    message = _blocking_message(asset_key, report, verdict, results)
    if refused and refusal_message:
        message = refusal_message
    if message:
        raise dg.Failure(description=message)
