"""AppsFlyer Cohort API: the client of ``POST /api/cohorts/v1/data/app/{app_id}?format=json``.

The contract is AppsFlyer's Cohort API support page (``vendor-docs/appsflyer-cohort-api.ko.txt``
and ``.zh.txt``, one document in two languages) and its public OpenAPI file
(``docs/apis/analytics/cohort_api.yaml`` in AppsFlyerKnowledge/devhub, restated in
``vendor-docs/appsflyer-pull-api-v2-notes.md``). What they leave open, and what adpipes does
there, is listed in ``docs/cohort-api.md`` ("Where the documents are silent or disagree").

One query asks for one cohort day, one KPI and one cohort type (the API takes exactly one
optional KPI per call). Every request waits for a slot of the account's 60 calls a minute in a
window shared by every adpipes process (``quota.rate_window_calls``) and is counted against the
account's 50,000 calls a day in the call ledger (``quota.api_calls``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import requests
from pydantic import Field, field_validator

from adpipes.appsflyer.api import (
    BODY_EXCERPT_CHARS,
    QUOTA_VENDOR,
    TOKEN_REVOCATION_CUTOFF,
    TOKEN_VARIABLE,
    AppsFlyerApiBase,
    AppsFlyerApiError,
    AppsFlyerAuthError,
    AppsFlyerCohortRequestError,
    AppsFlyerNotFoundError,
    default_log,
)
from adpipes.lib.http import api_path, bearer_session, redact
from adpipes.lib.quota import ApiCallLedger, QuotaMeter, RateWindow

COHORT_PATH = "/api/cohorts/v1/data/app/{app_id}"
# The sandbox's fault/call-log name of Cohort API calls, and the call ledger's report name.
COHORT_REPORT = "cohort"
# Dagster concurrency pool of the steps calling the Cohort API.
COHORT_API_POOL = "appsflyer_cohort_api"

# -- facts of the documents ------------------------------------------------------------------

# How far back `from` may reach. The OpenAPI file and the Chinese page say 720 days; the Korean
# page says 730 days ("2 years") in its date limits and "2 years" of daily cohorts in its
# limitations table. adpipes takes the smaller figure: a day between the two would be refused by
# an API following the OpenAPI file, and refusing it before any call costs nothing.
HISTORY_DAYS = 720
# Rate limits per account (both pages): 60 calls a minute and 50,000 calls a day.
CALLS_PER_MINUTE = 60
ACCOUNT_DAILY_CALLS = 50_000
# The call ledger counts Cohort calls per account, not per app (the limit is the account's).
ACCOUNT_LEDGER_APP_ID = "account"
# "A query returns at most N rows": 10,000 on the Chinese page, 30,000 on the Korean one. No flag
# says an answer was cut off, so an answer of exactly either size is treated as truncated.
ROW_CAPS = {"Chinese page": 10_000, "Korean page": 30_000}
MAX_PERIOD = 180
# The documents' default when no period filter is sent: days 0-30, 60, 90 and 180. adpipes sends
# the same list explicitly so that what is stored does not depend on an unstated default.
DEFAULT_PERIODS = (*range(31), 60, 90, 180)
COHORT_TYPES = ("user_acquisition", "retargeting", "unified")
AGGREGATION_TYPES = ("cumulative", "on_day")
# adpipes stores cumulative values (a cohort's LTV by day N); on_day figures are sums of
# cumulative ones' differences and can be derived from the table.
AGGREGATION_TYPE = "cumulative"
# The documented grouping enum.
GROUPINGS = ("af_ad", "af_ad_id", "c", "af_c_id", "af_channel", "pid", "af_sub1", "af_keywords",
             "af_prt", "cohort_type", "site_id", "attributed_touch_type", "af_adset",
             "af_adset_id", "geo", "date")
# The groupings the table has columns for: the cohort day, media source and (optionally) campaign.
TABLE_GROUPINGS = ("date", "pid", "c")
DEFAULT_GROUPINGS = ("date", "pid", "c")
# The sections of a ?format=json answer the documents name ("query and results"); adpipes reads
# only results.
ANSWER_SECTIONS = ("query", "results")
# KPIs every answer carries, whatever is asked (users, ecpi and cost).
ALWAYS_RETURNED = ("users", "cost", "ecpi")

# The functions of the documents' KPI x function table, as the table's column names. CVR and Rate
# are percentages, Count, Sum and Unique users numbers (the table's second header row).
COUNT, CVR, RATE, SUM, UNIQUE_USERS = "count", "cvr", "rate", "sum", "unique_users"
COHORT_FUNCTIONS = (COUNT, CVR, RATE, SUM, UNIQUE_USERS)
# Which functions each documented KPI returns ("calling a KPI returns all its functions").
DOCUMENTED_KPI_FUNCTIONS = {
    "revenue": (COUNT, SUM),
    "roas": (RATE,),
    "roi": (RATE,),
    # Unique users only with aggregation_type on_day (footnote 1).
    "sessions": (COUNT, RATE, UNIQUE_USERS),
    # Not available with cohort_type unified (footnote 2).
    "uninstalls": (COUNT, RATE),
}
# Any other KPI is an in-app event name (case-sensitive, footnote 4); its Sum is the revenue the
# event brought (footnote 3).
EVENT_KPI_FUNCTIONS = (COUNT, CVR, SUM, UNIQUE_USERS)
# Footnote 3 (both languages): an event's Sum "shows in the report as sum_event_name", the function
# before the event name, unlike every other key. The documents print that name without a period;
# the `_day_{N}` suffix every other key carries is adpipes' one inference. The other functions'
# form ({event}_sum_day_{N}) is read too; both for one period stop the run.
ON_DAY_ONLY_FUNCTIONS = {"sessions": (UNIQUE_USERS,)}
NOT_SERVED_WITH = {"uninstalls": "unified"}
# Function tokens of the record keys `{kpi}_{token}_day_{N}` and the column they go to. The
# documents print the functions' names (Count, CVR, Rate, Sum, Unique users) but not their key
# spellings: these are the spellings adpipes recognizes; any other token is kept in
# extra_functions and flagged.
FUNCTION_TOKENS = {"count": COUNT, "sum": SUM, "rate": RATE, "cvr": CVR, "conversion_rate": CVR,
                   "unique_users": UNIQUE_USERS}
# How AppsFlyer writes "no value". Only cost and ecpi may be empty: the documents say cost exists
# only for campaigns with at least one install (not for organic users, some grouping combinations
# or keywords with capitals). Anywhere else such a value stops the run.
NO_VALUE = frozenset({"", "None", "N/A"})


def documented_kpi(kpi: str) -> str | None:
    """The documented KPI ``kpi`` names, lowercased (case-insensitive), or None for an event name."""
    name = kpi.lower()
    return name if name in DOCUMENTED_KPI_FUNCTIONS else None


def kpi_column_value(kpi: str) -> str:
    """The table's ``kpi`` value: a documented KPI lowercased (``ROAS`` -> ``roas``), an in-app
    event name as written (event names are case-sensitive)."""
    return documented_kpi(kpi) or kpi


def documented_functions(kpi: str, aggregation_type: str, cohort_type: str) -> tuple[str, ...]:
    """The functions the documents promise for ``kpi`` in a query of this aggregation and cohort
    type (empty when the KPI is not served with that cohort type)."""
    name = documented_kpi(kpi)
    if name is None:
        return EVENT_KPI_FUNCTIONS
    if NOT_SERVED_WITH.get(name) == cohort_type:
        return ()
    functions = DOCUMENTED_KPI_FUNCTIONS[name]
    if aggregation_type != "on_day":
        functions = tuple(f for f in functions if f not in ON_DAY_ONLY_FUNCTIONS.get(name, ()))
    return functions


def is_served(kpi: str, cohort_type: str) -> bool:
    """False for a KPI the documents say AppsFlyer does not serve with ``cohort_type``."""
    name = documented_kpi(kpi)
    return name is None or NOT_SERVED_WITH.get(name) != cohort_type


def snake_case(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def kpi_key_prefixes(kpi: str) -> list[str]:
    """How the KPI may begin a record key: as sent, lowercased (``ROAS`` -> ``roas_rate_day_7``)
    or snake-cased (``Checkout Start`` -> ``checkout_start_count_day_3``); the documents print
    no key, so these are the spellings adpipes accepts. Longest first."""
    return sorted({kpi, kpi.lower(), snake_case(kpi)} - {""}, key=len, reverse=True)


def account_scope(token: str) -> str:
    """The account's name in the shared rate window: a short hash of the token (the token itself
    is never stored)."""
    return hashlib.sha256(token.strip().encode("utf-8")).hexdigest()[:16]


# -- queries and answers ---------------------------------------------------------------------------

class CohortFormatError(AppsFlyerApiError):
    """A Cohort API answer whose shape adpipes does not know; nothing of it is stored."""


class CohortTruncatedError(AppsFlyerApiError):
    """An answer of exactly a documented row cap: rows may be missing."""


@dataclass(frozen=True)
class CohortQuery:
    """One Cohort API call: one cohort day, app, KPI and cohort type."""

    app_id: str
    day: dt.date
    kpi: str
    cohort_type: str
    body: dict[str, Any] = field(compare=False, repr=False)

    @property
    def where(self) -> str:
        return (f"AppsFlyer Cohort API for app {self.app_id}, KPI {self.kpi!r}, cohort_type "
                f"{self.cohort_type}, cohort day {self.day}")

    @property
    def groupings(self) -> list[str]:
        return list(self.body["groupings"])

    @property
    def periods(self) -> list[int]:
        return list(self.body["filters"]["period"])


@dataclass
class CohortPeriod:
    """The values of one cohort (media source, campaign) at one period."""

    media_source: str
    campaign: str | None
    period: int
    users: int
    cost: float | None
    ecpi: float | None
    functions: dict[str, float] = field(default_factory=dict)
    # Function tokens the documents do not list for this KPI, as delivered.
    extra_functions: dict[str, float] = field(default_factory=dict)


@dataclass
class CohortAnswer:
    """What one query brought: its periods, how many records and requests, the function tokens
    the documents do not list for the KPI and the answer's top-level keys they do not name."""

    query: CohortQuery
    periods: list[CohortPeriod] = field(default_factory=list)
    records: int = 0
    # HTTP requests made, retries included.
    calls: int = 0
    unknown_functions: set[str] = field(default_factory=set)
    # Top-level keys of the answer beside the documented query and results, with their values.
    unknown_keys: dict[str, Any] = field(default_factory=dict)


