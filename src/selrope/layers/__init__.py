"""Sequence-mixing layers: softmax attention, FoX, GLA and Gated DeltaNet, each with a rotary
slot."""

from selrope.layers.attention import Attention, AttentionCache
from selrope.layers.forgetting_attention import ForgettingAttention, ForgettingAttentionCache
from selrope.layers.gated_deltanet import GatedDeltaNet
from selrope.layers.gla import GatedLinearAttention
from selrope.layers.mlp import SwiGLU
from selrope.layers.norm import RMSNorm
from selrope.layers.recurrent_cache import RecurrentCache

__all__ = [
    "Attention",
    "AttentionCache",
    "ForgettingAttention",
    "ForgettingAttentionCache",
    "GatedDeltaNet",
    "GatedLinearAttention",
    "RMSNorm",
    "RecurrentCache",
    "SwiGLU",
]
