"""Small perturbed parity models for the analysis tests (imported as ``parity_models``)."""

from __future__ import annotations

import torch

from selrope.models import LanguageModel, LMConfig
from selrope.rotary import SELECTIVE_STATE_TRACKING_RECIPE

# The demo's Selective RoPE: the state-tracking recipe (linear conv, bias, no gate, omega = 1)
# with the full-rank projection.
PARITY_ROTARY = {**SELECTIVE_STATE_TRACKING_RECIPE, "projection": "full-rank"}


def random_parity_model(seed: int = 0, **overrides) -> LanguageModel:
    """A GLA + Selective RoPE model over the parity vocabulary (0, 1, BOS = 2), d 16, 2 heads,
    tied pair decays, in eval mode, every parameter moved off its initial value so that angles
    and decays differ per token."""
    options = {
        "vocab_size": 3,
        "d_model": 16,
        "n_layers": 1,
        "n_heads": 2,
        "mixer": "gla",
        "rotary": PARITY_ROTARY,
        "tie_pair_decay": True,
        "mlp_ratio": 0,
        "chunk_size": 8,
        **overrides,
    }
    torch.manual_seed(seed)
    model = LanguageModel(LMConfig.from_dict(dict(**options)))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()
