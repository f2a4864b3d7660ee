"""required_columns (docs/checks.md): a report that cannot be used fails, its `problems` saying
what is missing per day (a column the report lacks, or the answer that is no report at all), and
nothing of the day is written."""

import pandera.pandas as pa

from adpipes.lib.quality import REQUIRED_COLUMNS, QualityReport, header_failures


def test_problems_say_which_column_is_missing_or_what_the_answer_was():
    import dagster as dg

    from adpipes.lib.quality import QualityStore
    from adpipes.lib.quality.checks import _rule_results, _Verdict
    from adpipes.lib.storage.postgres import PostgresDatabase

    schema = pa.DataFrameSchema({"report_date": pa.Column("str"), "install_time": pa.Column("str"),
                                 "media_source": pa.Column("str")})
    report = QualityReport([REQUIRED_COLUMNS], ["d1", "d2", "d3"])
    report.add_unreadable("d1", "an HTML page, not CSV")
    report.add_structural(header_failures(schema, ["install_time"]), "d2")
    store = QualityStore(archive=PostgresDatabase(role="archive", dsn=None))
    results = _rule_results(REQUIRED_COLUMNS, dg.AssetKey(["t", "x"]), _Verdict(report, store))
    assert report.refused_partitions() == ["d1", "d2"]
    unreadable, missing, fine = results["d1"], results["d2"], results["d3"]
    assert fine.passed
    for result in (unreadable, missing):
        assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    (problem,) = unreadable.metadata["problems"].value
    assert problem.startswith("d1") and "an HTML page, not CSV" in problem
    (problem,) = missing.metadata["problems"].value
    assert problem.startswith("d2") and "media_source" in problem and "install_time" not in problem
    assert "media_source" in missing.description and "an HTML page, not CSV" in unreadable.description