def _stop(query: CohortQuery, problem: str, error: type[AppsFlyerApiError] = CohortFormatError) -> AppsFlyerApiError:
    return error(
        f"{query.where}: {problem}. Nothing of this answer was stored. The documents do not "
        "specify the JSON record keys, so adpipes reads only the shape it knows (the requested "
        "groupings, users, cost, ecpi and {kpi}_{function}_day_{N}, an event's Sum also "
        "sum_{event}_day_{N}) and stops on any other "
        "rather than store nulls; see docs/cohort-api.md.",
        app_id=query.app_id, report=COHORT_REPORT, window=str(query.day),
    )


def _number(query: CohortQuery, value: Any, key: str, record: dict[str, Any], *, may_be_empty: bool) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() in NO_VALUE):
        if may_be_empty:
            return None
        raise _stop(query, f"{key!r} is {value!r}, AppsFlyer's 'no value', which the documents allow "
                    f"only for cost and ecpi (record {_describe(record)})")
    number = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if not math.isfinite(number):
        raise _stop(query, f"{key!r} is {value!r}, not a number (record {_describe(record)})")
    return number


def _describe(record: dict[str, Any]) -> str:
    keys = sorted(record)
    shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} keys)" if len(keys) > 20 else "")
    return f"with keys {shown}"


