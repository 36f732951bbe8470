"""Numerical checks of the Selective RoPE paper's theory (research notes B.2, B.3).

1. Softmax attention rotates implicitly. With random Fourier features (Bochner),
   ``exp(q.k) = exp(|q|^2/2) exp(|k|^2/2) E_w[cos(w.q - w.k)]``, w ~ N(0, I): the softmax kernel
   is an average over rotations of a fixed 2-vector by the input-dependent angles ``w.q`` and
   ``w.k``. ``rff_softmax_error`` measures how fast m rotations approach it.
2. Finitely many rotations leak; decay is the window. ``K(lag) = mean_j cos(omega_j lag)`` over
   a finite set of frequencies never decays, however far the lag ("spectral leakage"). The rfa
   frequencies of Selective RoPE are evenly spaced quantiles of a half-Cauchy distribution, whose
   characteristic function is ``exp(-|lag|)``: many rotations = exponential decay. Multiplying
   by a decay window ``exp(-lambda lag)`` (what a GLA/GDN forget gate does) suppresses the
   far-lag error. ``kernel_leakage`` measures both.
"""

from __future__ import annotations

import math

import torch


def half_cauchy_frequencies(num_frequencies: int, c: float = 0.995) -> torch.Tensor:
    """``tan(a_j / 2)`` with ``a = linspace(0, c pi, m)``: Selective RoPE's "rfa" frequencies
    before their rescaling to ``temp_max``; the half-Cauchy quantiles at levels ``j c / (m-1)``.

    Returns ``(m,)`` float64.
    """
    if num_frequencies < 2:
        raise ValueError(f"num_frequencies must be >= 2; got {num_frequencies}")
    if not 0 < c < 1:
        raise ValueError(f"c must be in (0, 1); got {c}")
    return torch.tan(torch.linspace(0, c * math.pi, num_frequencies, dtype=torch.float64) / 2)


def rotation_kernel(frequencies: torch.Tensor, lags: torch.Tensor) -> torch.Tensor:
    """``K(lag) = mean_j cos(frequencies_j * lag)``: the score between two tokens ``lag`` apart
    left by rotations at these frequencies. frequencies ``(m,)``, lags ``(L,)`` -> ``(L,)``."""
    return torch.cos(lags[:, None].double() * frequencies[None, :].double()).mean(dim=1)


def kernel_leakage(
    frequencies: torch.Tensor, lags: torch.Tensor, decay: float = 0.0
) -> torch.Tensor:
    """Mean absolute error of the windowed rotation kernel against ``exp(-(1 + decay) lag)``.

    ``exp(-decay lag) K(lag)`` estimates ``exp(-decay lag) exp(-lag)`` when the frequencies are
    half-Cauchy; the error at large lags is the leakage a decay window suppresses.

    Returns a float64 scalar tensor.
    """
    if decay < 0:
        raise ValueError(f"decay must be >= 0; got {decay}")
    lags = lags.double()
    window = torch.exp(-decay * lags)
    estimate = window * rotation_kernel(frequencies, lags)
    return (estimate - window * torch.exp(-lags)).abs().mean()


def rotation_features(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``phi(x) = m^-1/2 [cos(w_j.x), sin(w_j.x)]_j``: the unit vector (1, 0) of each of m planes
    rotated by the input-dependent angle ``w_j.x`` (random Fourier features).

    x ``(..., dim)``, w ``(m, dim)`` -> ``(..., 2m)``; ``phi(q).phi(k) = mean_j cos(w_j.(q - k))``.
    """
    angles = x @ w.T
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1) / math.sqrt(w.shape[0])


def rff_kernel_estimate(q: torch.Tensor, k: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The random-rotation estimate ``exp(|q|^2/2) exp(|k|^2/2) phi(q).phi(k)`` of ``exp(q.k)``.

    Unbiased over w ~ N(0, I) (Bochner: ``E_w cos(w.(q-k)) = exp(-|q-k|^2/2)``).
    q ``(..., N, dim)``, k ``(..., M, dim)``, w ``(m, dim)`` -> ``(..., N, M)``.
    """
    prefactor = torch.exp(
        q.square().sum(-1).unsqueeze(-1) / 2 + k.square().sum(-1).unsqueeze(-2) / 2
    )
    return prefactor * (rotation_features(q, w) @ rotation_features(k, w).transpose(-1, -2))


def rff_softmax_error(
    dim: int, num_features: int, num_pairs: int, generator: torch.Generator, norm: float = 1.0
) -> float:
    """Mean relative error of the random-rotation estimate of ``exp(q.k)``.

    q, k are random vectors of length ``norm`` in R^dim; the estimate is
    ``exp(|q|^2/2) exp(|k|^2/2) mean_j cos(w_j.q - w_j.k)`` with m = num_features draws
    w_j ~ N(0, I), i.e. a rotation of each of m planes by the angles ``w_j.q`` and ``w_j.k``.
    """
    q = torch.randn(num_pairs, dim, generator=generator, dtype=torch.float64)
    k = torch.randn(num_pairs, dim, generator=generator, dtype=torch.float64)
    q = norm * q / q.norm(dim=1, keepdim=True)
    k = norm * k / k.norm(dim=1, keepdim=True)
    w = torch.randn(num_features, dim, generator=generator, dtype=torch.float64)
    estimate = rff_kernel_estimate(q[:, None], k[:, None], w)[:, 0, 0]
    exact = torch.exp((q * k).sum(dim=1))
    return float(((estimate - exact).abs() / exact).mean())


def theory_report(seed: int = 0) -> str:
    """Both checks as markdown tables (the numbers docs/results.md quotes)."""
    generator = torch.Generator().manual_seed(seed)
    lines = [
        "### Softmax kernel from random rotations (dim 16, |q| = |k| = 1, 2,000 pairs)",
        "",
        "| rotations m | mean relative error |",
        "|---|---|",
    ]
    for m in (8, 32, 128, 512, 2048):
        error = rff_softmax_error(16, m, 2000, generator)
        lines.append(f"| {m} | {error:.4f} |")
    far = torch.arange(5, 200, dtype=torch.float64)
    lines += [
        "",
        "### Rotation kernel leakage at lags 5..199 (half-Cauchy frequencies, c = 0.995)",
        "",
        "| frequencies m | no window | window exp(-0.05 lag) | window exp(-0.2 lag) |",
        "|---|---|---|---|",
    ]
    for m in (16, 64, 256, 1024):
        omega = half_cauchy_frequencies(m)
        cells = [f"{float(kernel_leakage(omega, far, d)):.4f}" for d in (0.0, 0.05, 0.2)]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
