"""Keeping search memory bounded: per-thread scratch buffers, and giving freed heap memory back to
the system after large one-off allocations."""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import threading
import time

import numpy as np


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_TRIM = _malloc_trim()


def release_free_heap() -> None:
    """Return freed heap pages to the system (glibc's ``malloc_trim``; a no-op elsewhere).

    glibc only shrinks the heap from its top, so a large transient freed below a block that
    stays alive (the ~20 MB of argsort behind a transposed inverted list, the coarse k-means's
    buffers) would otherwise stay in the process's RSS for its whole life."""
    if _TRIM is not None:
        _TRIM(0)


_last_trim = [0.0]


def release_free_heap_every(seconds: float) -> None:
    """release_free_heap() when at least ``seconds`` have passed since the last call made here.

    Search calls this after every query: glibc's dynamic mmap threshold moves the varying
    temporaries of a query (numpy index arrays of a few hundred KB) into the heaps, where
    freed pages stay resident; over many queries, and in the extra arena of each batch thread,
    that grew RSS by tens of MB. Trimming at most every ``seconds`` bounds it for ~1% of the time
    (one trim ~0.5 ms)."""
    now = time.monotonic()
    if now - _last_trim[0] >= seconds:
        _last_trim[0] = now
        release_free_heap()


_local = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """This thread's reusable buffer ``name`` viewed as a C-contiguous ``shape`` array (grown when
    too small). Valid until the thread's next call with the same name: the large per-block
    arrays of scoring are reused instead of allocated per block, which would fragment the heap
    (glibc then keeps tens of MB per thread that no array uses)."""
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    n = math.prod(shape)
    buf = bufs.get(name)
    if buf is None or buf.size < n or buf.dtype != dtype:
        buf = bufs[name] = np.empty(n + n // 4, dtype=dtype)  # headroom: blocks vary a little
    return buf[:n].reshape(shape)
