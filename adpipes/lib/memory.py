"""Allocators that hand memory freed by a step back to the system.

A step that streams a day block by block (``appsflyer/raw_data``: blocks of ~16 MB of CSV) frees
what each block used before the next. Two defaults kept that memory resident anyway, so the
process grew as if it held several blocks at once:

- glibc's ``malloc`` raises its mmap threshold to the size of every large chunk freed (up to
  32 MB): after the first block, pandas' and numpy's column buffers (a few hundred KB each) come
  from the heap instead of their own mappings, and a heap with live chunks between the freed
  ones cannot shrink. A fixed threshold keeps them in mappings that ``free`` unmaps.
- Arrow's default pool (mimalloc) keeps freed pages for reuse; jemalloc with a decay of 0 returns
  them at once.

Measured on the 2-core machine, one ``appsflyer/raw_data`` step of 600K rows in one process: peak
RSS 829 MB with the defaults, 635 MB with the fixed threshold, 549 MB with both, at the same CPU
time (docs/development.md, "Benchmarks"). A setting the environment already makes
(``MALLOC_MMAP_THRESHOLD_``, ``ARROW_DEFAULT_MEMORY_POOL``) is left as the user chose it.
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
    if "ARROW_DEFAULT_MEMORY_POOL" not in environ:
        try:
            pool = pa.jemalloc_memory_pool()
        except NotImplementedError:
            pass  # a pyarrow built without jemalloc (Windows) keeps its default pool
        else:
            pa.set_memory_pool(pool)
            pa.jemalloc_set_decay_ms(0)
            applied["arrow_memory_pool"] = "jemalloc"
    return applied
