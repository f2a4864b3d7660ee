"""docs/archive-safety.md: a refused raw report file is kept gzip-compressed "a chunk at a time as
it is stored, so the run's memory stays flat": storing one never holds the whole file in memory."""

import gzip
import os
import tracemalloc

import dagster as dg
import psycopg

from adpipes.lib.quality import QualityReport, RejectedDelivery


def test_a_rejected_file_is_stored_without_holding_it_whole_in_memory(storage_resources, clean_databases, tmp_path):
    _, archive_dsn = clean_databases
    size = 32 * 1024 * 1024
    delivered = tmp_path / "day.csv"
    with delivered.open("wb") as handle:  # written a MB at a time; incompressible, so gzip cannot hide it
        for _ in range(size // (1024 * 1024)):
            handle.write(os.urandom(1024 * 1024))
    kept = RejectedDelivery("2026-07-04", "fewer rows than archived", path=delivered, rows=1, columns=["a"],
                            archived_rows=2)
    store = storage_resources["quality"]
    # Tables first, so the measure is of storing the delivery.
    store.record_refusal("run-0", dg.AssetKey(["memory_test", "t"]), QualityReport([], []), [], [])
    tracemalloc.start()
    try:
        store.record_refusal("run-1", dg.AssetKey(["memory_test", "t"]), QualityReport([], []), [], [kept])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Flat: a fraction of the file, not the file (a whole read alone would be 32 MB).
    assert peak < size / 2, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.0f} MB file"
    with psycopg.connect(archive_dsn) as conn:
        (stored,) = conn.execute("SELECT content_gzip FROM quality.rejected_deliveries WHERE run_id = 'run-1'"
                                 ).fetchone()
    assert gzip.decompress(stored) == delivered.read_bytes()
