"""Small perturbed models shared by the tests in this folder (imported as ``tiny_models``)."""

from __future__ import annotations

import torch

from selrope.models import LanguageModel, LMConfig
from selrope.rotary import SELECTIVE_LM_RECIPE

ROTARIES = {
    "nope": {"type": "nope"},
    "rope": {"type": "rope"},
    "carope": {"type": "carope"},
    "selective": SELECTIVE_LM_RECIPE,
}
# Softmax attention with a position mechanism in its scores, by a short name.
POSITION_MIXERS = {
    "alibi": {"kind": "attention", "relative_positions": "alibi"},
    "cope": {"kind": "attention", "relative_positions": "cope", "cope_max_positions": 6},
    "path": {"kind": "attention", "relative_positions": "path", "path_low_rank_dim": 4},
    "cope-fox": {"kind": "fox", "relative_positions": "cope", "cope_max_positions": 6},
    "path-fox": {"kind": "fox", "relative_positions": "path", "path_low_rank_dim": 4},
}
MIXERS = ["attention", "fox", "gla", "gdn", *POSITION_MIXERS]


def named_mixer(name: str) -> str | dict:
    """The mixer spec of a kind or of a ``POSITION_MIXERS`` name."""
    return POSITION_MIXERS.get(name, name)


def tiny_model(mixer: str, rotary: dict, seed: int = 0, **overrides) -> LanguageModel:
    """A 2-layer, d 32 model (vocab 23, chunk size 8) in eval mode, every parameter moved off its
    initial value so that no path is trivially zero or identity. ``mixer``: a kind or a name of
    ``POSITION_MIXERS``, or a list of them (one per layer)."""
    torch.manual_seed(seed)
    mixer = [named_mixer(m) for m in mixer] if isinstance(mixer, list) else named_mixer(mixer)
    config = LMConfig.from_dict(
        dict(
            vocab_size=23,
            d_model=32,
            n_layers=2,
            n_heads=2,
            mixer=mixer,
            rotary=rotary,
            chunk_size=8,
            **overrides,
        )
    )
    model = LanguageModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()
