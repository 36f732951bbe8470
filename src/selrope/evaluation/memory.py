"""How much memory one evaluation forward pass needs, estimated from the config before any
model is built, so that ``selrope eval --lengths 60000`` on an attention model is refused in one
line instead of allocating until the machine gives out.

The estimate is deliberately conservative (it counts every large tensor as alive at once, in
float32, 4 bytes) and is meant to catch requests that are far out of reach, not to predict the
peak to the byte. For B windows of T tokens (no gradients, one layer's temporaries at a time):

- per token, across the model: the residual stream and one layer's projections
  ``16 + 8 max(expand_k, expand_v) + 3 mlp_ratio`` widths of d_model (float32), the rotary
  angles, their running sums and cos/sin in float64 (``3 d_model / 2`` float64), and the logits
  three times over (logits, their float32 copy, the log-softmax of the loss): ``3 V`` floats;
- softmax attention (SDPA's math path materialises the scores): ``2 H T^2`` floats (scores,
  weights) plus a ``T^2`` boolean mask per window; FoX adds its float bias and its cast copy,
  ``4 H T^2`` floats;
- chunked GLA / Gated DeltaNet: ``2 H T C`` floats of intra-chunk scores and the state entering
  every chunk, ``2 H ceil(T / C) d_k d_v`` floats, plus ``4 expand_k d_model`` floats per token of
  decayed queries and keys;

the per-token part times ``B T`` plus the largest layer's part.
"""

from __future__ import annotations

import math

from selrope.models import LMConfig

_FLOAT = 4
_DOUBLE = 8
_SOFTMAX_COPIES = {"attention": 2, "fox": 4}


def forward_activation_bytes(config: LMConfig, batch_size: int, length: int) -> int:
    """Conservative bytes of activations of one forward pass of ``batch_size`` windows of
    ``length`` tokens, without gradients (see the module docstring for the formula)."""
    B, T, d, H = batch_size, length, config.d_model, config.n_heads
    mixers = config.layer_mixer_configs()
    expand = max(
        [max(getattr(m, "expand_k", 1.0), getattr(m, "expand_v", 1.0)) for m in mixers] or [1.0]
    )
    widths = 16 + 8 * expand + 3 * config.mlp_ratio
    per_token = widths * d * _FLOAT + 3 * (d / 2) * _DOUBLE + 3 * config.vocab_size * _FLOAT
    largest_layer = max(_layer_bytes(mixer, B, T, d, H) for mixer in mixers)
    return int(B * T * per_token + largest_layer)


def _layer_bytes(mixer, B: int, T: int, d: int, H: int) -> float:
    """Temporaries of one mixer layer beyond the per-token projections."""
    if mixer.kind in _SOFTMAX_COPIES:
        return B * T * T * (_SOFTMAX_COPIES[mixer.kind] * H * _FLOAT + 1)
    if getattr(mixer, "form", "chunk") != "chunk":
        return 0.0
    C = min(mixer.chunk_size, 1 << (T - 1).bit_length())
    key_width, value_width = mixer.expand_k * d / H, mixer.expand_v * d / H
    scores = 2 * B * H * T * C * _FLOAT
    states = 2 * B * H * math.ceil(T / C) * key_width * value_width * _FLOAT
    decayed = 4 * B * T * mixer.expand_k * d * _FLOAT
    return scores + states + decayed


def describe_quadratic(config: LMConfig, length: int) -> str:
    """What dominates at ``length``: ``"2 heads x 60000 x 60000 attention scores"`` for softmax
    attention, else ``"the logits and projections"``."""
    if any(m.kind in _SOFTMAX_COPIES for m in config.layer_mixer_configs()):
        return f"{config.n_heads} heads x {length} x {length} attention scores per window"
    return "the logits and projections"
