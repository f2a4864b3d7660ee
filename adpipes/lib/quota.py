"""The API call ledger: vendor calls counted per (vendor, app, report, UTC day) in the archive
database, so a run can refuse work the daily quota cannot pay for instead of spending the quota
and failing halfway.

AppsFlyer's quotas are per app, report and calendar day from 00:00 UTC, and every request counts,
whoever sent it. Each run process, schedule tick and backfill of adpipes therefore counts in one
shared table, ``quota.api_calls``:

- before a run starts calling, :meth:`QuotaMeter.require` checks that the calls the range needs
  are still left today, and otherwise stops with the calls needed, the calls left and the reset
  time, having sent nothing;
- before each request (retries and truncation splits included), :meth:`QuotaMeter.spend` counts
  it in one atomic statement that refuses once the quota is spent, so parallel runs can never
  count past it.

Calls sent by other tools with the same token are not seen; the vendor's own daily-quota answer
still stops the run then (and is never retried).

**The reserve.** ``ApiCallLedger.reserved_calls`` calls a day of each report in
``reserved_reports`` (the Pull API reports, ``APPSFLYER_RESERVED_CALLS``) are kept for the
scheduled runs, so a large backfill early in the UTC day cannot leave the daily and late-events
runs without calls. A run that was not launched by a schedule (a backfill, a launch from the UI or
the CLI) may use only the quota less the reserve: ``require`` refuses a range that would dip into
it, and ``spend`` refuses at the quota less the reserve. Scheduled runs may use all of it. A
scheduled run is one Dagster tagged ``dagster/schedule_name`` (the tag every run a schedule
launches gets, kept by its retries and re-executions) and that is no backfill's run
(``dagster/backfill``); the ledger reads its run's tags when Dagster initializes it for a step.

Per-minute limits (the Cohort API's 60 calls a minute per account) are kept the same way across
processes: :class:`RateWindow` is a sliding window of the calls granted, ``quota.rate_window_calls``,
that a process must find a free slot in before it sends (see :meth:`RateWindow.acquire`).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import dagster as dg
from psycopg import sql
from pydantic import PrivateAttr

from adpipes.lib.http import VendorApiError
from adpipes.lib.storage.postgres import PostgresDatabase, create_if_missing

SCHEMA = "quota"
TABLE = "api_calls"
RATE_TABLE = "rate_window_calls"

_DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.{TABLE} (
        vendor text NOT NULL,
        app_id text NOT NULL,
        report text NOT NULL,
        utc_day date NOT NULL,
        calls integer NOT NULL,
        quota_calls integer NOT NULL,
        daily_quota integer,
        first_call_at timestamptz NOT NULL DEFAULT now(),
        last_call_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (vendor, app_id, report, utc_day))""",
    f"COMMENT ON TABLE {SCHEMA}.{TABLE} IS 'adpipes: vendor API requests per app, report and UTC "
    "day (calls: all; quota_calls: those counting against daily_quota)'",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.{RATE_TABLE} (
        vendor text NOT NULL,
        scope text NOT NULL,
        called_at timestamptz NOT NULL)""",
    f"CREATE INDEX IF NOT EXISTS {RATE_TABLE}_scope ON {SCHEMA}.{RATE_TABLE} (vendor, scope, called_at)",
    f"COMMENT ON TABLE {SCHEMA}.{RATE_TABLE} IS 'adpipes: requests granted in the current rate "
    "window per vendor and scope (e.g. an account); rows older than the window are deleted'",
]
# Every table of the schema: a database created by an older adpipes gets the new ones.
_TABLES = (TABLE, RATE_TABLE)
# Dagster's tags (dagster._core.storage.tags): every run a schedule launches carries the schedule's
# name; every run of a backfill carries the backfill's id.
SCHEDULE_NAME_TAG = "dagster/schedule_name"
BACKFILL_TAG = "dagster/backfill"
RESERVE_SETTING = "APPSFLYER_RESERVED_CALLS"


def is_scheduled_run(tags: dict[str, str]) -> bool:
    """Whether a run with these tags was launched by a schedule (and is not a backfill's run)."""
    return SCHEDULE_NAME_TAG in tags and BACKFILL_TAG not in tags


class QuotaExceeded(VendorApiError):
    """The daily quota cannot pay for the call or the range; nothing was sent."""


def quota_reset_time(now: dt.datetime | None = None) -> dt.datetime:
    """The next 00:00 UTC, when AppsFlyer's daily quotas reset."""
    now = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    return dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)


