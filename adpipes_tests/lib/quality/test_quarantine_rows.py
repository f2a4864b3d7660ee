"""What QualityReport keeps of a quarantined row (docs/checks.md, quality.quarantine): why, one
reason per broken rule with its column and value, and the row as JSON (row_values)."""

import json

import pandas as pd
import pandera.pandas as pa

from adpipes.lib.quality import CheckGroup, QualityReport, check_groups, rule

POSITIVE = CheckGroup("positive", "Amounts are positive.")
SCHEMA = pa.DataFrameSchema({
    "report_date": pa.Column("str"),
    "key": pa.Column("str", nullable=False),
    "amount": pa.Column("Int64", rule(POSITIVE, pa.Check.gt(0), "amount > 0"), nullable=True),
    "event_time": pa.Column("datetime64[ns]", nullable=True),
})


def test_a_quarantined_row_says_why_and_keeps_its_values():
    frame = pd.DataFrame({
        "report_date": ["d1", "d1", "d1"],
        "key": pd.Series(["k0", None, "k2"], dtype="str"),
        "amount": pd.Series([1, -5, 3], dtype="Int64"),
        "event_time": pd.to_datetime(["2026-11-20 10:00:00", "2026-11-20 11:30:00", "2026-11-20 12:00:00"]),
    })
    report = QualityReport(check_groups(SCHEMA), ["d1"], row_key=["key"])
    keep = report.check_rows([(SCHEMA, frame)], keys=frame[["report_date", "key"]])
    assert keep.tolist() == [True, False, True]
    (row,) = report.quarantine.to_dict("records")
    assert (row["report_date"], row["row"]) == ("d1", 1)
    # One reason per broken rule, each naming its check, rule, column and the offending value
    # (a missing one as null, as JSON spells it).
    reasons = row["reasons"].split("; ")
    assert len(reasons) == 2
    assert {r.split(":", 1)[0] for r in reasons} == {"required_values", "positive"}
    assert any("key=null" in r for r in reasons) and any("amount > 0" in r and "amount=-5" in r for r in reasons)
    # The row as JSON, one object; a time reads as the time (ISO 8601), not as epoch milliseconds.
    values = json.loads(row["row_values"])
    assert values["key"] is None and values["amount"] == -5
    assert str(values["event_time"]).startswith("2026-11-20T11:30:00")
