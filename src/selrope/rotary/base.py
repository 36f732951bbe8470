"""What every rotary embedding shares: input checks, and forward = angles + the one rotation."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selrope.common import compute_dtype
from selrope.ops.segments import check_segment_ids
from selrope.rotary.apply import apply_rotary_qk
from selrope.rotary.cumulative import cumulative_angles
from selrope.rotary.fused import Backend, cumulative_rotary


def check_qkx(
    q: torch.Tensor,
    k: torch.Tensor,
    x: torch.Tensor,
    num_heads: int | None = None,
    head_dim: int | None = None,
    model_dim: int | None = None,
) -> None:
    """Raise TypeError/ValueError unless q, k are ``(B, T, H, D)`` and x is ``(B, T, d)``.

    ``num_heads``, ``head_dim``, ``model_dim``: the sizes the module was built for (None: any).
    """
    for name, tensor in (("q", q), ("k", k), ("x", x)):
        if not torch.is_tensor(tensor) or not tensor.is_floating_point():
            got = getattr(tensor, "dtype", type(tensor))
            raise TypeError(f"{name} must be a floating-point tensor; got {got}")
    expected_qk = f"(B, T, {num_heads or 'H'}, {head_dim or 'D'}) with T >= 1 and D even"
    if q.dim() != 4 or q.shape[1] < 1 or q.shape[-1] % 2:
        raise ValueError(f"q must have shape {expected_qk}; got {tuple(q.shape)}")
    if (num_heads is not None and q.shape[2] != num_heads) or (
        head_dim is not None and q.shape[3] != head_dim
    ):
        raise ValueError(f"q must have shape {expected_qk}; got {tuple(q.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)}; got {tuple(k.shape)}")
    if k.dtype != q.dtype:
        raise TypeError(f"k must have the dtype of q ({q.dtype}); got {k.dtype}")
    B, T = q.shape[:2]
    expected_x = f"(B, T, d) = ({B}, {T}, {model_dim or 'd'})"
    if x.dim() != 3 or x.shape[:2] != (B, T) or (model_dim is not None and x.shape[2] != model_dim):
        raise ValueError(f"x must have shape {expected_x}; got {tuple(x.shape)}")


def check_state_tensor(
    name: str, tensor: Any, shape: tuple[int, ...], dtype: torch.dtype | None = None
) -> None:
    """Raise ValueError/TypeError unless ``tensor`` is a tensor of ``shape`` (and ``dtype``)."""
    if not torch.is_tensor(tensor) or tuple(tensor.shape) != tuple(shape):
        got = tuple(tensor.shape) if torch.is_tensor(tensor) else type(tensor).__name__
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {got}")
    if dtype is not None and tensor.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}; got {tensor.dtype}")


class CastLinear(nn.Linear):
    """``nn.Linear`` that runs in its input's dtype (parameters are cast), so the angle pipeline
    stays float32 inside a bf16 model. Initialised Hugging-Face style: weight ~ N(0, 0.02), bias 0.
    """

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=0.02)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class RotaryEmbedding(nn.Module):
    """Base of RoPE, CARoPE and SelectiveRoPE: subclasses only implement ``angles``.

    ``forward(q, k, x, state=None, segment_ids=None) -> (q_rot, k_rot, new_state)`` checks the
    inputs, makes the angles with autocast disabled (angles are float32/float64 whatever the
    autocast dtype), and rotates q and k with the same angles through ``apply_rotary``.
    """

    num_heads: int | None = None
    head_dim: int | None = None
    model_dim: int | None = None
    interleaved: bool = False

    def angles(
        self,
        x: torch.Tensor,
        state: Any,
        dtype: torch.dtype,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Any]:
        """Angles for the tokens of x, continuing from ``state``.

        Args:
            x: ``(B, T, d)`` the layer's normalised input.
            state: the state returned by the previous call, or None to start a sequence.
            dtype: float32 or float64, the dtype of the angles.
            segment_ids: ``(B, T)`` integer ids of packed documents (``selrope.ops.segments``),
                or None. Angles restart at every document start after the first; the first
                document continues from ``state``; the new state is the one after the row's last
                token.

        Returns:
            ``(theta, new_state)`` with theta ``(B or 1, T, H or 1, D/2)`` in ``dtype``.
        """
        raise NotImplementedError

    def check_inputs(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        x: torch.Tensor,
        segment_ids: torch.Tensor | None = None,
    ) -> None:
        """Raise TypeError/ValueError unless q, k, x (and segment_ids) fit this module."""
        check_qkx(q, k, x, self.num_heads, self.head_dim, self.model_dim)
        if segment_ids is not None:
            check_segment_ids(segment_ids, q.shape[0], q.shape[1])

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        x: torch.Tensor,
        state: Any = None,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Rotate q and k by this embedding's angles.

        Args:
            q, k: ``(B, T, H, D)`` any float dtype.
            x: ``(B, T, d)`` the layer's normalised input (what input-dependent angles read).
            state: None to start a sequence, or the state this module returned for the previous
                tokens of the same sequences.
            segment_ids: ``(B, T)`` integer ids of packed documents, or None: every document
                after the first of a row gets the angles it would get alone (see ``angles``).

        Returns:
            ``(q_rot, k_rot, new_state)``: q_rot, k_rot ``(B, T, H, D)`` in q's dtype.
        """
        self.check_inputs(q, k, x, segment_ids)
        with torch.autocast(device_type=q.device.type, enabled=False):
            return self.rotate(q, k, x, state, compute_dtype(q.dtype), segment_ids)

    def rotate(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        x: torch.Tensor,
        state: Any,
        dtype: torch.dtype,
        segment_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """The body of ``forward`` on checked inputs, autocast off: the angles in ``dtype``
        (float32 / float64), then the one rotation. Arguments and returns as ``forward``."""
        theta, new_state = self.angles(x, state, dtype, segment_ids)
        return (*apply_rotary_qk(q, k, theta, self.interleaved), new_state)


class CumulativeRotaryEmbedding(RotaryEmbedding):
    """Base of CARoPE and SelectiveRoPE: angles are a running sum of per-token increments.

    Subclasses implement ``phase_inputs`` (the increments, the frequencies, the carried phase)
    and ``make_state``. ``angles`` sums them with ``cumulative_angles``; ``forward`` rotates q and
    k through ``cumulative_rotary``, which on CUDA with Triton runs the fused kernel (chosen per
    call; ``backend`` forces one, None chooses).
    """

    backend: Backend | None = None

    def phase_inputs(
        self,
        x: torch.Tensor,
        state: Any,
        dtype: torch.dtype,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, Any]:
        """``(increments (B, T, H, R) in dtype, frequencies (R,) or None, initial_phase
        (B, H, R) float64 or None, rest)``; ``rest`` is what ``make_state`` needs besides the
        final phase. Arguments as in ``angles``."""
        raise NotImplementedError

    def make_state(self, final_phase: torch.Tensor, rest: Any) -> Any:
        """The new state from the ``(B, H, R)`` float64 phase after the last token."""
        raise NotImplementedError

    def angles(
        self,
        x: torch.Tensor,
        state: Any,
        dtype: torch.dtype,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Any]:
        increments, frequencies, initial_phase, rest = self.phase_inputs(
            x, state, dtype, segment_ids
        )
        theta, final_phase = cumulative_angles(increments, frequencies, initial_phase, segment_ids)
        return theta, self.make_state(final_phase, rest)

    def rotate(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        x: torch.Tensor,
        state: Any,
        dtype: torch.dtype,
        segment_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """As ``RotaryEmbedding.rotate``, through ``cumulative_rotary``."""
        increments, frequencies, initial_phase, rest = self.phase_inputs(
            x, state, dtype, segment_ids
        )
        q_rot, k_rot, final_phase = cumulative_rotary(
            q, k, increments, frequencies, initial_phase, segment_ids, self.interleaved,
            self.backend,
        )  # fmt: skip
        return q_rot, k_rot, self.make_state(final_phase, rest)
