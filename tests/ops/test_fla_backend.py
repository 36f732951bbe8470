"""The fla (flash-linear-attention) CUDA backend of chunk_gla, chunk_gated_delta_rule and the
short convolution against the PyTorch forms: values and gradients (inputs, initial states), final
states and packed documents. The layout translation (``pack_rows``) and the backend choice are
tested everywhere; the kernels need a CUDA device and the ``gpu`` extra (fla-core)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selrope.ops import (
    causal_depthwise_conv,
    chunk_gated_delta_rule,
    chunk_gla,
    recurrent_gated_delta_rule,
    recurrent_gla,
)
from selrope.ops.fla_backend import FLA_SWITCH, fla_available, pack_rows, use_fla

needs_fla = pytest.mark.skipif(
    not (torch.cuda.is_available() and fla_available()),
    reason="needs a CUDA device and fla-core (the `gpu` extra): fla's kernels run on CUDA only",
)
SEGMENTS = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2, 2], [5, 5, 5, 5, 5, 5, 5, 7, 7, 7]])


def test_pack_rows_matches_a_loop_over_rows() -> None:
    rows = pack_rows(SEGMENTS)
    bounds, first, last = [], [], []
    for b, row in enumerate(SEGMENTS.tolist()):
        first.append(len(bounds))
        bounds += [b * len(row) + t for t in range(len(row)) if t == 0 or row[t] != row[t - 1]]
        last.append(len(bounds) - 1)
    assert rows.cu_seqlens.tolist() == bounds + [SEGMENTS.numel()]
    assert rows.first_document.tolist() == first == [0, 3]
    assert rows.last_document.tolist() == last == [2, 4]


def test_backend_is_chosen_from_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FLA_SWITCH, raising=False)
    assert not use_fla(torch.zeros(2))  # CPU tensors always take the PyTorch forms
    monkeypatch.setenv(FLA_SWITCH, "1")
    assert not use_fla(torch.zeros(2))
    if torch.cuda.is_available() and fla_available():
        assert use_fla(torch.zeros(2, device="cuda"))
        assert not use_fla(torch.zeros(2, device="cuda", dtype=torch.float64))
        monkeypatch.delenv(FLA_SWITCH)
        assert not use_fla(torch.zeros(2, device="cuda"))  # opt-in


@pytest.fixture(autouse=True)
def fla_switched_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs with SELROPE_FLA=1 (fla on CUDA) unless it says otherwise."""
    monkeypatch.setenv(FLA_SWITCH, "1")


@pytest.fixture
def torch_forms(monkeypatch: pytest.MonkeyPatch):
    """Call a function with SELROPE_FLA=0 (the PyTorch forms, even on CUDA)."""

    def run(fn, *args, **kwargs):
        with monkeypatch.context() as patch:
            patch.setenv(FLA_SWITCH, "0")
            return fn(*args, **kwargs)

    return run


def _leaves(*tensors):
    return [t.detach().clone().cuda().requires_grad_() for t in tensors]


def _assert_close_with_grads(got, want, leaves_got, leaves_want, tol):
    """Outputs equal and every leaf's gradient under the same random cotangents equal."""
    gen = torch.Generator().manual_seed(3)
    weights = [torch.randn(w.shape, generator=gen).cuda() for w in want]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=tol, rtol=tol)
    grads_got = torch.autograd.grad(
        [(a * w).sum() for a, w in zip(got, weights, strict=True)], leaves_got
    )
    grads_want = torch.autograd.grad(
        [(b * w).sum() for b, w in zip(want, weights, strict=True)], leaves_want
    )
    for a, b in zip(grads_got, grads_want, strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=tol, rtol=tol)


def _gla_inputs(B, T, H, K, V, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, T, H, K, generator=gen) for _ in range(2))
    v = torch.randn(B, T, H, V, generator=gen)
    g = F.logsigmoid(torch.randn(B, T, H, K, generator=gen) + 2.0)
    h0 = torch.randn(B, H, K, V, generator=gen)
    return q, k, v, g, h0


@needs_fla
@pytest.mark.parametrize("T", [1, 63, 200])
@pytest.mark.parametrize("packed", [False, True])
def test_gla_fla_matches_float64_loop(T: int, packed: bool) -> None:
    inputs = _gla_inputs(2, T, 2, 32, 16, seed=T)
    segments = torch.randint(0, 3, (2, T), generator=torch.Generator().manual_seed(1))
    segments = segments.sort(dim=1).values.cuda() if packed else None
    fast = _leaves(*inputs)
    slow = [t.double() for t in _leaves(*inputs)]
    assert use_fla(fast[0])
    o, s = chunk_gla(
        *fast[:4], initial_state=fast[4], output_final_state=True, segment_ids=segments
    )
    o_ref, s_ref = recurrent_gla(
        *slow[:4], initial_state=slow[4], output_final_state=True, segment_ids=segments
    )
    assert o.dtype == torch.float32 and s.dtype == torch.float32
    _assert_close_with_grads([o, s], [o_ref, s_ref], fast, slow, tol=2e-3)


