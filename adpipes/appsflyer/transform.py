"""From the archived AppsFlyer raw reports to the unified ``raw_data`` table, and the header names
the archive uses for them (the reports themselves are archived as delivered, unparsed).

Everything here is vectorized: a 1M-row in-app-events day must normalize in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from adpipes.appsflyer.schemas import raw_data_schema, snake_case

# Purchase event names whose Event Value carries a store receipt (af_purchase is AppsFlyer's
# standard name; apps also send purchase / in_app_purchase).
PURCHASE_EVENT_PATTERN = r"(?:^|_)purchase$"
RECEIPT_KEY = "af_receipt_id"
_RECEIPT_VALUE = (
    rf'"{RECEIPT_KEY}"\s*:\s*(?:"(?P<text>(?:[^"\\]|\\.)*)"'
    r"|(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?))"
)

TRUE_SPELLINGS = ("true", "1", "yes", "t")
FALSE_SPELLINGS = ("false", "0", "no", "f")

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
_TIME_COLUMNS = ("attributed_touch_time", "install_time", "event_time") + tuple(
    f"contributor_{n}_touch_time" for n in (1, 2, 3)
)
_FLAG_COLUMNS = ("wifi", "is_retargeting", "is_primary_attribution")
_MONEY_COLUMNS = ("event_revenue", "event_revenue_usd")
# bigint range: larger "ids" would overflow the column and are reported like other non-ids.
_BIGINT_MAX_DIGITS = 18


def snake_case_columns(headers: Sequence[str]) -> list[str]:
    """snake_case every header; a clash (two headers mapping to one name) gets a numbered suffix."""
    seen: dict[str, int] = {}
    names = []
    for header in headers:
        name = snake_case(header)
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 1
        names.append(name)
    return names


@dataclass
class UnifiedRawData:
    """The unified table and the values that could not be converted (reported, not dropped)."""

    frame: pd.DataFrame
    problems: pd.DataFrame  # columns: report_date, source_report, appsflyer_id, column, value, problem


def _blank_to_na(series: pd.Series) -> pd.Series:
    series = series.astype("str")
    return series.mask(series.str.strip() == "")


def _parse_flags(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    lowered = _blank_to_na(series).str.strip().str.lower()
    result = pd.Series(pd.NA, index=series.index, dtype="boolean")
    result[lowered.isin(TRUE_SPELLINGS)] = True
    result[lowered.isin(FALSE_SPELLINGS)] = False
    invalid = lowered.notna() & result.isna()
    return result, invalid


def _parse_times(series: pd.Series, timezone: str) -> tuple[pd.Series, pd.Series]:
    raw = _blank_to_na(series)
    parsed = pd.to_datetime(raw, format=TIMESTAMP_FORMAT, errors="coerce")
    # A wall time that does not exist or repeats on a DST change cannot be placed on the
    # timeline from AppsFlyer's offset-less value; shift/NaT rather than guess silently.
    localized = parsed.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="shift_forward")
    invalid = raw.notna() & localized.isna()
    return localized, invalid


def _parse_money(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    raw = _blank_to_na(series)
    parsed = pd.to_numeric(raw, errors="coerce").astype("Float64")
    invalid = raw.notna() & parsed.isna()
    return parsed, invalid


def _parse_customer_user_id(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    raw = _blank_to_na(series).str.strip()
    # IDs that went through a spreadsheet or float parser arrive as "1000000186.0".
    digits = raw.str.replace(r"\.0+$", "", regex=True)
    whole = digits.str.fullmatch(rf"\d{{1,{_BIGINT_MAX_DIGITS}}}").fillna(False).astype(bool)
    parsed = digits.where(whole).astype("Int64")
    invalid = raw.notna() & ~whole
    return parsed, invalid


def _receipt_id(value: str) -> str | None:
    try:
        payload = json.loads(value, parse_int=str, parse_float=str)
    except (TypeError, ValueError):
        return None
    if not isinstance(payload, dict):
        return None
    receipt = payload.get(RECEIPT_KEY)
    return None if receipt in (None, "") else str(receipt)


def _extract_receipts(event_name: pd.Series, event_value: pd.Series) -> tuple[pd.Series, pd.Series]:
    purchase = event_name.astype("str").str.contains(PURCHASE_EVENT_PATTERN, regex=True)
    values = _blank_to_na(event_value).where(purchase.fillna(False).astype(bool))
    # A regex over the JSON text instead of json.loads per row: a 1M-row day has ~250K purchases
    # and json.loads made normalization several times slower. Receipt ids are JSON strings or
    # (iOS, from some SDKs) bare numbers whose digits must be kept exactly, never as floats.
    found = pc.extract_regex(pa.array(values, type=pa.string()), _RECEIPT_VALUE)
    # RE2 reports a group that did not take part in the match as "", not null.
    text, number = found.field("text"), found.field("number")
    receipts = pd.Series(
        pc.if_else(pc.equal(text, ""), number, text), index=values.index, dtype="str"
    )
    # Escaped characters in a JSON string (rare) are decoded by json itself.
    escaped = receipts.str.contains("\\", regex=False).fillna(False).astype(bool)
    if escaped.any():
        receipts = receipts.astype(object)
        receipts[escaped] = values[escaped].map(_receipt_id)
    receipts = receipts.astype("str")
    receipts = receipts.mask(receipts == "")
    # A purchase whose Event Value is not JSON is worth a look; one without a receipt is normal
    # (e.g. sandbox or web purchases).
    looks_json = values.str.lstrip().str.startswith("{").fillna(False).astype(bool)
    invalid = values.notna() & ~looks_json
    return receipts, invalid


def unify_raw_reports(
    reports: Sequence[tuple[str, pd.DataFrame | Iterable[pd.DataFrame]]],
    *,
    timezone: str,
    app_ids: dict[str, str] | None = None,
) -> UnifiedRawData:
    """Unify archived raw reports (snake_case text frames) into the typed ``raw_data`` table.

    ``reports`` holds ``(source_report, frames)`` pairs, where ``frames`` is one DataFrame or an
    iterable of DataFrames (e.g. the IO manager's ``PartitionBatches``): each is normalized on its
    own, so a million-row day needs memory for its typed result and one block, not for the raw
    text of the whole day. ``app_ids`` maps platform -> app id for rows whose App ID is empty.
    """
    schema = raw_data_schema()
    typed_parts: list[pd.DataFrame] = []
    problem_parts: list[pd.DataFrame] = []
    for source_report, frames in reports:
        for frame in [frames] if isinstance(frames, pd.DataFrame) else frames:
            typed, problems = _unify_frame(source_report, frame, timezone, app_ids)
            typed_parts.append(typed)
            if len(problems):
                problem_parts.append(problems)
    if not typed_parts:
        empty = pd.DataFrame({c: pd.Series(dtype="str") for c in schema.columns})
        typed_parts.append(_typed(empty, timezone)[0][list(schema.columns)])
    frame = typed_parts[0] if len(typed_parts) == 1 else pd.concat(typed_parts, ignore_index=True)
    return UnifiedRawData(frame, _problem_frame(problem_parts))


def _unify_frame(
    source_report: str, frame: pd.DataFrame, timezone: str, app_ids: dict[str, str] | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    schema = raw_data_schema()
    text_sources = [c for c in schema.columns if c not in ("report_date", "source_report")]
    raw = pd.DataFrame(index=frame.index)
    raw["report_date"] = frame["report_date"].astype("str")
    raw["source_report"] = source_report
    for column in text_sources + ["idfa"]:
        raw[column] = frame[column].astype("str") if column in frame.columns else pd.Series(
            pd.NA, index=frame.index, dtype="str"
        )
    raw["platform"] = _blank_to_na(raw["platform"]).str.strip().str.lower()
    if app_ids:
        fallback = raw["platform"].map(app_ids)
        raw["app_id"] = _blank_to_na(raw["app_id"]).fillna(fallback)
    # iOS devices report their advertising id in the IDFA column; Android's GAID arrives in
    # Advertising ID. One column serves both platforms downstream.
    raw["advertising_id"] = _blank_to_na(raw["advertising_id"]).fillna(_blank_to_na(raw["idfa"]))
    raw = raw.drop(columns=["idfa"])
    typed, problems = _typed(raw, timezone)
    return typed[list(schema.columns)], problems


def _problem_frame(records: list[pd.DataFrame]) -> pd.DataFrame:
    columns = ["report_date", "source_report", "appsflyer_id", "column", "value", "problem"]
    if not records:
        return pd.DataFrame({c: pd.Series(dtype="str") for c in columns})
    return pd.concat(records, ignore_index=True)[columns]


def _typed(raw: pd.DataFrame, timezone: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = raw.copy()
    records: list[pd.DataFrame] = []

    def record(column: str, invalid: pd.Series, problem: str) -> None:
        if invalid.any():
            rows = raw.loc[invalid, ["report_date", "source_report", "appsflyer_id", column]]
            records.append(
                rows.rename(columns={column: "value"}).assign(column=column, problem=problem)
            )

    for column in _TIME_COLUMNS:
        out[column], invalid = _parse_times(raw[column], timezone)
        record(column, invalid, f"not a timestamp in {TIMESTAMP_FORMAT} form")
    for column in _FLAG_COLUMNS:
        out[column], invalid = _parse_flags(raw[column])
        record(column, invalid, "not a boolean (true/false, True/False, 1/0)")
    for column in _MONEY_COLUMNS:
        out[column], invalid = _parse_money(raw[column])
        record(column, invalid, "not a number")
    out["customer_user_id"], invalid = _parse_customer_user_id(raw["customer_user_id"])
    record("customer_user_id", invalid, "not a whole number (the raw value is kept in the archive)")
    out["event_value"], invalid = _extract_receipts(raw["event_name"], raw["event_value"])
    record("event_value", invalid, "purchase Event Value is not JSON")
    for column in out.columns:
        if column not in _TIME_COLUMNS + _FLAG_COLUMNS + _MONEY_COLUMNS + ("customer_user_id",):
            out[column] = _blank_to_na(out[column])
    return out, _problem_frame(records)
