"""Per-pair rotation frequencies ("temperatures") and a module that keeps them in float32."""

from __future__ import annotations

import math

import torch
from torch import nn

from selrope.common import check_even_head_dim


def rope_frequencies(head_dim: int, base: float, temp_max: float = 1.0) -> torch.Tensor:
    """RoPE's inverse frequencies ``temp_max * base^(-2i/D)``, i = 0..R-1.

    Args:
        head_dim: D (even).
        base: >= 1; base 1 makes every frequency equal ``temp_max``.
        temp_max: the largest frequency (pair 0).

    Returns:
        ``(D/2,)`` float32 (computed in float64).
    """
    check_even_head_dim("head_dim", head_dim)
    if not base >= 1.0:
        raise ValueError(f"base must be >= 1; got {base}")
    exponents = torch.arange(head_dim // 2, dtype=torch.float64) * (-2.0 / head_dim)
    return (temp_max * base**exponents).float()


def rfa_frequencies(head_dim: int, c: float, temp_max: float = 1.0) -> torch.Tensor:
    """Selective RoPE's "rfa" frequencies: ``tan(a_i / 2)`` with ``a = linspace(0, c pi, R)``,
    rescaled so the largest is ``temp_max`` (so pair 0 never rotates). These are evenly spaced
    quantiles of a half-Cauchy distribution: averaging ``cos(w d)`` over them approximates a
    Laplace kernel (random-Fourier-feature view).

    Args:
        head_dim: D (even, >= 4 so that R >= 2).
        c: in (0, 1); the copying experiments use 0.9999.
        temp_max: the largest frequency (the last pair).

    Returns:
        ``(D/2,)`` float32 (computed in float64).
    """
    check_even_head_dim("head_dim for rfa frequencies", head_dim, minimum=4)
    if not 0.0 < c < 1.0:
        raise ValueError(f"c must be in (0, 1); got {c}")
    half_angles = torch.linspace(0.0, c * math.pi, head_dim // 2, dtype=torch.float64) / 2
    tangents = half_angles.tan()
    return (temp_max * tangents / tangents[-1]).float()


class Frequencies(nn.Module):
    """Holds a ``(R,)`` frequency vector, frozen or trainable.

    Frozen frequencies are a non-persistent buffer that stays float32 when the module is cast
    (``.to(torch.bfloat16)``, ``.half()``): ``_apply`` restores the float32 values on the new
    device, because a bf16 copy would put up to 0.4 % error on every angle. Trainable frequencies
    are an ``nn.Parameter`` and follow the model's dtype like any other parameter.

    Args:
        values: ``(R,)`` float32 frequencies.
        trainable: learn them (a Parameter) instead of a frozen buffer.
    """

    def __init__(self, values: torch.Tensor, trainable: bool = False):
        super().__init__()
        self.trainable = trainable
        if trainable:
            self.values = nn.Parameter(values.clone())
        else:
            self._float32_values = values.detach().float().clone()
            self.register_buffer("values", self._float32_values.clone(), persistent=False)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if not self.trainable:
            self.values = self._float32_values.to(self.values.device)
        return self

    def forward(self) -> torch.Tensor:
        """Returns the ``(R,)`` frequencies."""
        return self.values
