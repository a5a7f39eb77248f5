"""Process memory settings for long numeric work: glibc keeps freed large blocks for reuse.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and returns it on ``free``, so code that allocates and frees large arrays in a
loop (a network's activations at 224 px, a detector's float64 temporaries on 30,000 x
1,280 features) has each of them page-faulted and zeroed again by the kernel. In ad hoc
measurements during development that kernel work was about 40% of the CPU time of an
EfficientNet-Lite0 forward pass at batch 64, and it roughly doubled the time of the
post-hoc detectors on C10-OSR6's cached features. :func:`keep_freed_memory` switches it
off for the duration of a block.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["TUNE_GLIBC_MALLOC", "keep_freed_memory"]

#: Set to False to leave the C allocator alone (see :func:`keep_freed_memory`).
TUNE_GLIBC_MALLOC = True
_lock = threading.Lock()
_users = 0
# glibc mallopt parameters (malloc.h) and the values set after the last block: the
# largest thresholds glibc's own dynamic adjustment reaches on 64-bit systems
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_AFTER = ((_M_MMAP_MAX, 65536), (_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 64 << 20))


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[None]:
    """With glibc, keep freed blocks in the heap for reuse inside the block.

    On entry (the first of concurrent users), ``mallopt`` stops glibc from using ``mmap``
    and from trimming the heap; after the last user leaves, it sets the thresholds glibc's
    dynamic adjustment would have reached (mmap above 32 MiB, trim above 64 MiB) and
    returns free memory to the system with ``malloc_trim``. Peak memory is about the same;
    memory freed inside the block stays with the process until the block ends. Nothing
    is done on other C libraries, when the user has tuned malloc through ``MALLOC_*`` or
    ``GLIBC_TUNABLES``, or when :data:`TUNE_GLIBC_MALLOC` is False.
    """
    global _users
    libc = _glibc() if TUNE_GLIBC_MALLOC else None
    if libc is None:
        yield
        return
    with _lock:
        if _users == 0:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)  # the largest int: never trim
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                for param, value in _AFTER:
                    libc.mallopt(param, value)
                libc.malloc_trim(0)


@functools.lru_cache(maxsize=1)
def _glibc() -> Any:
    """The process's glibc (for ``mallopt`` / ``malloc_trim``), or None where it does not apply."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    if any(k.startswith("MALLOC_") for k in os.environ) or "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc
