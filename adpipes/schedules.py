"""The schedules: what runs every day without anyone.

``daily_schedule`` ticks at ``ADPIPES_SCHEDULE_TIME`` (default 06:00) in ``ADPIPES_TIMEZONE`` and
requests:

- **daily**: yesterday's partition of every asset but ``appsflyer/daily_report`` in one run (raw
  reports first, then the unified tables: Dagster orders the steps by their dependencies);
- **late-data**: ``appsflyer/daily_report`` for yesterday and the two days before it, as one
  3-day range: AppsFlyer finalizes aggregates about 48 hours late, so each day is pulled on three
  ticks. One call per app for the three days, counted against the daily aggregate quota (24 a
  day per app); pulling yesterday in the daily run and the two days before in a 2-day range would
  be two calls per app, falling under the one-call-a-minute rule of <= 2-day ranges, one of
  them waiting out the other's minute;
- **maturity**: ``appsflyer/cohort_ltv`` and ``airbridge/revenue`` for the cohorts that are
  ``MATURITY_AGES`` days old today, one run each: a cohort's day-N figures grow until day N has
  passed, so each stored period is pulled again once it is complete (1 = yesterday is the daily run).

``late_events_schedule`` ticks every day in UTC at ``APPSFLYER_LATE_EVENTS_MARGIN_MINUTES``
(default 60) after 02:00, and requests a **late-events** run: day D's raw reports,
``appsflyer/raw_data`` and ``appsflyer/customer_user_map`` pulled and built again. AppsFlyer
stamps an event with its own event time only when it arrives by 02:00 UTC on the UTC day after the
event's; a later one is stamped with its arrival time and lands on a later day. So day D (app
timezone) can still grow until 02:00 UTC of the UTC day after D's last instant: D+1 02:00 UTC for
timezones at or east of UTC, D+2 02:00 UTC west of it (local D ends on UTC day D+1 there). The
margin leaves time for AppsFlyer to process what arrived just before. Each tick requests the days
whose close plus margin passed since the previous tick (one day), never one before the first
partition.

**When a day is final.** A day's raw reports are final once pulled at or after that moment: with
the defaults (Asia/Seoul, 06:00) the daily run pulls D early, at D+1 06:00 KST (D 21:00 UTC), and
the late-events run pulls it again at D+1 03:00 UTC = D+1 12:00 KST; in America/Los_Angeles at
D+2 03:00 UTC (D+1 19:00 or 20:00 local). Where the daily run itself comes at or after that moment
(UTC to UTC+3 with the 06:00 default: the daily run of D at D+1 06:00 UTC is after D+1 03:00 UTC),
it is already final and the late-events tick requests nothing for D: a second pull would spend a
call per app and report for nothing, and at UTC+3 both runs would start at the same minute and
race for the same partitions.

Every run carries ``adpipes/trigger`` (daily, late-data, maturity, late-events) and, for maturity
runs, ``adpipes/cohort_age_days``; Dagster tags each with ``dagster/schedule_name``, which lets the
call ledger give scheduled runs the calls it keeps for them (``APPSFLYER_RESERVED_CALLS``, see
:mod:`adpipes.lib.quota`).
"""

import datetime as dt
from collections.abc import Iterable
from zoneinfo import ZoneInfo

import dagster as dg

from adpipes.airbridge.schemas import REVENUE_KEY
from adpipes.appsflyer.assets import RAW_GROUPS
from adpipes.appsflyer.customer_user_map import CUSTOMER_USER_MAP_KEY
from adpipes.appsflyer.daily_report import daily_report_refresh_run_request
from adpipes.appsflyer.raw_data_api import LATE_EVENTS_CLOSE_UTC, late_events_close
from adpipes.appsflyer.schemas import COHORT_LTV_KEY, DAILY_REPORT_KEY, RAW_DATA_KEY

