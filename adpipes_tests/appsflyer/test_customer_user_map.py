"""``appsflyer/customer_user_map`` against a real PostgreSQL: raw_data rows written straight into
both databases (no vendor call), the map materialized from them, and what lands in its table."""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import psycopg
import pytest

from adpipes.appsflyer.customer_user_map import (
    CUSTOMER_USER_MAP_KEY,
    LOOKUP_SQL,
    ONE_USER_PER_APPSFLYER_ID,
    customer_user_map,
)
from adpipes.appsflyer.schemas import RAW_DATA_TABLE
from adpipes.lib.retention import (
    PRUNE_OP,
    build_retention_sensor,
    check_retention_overrides,
    product_tables,
    prune_product_partitions_job,
)
from adpipes.lib.settings import ConfigurationError
from adpipes.lib.storage.postgres import PostgresDatabase, replace_partitions
from adpipes.lib.storage.tables import TABLES

TZ = "Asia/Seoul"
ANDROID, IOS = "com.studio.one", "id123456789"
MAP = ["appsflyer", "customer_user_map"]


def today() -> dt.date:
    return dt.datetime.now(ZoneInfo(TZ)).date()


def days_ago(n: int) -> str:
    return (today() - dt.timedelta(days=n)).isoformat()


def event(day: str, app_id: str, appsflyer_id: str, cuid: int | None, time: str, name: str = "af_purchase",
          attribution: str = "non_organic") -> dict:
    return {"report_date": day, "app_id": app_id, "platform": "android" if app_id == ANDROID else "ios",
            "appsflyer_id": appsflyer_id, "customer_user_id": cuid,
            "event_time": pd.Timestamp(f"{day} {time}").tz_localize(TZ), "event_name": name,
            "source_report": "organic_in_app_events_report" if attribution == "organic" else "in_app_events_report",
            "attribution": attribution}


def raw_frame(rows: list[dict]) -> pd.DataFrame:
    """raw_data rows with the columns the map reads; any other required column gets a filler, so
    the test does not depend on the rest of raw_data's layout."""
    frame = pd.DataFrame({
        "report_date": pd.Series([r["report_date"] for r in rows], dtype="str"),
        "app_id": pd.Series([r["app_id"] for r in rows], dtype="str"),
        "platform": pd.Series([r["platform"] for r in rows], dtype="str"),
        "appsflyer_id": pd.Series([r["appsflyer_id"] for r in rows], dtype="str"),
        "customer_user_id": pd.array([r["customer_user_id"] for r in rows], dtype="Int64"),
        "event_time": pd.Series([r["event_time"] for r in rows]),
        "event_name": pd.Series([r["event_name"] for r in rows], dtype="str"),
        "source_report": pd.Series([r["source_report"] for r in rows], dtype="str"),
        "attribution": pd.Series([r["attribution"] for r in rows], dtype="str"),
    })
    for column in RAW_DATA_TABLE.columns:
        if column.name not in frame.columns and not column.nullable:
            if column.pg_type.startswith("timestamp"):
                # install_time (required since raw_data requires it): the row's own time will do.
                frame[column.name] = frame["event_time"]
                continue
            assert column.pg_type == "text", f"no filler for required column {column.name} ({column.pg_type})"
            frame[column.name] = pd.Series(["x"] * len(frame), dtype="str")
    return frame


def load_raw(dsns: tuple[str, ...], rows: list[dict], days: list[str]) -> None:
    """Replace raw_data's ``days`` in each database with ``rows`` (a day without rows: empty)."""
    for dsn in dsns:
        with psycopg.connect(dsn) as conn:
            replace_partitions(conn, RAW_DATA_TABLE, raw_frame(rows), [dt.date.fromisoformat(d) for d in days],
                               timezone=TZ)


@pytest.fixture
def resources(storage_resources, clean_databases):
    product_dsn, _ = clean_databases
    return {**storage_resources, "product_db": PostgresDatabase(role="product", dsn=product_dsn)}


def materialize(resources, first: str, last: str | None = None, raise_on_error: bool = True):
    if last is None:
        return dg.materialize([customer_user_map], resources=resources, partition_key=first,
                              raise_on_error=raise_on_error)
    return dg.materialize([customer_user_map], resources=resources, raise_on_error=raise_on_error,
                          tags={"dagster/asset_partition_range_start": first,
                                "dagster/asset_partition_range_end": last})


def stored_map(dsn: str) -> dict[tuple, tuple]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT app_id, customer_user_id, appsflyer_id, platform, first_seen, last_seen "
                            "FROM appsflyer.customer_user_map").fetchall()
    assert len(rows) == len({r[:3] for r in rows})
    return {r[:3]: r[3:] for r in rows}


