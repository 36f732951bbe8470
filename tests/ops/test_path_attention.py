"""PaTH attention: the blockwise UT form and the cache form against the float64 loop that builds
the Householder products explicitly; packing, special cases with closed forms, input errors."""

import pytest
import torch
import torch.nn.functional as F

from selrope.ops import (
    PathAttentionCache,
    causal_attention,
    forgetting_attention,
    path_attention,
    path_attention_with_cache,
    reference_path_attention,
)
from selrope.ops.fla_backend import FLA_SWITCH, fla_available

F64 = torch.float64


def make_inputs(B, T, H, K, V, seed=0, dtype=F64, gate=True):
    """q, k, v, unit directions w, beta over (0, 2) and log forget gates (or None)."""
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, T, H, K, generator=gen, dtype=F64) for _ in range(2))
    v = torch.randn(B, T, H, V, generator=gen, dtype=F64)
    w = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=F64), dim=-1)
    beta = 2 * torch.sigmoid(2 * torch.randn(B, T, H, generator=gen, dtype=F64))
    g = F.logsigmoid(3 * torch.randn(B, T, H, generator=gen, dtype=F64)) if gate else None
    return [None if x is None else x.to(dtype) for x in (q, k, v, w, beta, g)]


def grads(output, inputs):
    weight = torch.randn(output.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    loss = (output * weight.to(output)).sum()
    # The first token's w and beta never act (nothing before it): zero gradients, not missing.
    return torch.autograd.grad(loss, inputs, allow_unused=True, materialize_grads=True)


def with_grad(inputs):
    return [None if x is None else x.requires_grad_() for x in inputs]


# (T, chunk_size): one token, under one chunk, exactly one, one past it, several with a ragged end.
CASES = [(1, 64), (3, 4), (8, 8), (9, 8), (17, 4), (33, 16), (21, 2)]


@pytest.mark.parametrize(("T", "chunk_size"), CASES)
@pytest.mark.parametrize("gate", [False, True])
def test_blockwise_matches_loop_reference_values_and_gradients(T, chunk_size, gate):
    inputs = with_grad(make_inputs(2, T, 3, 8, 5, gate=gate))
    o = path_attention(*inputs, chunk_size=chunk_size)
    o_ref = reference_path_attention(*inputs)
    assert o.shape == (2, T, 3, 5) and o.dtype == F64
    torch.testing.assert_close(o, o_ref, rtol=1e-11, atol=1e-11)
    used = [x for x in inputs if x is not None]
    for got, want in zip(grads(o, used), grads(o_ref, used), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_chunk_sizes_agree_on_long_sequences():
    """Beyond the loop reference's reach: 150 tokens in chunks of 64 (a ragged third chunk)
    against 75 chunks of 2 (many carries), values and gradients."""
    inputs = with_grad(make_inputs(1, 150, 2, 16, 4, seed=15))
    o = path_attention(*inputs)
    o_small = path_attention(*inputs, chunk_size=2)
    torch.testing.assert_close(o, o_small, rtol=1e-11, atol=1e-11)
    for got, want in zip(grads(o, inputs), grads(o_small, inputs), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_scale_is_applied_to_the_scores_only():
    inputs = make_inputs(1, 11, 2, 4, 3, seed=1)
    for scale in (0.2, 1.7):
        torch.testing.assert_close(
            path_attention(*inputs, scale=scale, chunk_size=4),
            reference_path_attention(*inputs, scale=scale),
        )


def test_gradcheck_tiny_float64():
    """Three chunks of two tokens: the in-chunk solve, the carries and the key transform."""
    inputs = with_grad(make_inputs(1, 6, 1, 3, 2, seed=2))

    def blockwise(*args):
        return path_attention(*args, chunk_size=2)

    assert torch.autograd.gradcheck(blockwise, inputs)


def test_gradcheck_tiny_cache_form():
    inputs = with_grad(make_inputs(1, 5, 1, 3, 2, seed=3))

    def prefill_then_step(q, k, v, w, beta, g):
        _, cache = path_attention_with_cache(
            q[:, :3], k[:, :3], v[:, :3], w[:, :3], beta[:, :3], g[:, :3], chunk_size=2
        )
        o, _ = path_attention_with_cache(
            q[:, 3:], k[:, 3:], v[:, 3:], w[:, 3:], beta[:, 3:], g[:, 3:], cache=cache
        )
        return o

    assert torch.autograd.gradcheck(prefill_then_step, inputs)


def test_beta_zero_is_plain_attention_and_with_gates_forgetting_attention():
    q, k, v, w, beta, g = make_inputs(2, 19, 3, 8, 5, seed=4)
    zero = torch.zeros_like(beta)
    for attend in (path_attention, reference_path_attention):
        torch.testing.assert_close(attend(q, k, v, w, zero), causal_attention(q, k, v))
        torch.testing.assert_close(attend(q, k, v, w, zero, g), forgetting_attention(q, k, v, g))


def test_reflections_along_one_axis_flip_the_score_per_token_between():
    """w_t = e_0 and beta = 2 make every H_t the reflection of axis 0, so the product between
    key j and query i is diag((-1)^(i - j), 1, ...): the score of q = k = e_0 alternates in sign."""
    T = 7
    q = torch.zeros(1, T, 1, 2, dtype=F64)
    q[..., 0] = 1.0
    k, w = q.clone(), q.clone()
    v = torch.eye(T, dtype=F64)[None, :, None, :]  # value j is the one-hot e_j
    beta = torch.full((1, T, 1), 2.0, dtype=F64)
    want = torch.softmax((-1.0) ** torch.arange(T - 1, -1, -1, dtype=F64), dim=0)
    for attend in (path_attention, reference_path_attention):
        o = attend(q, k, v, w, beta, scale=1.0)
        torch.testing.assert_close(o[0, -1, 0], want)


def test_float32_matches_float64_reference():
    inputs = make_inputs(2, 60, 2, 16, 8, seed=5)
    want = reference_path_attention(*inputs)
    o = path_attention(*(x.float() for x in inputs), chunk_size=16)
    assert o.dtype == torch.float32
    torch.testing.assert_close(o.double(), want, rtol=2e-5, atol=2e-5)


def test_bf16_inputs_compute_in_float32():
    inputs = make_inputs(1, 40, 2, 16, 16, seed=6)
    o = path_attention(*(x.bfloat16() for x in inputs))
    assert o.dtype == torch.bfloat16
    want = reference_path_attention(*(x.bfloat16().double() for x in inputs))
    torch.testing.assert_close(o.double(), want, rtol=2e-2, atol=2e-2)


def test_reference_is_causal():
    inputs = make_inputs(1, 10, 2, 4, 4, seed=7)
    changed = [x.clone() for x in inputs]
    for x, value in zip(changed, (1.0, -1.0, 5.0, 0.5, 0.3, -2.0), strict=True):
        x[:, 6] = value  # token 6 only (w need not be a unit vector for causality)
    o = reference_path_attention(*inputs)
    o2 = reference_path_attention(*changed)
    torch.testing.assert_close(o[:, :6], o2[:, :6])
    assert not torch.allclose(o[:, 6], o2[:, 6])


@pytest.mark.parametrize("gate", [False, True])
def test_prefill_then_chunks_then_steps_equal_one_pass(gate):
    inputs = make_inputs(2, 24, 3, 8, 5, seed=8, gate=gate)
    o_full = path_attention(*inputs)
    cache = None
    outputs = []
    bounds = [0, 7, 12, *range(13, 25)]  # a prefill of 7, a chunk of 5, then one-token steps
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        piece = [None if x is None else x[:, start:end] for x in inputs]
        before = None if cache is None else [None if c is None else c.clone() for c in cache]
        o, new_cache = path_attention_with_cache(*piece, cache=cache, chunk_size=4)
        if cache is not None:  # the cache passed in is kept
            for was, passed in zip(before, cache, strict=True):
                assert was is None or torch.equal(was, passed)
        cache = new_cache
        assert isinstance(cache, PathAttentionCache) and cache.keys.shape == (2, end, 3, 8)
        outputs.append(o)
    torch.testing.assert_close(torch.cat(outputs, dim=1), o_full)
    if gate:
        torch.testing.assert_close(cache.cumulative, inputs[5].cumsum(dim=1))
    else:
        assert cache.cumulative is None


def test_cache_keys_are_carried_through_every_later_transform():
    q, k, v, w, beta, _ = make_inputs(1, 9, 2, 4, 3, seed=9)
    _, cache = path_attention_with_cache(q, k, v, w, beta, chunk_size=4)
    eye = torch.eye(4, dtype=F64)
    householder = eye - beta[..., None, None] * w[..., :, None] * w[..., None, :]
    for j in range(9):
        carried = k[:, j]
        for t in range(j + 1, 9):
            carried = torch.einsum("bhkl,bhl->bhk", householder[:, t], carried)
        torch.testing.assert_close(cache.keys[:, j], carried)
    torch.testing.assert_close(cache.values, v)


def test_cache_path_gradients_match_reference():
    inputs = with_grad(make_inputs(1, 13, 2, 4, 4, seed=10))
    first = [x[:, :6] for x in inputs]
    rest = [x[:, 6:] for x in inputs]
    _, cache = path_attention_with_cache(*first, chunk_size=2)
    o_new, _ = path_attention_with_cache(*rest, cache=cache, chunk_size=4)
    o_ref = reference_path_attention(*inputs)[:, 6:]
    torch.testing.assert_close(o_new, o_ref)
    for got, want in zip(grads(o_new, inputs), grads(o_ref, inputs), strict=True):
        torch.testing.assert_close(got, want)


LENGTHS = [5, 1, 7, 3]


@pytest.mark.parametrize("form", ["blockwise", "reference"])
def test_packed_row_equals_each_document_alone(form):
    def attend(*args, **kwargs):
        if form == "reference":
            return reference_path_attention(*args, **kwargs)
        return path_attention(*args, chunk_size=4, **kwargs)

    inputs = make_inputs(1, sum(LENGTHS), 2, 4, 3, seed=11)
    segment_ids = torch.arange(len(LENGTHS)).repeat_interleave(torch.tensor(LENGTHS))[None]
    packed = attend(*inputs, segment_ids=segment_ids)
    pieces = zip(*(x.split(LENGTHS, dim=1) for x in inputs), strict=True)
    alone = torch.cat([attend(*piece) for piece in pieces], dim=1)
    torch.testing.assert_close(packed, alone)
    assert not torch.allclose(attend(*inputs), alone, atol=1e-3)


def test_packed_rows_of_a_batch_differ_per_row():
    inputs = make_inputs(2, 10, 2, 4, 3, seed=12)
    segment_ids = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1, 1], [3, 3, 3, 3, 3, 3, 3, 3, 4, 4]])
    torch.testing.assert_close(
        path_attention(*inputs, segment_ids=segment_ids, chunk_size=4),
        reference_path_attention(*inputs, segment_ids=segment_ids),
    )