@needs_fla
def test_gla_fla_bf16_is_close_to_the_torch_form(torch_forms) -> None:
    inputs = _gla_inputs(2, 300, 4, 64, 64, seed=0)
    fast = [t.cuda().bfloat16() for t in inputs[:3]] + [inputs[3].cuda(), inputs[4].cuda()]
    o, s = chunk_gla(*fast[:4], initial_state=fast[4], output_final_state=True)
    o_ref, s_ref = torch_forms(chunk_gla, *fast[:4], initial_state=fast[4], output_final_state=True)
    assert o.dtype == torch.bfloat16
    assert (o.float() - o_ref.float()).norm() / o_ref.float().norm() < 2e-2
    assert (s - s_ref).norm() / s_ref.norm() < 2e-2


def _gdn_inputs(B, T, H, K, V, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen)
    k = F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen)
    g = F.logsigmoid(torch.randn(B, T, H, generator=gen) + 2.0)
    beta = torch.rand(B, T, H, generator=gen)
    h0 = torch.randn(B, H, K, V, generator=gen)
    return q, k, v, g, beta, h0


@needs_fla
@pytest.mark.parametrize("T", [1, 63, 200])
@pytest.mark.parametrize("packed", [False, True])
def test_gated_delta_rule_fla_matches_float64_loop(T: int, packed: bool) -> None:
    inputs = _gdn_inputs(2, T, 2, 32, 16, seed=T)
    segments = torch.randint(0, 3, (2, T), generator=torch.Generator().manual_seed(2))
    segments = segments.sort(dim=1).values.cuda() if packed else None
    fast = _leaves(*inputs)
    slow = [t.double() for t in _leaves(*inputs)]
    o, s = chunk_gated_delta_rule(
        *fast[:5], initial_state=fast[5], output_final_state=True, segment_ids=segments
    )
    o_ref, s_ref = recurrent_gated_delta_rule(
        *slow[:5], initial_state=slow[5], output_final_state=True, segment_ids=segments
    )
    assert o.dtype == torch.float32 and s.dtype == torch.float32
    # k is not a leaf of the normalisation here; its gradient is compared all the same.
    _assert_close_with_grads([o, s], [o_ref, s_ref], fast, slow, tol=2e-3)


@needs_fla
@pytest.mark.parametrize("T", [1, 2, 37])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_short_conv_fla_matches_torch_form(torch_forms, T, packed, activation) -> None:
    gen = torch.Generator().manual_seed(T)
    x, weight, cache = (
        torch.randn(*shape, generator=gen) for shape in [(2, T, 24), (24, 4), (2, 24, 3)]
    )
    segments = torch.randint(0, 4, (2, T), generator=gen).sort(dim=1).values.cuda()
    segments = segments if packed else None
    fast, slow = _leaves(x, weight, cache), _leaves(x, weight, cache)
    got = causal_depthwise_conv(*fast, activation=activation, segment_ids=segments)
    want = torch_forms(causal_depthwise_conv, *slow, activation=activation, segment_ids=segments)
    _assert_close_with_grads(list(got), list(want), fast, slow, tol=1e-5)


@needs_fla
@pytest.mark.parametrize("mixer", ["gla", "gdn"])
def test_language_model_on_fla_matches_the_torch_forms(torch_forms, mixer: str) -> None:
    """A whole model (short convs, Selective RoPE, the chunked op) with packed documents: fla on
    CUDA == the PyTorch forms on CUDA, and decoding after a prefill continues it exactly."""
    from selrope.models import LanguageModel, LMConfig
    from selrope.rotary import SELECTIVE_LM_RECIPE

    torch.manual_seed(0)
    config = LMConfig(
        vocab_size=50, d_model=64, n_layers=2, n_heads=2, mixer=mixer, rotary=SELECTIVE_LM_RECIPE
    )
    model = LanguageModel(config).cuda().eval()
    ids = torch.randint(0, 50, (2, 150), device="cuda")
    segments = torch.randint(0, 3, (2, 150), device="cuda").sort(dim=1).values
    with torch.no_grad():
        fast = model(ids, segment_ids=segments)
        slow = torch_forms(model, ids, segment_ids=segments)
        logits, cache = model(ids[:, :100], use_cache=True)
        steps = [logits]
        for t in range(100, 150):
            logits, cache = model(ids[:, t : t + 1], cache)
            steps.append(logits)
        full = model(ids)
    torch.testing.assert_close(fast, slow, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=2e-3, rtol=2e-3)
