"""Column names of vendor headers: within PostgreSQL's 63 bytes, stable, unique, recorded, and
never made from something that is not a header. Against a real PostgreSQL and the sandbox."""

import datetime as dt
import subprocess
import sys

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import psycopg
import pytest

from adpipes.appsflyer.assets import build_raw_report_asset
from adpipes.appsflyer.raw_data_api import RAW_REPORTS
from adpipes.appsflyer.transform import snake_case_columns
from adpipes.lib.storage.delivered import DeliveredFiles
from adpipes.lib.storage.names import (
    MAX_IDENTIFIER_BYTES,
    ColumnNameError,
    UnusableHeader,
    headers_problem,
    vendor_column_headers,
)
from adpipes.lib.storage.postgres import (
    PartitionedTableIOManager,
    PostgresDatabase,
    replace_partitions,
    replace_partitions_from_files,
)
from adpipes.lib.storage.tables import ARCHIVE, TABLES, TableSpec, report_date_column

D1 = dt.date(2026, 11, 20)
TZ = "Asia/Seoul"
# 100 characters; its snake_case name is 100 bytes, PostgreSQL would keep 63 of them.
LONG_HEADER = "Attributed Touch Contributor Campaign Name For Multi Touch Attribution Of Retargeting Conversions X1"
# 27 Hangul letters and 11 spaces: 38 characters, but 92 bytes in UTF-8.
KOREAN_HEADER = "재구매 전환 캠페인 광고 소재 세부 분류 이름 기준 일자별 매출 합계"
VENDOR = TableSpec(
    asset_key=dg.AssetKey(["names_test", "vendor_report"]),
    dataframe_schema=pa.DataFrameSchema({"report_date": report_date_column()}, strict=False),
    databases=(ARCHIVE,),
    keep_unknown_columns=True,
)
TABLES.register(VENDOR)


def utf8_len(name: str) -> int:
    return len(name.encode("utf-8"))


def test_long_headers_fit_63_bytes_and_stay_unique():
    assert len(LONG_HEADER) == 100
    near_twin = LONG_HEADER[:-2] + "X2"  # the same first 98 characters
    long_name, twin_name, korean_name = snake_case_columns([LONG_HEADER, near_twin, KOREAN_HEADER])
    assert utf8_len(long_name) <= MAX_IDENTIFIER_BYTES and utf8_len(twin_name) <= MAX_IDENTIFIER_BYTES
    assert long_name.startswith("attributed_touch_contributor_campaign") and long_name != twin_name
    assert long_name[-9] == "_" and int(long_name[-8:], 16) >= 0  # ..._<8 hex digits>
    # Bytes, not characters: the Korean name has fewer than 63 characters but is cut all the same,
    # at a character boundary.
    assert len(KOREAN_HEADER.encode("utf-8")) > MAX_IDENTIFIER_BYTES > len(KOREAN_HEADER)
    assert utf8_len(korean_name) <= MAX_IDENTIFIER_BYTES and korean_name.startswith("재구매_전환_캠페인")
    # Short names are what they always were.
    assert snake_case_columns(["Media Source", "Event Revenue USD", "Media Source", "1st Touch"]) == \
        ["media_source", "event_revenue_usd", "media_source_2", "c_1st_touch"]


def test_a_repeated_long_header_is_numbered_within_the_limit():
    names = snake_case_columns([LONG_HEADER, LONG_HEADER, LONG_HEADER.upper()])
    assert len(set(names)) == 3 and all(utf8_len(n) <= MAX_IDENTIFIER_BYTES for n in names)
    # The same list gives the same names: numbering follows header order, nothing else.
    assert snake_case_columns([LONG_HEADER, LONG_HEADER, LONG_HEADER.upper()]) == names
    # A name one byte under the limit, repeated: its numbered form would be cut by PostgreSQL.
    edge = "a" * 62
    first, second = snake_case_columns([edge, edge])
    assert first == edge and utf8_len(second) <= MAX_IDENTIFIER_BYTES and second != first


