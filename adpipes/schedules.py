"""``daily_schedule``: what runs every day without anyone, in the app's timezone.

Each tick (``ADPIPES_SCHEDULE_TIME``, default 06:00 in ``ADPIPES_TIMEZONE``) requests:

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

Every run carries ``adpipes/trigger`` (daily, late-data, maturity) and, for maturity runs,
``adpipes/cohort_age_days``.
"""

import datetime as dt
from collections.abc import Iterable
from zoneinfo import ZoneInfo

import dagster as dg

from adpipes.airbridge.schemas import REVENUE_KEY
from adpipes.appsflyer.schemas import COHORT_LTV_KEY, DAILY_REPORT_KEY
from adpipes.appsflyer.daily_report import daily_report_refresh_run_request

SCHEDULE_NAME = "daily_schedule"
# Cohort ages (days since install) at which cohort assets are pulled again: the stored periods
# are days 0-30, 60, 90 and 180, and a period is complete the day after it ends.
MATURITY_AGES = (2, 3, 7, 14, 31, 61, 91, 181)
TRIGGER_TAG = "adpipes/trigger"


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
            tags={TRIGGER_TAG: "daily"},
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
        return daily_run_requests(today, first, context.repository_def.asset_graph.materializable_asset_keys)

    return daily_schedule
