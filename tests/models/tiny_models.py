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
MIXERS = ["attention", "fox", "gla", "gdn"]


def tiny_model(mixer: str, rotary: dict, seed: int = 0, **overrides) -> LanguageModel:
    """A 2-layer, d 32 model (vocab 23, chunk size 8) in eval mode, every parameter moved off its
    initial value so that no path is trivially zero or identity."""
    torch.manual_seed(seed)
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
