"""QualityReport.check_rows over blocks and partitions (docs/checks.md): a report missing a column
refuses every day it holds; quarantined rows of a day add up over the blocks; the quarantine keeps
the rows as the vendor delivered them."""

import json

import pandas as pd
import pandera.pandas as pa

from adpipes.lib.quality import CheckGroup, QualityReport, check_groups, rule

POSITIVE = CheckGroup("positive", "Amounts are positive.")
SCHEMA = pa.DataFrameSchema({
    "report_date": pa.Column("str"),
    "key": pa.Column("str", nullable=False),
    "amount": pa.Column("Int64", rule(POSITIVE, pa.Check.gt(0), "amount > 0"), nullable=True),
})


def block(dates: list[str], amounts: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"report_date": dates, "key": [f"k{i}" for i in range(len(dates))],
                         "amount": pd.Series(amounts, dtype="Int64")})


def test_a_block_missing_a_column_refuses_every_day_it_holds():
    report = QualityReport(check_groups(SCHEMA), ["d1", "d2"], row_key=["key"])
    frame = block(["d1", "d2", "d2"], [1, 2, 3]).drop(columns=["amount"])
    report.check_rows([(SCHEMA, frame)], keys=frame[["report_date", "key"]])
    assert report.refused_partitions() == ["d1", "d2"]
    structural = report.structural_failures()
    assert set(structural["report_date"]) == {"d1", "d2"} and set(structural["column_name"]) == {"amount"}


def test_quarantined_rows_of_a_day_add_up_over_blocks_and_keep_the_delivered_values():
    report = QualityReport(check_groups(SCHEMA), ["d1"], row_key=["key"])
    for amounts in ([-1, 2, -3], [4, -5]):
        typed = block(["d1"] * len(amounts), amounts)
        # As delivered: the text the vendor sent (here with a currency suffix adpipes parsed away).
        delivered = typed.assign(amount=[f"{a} KRW" for a in amounts])
        report.check_rows([(SCHEMA, typed)], keys=typed[["report_date", "key"]], delivered=delivered)
    assert (report.rows["d1"].checked, report.rows["d1"].quarantined) == (5, 3)
    quarantine = report.quarantine
    assert sorted(quarantine["row"]) == [0, 2, 4]
    assert sorted(json.loads(v)["amount"] for v in quarantine["row_values"]) == ["-1 KRW", "-3 KRW", "-5 KRW"]
