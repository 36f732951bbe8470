"""Host memory: keep freed memory in the process on Linux (glibc), and how much there is.

glibc's malloc serves every block above its mmap threshold (which grows to at most 32 MiB) with
a fresh ``mmap`` and unmaps it on ``free``. A tensor that large (a batch of activations, the
logits, q and k of a long sequence) is then faulted back in, page by page, at every step; on a
CPU that costs as much as the arithmetic on it, and varies from run to run. ``keep_freed_memory``
asks malloc to serve such blocks from its heap and never to trim it, so a training loop reuses
the same memory every step. The cost: the process keeps its peak memory until it ends.

The CLI calls it once per process (and in every worker it spawns), as do the benchmarks; set
``SELROPE_SYSTEM_MALLOC=1`` to keep glibc's defaults (or to preload another allocator).
"""

from __future__ import annotations

import ctypes
import os

from selrope.common.memory import physical_memory_bytes  # noqa: F401 - re-exported

SYSTEM_MALLOC_SWITCH = "SELROPE_SYSTEM_MALLOC"
_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>: free heap kept below this many bytes at its top
_M_MMAP_MAX = -4  # glibc <malloc.h>: at most this many blocks served by mmap
_INT_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Serve big blocks from malloc's heap and never trim it (glibc ``mallopt``).

    Returns:
        Whether the setting was applied: False where there is no glibc ``mallopt`` (macOS,
        Windows, musl) or when ``SELROPE_SYSTEM_MALLOC=1``.
    """
    if os.environ.get(SYSTEM_MALLOC_SWITCH, "0") == "1":
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (raises AttributeError where libc is not glibc)
        mallopt = libc.mallopt
    except (OSError, TypeError, AttributeError):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX)) and bool(mallopt(_M_MMAP_MAX, 0))