def test_packed_chunk_after_a_cache_sees_the_cache_in_its_first_document_only():
    inputs = make_inputs(1, 12, 2, 4, 3, seed=13)
    _, cache = path_attention_with_cache(*(x[:, :5] for x in inputs))
    segment_ids = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    o, _ = path_attention_with_cache(
        *(x[:, 5:] for x in inputs), cache=cache, segment_ids=segment_ids, chunk_size=2
    )
    whole = path_attention(*(x[:, :8] for x in inputs))
    last = path_attention(*(x[:, 8:] for x in inputs))
    torch.testing.assert_close(o, torch.cat([whole[:, 5:], last], dim=1))


def _arguments():
    return {
        "q": torch.zeros(2, 5, 3, 4),
        "k": torch.zeros(2, 5, 3, 4),
        "v": torch.zeros(2, 5, 3, 6),
        "w": torch.zeros(2, 5, 3, 4),
        "beta": torch.ones(2, 5, 3),
        "g": torch.zeros(2, 5, 3),
    }


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"w": torch.zeros(2, 5, 3, 5)}, r"w must have shape \(B, T, H, K\)"),
        ({"beta": torch.ones(2, 5, 3, 1)}, r"beta must have shape \(B, T, H\)"),
        ({"g": torch.zeros(2, 5, 2)}, r"g must have shape \(B, T, H\)"),
        ({"k": torch.zeros(2, 5, 3, 7)}, r"k must have shape \(B, T, H, K\)"),
        ({"q": torch.zeros(2, 5, 3)}, r"q must have shape \(B, T, H, K\)"),
        ({"beta": torch.full((2, 5, 3), 2.5)}, r"beta must lie in \[0, 2\].*got 2.5"),
        ({"beta": torch.full((2, 5, 3), -0.1)}, r"beta must lie in \[0, 2\]"),
        ({"g": torch.full((2, 5, 3), 0.5)}, "g must hold finite log forget gates <= 0; got 0.5"),
        ({"g": torch.full((2, 5, 3), -torch.inf)}, "g must hold finite log forget gates"),
        ({"segment_ids": torch.zeros(2, 4, dtype=torch.long)}, "segment_ids must be an integer"),
    ],
)
def test_bad_inputs_raise_one_line_value_errors(change, match):
    args = _arguments()
    args.update(change)
    for attend in (path_attention, reference_path_attention, path_attention_with_cache):
        with pytest.raises(ValueError, match=match) as error:
            attend(**args)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("chunk_size", [0, 3, 48, 2.0])
