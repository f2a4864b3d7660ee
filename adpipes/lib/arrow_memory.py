"""Arrow's freed memory handed back to the system within a moment, in every adpipes process.

pyarrow allocates through mimalloc by default on Linux, which keeps freed pages for reuse.
``appsflyer/raw_data`` frees each block's Arrow buffers before it reads the next block, yet its
step grew to 584 MB RSS that way; with jemalloc returning freed pages after 100 ms it peaked at
445-455 MB, with the same CPU time (300K in-app events per platform, the step in one process,
measured on the 2-core development machine). glibc's allocator (``system``) fragmented to 1.26 GB.
"""

from __future__ import annotations

import os

import pyarrow as pa

POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"
# How long jemalloc keeps freed pages before returning them (Arrow's own default is 1 s).
RETURN_FREED_AFTER_MS = 100


def use_returning_memory_pool() -> str:
    """Make jemalloc, returning freed pages after ``RETURN_FREED_AFTER_MS``, this process's
    default Arrow memory pool (processes forked later inherit it); returns the backend in use.

    A pool chosen in ``ARROW_DEFAULT_MEMORY_POOL`` is kept (Arrow's own setting), and so is the
    default of a pyarrow built without jemalloc (its wheels for some platforms).
    """
    if os.environ.get(POOL_VARIABLE):
        return pa.default_memory_pool().backend_name
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.default_memory_pool().backend_name
    pa.set_memory_pool(pool)
    pa.jemalloc_set_decay_ms(RETURN_FREED_AFTER_MS)
    return pool.backend_name
