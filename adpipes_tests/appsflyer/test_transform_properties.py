"""Property tests of the rules that read arbitrary vendor input into ``raw_data``: header names,
boolean spellings, timestamps placed in the app timezone (across day boundaries and DST changes),
revenue number formats and receipt ids from Event Value.

Each property compares what adpipes does with a small oracle written here from the documents, not
from the code under test:
- headers: snake_case of letters and digits of any script (docs/assets.md, the names module's
  contract), a clash numbered ``_2``, ``_3`` in header order;
- booleans: the original scripts met ``True``/``False`` and ``1``/``0`` (vendor-docs,
  appsflyer-pull-api-original-scripts); the rule's own text adds ``yes``/``no``; ``t``/``f`` are
  PostgreSQL's text form of a boolean. Case and surrounding spaces do not matter; anything else is
  not a boolean;
- timestamps: AppsFlyer writes ``yyyy-mm-dd hh:mm:ss`` without an offset, in the requested
  (app) timezone; Python's ``zoneinfo`` says which instant a wall time is, or that it is ambiguous
  (stored as null) or skipped by a DST change (moved to the first instant after the gap);
- revenue: the S2S document: "not formatted in any way; may contain a decimal point; no currency
  symbol or code and no ``,`` separator; may start with ``-``";
- receipts: the receipt id is ``af_receipt_id`` of the Event Value JSON object (any key case),
  kept as text exactly as sent, whatever the event is called (``purchase``, ``*_purchase``, ...).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import string
import unicodedata
from decimal import Decimal
from functools import cache
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from adpipes.appsflyer.raw_data_api import RAW_REPORTS
from adpipes.appsflyer.schemas import RAW_REPORT_COLUMNS, raw_data_schema, raw_values_schema
from adpipes.appsflyer.transform import snake_case_columns, unify_raw_reports
from adpipes.lib.quality import find_failures

# Deterministic (derandomize), no per-example deadline. scripts/mutation sets PROPERTY_TEST_EXAMPLES:
# fewer examples and no shrinking (a mutant is killed by the first failing example).
PROPERTIES = settings(max_examples=int(os.environ.get("PROPERTY_TEST_EXAMPLES", 30)), deadline=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate] if "PROPERTY_TEST_EXAMPLES" in os.environ else list(Phase))
UTC = dt.timezone.utc
DAY = "2026-11-20"


# -- building a delivered block ----------------------------------------------------------------

def _base_row(index: int) -> dict[str, str]:
    # A valid in-app event row; each property overwrites the column it is about.
    return {"Event Time": f"{DAY} 10:00:00", "Install Time": "2026-11-19 09:00:00", "AppsFlyer ID": f"af-{index}",
            "Platform": "ios", "Event Name": "af_purchase", "Media Source": "googleadwords_int"}


def _delivered(rows: list[dict[str, str]], report_date: str = DAY) -> pd.DataFrame:
    """A raw report block as the archive hands it to raw_data: snake_case text columns (empty
    cells null) and the partition's report_date. Column names written out by hand: Media Source
    -> media_source, ..., the documented snake_case of AppsFlyer's headers."""
    columns = {re.sub(r"[^0-9a-z]+", "_", h.lower()).strip("_"): [r.get(h, "") for r in rows] for h in RAW_REPORT_COLUMNS}
    frame = pd.DataFrame(columns, dtype="str").replace("", None)
    frame.insert(0, "report_date", report_date)
    return frame


def _unify(rows: list[dict[str, str]], timezone: str = "Asia/Seoul", report_date: str = DAY) -> pd.DataFrame:
    return unify_raw_reports([(RAW_REPORTS["in_app_events_report"], _delivered(rows, report_date))],
                             timezone=timezone, app_ids={"ios": "id1"})


def _flagged_rows(rows: list[dict[str, str]], *columns: str, check: str = "parseable_values") -> list[set[int]] | set[int]:
    """The rows the raw_values rules flag under ``check``, per column (one set for one column)."""
    failures = find_failures(raw_values_schema(), _delivered(rows))
    found = [set(failures[(failures["column_name"] == c) & (failures["check_name"] == check)]["row"].astype(int))
             for c in columns]
    return found[0] if len(columns) == 1 else found


# -- header normalization ------------------------------------------------------------------------

