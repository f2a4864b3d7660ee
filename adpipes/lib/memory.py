"""Allocators that hand memory freed by a step back to the system.

A step that streams a day block by block (``appsflyer/raw_data``: blocks of ~16 MB of CSV) frees
what each block used before the next, yet with the defaults the process grew as if it held
several blocks at once: glibc's ``malloc`` raises its mmap threshold to the size of every large
chunk freed (up to 32 MB), so after the first block pandas' and numpy's column buffers (a few
hundred KB each) come from the heap instead of their own mappings, and a heap with live chunks
between the freed ones cannot shrink. A fixed threshold keeps them in mappings that ``free``
unmaps. With it, Arrow's buffers are best left to the same allocator: its pools (mimalloc by
default, jemalloc) keep per-thread arenas that held more at the peak.

Measured on the 2-core machine, in one process against a 300K-events-per-platform day (peak RSS):

| step | defaults | fixed threshold, mimalloc | fixed threshold, jemalloc | fixed threshold, system |
|---|---|---|---|---|
| ``appsflyer/raw_data`` (600K rows) | 829 MB | 635 MB | 549-608 MB | 570 MB |
| an in-app events raw report (re-run) | not measured | 576 MB | 614-689 MB | 429-465 MB |

(the system allocator used ~10% more CPU in the raw report step, within this machine's noise
elsewhere; docs/development.md, "Benchmarks"). A setting the environment already makes
(``MALLOC_MMAP_THRESHOLD_``, ``ARROW_DEFAULT_MEMORY_POOL``) is left as the user chose it; where
glibc's setting cannot be applied (macOS, musl), Arrow keeps its default pool.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

import pyarrow as pa

# glibc's default initial threshold, kept fixed (mallopt turns off the dynamic adjustment).
MMAP_THRESHOLD_BYTES = 128 << 10
_M_MMAP_THRESHOLD = -3  # from glibc's <malloc.h>


def tune_allocators(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Apply both settings to this process (and the processes it forks); returns what was set."""
    environ = os.environ if environ is None else environ
    applied: dict[str, str] = {}
    if "MALLOC_MMAP_THRESHOLD_" not in environ and platform.libc_ver()[0] == "glibc":
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1:
            applied["malloc_mmap_threshold"] = str(MMAP_THRESHOLD_BYTES)
    if applied and "ARROW_DEFAULT_MEMORY_POOL" not in environ:
        pa.set_memory_pool(pa.system_memory_pool())
        applied["arrow_memory_pool"] = "system"
    return applied