def describe_reset(now: dt.datetime | None = None) -> str:
    """'2026-11-24 00:00 UTC (in 3h 12m)'."""
    now = now or dt.datetime.now(dt.timezone.utc)
    reset = quota_reset_time(now)
    hours, minutes = divmod(int((reset - now).total_seconds()) // 60, 60)
    return f"{reset:%Y-%m-%d %H:%M} UTC (in {hours}h {minutes}m)"


@dataclass(frozen=True)
class QuotaStatus:
    utc_day: dt.date
    used: int
    daily_quota: int | None
    # Calls of the quota this run may not use (kept for the scheduled runs); 0 for those.
    reserved: int = 0

    @property
    def left(self) -> int | None:
        """Calls left today for this run (the reserve excluded)."""
        return None if self.daily_quota is None else max(0, self.daily_quota - self.reserved - self.used)


class ApiCallLedger(dg.ConfigurableResource):
    """``quota.api_calls`` in the archive database: the vendor calls of every adpipes process."""

    archive: PostgresDatabase
    # Calls a day of each of ``reserved_reports`` kept for the scheduled runs (per app and report).
    reserved_calls: int = 0
    reserved_reports: list[str] = []
    # Whether the run this ledger serves was launched by a schedule: set when Dagster initializes
    # the resource for a run; a ledger used outside a run is not a scheduled run's.
    _scheduled_run: bool = PrivateAttr(default=False)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.run
        self._scheduled_run = run is not None and is_scheduled_run(run.tags)

    @property
    def scheduled_run(self) -> bool:
        return self._scheduled_run

    def meter(self, vendor: str, app_id: str, report: str, daily_quota: int | None) -> QuotaMeter:
        """The meter of one app's report; ``daily_quota`` None counts without a limit. A run that is
        not scheduled gets the quota less the reserve of a reserved report."""
        if daily_quota is not None and daily_quota < 1:
            raise ValueError(
                f"the daily quota of {vendor} {report} must be at least 1, got {daily_quota}: fix the "
                "daily_quotas of the vendor's API resource (APPSFLYER_DAILY_QUOTAS for AppsFlyer)"
            )
        reserved = 0
        if daily_quota is not None and not self._scheduled_run and report in self.reserved_reports:
            reserved = self.reserved_calls
        return QuotaMeter(self, vendor, app_id, report, daily_quota, reserved)

    def rate_window(self, vendor: str, scope: str, limit: int, window_seconds: float) -> RateWindow:
        """At most ``limit`` requests per ``window_seconds`` of one ``scope`` (e.g. an account;
        never a secret itself) across every adpipes process."""
        if limit < 1 or window_seconds <= 0:
            raise ValueError(f"the rate window of {vendor} {scope} needs a limit >= 1 and a positive "
                             f"length, got {limit} per {window_seconds} s")
        return RateWindow(self, vendor, scope, limit, window_seconds)



@dataclass(frozen=True)
class QuotaMeter:
    """One (vendor, app, report) quota: what is used today, refusing a range, counting a call."""

    ledger: ApiCallLedger
    vendor: str
    app_id: str
    report: str
    daily_quota: int | None
    # Calls of the daily quota kept for the scheduled runs, which this meter may not use.
    reserved: int = 0

    @property
    def _where(self) -> str:
        return f"{self.vendor} {self.report} for app {self.app_id}"

    @property
    def _limit(self) -> int | None:
        """The calls a day this meter may count: the quota less the reserve."""
        return None if self.daily_quota is None else self.daily_quota - self.reserved

    def _reserve_note(self) -> str:
        return (f"; {self.reserved} more are kept for scheduled runs by {RESERVE_SETTING}, and this run "
                "was not launched by a schedule" if self.reserved else "")

    def status(self, now: dt.datetime | None = None) -> QuotaStatus:
        """Calls counted against the quota today (UTC)."""
        day = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).date()
        with self.ledger.archive.connect() as conn:
            exists = conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.{TABLE}",)).fetchone()[0]
            row = exists and conn.execute(
                sql.SQL("SELECT quota_calls FROM {} WHERE vendor = %s AND app_id = %s AND report = %s "
                        "AND utc_day = %s").format(sql.Identifier(SCHEMA, TABLE)),
                (self.vendor, self.app_id, self.report, day),
            ).fetchone()
        return QuotaStatus(day, int(row[0]) if row else 0, self.daily_quota, self.reserved)

    def require(self, needed: int, what: str, *, hint: str = "") -> QuotaStatus:
        """Refuse (QuotaExceeded) when ``needed`` more calls would exceed today's quota.

        ``what`` names the work (asset and partitions); ``hint`` says how to split it.
        """
        now = dt.datetime.now(dt.timezone.utc)
        status = self.status(now)
        if status.left is not None and needed > status.left:
            raise QuotaExceeded(
                f"{what} needs {needed} call{'s' if needed != 1 else ''} of {self._where}, but only "
                f"{status.left} of today's {status.daily_quota} are left "
                f"{'for it ' if self.reserved else ''}({status.used} spent on UTC "
                f"day {status.utc_day}, counted in {SCHEMA}.{TABLE} of the archive database"
                f"{self._reserve_note()}). Nothing was called. The quota resets at {describe_reset(now)}: "
                f"materialize the range after that{', or ' + hint if hint else ''}.",
                app_id=self.app_id, report=self.report, calls_needed=needed, calls_left=status.left,
                resets_at=quota_reset_time(now),
            )
        return status

    def spend(self, counts_against_quota: bool = True) -> int:
        """Count one request about to be sent; refuse (QuotaExceeded) when the quota is spent.

        Atomic: the increment only happens while calls are left, so concurrent runs cannot count
        past the quota. Returns the calls counted against the quota today.
        """
        now = dt.datetime.now(dt.timezone.utc)
        limited = counts_against_quota and self._limit is not None
        step = 1 if counts_against_quota else 0
        row = None
        # A reserve as large as the quota leaves this run nothing, not even a first call (which
        # the INSERT below would grant, as no row stands against it).
        if not limited or self._limit > 0:
            with self.ledger.archive.connect() as conn, conn.cursor() as cur:
                create_if_missing(cur, SCHEMA, _TABLES, _DDL)
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {table} AS c (vendor, app_id, report, utc_day, calls, quota_calls, "
                        "daily_quota) VALUES (%(vendor)s, %(app)s, %(report)s, %(day)s, 1, %(step)s, %(quota)s) "
                        "ON CONFLICT (vendor, app_id, report, utc_day) DO UPDATE SET "
                        "calls = c.calls + 1, quota_calls = c.quota_calls + %(step)s, "
                        "daily_quota = EXCLUDED.daily_quota, last_call_at = now() "
                        "WHERE NOT %(limited)s OR c.quota_calls < %(limit)s "
                        "RETURNING quota_calls"
                    ).format(table=sql.Identifier(SCHEMA, TABLE)),
                    dict(vendor=self.vendor, app=self.app_id, report=self.report, day=now.date(), step=step,
                         quota=self.daily_quota, limit=self._limit, limited=limited),
                )
                row = cur.fetchone()
                conn.commit()
        if row is None:
            spent = (f"today's quota of {self.daily_quota} calls is spent" if not self.reserved else
                     f"the {max(0, self._limit)} of today's {self.daily_quota} calls that runs not launched "
                     "by a schedule may use are spent")
            raise QuotaExceeded(
                f"{self._where}: {spent} (UTC day {now.date()}, counted in {SCHEMA}.{TABLE} of the archive "
                f"database{self._reserve_note()}), so the call was not sent. The quota resets at "
                f"{describe_reset(now)}; re-run the failed partitions after that.",
                app_id=self.app_id, report=self.report, calls_needed=1, calls_left=0,
                resets_at=quota_reset_time(now),
            )
        return int(row[0])

    def seconds_since_last_call(self) -> float | None:
        """Seconds since any adpipes process last sent this report's request (database clock)."""
        with self.ledger.archive.connect() as conn:
            exists = conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.{TABLE}",)).fetchone()[0]
            row = exists and conn.execute(
                sql.SQL("SELECT EXTRACT(EPOCH FROM now() - max(last_call_at)) FROM {} WHERE vendor = %s "
                        "AND app_id = %s AND report = %s").format(sql.Identifier(SCHEMA, TABLE)),
                (self.vendor, self.app_id, self.report),
            ).fetchone()
        return float(row[0]) if row and row[0] is not None else None