SCHEDULE_NAME = "daily_schedule"
LATE_EVENTS_SCHEDULE_NAME = "late_events_schedule"
# Built from the raw reports: pulled again, they are built again.
LATE_EVENTS_DERIVED_KEYS = (RAW_DATA_KEY, CUSTOMER_USER_MAP_KEY)
# Cohort ages (days since install) at which cohort assets are pulled again: the stored periods
# are days 0-30, 60, 90 and 180, and a period is complete the day after it ends.
MATURITY_AGES = (2, 3, 7, 14, 31, 61, 91, 181)
TRIGGER_TAG = "adpipes/trigger"
# The day whose raw reports a run pulls (daily and late-events runs). config/dagster.yaml runs one
# run per value at a time, so the two runs of a day queue behind each other instead of one failing
# on the day's partition lock when they come close (timezones a little east of UTC+3).
RAW_DAY_TAG = "adpipes/raw_day"


def daily_run_requests(today: dt.date, first_partition: dt.date,
                       asset_keys: Iterable[dg.AssetKey]) -> list[dg.RunRequest]:
    """The runs of the tick on ``today`` (app timezone), none before ``first_partition``;
    ``asset_keys``: every asset of the code location."""
    yesterday = today - dt.timedelta(days=1)
    requests = []
    if yesterday >= first_partition:
        requests.append(dg.RunRequest(
            run_key=f"daily:{yesterday}", partition_key=yesterday.isoformat(),
            asset_selection=sorted(k for k in asset_keys if k != DAILY_REPORT_KEY),
            tags={TRIGGER_TAG: "daily", RAW_DAY_TAG: yesterday.isoformat()},
        ))
        requests.append(daily_report_refresh_run_request(
            yesterday.isoformat(), first_partition.isoformat(), tags={TRIGGER_TAG: "late-data"}))
    for age in MATURITY_AGES:
        cohort = today - dt.timedelta(days=age)
        if cohort < first_partition:
            continue
        requests.append(dg.RunRequest(
            run_key=f"maturity:{cohort}:{age}", partition_key=cohort.isoformat(),
            asset_selection=[COHORT_LTV_KEY, REVENUE_KEY],
            tags={TRIGGER_TAG: "maturity", "adpipes/cohort_age_days": str(age)},
        ))
    return requests


def build_daily_schedule(timezone: str, at: tuple[int, int], first_partition: str) -> dg.ScheduleDefinition:
    """The schedule ticking daily at ``at`` (hour, minute) in ``timezone``."""
    first = dt.date.fromisoformat(first_partition)
    hour, minute = at

    @dg.schedule(
        name=SCHEDULE_NAME,
        cron_schedule=f"{minute} {hour} * * *",
        execution_timezone=timezone,
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Every day at {hour:02d}:{minute:02d} {timezone}: yesterday's partition of every asset "
        "but daily_report, "
        "daily_report for yesterday and the two days before (late data, one 3-day call per app), and "
        "cohort assets as their cohorts mature.",
    )
    def daily_schedule(context: dg.ScheduleEvaluationContext):
        moment = context.scheduled_execution_time
        # The tick's time is in the app timezone; evaluated by hand (no tick), it is now there.
        today = (moment or dt.datetime.now(ZoneInfo(timezone))).astimezone(ZoneInfo(timezone)).date()
        graph = context.repository_def.asset_graph
        # Assets with an automation condition (the analysis tables) are derived by their sensor once
        # all their inputs of the day are in, not by the daily run, which lacks daily_report.
        return daily_run_requests(today, first, [k for k in graph.materializable_asset_keys
                                                 if graph.get(k).automation_condition is None])

    return daily_schedule


def daily_tick_of(day: dt.date, timezone: str, at: tuple[int, int]) -> dt.datetime:
    """When ``daily_schedule`` pulls ``day``: the next day at ``at`` in ``timezone``, in UTC."""
    local = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(*at), tzinfo=ZoneInfo(timezone))
    return local.astimezone(dt.timezone.utc)


def late_events_closed_days(tick: dt.datetime, timezone: str, margin_minutes: int,
                            first_partition: dt.date) -> list[dt.date]:
    """The days (app timezone) whose close plus the margin passed since the previous late-events
    tick, a day before ``tick`` (usually one day), none before ``first_partition``."""
    tick = tick.astimezone(dt.timezone.utc)
    margin = dt.timedelta(minutes=margin_minutes)
    # A day closes 1 or 2 UTC days after its date, whatever the offset (-12:00 to +14:00).
    candidates = (tick.date() - dt.timedelta(days=back) for back in range(4, -1, -1))
    return [day for day in candidates if day >= first_partition
            and tick - dt.timedelta(days=1) < late_events_close(day, timezone) + margin <= tick]


