"""AppsFlyer Pull API V2 raw-data endpoints of the sandbox, with deterministic synthetic data.

``GET /api/raw-data/export/app/{app_id}/{report}/v5`` for ``installs_report`` and
``in_app_events_report``, answering like the real API (the error answers of AppsFlyer's raw data
OpenAPI file, restated in ``vendor-docs/appsflyer-pull-api-v2-notes.md``): bearer-token auth (401
``{"message": "Supplied API token is invalid"}``), 404 with an HTML body for an unknown app, 400
``{"message": ...}`` for bad parameters (``Invalid limit type``, an unknown ``currency``) and for
windows older than the 90-day lookback (``Raw reports historical lookback is limited to 90 days``),
and ``text/csv`` with a header line that is present even when no rows match.

Data is a pure function of (app id, report, local day, timezone): the same request always returns
the same rows, so tests can compare a split fetch against a whole-day fetch. Differences from the
real API, on purpose:

- ``maximum_rows`` accepts any positive integer (the real API only takes 200000 and 1000000,
  answering ``Invalid limit type`` otherwise) so tests can trigger truncation with small days.
- ``to`` given as ``yyyy-mm-dd hh:mm`` is inclusive through ``hh:mm:59`` (a date-only ``to``
  through 23:59:59, as with the real API).
- Rows later than "now" are not served (the real API cannot report the future either), so
  today's data grows during the day; past days are stable.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import random
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adpipes.lib.sandbox.server import Request, Response

if TYPE_CHECKING:
    from adpipes.lib.sandbox.server import SandboxServer

INSTALLS_REPORT = "installs_report"
IN_APP_EVENTS_REPORT = "in_app_events_report"
# Other real raw reports (organic_installs_report, installs-retarget, ...) are not simulated yet:
# they are answered like unknown report names.
RAW_REPORTS = (INSTALLS_REPORT, IN_APP_EVENTS_REPORT)
RAW_PATH = r"/api/raw-data/export/app/(?P<app_id>[^/]+)/(?P<report>[^/]+)/v5"

DEFAULT_MAXIMUM_ROWS = 200_000
LOOKBACK_DAYS = 90
# One call covers at most 60 days of installs and 31 days of in-app events.
MAX_WINDOW_DAYS = {INSTALLS_REPORT: 60, IN_APP_EVENTS_REPORT: 31}

# Header names of the raw-data reports, in AppsFlyer's order (installs and in-app events share
# them). The sandbox keeps its own copy on purpose: it plays the vendor, not adpipes.
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

# Baseline rows per day; each day varies by up to +-10% (deterministically).
DEFAULT_ROWS_PER_DAY = {
    ("android", INSTALLS_REPORT): 150,
    ("ios", INSTALLS_REPORT): 100,
    ("android", IN_APP_EVENTS_REPORT): 400,
    ("ios", IN_APP_EVENTS_REPORT): 300,
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
# Booleans come in three spellings in real reports, varying between rows.
_BOOL_SPELLINGS = (("true", "false"), ("True", "False"), ("1", "0"))
_PRICES_USD = ("0.99", "1.99", "4.99", "9.99", "19.99")
_PRICES_KRW = ("1200", "5500", "12000")
_KRW_PER_USD = 1380.0
# Campaign names with commas and quotes: CSV must quote them.
_CAMPAIGNS = {
    "googleadwords_int": [("KR_UAC_Install, AOS", "20451"), ('Brand "Search" KR', "20452")],
    "Facebook Ads": [('KR_"Spring, Sale"_Purchase', "238501"), ("Lookalike 1%, KR", "238502")],
    "tiktokglobal_int": [("TT_KR_Install", "17003"), ('TT "Creators", wave 2', "17004")],
    "Apple Search Ads": [("ASA_Brand_KR", "9001"), ("ASA Generic, Puzzle", "9002")],
}
_CHANNELS = {
    "googleadwords_int": ("ACI_Search", "ACI_YouTube", "ACI_Display"),
    "Facebook Ads": ("Facebook", "Instagram", "Audience Network"),
    "tiktokglobal_int": ("TikTok",),
    "Apple Search Ads": ("",),
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
    # AppsFlyer iOS app ids are "id" + the App Store id; Android ids are package names.
    return "ios" if app_id.startswith("id") else "android"


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("|".join(parts).encode("utf-8")).digest()[:8], "big")


def default_rows_for_day(app_id: str, report: str, day: dt.date) -> int:
    base = DEFAULT_ROWS_PER_DAY[(platform_of(app_id), report)]
    rng = random.Random(_seed(app_id, report, day.isoformat(), "count"))
    return max(0, round(base * rng.uniform(0.9, 1.1)))


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:]}"


def _bool(spelling: tuple[str, str], value: bool) -> str:
    return spelling[0] if value else spelling[1]


@lru_cache(maxsize=512)
def generate_day(app_id: str, report: str, day: dt.date, timezone: str, n_rows: int) -> tuple[tuple[str, ...], ...]:
    """The rows of one local day, sorted by Event Time, in ``RAW_REPORT_COLUMNS`` order.

    Event times are uniform over the real length of the local day (23 or 25 hours on DST
    changes), written as offset-less wall times in ``timezone`` like AppsFlyer does.
    """
    return tuple(iter_day_rows(app_id, report, day, timezone, n_rows))


def iter_day_rows(app_id: str, report: str, day: dt.date, timezone: str, n_rows: int) -> Iterator[tuple[str, ...]]:
    """The rows of ``generate_day`` one at a time (the benchmark writes 1M rows without holding them)."""
    rng = random.Random(_seed(app_id, report, day.isoformat()))
    tz = ZoneInfo(timezone)
    start = dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.timezone.utc)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=tz).astimezone(dt.timezone.utc)
    seconds = int((end - start).total_seconds())
    offsets = sorted(rng.randrange(seconds) for _ in range(n_rows))
    platform = platform_of(app_id)
    installs = report == INSTALLS_REPORT
    for offset in offsets:
        event_utc = start + dt.timedelta(seconds=offset)
        yield tuple(_make_row(rng, app_id, platform, installs, event_utc, tz))


def _make_row(rng: random.Random, app_id: str, platform: str, installs: bool,
              event_utc: dt.datetime, tz: ZoneInfo) -> list[str]:
    row = [""] * len(RAW_REPORT_COLUMNS)
    spelling = rng.choice(_BOOL_SPELLINGS)

    def fmt(moment: dt.datetime) -> str:
        return moment.astimezone(tz).strftime(TIMESTAMP_FORMAT)

    def put(name: str, value: str) -> None:
        row[_COL[name]] = value

    install_utc = event_utc if installs else event_utc - dt.timedelta(seconds=rng.randrange(30 * 86400))
    sources = ["organic", "organic", "googleadwords_int", "Facebook Ads", "tiktokglobal_int"]
    if platform == "ios":
        sources.append("Apple Search Ads")
    media_source = rng.choice(sources)
    put("Install Time", fmt(install_utc))
    put("Event Time", fmt(event_utc))
    put("Media Source", media_source)
    if media_source != "organic":
        touch_type = "impression" if rng.random() < 0.2 else "click"
        put("Attributed Touch Type", touch_type)
        put("Attributed Touch Time", fmt(install_utc - dt.timedelta(seconds=rng.randint(30, 7 * 86400))))
        put("Attribution Lookback", "1d" if touch_type == "impression" else "7d")
        campaign, campaign_id = rng.choice(_CAMPAIGNS[media_source])
        put("Campaign", campaign)
        put("Campaign ID", campaign_id)
        put("Channel", rng.choice(_CHANNELS[media_source]))
        adset = rng.randint(1, 3)
        put("Adset", f"{campaign} - adset {adset}")
        put("Adset ID", f"{campaign_id}{adset:02d}")
        put("Ad", f"creative_{rng.randint(1, 5)}.mp4")
        put("Ad ID", str(rng.randint(10_000_000, 99_999_999)))
        put("Ad Type", rng.choice(("video", "banner", "playable")))
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
            other = rng.choice([s for s in sources if s not in ("organic", media_source)])
            put("Contributor 1 Media Source", other)
            put("Contributor 1 Campaign", _CAMPAIGNS[other][0][0])
            put("Contributor 1 Touch Type", "click")
            put("Contributor 1 Touch Time",
                fmt(install_utc - dt.timedelta(seconds=rng.randint(3600, 10 * 86400))))
    put("Is Retargeting", _bool(spelling, rng.random() < 0.05))
    put("Is Primary Attribution", _bool(spelling, True))
    put("WIFI", _bool(spelling, rng.random() < 0.6))

    if installs:
        put("Event Name", "install")
        put("Is Receipt Validated", _bool(spelling, False))
    else:
        name = rng.choices(_IN_APP_EVENTS, weights=_IN_APP_WEIGHTS)[0]
        put("Event Name", name)
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
                {"af_revenue": price, "af_currency": currency, "af_receipt_id": receipt},
                separators=(",", ":"),
            ))
            put("Event Revenue", price)
            put("Event Revenue Currency", currency)
            put("Event Revenue USD", usd)
            put("Is Receipt Validated", _bool(spelling, rng.random() < 0.9))
        else:
            put("Is Receipt Validated", _bool(spelling, False))
            if name == "af_level_achieved":
                put("Event Value", json.dumps({"af_level": str(rng.randint(1, 60))}, separators=(",", ":")))
            elif name == "af_login":
                put("Event Value", json.dumps({"af_login_method": rng.choice(("google", "apple", "guest"))},
                                              separators=(",", ":")))
            else:
                put("Event Value", json.dumps({"af_success": "true"}, separators=(",", ":")))
    put("Event Source", "SDK")

    country, region, state, city, postal, language = rng.choice(_COUNTRIES)
    put("Region", region)
    put("Country Code", country)
    put("State", state)
    put("City", city)
    put("Postal Code", postal)
    put("IP", f"203.0.113.{rng.randint(1, 254)}")
    carrier, operator = rng.choice(_CARRIERS)
    put("Carrier", carrier)
    put("Operator", operator)
    put("Language", language)
    put("AppsFlyer ID", f"{int(install_utc.timestamp() * 1000)}-{rng.randint(10**18, 10**19 - 1)}")
    if rng.random() < 0.7:
        put("Customer User ID", str(rng.randint(1_000_000_000, 1_009_999_999)))
    put("Platform", platform)
    if platform == "ios":
        device, os_version = rng.choice(_IOS_DEVICES)
        put("IDFA", _uuid(rng).upper())
        put("IDFV", _uuid(rng).upper())
        put("Bundle ID", "com.adpipes.sandbox.ios")
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
    put("App Version", rng.choice(("3.2.0", "3.2.1", "3.3.0")))
    put("App ID", app_id)
    put("App Name", "Adpipes Sandbox")
    return row


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
    tz = ZoneInfo(timezone)
    today = dt.datetime.now(tz).date()
    if start.date() < today - dt.timedelta(days=LOOKBACK_DAYS):
        return _json_error(400, LOOKBACK_MESSAGE, call)

    cap = maximum_rows if config["truncate_at"] is None else min(maximum_rows, config["truncate_at"])
    header, rows = _window_rows(app_id, report, start, end, timezone, config)
    rows = rows[:cap]  # silently, like the real API: no flag, no paging
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    if call.get("fault") == "malformed_csv":
        # A row with one field too many: no CSV reader can tell which value is misplaced.
        writer.writerow([*(rows[0] if rows else [""] * len(header)), "stray"])
    call["rows"] = len(rows)
    return Response(200, out.getvalue().encode("utf-8"), "text/csv", call=call, delay=delay)


def _parse_window(params: dict[str, str], report: str) -> tuple[dt.datetime, dt.datetime, str, int]:
    if not params.get("from") or not params.get("to"):
        raise _BadRequest("Both 'from' and 'to' parameters are required")
    start = _parse_time(params["from"], "from", end=False)
    end = _parse_time(params["to"], "to", end=True)
    if end < start:
        raise _BadRequest("'to' must not be earlier than 'from'")
    if (end.date() - start.date()).days >= MAX_WINDOW_DAYS[report]:
        raise _BadRequest(f"The date range for {report} is limited to {MAX_WINDOW_DAYS[report]} days")
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
    override = config["rows_per_day"].get(f"{app_id}|{report}")
    return default_rows_for_day(app_id, report, day) if override is None else int(override)


def _window_rows(app_id: str, report: str, start: dt.datetime, end: dt.datetime, timezone: str,
                 config: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    now_local = dt.datetime.now(ZoneInfo(timezone)).strftime(TIMESTAMP_FORMAT)
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
        generated = generate_day(app_id, report, day, timezone, rows_for_day(app_id, report, day, config))
        planted = {int(o.get("row", 0)): o.get("values", {}) for o in overrides
                   if o.get("day") == day.isoformat()}
        for index, row in enumerate(generated):
            # Fixed-width timestamps compare correctly as strings.
            if not (low <= row[_EVENT_TIME] <= high):
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
    from adpipes.lib.sandbox import appsflyer_aggregate, appsflyer_cohort

    appsflyer_aggregate.register(server)
    appsflyer_cohort.register(server)
