"""Which documents go to the validation split: whole documents, chosen by name or by seed."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

import numpy as np


def split_by_patterns(names: Sequence[str], patterns: Sequence[str]) -> np.ndarray:
    """(D,) bool: True for the documents whose name matches one of the fnmatch ``patterns``.

    Raises:
        ValueError: naming ``--val-documents`` when a pattern matches nothing, or when the
            patterns match no document or every document.
    """
    if not patterns:
        raise ValueError("--val-documents: give at least one pattern")
    is_val = np.zeros(len(names), dtype=bool)
    for pattern in patterns:
        matches = np.array([fnmatchcase(name, pattern) for name in names], dtype=bool)
        if not matches.any():
            raise ValueError(f"--val-documents: pattern {pattern!r} matches no document")
        is_val |= matches
    if is_val.all():
        raise ValueError(
            f"--val-documents {','.join(patterns)} matches all {len(names)} documents; "
            "the train split would be empty"
        )
    return is_val


def split_by_fraction(num_documents: int, val_fraction: float, seed: int) -> np.ndarray:
    """(D,) bool: True for round(val_fraction * D) documents (at least 1) chosen by a seeded
    permutation; the same seed always picks the same documents.

    Raises:
        ValueError: naming ``--val-fraction`` when it is outside (0, 1), when there are fewer than
            2 documents, or when val would take every document.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in (0, 1); got {val_fraction}")
    if num_documents < 2:
        raise ValueError(
            f"--val-fraction: splitting by document needs at least 2 documents; got {num_documents}"
        )
    num_val = max(1, round(val_fraction * num_documents))
    if num_val >= num_documents:
        raise ValueError(
            f"--val-fraction {val_fraction} would put all {num_documents} documents in val"
        )
    is_val = np.zeros(num_documents, dtype=bool)
    is_val[np.random.default_rng(seed).permutation(num_documents)[:num_val]] = True
    return is_val
