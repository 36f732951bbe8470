"""Sequence-mixing layers: softmax attention, GLA and Gated DeltaNet, each with a rotary slot."""

from selrope.layers.attention import Attention, AttentionCache
from selrope.layers.gated_deltanet import GatedDeltaNet
from selrope.layers.gla import GatedLinearAttention
from selrope.layers.mlp import SwiGLU
from selrope.layers.norm import RMSNorm
from selrope.layers.recurrent_cache import RecurrentCache

__all__ = [
    "Attention",
    "AttentionCache",
    "GatedDeltaNet",
    "GatedLinearAttention",
    "RMSNorm",
    "RecurrentCache",
    "SwiGLU",
]
