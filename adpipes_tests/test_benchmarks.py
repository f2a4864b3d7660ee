"""The ingest benchmark still runs end to end (a code change that breaks it is caught here).

Tiny volume: this checks that the benchmark works and prints its figures, not the figures.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ingest_benchmark_prints_times_ratio_rss_and_stages(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/ingest.py", "--rows", "2000", "--data-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"adpipes, CLI end to end:\s+\d+\.\d s", out), out
    assert re.search(r"baseline, psql \\copy x3:\s+\d+\.\d s", out), out
    ratio = re.search(r"ratio adpipes / psql \\copy: (\d+\.\d\d)", out)
    assert ratio and float(ratio.group(1)) > 0, out
    rss = re.search(r"peak RSS of the CLI process tree:\s+(\d+) MB", out)
    # A Python interpreter with Dagster loaded alone is well over 50 MB: a tiny figure means
    # the sampler missed the process tree.
    assert rss and int(rss.group(1)) > 50, out
    # The stage breakdown names the CLI's start and the raw_data step, from the run's event log.
    assert "CLI start, definitions load, run launch" in out and "appsflyer__raw_data: step" in out, out
    # Both databases got the day's unified rows: 2,000 in-app events per platform at least.
    counts = [int(n.replace(",", "")) for n in re.findall(r"rows in \w+ appsflyer\.raw_data: ([\d,]+)", out)]
    assert len(counts) == 2 and counts[0] == counts[1] >= 4000, out
    assert re.search(r"target: peak RSS <= 600 MB: (met|MISSED) \(PSS \d+ MB: (met|MISSED)\)", out), out
    # Shared pages counted once can only make the figure smaller than counting them per process.
    pss = re.search(r"peak PSS of the CLI process tree:\s+(\d+) MB", out)
    assert pss and 50 < int(pss.group(1)) <= int(rss.group(1)), out
    # Where the peak is: the CLI process itself among the processes listed at that moment.
    at_peak = re.findall(r"at the peak: (.+?)\s+RSS\s+(\d+) MB, PSS\s+(\d+) MB", out)
    assert "CLI" in [label.strip() for label, _, _ in at_peak], out
    assert sum(int(p) for _, _, p in at_peak) <= int(pss.group(1)) + 1, out
