"""Helpers shared by the rotary tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def _randomise(module: nn.Module, seed: int = 0, std: float = 0.5) -> nn.Module:
    """Give every trainable parameter random non-zero values, so equivalence tests can fail."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.copy_(noise * std)
    return module


@pytest.fixture
def randomise():
    return _randomise
