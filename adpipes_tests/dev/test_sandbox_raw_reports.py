"""The sandbox serves every Pull API raw report of adpipes' registry, for several apps per platform,
with late in-app events and a settable clock, over real HTTP."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest
import requests

from adpipes.appsflyer.raw_data_api import (
    NON_ORGANIC,
    ORGANIC,
    RAW_REPORTS,
    RETARGETING,
    late_events_close,
)
from adpipes.lib.partitions import day_window
from adpipes.dev.sandbox import RAW_REPORT_COLUMNS, SandboxServer
from adpipes.dev.sandbox.appsflyer import (
    default_rows_for_day,
    generate_day,
    late_rows,
    late_window_close,
)
from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID

TZ = "Asia/Seoul"
ANDROID, IOS = SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID
SECOND_ANDROID = "com.adpipes.second"
# A package name starting with "id" is still an Android app: iOS ids are "id" + digits only.
THIRD_ANDROID = "idle.puzzle.game"
IN_APP_EVENTS = {"af_purchase", "af_login", "af_level_achieved", "af_tutorial_completion"}
TOUCH_COLUMNS = ("Attributed Touch Type", "Attributed Touch Time", "Partner", "Channel", "Campaign",
                 "Campaign ID", "Adset", "Ad", "Site ID", "Contributor 1 Media Source", "Contributor 1 Campaign",
                 "Contributor 1 Touch Time")
EVENT_REPORTS = [name for name, report in RAW_REPORTS.items() if report.kind == "events"]


def recent_day(days_ago: int = 1) -> str:
    return (dt.datetime.now(ZoneInfo(TZ)).date() - dt.timedelta(days=days_ago)).isoformat()


def export(sandbox: SandboxServer, app_id: str, report: str, first: str, last: str | None = None,
           **params: str) -> requests.Response:
    return requests.get(
        f"{sandbox.base_url}/api/raw-data/export/app/{app_id}/{report}/v5",
        params={"from": first, "to": last or first, "timezone": TZ, **params},
        headers={"Accept": "text/csv", "Authorization": f"Bearer {sandbox.appsflyer_token}"}, timeout=30,
    )


def rows_of(response: requests.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text[:300]
    reader = csv.reader(io.StringIO(response.text))
    header = next(reader)
    assert header == RAW_REPORT_COLUMNS
    return [dict(zip(header, row)) for row in reader]


def truthy(flag: str) -> bool:
    assert flag in ("true", "false", "True", "False", "1", "0"), flag
    return flag in ("true", "True", "1")


@pytest.mark.parametrize("report", list(RAW_REPORTS))
def test_every_report_answers_with_its_own_rows(clean_sandbox, report):
    # Two days ago: whole (past its late-events close) whatever the hour.
    day = recent_day(2)
    rows = rows_of(export(clean_sandbox, ANDROID, report, day))
    attribution = RAW_REPORTS[report].attribution
    assert len(rows) == default_rows_for_day(ANDROID, report, dt.date.fromisoformat(day)) > 0
    assert all(r["Event Time"].startswith(day) and r["Install Time"] <= r["Event Time"] for r in rows)
    assert all(r["App ID"] == ANDROID and r["Platform"] == "android" and r["AppsFlyer ID"] for r in rows)
    keys = [(r["AppsFlyer ID"], r["Event Name"], r["Event Time"]) for r in rows]
    assert len(set(keys)) == len(keys)  # raw_data's row key within a report

    names = {r["Event Name"] for r in rows}
    if attribution == ORGANIC:
        assert all(not r["Media Source"] for r in rows)
        assert all(not r[column] for r in rows for column in TOUCH_COLUMNS)
    else:
        assert all(r["Media Source"] and r["Attributed Touch Time"] and r["Campaign"] for r in rows)
    assert all(truthy(r["Is Retargeting"]) == (attribution == RETARGETING) for r in rows)
    if RAW_REPORTS[report].kind == "events":
        assert names == IN_APP_EVENTS
        assert all(r["Event Revenue"] for r in rows if r["Event Name"] == "af_purchase")
    elif "uninstall" in report:
        assert names == {"uninstall"}
        assert all(r["Install Time"] < r["Event Time"] for r in rows)
    elif report.startswith("reinstalls"):
        assert names == {"reinstall"} and all(r["Install Time"] == r["Event Time"] for r in rows)
    elif report == "installs-retarget":
        assert names <= {"re-engagement", "re-attribution"} and "re-engagement" in names
        assert all(r["Retargeting Conversion Type"] == r["Event Name"] for r in rows)
    else:
        assert names == {"install"} and all(r["Install Time"] == r["Event Time"] for r in rows)

    if attribution == RETARGETING:
        # A retargeting touch re-engages a user after their original install, before the conversion.
        assert all(r["Install Time"] < r["Attributed Touch Time"] <= r["Event Time"] for r in rows)
        assert all(r["Retargeting Conversion Type"] in ("re-engagement", "re-attribution")
                   and r["Reengagement Window"] for r in rows)
        assert all("is_retargeting=true" in r["Original URL"] for r in rows)
    elif attribution == NON_ORGANIC:
        assert all(r["Attributed Touch Time"] < r["Install Time"] and not r["Retargeting Conversion Type"]
                   for r in rows)


def test_minor_reports_are_smaller_than_installs():
    day = dt.date(2026, 11, 20)
    sizes = {report: default_rows_for_day(ANDROID, report, day) for report in RAW_REPORTS}
    assert sizes["uninstall_events_report"] < sizes["installs-retarget"] < sizes["installs_report"]
    assert sizes["reinstalls"] < sizes["uninstall_events_report"]
    assert sizes["in-app-events-retarget"] < sizes["organic_in_app_events_report"] < sizes["in_app_events_report"]
    assert 0.7 < sizes["organic_installs_report"] / sizes["installs_report"] < 1.3


@pytest.mark.parametrize("report", list(RAW_REPORTS))
def test_one_call_covers_the_reports_window_and_no_more(clean_sandbox, report):
    days = RAW_REPORTS[report].window_days
    assert days == (60 if RAW_REPORTS[report].kind == "installs" else 31)
    too_long = export(clean_sandbox, ANDROID, report, recent_day(days + 1), recent_day(1))
    assert too_long.status_code == 400
    assert too_long.json() == {"message": f"The date range for {report} is limited to {days} days"}
    longest = rows_of(export(clean_sandbox, ANDROID, report, recent_day(days), recent_day(1)))
    assert {r["Event Time"][:10] for r in longest} >= {recent_day(days), recent_day(2)}
    # The 90-day lookback applies to every report.
    old = export(clean_sandbox, ANDROID, report, recent_day(95), recent_day(93))
    assert old.status_code == 400 and old.json() == {"message": "Raw reports historical lookback is limited to 90 days"}


def test_several_apps_per_platform_each_with_its_own_data(clean_sandbox):
    base = clean_sandbox.base_url
    apps = [ANDROID, SECOND_ANDROID, THIRD_ANDROID, IOS]
    assert requests.post(f"{base}/_sandbox/config", json={"apps": apps}, timeout=5).status_code == 200
    day = recent_day(2)
    ids: dict[str, set[str]] = {}
    for app_id in apps:
        for report in ("installs_report", "organic_in_app_events_report", "in-app-events-retarget"):
            rows = rows_of(export(clean_sandbox, app_id, report, day))
            assert len(rows) == default_rows_for_day(app_id, report, dt.date.fromisoformat(day)) > 0
            assert {r["App ID"] for r in rows} == {app_id}
            ids.setdefault(app_id, set()).update(r["AppsFlyer ID"] for r in rows)
            if app_id == IOS:
                assert all(r["Platform"] == "ios" and r["IDFA"] and not r["Advertising ID"] for r in rows)
            else:
                assert all(r["Platform"] == "android" and r["Advertising ID"] and not r["IDFA"]
                           and r["Bundle ID"] == app_id for r in rows)
    # Seeded by app id: no two apps share a user, and same-platform apps differ in size too.
    assert all(not ids[a] & ids[b] for a in apps for b in apps if a < b)
    assert len({default_rows_for_day(a, "installs_report", dt.date.fromisoformat(day))
                for a in (ANDROID, SECOND_ANDROID, THIRD_ANDROID)}) > 1

    # Overrides and faults address one app of a platform, not the platform.
    clean_sandbox.configure(rows_per_day={f"{SECOND_ANDROID}|reinstalls": 3})
    clean_sandbox.add_faults(kind="quota", app_id=THIRD_ANDROID, report="reinstalls")
    assert len(rows_of(export(clean_sandbox, SECOND_ANDROID, "reinstalls", day))) == 3
    assert len(rows_of(export(clean_sandbox, ANDROID, "reinstalls", day))) == default_rows_for_day(
        ANDROID, "reinstalls", dt.date.fromisoformat(day))
    assert export(clean_sandbox, THIRD_ANDROID, "reinstalls", day).status_code == 400
    assert export(clean_sandbox, THIRD_ANDROID, "reinstalls", day).status_code == 200
    assert export(clean_sandbox, "com.not.configured", "installs_report", day).status_code == 404


def test_late_events_close_is_two_utc_hours_after_the_days_last_utc_date():
    day = dt.date(2026, 11, 29)
    utc = dt.timezone.utc
    # Seoul's day ends at 15:00 UTC the same date; New York's at 05:00 UTC the next one.
    assert late_events_close(day, "Asia/Seoul") == dt.datetime(2026, 11, 30, 2, tzinfo=utc)
    assert late_events_close(day, "UTC") == dt.datetime(2026, 11, 30, 2, tzinfo=utc)
    assert late_events_close(day, "America/New_York") == dt.datetime(2026, 12, 1, 2, tzinfo=utc)
    assert late_window_close(day, "America/New_York") == late_events_close(day, "America/New_York")


@pytest.mark.parametrize("report", EVENT_REPORTS)
def test_late_rows_are_served_once_the_clock_passes_the_close(clean_sandbox, report):
    day = recent_day(3)
    date = dt.date.fromisoformat(day)
    close = late_window_close(date, TZ)
    n_rows = default_rows_for_day(IOS, report, date)
    late = late_rows(IOS, report, date, n_rows)
    # About 5%, at least one: deterministic per app, report and day.
    assert 1 <= len(late) <= max(1, round(n_rows * 0.06)) and late == late_rows(IOS, report, date, n_rows)
    everything = generate_day(IOS, report, date, TZ, n_rows)

    clean_sandbox.configure(now=(close - dt.timedelta(seconds=1)).isoformat())
    early = rows_of(export(clean_sandbox, IOS, report, day))
    # Over HTTP too, in another offset.
    on_time = close.astimezone(ZoneInfo("America/Los_Angeles")).isoformat()
    control = f"{clean_sandbox.base_url}/_sandbox/config"
    assert requests.post(control, json={"now": on_time}, timeout=5).status_code == 200
    whole = rows_of(export(clean_sandbox, IOS, report, day))

    assert len(whole) == n_rows and len(early) == n_rows - len(late)
    missing = [r for r in whole if r not in early]
    assert [(r["AppsFlyer ID"], r["Event Time"]) for r in missing] == [
        (everything[i][RAW_REPORT_COLUMNS.index("AppsFlyer ID")], everything[i][RAW_REPORT_COLUMNS.index("Event Time")])
        for i in sorted(late)]
    # Late rows carry their own day's time, not their arrival time.
    assert all(r["Event Time"].startswith(day) for r in missing)
    # Install-like reports have no late rows.
    clean_sandbox.configure(now=(close - dt.timedelta(seconds=1)).isoformat())
    assert len(rows_of(export(clean_sandbox, IOS, "installs_report", day))) == default_rows_for_day(
        IOS, "installs_report", date)


def test_late_rows_wait_for_the_utc_date_after_the_local_days_end(clean_sandbox):
    # New York's day ends on the next UTC date: 02:00 UTC of that date is still too early.
    zone, day = "America/New_York", dt.date.fromisoformat(recent_day(4))
    report = "in_app_events_report"
    n_rows = default_rows_for_day(ANDROID, report, day)
    late = late_rows(ANDROID, report, day, n_rows)

    def served_at(now: dt.datetime) -> int:
        clean_sandbox.configure(now=now.isoformat())
        return len(rows_of(export(clean_sandbox, ANDROID, report, day.isoformat(), timezone=zone)))

    day_over = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=ZoneInfo(zone))
    close = dt.datetime.combine(day + dt.timedelta(days=2), dt.time(2), tzinfo=dt.timezone.utc)
    # 02:00 UTC of the day after the New York day's UTC start has passed by then, and does not count.
    assert day_over.astimezone(dt.timezone.utc) > dt.datetime.combine(
        day + dt.timedelta(days=1), dt.time(2), tzinfo=dt.timezone.utc)
    assert served_at(day_over) == served_at(close - dt.timedelta(seconds=1)) == n_rows - len(late)
    assert served_at(close) == n_rows


def test_the_clock_decides_now_today_and_the_lookback(clean_sandbox):
    day = recent_day(5)
    date = dt.date.fromisoformat(day)
    noon = dt.datetime.combine(date, dt.time(12), tzinfo=ZoneInfo(TZ))
    clean_sandbox.configure(now=noon.isoformat())
    assert clean_sandbox.config_snapshot()["now"] == noon.isoformat()
    assert clean_sandbox.now() == noon
    morning = rows_of(export(clean_sandbox, ANDROID, "installs_report", day))
    assert morning and all(r["Event Time"] <= f"{day} 12:00:00" for r in morning)
    assert len(morning) < default_rows_for_day(ANDROID, "installs_report", date)
    # The next day has not happened yet at this clock.
    assert rows_of(export(clean_sandbox, ANDROID, "installs_report", recent_day(4))) == []

    # 'Today' is the clock's: 100 days on, the day is past the 90-day lookback.
    clean_sandbox.configure(now=(noon + dt.timedelta(days=100)).isoformat())
    assert export(clean_sandbox, ANDROID, "installs_report", day).status_code == 400

    control = f"{clean_sandbox.base_url}/_sandbox/config"
    response = requests.post(control, json={"now": "2026-11-30T03:00:00"}, timeout=5)
    assert response.status_code == 400 and "offset" in response.json()["message"]
    with pytest.raises(ValueError, match="ISO 8601"):
        clean_sandbox.configure(now="yesterday")

    clean_sandbox.reset()
    assert clean_sandbox.config_snapshot()["now"] is None
    assert abs(clean_sandbox.now() - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(seconds=5)
    assert len(rows_of(export(clean_sandbox, ANDROID, "installs_report", day))) == default_rows_for_day(
        ANDROID, "installs_report", date)


def test_an_appsflyer_id_has_one_customer_user_id_in_every_report(appsflyer_raw_data_api, clean_sandbox):
    """What downstream's customer-user-id map relies on, across every report of one app."""
    first, last = recent_day(8), recent_day(2)
    # Installs far enough back to hold the users of the week's events, reinstalls and re-engagements.
    spans = {report: (recent_day(40) if report in ("installs_report", "organic_installs_report") else first, last)
             for report in RAW_REPORTS}
    rows: dict[str, list[dict[str, str]]] = {}
    for report, (start_day, end_day) in spans.items():
        start, end = day_window(start_day, TZ)[0], day_window(end_day, TZ)[1]
        rows[report] = appsflyer_raw_data_api.fetch_raw_report(ANDROID, report, start, end).to_arrow().to_pylist()
        assert rows[report], report

    cuids: dict[str, set[str]] = defaultdict(set)
    reports_of: dict[str, set[str]] = defaultdict(set)
    for report, report_rows in rows.items():
        for r in report_rows:
            reports_of[r["AppsFlyer ID"]].add(report)
            if r["Customer User ID"]:
                assert r["Customer User ID"].isdigit()  # whole numbers: downstream quarantines others
                cuids[r["AppsFlyer ID"]].add(r["Customer User ID"])
    assert cuids and all(len(found) == 1 for found in cuids.values())

    everything = [r for report_rows in rows.values() for r in report_rows]
    empty = sum(not r["Customer User ID"] for r in everything)
    assert 0.15 < empty / len(everything) < 0.45

    def ids(*reports: str) -> set[str]:
        return {r["AppsFlyer ID"] for report in reports for r in rows[report]}

    # Events belong to installed users of the same attribution; retargeting to re-engaged users.
    assert ids("in_app_events_report") <= ids("installs_report")
    assert ids("organic_in_app_events_report") <= ids("organic_installs_report")
    assert not ids("organic_in_app_events_report") & ids("installs_report")
    assert ids("in-app-events-retarget") & ids("installs-retarget")
    assert ids("installs-retarget") <= ids("installs_report", "organic_installs_report")
    assert ids("uninstall_events_report") <= ids("installs_report")
    assert ids("organic_uninstall_events_report") <= ids("organic_installs_report")
    assert sum(len(found) > 1 for found in reports_of.values()) > 100

    # A reinstall is an earlier user (same device) under a new AppsFlyer ID, with the same Customer
    # User ID: one person, several AppsFlyer IDs.
    installs = rows["installs_report"] + rows["organic_installs_report"]
    by_device: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in installs:
        by_device[r["Advertising ID"]].append(r)
    reinstalls = rows["reinstalls"] + rows["reinstalls_organic"]
    assert not {r["AppsFlyer ID"] for r in reinstalls} & {r["AppsFlyer ID"] for r in installs}
    same_person = 0
    for r in reinstalls:
        earlier = [e for e in by_device[r["Advertising ID"]] if e["Install Time"] < r["Install Time"]]
        assert len(earlier) == 1, r["AppsFlyer ID"]
        # The earlier AppsFlyer ID's Customer User ID, where a row within the spans shows it.
        known = cuids.get(earlier[0]["AppsFlyer ID"], set())
        if r["Customer User ID"]:
            assert known <= {r["Customer User ID"]}
            same_person += bool(known)
        else:
            assert not known
    assert same_person > 5


