"""Asset checks from pandera schemas: the specs an asset declares and the results it reports.

An asset validates its rows *before* they are written (a blocking check stops downstream assets
but not its own asset's write), so the checks run inside the asset's step: the asset declares
:func:`quality_check_specs` and ends with :func:`publish`, which yields the output (the rows that
passed), stores the failure cases and quarantined rows in the archive once the output is stored,
yields one result per check, and fails the run when a blocking check failed.

The checks are partitioned like their asset: every partition of a run, a single-run range
backfill's included, gets its own evaluation with its own figures (numeric, so the UI plots them
by partition).
"""

from __future__ import annotations

import datetime as dt
import statistics
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
import pandas as pd
import pandera.pandas as pa
from dagster import PreviewWarning
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

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
    partitions_def: dg.PartitionsDefinition | None = None,
) -> list[dg.AssetCheckSpec]:
    """One asset check per rule group; ERROR groups block downstream assets.

    With ``partitions_def`` (the asset's) the checks are partitioned: :func:`publish` records one
    evaluation per partition, so a range run's days each have their own result, figures and
    status in the UI (Dagster 1.13 gives a check result a partition only when the step has a
    single partition key; a partitioned check's evaluations name theirs). Partitioned checks are
    a preview feature in 1.13: its warning is silenced here, where adpipes opts in.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return [
            dg.AssetCheckSpec(
                group.name,
                asset=asset_key,
                description=group_description(group, schemas),
                blocking=group.severity == ERROR,
                metadata={"adpipes/severity": group.severity.value},
                partitions_def=partitions_def,
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
        self.failures = report.failures.assign(report_date=report.failures["report_date"].astype("str")) \
            if len(report.failures) else report.failures
        self.checked = sum(r.checked for r in report.rows.values())
        self.quarantined = sum(r.quarantined for r in report.rows.values())
        over = {
            p: r.quarantined / r.checked
            for p, r in report.rows.items()
            if r.checked and r.quarantined / r.checked > store.max_quarantined_share
        }
        self.share_exceeded = over
        self.max_share = store.max_quarantined_share

    def checked_rows(self, partition: str) -> int:
        rows = self.report.rows.get(partition)
        return rows.checked if rows else 0


# Per check: partition -> its result, or None where the check could not be judged (row_volume
# without enough history): no evaluation is recorded for it, so the UI shows it as skipped, not
# as a pass.
PartitionResults = dict[str, "dg.AssetCheckResult | None"]


def _passed(group: CheckGroup, metadata: dict[str, Any], description: str) -> dg.AssetCheckResult:
    # A passing result carries its check's severity: Dagster's default (ERROR) would label a
    # passing WARN check ERROR in the UI.
    return dg.AssetCheckResult(check_name=group.name, passed=True, severity=group.severity,
                               metadata=metadata, description=description)


def _rule_results(group: CheckGroup, asset_key: dg.AssetKey, verdict: _Verdict) -> PartitionResults:
    cases = verdict.failures[verdict.failures["check_name"] == group.name]
    return {p: _rule_result(group, asset_key, verdict, p, cases[cases["report_date"] == p])
            for p in verdict.report.partitions}


def _rule_result(group: CheckGroup, asset_key: dg.AssetKey, verdict: _Verdict, partition: str,
                 cases: pd.DataFrame) -> dg.AssetCheckResult:
    checked = verdict.checked_rows(partition)
    rows = cases.dropna(subset=["row"])
    failing = int(rows["row"].nunique())
    # Numbers, on passing results too: the UI plots a check's numeric metadata by partition.
    metadata: dict[str, Any] = {
        "checked_rows": dg.MetadataValue.int(checked),
        "failing_rows": dg.MetadataValue.int(failing),
        "failing_share": dg.MetadataValue.float(failing / checked if checked else 0.0),
    }
    if group.severity == ERROR and not group.structural:
        metadata["quarantined_rows"] = dg.MetadataValue.int(failing)
    if not len(cases):
        return _passed(group, metadata, f"{partition}: all {checked:,} rows pass.")
    structural = cases["row"].isna().any()
    metadata.update(
        {
            "failing_rows_by_rule": dg.MetadataValue.json(
                {rule: int(n) for rule, n in rows.groupby("rule")["row"].nunique().items()}
            ),
            "failure_cases": dg.MetadataValue.int(len(cases)),
            "sample": dg.MetadataValue.md(_sample(cases)),
            "full_list": dg.MetadataValue.text(
                f"SELECT * FROM {SCHEMA}.{FAILURE_CASES} WHERE {_where(asset_key, [partition], group.name)} "
                "ORDER BY report_date, row_number  -- in the archive database"
            ),
        }
    )
    if structural:
        problems = cases[cases["row"].isna()]
        missing = sorted({f"{partition}: {_problem(r)}" for r in problems.itertuples()})
        metadata["problems"] = dg.MetadataValue.json(missing)
        return dg.AssetCheckResult(
            check_name=group.name, passed=False, severity=ERROR, metadata=metadata,
            description=f"The report cannot be used: {'; '.join(missing[:5])}. Nothing of "
            "this partition was written: what it held before is kept, and an unusable vendor answer "
            f"is kept as delivered in {SCHEMA}.{REJECTED_DELIVERIES}.",
        )
    if group.severity == WARN:
        return dg.AssetCheckResult(
            check_name=group.name, passed=False, severity=WARN, metadata=metadata,
            description=f"{partition}: {failing:,} of {checked:,} rows break a WARN rule; they were "
            "written as they are.",
        )
    metadata["quarantine"] = dg.MetadataValue.text(
        f"SELECT * FROM {SCHEMA}.{QUARANTINE} WHERE {_where(asset_key, [partition])} ORDER BY report_date, row_number"
    )
    severity = ERROR if partition in verdict.share_exceeded else WARN
    allowed = f"max_quarantined_share {verdict.max_share:g}"
    return dg.AssetCheckResult(
        check_name=group.name, passed=False, severity=severity, metadata=metadata,
        description=f"{partition}: {failing:,} of {checked:,} rows break this check and were quarantined "
        f"(kept out of product, stored in {SCHEMA}.{QUARANTINE}); the other rows were written. "
        + ("More than " if severity == ERROR else "Within ") + allowed + ".",
    )


def _problem(case: Any) -> str:
    """A structural failure case in words: the rule and the column (or value) it concerns."""
    detail = case.column_name if isinstance(case.column_name, str) else case.value
    return f"{case.rule} ({detail})" if isinstance(detail, str) else str(case.rule)


def _archived_rows_results(asset_key: dg.AssetKey, report: QualityReport, store: QualityStore) -> PartitionResults:
    results: PartitionResults = {}
    for partition in report.partitions:
        compared = report.archive_comparison.get(partition)
        metadata: dict[str, Any] = {"max_row_drop": dg.MetadataValue.float(store.max_row_drop)}
        if compared is None:
            results[partition] = _passed(ARCHIVED_ROWS, metadata,
                                         f"{partition}: nothing was archived for this day before.")
            continue
        metadata["archived_rows"] = dg.MetadataValue.int(int(compared["archived"]))
        metadata["delivered_rows"] = dg.MetadataValue.int(int(compared["delivered"]))
        if not compared["refused"]:
            description = f"{partition}: the delivery has no fewer rows than the archived day allows."
            if compared["replaced_on_purpose"]:
                description += " Replaced on purpose (replace_archived)."
            results[partition] = _passed(ARCHIVED_ROWS, metadata, description)
            continue
        metadata["rejected_deliveries"] = dg.MetadataValue.text(
            f"SELECT id, report_date, problem, row_count, archived_rows, recorded_at FROM {SCHEMA}.{REJECTED_DELIVERIES} "
            f"WHERE {_where(asset_key, [partition])} ORDER BY id  -- in the archive database"
        )
        results[partition] = dg.AssetCheckResult(
            check_name=ARCHIVED_ROWS.name, passed=False, severity=ERROR, metadata=metadata,
            description=f"{partition}: fewer rows than the archived day ({compared['delivered']:,} rows "
            f"delivered, {compared['archived']:,} archived), more than max_row_drop {store.max_row_drop:g} "
            f"allows. Not written: the archived day is kept as it was and the delivery is in "
            f"{SCHEMA}.{REJECTED_DELIVERIES}.",
        )
    return results


def _unknown_columns_results(report: QualityReport, verdict: _Verdict) -> PartitionResults:
    cases = verdict.failures[verdict.failures["check_name"] == UNKNOWN_COLUMNS.name]
    unknown = {p: list(c) for p, c in report.unknown_columns.items()}
    for row in cases.itertuples():
        unknown.setdefault(str(row.report_date), []).append(str(row.column_name))
    results: PartitionResults = {}
    for partition in report.partitions:
        names = sorted(set(unknown.get(partition, [])))
        metadata = {"unknown_columns": dg.MetadataValue.json(names),
                    "unknown_column_count": dg.MetadataValue.int(len(names))}
        if not names:
            results[partition] = _passed(UNKNOWN_COLUMNS, metadata,
                                         f"{partition}: the vendor sent only columns adpipes knows.")
            continue
        results[partition] = dg.AssetCheckResult(
            check_name=UNKNOWN_COLUMNS.name, passed=False, severity=WARN, metadata=metadata,
            description=f"{partition}: the vendor sent columns adpipes does not know: {', '.join(names)}. "
            "They are kept (as text); add them to the schema once their meaning is known.",
        )
    return results


def _volume_results(asset_key: dg.AssetKey, report: QualityReport, store: QualityStore
                    ) -> tuple[PartitionResults, dict[str, str]]:
    """row_volume per partition, and why it was skipped where it could not be judged."""
    days = sorted(report.rows)
    results: PartitionResults = {}
    skipped: dict[str, str] = {}
    if not days:
        return results, skipped
    first = dt.date.fromisoformat(days[0]) - dt.timedelta(days=VOLUME_WINDOW_DAYS)
    last = dt.date.fromisoformat(days[-1]) - dt.timedelta(days=1)
    history = store.row_count_history(asset_key, first, last)
    for day in days:
        current = report.rows[day].checked
        start = dt.date.fromisoformat(day)
        previous = [
            history[d] for d in ((start - dt.timedelta(days=n)).isoformat() for n in range(1, VOLUME_WINDOW_DAYS + 1))
            if d in history
        ]
        history[day] = current  # later partitions of the same range compare with this one
        if len(previous) < store.volume_min_history:
            results[day] = None
            skipped[day] = (f"not enough history yet: {len(previous)} of the {VOLUME_WINDOW_DAYS} previous "
                            f"partitions loaded, {store.volume_min_history} needed")
            continue
        median = statistics.median(previous)
        low, high = median / store.volume_band_factor, median * store.volume_band_factor
        metadata = {
            "rows": dg.MetadataValue.int(current),
            "median": dg.MetadataValue.float(float(median)),
            "band_low": dg.MetadataValue.float(float(low)),
            "band_high": dg.MetadataValue.float(float(high)),
            "history_partitions": dg.MetadataValue.int(len(previous)),
        }
        if low <= current <= high:
            results[day] = _passed(ROW_VOLUME, metadata, f"{day}: {current:,} rows, within the band "
                                   f"{low:,.0f}-{high:,.0f} around the trailing 7-day median {median:,.0f}.")
        else:
            results[day] = dg.AssetCheckResult(
                check_name=ROW_VOLUME.name, passed=False, severity=WARN, metadata=metadata,
                description=f"{day}: {current:,} rows, outside the usual band {low:,.0f}-{high:,.0f} "
                f"(median {median:,.0f}). Check the vendor's dashboard for an outage or a tracking change.",
            )
    return results, skipped


def _blocking_message(asset_key: dg.AssetKey, report: QualityReport, verdict: _Verdict,
                      results: dict[str, PartitionResults]) -> str | None:
    blocking = sorted({name for name, by_partition in results.items() for r in by_partition.values()
                       if r is not None and not r.passed and r.severity == ERROR})
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
            f"Review the failed check(s) {', '.join(blocking)} in the Dagster UI; "
            "re-run the partitions once the vendor or adpipes' schema is fixed."
        )
    shares = ", ".join(f"{p}: {s:.2%}" for p, s in sorted(verdict.share_exceeded.items()))
    return (
        f"{asset}: {verdict.quarantined:,} of {verdict.checked:,} rows broke ERROR rules "
        f"({', '.join(blocking)}) and were quarantined, more than the allowed "
        f"share {verdict.max_share:g} (partitions {shares}). The valid rows were written; downstream "
        f"assets were not run. See SELECT * FROM {SCHEMA}.{QUARANTINE} WHERE {_where(asset_key, report.partitions)} "
        "in the archive database; re-run the partitions after the fix."
    )


def _check_results(asset_key: dg.AssetKey, report: QualityReport, store: QualityStore, verdict: _Verdict
                   ) -> tuple[dict[str, PartitionResults], dict[str, str]]:
    """Every check's result per partition, and the partitions row_volume could not judge (why)."""
    results: dict[str, PartitionResults] = {}
    skipped: dict[str, str] = {}
    for group in report.groups.values():
        if group.name == ROW_VOLUME.name:
            results[group.name], skipped = _volume_results(asset_key, report, store)
        elif group.name == UNKNOWN_COLUMNS.name:
            results[group.name] = _unknown_columns_results(report, verdict)
        elif group.name == ARCHIVED_ROWS.name:
            results[group.name] = _archived_rows_results(asset_key, report, store)
        else:
            results[group.name] = _rule_results(group, asset_key, verdict)
    return results, skipped