def test_names_are_the_same_in_another_process():
    code = ("from adpipes.appsflyer.transform import snake_case_columns as s; "
            f"print('|'.join(s([{LONG_HEADER!r}, {KOREAN_HEADER!r}, {LONG_HEADER!r}])))")
    runs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed, "PYTHONIOENCODING": "utf-8"}).stdout.strip()
        for seed in ("1", "2")
    }
    assert runs == {"|".join(snake_case_columns([LONG_HEADER, KOREAN_HEADER, LONG_HEADER]))}


@pytest.mark.parametrize("header", [
    "",
    " / ",
    "<!DOCTYPE html>",
    "<html><head><title>Service Unavailable</title></head>",
    "We are down for maintenance</p>",
    "Media\x00Source",
    "Event\nTime",
    "x" * 300,
])
def test_a_header_that_cannot_name_a_column_is_refused(header):
    with pytest.raises(UnusableHeader, match="cannot be a column name"):
        snake_case_columns(["Event Time", header])
    assert "column 2" in headers_problem(["Event Time", header])


def test_ordinary_odd_headers_still_name_columns():
    assert snake_case_columns(["Revenue <USD>", "xmin", "구매 금액", "ＡＢＣ"]) == \
        ["revenue_usd", "c_xmin", "구매_금액", "abc"]
    assert headers_problem(["Media Source", "Event Time"]) is None


def _files(headers: list[str], values: list[str]) -> DeliveredFiles:
    delivered = DeliveredFiles(prefix="adpipes-names-test-")
    path = delivered.directory / "report.csv"
    quoted = ",".join('"' + h.replace('"', '""') + '"' for h in headers)
    path.write_text(quoted + "\n" + ",".join(values) + "\n", encoding="utf-8")
    delivered.add(path, snake_case_columns(headers), 1, report_date=D1.isoformat())
    return delivered


def _columns(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'names_test' "
        "AND table_name = 'vendor_report' ORDER BY ordinal_position")]


def test_a_long_header_loads_twice_into_one_column_that_records_the_header(clean_databases):
    _, archive_dsn = clean_databases
    headers = ["Event Time", LONG_HEADER, KOREAN_HEADER]
    with psycopg.connect(archive_dsn) as conn:
        for run in (1, 2):  # before the fix, the second load failed with DuplicateColumn
            delivered = _files(headers, ["2026-11-20 10:00:00", f"long-{run}", f"korean-{run}"])
            assert replace_partitions_from_files(conn, VENDOR, delivered, [D1]) == {"2026-11-20": 1}
            delivered.cleanup()
        long_name, korean_name = snake_case_columns(headers)[1:]
        assert _columns(conn) == ["report_date", "event_time", long_name, korean_name]
        assert conn.execute(f'SELECT "{long_name}", "{korean_name}" FROM names_test.vendor_report').fetchall() == \
            [("long-2", "korean-2")]
        with conn.cursor() as cur:
            recorded = vendor_column_headers(cur, "names_test", "vendor_report")
        assert recorded == {"event_time": "Event Time", long_name: LONG_HEADER, korean_name: KOREAN_HEADER}


def test_the_io_manager_lists_shortened_names_in_the_run_metadata(clean_databases):
    product_dsn, archive_dsn = clean_databases
    manager = PartitionedTableIOManager(archive=PostgresDatabase(role="archive", dsn=archive_dsn),
                                        product=PostgresDatabase(role="product", dsn=product_dsn), timezone=TZ)
    context = dg.build_output_context(
        asset_key=VENDOR.asset_key, partition_key=D1.isoformat(),
        asset_partitions_def=dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone=TZ),
    )
    manager.handle_output(context, _files(["Event Time", LONG_HEADER], ["2026-11-20 10:00:00", "v"]))
    long_name = snake_case_columns([LONG_HEADER])[0]
    assert context.get_logged_metadata()["adpipes/shortened_column_names"].value == {long_name: LONG_HEADER}


def test_a_name_postgresql_would_cut_is_never_added(clean_databases):
    # Whatever made the name (here a frame column nobody named through names.py): the table
    # keeps its columns and nothing is written.
    _, archive_dsn = clean_databases
    too_long = "vendor_" + "x" * 60
    frame = pd.DataFrame({"report_date": ["2026-11-20"], "a": ["1"], too_long: ["v"]}, dtype="str")
    with psycopg.connect(archive_dsn) as conn:
        replace_partitions(conn, VENDOR, frame[["report_date", "a"]], [D1], timezone=TZ)
        with pytest.raises(ColumnNameError, match="67 bytes"):
            replace_partitions(conn, VENDOR, frame, [D1], timezone=TZ)
        conn.rollback()
        assert _columns(conn) == ["report_date", "a"]
        assert conn.execute("SELECT a FROM names_test.vendor_report").fetchall() == [("1",)]


