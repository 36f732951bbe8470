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
    padded = torch.cat([cache.to(x.dtype), x.transpose(1, 2)], dim=2)  # (B, C, W-1+T)
    if segment_ids is None:
        y = F.conv1d(padded, weight.to(x.dtype).unsqueeze(1), groups=C).transpose(1, 2)
        # clone: a view would keep the whole padded (B, C, W-1+T) input alive in every cache.
        new_cache = padded[:, :, padded.shape[2] - (width - 1) :].clone()
    else:
        y, new_cache = _segmented_conv(padded, weight.to(x.dtype), segment_ids)
    if activation == "silu":
        y = F.silu(y)
    return y, new_cache


def _segmented_conv(
    padded: torch.Tensor, weight: torch.Tensor, segment_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The conv of ``causal_depthwise_conv`` with taps across document starts read as zeros.

    Args:
        padded: ``(B, C, W-1+T)`` the cache followed by the inputs.
        weight: ``(C, W)`` filters in padded's dtype.
        segment_ids: ``(B, T)`` packed-document ids of the inputs.

    Returns:
        ``(y (B, T, C), new_cache (B, C, W-1))``, the cache holding only the last document.
    """
    width = weight.shape[1]
    # Document of every padded slot; the cache slots belong to the first document (index 0).
    document = document_index(segment_ids)
    padded_document = F.pad(document, (width - 1, 0))
    windows = padded.unfold(2, width, 1)  # (B, C, T, W): inputs t-W+1..t for output t
    same = padded_document.unfold(1, width, 1) == document[:, :, None]  # (B, T, W)
    y = torch.einsum("bctw,cw->btc", windows * same[:, None], weight)
    in_last = padded_document[:, padded.shape[2] - (width - 1) :] == document[:, -1:]
    new_cache = padded[:, :, padded.shape[2] - (width - 1) :] * in_last[:, None]
    return y, new_cache


class ShortConvolution(nn.Module):
    """Depthwise causal convolution module: ``forward(x (B,T,C), cache) -> (y, cache)``.

    Args:
        channels: number of channels C.
        kernel_size: filter width W (4 in every configuration of the papers).
        activation: ``None`` or ``"silu"``.
    """

    def __init__(self, channels: int, kernel_size: int = 4, activation: str | None = "silu"):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1; got {kernel_size}")
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
