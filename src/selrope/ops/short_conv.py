"""Short causal depthwise convolution over time, with a cache for streaming.

Used by the q/k/v convolutions of the linear-attention layers and by Selective RoPE's
angle-increment convolution. One function does the maths for every caller. With packed
documents (``segment_ids``, see ``ops.segments``) the taps that would reach into an earlier
document read zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selrope.common import check_positive_int
from selrope.ops.fla_backend import fla_causal_conv, use_fla
from selrope.ops.segments import check_segment_ids, document_index

ACTIVATIONS = (None, "silu")


def causal_depthwise_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    cache: torch.Tensor | None = None,
    activation: str | None = None,
    segment_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal depthwise conv1d over time, continuing from ``cache``; on CUDA with the ``gpu``
    extra, fla's Triton kernel (``ops.fla_backend``).

    Args:
        x: ``(B, T, C)`` input.
        weight: ``(C, W)`` one filter of width W per channel; output t sees inputs t-W+1..t.
        cache: ``(B, C, W-1)`` the last W-1 inputs before ``x`` (zeros = start of sequence);
            ``None`` starts a sequence.
        activation: ``None`` or ``"silu"``, applied after the convolution.
        segment_ids: ``(B, T)`` integer ids of packed documents, or None. The cache belongs to
            the row's first document; a later document's taps before its start read zeros.

    Returns:
        ``(y, new_cache)``: y ``(B, T, C)`` in x's dtype, new_cache ``(B, C, W-1)`` holding the
        last W-1 inputs, those before the row's last document zeroed (the returned cache is a new
        tensor; ``cache`` is never modified).
    """
    if x.dim() != 3:
        raise ValueError(f"x must have shape (B, T, C); got {tuple(x.shape)}")
    B, T, C = x.shape
    if weight.dim() != 2 or weight.shape[0] != C:
        raise ValueError(f"weight must have shape ({C}, W); got {tuple(weight.shape)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")
    width = weight.shape[1]
    if cache is None:
        cache = x.new_zeros(B, C, width - 1)
    elif cache.shape != (B, C, width - 1):
        raise ValueError(
            f"cache must have shape (B, C, W-1) = {(B, C, width - 1)}; got {tuple(cache.shape)}"
        )
    if segment_ids is not None:
        check_segment_ids(segment_ids, B, T)
    if use_fla(x):
        return fla_causal_conv(x, weight, cache, activation, segment_ids)
    padded = torch.cat([cache.to(x.dtype).transpose(1, 2), x], dim=1)  # (B, W-1+T, C)
    keep = None if segment_ids is None else _same_document_taps(segment_ids, width).to(x.dtype)
    y = _DepthwiseCausalConv.apply(padded, weight.to(x.dtype), keep)
    if activation == "silu":
        y = F.silu(y)
    # The last W-1 inputs; with packed documents only those of the row's last document.
    tail = padded[:, padded.shape[1] - (width - 1) :]
    if keep is not None:
        tail = tail * keep[:, -1, 1:, None]
    # transpose + contiguous copy: a view would keep the whole padded input alive in every cache.
    return y, tail.transpose(1, 2).contiguous()


def _same_document_taps(segment_ids: torch.Tensor, width: int) -> torch.Tensor:
    """``(B, T, W)`` bool: whether tap w of output t (input t - W + 1 + w) is in t's document.

    The W - 1 cache slots before the first token belong to the row's first document; as the last
    output's row, ``[:, -1, 1:]`` also says which of the last W - 1 inputs the next call may see.
    """
    document = document_index(segment_ids)  # (B, T)
    padded_document = F.pad(document, (width - 1, 0))  # cache slots: document 0
    return padded_document.unfold(1, width, 1) == document[:, :, None]


class _DepthwiseCausalConv(torch.autograd.Function):
    """``y[:, t] = sum_w weight[:, w] * keep[:, t, w] * padded[:, t + w]``, all in (B, T, C)
    memory order: one multiply-add per tap, forward and backward, where ``F.conv1d`` on a CPU
    needs (B, C, T) copies both ways and a depthwise backward several times slower than the
    arithmetic. Saved for backward: padded (and keep).

    Args (forward):
        padded: ``(B, W-1+T, C)`` the cache slots followed by the inputs.
        weight: ``(C, W)`` filters in padded's dtype.
        keep: ``(B, T, W)`` 1 for the taps to use, 0 for those across a document start, in
            padded's dtype (packed documents); None: every tap.
    """

    @staticmethod
    def forward(ctx, padded, weight, keep):
        width = weight.shape[1]
        T = padded.shape[1] - width + 1
        y = _tap(padded, keep, 0, T) * weight[:, 0]
        for w in range(1, width):
            y.addcmul_(_tap(padded, keep, w, T), weight[:, w])
        ctx.save_for_backward(padded, weight, keep)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        padded, weight, keep = ctx.saved_tensors
        width = weight.shape[1]
        T = grad_y.shape[1]
        grad_padded = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_padded = padded.new_zeros(padded.shape)
            for w in range(width):
                scaled = grad_y if keep is None else grad_y * keep[:, :, w, None]
                grad_padded[:, w : w + T].addcmul_(scaled, weight[:, w])
        if ctx.needs_input_grad[1]:
            products, columns = torch.empty_like(grad_y), []  # one buffer for every tap
            for w in range(width):
                torch.mul(grad_y, padded[:, w : w + T], out=products)
                if keep is not None:
                    products.mul_(keep[:, :, w, None])
                columns.append(products.sum((0, 1)))
            grad_weight = torch.stack(columns, dim=1)
        return grad_padded, grad_weight, None


def _tap(padded: torch.Tensor, keep: torch.Tensor | None, w: int, T: int) -> torch.Tensor:
    """``(B, T, C)``: the inputs tap w of every output reads (a view unless documents mask it)."""
    inputs = padded[:, w : w + T]
    return inputs if keep is None else inputs * keep[:, :, w, None]


class ShortConvolution(nn.Module):
    """Depthwise causal convolution module: ``forward(x (B,T,C), cache) -> (y, cache)``.

    Args:
        channels: number of channels C.
        kernel_size: filter width W (4 in every configuration of the papers).
        activation: ``None`` or ``"silu"``.
    """

    def __init__(self, channels: int, kernel_size: int = 4, activation: str | None = "silu"):
        super().__init__()
        check_positive_int("kernel_size", kernel_size)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(channels, kernel_size))
        # PyTorch's Conv1d default init (kaiming uniform, a=sqrt(5)) for a depthwise filter.
        bound = 1.0 / kernel_size**0.5
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(
        self,
        x: torch.Tensor,
        cache: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x ``(B, T, C)``, cache ``(B, C, W-1)`` or None, segment_ids ``(B, T)`` or None ->
        ``(y (B, T, C), new_cache (B, C, W-1))``; see ``causal_depthwise_conv``."""
        return causal_depthwise_conv(x, self.weight, cache, self.activation, segment_ids)
