"""GLA on rotated q, k == a complex diagonal recurrence, exactly when the pair decays are tied."""

from __future__ import annotations

import torch

from selrope.layers import GatedLinearAttention
from selrope.ops import recurrent_gla
from selrope.rotary import apply_rotary

B, T, H, D, V = 2, 11, 3, 8, 5
R = D // 2


def random_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, T, H, D, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, T, H, V, generator=g, dtype=torch.float64)
    pair_log_decay = -torch.rand(B, T, H, R, generator=g, dtype=torch.float64)
    theta = torch.cumsum(3 * torch.randn(B, T, H, R, generator=g, dtype=torch.float64), dim=1)
    return q, k, v, pair_log_decay, theta


def complex_recurrence(q, k, v, pair_log_decay, theta):
    """H_t = alpha_t e^{i dtheta_t} H_{t-1} + conj(z^k_t) v_t^T, o_t = D^-1/2 Re(z^q_t H_t)."""
    zq = torch.complex(q[..., :R], q[..., R:])
    zk = torch.complex(k[..., :R], k[..., R:])
    state = torch.zeros(B, H, R, V, dtype=torch.complex128)
    previous = torch.zeros(B, H, R, dtype=torch.float64)
    outputs = []
    for t in range(T):
        step = torch.polar(torch.exp(pair_log_decay[:, t]), theta[:, t] - previous)
        previous = theta[:, t]
        state = step[..., None] * state + zk[:, t].conj()[..., None] * v[:, t, :, None, :]
        outputs.append((zq[:, t, :, :, None] * state).sum(2).real * D**-0.5)
    return torch.stack(outputs, dim=1)


def test_tied_gla_on_rotated_qk_is_the_complex_recurrence() -> None:
    q, k, v, pair_log_decay, theta = random_inputs()
    tied = torch.cat([pair_log_decay, pair_log_decay], dim=-1)
    real, _ = recurrent_gla(apply_rotary(q, theta), apply_rotary(k, theta), v, tied)
    torch.testing.assert_close(real, complex_recurrence(q, k, v, pair_log_decay, theta))


def test_constant_angle_offset_cancels_only_with_tied_decays() -> None:
    q, k, v, pair_log_decay, theta = random_inputs(1)
    tied = torch.cat([pair_log_decay, pair_log_decay], dim=-1)
    untied = torch.cat([pair_log_decay, 0.5 * pair_log_decay], dim=-1)
    shifted = theta + 1.234
    for log_decay, invariant in ((tied, True), (untied, False)):
        base, _ = recurrent_gla(apply_rotary(q, theta), apply_rotary(k, theta), v, log_decay)
        moved, _ = recurrent_gla(apply_rotary(q, shifted), apply_rotary(k, shifted), v, log_decay)
        assert torch.allclose(base, moved, atol=1e-10) == invariant


def test_gla_layer_tie_pair_decay_shares_each_pairs_decay() -> None:
    layer = GatedLinearAttention(16, 2, tie_pair_decay=True)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    log_decay = layer.log_decay(torch.randn(2, 5, 16))
    assert log_decay.shape == (2, 5, 2, 8)
    torch.testing.assert_close(log_decay[..., :4], log_decay[..., 4:])
    assert (log_decay <= 0).all()
    untied = GatedLinearAttention(16, 2).log_decay(torch.randn(2, 5, 16))
    assert not torch.allclose(untied[..., :4], untied[..., 4:])


def test_gla_without_decay_is_linear_attention() -> None:
    layer = GatedLinearAttention(16, 2, decay="none")
    assert torch.count_nonzero(layer.log_decay(torch.randn(1, 3, 16))) == 0