def _partition_metadata(report: QualityReport, skipped: dict[str, str]) -> dict[str, dict[str, Any]]:
    """What validation found per partition, as numbers the UI plots: rows checked and quarantined."""
    out: dict[str, dict[str, Any]] = {}
    for partition in report.partitions:
        rows = report.rows.get(partition)
        metadata: dict[str, Any] = {
            "checked_rows": dg.MetadataValue.int(rows.checked if rows else 0),
            "quarantined_rows": dg.MetadataValue.int(rows.quarantined if rows else 0),
        }
        if partition in skipped:
            metadata["adpipes/row_volume"] = dg.MetadataValue.text(f"skipped: {skipped[partition]}")
        out[partition] = metadata
    return out


def _target_materializations(context: dg.AssetExecutionContext, partitions: Sequence[str]
                             ) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """The latest materialization of each partition, which its evaluations are about: this run's
    when it wrote the partition, else the one whose rows the partition still holds. Dagster
    shows a partitioned check's status only while its evaluation targets the partition's latest
    materialization (an AssetCheckResult finds it from the step's partition key, which a range
    run does not have)."""
    targets = {}
    for partition in dict.fromkeys(partitions):
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[partition]), limit=1).records
        if records:
            targets[partition] = AssetCheckEvaluationTargetMaterializationData(
                storage_id=records[0].storage_id, run_id=records[0].run_id, timestamp=records[0].timestamp)
    return targets


