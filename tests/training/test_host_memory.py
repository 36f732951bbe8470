"""keep_freed_memory: big tensors come from malloc's heap and stay there after they are freed."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap

import pytest

from selrope.training.host_memory import SYSTEM_MALLOC_SWITCH


def _has_glibc_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "mallinfo2")
    except (OSError, TypeError):
        return False


# A fresh interpreter: prints whether the setting applied, then the MiB that malloc served by
# mmap while a 64 MiB tensor was alive, and the heap MiB left after freeing it.
PROBE = textwrap.dedent(
    """
    import ctypes, torch
    from selrope.training.host_memory import keep_freed_memory

    class Info(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks "
                    "keepcost".split()]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Info
    applied = keep_freed_memory()
    before = libc.mallinfo2().hblkhd
    tensor = torch.ones(16 * 2**20)  # 64 MiB
    mapped = (libc.mallinfo2().hblkhd - before) / 2**20
    del tensor
    print(applied, round(mapped), round(libc.mallinfo2().arena / 2**20))
    """
)


def _probe(system_malloc: bool) -> tuple[str, int, int]:
    env = {**os.environ, SYSTEM_MALLOC_SWITCH: "1" if system_malloc else "0"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    applied, mapped, heap = out.stdout.split()
    return applied, int(mapped), int(heap)


@pytest.mark.skipif(not _has_glibc_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")
def test_big_tensors_reuse_the_heap_unless_switched_off():
    applied, mapped, heap = _probe(system_malloc=False)
    assert applied == "True"
    assert mapped == 0  # not served by mmap...
    assert heap >= 64  # ...but by the heap, which keeps it after the free
    applied, mapped, heap = _probe(system_malloc=True)
    assert applied == "False"
    assert mapped >= 64  # glibc's default: a fresh mapping, returned on free
