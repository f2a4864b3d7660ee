"""The message a blocking check fails the step with names the asset, the partitions and the
problem (docs/checks.md: "a blocking failure fails the step with a message naming the asset, the
partitions and the problem"), for a report that cannot be used as well as for quarantined rows."""

import dagster as dg
import pandera.pandas as pa

from adpipes.lib.quality import REQUIRED_COLUMNS, QualityReport, QualityStore, header_failures
from adpipes.lib.quality.checks import _blocking_message, _check_results, _Verdict
from adpipes.lib.storage.postgres import PostgresDatabase

ASSET = dg.AssetKey(["blocking_test", "installs"])
SCHEMA = pa.DataFrameSchema({
    "report_date": pa.Column("str"),
    "event_time": pa.Column("str"),
    "media_source": pa.Column("str"),
})


def test_a_report_that_cannot_be_used_is_named_with_its_asset_partition_and_missing_column():
    day = "2026-07-14"
    report = QualityReport([REQUIRED_COLUMNS], [day])
    # The vendor's header lacks media_source.
    report.add_structural(header_failures(SCHEMA, ["event_time"]), day)
    store = QualityStore(archive=PostgresDatabase(role="archive", dsn=None))
    verdict = _Verdict(report, store)
    results, _ = _check_results(ASSET, report, store, verdict)
    message = _blocking_message(ASSET, report, verdict, results)
    assert message is not None
    # No SQL in this message: the asset is named in its own words.
    assert "blocking_test/installs" in message, message
    assert day in message and "media_source" in message, message