def expected_map(rows: list[dict]) -> dict[tuple, tuple]:
    pairs: dict[tuple, tuple] = {}
    for r in rows:
        if r["customer_user_id"] is None:
            continue
        key = (r["app_id"], r["customer_user_id"], r["appsflyer_id"])
        platform, first, last = pairs.get(key, (r["platform"], r["event_time"], r["event_time"]))
        pairs[key] = (platform, min(first, r["event_time"]), max(last, r["event_time"]))
    return pairs


def check_of(result) -> dg.AssetCheckEvaluation:
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == ONE_USER_PER_APPSFLYER_ID.name
    return evaluation


def metadata(result) -> dict:
    # A range run records one materialization per partition: the run's (and the table's) figures
    # on each, and the pairs seen that day on its own (pairs_seen, by partition here).
    materializations = result.asset_materializations_for_node("appsflyer__customer_user_map")
    found = [{k: v.value for k, v in m.metadata.items() if k != "pairs_seen"} for m in materializations]
    assert found and all(f == found[0] for f in found)
    return {**found[0], "pairs_seen": {m.partition: m.metadata["pairs_seen"].value for m in materializations}}


D1, D2, D3 = days_ago(3), days_ago(2), days_ago(1)
DAY1 = [
    event(D1, ANDROID, "af-1", 101, "09:00:00", "install"),
    event(D1, ANDROID, "af-1", 101, "10:00:00"),
    event(D1, ANDROID, "af-1", 101, "23:59:59"),
    event(D1, ANDROID, "af-2", None, "11:00:00", "install"),  # no CUID: not in the map
    event(D1, ANDROID, "af-3", 103, "08:00:00", "install", attribution="organic"),
    event(D1, IOS, "af-4", 104, "07:30:00", "install"),
    # One user, two installs (a reinstall with a new id, or a second device): normal.
    event(D1, IOS, "af-5", 104, "12:00:00", "reinstall"),
]
DAY2 = [
    event(D2, ANDROID, "af-1", 101, "03:00:00"),
    event(D2, ANDROID, "af-1", 101, "20:15:00"),
    event(D2, ANDROID, "af-2", 102, "05:00:00"),  # the CUID is set after login, a day later
    event(D2, IOS, "af-5", 104, "06:00:00", attribution="organic"),
]


def test_every_pair_of_raw_data_lands_in_both_databases_with_first_and_last_seen(resources, clean_databases):
    product_dsn, archive_dsn = clean_databases
    load_raw(clean_databases, DAY1 + DAY2, [D1, D2])

    result = materialize(resources, D1, D2)  # a range is one run
    assert result.success
    expected = expected_map(DAY1 + DAY2)
    assert len(expected) == 5
    assert stored_map(archive_dsn) == stored_map(product_dsn) == expected
    assert expected[(ANDROID, 101, "af-1")][1:] == (DAY1[0]["event_time"], DAY2[1]["event_time"])
    assert (ANDROID, 103, "af-3") in expected  # organic
    info = metadata(result)
    assert info["pairs_upserted"] == 5
    assert info["new_pairs"] == {"archive": 5, "product": 5}
    assert info["total_pairs"] == {"archive": 5, "product": 5}
    assert info["dagster/row_count"] == 5
    assert info["pairs_seen"] == {D1: len(expected_map(DAY1)), D2: len(expected_map(DAY2))}
    assert check_of(result).passed  # one CUID with two AppsFlyer ids is normal

    # The S2S sender's lookup (README): the user's AppsFlyer ids, most recently seen first.
    with psycopg.connect(product_dsn) as conn:
        found = conn.execute(LOOKUP_SQL, {"app_id": IOS, "customer_user_id": 104}).fetchall()
        comments = conn.execute(
            "SELECT obj_description('appsflyer.customer_user_map'::regclass, 'pg_class'), "
            "count(*) FILTER (WHERE col_description('appsflyer.customer_user_map'::regclass, attnum) IS NOT NULL) "
            "FROM pg_attribute WHERE attrelid = 'appsflyer.customer_user_map'::regclass AND attnum > 0"
        ).fetchone()
        key = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'appsflyer.customer_user_map'::regclass AND contype = 'p'").fetchone()[0]
    assert [row[0] for row in found] == ["af-5", "af-4"]
    assert "S2S" in comments[0] and comments[1] == 6
    assert key == "PRIMARY KEY (app_id, customer_user_id, appsflyer_id)"