def test_a_long_vendor_column_from_the_api_loads_on_every_run(clean_sandbox, storage_resources):
    from adpipes.appsflyer.raw_data_api import AppsFlyerRawDataApi
    from adpipes.appsflyer.resources import AppsFlyerApps
    from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, SANDBOX_IOS_APP_ID

    asset = build_raw_report_asset("android", RAW_REPORTS["installs_report"])
    resources = {
        "appsflyer_raw_data_api": AppsFlyerRawDataApi(api_token=clean_sandbox.appsflyer_token,
                                                      base_url=clean_sandbox.base_url, timezone=TZ,
                                                      backoff_seconds=0.01),
        "appsflyer_apps": AppsFlyerApps(android_app_id=SANDBOX_ANDROID_APP_ID, ios_app_id=SANDBOX_IOS_APP_ID,
                                        currency="KRW"),
        **storage_resources,
    }
    clean_sandbox.configure(extra_columns=[LONG_HEADER])
    day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).date().isoformat()
    for _ in (1, 2):
        result = dg.materialize([asset], resources=resources, partition_key=day, raise_on_error=False)
        failures = [e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert result.success, failures
    long_name = snake_case_columns([LONG_HEADER])[0]
    archive_dsn = storage_resources["archive_db"].dsn
    with psycopg.connect(archive_dsn) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'appsflyer' "
            "AND table_name = 'android_installs'")]
        assert [n for n in names if n.startswith("attributed_touch_contributor")] == [long_name]
        assert conn.execute(f'SELECT count(*), count("{long_name}") FROM appsflyer.android_installs').fetchone()[1] > 0
        with conn.cursor() as cur:
            assert vendor_column_headers(cur, "appsflyer", "android_installs")[long_name] == LONG_HEADER


