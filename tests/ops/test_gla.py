"""chunk_gla / recurrent_gla / gla_step agree on values and gradients, including strong decays."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from selrope.ops import chunk_gla, gla_step, recurrent_gla
from selrope.ops.gla import _intra_chunk_output

F64 = torch.float64


def make_inputs(B, T, H, K, V, decay, seed=0, dtype=F64, requires_grad=False):
    """Random q, k, v, log decays uniform in [-decay, 0], and an initial state."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen, dtype=dtype)
    k = torch.randn(B, T, H, K, generator=gen, dtype=dtype)
    v = torch.randn(B, T, H, V, generator=gen, dtype=dtype)
    g = -decay * torch.rand(B, T, H, K, generator=gen, dtype=dtype)
    s0 = torch.randn(B, H, K, V, generator=gen, dtype=dtype)
    return [x.requires_grad_(requires_grad) for x in (q, k, v, g, s0)]


# (T, chunk_size, decay): T not a multiple of the chunk, T = 1, one chunk, weak to -20 per step.
CASES = [
    (1, 64, 1.0),
    (37, 16, 1.0),
    (100, 64, 0.05),
    (130, 16, 5.0),
    (64, 64, 20.0),
    (75, 16, 20.0),
]


@pytest.mark.parametrize(("T", "chunk_size", "decay"), CASES)
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_matches_recurrent_float64(T, chunk_size, decay, with_state):
    q, k, v, g, s0 = make_inputs(2, T, 3, 8, 5, decay)
    s0 = s0 if with_state else None
    o_ref, s_ref = recurrent_gla(q, k, v, g, initial_state=s0, output_final_state=True)
    o, s = chunk_gla(q, k, v, g, initial_state=s0, output_final_state=True, chunk_size=chunk_size)
    assert o.dtype == F64 and s.dtype == F64
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    torch.testing.assert_close(o, o_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)


def test_final_state_only_when_asked():
    q, k, v, g, _ = make_inputs(1, 10, 1, 4, 4, 1.0)
    assert chunk_gla(q, k, v, g)[1] is None
    assert recurrent_gla(q, k, v, g)[1] is None


