"""chunk / recurrent / step forms of the gated delta rule agree on values and gradients."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from selrope.ops import chunk_gated_delta_rule, gated_delta_rule_step, recurrent_gated_delta_rule

F64 = torch.float64


def make_inputs(B, T, H, K, V, decay, seed=0, dtype=F64, requires_grad=False):
    """Random q, unit-norm k (as the layer feeds them), v, g in [-decay, 0], beta, a state."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen, dtype=dtype)
    k = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=dtype), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen, dtype=dtype)
    g = -decay * torch.rand(B, T, H, generator=gen, dtype=dtype)
    beta = torch.rand(B, T, H, generator=gen, dtype=dtype)
    s0 = torch.randn(B, H, K, V, generator=gen, dtype=dtype)
    return [x.requires_grad_(requires_grad) for x in (q, k, v, g, beta, s0)]


CASES = [
    (1, 64, 1.0),
    (37, 16, 1.0),
    (100, 64, 0.05),
    (130, 16, 5.0),
    (64, 64, 20.0),
    (50, 7, 1.0),
]


@pytest.mark.parametrize(("T", "chunk_size", "decay"), CASES)
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_matches_recurrent_float64(T, chunk_size, decay, with_state):
    q, k, v, g, beta, s0 = make_inputs(2, T, 3, 8, 5, decay)
    s0 = s0 if with_state else None
    o_ref, s_ref = recurrent_gated_delta_rule(
        q, k, v, g, beta, initial_state=s0, output_final_state=True
    )
    o, s = chunk_gated_delta_rule(
        q, k, v, g, beta, initial_state=s0, output_final_state=True, chunk_size=chunk_size
    )
    assert o.dtype == F64 and s.dtype == F64
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    torch.testing.assert_close(o, o_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)


def test_final_state_only_when_asked():
    q, k, v, g, beta, _ = make_inputs(1, 10, 1, 4, 4, 1.0)
    assert chunk_gated_delta_rule(q, k, v, g, beta)[1] is None
    assert recurrent_gated_delta_rule(q, k, v, g, beta)[1] is None


@pytest.mark.parametrize("decay", [0.5, 20.0])
def test_float32_is_finite_and_accurate(decay):
    q, k, v, g, beta, s0 = make_inputs(2, 200, 2, 16, 8, decay)
    o_ref, _ = recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=s0)
    o, s = chunk_gated_delta_rule(
        *(x.float() for x in (q, k, v, g, beta)), initial_state=s0.float(), output_final_state=True
    )
    assert o.dtype == torch.float32 and s.dtype == torch.float32
    assert torch.isfinite(o).all()
    torch.testing.assert_close(o.double(), o_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("T", "chunk_size", "decay"), [(45, 16, 1.0), (70, 32, 20.0)])
