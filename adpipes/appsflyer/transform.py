"""From the archived AppsFlyer raw reports to the unified ``raw_data`` table, and the header names
the archive uses for them (the reports themselves are archived as delivered, unparsed).

Everything here is vectorized: a 1M-row in-app-events day must normalize in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from adpipes.appsflyer.raw_data_api import ORGANIC, RawReport
from adpipes.appsflyer.schemas import (
    ORGANIC_MEDIA_SOURCE,
    REQUESTED_APP_ID,
    CUSTOMER_USER_ID_PATTERN,
    FALSE_SPELLINGS,
    RAW_FLAG_COLUMNS,
    RAW_MONEY_COLUMNS,
    RAW_TIME_COLUMNS,
    TRUE_SPELLINGS,
    parse_timestamps,
    raw_data_schema,
    raw_values_schema,
)
from adpipes.lib.storage.names import column_names
from adpipes.lib.storage.tables import PARTITION_COLUMN

# The receipt id is kept for every event whose Event Value carries it, whatever the event is
# called: the original scripts kept it for any event with `af_receipt_id` in its value (apps send
# purchases as af_purchase, purchase, in_app_purchase, subscription renewals, ...). The key is
# matched in any case, so a receipt sent as AF_RECEIPT_ID by a custom integration is not lost.
RECEIPT_KEY = "af_receipt_id"
_RECEIPT_VALUE = (
    rf'(?i)"{RECEIPT_KEY}"\s*:\s*(?:"(?P<text>(?:[^"\\]|\\.)*)"'
    r"|(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?))"
)


def snake_case_columns(headers: Sequence[str]) -> list[str]:
    """snake_case every header (as :func:`~adpipes.appsflyer.schemas.snake_case`); a clash (two
    headers mapping to one name) gets a numbered suffix, ``_2``, ``_3``, in header order. Names fit
    PostgreSQL's 63 bytes; a header that cannot name a column raises ``UnusableHeader``."""
    return column_names(headers)


def _blank_to_na(series: pd.Series) -> pd.Series:
    """Text with every empty or whitespace-only value null. In Arrow: pandas' ``str.strip() ==
    ""`` then ``mask`` cost twice as much, and this runs on every column of every block."""
    text = pa.array(series.astype("str").array)
    blank = pc.equal(pc.utf8_trim_whitespace(text), "")
    return pd.Series(pc.if_else(blank, pa.scalar(None, text.type), text), index=series.index, dtype="str")


# Values that do not convert become null here; the raw_data asset has already quarantined their
# rows by then (the rules in appsflyer/schemas.py say what converts), so nulls only mean "empty".


def _parse_flags(series: pd.Series) -> pd.Series:
    lowered = _blank_to_na(series).str.strip().str.lower()
    result = pd.Series(pd.NA, index=series.index, dtype="boolean")
    result[lowered.isin(TRUE_SPELLINGS)] = True
    result[lowered.isin(FALSE_SPELLINGS)] = False
    return result


def _parse_times(series: pd.Series, timezone: str) -> pd.Series:
    parsed = parse_timestamps(series)
    # A wall time that does not exist or repeats on a DST change cannot be placed on the
    # timeline from AppsFlyer's offset-less value; shift/NaT rather than guess silently.
    return parsed.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="shift_forward")


def _parse_money(series: pd.Series) -> pd.Series:
    return pd.to_numeric(_blank_to_na(series).str.strip(), errors="coerce").astype("Float64")


def _parse_customer_user_id(series: pd.Series) -> pd.Series:
    raw = _blank_to_na(series).str.strip()
    whole = raw.str.fullmatch(CUSTOMER_USER_ID_PATTERN).fillna(False).astype(bool)
    # IDs that went through a spreadsheet or float parser arrive as "1000000186.0".
    return raw.where(whole).str.replace(r"\.0+$", "", regex=True).astype("Int64")


def _receipt_id(value: str) -> str | None:
    try:
        payload = json.loads(value, parse_int=str, parse_float=str)
    except (TypeError, ValueError):
        return None
    if not isinstance(payload, dict):
        return None
    receipt = next((v for k, v in payload.items() if k.lower() == RECEIPT_KEY), None)
    return None if receipt in (None, "") else str(receipt)


def _extract_receipts(event_value: pd.Series) -> pd.Series:
    values = _blank_to_na(event_value)
    # A regex over the JSON text instead of json.loads per row: a 1M-row day has ~250K purchases
    # and json.loads made normalization several times slower. Receipt ids are JSON strings or
    # (iOS, from some SDKs) bare numbers whose digits must be kept exactly, never as floats.
    found = pc.extract_regex(pa.array(values, type=pa.string()), _RECEIPT_VALUE)
    if isinstance(found, pa.ChunkedArray):  # large arrow-backed columns come in chunks
        found = found.combine_chunks()
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
    # An event without a receipt (most events; sandbox or web purchases) or with a non-JSON
    # value has none.
    return receipts.mask(receipts == "")


RowFilter = Callable[[pd.DataFrame, pd.DataFrame], pd.Series]


