"""row_volume's window and band as docs/checks.md and docs/configuration.md describe them.

docs/checks.md: `row_volume` (WARN) fails when "a partition's row count is below half or above
twice the median of the 7 partitions before it (skipped until 3 of them exist)"; "`row_volume`
needs 3 of the 7 previous days loaded; until then it records **no** result for the day"; "Its
numbers are `rows`, `median`, `band_low` and `band_high`"; each day's result has "its own
description (it starts with the day)". docs/configuration.md: the band is median/factor to
median x factor, `ADPIPES_VOLUME_BAND_FACTOR` default 2.

The earlier days' counts are stored in the archive's quality.partition_rows (real PostgreSQL), as
a run that wrote them leaves them; the day or days being judged are a report of this run.
"""

import datetime as dt

import dagster as dg
import pytest

from adpipes.lib.quality import ROW_VOLUME, QualityReport, QualityStore
from adpipes.lib.quality.checks import _volume_results

ASSET = dg.AssetKey(["volume_test", "rows"])
DAY = dt.date(2026, 8, 20)
WARN = dg.AssetCheckSeverity.WARN


def day(offset: int) -> str:
    """The day ``offset`` days from DAY (negative: before it)."""
    return (DAY + dt.timedelta(days=offset)).isoformat()


@pytest.fixture
def store(storage_resources) -> QualityStore:
    # The documented defaults: band factor 2, 3 of the 7 previous partitions needed.
    return QualityStore(archive=storage_resources["archive_db"])


def store_history(store: QualityStore, counts: dict[str, int]) -> None:
    """Record ``counts`` (day -> rows) as an earlier run that wrote those days records them."""
    report = QualityReport([ROW_VOLUME], sorted(counts))
    report.add_row_counts(counts)
    store.record("earlier-run", ASSET, report)


def judge(store: QualityStore, counts: dict[str, int]):
    """row_volume's results and skip reasons for a run of the days in ``counts``."""
    report = QualityReport([ROW_VOLUME], list(counts))
    report.add_row_counts(counts)
    return _volume_results(ASSET, report, store)


def test_three_of_the_seven_previous_days_including_yesterday_are_enough(store):
    # Exactly the 3 days before: the minimum history, the day before among it.
    store_history(store, {day(-3): 100, day(-2): 100, day(-1): 100})
    results, skipped = judge(store, {day(0): 100})
    result = results[day(0)]
    assert result is not None and day(0) not in skipped
    assert result.passed and result.severity == WARN
    # Median 100, band from half to twice it: the numbers the UI plots.
    assert result.metadata["rows"].value == 100
    assert result.metadata["median"].value == 100.0
    assert result.metadata["band_low"].value == 50.0
    assert result.metadata["band_high"].value == 200.0
    assert result.description is not None and result.description.startswith(day(0))


def test_the_band_includes_half_and_twice_the_median(store):
    store_history(store, {day(-3): 100, day(-2): 100, day(-1): 100})
    # "below half or above twice" fails: exactly half and exactly twice pass.
    for rows, passed in ((50, True), (200, True), (49, False), (201, False)):
        results, _ = judge(store, {day(0): rows})
        result = results[day(0)]
        assert result is not None and result.passed is passed, rows
        assert result.severity == WARN  # row_volume never blocks
        assert result.description.startswith(day(0))
        assert (result.metadata["band_low"].value, result.metadata["band_high"].value) == (50.0, 200.0)


def test_the_seventh_day_before_counts(store):
    # The far end of the window: 7, 6 and 5 days before are 3 of the 7 previous partitions.
    store_history(store, {day(-7): 100, day(-6): 100, day(-5): 100})
    results, skipped = judge(store, {day(0): 100})
    assert results[day(0)] is not None and day(0) not in skipped
    assert results[day(0)].passed and results[day(0)].metadata["median"].value == 100.0


def test_the_eighth_day_before_does_not_count(store):
    # In a run of two days, the second day's window is the 7 days before it: the day 8 days
    # before it (day -7) is out, so it has only day -6 and the run's first day: 2 of 3 needed.
    store_history(store, {day(-7): 100, day(-6): 100})
    results, skipped = judge(store, {day(0): 100, day(1): 100})
    assert results == {day(0): None, day(1): None}
    assert "2 of the 7" in skipped[day(0)] and "2 of the 7" in skipped[day(1)]


def test_a_range_runs_earlier_days_count_for_its_later_days(store):
    # 2 days loaded before the range: its first day is skipped; its second day has those 2 and
    # the range's first day (loaded in this run, before it): judged.
    store_history(store, {day(-2): 100, day(-1): 100})
    results, skipped = judge(store, {day(0): 100, day(1): 400})
    assert results[day(0)] is None and "2 of the 7" in skipped[day(0)]
    second = results[day(1)]
    assert second is not None and day(1) not in skipped
    # Median of 100, 100, 100: 400 is above twice it.
    assert second.metadata["median"].value == 100.0
    assert not second.passed and second.severity == WARN and second.description.startswith(day(1))


def test_a_day_is_not_in_its_own_window_when_it_is_run_again(store):
    # The first day of the range was loaded before with 400 rows; its window is the 7 days
    # before it (100, 100, 400): median 100, whatever the day itself held.
    store_history(store, {day(-3): 100, day(-2): 100, day(-1): 400, day(0): 400})
    results, _ = judge(store, {day(0): 100, day(1): 100})
    assert results[day(0)].metadata["median"].value == 100.0
    assert results[day(0)].passed
    # The second day compares with this run's first day (100), not the 400 stored before.
    assert results[day(1)].metadata["median"].value == 100.0