def test_chunk_size_must_be_a_power_of_two(chunk_size):
    with pytest.raises(ValueError, match="chunk_size must be a power of two"):
        path_attention(**_arguments(), chunk_size=chunk_size)


def _cache(P=3, keys_dtype=torch.float32, gate=True, **change):
    fields = {
        "keys": torch.zeros(2, P, 3, 4, dtype=keys_dtype),
        "values": torch.zeros(2, P, 3, 6),
        "cumulative": torch.zeros(2, P, 3) if gate else None,
    }
    fields.update(change)
    return PathAttentionCache(**fields)


@pytest.mark.parametrize(
    ("cache", "gate", "match"),
    [
        (_cache(gate=False), True, "g and cache.cumulative must be given together"),
        (_cache(), False, "g and cache.cumulative must be given together"),
        (_cache(keys_dtype=F64), True, "cache.keys must be torch.float32"),
        (_cache(keys=torch.zeros(2, 3, 3, 5)), True, r"cache.keys must have shape \(B, P, H, K\)"),
        (_cache(values=torch.zeros(2, 4, 3, 6)), True, r"cache.values must have shape"),
        (_cache(cumulative=torch.zeros(2, 4, 3)), True, r"cache.cumulative must have shape"),
        ((torch.zeros(2, 3, 3, 4),) * 3, True, "cache must be a PathAttentionCache"),
    ],
)
def test_bad_caches_raise_one_line_value_errors(cache, gate, match):
    args = {name: x[:, :1] for name, x in _arguments().items()}
    if not gate:
        args["g"] = None
    with pytest.raises(ValueError, match=match) as error:
        path_attention_with_cache(**args, cache=cache)
    assert "\n" not in str(error.value)


