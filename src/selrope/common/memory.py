"""How much memory the machine has: the bound that size checks (model loading, training,
evaluation) compare their estimates with."""

from __future__ import annotations

import os


def physical_memory_bytes() -> int | None:
    """The machine's physical memory in bytes, or None where the OS does not say (Windows)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def gigabytes(n_bytes: float) -> str:
    """``12.3 GB`` (decimal gigabytes, one decimal) for messages."""
    return f"{n_bytes / 1e9:.1f} GB"
