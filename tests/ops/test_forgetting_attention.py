"""Forgetting attention (FoX): SDPA form vs the float64 loop, KV-cache decoding, packing, f = 1."""

import pytest
import torch
import torch.nn.functional as F

from selrope.ops import (
    causal_attention,
    cumulative_log_forget,
    forgetting_attention,
    forgetting_attention_with_cache,
    reference_forgetting_attention,
)

F64 = torch.float64


def make_inputs(B, T, H, D, Dv, seed=0, dtype=F64):
    """q, k, v and log forget gates spread over (log 0.05, log 1) so the decay matters."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, T, H, d, generator=gen, dtype=dtype) for d in (D, D, Dv))
    log_forget = F.logsigmoid(3 * torch.randn(B, T, H, generator=gen, dtype=dtype))
    return q, k, v, log_forget


def grads(output, inputs):
    weight = torch.randn(output.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    return torch.autograd.grad((output * weight.to(output)).sum(), inputs)


@pytest.mark.parametrize(("T", "scale"), [(1, None), (17, None), (40, 0.2)])
def test_sdpa_form_matches_loop_reference_values_and_gradients(T, scale):
    inputs = [x.requires_grad_() for x in make_inputs(2, T, 3, 8, 6)]
    o = forgetting_attention(*inputs, scale=scale)
    o_ref = reference_forgetting_attention(*inputs, scale=scale)
    assert o.shape == (2, T, 3, 6) and o.dtype == F64
    torch.testing.assert_close(o, o_ref)
    for got, want in zip(grads(o, inputs), grads(o_ref, inputs), strict=True):
        torch.testing.assert_close(got, want)


def test_gradcheck_tiny_float64():
    inputs = [x.requires_grad_() for x in make_inputs(1, 5, 2, 4, 3, seed=1)]
    assert torch.autograd.gradcheck(forgetting_attention, inputs)


def test_float32_matches_float64_reference():
    q, k, v, log_forget = make_inputs(2, 33, 2, 16, 16, dtype=torch.float32)
    o = forgetting_attention(q, k, v, log_forget)
    assert o.dtype == torch.float32
    want = reference_forgetting_attention(q.double(), k.double(), v.double(), log_forget.double())
    torch.testing.assert_close(o.double(), want, rtol=1e-5, atol=1e-5)


def test_bf16_inputs_accumulate_the_gates_in_float32():
    q, k, v, log_forget = make_inputs(1, 64, 2, 16, 16, seed=2, dtype=torch.bfloat16)
    assert cumulative_log_forget(log_forget).dtype == torch.float32
    o = forgetting_attention(q, k, v, log_forget)
    assert o.dtype == torch.bfloat16
    want = reference_forgetting_attention(q.double(), k.double(), v.double(), log_forget.double())
    torch.testing.assert_close(o.double(), want, rtol=0.05, atol=0.05)


def test_gates_of_one_are_plain_causal_attention():
    q, k, v, _ = make_inputs(2, 19, 3, 8, 5, seed=3)
    zeros = torch.zeros(2, 19, 3, dtype=F64)
    torch.testing.assert_close(forgetting_attention(q, k, v, zeros), causal_attention(q, k, v))
    torch.testing.assert_close(
        reference_forgetting_attention(q, k, v, zeros), causal_attention(q, k, v)
    )


def test_the_gates_decay_older_keys():
    """A query whose keys are all equal spreads its weight by the forget gates alone: with
    f = 1/2 everywhere, key j's weight is proportional to 2^-(i - j)."""
    T = 6
    q = torch.zeros(1, T, 1, 2, dtype=F64)
    k = torch.zeros(1, T, 1, 2, dtype=F64)
    v = torch.eye(T, dtype=F64)[None, :, None, :]  # value j is the one-hot e_j
    log_forget = torch.full((1, T, 1), -torch.log(torch.tensor(2.0, dtype=F64)).item())
    o = forgetting_attention(q, k, v, log_forget)
    want = 2.0 ** torch.arange(-(T - 1), 1, dtype=F64)
    torch.testing.assert_close(o[0, -1, 0], want / want.sum())


