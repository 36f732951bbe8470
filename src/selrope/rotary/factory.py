"""``build_rotary``: any rotary embedding from a config dict or dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from selrope.rotary.carope import CARoPE
from selrope.rotary.config import (
    CARoPEConfig,
    NoPEConfig,
    PoPEConfig,
    RoPEConfig,
    RotaryConfig,
    parse_rotary_config,
)
from selrope.rotary.fixed import NoPE, RoPE
from selrope.rotary.pope import PoPE
from selrope.rotary.selective import SelectiveRoPE


def build_rotary(
    config: Mapping[str, Any] | RotaryConfig, *, num_heads: int, head_dim: int, model_dim: int
) -> nn.Module:
    """Build the rotary embedding a config describes.

    Args:
        config: e.g. ``{"type": "selective", "projection": "full-rank", "gate": "standard"}``
            (type in nope / rope / carope / selective / pope) or one of the config dataclasses.
        num_heads: H of q and k.
        head_dim: D of q and k (even).
        model_dim: d, the width of the x the embedding reads.

    Returns:
        A module with ``forward(q, k, x, state=None) -> (q_rot, k_rot, new_state)``; q_rot and
        k_rot are ``(B, T, H, D)``, but ``(B, T, H, 2D)`` for PoPE (its
        ``output_head_dim_factor``).

    Raises:
        ValueError: unknown type or key, or an invalid value (naming the key and allowed values).
    """
    config = parse_rotary_config(config)
    if isinstance(config, NoPEConfig):
        return NoPE()
    if isinstance(config, RoPEConfig):
        return RoPE(
            head_dim, base=config.base, interleaved=config.interleaved, scaling=config.scaling
        )
    if isinstance(config, CARoPEConfig):
        return CARoPE(
            num_heads,
            head_dim,
            model_dim,
            base=config.base,
            rope_init=config.rope_init,
            pair_start=config.pair_start,
            interleaved=config.interleaved,
        )
    if isinstance(config, PoPEConfig):
        return PoPE(num_heads, head_dim, base=config.base, bias_init=config.bias_init)
    return SelectiveRoPE(num_heads, head_dim, model_dim, config)