@dataclass(frozen=True)
class RateWindow:
    """A sliding window of ``limit`` requests per ``window_seconds`` shared by every process.

    Each granted request is a row of ``quota.rate_window_calls``. Granting takes a transaction-
    scoped advisory lock of the (vendor, scope), deletes the rows that have left the window,
    and inserts a row only while fewer than ``limit`` remain; otherwise the caller sleeps until
    the oldest row leaves the window and tries again. Times are the database's clock
    (``clock_timestamp()``), so the processes' own clocks do not matter.
    """

    ledger: ApiCallLedger
    vendor: str
    scope: str
    limit: int
    window_seconds: float

    def try_acquire(self) -> tuple[dt.datetime | None, float]:
        """One attempt: ``(granted_at, 0)`` when a slot was taken, ``(None, seconds to wait)``
        when the window is full."""
        table = sql.Identifier(SCHEMA, RATE_TABLE)
        where = dict(vendor=self.vendor, scope=self.scope, window=self.window_seconds)
        with self.ledger.archive.connect() as conn, conn.cursor() as cur:
            create_if_missing(cur, SCHEMA, _TABLES, _DDL)
            # The DDL's locks are released before the window's lock is taken: holding both in
            # one transaction can deadlock with a process that holds the window and deletes.
            conn.commit()
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                        (f"{SCHEMA}.{RATE_TABLE}|{self.vendor}|{self.scope}",))
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE vendor = %(vendor)s AND scope = %(scope)s AND called_at "
                        "<= clock_timestamp() - make_interval(secs => %(window)s)").format(table), where)
            cur.execute(
                sql.SQL("SELECT count(*), EXTRACT(EPOCH FROM min(called_at) + make_interval(secs => "
                        "%(window)s) - clock_timestamp()) FROM {} WHERE vendor = %(vendor)s AND "
                        "scope = %(scope)s").format(table), where)
            used, wait = cur.fetchone()
            granted = None
            if used < self.limit:
                cur.execute(
                    sql.SQL("INSERT INTO {} (vendor, scope, called_at) VALUES (%(vendor)s, %(scope)s, "
                            "clock_timestamp()) RETURNING called_at").format(table), where)
                granted = cur.fetchone()[0]
            conn.commit()
        return granted, 0.0 if granted is not None else max(0.0, float(wait or 0.0))

    def acquire(self) -> float:
        """Wait for a slot and take it; returns the seconds waited."""
        return self.acquire_slot()[1]

    def acquire_slot(self) -> tuple[dt.datetime, float]:
        """Wait for a slot and take it; returns when it was granted (database clock) and the
        seconds waited."""
        waited = 0.0
        while True:
            granted, pause = self.try_acquire()
            if granted is not None:
                return granted, waited
            # A few milliseconds more: the oldest row must have left the window when we look again.
            pause += 0.005
            time.sleep(pause)
            waited += pause


def require_calls(needs: list[tuple[QuotaMeter, int]], what: str, *, hint: str = "") -> dict[str, dict]:
    """Check every (meter, calls needed) before the first call of a run, and fail the step with
    every refusal (calls needed, left and the reset time) when one cannot be paid for.

    Returns today's use per app and report, for the output metadata.
    """
    refused, used = [], {}
    for meter, needed in needs:
        try:
            status = meter.require(needed, what, hint=hint)
        except QuotaExceeded as exc:
            refused.append(exc)
            continue
        used[f"{meter.app_id} {meter.report}"] = {
            "used_before_run": status.used, "needed": needed, "daily_quota": status.daily_quota,
            **({"reserved_for_schedules": status.reserved} if status.reserved else {}),
        }
    if refused:
        raise dg.Failure(
            description="\n".join(str(exc) for exc in refused),
            metadata={
                "calls_needed": {f"{e.app_id} {e.report}": e.calls_needed for e in refused},
                "calls_left": {f"{e.app_id} {e.report}": e.calls_left for e in refused},
                "quota_resets_at": refused[0].resets_at.isoformat(),
            },
        )
    return used
