"""Bad inputs to the embeddings raise errors naming the argument and the expected shape."""

from __future__ import annotations

import pytest
import torch

from selrope.rotary import (
    CARoPE,
    CARoPEState,
    NoPE,
    RoPE,
    RoPEState,
    SelectiveRoPE,
    SelectiveRoPEConfig,
    SelectiveRoPEState,
)

B, T, H, D, d = 2, 3, 2, 8, 16
EMBEDDINGS = {
    "nope": NoPE(),
    "rope": RoPE(D),
    "carope": CARoPE(H, D, d),
    "selective": SelectiveRoPE(H, D, d),
}


def _good():
    return torch.randn(B, T, H, D), torch.randn(B, T, H, D), torch.randn(B, T, d)


@pytest.mark.parametrize("name", list(EMBEDDINGS))
@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda q, k, x: (q[0], k[0], x), ValueError, r"q must have shape \(B, T, "),
        (lambda q, k, x: (q[..., :7], k[..., :7], x), ValueError, r"q must have shape .*D even"),
        (
            lambda q, k, x: (q, k[:, :2], x),
            ValueError,
            r"k must have the shape of q \(2, 3, 2, 8\)",
        ),
        (lambda q, k, x: (q, k, x[:, :2]), ValueError, r"x must have shape \(B, T, d\) = \(2, 3, "),
        (lambda q, k, x: (q, k, x[0]), ValueError, "x must have shape"),
        (lambda q, k, x: (q.long(), k.long(), x), TypeError, "q must be a floating-point tensor"),
        (lambda q, k, x: (q, k, x.int()), TypeError, "x must be a floating-point tensor"),
        (lambda q, k, x: (q, k.double(), x), TypeError, "k must have the dtype of q"),
    ],
)
def test_bad_shapes_and_dtypes(name, change, error, match):
    with pytest.raises(error, match=match):
        EMBEDDINGS[name](*change(*_good()))


@pytest.mark.parametrize("name", ["carope", "selective"])
def test_wrong_heads_or_model_dim(name):
    q, k, x = _good()
    with pytest.raises(ValueError, match=r"q must have shape \(B, T, 2, 8\)"):
        EMBEDDINGS[name](q[:, :, :1], k[:, :, :1], x)
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, d\) = \(2, 3, 16\)"):
        EMBEDDINGS[name](q, k, x[..., :8])


@pytest.mark.parametrize(
    ("name", "state", "error", "match"),
    [
        (
            "rope",
            RoPEState(torch.zeros(3, dtype=torch.int64)),
            ValueError,
            r"state.offset must have shape \(2,\)",
        ),
        ("rope", RoPEState(torch.zeros(2)), TypeError, "state.offset must have dtype torch.int64"),
        ("rope", (1, 2), ValueError, "state.offset must have shape"),
        (
            "carope",
            CARoPEState(torch.zeros(2, 2, 3, dtype=torch.float64)),
            ValueError,
            r"state.phase must have shape \(2, 2, 4\)",
        ),
        (
            "carope",
            CARoPEState(torch.zeros(2, 2, 4)),
            TypeError,
            "state.phase must have dtype torch.float64",
        ),
        (
            "selective",
            SelectiveRoPEState(torch.zeros(2, 2, 4, dtype=torch.float64), torch.zeros(2, 8, 2)),
            ValueError,
            r"state.conv_cache must have shape \(2, 8, 3\)",
        ),
        (
            "selective",
            SelectiveRoPEState(torch.zeros(1, 2, 4, dtype=torch.float64), torch.zeros(2, 8, 3)),
            ValueError,
            r"state.phase must have shape \(2, 2, 4\)",
        ),
        (
            "nope",
            RoPEState(torch.zeros(2, dtype=torch.int64)),
            ValueError,
            "state must be None for NoPE",
        ),
    ],
)
def test_bad_states(name, state, error, match):
    with pytest.raises(error, match=match):
        EMBEDDINGS[name](*_good(), state)


def test_skip_conv_state_holds_the_previous_projection():
    module = SelectiveRoPE(H, D, d, SelectiveRoPEConfig(skip_conv=True))
    _, _, state = module(*_good())
    assert state.conv_cache.shape == (B, H * D // 2, 1)
    with pytest.raises(ValueError, match=r"state.conv_cache must have shape \(2, 8, 1\)"):
        module(*_good(), state._replace(conv_cache=torch.zeros(B, 8, 3)))