def test_a_repeated_request_gets_the_same_answer_and_a_changed_setting_a_new_one(clean_sandbox):
    """The sandbox keeps its recent raw answers (so a re-run measures adpipes, not the sandbox's
    CSV writer): the same request gives the same bytes and is still logged as a call with its
    rows; a setting that changes the data, or the clock reaching a day's late rows, changes the
    answer, never a stale copy."""
    day = recent_day(3)
    clean_sandbox.configure(rows_per_day={f"{ANDROID}|in_app_events_report": 40})
    first = export(clean_sandbox, ANDROID, "in_app_events_report", day)
    again = export(clean_sandbox, ANDROID, "in_app_events_report", day)
    assert first.content == again.content and len(rows_of(first)) == 40
    assert [c["rows"] for c in clean_sandbox.calls()][-2:] == [40, 40]
    clean_sandbox.configure(rows_per_day={f"{ANDROID}|in_app_events_report": 30})
    assert len(rows_of(export(clean_sandbox, ANDROID, "in_app_events_report", day))) == 30
    clean_sandbox.configure(drop_columns=["Campaign"])
    assert "Campaign" not in export(clean_sandbox, ANDROID, "in_app_events_report", day).text.splitlines()[0].split(",")
    # Before the day's late-events close its late rows are held back; from it on they are served.
    usual = default_rows_for_day(ANDROID, "in_app_events_report", dt.date.fromisoformat(day))
    held = late_rows(ANDROID, "in_app_events_report", dt.date.fromisoformat(day), usual)
    assert held  # the usual day has late rows
    close = late_window_close(dt.date.fromisoformat(day), TZ)
    clean_sandbox.configure(drop_columns=[], rows_per_day={f"{ANDROID}|in_app_events_report": usual},
                            now=(close - dt.timedelta(seconds=1)).isoformat())
    early = rows_of(export(clean_sandbox, ANDROID, "in_app_events_report", day))
    clean_sandbox.configure(now=close.isoformat())
    late = rows_of(export(clean_sandbox, ANDROID, "in_app_events_report", day))
    assert (len(early), len(late)) == (usual - len(held), usual)
