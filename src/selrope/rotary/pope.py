"""PoPE (arXiv 2509.10534): content sets only the magnitudes, position only the phases.

What the paper defines (Gopalakrishnan, Csordás, Schmidhuber, Mozer, "Decoupling the 'What' and
'Where' With Polar Coordinate Positional Embeddings", section 3 and appendix A.2), in its
notation: query at position t, key at position s, head dim d, channel c = 1..d.

- Magnitudes ``mu_q[t, c] = softplus(q[t, c])``, ``mu_k[s, c] = softplus(k[s, c])`` (Eq. 3):
  every channel is one complex number, where RoPE makes one of every pair.
- Phases ``t theta_c`` and ``s theta_c`` with ``theta_c = base^(-(c - 1)/d)`` (Eq. 4; the text
  prints the exponent without its minus sign, its RoPE formula and x-transformers' and
  lucidrains' PoPE code have it), base 10,000 in every experiment: d frequencies, RoPE's d/2
  twice as dense.
- A learned bias ``delta_c`` per head and channel shifts the key's phase (Eq. 8), bounded to
  [-2 pi, 0] by clamping ("improves stability"), initialised at 0 (the language models: "important
  for length generalization") or Uniform(-2 pi, 0) (the other tasks: "slightly better
  in-distribution").
- The score ``a_ts = Re[q~_t^H k~_s] = sum_c mu_q[t, c] mu_k[s, c] cos((s - t) theta_c +
  delta_c)`` (Eq. 6), computed as ``x_q x_k + y_q y_k`` from the Cartesian forms (Eqs. 7-10).

Here, with the query at position i and the key at position j, per head:
``q_rot[i] . k_rot[j] = sum_c softplus(q[i, c]) softplus(k[j, c]) cos((j - i) theta_c +
delta_c)``, ``theta_c = base^(-c/D)`` for c = 0..D-1.

How: q becomes the Cartesian form ``[mu_q, 0]`` and k ``[mu_k cos delta, mu_k sin delta]``, each
``(B, T, H, 2D)`` half-split (real parts in channels 0..D-1, imaginary parts in D..2D-1), and
RoPE of head dim 2D rotates both: its frequencies ``base^(-2c/2D)`` are exactly PoPE's, so the
positions, the streaming state, packed documents, float32 angles and the fused kernel on CUDA
are RoPE's. The key's bias is its phase before the position rotation: ``R(j theta_c) (mu cos
delta_c, mu sin delta_c) = mu (cos(j theta_c + delta_c), sin(j theta_c + delta_c))``, Eq. 8, so
q and k share one positional angle (cos/sin once for both) and no angle is ever added to delta.

Where selrope differs or decides what the paper leaves open:
- The Cartesian forms are materialised (the paper's "slower but general variant"); its Triton
  attention kernel that forms the score without them is not reproduced.
- q_rot and k_rot are 2D wide (``PoPE.output_head_dim_factor``); v keeps width D.
- No attention scale is applied here, and the paper states none; lucidrains'
  ``flash_attn_with_pope`` defaults to ``D^-1/2`` of the un-doubled head, while an attention that
  takes ``q_rot.shape[-1]^-1/2`` by default would use ``(2D)^-1/2``. The layer chooses.
- Positions restart at 0 in every packed document after the first (selrope's rule for all its
  position encodings).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from selrope.common import check_even_head_dim, check_positive_int
from selrope.rotary.base import RotaryEmbedding
from selrope.rotary.config import PoPEConfig
from selrope.rotary.cumulative import TWO_PI
from selrope.rotary.fixed import RoPE, RoPEState


class PoPE(RotaryEmbedding):
    """Polar coordinate position embedding: q, k ``(B, T, H, D)`` -> ``(B, T, H, 2D)``.

    ``forward(q, k, x, state=None, segment_ids=None) -> (q_rot, k_rot, new_state)`` as every
    rotary embedding, except that q_rot and k_rot are ``output_head_dim_factor`` (2) times as wide
    as q and k: a layer sizes its key cache (and picks its attention scale) by it. Per head,
    ``q_rot[i] . k_rot[j] = sum_c softplus(q[i, c]) softplus(k[j, c]) cos((j - i) theta_c +
    delta_c)`` with ``theta_c = base^(-c/D)``; see the module docstring. The state is RoPE's
    ``RoPEState`` (the position of each row's next token); x is read only for its batch size
    and device.

    Args:
        num_heads: H (one phase bias per head and channel).
        head_dim: D of q and k (even, as for every rotary embedding).
        base: of the frequencies; 10,000 in the paper.
        bias_init: ``"zero"`` or ``"uniform"`` on [-2 pi, 0] (see ``PoPEConfig``).
    """

    output_head_dim_factor: ClassVar[int] = 2

    def __init__(
        self, num_heads: int, head_dim: int, base: float = 10000.0, bias_init: str = "zero"
    ):
        super().__init__()
        check_positive_int("num_heads", num_heads)
        check_even_head_dim("head_dim", head_dim)
        self.bias_init = PoPEConfig(base=base, bias_init=bias_init).bias_init
        self.num_heads, self.head_dim = num_heads, head_dim
        self.rope = RoPE(2 * head_dim, base)  # frequencies base^(-2c / 2D) = base^(-c/D)
        self.bias = nn.Parameter(torch.empty(num_heads, head_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The phase bias: zeros, or uniform on [-2 pi, 0] (``bias_init``)."""
        if self.bias_init == "zero":
            nn.init.zeros_(self.bias)
        else:
            nn.init.uniform_(self.bias, -TWO_PI, 0.0)

    def phase_bias(self) -> torch.Tensor:
        """``(H, D)`` delta: the bias clamped to [-2 pi, 0], in the parameter's dtype. Its
        gradient passes inside the interval and at its ends (so the zero init learns), not
        beyond."""
        return self.bias.clamp(-TWO_PI, 0.0)

    def cartesian(
        self, q: torch.Tensor, k: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The position-free complex q~ and k~ in Cartesian form, half-split.

        Args:
            q, k: ``(B, T, H, D)`` of one float dtype.
            dtype: float32 or float64, what softplus, cos and sin run in.

        Returns:
            ``(q_cartesian, k_cartesian)`` ``(B, T, H, 2D)`` in q's dtype: ``[softplus(q), 0]``
            and ``[softplus(k) cos delta, softplus(k) sin delta]``.
        """
        magnitude_q = F.softplus(q.to(dtype))
        magnitude_k = F.softplus(k.to(dtype))
        delta = self.phase_bias().to(dtype)
        q_cartesian = torch.cat((magnitude_q, torch.zeros_like(magnitude_q)), dim=-1)
        k_cartesian = torch.cat((magnitude_k * delta.cos(), magnitude_k * delta.sin()), dim=-1)
        return q_cartesian.to(q.dtype), k_cartesian.to(k.dtype)

    def angles(
        self,
        x: torch.Tensor,
        state: RoPEState | None,
        dtype: torch.dtype,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, RoPEState]:
        """RoPE's angles: ``theta (B, T, 1, D) = position * base^(-c/D)`` (reduced mod 2 pi
        unless float64), the rotation of output pair c (channels c and c + D), and the new
        state. Arguments as in ``RotaryEmbedding.angles``."""
        return self.rope.angles(x, state, dtype, segment_ids)

    def rotate(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        x: torch.Tensor,
        state: RoPEState | None,
        dtype: torch.dtype,
        segment_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, RoPEState]:
        """As ``RotaryEmbedding.rotate`` (checked inputs, autocast off, angles in ``dtype``):
        the Cartesian forms, rotated by RoPE of head dim 2D. Returns ``(q_rot, k_rot,
        new_state)``, q_rot and k_rot ``(B, T, H, 2D)`` in q's dtype."""
        q_cartesian, k_cartesian = self.cartesian(q, k, dtype)
        return self.rope.rotate(q_cartesian, k_cartesian, x, state, dtype, segment_ids)