def final_after_daily_run(day: dt.date, timezone: str, margin_minutes: int, daily_at: tuple[int, int]) -> bool:
    """Whether the daily run of ``day`` pulls it after its late-arrival window closed (plus the
    margin), and is final itself: at UTC to UTC+3 with the 06:00 default."""
    close = late_events_close(day, timezone) + dt.timedelta(minutes=margin_minutes)
    return daily_tick_of(day, timezone, daily_at) >= close


def late_events_days(tick: dt.datetime, timezone: str, margin_minutes: int, first_partition: dt.date,
                     daily_at: tuple[int, int]) -> list[dt.date]:
    """The days a late-events tick at ``tick`` pulls again: those closed since the previous tick
    that the daily run pulled before they closed."""
    return [day for day in late_events_closed_days(tick, timezone, margin_minutes, first_partition)
            if not final_after_daily_run(day, timezone, margin_minutes, daily_at)]


def late_events_selection(repository: dg.RepositoryDefinition) -> list[dg.AssetKey]:
    """The raw report assets of the code location (its raw groups: ``APPSFLYER_RAW_REPORTS``
    decides which reports exist) and what is built from them; none without raw reports."""
    asset_graph = repository.asset_graph
    keys = asset_graph.materializable_asset_keys
    raw = {k for k in keys if asset_graph.get(k).group_name in RAW_GROUPS.values()}
    return sorted(raw | (keys & set(LATE_EVENTS_DERIVED_KEYS))) if raw else []


def late_events_run_requests(days: Iterable[dt.date], selection: list[dg.AssetKey]) -> list[dg.RunRequest]:
    """One run per day of ``selection``, keyed by the day: Dagster launches a key once a tick."""
    if not selection:
        return []
    return [
        dg.RunRequest(run_key=f"late-events:{day}", partition_key=day.isoformat(), asset_selection=selection,
                      tags={TRIGGER_TAG: "late-events", RAW_DAY_TAG: day.isoformat()})
        for day in days
    ]


def build_late_events_schedule(timezone: str, margin_minutes: int, first_partition: str,
                               daily_at: tuple[int, int]) -> dg.ScheduleDefinition:
    """The schedule ticking daily in UTC at ``margin_minutes`` after 02:00; ``daily_at`` is
    ``daily_schedule``'s time (a day it pulls after the window closed needs no second pull)."""
    first = dt.date.fromisoformat(first_partition)
    hour, minute = divmod(LATE_EVENTS_CLOSE_UTC.hour * 60 + LATE_EVENTS_CLOSE_UTC.minute + margin_minutes, 60)
    if hour > 23:
        raise ValueError(f"a late-events margin of {margin_minutes} minutes after 02:00 UTC passes midnight; "
                         "APPSFLYER_LATE_EVENTS_MARGIN_MINUTES must end before midnight UTC")

    @dg.schedule(
        name=LATE_EVENTS_SCHEDULE_NAME,
        cron_schedule=f"{minute} {hour} * * *",
        execution_timezone="UTC",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Every day at {hour:02d}:{minute:02d} UTC ({margin_minutes} min after AppsFlyer stops "
        f"accepting the previous day's late events at 02:00 UTC): the raw reports, raw_data and "
        f"customer_user_map of the {timezone} day whose late-arrival window has just closed, pulled "
        "again and final (not when the daily run pulls that day after the window closed).",
    )
    def late_events_schedule(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time or dt.datetime.now(dt.timezone.utc)
        closed = late_events_closed_days(tick, timezone, margin_minutes, first)
        days = late_events_days(tick, timezone, margin_minutes, first, daily_at)
        if closed and not days:
            later = "; ".join(f"{d}: the daily run pulls it at "
                              f"{daily_tick_of(d, timezone, daily_at):%Y-%m-%d %H:%M} UTC" for d in closed)
            return dg.SkipReason(f"{later}, after AppsFlyer's late-arrival window closed (plus the margin): "
                                 "that pull is final, a second one would spend calls for nothing.")
        return late_events_run_requests(days, late_events_selection(context.repository_def))

    return late_events_schedule