def _grouping_value(query: CohortQuery, record: dict[str, Any], grouping: str) -> str:
    value = record[grouping]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _stop(query, f"grouping {grouping!r} is {value!r}, not a text value (record {_describe(record)})")
    return str(value)


def parse_cohort_answer(content: bytes, query: CohortQuery, complete_periods: Iterable[int],
                        secret: str | None = None) -> CohortAnswer:
    """Read a ``?format=json`` answer into one :class:`CohortPeriod` per record and period.

    The documents say only that JSON has a query section and a record-oriented results section.
    adpipes requires ``{"results": [{...}, ...]}`` (other top-level keys beside ``query`` are
    listed in :attr:`CohortAnswer.unknown_keys`, not read); each record must carry the requested
    groupings, ``users``, ``cost`` and ``ecpi`` and may carry ``{kpi}_{function}_day_{N}`` keys of
    the requested KPI and periods (an event KPI's Sum also as ``sum_{event}_day_{N}``, footnote 3),
    nothing else, and no function twice for one period. Each documented function of the KPI must
    be present for every period in ``complete_periods``. Anything else raises
    :class:`CohortFormatError` naming what was found.
    """
    answer = CohortAnswer(query)
    try:
        payload = json.loads(content)
    except ValueError:
        excerpt = redact(content[:BODY_EXCERPT_CHARS].decode("utf-8", errors="replace"), secret)
        raise _stop(query, f"the answer is not JSON: {excerpt!r}") from None
    results = payload.get("results") if isinstance(payload, dict) else None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        found = (f"an object with top-level keys {sorted(payload)}" if isinstance(payload, dict)
                 else f"a JSON {type(payload).__name__}")
        raise _stop(query, f"the answer is {found}, not an object with a 'results' list of records")
    # The layout beyond the two documented sections is not documented: flagged, not refused.
    answer.unknown_keys = {key: payload[key] for key in payload if key not in ANSWER_SECTIONS}
    for document, cap in ROW_CAPS.items():
        if len(results) == cap:
            raise _stop(
                query,
                f"the answer has exactly {cap} records, the row cap the {document} gives (the "
                f"documents disagree: {', '.join(f'{n} on the {d}' for d, n in ROW_CAPS.items())}), "
                "so records may be missing. Use fewer groupings (e.g. drop 'c' from the resource's "
                "groupings) so that each query returns fewer rows",
                CohortTruncatedError,
            )
    functions = documented_functions(query.kpi, query.body["aggregation_type"], query.cohort_type)
    requested = set(query.periods)
    required_periods = sorted(requested & set(complete_periods))
    prefixes = kpi_key_prefixes(query.kpi)
    patterns = [re.compile(rf"{re.escape(p)}_(?P<token>[A-Za-z_]+?)_day_(?P<period>\d+)") for p in prefixes]
    if documented_kpi(query.kpi) is None:
        # Footnote 3's sum_{event}_day_{N} (see EVENT_KPI_FUNCTIONS) first.
        patterns[:0] = [re.compile(rf"(?P<token>sum)_{re.escape(p)}_day_(?P<period>\d+)") for p in prefixes]
    groupings = query.groupings
    for record in results:
        missing = [k for k in (*groupings, *ALWAYS_RETURNED) if k not in record]
        if missing:
            raise _stop(query, f"a record lacks {missing} (record {_describe(record)})")
        day = _grouping_value(query, record, "date")[:10] if "date" in groupings else str(query.day)
        if day != query.day.isoformat():
            raise _stop(query, f"a record is dated {record.get('date')!r}, not the cohort day asked for")
        media_source = _grouping_value(query, record, "pid")
        campaign = _grouping_value(query, record, "c") if "c" in groupings else None
        users = _number(query, record["users"], "users", record, may_be_empty=False)
        cost = _number(query, record["cost"], "cost", record, may_be_empty=True)
        ecpi = _number(query, record["ecpi"], "ecpi", record, may_be_empty=True)
        if users != int(users):
            raise _stop(query, f"'users' is {record['users']!r}, not a whole number")
        by_period: dict[int, CohortPeriod] = {}
        # (period, function token or column) -> the key it came from, to refuse a second one.
        delivered_by: dict[tuple[int, str], str] = {}
        for key, value in record.items():
            if key in groupings or key in ALWAYS_RETURNED:
                continue
            match = next((m for m in (p.fullmatch(key) for p in patterns) if m), None)
            if match is None:
                hint = ""
                if key.startswith("sum_") and documented_kpi(query.kpi) is not None:
                    hint = ("; footnote 3 of the documents' KPI table gives the spelling "
                            "'sum_event_name' to in-app event KPIs only")
                event_sum = "" if documented_kpi(query.kpi) else " (or sum_{event}_day_{N})"
                raise _stop(query, f"key {key!r} is neither a requested grouping, users/cost/ecpi nor "
                            f"a {{kpi}}_{{function}}_day_{{N}}{event_sum} key of KPI {query.kpi!r}{hint} "
                            f"(record {_describe(record)})")
            period = int(match["period"])
            if period not in requested:
                raise _stop(query, f"key {key!r} is for period {period}, which was not requested "
                            f"(filters.period {sorted(requested)})")
            number = _number(query, value, key, record, may_be_empty=False)
            row = by_period.setdefault(period, CohortPeriod(media_source, campaign, period, int(users), cost, ecpi))
            token = match["token"]
            column = FUNCTION_TOKENS.get(token.lower())
            slot = (period, column or token)
            if slot in delivered_by:
                raise _stop(query, f"the record of media source {media_source!r}, campaign {campaign!r} "
                            f"gives function {slot[1]!r} of period {period} twice, as "
                            f"{delivered_by[slot]!r} and {key!r}; adpipes cannot tell which is meant "
                            f"(record {_describe(record)})")
            delivered_by[slot] = key
            if column in functions:
                row.functions[column] = number
            else:
                row.extra_functions[token] = number
                answer.unknown_functions.add(token)
        for period in required_periods:
            present = by_period.get(period)
            absent = [f for f in functions if present is None or f not in present.functions]
            if absent:
                raise _stop(
                    query,
                    f"period {period} is complete for this cohort but the record of media source "
                    f"{media_source!r}, campaign {campaign!r} lacks the function(s) {absent} of KPI "
                    f"{query.kpi!r} (the documents promise every function of a KPI: "
                    f"{', '.join(functions)}) (record {_describe(record)})",
                )
        answer.periods.extend(by_period[p] for p in sorted(by_period))
    answer.records = len(results)
    return answer


