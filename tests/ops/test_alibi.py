"""ALiBi attention: the paper's slopes, the SDPA form against the float64 loop, FoX with fixed
gates, KV-cache decoding, packed documents, input errors."""

import math

import pytest
import torch

from selrope.ops import (
    alibi_attention,
    alibi_attention_with_cache,
    alibi_slopes,
    causal_attention,
    forgetting_attention,
    reference_alibi_attention,
)

F64 = torch.float64


def make_inputs(B, T, H, D, Dv, seed=0, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, H, d, generator=gen, dtype=dtype) for d in (D, D, Dv)]


def grads(output, inputs):
    weight = torch.randn(output.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    return torch.autograd.grad((output * weight.to(output)).sum(), inputs)


def test_slopes_of_a_power_of_two_are_geometric():
    torch.testing.assert_close(alibi_slopes(8), 0.5 ** torch.arange(1, 9, dtype=F64))
    torch.testing.assert_close(alibi_slopes(1), torch.tensor([2.0**-8], dtype=F64))
    torch.testing.assert_close(alibi_slopes(16), 2 ** (-0.5 * torch.arange(1, 17, dtype=F64)))


def test_slopes_of_other_head_counts_follow_the_papers_rule():
    """12 heads: the 8 slopes of 8 heads, then every other slope of 16 heads (odd exponents)."""
    want = [2.0**-e for e in (1, 2, 3, 4, 5, 6, 7, 8)] + [2.0**-e for e in (0.5, 1.5, 2.5, 3.5)]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(want, dtype=F64))
    assert alibi_slopes(3).tolist() == [0.5**4, 0.5**8, 0.5**2]
    for heads in (5, 6, 7, 24, 96):
        slopes = alibi_slopes(heads)
        assert slopes.shape == (heads,) and len(set(slopes.tolist())) == heads
        assert bool(((slopes > 0) & (slopes < 1)).all())


@pytest.mark.parametrize("heads", [0, -1, 2.0, True])
def test_slopes_need_a_positive_head_count(heads):
    with pytest.raises(ValueError, match="num_heads must be a positive integer"):
        alibi_slopes(heads)


@pytest.mark.parametrize(("T", "scale"), [(1, None), (17, None), (40, 0.2)])
def test_sdpa_form_matches_loop_reference_values_and_gradients(T, scale):
    inputs = [x.requires_grad_() for x in make_inputs(2, T, 3, 8, 6)]
    o = alibi_attention(*inputs, scale=scale)
    o_ref = reference_alibi_attention(*inputs, scale=scale)
    assert o.shape == (2, T, 3, 6) and o.dtype == F64
    torch.testing.assert_close(o, o_ref)
    for got, want in zip(grads(o, inputs), grads(o_ref, inputs), strict=True):
        torch.testing.assert_close(got, want)