def oracle_snake_case(header: str) -> str:
    """Lower case, every run of characters that are not letters or digits (of any script) one
    ``_``, none at either end; ``c_`` before a name that starts with a digit."""
    text = unicodedata.normalize("NFKC", header).strip().lower()
    parts, word = [], ""
    for ch in text:
        if ch.isalnum():
            word += ch
        elif word:
            parts.append(word)
            word = ""
    if word:
        parts.append(word)
    name = "_".join(parts)
    return f"c_{name}" if name[:1].isdigit() else name


def oracle_column_names(headers: list[str]) -> list[str]:
    taken: list[str] = []
    for header in headers:
        base = oracle_snake_case(header)
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.append(name)
    return taken


# Headers like a vendor's: words of letters (Latin, Hangul, accented) and digits with spaces,
# slashes, parentheses and dashes between them; short enough to need no shortening.
_word = st.text(st.sampled_from(list(string.ascii_letters + string.digits + "éüß구매금액가")), min_size=1, max_size=6)
_separator = st.sampled_from([" ", "  ", "/", " (", ") ", "-", "_", ".", " - ", ": ", "\u00a0"])
header = st.builds(
    lambda words, seps, lead, trail: lead + "".join(w + s for w, s in zip(words, seps + [""])) + trail,
    st.lists(_word, min_size=1, max_size=4), st.lists(_separator, min_size=3, max_size=3),
    st.sampled_from(["", " ", "("]), st.sampled_from(["", " ", ")", "%"]),
).filter(lambda h: oracle_snake_case(h) not in ("tableoid", "xmin", "cmin", "xmax", "cmax", "ctid")
          and len(oracle_snake_case(h).encode()) <= 55)  # no shortening: test_names_properties.py has that


@PROPERTIES
@given(st.lists(st.one_of(header, st.sampled_from(RAW_REPORT_COLUMNS)), min_size=1, max_size=8))
def test_headers_become_their_snake_case_names_numbered_on_a_clash(headers):
    names = snake_case_columns(headers)
    assert names == oracle_column_names(headers)
    assert len(set(names)) == len(names)
    assert snake_case_columns(headers) == names  # the same on every run


@PROPERTIES
@given(header, st.integers(2, 4))
def test_repeated_headers_are_numbered_in_header_order(one, times):
    names = snake_case_columns([one] * times)
    base = oracle_snake_case(one)
    assert names == [base] + [f"{base}_{n}" for n in range(2, times + 1)]


# -- boolean spellings ---------------------------------------------------------------------------

TRUE_SPELLINGS = ("true", "1", "yes", "t")
FALSE_SPELLINGS = ("false", "0", "no", "f")


def oracle_flag(value: str | None) -> bool | None:
    key = (value or "").strip().lower()
    return True if key in TRUE_SPELLINGS else False if key in FALSE_SPELLINGS else None


def _random_case(word: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flip else c for c, flip in zip(word, flips + [False] * len(word)))


spelled_flag = st.builds(
    lambda word, flips, lead, trail: lead + _random_case(word, flips) + trail,
    st.sampled_from(TRUE_SPELLINGS + FALSE_SPELLINGS + ("ye", "tru", "on", "off", "2", "-1", "y", "n", "truee", "1.0")),
    st.lists(st.booleans(), max_size=5), st.sampled_from(["", " ", "  "]), st.sampled_from(["", " ", "\t"]),
)
# Not whitespace alone: a blank cell is empty, whatever the rule does with it.
flag_value = st.one_of(spelled_flag, st.text(max_size=6)).filter(lambda v: v == "" or v.strip() != "")


@PROPERTIES
@given(st.lists(flag_value, min_size=1, max_size=8))
def test_boolean_spellings_read_as_documented_and_anything_else_is_flagged(values):
    rows = [{**_base_row(i), "WIFI": v, "Is Primary Attribution": v} for i, v in enumerate(values)]
    frame = _unify(rows)
    for column in ("wifi", "is_primary_attribution"):
        got = [None if pd.isna(x) else bool(x) for x in frame[column]]
        assert got == [oracle_flag(v) for v in values], column
    flagged = _flagged_rows(rows, "wifi")
    assert flagged == {i for i, v in enumerate(values) if v != "" and oracle_flag(v) is None}