def test_reference_is_causal():
    q, k, v, log_forget = make_inputs(1, 10, 2, 4, 4, seed=4)
    k2, v2, g2 = k.clone(), v.clone(), log_forget.clone()
    k2[:, 6], v2[:, 6], g2[:, 6] = 5.0, -5.0, -3.0
    o = reference_forgetting_attention(q, k, v, log_forget)
    o2 = reference_forgetting_attention(q, k2, v2, g2)
    torch.testing.assert_close(o[:, :6], o2[:, :6])
    assert not torch.allclose(o[:, 6], o2[:, 6])


def test_prefill_then_chunks_then_steps_equal_one_pass():
    q, k, v, log_forget = make_inputs(2, 24, 3, 8, 5, seed=5)
    o_full = forgetting_attention(q, k, v, log_forget)
    cache = (None, None, None)
    outputs = []
    bounds = [0, 7, 12, *range(13, 25)]  # a prefill of 7, a chunk of 5, then one-token steps
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        before = [None if c is None else c.clone() for c in cache]
        o, *new_cache = forgetting_attention_with_cache(
            q[:, start:end], k[:, start:end], v[:, start:end], log_forget[:, start:end], *cache
        )
        for was, passed in zip(before, cache, strict=True):  # the caches passed in are kept
            assert was is None or torch.equal(was, passed)
        cache = new_cache
        assert cache[2].shape == (2, end, 3) and cache[2].dtype == F64
        outputs.append(o)
    torch.testing.assert_close(torch.cat(outputs, dim=1), o_full)
    torch.testing.assert_close(cache[2], log_forget.cumsum(dim=1))


def test_cache_path_gradients_match_reference():
    inputs = [x.requires_grad_() for x in make_inputs(1, 9, 2, 4, 4, seed=6)]
    q, k, v, g = inputs
    _, *cache = forgetting_attention_with_cache(q[:, :4], k[:, :4], v[:, :4], g[:, :4])
    o_new, *_ = forgetting_attention_with_cache(q[:, 4:], k[:, 4:], v[:, 4:], g[:, 4:], *cache)
    o_ref = reference_forgetting_attention(*inputs)[:, 4:]
    torch.testing.assert_close(o_new, o_ref)
    for got, want in zip(grads(o_new, inputs), grads(o_ref, inputs), strict=True):
        torch.testing.assert_close(got, want)


LENGTHS = [5, 1, 7, 3]


@pytest.mark.parametrize("form", ["sdpa", "reference"])
def test_packed_row_equals_each_document_alone(form):
    attend = forgetting_attention if form == "sdpa" else reference_forgetting_attention
    q, k, v, log_forget = make_inputs(1, sum(LENGTHS), 2, 4, 3, seed=7)
    segment_ids = torch.arange(len(LENGTHS)).repeat_interleave(torch.tensor(LENGTHS))[None]
    packed = attend(q, k, v, log_forget, segment_ids=segment_ids)
    pieces = zip(*(x.split(LENGTHS, dim=1) for x in (q, k, v, log_forget)), strict=True)
    alone = torch.cat([attend(*piece) for piece in pieces], dim=1)
    torch.testing.assert_close(packed, alone)
    assert not torch.allclose(attend(q, k, v, log_forget), alone, atol=1e-3)


