"""Decoding state shared by the linear-recurrent layers (GLA, Gated DeltaNet)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch


class RecurrentCache(NamedTuple):
    """Everything a linear-recurrent layer needs to continue a sequence.

    state: ``(B, H, K, V)`` the recurrent memory.
    conv_q, conv_k, conv_v: ``(B, C, W-1)`` short-conv caches (None when convs are off).
    rotary_state: the rotary embedding's streaming state (None for NoPE).
    """

    state: torch.Tensor
    conv_q: torch.Tensor | None
    conv_k: torch.Tensor | None
    conv_v: torch.Tensor | None
    rotary_state: Any