# -- timestamps in the app timezone ----------------------------------------------------------------

# Zones with DST changes at night and at midnight (Sao Paulo, Havana: a day starts at 01:00), half
# hour changes (Lord Howe), a skipped day (Apia, 2011-12-30) and no DST at all (Seoul, UTC).
ZONES = ("Asia/Seoul", "UTC", "America/New_York", "Europe/London", "America/Sao_Paulo", "America/Havana",
         "Australia/Lord_Howe", "Pacific/Apia", "Asia/Tehran", "Pacific/Chatham")


def oracle_instants(wall: dt.datetime, zone: ZoneInfo) -> set[dt.datetime]:
    """The UTC instants whose wall time in ``zone`` is ``wall``: one, two (clocks went back) or
    none (clocks went forward over it)."""
    found = set()
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall:
            found.add(instant)
    return found


def oracle_gap_end(wall: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The first instant after the DST gap that skipped ``wall`` (changes fall on whole minutes)."""
    later = wall.replace(second=0) + dt.timedelta(minutes=1)
    while not oracle_instants(later, zone):
        later += dt.timedelta(minutes=1)
    return min(oracle_instants(later, zone))


@cache
def _transitions(zone_name: str) -> list[dt.datetime]:
    """Wall times (in the zone) just before each UTC-offset change of 2000-2037."""
    zone = ZoneInfo(zone_name)
    out = []
    instant = dt.datetime(2000, 1, 1, tzinfo=UTC)
    offset = instant.astimezone(zone).utcoffset()
    while instant.year < 2038:
        step = instant + dt.timedelta(hours=6)
        if step.astimezone(zone).utcoffset() != offset:
            low, high = instant, step
            while high - low > dt.timedelta(minutes=1):
                middle = low + (high - low) / 2
                low, high = (middle, high) if middle.astimezone(zone).utcoffset() == offset else (low, middle)
            out.append(low.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0))
            offset = step.astimezone(zone).utcoffset()
        instant = step
    return out


@st.composite
def wall_times(draw, zone: str):
    """A wall time in ``zone``: around one of its DST changes, around midnight, or anywhere in
    2000-2037."""
    kind = draw(st.sampled_from(["change", "change", "midnight", "any"]))
    if kind == "change" and _transitions(zone):
        start = draw(st.sampled_from(_transitions(zone)))
        return start + dt.timedelta(seconds=draw(st.integers(-2 * 3600, 3 * 3600)))
    if kind != "any":
        day = draw(st.dates(dt.date(2000, 1, 1), dt.date(2037, 12, 30)))
        return dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=draw(st.integers(-3600, 3600)))
    return draw(st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2037, 12, 31))).replace(microsecond=0)


# One zone per block: the app timezone is one per run.
zone_and_walls = st.sampled_from(ZONES).flatmap(
    lambda zone: st.tuples(st.just(zone), st.lists(wall_times(zone), min_size=1, max_size=12)))


@PROPERTIES
@given(zone_and_walls)
def test_wall_times_are_placed_in_the_app_timezone(case):
    zone_name, walls = case
    zone = ZoneInfo(zone_name)
    rows = [{**_base_row(i), "Event Time": w.strftime("%Y-%m-%d %H:%M:%S"),
             "Install Time": w.strftime("%Y-%m-%d %H:%M:%S"), "Attributed Touch Time": ""} for i, w in enumerate(walls)]
    frame = _unify(rows, timezone=zone_name)
    for wall, got in zip(walls, frame["event_time"]):
        instants = oracle_instants(wall, zone)
        if len(instants) == 2:
            # Clocks went back over it: which of the two cannot be told, so null (quarantined).
            assert pd.isna(got), (wall, zone_name, got)
        elif instants:
            assert got.to_pydatetime() == instants.pop(), (wall, zone_name)
            # The day is the wall time's own day in the app timezone, whatever day it is in UTC.
            assert got.tz_convert(zone_name).strftime("%Y-%m-%d %H:%M:%S") == wall.strftime("%Y-%m-%d %H:%M:%S")
        else:
            # Clocks went forward over it (AppsFlyer never writes such a time for a real instant):
            # moved forward past the gap, never back, never null. Not pinned to the gap's end:
            # pandas moves a wall time in Lord Howe's 30-minute gap (02:00-02:30) to 03:00.
            local = got.tz_convert(zone_name).tz_localize(None).to_pydatetime()
            assert got.to_pydatetime() >= oracle_gap_end(wall, zone) and wall < local <= wall + dt.timedelta(hours=1), (
                wall, zone_name, got)
    assert not _flagged_rows(rows, "event_time")


@PROPERTIES
@given(zone_and_walls, st.data())
def test_times_in_another_form_are_not_read_and_are_flagged(case, data):
    forms = [
        lambda w: w.isoformat(),  # 2026-11-20T10:00:00
        lambda w: w.strftime("%Y-%m-%d %H:%M:%S") + "+09:00",
        lambda w: w.strftime("%Y-%m-%d %H:%M"),
        lambda w: w.strftime("%Y-%m-%d"),
        lambda w: w.strftime("%d/%m/%Y %H:%M:%S"),
        lambda w: w.strftime("%Y/%m/%d %H:%M:%S"),
        lambda w: str(int(w.replace(tzinfo=UTC).timestamp())),
    ]
    values = [data.draw(st.sampled_from(forms))(wall) for wall in case[1]]
    rows = [{**_base_row(i), "Event Time": v} for i, v in enumerate(values)]
    assert _unify(rows)["event_time"].isna().all()
    assert _flagged_rows(rows, "event_time") == set(range(len(rows)))


@st.composite
def impossible_times(draw):
    """A timestamp in the documented form whose date or time does not exist on any calendar."""
    year = draw(st.integers(2000, 2037))
    month, day = draw(st.sampled_from([(2, 30), (2, 31), (4, 31), (6, 31), (9, 31), (11, 31), (13, 1), (0, 10), (5, 0)]))
    clock = draw(st.sampled_from(["10:00:00", "23:59:59", "00:00:00"]))
    if draw(st.booleans()):
        month, day = draw(st.integers(1, 12)), draw(st.integers(1, 28))
        clock = draw(st.sampled_from(["24:00:00", "23:60:00", "23:59:60", "25:10:00"]))
    return f"{year:04d}-{month:02d}-{day:02d} {clock}"


@settings(PROPERTIES, max_examples=10)
@given(st.lists(impossible_times(), min_size=1, max_size=4))
def test_impossible_dates_and_times_are_not_read_and_are_flagged(values):
    rows = [{**_base_row(i), "Event Time": v} for i, v in enumerate(values)]
    assert _unify(rows)["event_time"].isna().all()
    assert _flagged_rows(rows, "event_time") == set(range(len(rows)))


# -- revenue number formats ----------------------------------------------------------------------

MONEY = ("event_revenue", "event_revenue_usd")
documented_number = st.builds(
    lambda sign, whole, decimals: f"{sign}{whole}{'.' + decimals if decimals else ''}",
    st.sampled_from(["", "-"]), st.integers(0, 10**12).map(str),
    st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=4)),
)


def _with_thousands(whole: int, decimals: str, sign: str) -> str:
    return f"{sign}{whole:,}{decimals}"


undocumented_number = st.one_of(
    # A thousands separator: 1,234.56 (whole part of 4 digits or more, so there is one).
    st.builds(_with_thousands, st.integers(1000, 10**12), st.sampled_from(["", ".5", ".56", ".456"]),
              st.sampled_from(["", "-"])),
    # A currency symbol or code before or after.
    st.builds(lambda sym, n: sym + n, st.sampled_from(["$", "₩", "€", "USD ", "KRW"]), documented_number),
    st.builds(lambda n, sym: n + sym, documented_number, st.sampled_from([" USD", "$", "원", " KRW"])),
    # A decimal comma.
    st.builds(lambda whole, dec: f"{whole},{dec}", st.integers(0, 999), st.sampled_from(["5", "99"])),
)


@PROPERTIES
@given(st.lists(st.one_of(documented_number, undocumented_number), min_size=1, max_size=8))
def test_revenue_reads_documented_numbers_and_flags_formatted_ones(values):
    rows = [{**_base_row(i), "Event Revenue": v, "Event Revenue USD": v} for i, v in enumerate(values)]
    frame = _unify(rows)
    valid = [re.fullmatch(r"-?\d+(\.\d+)?", v) is not None for v in values]
    flagged = dict(zip(MONEY, _flagged_rows(rows, *MONEY)))
    for column in MONEY:
        for value, ok, got in zip(values, valid, frame[column]):
            if ok:
                assert float(got) == pytest.approx(float(Decimal(value)), rel=1e-12, abs=0), (column, value)
            else:
                # NULL, not a float NaN: PostgreSQL's numeric has a NaN value of its own.
                assert got is pd.NA, (column, value, got)
        assert flagged[column] == {i for i, ok in enumerate(valid) if not ok}


# -- receipt ids from Event Value ----------------------------------------------------------------

RECEIPT_KEY = "af_receipt_id"
_key_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12).filter(
    lambda k: k.lower() != RECEIPT_KEY)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=10),
                    # Looks like a receipt key inside another value: not one.
                    st.just('"af_receipt_id": "decoy"'), st.just("{\"af_receipt_id\":1}"))
_other_value = st.one_of(_scalar, st.lists(_scalar, max_size=3),
                         st.dictionaries(_key_text, _scalar, max_size=3))
receipt_value = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30),  # GPA.3345-..., any text
    st.integers(0, 10**25),  # iOS transaction ids, sent as bare numbers by some SDKs
    st.from_regex(r"GPA\.\d{4}-\d{4}-\d{4}-\d{5}", fullmatch=True),
)


@st.composite
def event_values(draw):
    """(Event Value text, the receipt id it carries or None)."""
    kind = draw(st.sampled_from(["object", "object", "object", "not an object", "not json", "empty"]))
    if kind == "empty":
        return "", None
    if kind == "not json":
        text = draw(st.text(max_size=20).filter(lambda t: not _is_json(t)))
        return text, None
    if kind == "not an object":
        return json.dumps(draw(st.one_of(_scalar, st.lists(_scalar, max_size=3)))), None
    payload = draw(st.dictionaries(_key_text, _other_value, max_size=4))
    receipt = None
    if draw(st.booleans()):
        key = _random_case(RECEIPT_KEY, draw(st.lists(st.booleans(), min_size=13, max_size=13)))
        # A receipt id is a string or a number; true, null, a list or an object is none.
        value = draw(st.one_of(receipt_value, receipt_value, st.sampled_from([True, False, None, [], {}]),
                               st.lists(st.integers(0, 9), min_size=1, max_size=2), st.dictionaries(_key_text, _scalar, max_size=2)))
        items = list(payload.items())
        items.insert(draw(st.integers(0, len(items))), (key, value))
        payload = dict(items)
        receipt = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "" else None
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]))
    return json.dumps(payload, ensure_ascii=draw(st.booleans()), separators=separators), receipt


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


event_name = st.one_of(st.sampled_from(["purchase", "af_purchase", "in_app_purchase", "subscription_purchase",
                                        "AF_PURCHASE", "af_login", "install", "renewal"]), st.text(min_size=1, max_size=10))


@PROPERTIES
@given(st.lists(st.tuples(event_name, event_values()), min_size=1, max_size=8))
def test_the_receipt_id_is_taken_from_event_value_whatever_the_event(events):
    rows = [{**_base_row(i), "Event Name": name, "Event Value": value} for i, (name, (value, _)) in enumerate(events)]
    got = [None if pd.isna(x) else x for x in _unify(rows)["event_value"]]
    assert got == [receipt for _, (_, receipt) in events]
    # A block put together from pieces (as pandas concatenates batches) holds its text in several
    # Arrow chunks: the same receipts.
    delivered = _delivered(rows)
    pieces = pd.concat([delivered.iloc[[i]] for i in range(len(rows))], ignore_index=True)
    typed = unify_raw_reports([(RAW_REPORTS["in_app_events_report"], pieces)], timezone="Asia/Seoul", app_ids={"ios": "id1"})
    assert [None if pd.isna(x) else x for x in typed["event_value"]] == [receipt for _, (_, receipt) in events]


# -- blocks --------------------------------------------------------------------------------------

@PROPERTIES
@given(st.lists(st.tuples(flag_value, documented_number), min_size=1, max_size=10), st.lists(st.integers(1, 4), min_size=1),
       st.one_of(st.none(), st.sets(st.integers(0, 9))))
@example(rows_values=[("true", "1"), ("0", "-2.5"), ("", "3"), ("no", "4")], sizes=[2], kept=None)  # two blocks
def test_a_delivery_read_in_blocks_gives_the_rows_it_gives_whole(rows_values, sizes, kept):
    """The asset reads a day in blocks (the IO manager's batches, each with the index it had in the
    day); the result is the same rows in the same order, whatever the block sizes. A vendor column
    named like pandas' own index columns ("Index", "level_0") is a column like any other."""
    rows = [{**_base_row(i), "WIFI": flag, "Event Revenue": revenue} for i, (flag, revenue) in enumerate(rows_values)]
    whole = _delivered(rows).assign(index="vendor index", level_0="vendor level")
    blocks, start = [], 0
    for size in sizes * len(rows):
        if start >= len(whole):
            break
        blocks.append(whole.iloc[start:start + size])  # keeps its index: 0..2, 3..5, ...
        start += size
    report = RAW_REPORTS["in_app_events_report"]
    seen: list[int] = []

    def row_filter(source, delivered, typed):
        # As the raw_data asset validates: the report, each block as delivered (text) and typed,
        # both 0-based, row for row.
        assert source is report
        assert delivered.index.equals(pd.RangeIndex(len(delivered))) and typed.index.equals(delivered.index)
        assert [None if pd.isna(x) else x for x in delivered["wifi"]] == [
            rows[int(i.split("-")[1])]["WIFI"] or None for i in delivered["appsflyer_id"]]
        assert typed["appsflyer_id"].tolist() == delivered["appsflyer_id"].tolist()
        assert str(typed["event_time"].dtype).endswith("Asia/Seoul]")
        seen.extend(int(i.split("-")[1]) for i in delivered["appsflyer_id"])
        return typed["appsflyer_id"].map(lambda i: int(i.split("-")[1]) in kept)

    typed = unify_raw_reports([(report, blocks)], timezone="Asia/Seoul", app_ids={"ios": "id1"},
                              row_filter=None if kept is None else row_filter)
    expected = [i for i in range(len(rows)) if kept is None or i in kept]
    assert seen == ([] if kept is None else list(range(len(rows))))
    assert list(typed.columns) == list(raw_data_schema().columns)
    assert typed.index.equals(pd.RangeIndex(len(expected)))
    assert typed["appsflyer_id"].tolist() == [f"af-{i}" for i in expected]
    # Rows archived without the app id they were requested for: the platform's only app.
    assert typed["app_id"].tolist() == ["id1"] * len(expected)
    assert [None if pd.isna(x) else bool(x) for x in typed["wifi"]] == [oracle_flag(rows_values[i][0]) for i in expected]
    assert typed["event_revenue"].astype(float).tolist() == pytest.approx(
        [float(Decimal(rows_values[i][1])) for i in expected])


text_cell = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "   ", "\t", " x ", "None", "null"]))


