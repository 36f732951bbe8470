"""Pieces shared by the linear-recurrent layers: rotated q/k/v projections, the gated output and
the forward that runs the op (step, chunked or loop form) between them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from selrope.layers.norm import RMSNorm
from selrope.layers.recurrent_cache import RecurrentCache
from selrope.ops import ShortConvolution
from selrope.rotary import build_rotary

FORMS = ("chunk", "recurrent")


def head_widths(
    model_dim: int, num_heads: int, expand_k: float, expand_v: float, form: str
) -> tuple[int, int]:
    """The per-head q/k and v widths of a linear-recurrent layer, with the checks they need.

    Raises:
        ValueError: model_dim or num_heads is not a positive integer, num_heads does not divide
            the widths, the q/k head dim is odd (rotation
            pairs), or ``form`` is not "chunk" / "recurrent".
    """
    for name, value in (("model_dim", model_dim), ("num_heads", num_heads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    key_dim, value_dim = int(model_dim * expand_k), int(model_dim * expand_v)
    if key_dim < num_heads or value_dim < num_heads:
        raise ValueError(
            f"expand_k and expand_v must leave at least one channel per head; got key width "
            f"{key_dim}, value width {value_dim}, num_heads={num_heads}"
        )
    if key_dim % num_heads or value_dim % num_heads:
        raise ValueError(
            f"num_heads must divide the key and value widths; got num_heads={num_heads}, "
            f"key width={key_dim}, value width={value_dim}"
        )
    if (key_dim // num_heads) % 2:
        raise ValueError(f"the key head dim must be even; got {key_dim // num_heads}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}; got {form!r}")
    return key_dim // num_heads, value_dim // num_heads


class ConvolvedProjection(nn.Module):
    """``Linear(d -> out)`` followed by an optional short causal conv (SiLU) with a cache.

    Args:
        in_dim: input width d.
        out_dim: output width.
        use_short_conv: apply a depthwise causal conv (kernel ``conv_size``, SiLU) after the
            projection; its cache makes streaming exact.
        conv_size: conv kernel width.
        silu_without_conv: apply SiLU when the conv is off (Gated DeltaNet's convention).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        use_short_conv: bool,
        conv_size: int = 4,
        silu_without_conv: bool = False,
    ):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim, bias=False)
        self.conv = ShortConvolution(out_dim, conv_size, "silu") if use_short_conv else None
        self.silu_without_conv = silu_without_conv

    def forward(
        self,
        x: torch.Tensor,
        cache: torch.Tensor | None,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x ``(B, T, d)`` -> ``(y (B, T, out_dim), conv cache (B, out_dim, W-1) or None)``;
        ``segment_ids`` ``(B, T)`` (packed documents) keep the conv within each document."""
        y = self.proj(x)
        if self.conv is not None:
            return self.conv(y, cache, segment_ids)
        return (F.silu(y) if self.silu_without_conv else y), None


class GatedOutput(nn.Module):
    """Per-head RMSNorm of the mixer output, times a SiLU gate ``W_g x``, then ``W_o``.

    Args:
        model_dim: d.
        num_heads: H.
        head_v_dim: value width per head.
        norm_eps: RMSNorm epsilon.
    """

    def __init__(self, model_dim: int, num_heads: int, head_v_dim: int, norm_eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm = RMSNorm(head_v_dim, eps=norm_eps)
        self.gate_proj = nn.Linear(model_dim, num_heads * head_v_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_v_dim, model_dim, bias=False)

    def forward(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """o ``(B, T, H, V)``, x ``(B, T, d)`` -> ``(B, T, d)``."""
        gate = F.silu(self.gate_proj(x))
        return self.o_proj(self.norm(o).flatten(2) * gate)


class RotatedQKV(nn.Module):
    """q, k, v projections (each with an optional short conv) and the rotary embedding on q, k.

    Args:
        model_dim: d.
        num_heads: H.
        head_k_dim, head_v_dim: per-head widths of q/k and v.
        rotary: rotary config for ``build_rotary``.
        use_short_conv, conv_size, silu_without_conv: see :class:`ConvolvedProjection`.
    """

    def __init__(
        self,
        model_dim: int,
        num_heads: int,
        head_k_dim: int,
        head_v_dim: int,
        rotary: Any,
        use_short_conv: bool,
        conv_size: int,
        silu_without_conv: bool = False,
    ):
        super().__init__()
        self.shapes = (num_heads, head_k_dim, head_v_dim)
        key_dim, value_dim = num_heads * head_k_dim, num_heads * head_v_dim
        conv = (use_short_conv, conv_size, silu_without_conv)
        self.q_proj = ConvolvedProjection(model_dim, key_dim, *conv)
        self.k_proj = ConvolvedProjection(model_dim, key_dim, *conv)
        self.v_proj = ConvolvedProjection(model_dim, value_dim, *conv)
        self.rotary = build_rotary(
            rotary or {"type": "nope"},
            num_heads=num_heads,
            head_dim=head_k_dim,
            model_dim=model_dim,
        )

    def forward(
        self,
        x: torch.Tensor,
        past: RecurrentCache,
        rotary_input: torch.Tensor | None,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, RecurrentCache]:
        """x ``(B, T, d)`` -> rotated q, k ``(B, T, H, K)``, v ``(B, T, H, V)`` and the new cache
        without its recurrent state (``state=None``; the layer fills it in). ``segment_ids``
        ``(B, T)`` (packed documents) restart the convs and the rotary angles per document."""
        B, T, _ = x.shape
        H, K, V = self.shapes
        q, conv_q = self.q_proj(x, past.conv_q, segment_ids)
        k, conv_k = self.k_proj(x, past.conv_k, segment_ids)
        v, conv_v = self.v_proj(x, past.conv_v, segment_ids)
        q, k, rotary_state = self.rotary(
            q.view(B, T, H, K),
            k.view(B, T, H, K),
            x if rotary_input is None else rotary_input,
            past.rotary_state,
            segment_ids,
        )
        return q, k, v.view(B, T, H, V), RecurrentCache(None, conv_q, conv_k, conv_v, rotary_state)


class RecurrentOps(NamedTuple):
    """The three forms of one recurrent op (``ops.gla``, ``ops.gated_delta_rule``), same
    argument order: ``step`` for one decoding token, ``chunk`` and ``recurrent`` for T tokens."""

    step: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    chunk: Callable[..., tuple[torch.Tensor, torch.Tensor | None]]
    recurrent: Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


class RecurrentLayer(nn.Module):
    """Base of GLA and Gated DeltaNet: ``qkv`` (a :class:`RotatedQKV`), the op ``ops`` in form
    ``form`` (with ``chunk_size``), then ``output`` (a :class:`GatedOutput`).

    Subclasses set those and implement ``op_inputs``, the per-token inputs of the op after q, k,
    v (decays, write strengths).
    """

    ops: RecurrentOps
    qkv: RotatedQKV
    output: GatedOutput
    form: str
    chunk_size: int

    def op_inputs(
        self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """x ``(B, T, d)`` and the rotated q, k ``(B, T, H, K)``, v ``(B, T, H, V)`` -> the op's
        per-token inputs ``(q, k, v, ...)``, each ``(B, T, H, ...)``."""
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        cache: RecurrentCache | None = None,
        rotary_input: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, RecurrentCache]:
        """x ``(B, T, d)`` (normalised block input) -> ``(y (B, T, d), new cache)``.

        ``rotary_input`` ``(B, T, d)`` is what the rotary embedding reads (default: x);
        ``segment_ids`` ``(B, T)`` integer ids of packed documents (``selrope.ops.segments``) make
        every document after the first of a row start afresh (convs, rotary, state). One token
        with a state runs the op's step form, else its ``form``.
        """
        past = cache if cache is not None else RecurrentCache(None, None, None, None, None)
        q, k, v, new_cache = self.qkv(x, past, rotary_input, segment_ids)
        inputs = self.op_inputs(x, q, k, v)
        if x.shape[1] == 1 and past.state is not None:
            o, state = self.ops.step(*(t[:, 0] for t in inputs), past.state)
            o = o.unsqueeze(1)
        elif self.form == "chunk":
            o, state = self.ops.chunk(
                *inputs,
                initial_state=past.state,
                output_final_state=True,
                chunk_size=self.chunk_size,
                segment_ids=segment_ids,
            )
        else:
            o, state = self.ops.recurrent(
                *inputs, initial_state=past.state, output_final_state=True, segment_ids=segment_ids
            )
        return self.output(o, x), new_cache._replace(state=state)