# -- the client --------------------------------------------------------------------------------------

class AppsFlyerCohortApi(AppsFlyerApiBase):
    """AppsFlyer Cohort API: what adpipes asks it for (KPIs, cohort types, periods, currency,
    smallest cohort) and the one way a query is sent and read."""

    kpis: list[str] = Field(
        default=["revenue"],
        description="KPIs to pull, one call each (APPSFLYER_COHORT_KPIS): revenue, roas, roi, "
        "sessions, uninstalls (any case) or in-app event names (case-sensitive). Sent as written.",
    )
    cohort_types: list[str] = Field(
        default=["user_acquisition"],
        description="Cohort types pulled, each its own calls and rows (APPSFLYER_COHORT_TYPES): "
        "user_acquisition, retargeting, unified.",
    )
    min_cohort_size: int = Field(
        default=1, description="Smallest cohort (users) returned (APPSFLYER_COHORT_MIN_SIZE; >= 1)."
    )
    preferred_currency: bool = Field(
        default=False,
        description="True: money in the app's currency (APPSFLYER_CURRENCY=preferred); false: USD.",
    )
    periods: list[int] = Field(
        default=list(DEFAULT_PERIODS), description="Day-N periods pulled (0-180; 0 = the install day)."
    )
    groupings: list[str] = Field(
        default=list(DEFAULT_GROUPINGS),
        description="Cohort API groupings: date and pid, and c (campaign) unless left out to "
        "stay under the row cap; the table has no columns for other groupings.",
    )
    history_days: int = Field(
        default=HISTORY_DAYS, description="How many days back a cohort day may be (documents: 720)."
    )
    cohort_calls_per_minute: int = Field(
        default=CALLS_PER_MINUTE, description="Cohort API calls per rate window and account."
    )
    cohort_rate_window_seconds: float = Field(
        default=60.0, description="Length of the Cohort API rate window (the documents': a minute)."
    )
    account_daily_calls: int = Field(
        default=ACCOUNT_DAILY_CALLS, description="Cohort API calls a day per account (documents: 50,000)."
    )

    @field_validator("kpis")
    @classmethod
    def _known_kpis(cls, kpis: list[str]) -> list[str]:
        always = [k for k in kpis if k.lower() in ALWAYS_RETURNED]
        if not kpis or always or any(not k.strip() for k in kpis):
            raise ValueError(f"kpis {kpis} must name at least one KPI, none of {', '.join(ALWAYS_RETURNED)} "
                             "(every answer carries those) and none empty")
        return kpis

    @field_validator("cohort_types")
    @classmethod
    def _known_cohort_types(cls, types: list[str]) -> list[str]:
        if not types or set(types) - set(COHORT_TYPES):
            raise ValueError(f"cohort_types {types} must be a non-empty list of {', '.join(COHORT_TYPES)}")
        return types

    @field_validator("min_cohort_size")
    @classmethod
    def _positive_size(cls, size: int) -> int:
        if size < 1:
            raise ValueError("min_cohort_size must be at least 1 (the documents: do not send 0)")
        return size

    @field_validator("periods")
    @classmethod
    def _valid_periods(cls, periods: list[int]) -> list[int]:
        if not periods or any(not 0 <= p <= MAX_PERIOD for p in periods):
            raise ValueError(f"periods {periods} must be a non-empty list of days 0-{MAX_PERIOD}")
        return sorted(set(periods))

    @field_validator("groupings")
    @classmethod
    def _table_groupings(cls, groupings: list[str]) -> list[str]:
        if not {"date", "pid"} <= set(groupings) or set(groupings) - set(TABLE_GROUPINGS):
            raise ValueError(f"groupings {groupings} must be date and pid, optionally c: the "
                             "cohort_ltv table has no columns for other groupings")
        return groupings

    # -- what to ask -------------------------------------------------------------------------------

    def app_today(self) -> dt.date:
        """Today in the app's timezone: with preferred_timezone, AppsFlyer's cohort days and
        complete periods are counted there."""
        return dt.datetime.now(ZoneInfo(self.timezone)).date()

    def beyond_history(self, days: Iterable[str], today: dt.date | None = None) -> list[str]:
        """The cohort days older than the documented history depth."""
        oldest = (today or self.app_today()) - dt.timedelta(days=self.history_days)
        return sorted(d for d in days if dt.date.fromisoformat(d) < oldest)

    def skipped_combinations(self) -> list[tuple[str, str]]:
        """(KPI, cohort type) pairs AppsFlyer does not serve (uninstalls with unified)."""
        return [(k, t) for t in self.cohort_types for k in self.kpis if not is_served(k, t)]

    def request_body(self, day: str, kpi: str, cohort_type: str) -> dict[str, Any]:
        """The JSON body of one query: every field the documents describe, sent explicitly so that
        nothing depends on an unstated default."""
        return {
            "cohort_type": cohort_type,
            # One cohort day per query: see adpipes.appsflyer.cohort for why.
            "from": day,
            "to": day,
            "groupings": list(self.groupings),
            # The KPI exactly as configured: the documents disagree on roas (the support page's
            # example sends "roas", the OpenAPI file's enum lists "ROAS"). The default and the
            # docs recommend "roas": every other KPI is lowercase, the answer's keys begin with
            # the lowercase name, and the support page's example sends it. A 422 naming the KPI
            # says to try the other spelling.
            "kpis": [kpi],
            "aggregation_type": AGGREGATION_TYPE,
            "filters": {"period": list(self.periods)},
            # Complete days only: a period that has not fully passed is absent, not partial.
            "partial_data": False,
            # "The app's timezone in AppsFlyer", which ADPIPES_TIMEZONE equals (the Cohort API has
            # no timezone name parameter); the default false would count days in UTC.
            "preferred_timezone": True,
            "preferred_currency": self.preferred_currency,
            "min_cohort_size": self.min_cohort_size,
            # Totals, not per-user averages: the table keeps users to divide by.
            "per_user": False,
        }

    def queries(self, day: str, app_id: str) -> list[CohortQuery]:
        """The calls of one cohort day and app: each KPI of each cohort type AppsFlyer serves."""
        date = dt.date.fromisoformat(day)
        return [CohortQuery(app_id, date, kpi, cohort_type, self.request_body(day, kpi, cohort_type))
                for cohort_type in self.cohort_types for kpi in self.kpis if is_served(kpi, cohort_type)]

    def complete_periods(self, day: dt.date, today: dt.date | None = None) -> list[int]:
        """Periods complete for the cohort of ``day`` (partial_data false: N < today - day)."""
        age = ((today or self.app_today()) - day).days
        return [p for p in self.periods if p < age]

    # -- limits ------------------------------------------------------------------------------------

    def account_meter(self, ledger: ApiCallLedger) -> QuotaMeter:
        """The account's daily Cohort API quota in the call ledger."""
        return ledger.meter(QUOTA_VENDOR, ACCOUNT_LEDGER_APP_ID, COHORT_REPORT, self.account_daily_calls)

    def rate_window(self, ledger: ApiCallLedger, token: str) -> RateWindow:
        """The account's (``token``'s) calls-per-minute window, shared by every adpipes process."""
        return ledger.rate_window(QUOTA_VENDOR, f"cohort:{account_scope(token)}",
                                  self.cohort_calls_per_minute, self.cohort_rate_window_seconds)

    # -- calling -----------------------------------------------------------------------------------

    def fetch_cohort(self, query: CohortQuery, *, ledger: ApiCallLedger, log: Any = None,
                     today: dt.date | None = None) -> CohortAnswer:
        """Send one query and read its answer (see :func:`parse_cohort_answer`).

        Before each request (retries included) the account's daily quota is spent in the call
        ledger and a slot of its per-minute window is awaited. 429 and 5xx are retried with
        backoff; 401, 404 and 422 raise errors saying what the documents list as causes.
        """
        log = log or default_log
        base_url, token = self._connection()
        meter, window = self.account_meter(ledger), self.rate_window(ledger, token)
        answer_calls = 0

        def before_each_request() -> None:
            nonlocal answer_calls
            meter.spend()
            waited = window.acquire()
            if waited >= 0.5:
                log.info(f"AppsFlyer Cohort API: waited {waited:.1f} s for a slot of the account's "
                         f"{self.cohort_calls_per_minute} calls per {self.cohort_rate_window_seconds:g} s")
            answer_calls += 1

        url = base_url + api_path(COHORT_PATH, app_id=query.app_id)
        with bearer_session(base_url, token, accept="application/json", token_variable=TOKEN_VARIABLE) as session:
            try:
                content = self._call(
                    session, "POST", url, token, log, app_id=query.app_id,
                    report=f"{COHORT_REPORT} (kpi {query.kpi!r}, {query.cohort_type})",
                    window=f"cohort day {query.day}", on_attempt=before_each_request,
                    params={"format": "json"}, json=query.body,
                    headers={"Content-Type": "application/json"},
                )
            except AppsFlyerCohortRequestError as exc:
                raise self._rejected(query, getattr(exc, "vendor_error", str(exc))) from None
        answer = parse_cohort_answer(content, query, self.complete_periods(query.day, today), token)
        answer.calls = answer_calls
        return answer

    def _rejected(self, query: CohortQuery, vendor_error: str) -> AppsFlyerCohortRequestError:
        """A 422: name app, KPI and AppsFlyer's reason, and what to change."""
        said = vendor_error.lower()
        about_kpi = query.kpi.lower() in said or "kpis" in said
        name = documented_kpi(query.kpi)
        if about_kpi and name == "roas":
            other = "ROAS" if query.kpi != "ROAS" else "roas"
            advice = (f"The documents disagree on this KPI's spelling: AppsFlyer's support page "
                      f"sends 'roas', its OpenAPI file lists 'ROAS'. Write {other!r} instead of "
                      f"{query.kpi!r} in APPSFLYER_COHORT_KPIS and re-run.")
        elif about_kpi and name is None:
            advice = ("AppsFlyer did not accept it as a KPI. Documented KPIs are revenue, roas, roi, "
                      "sessions and uninstalls; anything else is an in-app event name, which is "
                      "case-sensitive: write it in APPSFLYER_COHORT_KPIS exactly as AppsFlyer shows it.")
        elif about_kpi:
            advice = "Check the KPI in APPSFLYER_COHORT_KPIS against the documents' KPI table."
        else:
            advice = ("Check the Cohort settings (APPSFLYER_COHORT_KPIS, APPSFLYER_COHORT_TYPES, "
                      "APPSFLYER_COHORT_MIN_SIZE) and the appsflyer_cohort_api resource's periods "
                      "and groupings.")
        return AppsFlyerCohortRequestError(
            f"AppsFlyer Cohort API rejected the query for app {query.app_id}, KPI {query.kpi!r}, "
            f"cohort_type {query.cohort_type}, cohort day {query.day} (HTTP 422): AppsFlyer says "
            f"{vendor_error!r}. {advice} The query sent was {json.dumps(query.body, sort_keys=True)}.",
            app_id=query.app_id, report=COHORT_REPORT, window=str(query.day), status=422,
            kpi=query.kpi, vendor_error=vendor_error,
        )

    def _check_response(self, response: requests.Response, token: str, where: str,
                        context: dict[str, str]) -> bytes:
        status = response.status_code
        if status not in (401, 404, 422):
            return super()._check_response(response, token, where, context)
        body = redact(response.content.decode("utf-8", errors="replace"), token).strip()
        excerpt = body[:BODY_EXCERPT_CHARS]
        if status == 422:
            # Documented body: {"error": "...", "expose": false}.
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            error = payload.get("error") if isinstance(payload, dict) else None
            raise AppsFlyerCohortRequestError(
                f"{where}: HTTP 422: {excerpt}", status=status,
                vendor_error=error if isinstance(error, str) else excerpt, **context,
            )
        if status == 401:
            shorter = "; the configured token is shorter than that" if len(token.strip()) < 700 else ""
            raise AppsFlyerAuthError(
                f"{where}: HTTP 401, AppsFlyer says the authorization token is malformed "
                f"({excerpt!r}). The Cohort API documents say its token has more than 700 "
                f"characters{shorter}: copy the whole current token from the AppsFlyer dashboard "
                f"(an admin user sees it) into {TOKEN_VARIABLE}. AppsFlyer also revoked every token "
                f"issued before {TOKEN_REVOCATION_CUTOFF}.",
                status=status, **context,
            )
        raise AppsFlyerNotFoundError(
            f"{where}: HTTP 404 ({excerpt[:120]!r}). The Cohort API documents list these causes: "
            "(1) the network: a firewall or proxy between adpipes and AppsFlyer answering 404; "
            "(2) a token that is not the most recently issued one: take the current token from the "
            f"AppsFlyer dashboard and set {TOKEN_VARIABLE}; (3) the app's plan does not include the "
            "Cohort API (a premium feature): your AppsFlyer account manager can check it under "
            "'My plan'. Check also that the app id is exactly as the dashboard shows it "
            "(APPSFLYER_ANDROID_APP_ID / APPSFLYER_IOS_APP_ID).",
            status=status, **context,
        )

