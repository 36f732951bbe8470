"""Selective RoPE (arXiv 2511.17388): input-dependent angle increments, accumulated over time."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from selrope.common import check_even_head_dim, check_heads_divide
from selrope.ops.short_conv import ShortConvolution, causal_depthwise_conv
from selrope.rotary.base import CastLinear, CumulativeRotaryEmbedding, check_state_tensor
from selrope.rotary.config import SelectiveRoPEConfig
from selrope.rotary.frequencies import Frequencies, rfa_frequencies, rope_frequencies

L2_EPS = 1e-6


class SelectiveRoPEState(NamedTuple):
    """Selective RoPE's streaming state (never modified in place).

    phase: ``(B, H, D/2)`` float64, the raw accumulated increments (before the frequencies).
    conv_cache: ``(B, H*D/2, W-1)`` the last raw projections p before the next token: W - 1 =
        ``conv_size - 1`` of them for the learned conv, 1 (the previous projection) for skip conv.
    """

    phase: torch.Tensor
    conv_cache: torch.Tensor


class _HeadL2Normalize(torch.autograd.Function):
    """``y = x / sqrt(sum(x^2) + eps)`` over the last dim, with a hand-written backward.

    ``grad_x = (grad_y - y * <grad_y, y>) / sqrt(sum(x^2) + eps)``: three passes over x-sized
    tensors, where autograd's division and power backward take about ten (on a CPU the
    normalisation cost as much as the projection after it). Saved: y and the norms.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        norm = torch.sqrt(x.square().sum(-1, keepdim=True) + L2_EPS)
        y = x / norm
        ctx.save_for_backward(y, norm)
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor) -> torch.Tensor:
        y, norm = ctx.saved_tensors
        along = (grad_y * y).sum(-1, keepdim=True)
        return torch.addcmul(grad_y, y, along, value=-1.0).div_(norm)


def head_l2_normalize(x_heads: torch.Tensor) -> torch.Tensor:
    """``(..., d/H)`` -> each slice divided by ``sqrt(sum x^2 + 1e-6)`` (same shape and dtype)."""
    return _HeadL2Normalize.apply(x_heads)


class PerHeadProjection(nn.Module):
    """Full-rank projection: ``p[h, j] = scale[h] * <x_h, w_hj / |w_hj|>``.

    Head h reads only its own slice x_h of width d/H; each column w_hj is weight-normalised over
    its input dimension, so ``|p| <= |scale[h]|`` for unit x_h. ``scale`` starts at 1 and carries
    ``_no_weight_decay = True`` for optimisers that honour it. Columns start as PyTorch's
    kaiming-uniform per head (the scale of that init is irrelevant after normalisation).

    Args:
        num_heads: H.
        head_width: d/H, the width of each head's slice of x.
        out_features: R increments per head.
    """

    def __init__(self, num_heads: int, head_width: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_heads, head_width, out_features))
        for head in range(num_heads):
            nn.init.kaiming_uniform_(self.weight[head].T)
        self.scale = nn.Parameter(torch.ones(num_heads))
        self.scale._no_weight_decay = True

    def forward(self, x_heads: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, d/H) -> (B, T, H*R)`` in x's dtype."""
        # F.normalize divides by max(|w|, 1e-12): an all-zero column gives 0, not NaN.
        columns = (
            F.normalize(self.weight.to(x_heads.dtype), dim=1)
            * self.scale.to(x_heads.dtype)[:, None, None]
        )
        return per_head_matmul(x_heads, columns).flatten(2)


