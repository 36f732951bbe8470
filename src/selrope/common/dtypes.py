"""The compute-dtype rule: float64 stays float64, everything else computes in float32.

Angles, their cumulative sums, cos/sin, decays and recurrent states use it, so that bf16 / fp16
inputs (autocast) never accumulate in half precision, while float64 references stay exact.
"""

from __future__ import annotations

import torch


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any of ``dtypes`` is float64, else float32."""
    return torch.float64 if torch.float64 in dtypes else torch.float32