def iter_unified_blocks(
    reports: Sequence[tuple[RawReport, pd.DataFrame | Iterable[pd.DataFrame]]],
    *,
    timezone: str,
    app_ids: dict[str, str] | None = None,
    row_filter: RowFilter | None = None,
) -> Iterator[pd.DataFrame]:
    """The archived raw reports (snake_case text frames) as typed ``raw_data`` rows, one block
    at a time.

    ``reports`` holds ``(report, frames)`` pairs, where ``frames`` is one DataFrame or an
    iterable of DataFrames (e.g. the IO manager's ``PartitionBatches``): each is normalized on its
    own and yielded, so a million-row day (or a month of them) needs memory for one block, not
    for the whole range. ``row_filter(report, delivered, typed)`` sees each block as delivered
    and typed (both with a 0-based RangeIndex) and returns the mask of rows to keep: the raw_data
    asset validates there. ``app_ids`` maps platform -> app id for rows archived before adpipes
    recorded the app id it requested (given only for a platform with one app).
    """
    for report, frames in reports:
        for frame in [frames] if isinstance(frames, pd.DataFrame) else frames:
            delivered = frame.reset_index(drop=True)
            typed = unify_raw_block(report, delivered, timezone, app_ids)
            if row_filter is not None:
                typed = typed[row_filter(report, delivered, typed).to_numpy()].reset_index(drop=True)
            yield typed


def unify_raw_reports(
    reports: Sequence[tuple[RawReport, pd.DataFrame | Iterable[pd.DataFrame]]],
    *,
    timezone: str,
    app_ids: dict[str, str] | None = None,
    row_filter: RowFilter | None = None,
) -> pd.DataFrame:
    """:func:`iter_unified_blocks` as one DataFrame (small inputs; the asset streams the blocks)."""
    typed_parts = list(iter_unified_blocks(reports, timezone=timezone, app_ids=app_ids, row_filter=row_filter))
    if not typed_parts:
        return empty_raw_data(timezone)
    if len(typed_parts) == 1:
        return typed_parts[0]
    return pd.concat(typed_parts, ignore_index=True)


def empty_raw_data(timezone: str) -> pd.DataFrame:
    """``raw_data`` without rows, every column typed."""
    columns = raw_data_schema().columns
    empty = pd.DataFrame({c: pd.Series(dtype="str") for c in columns})
    return _typed(empty, timezone)[list(columns)]


def raw_columns_read(attributions: Iterable[str | None]) -> list[str]:
    """The columns of an archived raw report that ``raw_data`` reads: those
    :func:`unify_raw_block` types and those :func:`raw_values_schema` checks for rows of these
    attributions. The others (user agents, URLs, device details) stay in the archive; a
    quarantined row is read again whole, since it is kept as delivered."""
    unified = [c for c in raw_data_schema().columns if c not in _ADPIPES_COLUMNS]
    checked = [c for a in attributions for c in raw_values_schema(a).columns]
    return list(dict.fromkeys([PARTITION_COLUMN, *unified, "idfa", REQUESTED_APP_ID, *checked]))


# raw_data's columns that adpipes fills in, not read from the raw report.
_ADPIPES_COLUMNS = ("report_date", "source_report", "attribution")


def unify_raw_block(
    report: RawReport, frame: pd.DataFrame, timezone: str, app_ids: dict[str, str] | None = None
) -> pd.DataFrame:
    """One block of a raw report (snake_case text columns) as typed ``raw_data`` rows, same index."""
    schema = raw_data_schema()
    text_sources = [c for c in schema.columns if c not in _ADPIPES_COLUMNS]
    raw = pd.DataFrame(index=frame.index)
    raw["report_date"] = frame["report_date"].astype("str")
    raw["source_report"] = report.name
    raw["attribution"] = report.attribution
    for column in text_sources + ["idfa", REQUESTED_APP_ID]:
        raw[column] = frame[column].astype("str") if column in frame.columns else pd.Series(
            pd.NA, index=frame.index, dtype="str"
        )
    raw["platform"] = _blank_to_na(raw["platform"]).str.strip().str.lower()
    # The app the report was requested for names the row's app; AppsFlyer's App ID column is the
    # fallback for rows archived before adpipes recorded it, then the platform's only app.
    app_id = _blank_to_na(raw[REQUESTED_APP_ID]).fillna(_blank_to_na(raw["app_id"]))
    if app_ids:
        app_id = app_id.fillna(raw["platform"].map(app_ids))
    raw["app_id"] = app_id
    raw = raw.drop(columns=[REQUESTED_APP_ID])
    # iOS devices report their advertising id in the IDFA column; Android's GAID arrives in
    # Advertising ID. One column serves both platforms downstream.
    raw["advertising_id"] = _blank_to_na(raw["advertising_id"]).fillna(_blank_to_na(raw["idfa"]))
    raw = raw.drop(columns=["idfa"])
    # Organic users' media source is "organic" in AppsFlyer's aggregate reports and cohorts: an
    # organic raw row that leaves Media Source empty gets that name, so raw_data's media_source is
    # never null and joins daily_report's organic rows.
    if report.attribution == ORGANIC:
        raw["media_source"] = _blank_to_na(raw["media_source"]).fillna(ORGANIC_MEDIA_SOURCE)
    return _typed(raw, timezone)[list(schema.columns)]


def _typed(raw: pd.DataFrame, timezone: str) -> pd.DataFrame:
    out = raw.copy()
    for column in RAW_TIME_COLUMNS:
        out[column] = _parse_times(raw[column], timezone)
    for column in RAW_FLAG_COLUMNS:
        out[column] = _parse_flags(raw[column])
    for column in RAW_MONEY_COLUMNS:
        out[column] = _parse_money(raw[column])
    out["customer_user_id"] = _parse_customer_user_id(raw["customer_user_id"])
    out["event_value"] = _extract_receipts(raw["event_value"])
    converted = RAW_TIME_COLUMNS + RAW_FLAG_COLUMNS + RAW_MONEY_COLUMNS + ("customer_user_id", "event_value")
    for column in out.columns:
        if column not in converted:
            out[column] = _blank_to_na(out[column])
    return out
