"""What each layer of a ``LanguageModel`` reads: its mixer's input and its Selective RoPE's."""

from __future__ import annotations

from typing import NamedTuple, TypeVar

import torch
from torch import nn

from selrope.models import LanguageModel
from selrope.rotary import SelectiveRoPE
from selrope.rotary.base import RotaryEmbedding

RotaryT = TypeVar("RotaryT", bound=RotaryEmbedding)


class MixerInput(NamedTuple):
    """One layer's view of a forward pass.

    mixer: the block's mixer (``Attention``, ``GatedLinearAttention`` or ``GatedDeltaNet``).
    x: ``(B, T, d)`` the mixer's normalised input.
    rotary_input: ``(B, T, d)`` what its rotary embedding reads (x, or the token embeddings
        when ``LMConfig.rotary_source`` is "embedding").
    """

    mixer: nn.Module
    x: torch.Tensor
    rotary_input: torch.Tensor


@torch.no_grad()
def call_arguments(
    model: LanguageModel, input_ids: torch.Tensor, modules: list[nn.Module]
) -> list[tuple]:
    """Run ``model`` on input_ids ``(B, T)`` and return the positional arguments of each call of
    ``modules`` (forward pre-hooks, removed afterwards), in call order."""
    calls: list[tuple] = []
    handles = [m.register_forward_pre_hook(lambda _, args: calls.append(args)) for m in modules]
    try:
        model(input_ids)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def mixer_inputs(model: LanguageModel, input_ids: torch.Tensor) -> list[MixerInput]:
    """Run ``model`` on input_ids ``(B, T)`` and return each layer's ``MixerInput``, in order."""
    mixers = [block.mixer for block in model.blocks]
    calls = call_arguments(model, input_ids, mixers)
    # Block calls mixer(x, cache, rotary_input, segment_ids).
    return [
        MixerInput(mixer, args[0], args[0] if args[2] is None else args[2])
        for mixer, args in zip(mixers, calls, strict=True)
    ]


def rotary_module(mixer: nn.Module, kind: type[RotaryT]) -> RotaryT | None:
    """The first module of type ``kind`` inside a mixer (its rotary embedding), or None."""
    return next((m for m in mixer.modules() if isinstance(m, kind)), None)


def selective_rotary(mixer: nn.Module) -> SelectiveRoPE | None:
    """The Selective RoPE module inside a mixer, or None if it rotates otherwise."""
    return rotary_module(mixer, SelectiveRoPE)
