"""Property tests of ``split_by_day``: a raw-report answer covering several days of the app
timezone becomes one file per day, by Event Time, every row in exactly one file, unchanged.

The oracle, from the function's contract and AppsFlyer's format (Event Time is the app-timezone
wall time ``yyyy-mm-dd hh:mm:ss``, so its first ten characters are the row's local day): a row
goes to its Event Time's day when that is one of the window's days (in the app timezone, the
window's end excluded); an empty, unreadable or out-of-window Event Time goes to the window's
first day, where the archive keeps it and raw_data's checks quarantine it.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from adpipes.appsflyer.api import AppsFlyerApiError
from adpipes.appsflyer.raw_data_api import SpooledChunk, split_by_day

# Deterministic (derandomize), no per-example deadline. scripts/mutation sets PROPERTY_TEST_EXAMPLES:
# fewer examples and no shrinking (a mutant is killed by the first failing example).
PROPERTIES = settings(max_examples=int(os.environ.get("PROPERTY_TEST_EXAMPLES", 60)), deadline=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate] if "PROPERTY_TEST_EXAMPLES" in os.environ else list(Phase))
UTC = dt.timezone.utc
ZONES = ("Asia/Seoul", "UTC", "America/New_York", "America/Sao_Paulo", "Australia/Lord_Howe", "Pacific/Apia",
         "Pacific/Kiritimati", "Pacific/Pago_Pago")
OTHER_HEADERS = ("AppsFlyer ID", "Event Value", "Customer User ID")
# Values CSV must quote: commas, quotes, line breaks; and any script.
cell = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00\r"), max_size=15)


def oracle_day(stamp: str, days: list[str]) -> str:
    found = re.fullmatch(r"(\d{4}-\d{2}-\d{2}) \d{2}:\d{2}:\d{2}", stamp)
    day = found.group(1) if found else None
    return day if day in days else days[0]


@st.composite
def windows(draw):
    """(zone, window start, window end): aware instants, from an hour to five days apart, starting
    at a local midnight or within a day (a truncated answer's window is split down to hours)."""
    zone = draw(st.sampled_from(ZONES))
    day = draw(st.dates(dt.date(2011, 12, 25), dt.date(2027, 12, 31)))
    start = dt.datetime.combine(day, dt.time(), tzinfo=ZoneInfo(zone)).astimezone(UTC)
    if draw(st.booleans()):
        start += dt.timedelta(hours=draw(st.integers(1, 23)))
    end = start + dt.timedelta(hours=draw(st.one_of(st.integers(1, 120), st.sampled_from([24, 48, 72]))))
    return zone, start, end


def _window_days(zone: str, start: dt.datetime, end: dt.datetime) -> list[str]:
    tz = ZoneInfo(zone)
    first, last = start.astimezone(tz).date(), (end - dt.timedelta(seconds=1)).astimezone(tz).date()
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


@st.composite
def event_time(draw, days: list[str]):
    kind = draw(st.sampled_from(["in window", "in window", "in window", "day before", "day after", "empty",
                                 "unreadable"]))
    clock = draw(st.times()).strftime("%H:%M:%S")
    if kind == "in window":
        return f"{draw(st.sampled_from(days))} {clock}"
    if kind in ("day before", "day after"):
        edge = dt.date.fromisoformat(days[0] if kind == "day before" else days[-1])
        return f"{edge + dt.timedelta(days=-1 if kind == 'day before' else 1)} {clock}"
    if kind == "empty":
        return ""
    return draw(st.text(st.sampled_from(list("abcXYZ:/ -")), max_size=12))


@st.composite
def answers(draw):
    zone, start, end = draw(windows())
    days = _window_days(zone, start, end)
    headers = list(OTHER_HEADERS)
    headers.insert(draw(st.integers(0, len(headers))), "Event Time")
    rows = []
    for _ in range(draw(st.integers(0, 25))):
        row = [draw(cell) for _ in OTHER_HEADERS]
        row.insert(headers.index("Event Time"), draw(event_time(days)))
        rows.append(row)
    return zone, (start, end), headers, rows, draw(st.sampled_from(["\n", "\r\n"]))


def _spool(directory: Path, headers: list[str], rows: list[list[str]], window, terminator: str) -> SpooledChunk:
    path = directory / "answer.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator=terminator)
        writer.writerow(headers)
        writer.writerows(rows)
    return SpooledChunk(path, tuple(headers), len(rows), window)


def _read(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


@PROPERTIES
@given(answers())
def test_every_row_lands_once_unchanged_in_the_file_of_its_day(answer):
    zone, window, headers, rows, terminator = answer
    days = _window_days(zone, *window)
    column = headers.index("Event Time")
    with tempfile.TemporaryDirectory() as directory:
        chunk = _spool(Path(directory), headers, rows, window, terminator)
        parts = split_by_day(chunk, zone)
        if len(days) == 1:
            # A window within one day is returned as it is.
            assert parts == [(days[0], chunk)] and _read(chunk.path) == [headers, *rows]
            return
        expected: dict[str, list[list[str]]] = {}
        for row in rows:
            expected.setdefault(oracle_day(row[column], days), []).append(row)
        assert [day for day, _ in parts] == sorted(expected)
        for day, part in parts:
            assert part.rows == len(expected[day]) and part.header == tuple(headers) and part.window == window
            # Header first, then the day's rows in the answer's order, each field as delivered.
            assert _read(part.path) == [headers, *expected[day]]
        assert not chunk.path.exists()
        assert sorted(p.name for p in Path(directory).iterdir()) == sorted(p.path.name for _, p in parts)


@PROPERTIES
@given(answers())
def test_an_answer_over_several_days_without_event_time_is_refused(answer):
    zone, window, headers, rows, terminator = answer
    column = headers.index("Event Time")
    headers = headers[:column] + ["Install Time"] + headers[column + 1:]
    with tempfile.TemporaryDirectory() as directory:
        chunk = _spool(Path(directory), headers, rows, window, terminator)
        if len(_window_days(zone, *window)) == 1:
            assert split_by_day(chunk, zone) == [(_window_days(zone, *window)[0], chunk)]
            return
        with pytest.raises(AppsFlyerApiError, match="no Event Time"):
            split_by_day(chunk, zone)
        assert chunk.path.exists()  # nothing was loaded or removed


@st.composite
def impossible_day_answers(draw):
    """Two-day windows over a month end, with an Event Time on a day the calendar does not have
    between them (2026-11-31 sorts between 2026-11-30 and 2026-12-01)."""
    zone = draw(st.sampled_from(ZONES))
    year = draw(st.integers(2012, 2027))
    month = draw(st.sampled_from([2, 4, 6, 9, 11]))
    last_day = (dt.date(year + (month == 12), month % 12 + 1, 1) - dt.timedelta(days=1)).day
    tz = ZoneInfo(zone)
    start = dt.datetime(year, month, last_day, tzinfo=tz).astimezone(UTC)
    end = start + dt.timedelta(days=2)
    stamp = f"{year:04d}-{month:02d}-{draw(st.integers(last_day + 1, 31)):02d} 10:00:00"
    return zone, (start, end), stamp


@settings(PROPERTIES, max_examples=10)
@given(impossible_day_answers())
def test_an_event_time_on_a_day_that_does_not_exist_goes_to_the_first_day(answer):
    zone, window, stamp = answer
    days = _window_days(zone, *window)
    with tempfile.TemporaryDirectory() as directory:
        chunk = _spool(Path(directory), ["Event Time", "AppsFlyer ID"], [[stamp, "a"], [f"{days[-1]} 01:00:00", "b"]],
                       window, "\n")
        parts = split_by_day(chunk, zone)
        assert [day for day, _ in parts] == days[:1] + days[-1:]
        assert _read(parts[0][1].path) == [["Event Time", "AppsFlyer ID"], [stamp, "a"]]


def test_an_event_time_must_start_with_a_day_and_a_separator():
    # AppsFlyer's Event Time is "yyyy-mm-dd hh:mm:ss" (ISO 8601's "T" also read): ten characters
    # of a day followed by anything else are not a day, and go to the window's first day.
    zone = "Asia/Seoul"
    start = dt.datetime(2026, 11, 20, tzinfo=ZoneInfo(zone)).astimezone(UTC)
    window = (start, start + dt.timedelta(days=3))
    rows = [["2026-11-21 10:00:00", "space"], ["2026-11-22T10:00:00", "t"], ["2026-11-21x10:00:00", "x"],
            ["2026-11-22", "bare day"], ["", "empty"], ["2026-11-23 00:00:00", "after the window"]]
    with tempfile.TemporaryDirectory() as directory:
        parts = dict(split_by_day(_spool(Path(directory), ["Event Time", "AppsFlyer ID"], rows, window, "\n"), zone))
        assert {day: [row[1] for row in _read(part.path)[1:]] for day, part in parts.items()} == {
            "2026-11-20": ["x", "bare day", "empty", "after the window"], "2026-11-21": ["space"], "2026-11-22": ["t"]}


def test_a_split_answer_keeps_empty_cells_null_and_quoted_empty_strings_empty():
    # COPY reads an unquoted empty CSV field as NULL and a quoted "" as an empty string: the day
    # files keep that difference as the answer had it (an answer within one day goes to COPY as
    # delivered).
    zone = "Asia/Seoul"
    start = dt.datetime(2026, 11, 20, tzinfo=ZoneInfo(zone)).astimezone(UTC)
    window = (start, start + dt.timedelta(days=2))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "answer.csv"
        path.write_bytes(b'Event Time,Media Source,Campaign\n2026-11-20 10:00:00,,""\n2026-11-21 10:00:00,"",x\n')
        parts = dict(split_by_day(SpooledChunk(path, ("Event Time", "Media Source", "Campaign"), 2, window), zone))
        assert parts["2026-11-20"].path.read_bytes().splitlines()[1].endswith(b',,""')
        assert parts["2026-11-21"].path.read_bytes().splitlines()[1].endswith(b',"","x"')
