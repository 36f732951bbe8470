"""selrope analyze leakage: the rotation kernel, its decay window and rotation recurrences."""

from __future__ import annotations

import math

import pytest
import torch

from selrope.analysis.leakage import (
    frequency_sets,
    readout,
    rotation_recurrence,
    signal_to_interference,
    windowed_kernel,
)


@pytest.mark.parametrize("label", list(frequency_sets()))
def test_kernel_is_one_at_lag_zero_and_the_window_bounds_it(label: str) -> None:
    frequencies = frequency_sets()[label]
    lags = torch.arange(0, 3000, dtype=torch.float64)
    assert float(windowed_kernel(frequencies, lags[:1])) == pytest.approx(1.0)
    for decay in (0.01, 0.1, 1.0):
        windowed = windowed_kernel(frequencies, lags, decay)
        assert float(windowed[0]) == pytest.approx(1.0)
        assert bool((windowed.abs() <= torch.exp(-decay * lags) + 1e-15).all())
    far = windowed_kernel(frequencies, lags[500:]).abs().mean()
    assert far > 0.05  # 16 rotations: the unwindowed kernel does not die out
    assert windowed_kernel(frequencies, lags[500:], 0.01).abs().max() < 1e-2
    with pytest.raises(ValueError, match="decay must be"):
        windowed_kernel(frequencies, lags, -0.1)


def test_recurrence_is_the_sum_of_rotated_decayed_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    values = torch.randn(2, 6, generator=g, dtype=torch.float64)
    omega = torch.tensor([0.0, 0.7, 2.0], dtype=torch.float64)
    states = rotation_recurrence(values, omega, 0.8)
    expected = torch.zeros(2, 6, 3, dtype=torch.complex128)
    for t in range(6):
        for s in range(t + 1):
            expected[:, t] += 0.8 ** (t - s) * torch.exp(1j * omega * (t - s)) * values[:, s, None]
    torch.testing.assert_close(states, expected)
    # The readout recovers x_(t-2) up to the kernel's interference, exactly here with one channel
    # that never rotates and no decay: every past input adds in.
    y = readout(rotation_recurrence(values, omega[:1], 1.0), omega[:1], 1.0, 2)
    torch.testing.assert_close(y, values.cumsum(1))


def test_without_decay_the_readout_drowns_and_with_decay_it_levels_off() -> None:
    g = torch.Generator().manual_seed(0)
    frequencies = frequency_sets()["rfa (half-Cauchy, c = 0.995)"]
    pure, pure_predicted = signal_to_interference(frequencies, 1.0, 400, g, num_sequences=512)
    damped, damped_predicted = signal_to_interference(frequencies, 0.9, 400, g, num_sequences=512)
    # The measurement matches the prediction from K (within Monte Carlo noise, +-25 %).
    for measured, predicted in ((pure, pure_predicted), (damped, damped_predicted)):
        ratio = measured[50:].mean() / predicted[50:].mean()
        assert 0.75 < float(ratio) < 1.25
    assert float(pure_predicted[-1]) < float(pure_predicted[10]) / 5  # falls with t
    assert float(damped_predicted[-1]) == pytest.approx(float(damped_predicted[200]), rel=1e-3)
    assert float(damped_predicted[-1]) > 10 * float(pure_predicted[-1])
    assert math.isfinite(float(pure.min()))
