"""selrope analyze rff: the random-rotation estimate of the softmax kernel and attention."""

from __future__ import annotations

import math

import torch

from selrope.analysis.rff import (
    RECALL_KEYS,
    attention_maps,
    attention_weight_errors,
    error_curves,
    normalised_weights,
    on_sphere,
    recall_input,
    recall_scores,
)
from selrope.analysis.theory import rff_kernel_estimate, rotation_features


def test_rotation_features_give_the_cosine_kernel() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 5, generator=g, dtype=torch.float64)
    k = torch.randn(4, 5, generator=g, dtype=torch.float64)
    w = torch.randn(7, 5, generator=g, dtype=torch.float64)
    features = rotation_features(q, w) @ rotation_features(k, w).T
    expected = torch.cos((q[:, None, :] - k[None, :, :]) @ w.T).mean(-1)
    torch.testing.assert_close(features, expected)
    assert rotation_features(q, w).shape == (3, 14)


def test_the_estimate_is_unbiased() -> None:
    """The average of many one-feature estimates is exp(q.k) for several norms."""
    g = torch.Generator().manual_seed(1)
    for norm in (0.5, 1.0, 1.5):
        q, k = on_sphere(1, 8, norm, g), on_sphere(1, 8, norm, g)
        w = torch.randn(400_000, 8, generator=g, dtype=torch.float64)
        estimate = float(rff_kernel_estimate(q, k, w))
        exact = math.exp(float(q @ k.T))
        # Monte Carlo std of the mean: about exp(|q - k|^2 / 2) / sqrt(2 * 400,000) relative.
        assert abs(estimate / exact - 1) < 0.02, (norm, estimate, exact)


def test_errors_shrink_like_one_over_root_m() -> None:
    g = torch.Generator().manual_seed(0)
    kernel, weights = error_curves(g, norms=(0.5, 1.0), feature_counts=(16, 4096), num_pairs=400)
    # m^-1/2 predicts 16x between m = 16 and 4096; Monte Carlo noise allows a wide margin.
    assert (kernel[:, 1] < kernel[:, 0] / 6).all(), kernel
    assert (weights[:, 1] < weights[:, 0] / 6).all(), weights
    assert (kernel[1] > kernel[0]).all()  # larger norms, larger errors


def test_the_same_seed_gives_the_same_numbers() -> None:
    curves = [error_curves(torch.Generator().manual_seed(5), (1.0,), (8, 32), 50) for _ in "ab"]
    torch.testing.assert_close(curves[0], curves[1], rtol=0, atol=0)
    inputs = [recall_input(torch.Generator().manual_seed(5)) for _ in "ab"]
    torch.testing.assert_close(inputs[0].q, inputs[1].q, rtol=0, atol=0)


def test_attention_rows_approach_softmax_with_many_features() -> None:
    g = torch.Generator().manual_seed(2)
    q, k = on_sphere(4, 16, 0.5, g), on_sphere(6, 16, 0.5, g)
    many = attention_weight_errors(q, k, torch.randn(50_000, 16, generator=g, dtype=torch.float64))
    assert many.shape == (4,) and float(many.max()) < 0.01


def test_normalised_weights_sum_to_one_and_respect_the_mask() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
    mask = torch.tensor([[True, False, False], [True, True, False]])
    weights = normalised_weights(scores, mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, dtype=torch.float64))
    assert weights[0, 1] == 0 and weights[1, 2] == 0
    torch.testing.assert_close(weights[1, :2], torch.tensor([4 / 9, 5 / 9], dtype=torch.float64))


def test_recall_maps_converge_to_softmax_with_more_features() -> None:
    g = torch.Generator().manual_seed(0)
    data = recall_input(g)
    assert data.q.shape == (2 * RECALL_KEYS, 16)
    torch.testing.assert_close(data.q[RECALL_KEYS:], data.k[data.target])
    maps = attention_maps(data, g, (4, 8192))
    assert set(maps) == {"softmax", "RFF m=4", "RFF m=8192", "linear elu+1"}
    for weights in maps.values():
        assert weights.shape == (RECALL_KEYS, 2 * RECALL_KEYS)
        torch.testing.assert_close(weights.sum(-1), torch.ones(RECALL_KEYS, dtype=torch.float64))
        assert bool((weights.triu(RECALL_KEYS + 1) == 0).all())  # causal
    scores = recall_scores(maps, data.target)
    assert scores["softmax"][0] == 1.0 and scores["softmax"][2] == 0.0
    assert scores["RFF m=8192"][2] < scores["RFF m=4"][2]
    assert scores["RFF m=8192"][2] < 0.3
