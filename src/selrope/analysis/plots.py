"""Figures of ``selrope analyze``: matplotlib ``Figure`` objects without pyplot (the global
backend is left alone; saving uses Agg), written as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DPI = 110


def new_figure(width: float, height: float) -> Any:
    """An empty ``matplotlib.figure.Figure`` of ``width`` x ``height`` inches, laid out tightly.

    Raises:
        ValueError: matplotlib is not installed (the ``plot`` extra).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError(
            "selrope analyze draws figures with matplotlib: pip install 'selrope[plot]'"
        ) from None
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(figure: Any, path: Path) -> Path:
    """Write ``figure`` as a PNG to ``path`` and return the path."""
    figure.savefig(path, dpi=DPI)
    return path