def test_packed_chunk_after_a_cache_sees_the_cache_in_its_first_document_only():
    q, k, v, log_forget = make_inputs(1, 12, 2, 4, 3, seed=8)
    _, *cache = forgetting_attention_with_cache(q[:, :5], k[:, :5], v[:, :5], log_forget[:, :5])
    segment_ids = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    o, *_ = forgetting_attention_with_cache(
        q[:, 5:], k[:, 5:], v[:, 5:], log_forget[:, 5:], *cache, segment_ids=segment_ids
    )
    whole = forgetting_attention(q[:, :8], k[:, :8], v[:, :8], log_forget[:, :8])
    last = forgetting_attention(q[:, 8:], k[:, 8:], v[:, 8:], log_forget[:, 8:])
    torch.testing.assert_close(o, torch.cat([whole[:, 5:], last], dim=1))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"log_forget": torch.zeros(2, 5, 3, 1)}, r"log_forget must have shape \(B, T, H\)"),
        ({"log_forget": torch.zeros(2, 5, 2)}, r"log_forget must have shape \(B, T, H\)"),
        ({"log_forget": torch.zeros(2, 5, 3, dtype=torch.long)}, "log_forget must be a float"),
        ({"k": torch.zeros(2, 5, 3, 7)}, r"k must have shape \(B, T, H, D\)"),
        ({"q": torch.zeros(2, 5, 3)}, r"q must have shape \(B, T, H, D\)"),
        ({"segment_ids": torch.zeros(2, 4, dtype=torch.long)}, "segment_ids must be an integer"),
    ],
)
def test_bad_shapes_raise_one_line_value_errors(change, match):
    args = {
        "q": torch.zeros(2, 5, 3, 4),
        "k": torch.zeros(2, 5, 3, 4),
        "v": torch.zeros(2, 5, 3, 6),
        "log_forget": torch.zeros(2, 5, 3),
    }
    args.update(change)
    for attend in (forgetting_attention, reference_forgetting_attention):
        with pytest.raises(ValueError, match=match) as error:
            attend(**args)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("cache", "match"),
    [
        ((torch.zeros(2, 3, 3, 4), torch.zeros(2, 3, 3, 6), None), "cache_cumulative must be"),
        ((None, None, torch.zeros(2, 3, 3)), "cache_cumulative must be given together"),
        ((torch.zeros(2, 3, 3, 4), None, torch.zeros(2, 3, 3)), "cache_k and cache_v"),
        (
            (torch.zeros(2, 3, 3, 4), torch.zeros(2, 3, 3, 6), torch.zeros(2, 4, 3)),
            r"cache_cumulative must have shape \(B, P, H\)",
        ),
        (
            (torch.zeros(2, 3, 3, 4), torch.zeros(2, 3, 3, 6), torch.zeros(2, 3, 3, dtype=F64)),
            "cache_cumulative must be torch.float32 for torch.float32 gates",
        ),
    ],
)
def test_bad_caches_raise_one_line_value_errors(cache, match):
    new = [torch.zeros(2, 1, 3, 4), torch.zeros(2, 1, 3, 4), torch.zeros(2, 1, 3, 6)]
    with pytest.raises(ValueError, match=match) as error:
        forgetting_attention_with_cache(*new, torch.zeros(2, 1, 3), *cache)
    assert "\n" not in str(error.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_values_and_gradients_match_the_reference(dtype):
    """SDPA's CUDA kernels with a float mask (its gradient included) against the float64 loop."""
    inputs = [x.requires_grad_() for x in make_inputs(2, 70, 2, 16, 16, seed=10)]
    on_gpu = [x.detach().cuda().to(dtype if x.dim() == 4 else torch.float32) for x in inputs]
    on_gpu = [x.requires_grad_() for x in on_gpu]
    o = forgetting_attention(*on_gpu)
    o_ref = reference_forgetting_attention(*inputs)
    tolerance = (
        {"atol": 5e-2, "rtol": 5e-2} if dtype == torch.bfloat16 else {"atol": 1e-4, "rtol": 1e-4}
    )
    torch.testing.assert_close(o.double().cpu(), o_ref, **tolerance)
    for got, want in zip(grads(o, on_gpu), grads(o_ref, inputs), strict=True):
        torch.testing.assert_close(got.double().cpu(), want, **tolerance)
