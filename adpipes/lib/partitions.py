"""Daily partitions in the app timezone, shared by every source.

A partition is one calendar day in ``ADPIPES_TIMEZONE`` (the timezone set for the app in
AppsFlyer): AppsFlyer reports local times in that timezone, so the day boundaries of the API
windows and of ``report_date`` agree.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from adpipes.lib.settings import Settings


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=settings.start_date, timezone=settings.timezone)


def day_window(partition_key: str, timezone: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a daily partition as tz-aware datetimes (23 or 25 hours across DST)."""
    day = dt.date.fromisoformat(partition_key)
    tz = ZoneInfo(timezone)
    start = dt.datetime.combine(day, dt.time(), tzinfo=tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return start, end