def publish(
    context: dg.AssetExecutionContext,
    store: QualityStore,
    report: QualityReport,
    output: dg.Output | None,
    *,
    rejected: Sequence[RejectedDelivery | tuple[str, str, str]] = (),
    written: Sequence[str] | None = None,
    refusal_message: str | None = None,
) -> Iterator[dg.Output | dg.AssetCheckEvaluation]:
    """Yield ``output`` and the check evaluations, record what they found in the archive's
    quality tables, and fail the step if a blocking check failed.

    Each check is evaluated per partition (the checks are partitioned, see
    :func:`quality_check_specs`): one evaluation per partition of the run, with that partition's
    figures. A partition row_volume cannot judge yet gets no evaluation (the UI shows it as
    skipped, never as a pass); why is in the partition's materialization metadata and the log.

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
    results, skipped = _check_results(asset_key, report, store, verdict)
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
        # Each partition's materialization gets its own rows checked and quarantined (the
        # output's figures are the run's).
        for partition, figures in _partition_metadata(report, skipped).items():
            if partition in context.partition_keys:
                context.add_asset_metadata(figures, partition_key=partition)
        yield dg.Output(output.value, metadata=metadata)
        # Only reached once the IO manager has committed the output.
        store.record(run_id, asset_key, report, written)
    asset = asset_key.to_user_string()
    if skipped:
        context.log.info(f"{asset} check {ROW_VOLUME.name} not evaluated for "
                         + "; ".join(f"{p} ({why})" for p, why in sorted(skipped.items())))
    selected = context.selected_asset_check_keys
    blocking = {spec.name: spec.blocking for spec in context.assets_def.check_specs}
    # An AssetCheckResult takes its partition from the step, which has none in a range run; an
    # AssetCheckEvaluation names it. Yielded directly, it needs its check's (empty) output too,
    # as Dagster yields for an AssetCheckResult.
    outputs = {spec.key: name for name, spec in context.assets_def.check_specs_by_output_name.items()}
    targets = _target_materializations(context, [p for by in results.values() for p, r in by.items() if r])
    for name, by_partition in results.items():
        key = dg.AssetCheckKey(asset_key, name)
        if key not in selected:
            continue
        yield dg.Output(None, output_name=outputs[key])
        failed = {p: r for p, r in by_partition.items() if r is not None and not r.passed}
        if failed:
            worst = ERROR if any(r.severity == ERROR for r in failed.values()) else WARN
            log = context.log.error if worst == ERROR else context.log.warning
            log(f"{asset} check {name} failed for {len(failed)} partition(s) {', '.join(sorted(failed))}: "
                + " ".join(r.description or "" for _, r in sorted(failed.items()))[:2000])
        for partition, result in by_partition.items():
            if result is None:
                continue
            yield dg.AssetCheckEvaluation(
                asset_key=asset_key, check_name=name, passed=result.passed, metadata=result.metadata,
                severity=result.severity, description=result.description, blocking=blocking.get(name, False),
                partition=partition, target_materialization_data=targets.get(partition),
            )
    message = _blocking_message(asset_key, report, verdict, results)
    if refused and refusal_message:
        message = refusal_message
    if message:
        raise dg.Failure(description=message)
