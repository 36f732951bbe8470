"""-inf log decays (a hard reset) in every form of GLA and the gated delta rule; bad decays."""

from __future__ import annotations

import pytest
import torch

from selrope.ops import (
    chunk_gated_delta_rule,
    chunk_gla,
    gated_delta_rule_step,
    gla_step,
    recurrent_gated_delta_rule,
    recurrent_gla,
)
from selrope.ops.recurrence import check_log_decay


def _inputs(per_channel: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    B, T, H, K, V = 2, 19, 2, 4, 3
    q, k = (torch.randn(B, T, H, K, generator=generator, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, T, H, V, generator=generator, dtype=torch.float64)
    shape = (B, T, H, K) if per_channel else (B, T, H)
    g = -torch.rand(shape, generator=generator, dtype=torch.float64)
    g[0, 5] = -torch.inf  # every channel of batch row 0 resets at step 5
    g[1, 11, 0] = -torch.inf  # one head (one channel for GLA) of row 1 at step 11
    beta = torch.rand(B, T, H, generator=generator, dtype=torch.float64)
    k = torch.nn.functional.normalize(k, dim=-1)
    return q, k, v, g, beta


def _loop_gla(q, k, v, g):
    """The float64 recurrence by hand: S = exp(g) S + k v^T, o = K^-1/2 S^T q."""
    B, T, H, K = q.shape
    state = torch.zeros(B, H, K, v.shape[-1], dtype=torch.float64)
    out = []
    for t in range(T):
        state = g[:, t].exp()[..., None] * state + k[:, t, ..., None] * v[:, t, :, None, :]
        out.append(K**-0.5 * torch.einsum("bhk,bhkv->bhv", q[:, t], state))
    return torch.stack(out, dim=1), state


def _loop_gdn(q, k, v, g, beta):
    B, T, H, K = q.shape
    state = torch.zeros(B, H, K, v.shape[-1], dtype=torch.float64)
    out = []
    for t in range(T):
        decayed = g[:, t].exp()[..., None, None] * state
        recalled = torch.einsum("bhk,bhkv->bhv", k[:, t], decayed)
        u = beta[:, t, :, None] * (v[:, t] - recalled)
        state = decayed + k[:, t, ..., None] * u[..., None, :]
        out.append(K**-0.5 * torch.einsum("bhk,bhkv->bhv", q[:, t], state))
    return torch.stack(out, dim=1), state


@pytest.mark.parametrize("chunk_size", [4, 16])
def test_gla_reset_matches_the_float64_loop_in_every_form(chunk_size):
    q, k, v, g, _ = _inputs(per_channel=True)
    want_o, want_s = _loop_gla(q, k, v, g)
    for o, s in (
        recurrent_gla(q, k, v, g, output_final_state=True),
        chunk_gla(q, k, v, g, output_final_state=True, chunk_size=chunk_size),
    ):
        torch.testing.assert_close(o, want_o)
        torch.testing.assert_close(s, want_s)
    state = None
    for t in range(q.shape[1]):
        o, state = gla_step(q[:, t], k[:, t], v[:, t], g[:, t], state)
        torch.testing.assert_close(o, want_o[:, t])
    assert torch.isfinite(want_o).all()


@pytest.mark.parametrize("chunk_size", [4, 16])
def test_gated_delta_rule_reset_matches_the_float64_loop_in_every_form(chunk_size):
    q, k, v, g, beta = _inputs(per_channel=False)
    want_o, want_s = _loop_gdn(q, k, v, g, beta)
    for o, s in (
        recurrent_gated_delta_rule(q, k, v, g, beta, output_final_state=True),
        chunk_gated_delta_rule(q, k, v, g, beta, output_final_state=True, chunk_size=chunk_size),
    ):
        torch.testing.assert_close(o, want_o)
        torch.testing.assert_close(s, want_s)
    state = None
    for t in range(q.shape[1]):
        o, state = gated_delta_rule_step(q[:, t], k[:, t], v[:, t], g[:, t], beta[:, t], state)
        torch.testing.assert_close(o, want_o[:, t])


def test_reset_gradients_are_finite():
    q, k, v, g, _ = _inputs(per_channel=True)
    q.requires_grad_()
    o, _ = chunk_gla(q, k, v, g)
    o.sum().backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.parametrize("bad", [0.5, float("nan"), float("inf")])
def test_positive_or_nan_log_decays_are_refused(bad):
    q, k, v, g, beta = _inputs(per_channel=True)
    g[1, 3, 0, 0] = bad
    for call in (
        lambda: chunk_gla(q, k, v, g),
        lambda: recurrent_gla(q, k, v, g),
        lambda: gla_step(q[:, 3], k[:, 3], v[:, 3], g[:, 3]),
    ):
        with pytest.raises(ValueError, match="g must hold log decays <= 0"):
            call()
    q, k, v, g, beta = _inputs(per_channel=False)
    g[0, 2, 1] = bad
    for call in (
        lambda: chunk_gated_delta_rule(q, k, v, g, beta),
        lambda: recurrent_gated_delta_rule(q, k, v, g, beta),
        lambda: gated_delta_rule_step(q[:, 2], k[:, 2], v[:, 2], g[:, 2], beta[:, 2]),
    ):
        with pytest.raises(ValueError, match="g must hold log decays <= 0"):
            call()


def test_the_decay_check_reads_nothing_back_off_the_cpu():
    # On the meta device any host read (bool(), .item()) raises: the check must run on the
    # device there, as on CUDA, instead of syncing once per chunked call.
    g = (-torch.rand(2, 5, 2, 4)).to("meta")
    assert check_log_decay("g", g) is False
    assert check_log_decay("g", g, exact_resets=True) is False
    # On the CPU the host check stays, with its ValueError and the reset detection.
    cpu = -torch.rand(2, 5, 2, 4)
    assert check_log_decay("g", cpu) is False
    cpu[0, 1, 0, 0] = -torch.inf
    assert check_log_decay("g", cpu) is True
    cpu[0, 2, 0, 0] = 0.5
    with pytest.raises(ValueError, match="g must hold log decays <= 0"):
        check_log_decay("g", cpu)