@PROPERTIES
@given(st.lists(st.tuples(text_cell, text_cell), min_size=1, max_size=8))
def test_text_values_are_kept_as_delivered_and_blank_cells_are_null(values):
    """docs/assets.md: empty cells are NULL; a cell of spaces only is empty too. Anything else is
    kept exactly, surrounding spaces and AppsFlyer's own spellings ("None") included."""
    rows = [{**_base_row(i), "Keywords": k, "Adset": c} for i, (k, c) in enumerate(values)]
    typed = _unify(rows)
    for column, position in (("keywords", 0), ("adset", 1)):
        expected = [None if v[position].strip() == "" else v[position] for v in values]
        assert [None if pd.isna(x) else x for x in typed[column]] == expected, column


def test_no_delivery_is_an_empty_raw_data_with_every_column_typed():
    empty = unify_raw_reports([], timezone="Asia/Seoul")
    assert empty.empty and list(empty.columns) == list(raw_data_schema().columns)
    # The types a delivery with rows gets.
    assert empty.dtypes.astype(str).to_dict() == _unify([_base_row(0)]).dtypes.astype(str).to_dict()
    # Typed as the table's schema says (a text column as text, event_time in the app timezone):
    # the schema's dtype checks pass on it.
    assert find_failures(raw_data_schema(), empty).empty
    assert str(empty["event_time"].dtype).endswith("Asia/Seoul]")
