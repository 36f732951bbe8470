"""CoPE attention: the vectorised form against the float64 loop (values, gradients of q, k, v and
the table, clipping), closed forms of the positions, KV-cache decoding, packing, input errors;
CoPE inside FoX against the same loop with the forget gates."""

import pytest
import torch
import torch.nn.functional as F

from selrope.ops import (
    causal_attention,
    contextual_positions,
    cope_attention,
    cope_attention_with_cache,
    cope_forgetting_attention,
    cope_forgetting_attention_with_cache,
    forgetting_attention,
    reference_cope_attention,
)

F64 = torch.float64


def make_inputs(B, T, H, D, Dv, npos, seed=0, dtype=F64, per_head=False):
    """q, k, v and a position table (shared or per head)."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, T, H, d, generator=gen, dtype=dtype) for d in (D, D, Dv))
    shape = (H, npos, D) if per_head else (npos, D)
    table = torch.randn(*shape, generator=gen, dtype=dtype)
    return [q, k, v, table]


def grads(output, inputs):
    weight = torch.randn(output.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    return torch.autograd.grad((output * weight.to(output)).sum(), inputs)


# (T, npos, per_head): one token; positions clipped (npos 4 < T); unclipped; a per-head table.
CASES = [(1, 8, False), (17, 4, False), (23, 32, False), (40, 16, True)]


@pytest.mark.parametrize(("T", "npos", "per_head"), CASES)
def test_vectorised_form_matches_loop_reference_values_and_gradients(T, npos, per_head):
    inputs = [x.requires_grad_() for x in make_inputs(2, T, 3, 8, 6, npos, per_head=per_head)]
    o = cope_attention(*inputs)
    o_ref = reference_cope_attention(*inputs)
    assert o.shape == (2, T, 3, 6) and o.dtype == F64
    torch.testing.assert_close(o, o_ref)
    for got, want in zip(grads(o, inputs), grads(o_ref, inputs), strict=True):
        torch.testing.assert_close(got, want)


def test_scale_is_applied_to_the_logits_and_gates():
    inputs = make_inputs(1, 9, 2, 4, 3, 8, seed=1)
    torch.testing.assert_close(
        cope_attention(*inputs, scale=1.3), reference_cope_attention(*inputs, scale=1.3)
    )


def test_gradcheck_tiny_float64():
    inputs = [x.requires_grad_() for x in make_inputs(1, 5, 1, 4, 3, 8, seed=2)]
    assert torch.autograd.gradcheck(cope_attention, inputs)


def test_zero_table_is_plain_attention():
    q, k, v, table = make_inputs(2, 13, 3, 8, 5, 16, seed=3)
    zero = torch.zeros_like(table)
    for attend in (cope_attention, reference_cope_attention):
        torch.testing.assert_close(attend(q, k, v, zero), causal_attention(q, k, v))


def test_zero_logits_count_half_a_token_each():
    """Every gate is sigmoid(0) = 1/2, so key j sits at (i - j + 1) / 2 from query i."""
    T = 6
    positions = contextual_positions(
        torch.zeros(T, T, dtype=F64), torch.ones(T, T, dtype=torch.bool).tril(), max_position=99
    )
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    torch.testing.assert_close(positions, torch.where(j <= i, (i - j + 1) / 2, 0.0).double())
    clipped = contextual_positions(
        torch.zeros(T, T, dtype=F64), torch.ones(T, T, dtype=torch.bool).tril(), max_position=1
    )
    torch.testing.assert_close(clipped, positions.clamp(max=1))


def test_a_linear_table_interpolates_exactly_at_half_positions():
    """Keys 0 make every logit 0 (positions (i - j + 1) / 2); a table e[n] = n u then adds
    (q_i . u) (i - j + 1) / 2 to the score of key j, a half-integer position for every other j."""
    T, D = 7, 3
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(1, T, 1, D, generator=gen, dtype=F64)
    k = torch.zeros(1, T, 1, D, dtype=F64)
    v = torch.eye(T, dtype=F64)[None, :, None, :]
    direction = torch.randn(D, generator=gen, dtype=F64)
    table = torch.arange(8, dtype=F64)[:, None] * direction
    for attend in (cope_attention, reference_cope_attention):
        o = attend(q, k, v, table)
        for i in range(T):
            scores = (q[0, i, 0] @ direction) * (i - torch.arange(i + 1, dtype=F64) + 1) / 2
            torch.testing.assert_close(o[0, i, 0, : i + 1], scores.softmax(dim=0))


def test_float32_and_bf16_follow_the_reference():
    inputs = make_inputs(2, 30, 2, 16, 16, 24, seed=5)
    want = reference_cope_attention(*inputs)
    o32 = cope_attention(*(x.float() for x in inputs))
    assert o32.dtype == torch.float32
    torch.testing.assert_close(o32.double(), want, rtol=1e-5, atol=1e-5)
    o16 = cope_attention(*(x.bfloat16() for x in inputs))
    assert o16.dtype == torch.bfloat16
    want16 = reference_cope_attention(*(x.bfloat16().double() for x in inputs))
    torch.testing.assert_close(o16.double(), want16, rtol=2e-2, atol=2e-2)


def test_prefill_then_chunks_then_steps_equal_one_pass():
    q, k, v, table = make_inputs(2, 24, 3, 8, 5, 12, seed=6)
    o_full = cope_attention(q, k, v, table)
    cache = (None, None)
    outputs = []
    bounds = [0, 7, 12, *range(13, 25)]
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        o, *cache = cope_attention_with_cache(
            q[:, start:end], k[:, start:end], v[:, start:end], table, *cache
        )
        outputs.append(o)
    torch.testing.assert_close(torch.cat(outputs, dim=1), o_full)
    torch.testing.assert_close(cache[0], k)


def test_cache_path_gradients_match_reference():
    inputs = [x.requires_grad_() for x in make_inputs(1, 9, 2, 4, 4, 6, seed=7)]
    q, k, v, table = inputs
    _, *cache = cope_attention_with_cache(q[:, :4], k[:, :4], v[:, :4], table)
    o_new, *_ = cope_attention_with_cache(q[:, 4:], k[:, 4:], v[:, 4:], table, *cache)
    o_ref = reference_cope_attention(*inputs)[:, 4:]
    torch.testing.assert_close(o_new, o_ref)
    for got, want in zip(grads(o_new, inputs), grads(o_ref, inputs), strict=True):
        torch.testing.assert_close(got, want)


LENGTHS = [5, 1, 7, 3]


@pytest.mark.parametrize("form", ["vectorised", "reference"])
def test_packed_row_equals_each_document_alone(form):
    attend = cope_attention if form == "vectorised" else reference_cope_attention
    q, k, v, table = make_inputs(1, sum(LENGTHS), 2, 4, 3, 8, seed=8)
    segment_ids = torch.arange(len(LENGTHS)).repeat_interleave(torch.tensor(LENGTHS))[None]
    packed = attend(q, k, v, table, segment_ids=segment_ids)
    pieces = zip(*(x.split(LENGTHS, dim=1) for x in (q, k, v)), strict=True)
    alone = torch.cat([attend(*piece, table) for piece in pieces], dim=1)
    torch.testing.assert_close(packed, alone)
    assert not torch.allclose(attend(q, k, v, table), alone, atol=1e-3)


def test_packed_chunk_after_a_cache_sees_the_cache_in_its_first_document_only():
    q, k, v, table = make_inputs(1, 12, 2, 4, 3, 8, seed=9)
    _, *cache = cope_attention_with_cache(q[:, :5], k[:, :5], v[:, :5], table)
    segment_ids = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    o, *_ = cope_attention_with_cache(
        q[:, 5:], k[:, 5:], v[:, 5:], table, *cache, segment_ids=segment_ids
    )
    whole = cope_attention(q[:, :8], k[:, :8], v[:, :8], table)
    last = cope_attention(q[:, 8:], k[:, 8:], v[:, 8:], table)
    torch.testing.assert_close(o, torch.cat([whole[:, 5:], last], dim=1))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"position_embeddings": torch.zeros(8, 5)}, r"position_embeddings must be .* \(3, 4\)"),
        ({"position_embeddings": torch.zeros(2, 8, 4)}, "position_embeddings must be a float"),
        ({"position_embeddings": torch.zeros(0, 4)}, "npos >= 1"),
        ({"position_embeddings": torch.zeros(8, 4, dtype=torch.long)}, "must be a float tensor"),
        ({"position_embeddings": torch.zeros(4)}, "position_embeddings must be a float"),
        ({"k": torch.zeros(2, 5, 3, 7)}, r"k must have shape \(B, T, H, D\)"),
        ({"segment_ids": torch.zeros(2, 4, dtype=torch.long)}, "segment_ids must be an integer"),
    ],
)
def test_bad_inputs_raise_one_line_value_errors(change, match):
    args = {
        "q": torch.zeros(2, 5, 3, 4),
        "k": torch.zeros(2, 5, 3, 4),
        "v": torch.zeros(2, 5, 3, 6),
        "position_embeddings": torch.zeros(8, 4),
    }
    args.update(change)
    for attend in (cope_attention, reference_cope_attention, cope_attention_with_cache):
        with pytest.raises(ValueError, match=match) as error:
            attend(**args)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("T", [1, 7, 16])
def test_cope_inside_fox_matches_the_loop_reference_values_and_gradients(T):
    gen = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(2, T, 3, 4, dtype=torch.float64, generator=gen) for _ in range(3))
    table = torch.randn(5, 4, dtype=torch.float64, generator=gen)
    log_forget = F.logsigmoid(torch.randn(2, T, 3, dtype=torch.float64, generator=gen) + 2)
    leaves = [t.requires_grad_() for t in (q, k, v, table, log_forget)]
    got = cope_forgetting_attention(q, k, v, table, log_forget)
    expected = reference_cope_attention(q, k, v, table, log_forget=log_forget)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)
    grad = torch.randn_like(got)
    got_grads = torch.autograd.grad(got, leaves, grad)
    expected_grads = torch.autograd.grad(expected, leaves, grad)
    for got_grad, expected_grad in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(got_grad, expected_grad, atol=1e-10, rtol=1e-10)


def test_cope_inside_fox_gradcheck_and_its_two_limits():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 5, 2, 4, dtype=torch.float64, generator=gen) for _ in range(3))
    table = torch.randn(4, 4, dtype=torch.float64, generator=gen)
    log_forget = F.logsigmoid(torch.randn(1, 5, 2, dtype=torch.float64, generator=gen))
    inputs = tuple(t.clone().requires_grad_() for t in (q, k, v, table, log_forget))
    assert torch.autograd.gradcheck(cope_forgetting_attention, inputs)
    # Gates all 1: CoPE alone. A zero table: FoX alone.
    ones = torch.zeros_like(log_forget)
    torch.testing.assert_close(
        cope_forgetting_attention(q, k, v, table, ones), cope_attention(q, k, v, table)
    )
    torch.testing.assert_close(
        cope_forgetting_attention(q, k, v, torch.zeros_like(table), log_forget),
        forgetting_attention(q, k, v, log_forget),
    )


def test_cope_inside_fox_prefill_then_steps_and_packed_documents():
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 11, 2, 4, dtype=torch.float64, generator=gen) for _ in range(3))
    table = torch.randn(6, 4, dtype=torch.float64, generator=gen)
    log_forget = F.logsigmoid(torch.randn(2, 11, 2, dtype=torch.float64, generator=gen))
    full = cope_forgetting_attention(q, k, v, table, log_forget)
    o, *cache = cope_forgetting_attention_with_cache(q[:, :4], k[:, :4], v[:, :4], table,
                                                     log_forget[:, :4])  # fmt: skip
    outputs = [o]
    for t in range(4, 11):
        step = slice(t, t + 1)
        o, *cache = cope_forgetting_attention_with_cache(
            q[:, step], k[:, step], v[:, step], table, log_forget[:, step], *cache
        )
        outputs.append(o)
    torch.testing.assert_close(torch.cat(outputs, dim=1), full, atol=1e-12, rtol=1e-12)
    segment_ids = torch.tensor([[0] * 4 + [1] * 7] * 2)
    packed = cope_forgetting_attention(q, k, v, table, log_forget, segment_ids=segment_ids)
    alone = [
        cope_forgetting_attention(q[:, s], k[:, s], v[:, s], table, log_forget[:, s])
        for s in (slice(0, 4), slice(4, 11))
    ]
    torch.testing.assert_close(packed, torch.cat(alone, dim=1), atol=1e-12, rtol=1e-12)
