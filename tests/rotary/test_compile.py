"""torch.compile sees the rotary path as one graph: no graph breaks (torch._dynamo.explain)."""

from __future__ import annotations

import pytest
import torch

from selrope.rotary import SELECTIVE_LM_RECIPE, build_rotary


@pytest.mark.parametrize("config", [dict(SELECTIVE_LM_RECIPE), {"type": "carope"}])
@pytest.mark.parametrize("packed", [False, True])
def test_no_graph_breaks(config, packed):
    module = build_rotary(config, num_heads=2, head_dim=8, model_dim=16)
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 70, 2, 8, generator=g).requires_grad_() for _ in range(2))
    x = torch.randn(2, 70, 16, generator=g)
    segment_ids = torch.tensor([[0] * 30 + [1] * 40, [0] * 70]) if packed else None

    def call(q, k, x):
        return module(q, k, x, None, segment_ids)

    explanation = torch._dynamo.explain(call)(q, k, x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