def test_gradcheck_tiny_float64_slopes_included():
    q, k, v = (x.requires_grad_() for x in make_inputs(1, 5, 2, 4, 3, seed=1))
    slopes = torch.tensor([0.3, 0.7], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(alibi_attention, (q, k, v, slopes))


def test_is_forgetting_attention_with_fixed_gates():
    q, k, v = make_inputs(2, 23, 6, 8, 5, seed=2)
    log_forget = -alibi_slopes(6).expand(2, 23, 6)
    torch.testing.assert_close(alibi_attention(q, k, v), forgetting_attention(q, k, v, log_forget))


def test_zero_slopes_are_plain_attention():
    q, k, v = make_inputs(2, 13, 3, 8, 5, seed=3)
    zero = torch.zeros(3, dtype=F64)
    torch.testing.assert_close(alibi_attention(q, k, v, zero), causal_attention(q, k, v))


def test_equal_keys_spread_their_weight_by_distance():
    """With all scores equal, key j's weight for query i is proportional to exp(-m (i - j))."""
    T = 6
    q = torch.zeros(1, T, 2, 2, dtype=F64)
    v = torch.eye(T, dtype=F64)[None, :, None, :].expand(1, T, 2, T)
    o = alibi_attention(q, q, v)
    for head, slope in enumerate(alibi_slopes(2).tolist()):
        want = torch.tensor([math.exp(-slope * (T - 1 - j)) for j in range(T)], dtype=F64)
        torch.testing.assert_close(o[0, -1, head], want / want.sum())


def test_float32_and_bf16_follow_the_reference():
    q, k, v = make_inputs(2, 70, 4, 16, 16, seed=4)
    want = reference_alibi_attention(q, k, v)
    o32 = alibi_attention(q.float(), k.float(), v.float())
    assert o32.dtype == torch.float32
    torch.testing.assert_close(o32.double(), want, rtol=1e-5, atol=1e-5)
    o16 = alibi_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert o16.dtype == torch.bfloat16
    torch.testing.assert_close(o16.double(), want, rtol=5e-2, atol=5e-2)


def test_prefill_then_chunks_then_steps_equal_one_pass():
    q, k, v = make_inputs(2, 24, 3, 8, 5, seed=5)
    o_full = alibi_attention(q, k, v)
    cache = (None, None)
    outputs = []
    bounds = [0, 7, 12, *range(13, 25)]
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        before = [None if c is None else c.clone() for c in cache]
        o, *new_cache = alibi_attention_with_cache(
            q[:, start:end], k[:, start:end], v[:, start:end], *cache
        )
        for was, passed in zip(before, cache, strict=True):
            assert was is None or torch.equal(was, passed)
        cache = new_cache
        outputs.append(o)
    torch.testing.assert_close(torch.cat(outputs, dim=1), o_full)
    torch.testing.assert_close(cache[0], k)


def test_cache_path_gradients_match_reference():
    inputs = [x.requires_grad_() for x in make_inputs(1, 9, 2, 4, 4, seed=6)]
    q, k, v = inputs
    _, *cache = alibi_attention_with_cache(q[:, :4], k[:, :4], v[:, :4])
    o_new, *_ = alibi_attention_with_cache(q[:, 4:], k[:, 4:], v[:, 4:], *cache)
    o_ref = reference_alibi_attention(*inputs)[:, 4:]
    torch.testing.assert_close(o_new, o_ref)
    for got, want in zip(grads(o_new, inputs), grads(o_ref, inputs), strict=True):
        torch.testing.assert_close(got, want)


LENGTHS = [5, 1, 7, 3]


@pytest.mark.parametrize("form", ["sdpa", "reference"])
def test_packed_row_equals_each_document_alone(form):
    attend = alibi_attention if form == "sdpa" else reference_alibi_attention
    q, k, v = make_inputs(1, sum(LENGTHS), 2, 4, 3, seed=7)
    segment_ids = torch.arange(len(LENGTHS)).repeat_interleave(torch.tensor(LENGTHS))[None]
    packed = attend(q, k, v, segment_ids=segment_ids)
    pieces = zip(*(x.split(LENGTHS, dim=1) for x in (q, k, v)), strict=True)
    alone = torch.cat([attend(*piece) for piece in pieces], dim=1)
    torch.testing.assert_close(packed, alone)
    assert not torch.allclose(attend(q, k, v), alone, atol=1e-3)


def test_packed_chunk_after_a_cache_sees_the_cache_in_its_first_document_only():
    q, k, v = make_inputs(1, 12, 2, 4, 3, seed=8)
    _, *cache = alibi_attention_with_cache(q[:, :5], k[:, :5], v[:, :5])
    segment_ids = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    o, *_ = alibi_attention_with_cache(
        q[:, 5:], k[:, 5:], v[:, 5:], *cache, segment_ids=segment_ids
    )
    whole = alibi_attention(q[:, :8], k[:, :8], v[:, :8])
    last = alibi_attention(q[:, 8:], k[:, 8:], v[:, 8:])
    torch.testing.assert_close(o, torch.cat([whole[:, 5:], last], dim=1))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"slopes": torch.ones(2)}, r"slopes must have shape \(H,\) = \(3,\)"),
        ({"slopes": torch.ones(3, dtype=torch.long)}, "slopes must be a floating-point tensor"),
        ({"k": torch.zeros(2, 5, 3, 7)}, r"k must have shape \(B, T, H, D\)"),
        ({"q": torch.zeros(2, 5, 3)}, r"q must have shape \(B, T, H, D\)"),
        ({"segment_ids": torch.zeros(2, 4, dtype=torch.long)}, "segment_ids must be an integer"),
    ],
)
def test_bad_inputs_raise_one_line_value_errors(change, match):
    args = {
        "q": torch.zeros(2, 5, 3, 4),
        "k": torch.zeros(2, 5, 3, 4),
        "v": torch.zeros(2, 5, 3, 6),
    }
    args.update(change)
    for attend in (alibi_attention, reference_alibi_attention, alibi_attention_with_cache):
        with pytest.raises(ValueError, match=match) as error:
            attend(**args)
        assert "\n" not in str(error.value)


def test_bad_caches_raise_one_line_value_errors():
    new = [torch.zeros(2, 1, 3, 4), torch.zeros(2, 1, 3, 4), torch.zeros(2, 1, 3, 6)]
    with pytest.raises(ValueError, match="cache_k and cache_v must be given together"):
        alibi_attention_with_cache(*new, torch.zeros(2, 3, 3, 4))
    with pytest.raises(ValueError, match=r"cache_v must have shape \(B, P, H, Dv\)"):
        alibi_attention_with_cache(*new, torch.zeros(2, 3, 3, 4), torch.zeros(2, 2, 3, 6))
