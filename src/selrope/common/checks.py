"""The one set of value checks: each raises ``ValueError("<name> must be ...; got <value>")``.

Booleans are never numbers here (``n_layers=True`` is refused), and floats must be finite.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def is_int(value: Any) -> bool:
    """Whether ``value`` is an int and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_positive_int(name: str, value: Any) -> None:
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


def check_non_negative_int(name: str, value: Any) -> None:
    if not is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}")


def check_positive_float(name: str, value: Any) -> None:
    if not is_finite_number(value) or value <= 0:
        raise ValueError(f"{name} must be a positive float; got {value!r}")


def check_range(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """``low <= value <= high`` (``<`` on an open end), ``value`` a finite number."""
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (is_finite_number(value) and above and below):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a float in {interval}; got {value!r}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false; got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def check_heads_divide(width_name: str, width: int, n_heads: int) -> None:
    """``n_heads`` divides the width ``width_name`` (e.g. d_model)."""
    if width % n_heads:
        raise ValueError(
            f"n_heads must divide {width_name}; got {width_name}={width}, n_heads={n_heads}"
        )


def check_even_head_dim(name: str, head_dim: Any, minimum: int = 2) -> None:
    """A rotated head dimension: even (channel i pairs with i + D/2) and at least ``minimum``."""
    if not is_int(head_dim) or head_dim % 2 or head_dim < minimum:
        raise ValueError(f"{name} must be even and >= {minimum}; got {head_dim!r}")