def test_overflow_free_path_with_moderate_decays():
    """One channel at -30 per step forces the overflow-free intra-chunk form for the whole call;
    the other channels decay weakly, so every level of that form carries real signal."""
    q, k, v, g, s0 = make_inputs(2, 150, 2, 8, 4, 0.1)
    g = g.clone()
    g[:, :, :, 0] = -30.0
    o_ref, s_ref = recurrent_gla(q, k, v, g, initial_state=s0, output_final_state=True)
    o, s = chunk_gla(q, k, v, g, initial_state=s0, output_final_state=True)
    torch.testing.assert_close(o, o_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("decay", [0.5, 20.0])
def test_float32_strong_decay_is_finite_and_accurate(decay):
    q, k, v, g, s0 = make_inputs(2, 200, 2, 16, 8, decay)
    o_ref, _ = recurrent_gla(q, k, v, g, initial_state=s0)
    o, s = chunk_gla(
        *(x.float() for x in (q, k, v, g)), initial_state=s0.float(), output_final_state=True
    )
    assert o.dtype == torch.float32 and s.dtype == torch.float32
    assert torch.isfinite(o).all()
    torch.testing.assert_close(o.double(), o_ref, rtol=1e-3, atol=1e-3)


# The last case accumulates ~-960 per chunk: beyond float64's dense limit, so it takes the
# overflow-free intra-chunk form.
@pytest.mark.parametrize(
    ("T", "chunk_size", "decay"), [(45, 16, 1.0), (70, 16, 20.0), (130, 64, 30.0)]
)
def test_gradients_match_recurrent(T, chunk_size, decay):
    inputs = make_inputs(2, T, 2, 4, 3, decay, requires_grad=True)
    q, k, v, g, s0 = inputs
    w_o = torch.randn(2, T, 2, 3, dtype=F64)
    w_s = torch.randn(2, 2, 4, 3, dtype=F64)

    def grads(fn, **kw):
        o, s = fn(q, k, v, g, initial_state=s0, output_final_state=True, **kw)
        return torch.autograd.grad((o * w_o).sum() + (s * w_s).sum(), inputs)

    for got, want in zip(
        grads(chunk_gla, chunk_size=chunk_size), grads(recurrent_gla), strict=True
    ):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_gradcheck_chunk():
    q, k, v, g, s0 = make_inputs(1, 7, 1, 2, 2, 1.0, requires_grad=True)

    def fn(q, k, v, g, s0):
        return chunk_gla(q, k, v, g, initial_state=s0, output_final_state=True, chunk_size=4)

    assert torch.autograd.gradcheck(fn, (q, k, v, g, s0))


def naive_intra_chunk(q, k, v, G):
    """o_i = sum_{j <= i} sum_c q_ic k_jc exp(G_ic - G_jc) v_j via an explicit (C, C, K) tensor."""
    C = q.shape[-2]
    mask = torch.ones(C, C, dtype=torch.bool).tril()
    log_decay = (G.unsqueeze(-2) - G.unsqueeze(-3)).masked_fill(~mask.unsqueeze(-1), -torch.inf)
    scores = (q.unsqueeze(-2) * k.unsqueeze(-3) * log_decay.exp()).sum(-1)
    return scores @ v


@pytest.mark.parametrize("C", [2, 8, 32])
def test_overflow_free_intra_chunk_form(C):
    """The binary-tree intra-chunk form against the explicit sum, values and gradients."""
    gen = torch.Generator().manual_seed(C)
    q, k, g = (torch.randn(3, C, 4, generator=gen, dtype=F64) for _ in range(3))
    v = torch.randn(3, C, 2, generator=gen, dtype=F64)
    G = (-0.3 * g.abs()).cumsum(-2)
    inputs = [x.requires_grad_() for x in (q, k, v, G)]
    o, o_ref = _intra_chunk_output(*inputs), naive_intra_chunk(*inputs)
    torch.testing.assert_close(o, o_ref)
    w = torch.randn_like(o)
    grads = torch.autograd.grad((o * w).sum(), inputs)
    for got, want in zip(grads, torch.autograd.grad((o_ref * w).sum(), inputs), strict=True):
        torch.testing.assert_close(got, want)
    if C <= 8:
        assert torch.autograd.gradcheck(_intra_chunk_output, [x[:1] for x in inputs])


def test_steps_match_chunk_and_leave_state_untouched():
    q, k, v, g, s0 = make_inputs(2, 20, 3, 4, 5, 2.0)
    o_chunk, s_chunk = chunk_gla(
        q, k, v, g, initial_state=s0, output_final_state=True, chunk_size=8
    )
    state = s0
    for t in range(20):
        before = state.clone()
        o_t, new_state = gla_step(q[:, t], k[:, t], v[:, t], g[:, t], state)
        assert torch.equal(state, before)
        torch.testing.assert_close(o_t, o_chunk[:, t], rtol=1e-10, atol=1e-10)
        state = new_state
    torch.testing.assert_close(state, s_chunk, rtol=1e-10, atol=1e-10)


def test_chunked_prefill_continues():
    """Two calls carrying the state equal one call over the whole sequence."""
    q, k, v, g, _ = make_inputs(1, 90, 2, 8, 8, 0.5)
    o_full, s_full = chunk_gla(q, k, v, g, output_final_state=True)
    o1, s1 = chunk_gla(q[:, :33], k[:, :33], v[:, :33], g[:, :33], output_final_state=True)
    o2, s2 = chunk_gla(
        q[:, 33:], k[:, 33:], v[:, 33:], g[:, 33:], initial_state=s1, output_final_state=True
    )
    torch.testing.assert_close(torch.cat([o1, o2], dim=1), o_full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s2, s_full, rtol=1e-10, atol=1e-10)


def test_scale_and_low_precision_dtypes():
    q, k, v, g, s0 = make_inputs(1, 30, 2, 4, 4, 1.0)
    o_ref, _ = recurrent_gla(q, k, v, g, scale=0.3, initial_state=s0)
    o, s = chunk_gla(
        q.bfloat16(),
        k.bfloat16(),
        v.bfloat16(),
        g.bfloat16(),
        scale=0.3,
        initial_state=s0.float(),
        output_final_state=True,
        chunk_size=16,
    )
    assert o.dtype == torch.bfloat16 and s.dtype == torch.float32
    assert (o.double() - o_ref).abs().max() < 0.2


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 2),
    T=st.integers(1, 70),
    H=st.integers(1, 2),
    K=st.sampled_from([1, 2, 4, 8]),
    V=st.integers(1, 5),
    chunk_size=st.sampled_from([1, 2, 8, 16, 64]),
    decay=st.floats(0.0, 25.0),
    seed=st.integers(0, 2**16),
)
def test_chunk_matches_recurrent_random_shapes(B, T, H, K, V, chunk_size, decay, seed):
    q, k, v, g, s0 = make_inputs(B, T, H, K, V, decay, seed=seed)
    o_ref, s_ref = recurrent_gla(q, k, v, g, initial_state=s0, output_final_state=True)
    o, s = chunk_gla(q, k, v, g, initial_state=s0, output_final_state=True, chunk_size=chunk_size)
    torch.testing.assert_close(o, o_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(s, s_ref, rtol=1e-9, atol=1e-9)


def test_validation_names_the_argument():
    q, k, v, g, s0 = make_inputs(2, 10, 2, 4, 3, 1.0)
    with pytest.raises(ValueError, match="k must have shape"):
        chunk_gla(q, k[:, :5], v, g)
    with pytest.raises(ValueError, match="v must have shape"):
        chunk_gla(q, k, v[:, :, :1], g)
    with pytest.raises(ValueError, match="g must have shape"):
        recurrent_gla(q, k, v, g[..., 0])
    with pytest.raises(ValueError, match="initial_state must have shape"):
        chunk_gla(q, k, v, g, initial_state=s0[:, :, :2])
    with pytest.raises(ValueError, match="chunk_size must be a power of two"):
        chunk_gla(q, k, v, g, chunk_size=48)
    with pytest.raises(ValueError, match=r"q must have shape \(B, H, K\)"):
        gla_step(q, k, v, g, s0)
    with pytest.raises(ValueError, match="state must have shape"):
        gla_step(q[:, 0], k[:, 0], v[:, 0], g[:, 0], s0[:1])
