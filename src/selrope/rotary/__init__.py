"""Position encodings: the one rotation ``apply_rotary`` and the embeddings that make its angles.

Every embedding has ``forward(q, k, x, state=None) -> (q_rot, k_rot, new_state)``; PoPE's q_rot
and k_rot are twice as wide as q and k (``PoPE.output_head_dim_factor``).
"""

from selrope.rotary.absolute import LearnedPositionEmbedding, SinusoidalPositionEmbedding
from selrope.rotary.apply import apply_rotary, apply_rotary_qk
from selrope.rotary.base import CumulativeRotaryEmbedding, RotaryEmbedding
from selrope.rotary.carope import CARoPE, CARoPEState, rope_init_bias
from selrope.rotary.config import (
    SELECTIVE_COPYING_RECIPE,
    SELECTIVE_LM_RECIPE,
    SELECTIVE_STATE_TRACKING_RECIPE,
    CARoPEConfig,
    NoPEConfig,
    PoPEConfig,
    RoPEConfig,
    RotaryConfig,
    SelectiveRoPEConfig,
    parse_rotary_config,
)
from selrope.rotary.cumulative import cumulative_angles, wrap_angles
from selrope.rotary.factory import build_rotary
from selrope.rotary.fixed import NoPE, RoPE, RoPEState
from selrope.rotary.frequencies import Frequencies, rfa_frequencies, rope_frequencies
from selrope.rotary.fused import cumulative_rotary, rope_rotary
from selrope.rotary.pope import PoPE
from selrope.rotary.selective import SelectiveRoPE, SelectiveRoPEState

__all__ = [
    "SELECTIVE_COPYING_RECIPE",
    "SELECTIVE_LM_RECIPE",
    "SELECTIVE_STATE_TRACKING_RECIPE",
    "CARoPE",
    "CARoPEConfig",
    "CARoPEState",
    "CumulativeRotaryEmbedding",
    "Frequencies",
    "LearnedPositionEmbedding",
    "NoPE",
    "NoPEConfig",
    "PoPE",
    "PoPEConfig",
    "RoPE",
    "RoPEConfig",
    "RoPEState",
    "RotaryConfig",
    "RotaryEmbedding",
    "SelectiveRoPE",
    "SelectiveRoPEConfig",
    "SelectiveRoPEState",
    "SinusoidalPositionEmbedding",
    "apply_rotary",
    "apply_rotary_qk",
    "build_rotary",
    "cumulative_angles",
    "cumulative_rotary",
    "parse_rotary_config",
    "rfa_frequencies",
    "rope_frequencies",
    "rope_init_bias",
    "rope_rotary",
    "wrap_angles",
]