def test_gradients_match_recurrent(T, chunk_size, decay):
    inputs = make_inputs(2, T, 2, 4, 3, decay, requires_grad=True)
    w_o = torch.randn(2, T, 2, 3, dtype=F64)
    w_s = torch.randn(2, 2, 4, 3, dtype=F64)

    def grads(fn, **kw):
        *args, s0 = inputs
        o, s = fn(*args, initial_state=s0, output_final_state=True, **kw)
        return torch.autograd.grad((o * w_o).sum() + (s * w_s).sum(), inputs)

    got_all = grads(chunk_gated_delta_rule, chunk_size=chunk_size)
    for got, want in zip(got_all, grads(recurrent_gated_delta_rule), strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_gradcheck_chunk():
    q, k, v, g, beta, s0 = make_inputs(1, 7, 1, 3, 2, 1.0, requires_grad=True)

    def fn(q, k, v, g, beta, s0):
        return chunk_gated_delta_rule(
            q, k, v, g, beta, initial_state=s0, output_final_state=True, chunk_size=4
        )

    assert torch.autograd.gradcheck(fn, (q, k, v, g, beta, s0))


def test_steps_match_chunk_and_leave_state_untouched():
    q, k, v, g, beta, s0 = make_inputs(2, 20, 3, 4, 5, 2.0)
    o_chunk, s_chunk = chunk_gated_delta_rule(
        q, k, v, g, beta, initial_state=s0, output_final_state=True, chunk_size=8
    )
    state = s0
    for t in range(20):
        before = state.clone()
        o_t, new_state = gated_delta_rule_step(
            q[:, t], k[:, t], v[:, t], g[:, t], beta[:, t], state
        )
        assert torch.equal(state, before)
        torch.testing.assert_close(o_t, o_chunk[:, t], rtol=1e-10, atol=1e-10)
        state = new_state
    torch.testing.assert_close(state, s_chunk, rtol=1e-10, atol=1e-10)


def test_step_is_the_delta_rule():
    """beta = 1, no decay, unit key: the state then recalls exactly v for k."""
    q, k, v, g, beta, s0 = make_inputs(1, 1, 2, 4, 3, 0.0)
    _, state = gated_delta_rule_step(
        q[:, 0], k[:, 0], v[:, 0], g[:, 0], torch.ones_like(beta[:, 0]), s0
    )
    recalled = torch.einsum("bhk,bhkv->bhv", k[:, 0], state)
    torch.testing.assert_close(recalled, v[:, 0])


def test_chunked_prefill_continues():
    q, k, v, g, beta, _ = make_inputs(1, 90, 2, 8, 8, 0.5)
    o_full, s_full = chunk_gated_delta_rule(q, k, v, g, beta, output_final_state=True)
    first = [x[:, :33] for x in (q, k, v, g, beta)]
    rest = [x[:, 33:] for x in (q, k, v, g, beta)]
    o1, s1 = chunk_gated_delta_rule(*first, output_final_state=True)
    o2, s2 = chunk_gated_delta_rule(*rest, initial_state=s1, output_final_state=True)
    torch.testing.assert_close(torch.cat([o1, o2], dim=1), o_full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s2, s_full, rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 2),
    T=st.integers(1, 70),
    H=st.integers(1, 2),
    K=st.sampled_from([1, 2, 4, 8]),
    V=st.integers(1, 5),
    chunk_size=st.sampled_from([1, 3, 8, 16, 64]),
    decay=st.floats(0.0, 25.0),
    seed=st.integers(0, 2**16),
)
def test_chunk_matches_recurrent_random_shapes(B, T, H, K, V, chunk_size, decay, seed):
    q, k, v, g, beta, s0 = make_inputs(B, T, H, K, V, decay, seed=seed)
    o_ref, s_ref = recurrent_gated_delta_rule(
        q, k, v, g, beta, initial_state=s0, output_final_state=True
    )
    o, s = chunk_gated_delta_rule(
        q, k, v, g, beta, initial_state=s0, output_final_state=True, chunk_size=chunk_size
    )
    torch.testing.assert_close(o, o_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(s, s_ref, rtol=1e-9, atol=1e-9)


def test_validation_names_the_argument():
    q, k, v, g, beta, s0 = make_inputs(2, 10, 2, 4, 3, 1.0)
    with pytest.raises(ValueError, match="k must have shape"):
        chunk_gated_delta_rule(q, k[..., :2], v, g, beta)
    with pytest.raises(ValueError, match="g must have shape"):
        chunk_gated_delta_rule(q, k, v, g.unsqueeze(-1), beta)
    with pytest.raises(ValueError, match="beta must have shape"):
        recurrent_gated_delta_rule(q, k, v, g, beta[:1])
    with pytest.raises(ValueError, match="initial_state must have shape"):
        chunk_gated_delta_rule(q, k, v, g, beta, initial_state=s0[..., :1])
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=0)
    with pytest.raises(ValueError, match="beta must have shape"):
        gated_delta_rule_step(q[:, 0], k[:, 0], v[:, 0], g[:, 0], beta, s0)
