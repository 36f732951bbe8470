"""Absolute position baselines added to the token embeddings (not rotations): sinusoidal and
learned. Both take ``forward(x, offset=0, segment_ids=None) -> x + pe`` so a decoder can continue
at ``offset`` and packed documents restart their positions."""

from __future__ import annotations

import torch
from torch import nn

from selrope.common import check_even_head_dim, check_positive_float
from selrope.ops.segments import check_segment_ids, positions_in_segment


def _positions(
    x: torch.Tensor, offset: int | torch.Tensor, segment_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """``(B or 1, T)`` int64 positions of the tokens of x ``(B, T, d)`` starting at ``offset``;
    with ``segment_ids`` ``(B, T)`` only the first document of a row starts there, every later
    one at 0."""
    if x.dim() != 3:
        raise ValueError(f"x must have shape (B, T, d); got {tuple(x.shape)}")
    B, T, _ = x.shape
    if not isinstance(offset, int) and (offset.shape != (B,) or offset.dtype != torch.int64):
        raise ValueError(
            f"offset must be an int or an int64 tensor of shape (B,) = ({B},); "
            f"got {offset.dtype} {tuple(offset.shape)}"
        )
    if segment_ids is not None:
        check_segment_ids(segment_ids, B, T)
        return positions_in_segment(segment_ids, offset)
    steps = torch.arange(T, device=x.device)
    if isinstance(offset, int):
        return (offset + steps)[None]
    return offset[:, None] + steps


class SinusoidalPositionEmbedding(nn.Module):
    """Transformer sinusoids times a scale: ``pe[t, 2i] = scale sin(t w_i)``, ``pe[t, 2i+1] =
    scale cos(t w_i)``, ``w_i = base^(-2i/d)``; ``t w_i`` is formed in float64 (exact at any
    position) and pe is cast to x's dtype.

    The scale sets how loud positions are against the token embeddings. The original Transformer
    (Vaswani et al. 2017, section 3.4; its tensor2tensor and fairseq code) multiplies embeddings
    of std ``d^-1/2`` by ``sqrt(d)``, so token entries have std 1 against sinusoid entries of RMS
    ``1/sqrt(2)``. For token embeddings of std sigma the same ratio is ``scale = sigma``, what
    ``LanguageModel`` passes (``LMConfig.sinusoidal_scale``); unscaled sinusoids beside
    embeddings of std 0.02 are 35x louder than the tokens and drown them.

    Args:
        model_dim: d (even).
        base: 10,000 as in the original Transformer.
        scale: the factor on the sinusoids (1: the bare sinusoids).
    """

    def __init__(self, model_dim: int, base: float = 10000.0, scale: float = 1.0):
        super().__init__()
        check_even_head_dim("model_dim", model_dim)
        check_positive_float("scale", scale)
        self.model_dim, self.base, self.scale = model_dim, base, scale

    def forward(
        self,
        x: torch.Tensor,
        offset: int | torch.Tensor = 0,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x ``(B, T, d)``, offset an int or ``(B,)`` int64, segment_ids ``(B, T)`` or None ->
        ``x + pe`` ``(B, T, d)``."""
        positions = _positions(x, offset, segment_ids).to(torch.float64)
        exponents = torch.arange(0, self.model_dim, 2, device=x.device, dtype=torch.float64)
        angles = positions[..., None] * self.base ** (-exponents / self.model_dim)
        pe = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)
        return x + (self.scale * pe).to(x.dtype)


class LearnedPositionEmbedding(nn.Module):
    """A learned vector per absolute position (GPT-2 style), N(0, 0.02) at init.

    Args:
        max_positions: how many positions exist; later positions raise ValueError.
        model_dim: d.
    """

    def __init__(self, max_positions: int, model_dim: int):
        super().__init__()
        self.table = nn.Embedding(max_positions, model_dim)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(
        self,
        x: torch.Tensor,
        offset: int | torch.Tensor = 0,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x ``(B, T, d)``, offset an int or ``(B,)`` int64, segment_ids ``(B, T)`` or None ->
        ``x + pe`` ``(B, T, d)``."""
        positions = _positions(x, offset, segment_ids)
        size = self.table.num_embeddings
        # No position exceeds offset + T - 1 (a later document restarts at 0), so with an int
        # offset and a short enough row there is nothing to check. Otherwise the check reads the
        # positions (a host sync, and a graph break under torch.compile, where it is left to
        # the embedding's own bounds check).
        in_range = isinstance(offset, int) and offset + x.shape[1] <= size
        if not (in_range or torch.compiler.is_compiling()) and positions.numel():
            largest = int(positions.max())
            if largest >= size:
                raise ValueError(f"positions must be < max_positions = {size}; got up to {largest}")
        return x + self.table(positions).to(x.dtype)