def test_a_rerun_changes_nothing_and_a_later_day_extends_last_seen(resources, clean_databases):
    product_dsn, archive_dsn = clean_databases
    load_raw(clean_databases, DAY1 + DAY2, [D1, D2])

    assert materialize(resources, D1).success
    first = stored_map(product_dsn)
    assert first == stored_map(archive_dsn) == expected_map(DAY1)

    again = materialize(resources, D1)
    assert stored_map(product_dsn) == stored_map(archive_dsn) == first
    info = metadata(again)
    assert info["pairs_upserted"] == 4
    assert info["new_pairs"] == info["extended_pairs"] == {"archive": 0, "product": 0}
    assert info["total_pairs"] == {"archive": 4, "product": 4}

    later = materialize(resources, D2)
    both = expected_map(DAY1 + DAY2)
    assert stored_map(product_dsn) == stored_map(archive_dsn) == both
    pair = (ANDROID, 101, "af-1")
    assert both[pair][1] == first[pair][1] and both[pair][2] > first[pair][2]
    assert metadata(later)["new_pairs"] == {"archive": 1, "product": 1}  # af-2 got its CUID
    assert metadata(later)["extended_pairs"] == {"archive": 2, "product": 2}  # af-1 and af-5

    # Re-running the earlier day after the later one moves nothing back (least/greatest).
    assert materialize(resources, D1).success
    assert stored_map(product_dsn) == stored_map(archive_dsn) == both


def test_pruning_raw_data_from_product_leaves_every_pair_of_the_map(resources, clean_databases):
    product_dsn, archive_dsn = clean_databases
    old = [days_ago(100), days_ago(99)]
    rows = [event(old[0], ANDROID, "af-1", 101, "09:00:00", "install"),
            event(old[1], ANDROID, "af-1", 101, "10:00:00"),
            event(old[1], IOS, "af-4", 104, "11:00:00", "install"),
            event(D3, IOS, "af-4", 104, "12:00:00")]
    load_raw(clean_databases, rows, [*old, D3])
    assert materialize(resources, *old).success and materialize(resources, D3).success
    before = stored_map(product_dsn)
    assert before == stored_map(archive_dsn) == expected_map(rows)

    # The retention sensor asks for raw_data's old days only: the map has none and is not a
    # product table it knows.
    assert CUSTOMER_USER_MAP_KEY.to_user_string() not in {s.asset_key.to_user_string() for s in product_tables()}
    with dg.build_sensor_context(resources=resources) as context:
        request = build_retention_sensor(90, {}, TZ)(context)
    cutoffs = request.run_config["ops"][PRUNE_OP]["config"]["cutoffs"]
    assert cutoffs == {"appsflyer/raw_data": days_ago(90)}
    pruned = prune_product_partitions_job.execute_in_process(run_config=request.run_config, resources=resources)
    assert pruned.success

    with psycopg.connect(product_dsn) as conn:
        left = dict(conn.execute("SELECT report_date::text, count(*) FROM appsflyer.raw_data GROUP BY 1").fetchall())
    assert left == {D3: 1}  # raw_data's old days are gone from product...
    assert stored_map(product_dsn) == before  # ...and every pair they gave is still in the map
    assert stored_map(archive_dsn) == before

    # The map is still built for a pruned day, from the archive's copy.
    assert materialize(resources, old[0]).success
    assert stored_map(product_dsn) == before


def test_a_retention_override_naming_the_map_is_refused():
    with pytest.raises(ConfigurationError) as caught:
        check_retention_overrides({"appsflyer/customer_user_map": 30})
    assert "appsflyer/customer_user_map, which is never pruned" in str(caught.value)
    with pytest.raises(KeyError):
        TABLES.get(CUSTOMER_USER_MAP_KEY)  # nothing for the prune job to drop


def test_the_check_warns_when_an_appsflyer_id_has_two_customer_user_ids(resources, clean_databases):
    rows = [event(D1, ANDROID, "shared", 201, "09:00:00", "install"),
            event(D1, ANDROID, "shared", 202, "10:00:00"),  # a second account on the same install
            event(D1, ANDROID, "shared", 203, "11:00:00"),
            event(D1, IOS, "one-user", 204, "09:00:00", "install"),
            event(D1, IOS, "other-device", 204, "10:00:00", "install")]
    load_raw(clean_databases, rows, [D1])

    result = materialize(resources, D1)
    assert result.success  # WARN: the map is written all the same
    check = check_of(result)
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["shared_appsflyer_ids"].value == 1
    sample = check.metadata["sample"].value
    assert "shared" in sample and "203, 202, 201" in sample and "one-user" not in sample
    assert "HAVING count(*) > 1" in check.metadata["full_list"].value
    assert len(stored_map(clean_databases[0])) == 5


def test_a_day_missing_from_the_archive_fails_naming_it_and_writes_nothing(resources, clean_databases):
    product_dsn, archive_dsn = clean_databases
    load_raw(clean_databases, DAY1, [D1])
    load_raw((product_dsn,), DAY2, [D2])  # product has D2, the archive does not

    result = materialize(resources, D1, D3, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    assert f"no appsflyer/raw_data for {D2}, {D3};" in message
    assert "Materialize appsflyer/raw_data" in message
    for dsn in clean_databases:
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT to_regclass('appsflyer.customer_user_map')").fetchone()[0] is None
