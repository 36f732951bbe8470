"""Theory checks: softmax as random rotations, rotation-kernel leakage and the decay window."""

from __future__ import annotations

import math

import pytest
import torch

from selrope.analysis.theory import (
    half_cauchy_frequencies,
    kernel_leakage,
    rff_softmax_error,
    rotation_kernel,
    theory_report,
)
from selrope.rotary import rfa_frequencies


def test_half_cauchy_frequencies_are_the_rfa_frequencies_up_to_scale() -> None:
    raw = half_cauchy_frequencies(16, c=0.9)
    assert raw[0] == 0 and bool((raw.diff() > 0).all())
    scaled = rfa_frequencies(32, 0.9, temp_max=0.25).double()
    torch.testing.assert_close(scaled, 0.25 * raw / raw[-1], rtol=1e-5, atol=1e-7)


def test_many_half_cauchy_rotations_give_exponential_decay() -> None:
    lags = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    kernel = rotation_kernel(half_cauchy_frequencies(1024), lags)
    torch.testing.assert_close(kernel, torch.exp(-lags), atol=3e-3, rtol=0)


def test_finite_rotations_leak_and_a_decay_window_suppresses_it() -> None:
    far = torch.arange(5, 200, dtype=torch.float64)
    few = half_cauchy_frequencies(16)
    leak = kernel_leakage(few, far)
    assert leak > 0.02  # 16 rotations: the far-lag kernel does not vanish
    assert kernel_leakage(few, far, decay=0.2) < leak / 10
    assert kernel_leakage(half_cauchy_frequencies(1024), far) < leak / 5


def test_random_rotations_approach_the_softmax_kernel() -> None:
    g = torch.Generator().manual_seed(0)
    coarse = rff_softmax_error(16, 32, 2000, g)
    fine = rff_softmax_error(16, 2048, 2000, g)
    assert fine < coarse / 4  # Monte Carlo: error ~ m^-1/2, so about 8x between m = 32 and 2048
    assert fine < 0.05


def test_report_and_bad_arguments() -> None:
    report = theory_report()
    assert report.count("| rotations m |") == 1 and "| 2048 |" in report and "| 1024 |" in report
    with pytest.raises(ValueError, match="num_frequencies"):
        half_cauchy_frequencies(1)
    with pytest.raises(ValueError, match="c must be in"):
        half_cauchy_frequencies(8, c=1.0)
    with pytest.raises(ValueError, match="decay must be"):
        kernel_leakage(half_cauchy_frequencies(8), torch.arange(3.0), decay=-1)
    assert math.isfinite(float(kernel_leakage(half_cauchy_frequencies(8), torch.arange(3.0))))
