"""causal_depthwise_conv / ShortConvolution: values vs a float64 loop, streaming == one pass."""

from __future__ import annotations

import pytest
import torch

from selrope.ops.short_conv import ShortConvolution, causal_depthwise_conv


def reference_conv(x: torch.Tensor, weight: torch.Tensor, activation: str | None) -> torch.Tensor:
    """y[b, t, c] = sum_w weight[c, w] * x[b, t - W + 1 + w, c] (zero before the start)."""
    B, T, C = x.shape
    W = weight.shape[1]
    x64, w64 = x.double(), weight.double()
    y = torch.zeros(B, T, C, dtype=torch.float64)
    for t in range(T):
        for w in range(W):
            source = t - W + 1 + w
            if source >= 0:
                y[:, t] += w64[:, w] * x64[:, source]
    return torch.nn.functional.silu(y) if activation == "silu" else y


@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("width", [1, 2, 4])
def test_matches_float64_loop(activation, width):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 5, generator=g)
    weight = torch.randn(5, width, generator=g)
    y, cache = causal_depthwise_conv(x, weight, activation=activation)
    torch.testing.assert_close(y.double(), reference_conv(x, weight, activation), atol=1e-5, rtol=0)
    assert cache.shape == (2, 5, width - 1)
    torch.testing.assert_close(cache, x[:, 9 - (width - 1) :].transpose(1, 2))


@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("sizes", [[1] * 11, [3, 1, 5, 2], [2, 9]])
def test_streaming_equals_one_pass(activation, sizes):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 11, 4, generator=g)
    conv = ShortConvolution(4, kernel_size=4, activation=activation)
    full, full_cache = conv(x)
    pieces, cache, start = [], None, 0
    for size in sizes:
        previous = None if cache is None else cache.clone()
        y, new_cache = conv(x[:, start : start + size], cache)
        if previous is not None:
            torch.testing.assert_close(cache, previous, atol=0, rtol=0)  # not modified in place
        pieces.append(y)
        cache, start = new_cache, start + size
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-6, rtol=0)
    torch.testing.assert_close(cache, full_cache)


def test_gradcheck():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    cache = torch.randn(1, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: causal_depthwise_conv(*a, activation="silu"), (x, weight, cache)
    )


def test_gradcheck_packed_documents():
    """Taps that cross a document start get no gradient, the cache only the first document's."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    cache = torch.randn(2, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    segment_ids = torch.tensor([[0, 0, 1, 1, 1, 2, 2], [5, 5, 5, 5, 5, 5, 5]])
    assert torch.autograd.gradcheck(
        lambda *a: causal_depthwise_conv(*a, segment_ids=segment_ids), (x, weight, cache)
    )


@pytest.mark.parametrize(
    ("x", "weight", "cache", "match"),
    [
        (torch.randn(2, 5), torch.randn(5, 4), None, r"x must have shape \(B, T, C\)"),
        (torch.randn(1, 5, 3), torch.randn(4, 4), None, r"weight must have shape \(3, W\)"),
        (torch.randn(1, 5, 3), torch.randn(3, 4), torch.randn(1, 3, 2), r"cache must have shape"),
    ],
)
def test_bad_inputs(x, weight, cache, match):
    with pytest.raises(ValueError, match=match):
        causal_depthwise_conv(x, weight, cache)
