"""Sequence-mixing layers: softmax attention (plain, ALiBi, CoPE, PaTH), FoX (plain, CoPE, PaTH),
GLA and Gated DeltaNet, each with a rotary slot."""

from selrope.layers.alibi_attention import AlibiAttention
from selrope.layers.attention import Attention, AttentionCache
from selrope.layers.cope_attention import CopeAttention, CopeForgettingAttention
from selrope.layers.forgetting_attention import ForgettingAttention, ForgettingAttentionCache
from selrope.layers.gated_deltanet import GatedDeltaNet
from selrope.layers.gla import GatedLinearAttention
from selrope.layers.mlp import GELUMLP, MLPS, SwiGLU, build_mlp
from selrope.layers.norm import NORMS, RMSNorm, build_norm
from selrope.layers.path_attention import PathAttention, PathLayerCache
from selrope.layers.recurrent_cache import RecurrentCache

__all__ = [
    "MLPS",
    "NORMS",
    "AlibiAttention",
    "Attention",
    "AttentionCache",
    "CopeAttention",
    "CopeForgettingAttention",
    "ForgettingAttention",
    "ForgettingAttentionCache",
    "GELUMLP",
    "GatedDeltaNet",
    "GatedLinearAttention",
    "PathAttention",
    "PathLayerCache",
    "RMSNorm",
    "RecurrentCache",
    "SwiGLU",
    "build_mlp",
    "build_norm",
]
