"""torch.compile on whole language models: no graph breaks for any mixer (the data-dependent
choices of the chunked ops stay inside the graph), compiled == eager for values and gradients."""

from __future__ import annotations

import pytest
import torch
from tiny_models import MIXERS, ROTARIES, tiny_model

from selrope.ops import chunk_gla


@pytest.mark.parametrize("mixer", MIXERS)
def test_whole_model_has_no_graph_breaks(mixer: str) -> None:
    model = tiny_model(mixer, ROTARIES["selective"])
    ids = torch.randint(0, 23, (2, 40), generator=torch.Generator().manual_seed(0))
    explanation = torch._dynamo.explain(model)(ids)
    assert explanation.graph_break_count == 0, explanation.break_reasons


@pytest.mark.parametrize("absolute_position", ["learned", "sinusoidal"])
@pytest.mark.parametrize("rotary", ["rope", "carope"])
def test_packed_rows_and_absolute_positions_have_no_graph_breaks(
    absolute_position: str, rotary: str
) -> None:
    # The trainer's packed rows (segment ids) with every other position encoding: the learned
    # table's range check must not read the positions back to the host.
    model = tiny_model(
        "attention", ROTARIES[rotary], absolute_position=absolute_position, max_positions=64
    )
    ids = torch.randint(0, 23, (2, 40), generator=torch.Generator().manual_seed(0))
    segment_ids = (torch.arange(40) >= 15).long().expand(2, 40)
    explanation = torch._dynamo.explain(model)(ids, segment_ids=segment_ids)
    assert explanation.graph_break_count == 0, explanation.break_reasons


@pytest.mark.parametrize("decay", [0.1, 30.0])  # eager: the dense intra-chunk form, the safe one
def test_compiled_chunk_gla_equals_eager(decay: float) -> None:
    gen = torch.Generator().manual_seed(0)
    # float64: eager's dense form and compile's overflow-free form differ by round-off only.
    q, k, v = (
        torch.randn(2, 50, 2, 8, generator=gen, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    )
    g = (-decay * torch.rand(2, 50, 2, 8, generator=gen, dtype=torch.float64)).requires_grad_()
    compiled = torch.compile(chunk_gla, backend="aot_eager", fullgraph=True)
    results = []
    for function in (chunk_gla, compiled):
        o, state = function(q, k, v, g, output_final_state=True, chunk_size=16)
        grads = torch.autograd.grad((o.square().sum() + state.sum()), (q, k, v, g))
        results.append((o, state, *grads))
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_compiled_ops_still_refuse_positive_log_decays() -> None:
    q = k = v = torch.randn(1, 8, 1, 4)
    compiled = torch.compile(chunk_gla, backend="aot_eager", fullgraph=True)
    with pytest.raises(RuntimeError, match="g must hold finite log decays <= 0"):
        compiled(q, k, v, torch.full((1, 8, 1, 4), 0.5))
