"""The allocator settings adpipes applies to every process that loads its definitions."""

import json
import os
import platform
import subprocess
import sys

import pytest

GLIBC = platform.libc_ver()[0] == "glibc"

# Run in a fresh interpreter: the settings are per process and cannot be undone in this one. Both
# modes import the whole code location (imports change the heap); "untuned" only skips the
# settings. glibc's malloc is driven directly, as pandas' and numpy's buffers use it: an 8 MB
# chunk is freed (by glibc's default, a freed mapped chunk raises the threshold under which
# allocations come from the heap to its size), then 50 chunks of 2 MB, each followed by a small
# live chunk, are allocated and freed. glibc marks a chunk with its own mapping in its header
# (IS_MMAPPED, bit 2 of the size word before the pointer).
PROBE = r"""
import ctypes, ctypes.util, json, sys
import psutil
import adpipes.lib.memory
if sys.argv[1] == "untuned":
    adpipes.lib.memory.tune_allocators = lambda *args, **kwargs: {}
import adpipes.definitions  # applies the settings on import, as every adpipes process does
import pyarrow as pa
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def touched(n):
    pointer = libc.malloc(n)
    ctypes.memset(pointer, 1, n)
    return pointer
libc.free(touched(8 << 20))
blocks, live = [], []
for _ in range(50):
    blocks.append(touched(2 << 20))
    live.append(touched(4096))
mapped = all(ctypes.c_size_t.from_address(b - ctypes.sizeof(ctypes.c_size_t)).value & 2 for b in blocks)
process = psutil.Process()
full = process.memory_info().rss
for block in blocks:
    libc.free(block)
print(json.dumps({"mapped": bool(mapped), "released_mb": (full - process.memory_info().rss) / 2**20,
                  "arrow_pool": pa.default_memory_pool().backend_name}))
"""


def probe(mode: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "ARROW_DEFAULT_MEMORY_POOL")}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env={**environ, **env}, capture_output=True,
                         text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the malloc setting applies to glibc only")
def test_memory_freed_by_a_step_goes_back_to_the_system():
    untuned, tuned = probe("untuned"), probe("tuned")
    # Column-sized chunks keep their own mappings whatever was freed before, and freeing 100 MB
    # of them gives 100 MB back.
    assert (untuned["mapped"], tuned["mapped"]) == (False, True)
    assert tuned["released_mb"] > 90
    # Arrow allocates through the same malloc (its mimalloc pool held more at a step's peak).
    assert (untuned["arrow_pool"], tuned["arrow_pool"]) == ("mimalloc", "system")


def test_allocator_settings_from_the_environment_are_kept():
    assert probe("tuned", ARROW_DEFAULT_MEMORY_POOL="jemalloc")["arrow_pool"] == "jemalloc"
    if GLIBC:
        # The user's own threshold (16 MB: 2 MB chunks come from the heap) is not replaced.
        assert probe("tuned", MALLOC_MMAP_THRESHOLD_=str(16 << 20))["mapped"] is False