@pytest.mark.skipif(
    not (torch.cuda.is_available() and fla_available()),
    reason="needs a CUDA device and fla-core (the `gpu` extra): fla's PaTH kernel runs on CUDA",
)
@pytest.mark.parametrize("gate", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_fla_kernel_matches_the_reference(monkeypatch, gate, packed):
    """fla's parallel_path_attn (SELROPE_FLA=1) against the float64 loop, gradients included."""
    monkeypatch.setenv(FLA_SWITCH, "1")
    inputs = with_grad(make_inputs(2, 70, 2, 32, 32, seed=14, gate=gate))
    segment_ids = torch.tensor([[0] * 30 + [1] * 40, [2] * 70]) if packed else None
    on_gpu = with_grad([None if x is None else x.detach().cuda().float() for x in inputs])
    o = path_attention(*on_gpu, segment_ids=None if segment_ids is None else segment_ids.cuda())
    o_ref = reference_path_attention(*inputs, segment_ids=segment_ids)
    torch.testing.assert_close(o.double().cpu(), o_ref, rtol=5e-3, atol=5e-3)
    used_gpu = [x for x in on_gpu if x is not None]
    used = [x for x in inputs if x is not None]
    for got, want in zip(grads(o, used_gpu), grads(o_ref, used), strict=True):
        torch.testing.assert_close(got.double().cpu(), want, rtol=5e-3, atol=5e-3)