@torch.library.custom_op("selrope::per_head_matmul", mutates_args=())
def per_head_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``out[b, t, h] = x[b, t, h] @ weight[h]``: ``(B, T, H, c) x (H, c, n) -> (B, T, H, n)``.

    One batched matmul over heads, forward and backward, each reading and writing (B, T, H, .)
    tensors through head-major strided views: no copies, and every result is contiguous in
    (B, T, H, .) order. An einsum or a bmm under autograd leaves x's gradient head-major, and
    everything after it, on a CPU, several times slower; under torch.compile inductor keeps the
    head-major layouts too and its CPU bmm ran 2x slower. A custom op is opaque to the compiler,
    so compiled and eager models run this same code.
    """
    out = x.new_empty(*x.shape[:3], weight.shape[2])
    torch.bmm(_head_major(x.contiguous()), weight, out=_head_major(out))
    return out


@per_head_matmul.register_fake
def _(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x.new_empty(*x.shape[:3], weight.shape[2])


@torch.library.custom_op("selrope::per_head_matmul_weight_grad", mutates_args=())
def per_head_matmul_weight_grad(x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """The weight gradient of ``per_head_matmul``: ``(B, T, H, c), (B, T, H, n) -> (H, c, n)``."""
    x_heads = _head_major(x.contiguous()).transpose(1, 2)
    return torch.bmm(x_heads, _head_major(grad_out.contiguous()))


@per_head_matmul_weight_grad.register_fake
def _(x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape[2], x.shape[3], grad_out.shape[3])


def _save_matmul_inputs(ctx, inputs: tuple[torch.Tensor, torch.Tensor], output) -> None:
    ctx.save_for_backward(*inputs)


def _per_head_matmul_backward(ctx, grad_out: torch.Tensor):
    x, weight = ctx.saved_tensors
    grad_x = grad_weight = None
    if ctx.needs_input_grad[0]:
        grad_x = per_head_matmul(grad_out, weight.transpose(1, 2))
    if ctx.needs_input_grad[1]:
        grad_weight = per_head_matmul_weight_grad(x, grad_out)
    return grad_x, grad_weight


per_head_matmul.register_autograd(_per_head_matmul_backward, setup_context=_save_matmul_inputs)


def _head_major(x: torch.Tensor) -> torch.Tensor:
    """``(B, T, H, c)`` contiguous -> ``(H, B*T, c)`` strided view."""
    return x.reshape(-1, *x.shape[2:]).transpose(0, 1)


class SelectiveRoPE(CumulativeRotaryEmbedding):
    """Selective RoPE: ``theta_t = omega * sum_{s <= t} gate_s * (conv(p)_s + exp(b))``.

    Pipeline for x ``(B, T, d)`` (all of it in float32, or float64 for float64 q, autocast off):
    1. per-head l2 normalisation: x split into H slices of width d/H, each divided by
       ``sqrt(sum x^2 + 1e-6)``;
    2. projection to p ``(B, T, H*R)``: low-rank (d -> rank -> H*R, no biases) or full-rank
       (``PerHeadProjection``);
    3. causal depthwise short conv over time (``conv_size``, activation None/SiLU), or the fixed
       difference ``p_t - p_{t-1}`` (skip conv: the cumulative sum then gives back p_t);
    4. optional ``+ exp(b)``, b ``(H, R)``;
    5. optional sigmoid phase gate of the normalised x: per head (d -> H), low-rank per head
       (d -> gate_rank -> H) or per pair (d -> gate_rank -> H*R, "gla");
    6. cumulative sum over time (float64 carries, continuing from ``state.phase``), times the
       frequencies omega, reduced mod 2 pi (``cumulative_angles``);
    7. rotation of q and k (``apply_rotary``); steps 6-7 run fused on CUDA with Triton
       (``cumulative_rotary``).

    Initialisation (Hugging-Face style, as the paper's LM/copying/state-tracking models):
    Linear weights ~ N(0, 0.02), conv weights ~ N(0, ``conv_init_std``: 0.02), zero biases (gate
    bias 0: the gate starts at 0.5), b = 0; the full-rank projection keeps its kaiming-uniform
    directions with scale 1; frequencies are fixed ``rope_frequencies`` / ``rfa_frequencies``
    (float32, frozen unless trainable). Without the bias the initial angles are tiny whatever
    the projection: the conv's small taps (then the SiLU and the gate's 0.5) leave increments of
    about 1e-3 rad per token (LM recipe, measured), so the model starts close to NoPE. With the
    bias every pair starts as RoPE at ``exp(0)`` = 1 per token (times the gate).

    Args:
        num_heads: H.
        head_dim: D, the q/k head dimension (even; R = D/2 pairs).
        model_dim: d, the width of x (divisible by H).
        config: the options (``SelectiveRoPEConfig``; default: the paper code's defaults with
            rank 32).
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        model_dim: int,
        config: SelectiveRoPEConfig | None = None,
    ):
        super().__init__()
        config = SelectiveRoPEConfig() if config is None else config
        check_even_head_dim("head_dim", head_dim)
        check_heads_divide("model_dim", model_dim, num_heads)
        self.config = config
        self.num_heads, self.head_dim, self.model_dim = num_heads, head_dim, model_dim
        self.interleaved = config.interleaved
        pairs = head_dim // 2
        channels = num_heads * pairs

        if config.projection == "low-rank":
            self.projection = nn.Sequential(
                CastLinear(model_dim, config.rank, bias=False),
                CastLinear(config.rank, channels, bias=False),
            )
        else:
            self.projection = PerHeadProjection(num_heads, model_dim // num_heads, pairs)

        if config.skip_conv:
            self.conv = None
        else:
            self.conv = ShortConvolution(channels, config.conv_size, config.conv_activation)
            nn.init.normal_(self.conv.weight, std=config.conv_init_std)

        self.log_bias = nn.Parameter(torch.zeros(num_heads, pairs)) if config.use_bias else None

        gate_outputs = channels if config.gate == "gla" else num_heads
        if config.gate is None:
            self.gate = None
        elif config.gate == "standard":
            self.gate = CastLinear(model_dim, gate_outputs)
        else:
            self.gate = nn.Sequential(
                CastLinear(model_dim, config.gate_rank, bias=False),
                CastLinear(config.gate_rank, gate_outputs),
            )

        if config.frequencies == "rope":
            values = rope_frequencies(head_dim, config.theta_base, config.temp_max)
        else:
            values = rfa_frequencies(head_dim, config.rfa_c, config.temp_max)
        self.frequencies = Frequencies(values, trainable=config.trainable_frequencies)

    @property
    def conv_cache_width(self) -> int:
        """W - 1: how many past raw projections the state keeps."""
        return 1 if self.conv is None else self.config.conv_size - 1

    def angle_increments(
        self,
        x: torch.Tensor,
        conv_cache: torch.Tensor | None,
        dtype: torch.dtype,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 1-5: per-token increments before the cumulative sum.

        Args:
            x: ``(B, T, d)``.
            conv_cache: ``(B, H*R, W-1)`` raw projections before x, or None (sequence start).
            dtype: float32 or float64, the dtype of the computation.
            segment_ids: ``(B, T)`` integer ids of packed documents, or None: the conv (or the
                skip-conv difference) reads zeros before every document start after the first.

        Returns:
            ``(increments (B, T, H, R), new_conv_cache (B, H*R, W-1))``, both in ``dtype``.
        """
        B, T, _ = x.shape
        H = self.num_heads
        x_heads = x.to(dtype).unflatten(-1, (H, -1))
        x_heads = head_l2_normalize(x_heads)
        x_unit = x_heads.flatten(2)

        if isinstance(self.projection, PerHeadProjection):
            p = self.projection(x_heads)
        else:
            p = self.projection(x_unit)

        if self.conv is None:
            difference = p.new_tensor([-1.0, 1.0]).expand(p.shape[-1], 2)
            increments, new_cache = causal_depthwise_conv(
                p, difference, conv_cache, segment_ids=segment_ids
            )
        else:
            increments, new_cache = self.conv(p, conv_cache, segment_ids)
        increments = increments.unflatten(-1, (H, -1))

        if self.log_bias is not None:
            increments = increments + self.log_bias.to(dtype).exp()
        if self.gate is not None:
            increments = increments * torch.sigmoid(self.gate(x_unit)).unflatten(-1, (H, -1))
        return increments, new_cache

    def phase_inputs(
        self,
        x: torch.Tensor,
        state: SelectiveRoPEState | None,
        dtype: torch.dtype,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        phase = conv_cache = None
        if state is not None:
            B, pairs = x.shape[0], self.head_dim // 2
            check_state_tensor(
                "state.phase",
                getattr(state, "phase", None),
                (B, self.num_heads, pairs),
                torch.float64,
            )
            check_state_tensor(
                "state.conv_cache",
                getattr(state, "conv_cache", None),
                (B, self.num_heads * pairs, self.conv_cache_width),
            )
            phase, conv_cache = state.phase, state.conv_cache
        increments, new_cache = self.angle_increments(x, conv_cache, dtype, segment_ids)
        return increments, self.frequencies(), phase, new_cache

    def make_state(self, final_phase: torch.Tensor, rest: torch.Tensor) -> SelectiveRoPEState:
        return SelectiveRoPEState(final_phase, rest)
