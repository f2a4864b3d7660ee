"""AppsFlyer Pull API V2 raw-data endpoints of the sandbox, with deterministic synthetic data.

``GET /api/raw-data/export/app/{app_id}/{report}/v5`` for every raw report of adpipes' registry
(``adpipes.appsflyer.raw_data_api.RAW_REPORTS``: installs, in-app events, uninstalls and
reinstalls, each non-organic and organic, and the retargeting installs and in-app events), for
any number of apps per platform (iOS ids are ``id`` + digits, Android ids package names),
answering like the real API (the error answers of AppsFlyer's raw data OpenAPI file, restated in
``vendor-docs/appsflyer-pull-api-v2-notes.md``): bearer-token auth (401 ``{"message": "Supplied
API token is invalid"}``), 404 with an HTML body for an unknown app, 400 ``{"message": ...}`` for
bad parameters (``Invalid limit type``, an unknown ``currency``, a window longer than the
report's 60 or 31 days) and for windows older than the 90-day lookback (``Raw reports historical
lookback is limited to 90 days``), and ``text/csv`` with a header line that is present even when
no rows match.

Data is a pure function of (app id, report, local day, timezone): the same request always returns
the same rows, so tests can compare a split fetch against a whole-day fetch. The reports of an app
hang together the way one app's users do:

- ``installs_report`` and ``organic_installs_report`` rows start users: an AppsFlyer ID (first
  launch time in milliseconds + 19 digits), a device, a place and, for 70% of users, a Customer
  User ID (a whole number; a fifth of those users log in after installing, so their install row
  leaves it empty). Organic users have no media source and no touch.
- In-app event and uninstall rows belong to users installed 0-29 days earlier through the
  report of the same attribution (mostly recent ones); ``installs-retarget`` rows re-engage users
  of either kind 2-30 days after their install, with a retargeting touch between the two, and
  ``in-app-events-retarget`` rows belong to users re-engaged 0-29 days earlier. Reinstall rows
  bring back an earlier user under a new AppsFlyer ID with the same Customer User ID (one person,
  several AppsFlyer IDs; each AppsFlyer ID still has one Customer User ID in every report).
- Users are drawn from the install-like reports' *default* day sizes: a ``rows_per_day``
  override changes what a report serves, not the users the other reports draw from.

Differences from the real API, on purpose:

- ``maximum_rows`` accepts any positive integer (the real API only takes 200000 and 1000000,
  answering ``Invalid limit type`` otherwise) so tests can trigger truncation with small days.
- ``to`` given as ``yyyy-mm-dd hh:mm`` is inclusive through ``hh:mm:59`` (a date-only ``to``
  through 23:59:59, as with the real API).
- The sandbox clock (``configure(now=...)``, real time by default) stands for "now": rows later
  than now are not served (the real API cannot report the future either), so today's data grows
  during the day, and "today" of the lookback is the clock's.
- Late in-app events: AppsFlyer keeps an event's own time only when it arrives by 02:00 UTC of
  the UTC day after the event (S2S events API). About 5% of a local day's rows of each in-app
  event report (at least one in a day of 10 rows or more, chosen deterministically) are late:
  they carry their day's Event Time but are served only once the clock reaches
  ``late_window_close(day, timezone)`` (``late_events_close`` of adpipes, the rule the scheduler
  uses too). Before that, the day is served without them. A row with ``row_overrides`` values is
  never late (a test that plants a row wants it served).
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import random
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adpipes.appsflyer.raw_data_api import (
    IN_APP_EVENTS_REPORT,
    INSTALLS_REPORT,
    NON_ORGANIC,
    RAW_REPORTS,
    RETARGETING,
    late_events_close,
)
from adpipes.dev.sandbox.server import Request, Response
from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID

if TYPE_CHECKING:
    from adpipes.dev.sandbox.server import SandboxServer

ORGANIC_INSTALLS_REPORT = "organic_installs_report"
ORGANIC_IN_APP_EVENTS_REPORT = "organic_in_app_events_report"
UNINSTALLS_REPORT = "uninstall_events_report"
ORGANIC_UNINSTALLS_REPORT = "organic_uninstall_events_report"
REINSTALLS_REPORT = "reinstalls"
ORGANIC_REINSTALLS_REPORT = "reinstalls_organic"
RETARGETING_INSTALLS_REPORT = "installs-retarget"
RETARGETING_IN_APP_EVENTS_REPORT = "in-app-events-retarget"
RAW_PATH = r"/api/raw-data/export/app/(?P<app_id>[^/]+)/(?P<report>[^/]+)/v5"

# What the rows of each report are. The registry names the reports adpipes pulls; the sandbox
# must know what each one's rows look like, so a report added there fails here, at import.
INSTALL, EVENT, UNINSTALL, REINSTALL, CONVERSION = "install", "event", "uninstall", "reinstall", "conversion"
ROLES = {
    INSTALLS_REPORT: INSTALL, ORGANIC_INSTALLS_REPORT: INSTALL, RETARGETING_INSTALLS_REPORT: CONVERSION,
    IN_APP_EVENTS_REPORT: EVENT, ORGANIC_IN_APP_EVENTS_REPORT: EVENT, RETARGETING_IN_APP_EVENTS_REPORT: EVENT,
    UNINSTALLS_REPORT: UNINSTALL, ORGANIC_UNINSTALLS_REPORT: UNINSTALL,
    REINSTALLS_REPORT: REINSTALL, ORGANIC_REINSTALLS_REPORT: REINSTALL,
}
if set(ROLES) != set(RAW_REPORTS):
    raise RuntimeError(f"the sandbox does not know what rows these raw reports have: "
                       f"{sorted(set(RAW_REPORTS) ^ set(ROLES))}")
_BOTH_INSTALLS = (INSTALLS_REPORT, ORGANIC_INSTALLS_REPORT)
# The install-like reports whose users (or re-engagements) the rows of a report belong to.
_USERS_OF = {
    IN_APP_EVENTS_REPORT: (INSTALLS_REPORT,), UNINSTALLS_REPORT: (INSTALLS_REPORT,),
    ORGANIC_IN_APP_EVENTS_REPORT: (ORGANIC_INSTALLS_REPORT,), ORGANIC_UNINSTALLS_REPORT: (ORGANIC_INSTALLS_REPORT,),
    REINSTALLS_REPORT: _BOTH_INSTALLS, ORGANIC_REINSTALLS_REPORT: _BOTH_INSTALLS,
    RETARGETING_INSTALLS_REPORT: _BOTH_INSTALLS,
    RETARGETING_IN_APP_EVENTS_REPORT: (RETARGETING_INSTALLS_REPORT,),
}


def _lags(days: range, decay: float) -> tuple[tuple[int, ...], tuple[float, ...]]:
    weights, total = [], 0.0
    for n, _ in enumerate(days):
        total += decay ** n
        weights.append(total)
    return tuple(days), tuple(weights)


# Days between a user's start (install or re-engagement) and a row of theirs: events and
# uninstalls come mostly from recent users; reinstalls and re-engagements bring back older ones.
_LAGS = {
    EVENT: _lags(range(30), 0.85),
    UNINSTALL: _lags(range(30), 0.9),
    REINSTALL: _lags(range(1, 31), 1.0),
    CONVERSION: _lags(range(2, 31), 1.0),
}

DEFAULT_MAXIMUM_ROWS = 200_000
LOOKBACK_DAYS = 90
# A share of each day's in-app event rows arrives after the day's late-events close.
LATE_SHARE = 0.05

# Header names of the raw-data reports, in AppsFlyer's order (every raw report shares them). The
# sandbox keeps its own copy on purpose: it plays the vendor, not adpipes.
RAW_REPORT_COLUMNS: list[str] = [
    "Attributed Touch Type", "Attributed Touch Time", "Install Time", "Event Time", "Event Name",
    "Event Value", "Event Revenue", "Event Revenue Currency", "Event Revenue USD", "Event Source",
    "Is Receipt Validated", "Partner", "Media Source", "Channel", "Keywords", "Campaign",
    "Campaign ID", "Adset", "Adset ID", "Ad", "Ad ID", "Ad Type", "Site ID", "Sub Site ID",
    "Sub Param 1", "Sub Param 2", "Sub Param 3", "Sub Param 4", "Sub Param 5", "Cost Model",
    "Cost Value", "Cost Currency",
    "Contributor 1 Partner", "Contributor 1 Media Source", "Contributor 1 Campaign",
    "Contributor 1 Touch Type", "Contributor 1 Touch Time",
    "Contributor 2 Partner", "Contributor 2 Media Source", "Contributor 2 Campaign",
    "Contributor 2 Touch Type", "Contributor 2 Touch Time",
    "Contributor 3 Partner", "Contributor 3 Media Source", "Contributor 3 Campaign",
    "Contributor 3 Touch Type", "Contributor 3 Touch Time",
    "Region", "Country Code", "State", "City", "Postal Code", "DMA", "IP", "WIFI", "Operator",
    "Carrier", "Language", "AppsFlyer ID", "Advertising ID", "IDFA", "Android ID",
    "Customer User ID", "IMEI", "IDFV", "Platform", "Device Type", "OS Version", "App Version",
    "SDK Version", "App ID", "App Name", "Bundle ID", "Is Retargeting",
    "Retargeting Conversion Type", "Attribution Lookback", "Reengagement Window",
    "Is Primary Attribution", "User Agent", "HTTP Referrer", "Original URL",
]  # fmt: skip
_COL = {name: i for i, name in enumerate(RAW_REPORT_COLUMNS)}
_EVENT_TIME = _COL["Event Time"]
# What a touch (the attribution of a non-organic or retargeting row) fills; organic rows leave
# every one of these empty.
_TOUCH_COLUMNS = tuple(_COL[name] for name in RAW_REPORT_COLUMNS[:32] if name not in (
    "Install Time", "Event Time", "Event Name", "Event Value", "Event Revenue", "Event Revenue Currency",
    "Event Revenue USD", "Event Source", "Is Receipt Validated",
)) + tuple(_COL[name] for name in RAW_REPORT_COLUMNS if name.startswith("Contributor ")) + tuple(
    _COL[name] for name in ("Attribution Lookback", "Reengagement Window", "HTTP Referrer", "Original URL"))

# Baseline rows per day and app; each day varies by up to +-10% (deterministically).
DEFAULT_ROWS_PER_DAY = {
    ("android", INSTALLS_REPORT): 150,
    ("ios", INSTALLS_REPORT): 100,
    ("android", IN_APP_EVENTS_REPORT): 400,
    ("ios", IN_APP_EVENTS_REPORT): 300,
    ("android", ORGANIC_INSTALLS_REPORT): 140,
    ("ios", ORGANIC_INSTALLS_REPORT): 110,
    ("android", ORGANIC_IN_APP_EVENTS_REPORT): 300,
    ("ios", ORGANIC_IN_APP_EVENTS_REPORT): 250,
    ("android", UNINSTALLS_REPORT): 20,
    ("ios", UNINSTALLS_REPORT): 15,
    ("android", ORGANIC_UNINSTALLS_REPORT): 20,
    ("ios", ORGANIC_UNINSTALLS_REPORT): 15,
    ("android", REINSTALLS_REPORT): 10,
    ("ios", REINSTALLS_REPORT): 8,
    ("android", ORGANIC_REINSTALLS_REPORT): 10,
    ("ios", ORGANIC_REINSTALLS_REPORT): 8,
    ("android", RETARGETING_INSTALLS_REPORT): 30,
    ("ios", RETARGETING_INSTALLS_REPORT): 25,
    ("android", RETARGETING_IN_APP_EVENTS_REPORT): 80,
    ("ios", RETARGETING_IN_APP_EVENTS_REPORT): 60,
}

INVALID_TOKEN_MESSAGE = "Supplied API token is invalid"
QUOTA_MESSAGE = "Your API call limit has been reached for the given report type"
LOOKBACK_MESSAGE = "Raw reports historical lookback is limited to 90 days"
INVALID_LIMIT_MESSAGE = "Invalid limit type"
# The raw data OpenAPI file's `currency` enum.
CURRENCIES = ("preferred", "USD")
NOT_FOUND_HTML = (
    "<!DOCTYPE html><html><head><title>404 Not Found</title></head>"
    "<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>"
)
# What a CDN or load balancer in front of an API answers during maintenance, with status 200
# (one line, as such pages often are: a CSV reader takes it for a header without rows).
MAINTENANCE_HTML = (
    "<!DOCTYPE html><html><head><title>Scheduled maintenance</title></head><body><h1>We will be "
    "back soon</h1><p>AppsFlyer is performing scheduled maintenance.</p></body></html>"
)
MAINTENANCE_TEXT = "Service temporarily unavailable. Please try again later.\n"
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"

_IN_APP_EVENTS = ("af_purchase", "af_login", "af_level_achieved", "af_tutorial_completion")
_IN_APP_WEIGHTS = (25, 40, 25, 10)
# Re-engagement (the app was still installed) and re-attribution (reinstalled from the campaign).
_CONVERSION_TYPES = ("re-engagement", "re-attribution")
_CONVERSION_WEIGHTS = (80, 20)
# Booleans come in three spellings in real reports, varying between rows.
_BOOL_SPELLINGS = (("true", "false"), ("True", "False"), ("1", "0"))
_PRICES_USD = ("0.99", "1.99", "4.99", "9.99", "19.99")
_PRICES_KRW = ("1200", "5500", "12000")
_KRW_PER_USD = 1380.0
# User acquisition campaigns, with commas and quotes: CSV must quote them.
_CAMPAIGNS = {
    "googleadwords_int": [("KR_UAC_Install, AOS", "20451"), ('Brand "Search" KR', "20452")],
    "Facebook Ads": [('KR_"Spring, Sale"_Purchase', "238501"), ("Lookalike 1%, KR", "238502")],
    "tiktokglobal_int": [("TT_KR_Install", "17003"), ('TT "Creators", wave 2', "17004")],
    "Apple Search Ads": [("ASA_Brand_KR", "9001"), ("ASA Generic, Puzzle", "9002")],
}
_RETARGETING_CAMPAIGNS = {
    "Facebook Ads": [('RT_KR_"Dormant 7d", purchase', "338101"), ("RT_KR_Cart abandoners", "338102")],
    "googleadwords_int": [("RT_ACe_Lapsed users, KR", "20471")],
    "criteo_int": [("Criteo RT dynamic, KR", "88001"), ("Criteo RT, lapsed payers", "88002")],
}
_CHANNELS = {
    "googleadwords_int": ("ACI_Search", "ACI_YouTube", "ACI_Display"),
    "Facebook Ads": ("Facebook", "Instagram", "Audience Network"),
    "tiktokglobal_int": ("TikTok",),
    "Apple Search Ads": ("",),
    "criteo_int": ("",),
}
_COUNTRIES = (
    ("KR", "AS", "11", "Seoul", "04524", "ko-KR"),
    ("KR", "AS", "26", "Busan", "48058", "ko-KR"),
    ("JP", "AS", "13", "Tokyo", "100-0001", "ja-JP"),
    ("US", "NA", "CA", "San Jose", "95113", "en-US"),
)
_CARRIERS = (("SK Telecom", "45005"), ("KT", "45008"), ("LG U+", "45006"), ("", ""))
_ANDROID_DEVICES = (("samsung-SM-S918N", "14"), ("samsung-SM-A546S", "13"), ("google-Pixel 8", "14"))
_IOS_DEVICES = (("iPhone15,2", "17.5.1"), ("iPhone14,5", "16.7.8"), ("iPad13,4", "17.4"))


def platform_of(app_id: str) -> str:
    # AppsFlyer iOS app ids are "id" + the App Store id; Android ids are package names (which
    # may start with "id" too: "idle.games" is Android).
    return "ios" if re.fullmatch(r"id\d+", app_id) else "android"


def late_window_close(day: dt.date, timezone: str) -> dt.datetime:
    """From when the late in-app event rows of local ``day`` are served: adpipes'
    ``late_events_close`` (02:00 UTC of the UTC day after the day's last instant), one rule for
    the sandbox and the scheduler that waits for it."""
    return late_events_close(day, timezone)


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("|".join(parts).encode("utf-8")).digest()[:8], "big")


def default_rows_for_day(app_id: str, report: str, day: dt.date) -> int:
    base = DEFAULT_ROWS_PER_DAY[(platform_of(app_id), report)]
    rng = random.Random(_seed(app_id, report, day.isoformat(), "count"))
    return max(0, round(base * rng.uniform(0.9, 1.1)))


@lru_cache(maxsize=4096)
def late_rows(app_id: str, report: str, day: dt.date, n_rows: int) -> frozenset[int]:
    """Indexes (in ``generate_day``'s order) of the day's late rows: in-app event reports only,
    ``LATE_SHARE`` of the rows and at least one in a day of 10 rows or more."""
    if RAW_REPORTS[report].kind != "events" or n_rows < 10:
        return frozenset()
    rng = random.Random(_seed(app_id, report, day.isoformat(), "late"))
    return frozenset(rng.sample(range(n_rows), max(1, round(n_rows * LATE_SHARE))))


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:]}"


def _bool(spelling: tuple[str, str], value: bool) -> str:
    return spelling[0] if value else spelling[1]


def _fmt(moment: dt.datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime(TIMESTAMP_FORMAT)


def _appsflyer_id(rng: random.Random, first_launch: dt.datetime) -> str:
    return f"{int(first_launch.timestamp() * 1000)}-{rng.randint(10**18, 10**19 - 1)}"


def _day_offsets(app_id: str, report: str, day: dt.date, timezone: str, n_rows: int,
                 ) -> tuple[random.Random, dt.datetime, list[int]]:
    """The day's random stream, the UTC start of the local day and its rows' sorted second
    offsets, uniform over the real length of the local day (23 or 25 hours on DST changes)."""
    rng = random.Random(_seed(app_id, report, day.isoformat()))
    tz = ZoneInfo(timezone)
    start = dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.timezone.utc)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=tz).astimezone(dt.timezone.utc)
    seconds = int((end - start).total_seconds())
    return rng, start, sorted(rng.randrange(seconds) for _ in range(n_rows))


@lru_cache(maxsize=4096)
def _pool_times(app_id: str, report: str, day: dt.date, timezone: str) -> tuple[dt.datetime, ...]:
    """When the users of an install-like report's default day started (its rows' Event Times)."""
    _, start, offsets = _day_offsets(app_id, report, day, timezone, default_rows_for_day(app_id, report, day))
    return tuple(start + dt.timedelta(seconds=offset) for offset in offsets)


@dataclass(frozen=True)
class _User:
    """Someone who installed the app (or re-engaged): what every row of theirs shares."""

    appsflyer_id: str
    started: dt.datetime  # install (or re-engagement) instant, UTC
    install_utc: dt.datetime
    customer_user_id: str  # "" when the app never identified them
    # Logged in only after installing: their install row has no Customer User ID yet.
    cuid_after_install: bool
    # The user's columns (ids, device, place, attribution) in RAW_REPORT_COLUMNS order.
    base: tuple[str, ...]
    conversion_type: str = ""  # re-engagement or re-attribution (retargeting users)


def _app_name(app_id: str) -> str:
    return "Adpipes Sandbox" if app_id in (SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID) else f"Adpipes Sandbox {app_id}"


def _put_campaign(rng: random.Random, put: Callable[[str, str], None], media_source: str, campaign: str,
                  campaign_id: str, *, adsets: int, ad: Callable[[int], str], ads: int,
                  ad_types: tuple[str, ...]) -> None:
    """The campaign, channel, adset and ad columns of a touch (user acquisition or retargeting)."""
    put("Campaign", campaign)
    put("Campaign ID", campaign_id)
    put("Channel", rng.choice(_CHANNELS[media_source]))
    adset = rng.randint(1, adsets)
    put("Adset", f"{campaign} - adset {adset}")
    put("Adset ID", f"{campaign_id}{adset:02d}")
    put("Ad", ad(rng.randint(1, ads)))
    put("Ad ID", str(rng.randint(10_000_000, 99_999_999)))
    put("Ad Type", rng.choice(ad_types))


def _put_touch(rng: random.Random, row: list[str], app_id: str, platform: str, converted: dt.datetime,
               tz: ZoneInfo, earliest: dt.datetime | None = None) -> None:
    """A user-acquisition touch that won the install (or reinstall) at ``converted``."""
    def put(name: str, value: str) -> None:
        row[_COL[name]] = value

    sources = ["googleadwords_int", "Facebook Ads", "tiktokglobal_int"]
    if platform == "ios":
        sources.append("Apple Search Ads")
    media_source = rng.choice(sources)
    touch_type = "impression" if rng.random() < 0.2 else "click"
    put("Media Source", media_source)
    put("Attributed Touch Type", touch_type)
    window = 86400 if touch_type == "impression" else 7 * 86400
    put("Attributed Touch Time", _fmt(converted - dt.timedelta(seconds=rng.randint(30, window)), tz))
    put("Attribution Lookback", "1d" if touch_type == "impression" else "7d")
    campaign, campaign_id = rng.choice(_CAMPAIGNS[media_source])
    _put_campaign(rng, put, media_source, campaign, campaign_id, adsets=3, ad=lambda n: f"creative_{n}.mp4",
                  ads=5, ad_types=("video", "banner", "playable"))
    put("Site ID", str(rng.randint(1000, 9999)) if media_source == "googleadwords_int" else "")
    if media_source == "Apple Search Ads":
        put("Keywords", rng.choice(("puzzle game", "brain games", "adpipes")))
    if rng.random() < 0.1:
        put("Partner", "agency_one")
    if rng.random() < 0.5:
        put("Cost Model", "CPI")
        put("Cost Value", rng.choice(("0.5", "1.2", "2.75")))
        put("Cost Currency", "USD")
    if rng.random() < 0.3:
        put("Sub Param 1", rng.choice(("spring", "retention", "")))
    put("Original URL", f"https://app.appsflyer.com/{app_id}?pid={media_source}&c={campaign_id}")
    if rng.random() < 0.1:
        other = rng.choice([s for s in sources if s != media_source])
        put("Contributor 1 Media Source", other)
        put("Contributor 1 Campaign", _CAMPAIGNS[other][0][0])
        put("Contributor 1 Touch Type", "click")
        put("Contributor 1 Touch Time", _fmt(converted - dt.timedelta(seconds=rng.randint(3600, 10 * 86400)), tz))


@lru_cache(maxsize=1 << 15)
def _user(app_id: str, report: str, day: dt.date, index: int, installed: dt.datetime, timezone: str) -> _User:
    """The user started by row ``index`` of an install-like report's day, installed at ``installed``."""
    rng = random.Random(_seed(app_id, report, day.isoformat(), str(index), "user"))
    tz = ZoneInfo(timezone)
    platform = platform_of(app_id)
    row = [""] * len(RAW_REPORT_COLUMNS)

    def put(name: str, value: str) -> None:
        row[_COL[name]] = value

    appsflyer_id = _appsflyer_id(rng, installed)
    cuid = str(rng.randint(1_000_000_000, 1_009_999_999)) if rng.random() < 0.7 else ""
    put("Install Time", _fmt(installed, tz))
    put("AppsFlyer ID", appsflyer_id)
    put("Customer User ID", cuid)
    if RAW_REPORTS[report].attribution == NON_ORGANIC:
        _put_touch(rng, row, app_id, platform, installed, tz)
    country, region, state, city, postal, language = rng.choice(_COUNTRIES)
    put("Region", region)
    put("Country Code", country)
    put("State", state)
    put("City", city)
    put("Postal Code", postal)
    carrier, operator = rng.choice(_CARRIERS)
    put("Carrier", carrier)
    put("Operator", operator)
    put("Language", language)
    put("Platform", platform)
    if platform == "ios":
        device, os_version = rng.choice(_IOS_DEVICES)
        put("IDFA", _uuid(rng).upper())
        put("IDFV", _uuid(rng).upper())
        bundle = "com.adpipes.sandbox.ios" if app_id == SANDBOX_IOS_APP_ID else f"com.adpipes.ios.app{app_id[2:]}"
        put("Bundle ID", bundle)
        put("SDK Version", "v6.15.1")
        put("User Agent", f"AdpipesSandbox/3 CFNetwork/1490.0.4 Darwin/23.2.0 ({device})")
    else:
        device, os_version = rng.choice(_ANDROID_DEVICES)
        put("Advertising ID", _uuid(rng))
        put("Bundle ID", app_id)
        put("SDK Version", "v6.14.2")
        put("User Agent", f"Dalvik/2.1.0 (Linux; U; Android {os_version}; {device.split('-', 1)[1]})")
    put("Device Type", device)
    put("OS Version", os_version)
    put("App ID", app_id)
    put("App Name", _app_name(app_id))
    return _User(appsflyer_id, installed, installed, cuid, bool(cuid) and rng.random() < 0.2, tuple(row))


def _pool_user(app_id: str, report: str, day: dt.date, timezone: str, index: int) -> _User:
    times = _pool_times(app_id, report, day, timezone)
    if report == RETARGETING_INSTALLS_REPORT:
        return _retargeted(app_id, day, index, times[index], timezone)
    return _user(app_id, report, day, index, times[index], timezone)


def _pick_user(rng: random.Random, app_id: str, report: str, role: str, day: dt.date, timezone: str,
               moment: dt.datetime, strictly_before: bool, avoid: set[str]) -> _User:
    """A user of the report's source reports who started before ``moment`` (by a lag in
    days drawn for the role), not one of ``avoid`` unless no other comes up."""
    sources = _USERS_OF[report]
    lags, weights = _LAGS[role]
    user = None
    for _ in range(12):
        lag = rng.choices(lags, cum_weights=weights)[0]
        source = sources[0] if len(sources) == 1 else rng.choice(sources)
        source_day = day - dt.timedelta(days=lag)
        times = _pool_times(app_id, source, source_day, timezone)
        started = (bisect.bisect_left if strictly_before else bisect.bisect_right)(times, moment)
        if started == 0:
            continue
        user = _pool_user(app_id, source, source_day, timezone, rng.randrange(started))
        if user.appsflyer_id not in avoid:
            return user
    if user is not None:
        return user
    # Early in a day whose lag kept coming up 0: any user of the day before.
    source_day = day - dt.timedelta(days=max(1, lags[0]))
    times = _pool_times(app_id, sources[0], source_day, timezone)
    if not times:
        raise RuntimeError(f"no users in {sources[0]} of {source_day} for app {app_id}")
    return _pool_user(app_id, sources[0], source_day, timezone, rng.randrange(len(times)))


@lru_cache(maxsize=1 << 14)
def _retargeted(app_id: str, day: dt.date, index: int, converted: dt.datetime, timezone: str) -> _User:
    """The user re-engaged by row ``index`` of a day of installs-retarget, at ``converted``: an
    earlier user (same AppsFlyer ID, device and Customer User ID) with a retargeting touch
    after their install and before the conversion in place of their original attribution."""
    rng = random.Random(_seed(app_id, RETARGETING_INSTALLS_REPORT, day.isoformat(), str(index), "user"))
    tz = ZoneInfo(timezone)
    user = _pick_user(rng, app_id, RETARGETING_INSTALLS_REPORT, CONVERSION, day, timezone, converted,
                      strictly_before=True, avoid=set())
    row = list(user.base)
    for column in _TOUCH_COLUMNS:
        row[column] = ""

    def put(name: str, value: str) -> None:
        row[_COL[name]] = value

    conversion_type = rng.choices(_CONVERSION_TYPES, weights=_CONVERSION_WEIGHTS)[0]
    media_source = rng.choice(sorted(_RETARGETING_CAMPAIGNS))
    campaign, campaign_id = rng.choice(_RETARGETING_CAMPAIGNS[media_source])
    since_install = int((converted - user.install_utc).total_seconds())
    touch_type = "impression" if rng.random() < 0.1 else "click"
    put("Media Source", media_source)
    put("Attributed Touch Type", touch_type)
    put("Attributed Touch Time", _fmt(converted - dt.timedelta(seconds=rng.randint(
        30, max(30, min(since_install - 1, 86400 if touch_type == "impression" else 7 * 86400)))), tz))
    put("Attribution Lookback", "1d" if touch_type == "impression" else "7d")
    put("Reengagement Window", "30d")
    _put_campaign(rng, put, media_source, campaign, campaign_id, adsets=2, ad=lambda n: f"rt_creative_{n}.png",
                  ads=3, ad_types=("banner", "video"))
    put("Original URL", f"https://app.appsflyer.com/{app_id}?pid={media_source}&c={campaign_id}"
                        "&is_retargeting=true")
    put("Retargeting Conversion Type", conversion_type)
    return _User(user.appsflyer_id, converted, user.install_utc, user.customer_user_id, False, tuple(row),
                 conversion_type)


@lru_cache(maxsize=512)
def generate_day(app_id: str, report: str, day: dt.date, timezone: str, n_rows: int) -> tuple[tuple[str, ...], ...]:
    """The rows of one local day, sorted by Event Time, in ``RAW_REPORT_COLUMNS`` order (late
    rows included: ``late_rows`` names them).

    Event times are uniform over the real length of the local day (23 or 25 hours on DST
    changes), written as offset-less wall times in ``timezone`` like AppsFlyer does.
    """
    return tuple(iter_day_rows(app_id, report, day, timezone, n_rows))


def iter_day_rows(app_id: str, report: str, day: dt.date, timezone: str, n_rows: int) -> Iterator[tuple[str, ...]]:
    """The rows of ``generate_day`` one at a time (the benchmark writes 1M rows without holding them)."""
    rng, start, offsets = _day_offsets(app_id, report, day, timezone, n_rows)
    tz = ZoneInfo(timezone)
    role = ROLES[report]
    platform = platform_of(app_id)
    # (AppsFlyer ID, Event Name, Event Time) is unique within a report: a user's row in one
    # second is not drawn twice; uninstalls and reinstalls take a user once a day.
    second, in_second = -1, set()
    once_a_day: set[str] = set()
    for index, offset in enumerate(offsets):
        if offset != second:
            second, in_second = offset, set()
        moment = start + dt.timedelta(seconds=offset)
        row = _make_row(rng, app_id, report, role, platform, day, index, moment, timezone, tz,
                        in_second, once_a_day)
        in_second.add((row[_COL["AppsFlyer ID"]], row[_COL["Event Name"]]))
        yield tuple(row)


def _make_row(rng: random.Random, app_id: str, report: str, role: str, platform: str, day: dt.date,
              index: int, moment: dt.datetime, timezone: str, tz: ZoneInfo,
              in_second: set[tuple[str, str]], once_a_day: set[str]) -> list[str]:
    spelling = rng.choice(_BOOL_SPELLINGS)
    name = ""
    if role == INSTALL:
        user = _user(app_id, report, day, index, moment, timezone)
        row = list(user.base)
        if user.cuid_after_install:
            row[_COL["Customer User ID"]] = ""
        name = "install"
    elif role == CONVERSION:
        user = _retargeted(app_id, day, index, moment, timezone)
        row = list(user.base)
        name = user.conversion_type
    elif role == EVENT:
        for _ in range(16):
            user = _pick_user(rng, app_id, report, role, day, timezone, moment, False, set())
            name = rng.choices(_IN_APP_EVENTS, weights=_IN_APP_WEIGHTS)[0]
            if (user.appsflyer_id, name) not in in_second:
                break
        row = list(user.base)
    else:  # uninstall, reinstall
        user = _pick_user(rng, app_id, report, role, day, timezone, moment, True, once_a_day)
        once_a_day.add(user.appsflyer_id)
        row = list(user.base)
        name = role
        if role == REINSTALL:
            # Back under a new AppsFlyer ID (the app's data went with the uninstall), on the same
            # device and, once they log in, the same Customer User ID.
            for column in _TOUCH_COLUMNS:
                row[column] = ""
            row[_COL["AppsFlyer ID"]] = _appsflyer_id(rng, moment)
            row[_COL["Install Time"]] = _fmt(moment, tz)
            if RAW_REPORTS[report].attribution == NON_ORGANIC:
                _put_touch(rng, row, app_id, platform, moment, tz)

    def put(column: str, value: str) -> None:
        row[_COL[column]] = value

    put("Event Time", _fmt(moment, tz))
    put("Event Name", name)
    put("Event Source", "" if role == UNINSTALL else "SDK")
    put("Is Retargeting", _bool(spelling, RAW_REPORTS[report].attribution == RETARGETING))
    put("Is Primary Attribution", _bool(spelling, True))
    put("WIFI", _bool(spelling, rng.random() < 0.6))
    put("IP", f"203.0.113.{rng.randint(1, 254)}")
    put("App Version", rng.choice(("3.2.0", "3.2.1", "3.3.0")))
    put("Is Receipt Validated", _bool(spelling, False))
    if role == EVENT:
        _put_event_value(rng, put, platform, name, spelling)
    return row


def _put_event_value(rng: random.Random, put: Any, platform: str, name: str, spelling: tuple[str, str]) -> None:
    if name == "af_purchase":
        if rng.random() < 0.8:
            price, currency = rng.choice(_PRICES_USD), "USD"
            usd = price
        else:
            price, currency = rng.choice(_PRICES_KRW), "KRW"
            usd = f"{float(price) / _KRW_PER_USD:.4f}"
        if platform == "android":
            receipt = (f"GPA.{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}-"
                       f"{rng.randint(1000, 9999)}-{rng.randint(10000, 99999)}")
        else:
            receipt = str(rng.randint(2_000_000_000_000_000_000, 2_000_009_999_999_999_999))
        put("Event Value", json.dumps(
            {"af_revenue": price, "af_currency": currency, "af_receipt_id": receipt}, separators=(",", ":"),
        ))
        put("Event Revenue", price)
        put("Event Revenue Currency", currency)
        put("Event Revenue USD", usd)
        put("Is Receipt Validated", _bool(spelling, rng.random() < 0.9))
    elif name == "af_level_achieved":
        put("Event Value", json.dumps({"af_level": str(rng.randint(1, 60))}, separators=(",", ":")))
    elif name == "af_login":
        put("Event Value", json.dumps({"af_login_method": rng.choice(("google", "apple", "guest"))},
                                      separators=(",", ":")))
    else:
        put("Event Value", json.dumps({"af_success": "true"}, separators=(",", ":")))


# -- request handling ----------------------------------------------------------------------------

class _BadRequest(Exception):
    pass


def _parse_time(value: str, name: str, *, end: bool) -> dt.datetime:
    """Parse ``from``/``to``; ``to`` is inclusive at the precision given."""
    value = value.strip()
    for fmt, inclusive_pad in (
        ("%Y-%m-%d %H:%M:%S", dt.timedelta(0)),
        ("%Y-%m-%d %H:%M", dt.timedelta(seconds=59)),
        ("%Y-%m-%d", dt.timedelta(hours=23, minutes=59, seconds=59)),
    ):
        try:
            parsed = dt.datetime.strptime(value, fmt)
        except ValueError:
            continue
        return parsed + inclusive_pad if end else parsed
    raise _BadRequest(f"Invalid '{name}' value {value!r}: use yyyy-mm-dd or yyyy-mm-dd hh:mm[:ss]")


def _json_error(status: int, message: str, call: dict[str, Any]) -> Response:
    return Response.json_body(status, {"message": message}, call=call)


def api_call_preamble(server: SandboxServer, request: Request, app_id: str, report: str,
                      ) -> tuple[dict[str, Any], Response | None, float]:
    """What every AppsFlyer endpoint of the sandbox does first: the call-log entry, an injected
    fault (``take_fault(app_id, report)``), bearer-token auth and the app check.

    Returns ``(call, early_response, delay)``; ``early_response`` is None when the request may be
    served. Shared by the raw-data, aggregate and cohort endpoints.
    """
    call: dict[str, Any] = {
        "method": request.method,
        "path": request.path,
        "app_id": app_id,
        "report": report,
        # Query parameters only: the token travels in a header and is never recorded.
        "params": dict(request.params),
        "rows": 0,
    }
    fault = server.take_fault(app_id, report)
    delay = 0.0
    if fault is not None:
        call["fault"] = fault.kind
        if fault.kind == "429":
            headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            return call, Response.json_body(429, {"message": "Too Many Requests"}, headers=headers,
                                            call=call), delay
        if fault.kind in ("500", "503"):
            return call, Response.text(int(fault.kind), "<html><body>Service Unavailable</body></html>",
                                       "text/html", call=call), delay
        if fault.kind == "empty_200":
            return call, Response(200, b"", "text/csv", call=call), delay
        if fault.kind == "html_200":
            return call, Response.text(200, MAINTENANCE_HTML, "text/html", call=call), delay
        if fault.kind == "text_200":
            return call, Response.text(200, MAINTENANCE_TEXT, call=call), delay
        if fault.kind == "quota":
            return call, _json_error(400, QUOTA_MESSAGE, call), delay
        if fault.kind == "quota_403":
            return call, Response.text(403, f"Limit reached for {report}", call=call), delay
        if fault.kind == "token_revoked":
            return call, _json_error(401, INVALID_TOKEN_MESSAGE, call), delay
        if fault.kind == "slow":
            delay = fault.seconds

    auth = request.headers.get("Authorization", "")
    if not hmac.compare_digest(auth.encode("utf-8"), f"Bearer {server.appsflyer_token}".encode("utf-8")):
        return call, _json_error(401, INVALID_TOKEN_MESSAGE, call), delay
    if app_id not in server.config_snapshot()["apps"]:
        return call, Response.text(404, NOT_FOUND_HTML, "text/html", call=call), delay
    return call, None, delay


def raw_data_export(server: SandboxServer, request: Request) -> Response:
    app_id = request.match["app_id"]
    report = request.match["report"]
    call, early, delay = api_call_preamble(server, request, app_id, report)
    if early is not None:
        return early
    config = server.config_snapshot()
    if report not in RAW_REPORTS:
        return _json_error(400, f"Invalid report type: {report}", call)

    try:
        window = _parse_window(request.params, report)
    except _BadRequest as exc:
        return _json_error(400, str(exc), call)
    start, end, timezone, maximum_rows = window
    now = server.now()
    today = now.astimezone(ZoneInfo(timezone)).date()
    if start.date() < today - dt.timedelta(days=LOOKBACK_DAYS):
        return _json_error(400, LOOKBACK_MESSAGE, call)

    cap = maximum_rows if config["truncate_at"] is None else min(maximum_rows, config["truncate_at"])
    malformed = call.get("fault") == "malformed_csv"
    key = None if malformed else _answer_key(app_id, report, start, end, timezone, cap, config, now)
    cached = _ANSWERS.get(key) if key is not None else None
    if cached is not None:
        body, call["rows"] = cached
        return Response(200, body, "text/csv", call=call, delay=delay)
    header, rows = _window_rows(app_id, report, start, end, timezone, config, now)
    rows = rows[:cap]  # silently, like the real API: no flag, no paging
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    if malformed:
        # A row with one field too many: no CSV reader can tell which value is misplaced.
        writer.writerow([*(rows[0] if rows else [""] * len(header)), "stray"])
    call["rows"] = len(rows)
    body = out.getvalue().encode("utf-8")
    if key is not None:
        _ANSWERS.put(key, (body, len(rows)))
    return Response(200, body, "text/csv", call=call, delay=delay)


class _AnswerCache:
    """The last raw-report answers, by everything that decides their bytes, up to a total size.

    A day is generated and formatted once: asking again for the same window (a re-run, the
    ingest benchmark's timed run after its warm-up) costs the sandbox nothing, as a vendor serving
    a prepared export would, so a measurement of adpipes is not one of the sandbox's CSV writer.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._answers: OrderedDict[str, tuple[bytes, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[bytes, int] | None:
        with self._lock:
            found = self._answers.get(key)
            if found is not None:
                self._answers.move_to_end(key)
            return found

    def put(self, key: str, answer: tuple[bytes, int]) -> None:
        if len(answer[0]) > self.max_bytes:
            return
        with self._lock:
            self._answers[key] = answer
            while sum(len(body) for body, _ in self._answers.values()) > self.max_bytes:
                self._answers.popitem(last=False)


# Bounded: a dev sandbox serving a month of million-row days must not hold them all in memory
# (the usual dev days are a few hundred KB; the benchmark's 3M-row days about 1.4 GB per app).
_ANSWERS = _AnswerCache(4 << 30)


def _answer_key(app_id: str, report: str, start: dt.datetime, end: dt.datetime, timezone: str, cap: int,
                config: dict[str, Any], now: dt.datetime) -> str:
    """What decides a raw answer's bytes: the request, the data settings, and of the clock only
    what it changes (rows later than now are not served, late rows wait for their day's close)."""
    now_local = now.astimezone(ZoneInfo(timezone)).strftime(TIMESTAMP_FORMAT)
    days = [start.date() + dt.timedelta(days=n) for n in range((end.date() - start.date()).days + 1)]
    settings = {k: v for k, v in config.items() if k not in ("now",) and not k.startswith("aggregate_")}
    return json.dumps([app_id, report, start.isoformat(), end.isoformat(), timezone, cap, settings,
                       min(end.strftime(TIMESTAMP_FORMAT), now_local),
                       [now < late_window_close(day, timezone) for day in days]], sort_keys=True, default=str)


def _parse_window(params: dict[str, str], report: str) -> tuple[dt.datetime, dt.datetime, str, int]:
    if not params.get("from") or not params.get("to"):
        raise _BadRequest("Both 'from' and 'to' parameters are required")
    start = _parse_time(params["from"], "from", end=False)
    end = _parse_time(params["to"], "to", end=True)
    if end < start:
        raise _BadRequest("'to' must not be earlier than 'from'")
    # One call covers at most 60 days of install-like reports, 31 of in-app events.
    window_days = RAW_REPORTS[report].window_days
    if (end.date() - start.date()).days >= window_days:
        raise _BadRequest(f"The date range for {report} is limited to {window_days} days")
    timezone = params.get("timezone") or "UTC"
    try:
        # IANA names only: AppsFlyer rejects offsets like "+09:00".
        if not re.fullmatch(r"[A-Za-z_]+(?:/[A-Za-z0-9_+\-]+)*", timezone):
            raise ValueError
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise _BadRequest(f"Invalid timezone: {timezone}") from None
    raw_max = params.get("maximum_rows") or str(DEFAULT_MAXIMUM_ROWS)
    try:
        maximum_rows = int(raw_max)
        if maximum_rows < 1:
            raise ValueError
    except ValueError:
        raise _BadRequest(INVALID_LIMIT_MESSAGE) from None
    if params.get("currency", "USD") not in CURRENCIES:
        # The document gives the enum but not the answer to another value: a 400 like the others.
        raise _BadRequest(f"Invalid currency: {params['currency']} (use preferred or USD)")
    return start, end, timezone, maximum_rows


def rows_for_day(app_id: str, report: str, day: dt.date, config: dict[str, Any]) -> int:
    """The rows of the day: the ``rows_per_day`` override, else the usual count. An override
    below the usual count serves the usual day's first rows (see ``_window_rows``)."""
    override = config["rows_per_day"].get(f"{app_id}|{report}")
    return default_rows_for_day(app_id, report, day) if override is None else int(override)


def _window_rows(app_id: str, report: str, start: dt.datetime, end: dt.datetime, timezone: str,
                 config: dict[str, Any], now: dt.datetime) -> tuple[list[str], list[list[str]]]:
    now_local = now.astimezone(ZoneInfo(timezone)).strftime(TIMESTAMP_FORMAT)
    low = start.strftime(TIMESTAMP_FORMAT)
    high = min(end.strftime(TIMESTAMP_FORMAT), now_local)
    overrides = [o for o in config["row_overrides"]
                 if o.get("app_id") == app_id and o.get("report") == report]
    drop = set(config["drop_columns"])
    keep = [i for i, name in enumerate(RAW_REPORT_COLUMNS) if name not in drop]
    extra = list(config["extra_columns"])
    header = [RAW_REPORT_COLUMNS[i] for i in keep] + extra
    out: list[list[str]] = []
    day = start.date()
    while day <= end.date():
        n_rows = rows_for_day(app_id, report, day, config)
        usual = default_rows_for_day(app_id, report, day)
        # The usual day's rows stay what they are whatever the override (the archive compares a
        # re-pull with what it holds, row by row): fewer rows than usual are its first rows, as a
        # server cutting an answer off or missing data would serve; more are its rows plus rows
        # of a bigger day spread over the day (rows that arrived, or a busier day).
        generated = generate_day(app_id, report, day, timezone, usual)[:n_rows]
        if n_rows > usual:
            bigger = generate_day(app_id, report, day, timezone, n_rows)
            added = random.Random(_seed(app_id, report, day.isoformat(), "added")).sample(range(n_rows), n_rows - usual)
            generated = generated + tuple(bigger[i] for i in sorted(added))
        # The day's late rows have not arrived before its late-events close.
        held_back = (late_rows(app_id, report, day, max(n_rows, usual))
                     if now < late_window_close(day, timezone) else ())
        planted = {int(o.get("row", 0)): o.get("values", {}) for o in overrides
                   if o.get("day") == day.isoformat()}
        for index, row in enumerate(generated):
            # Fixed-width timestamps compare correctly as strings.
            # A row a test planted values in is its own: it is never held back as late.
            if not (low <= row[_EVENT_TIME] <= high) or (index in held_back and index not in planted):
                continue
            values = list(row)
            if index in planted:
                for name, value in planted[index].items():
                    if name in _COL:
                        values[_COL[name]] = "" if value is None else str(value)
            line = [values[i] for i in keep]
            if extra:
                line.extend(f"{name.lower().replace(' ', '_')}_{index}" for name in extra)
            out.append(line)
        day += dt.timedelta(days=1)
    return header, out


def register(server: SandboxServer) -> None:
    server.add_route("GET", RAW_PATH, raw_data_export)
    # The aggregate (daily_report) and Cohort endpoints live in their own modules.
    from adpipes.dev.sandbox import appsflyer_aggregate, appsflyer_cohort

    appsflyer_aggregate.register(server)
    appsflyer_cohort.register(server)