@pytest.mark.parametrize("bad", [
    "",          # PostgreSQL: zero-length delimited identifier
    "xmin",      # PostgreSQL: column name conflicts with a system column name
    "ctid",
    "a\nb",      # control characters: refused like in a header
    "a\x01b",
])
def test_a_column_name_postgresql_would_refuse_or_change_adds_nothing(clean_databases, bad):
    # add_vendor_columns checks every name first: nothing is added when one of them is refused.
    from adpipes.lib.storage.names import add_vendor_columns

    _, archive_dsn = clean_databases
    with psycopg.connect(archive_dsn) as conn:
        conn.execute("CREATE SCHEMA names_check")
        conn.execute("CREATE TABLE names_check.t (report_date date)")
        with conn.cursor() as cur, pytest.raises(ColumnNameError, match="cannot be added"):
            add_vendor_columns(cur, "names_check", "t", ["fine_column", bad])
        assert [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'names_check'")] == ["report_date"]


def test_a_refused_header_is_shown_in_full_when_short_and_only_its_start_when_long():
    # An error names the header so a reader recognizes it, but never holds a whole page.
    short = "Media\x00Source"
    assert repr(short) in headers_problem(["Event Time", short])
    page = "<html>" + "maintenance " * 40 + "</html>"
    problem = headers_problem([page])
    assert page[:40] in problem and page not in problem and page[-60:] not in problem


def _load_colliding_headers(archive_dsn: str) -> tuple[list[str], list[str], dict[str, str]]:
    """"A", "A 2", "A": the second "A" cannot be a_2, which "A 2" took. Returns the headers, the
    names and column -> recorded vendor header after loading them."""
    headers = ["Event Time", "A", "A 2", "A"]
    names = snake_case_columns(headers)
    with psycopg.connect(archive_dsn) as conn:
        delivered = _files(headers, ["2026-11-20 10:00:00", "first", "two", "second"])
        assert replace_partitions_from_files(conn, VENDOR, delivered, [D1]) == {"2026-11-20": 1}
        delivered.cleanup()
        assert _columns(conn) == ["report_date", *names]
        assert conn.execute(f'SELECT a, a_2, "{names[3]}" FROM names_test.vendor_report').fetchall() == \
            [("first", "two", "second")]
        with conn.cursor() as cur:
            recorded = dict(vendor_column_headers(cur, "names_test", "vendor_report"))
    return headers, names, recorded


def test_a_header_whose_numbered_name_is_taken_gets_a_free_name_with_its_header_recorded(clean_databases):
    # Every column gets a name of its own, the same on every run, and its comment holds its header
    # as delivered (docs/assets.md).
    _, archive_dsn = clean_databases
    headers, names, recorded = _load_colliding_headers(archive_dsn)
    assert len(set(names)) == 4 and names[:3] == ["event_time", "a", "a_2"]
    assert names[3].startswith("a_") and snake_case_columns(headers) == names
    assert recorded["event_time"] == "Event Time" and recorded["a"] == "A" and recorded[names[3]] == "A"


def test_a_taken_name_keeps_the_header_it_was_made_from(clean_databases):
    # The second "A" tries a_2, finds it taken by "A 2" and becomes a_3: a_2's comment still
    # names "A 2" (docs/assets.md: the comment holds the header as delivered).
    _, archive_dsn = clean_databases
    _, _, recorded = _load_colliding_headers(archive_dsn)
    assert recorded["a_2"] == "A 2"


def test_a_name_of_exactly_63_bytes_is_kept_whole():
    # PostgreSQL keeps identifiers of up to 63 bytes (NAMEDATALEN - 1); only longer ones are cut
    # (docs/assets.md: "a header longer than PostgreSQL's 63-byte limit").
    latin, hangul = "a" * 63, "가" * 21  # 63 bytes each (a Hangul letter takes three)
    assert snake_case_columns([latin, hangul]) == [latin, hangul]
    assert utf8_len(snake_case_columns(["a" * 64])[0]) <= MAX_IDENTIFIER_BYTES  # one byte more is cut


def test_a_single_header_that_cannot_name_a_column_is_refused_as_such():
    # The one-header form (appsflyer.schemas.snake_case) refuses like the delivery form does.
    from adpipes.appsflyer.schemas import snake_case

    with pytest.raises(UnusableHeader, match="cannot be a column name: it is markup"):
        snake_case("<html><body>Service Unavailable</body></html>")
    with pytest.raises(UnusableHeader, match="cannot be a column name: it has no letters or digits"):
        snake_case(" / ")
    assert snake_case("Media Source") == "media_source"


def test_new_vendor_columns_are_logged_and_returned_with_their_headers(clean_databases, caplog):
    # docs/assets.md: a column the vendor adds later is named in the run's log.
    from adpipes.lib.storage.names import add_vendor_columns, column_names

    _, archive_dsn = clean_databases
    (name,) = column_names(["Brand New Metric"])
    with psycopg.connect(archive_dsn) as conn:
        conn.execute("CREATE SCHEMA names_check")
        conn.execute("CREATE TABLE names_check.t (report_date date)")
        with conn.cursor() as cur, caplog.at_level("INFO", logger="adpipes.storage"):
            added = add_vendor_columns(cur, "names_check", "t", [name])
    assert added == {name: "Brand New Metric"}
    (record,) = [r for r in caplog.records if r.name == "adpipes.storage"]
    assert "names_check.t" in record.getMessage() and name in record.getMessage()


def test_each_name_records_its_header_and_only_shortened_ones_are_listed_as_such():
    # docs/assets.md: a header over 63 bytes is stored under its name cut to fit; the column's
    # comment holds the header as delivered and the run's metadata lists such names
    # (adpipes/shortened_column_names). The header record lives as long as the process, so the
    # headers here are new to it on every run (a record left by an earlier run of this test
    # cannot stand in for this one's).
    import uuid

    from adpipes.lib.storage.names import column_names, header_of, shortened_names

    tag = uuid.uuid4().hex[:12]
    short, long = f"Short {tag}", f"Long {tag} " + "vendor header words " * 4
    names = column_names([short, long])
    assert len(names[1].encode()) <= MAX_IDENTIFIER_BYTES < len(long)
    assert header_of(names[0]) == short and header_of(names[1]) == long
    assert shortened_names(names) == {names[1]: long}
