"""Padding masks in the ops: pads become documents of their own (segment_ids_from_attention_mask),
and a KV cache's ``cache_visible`` hides its pads from later tokens (plain attention and FoX)."""

from __future__ import annotations

import pytest
import torch

from selrope.ops import (
    attention_with_cache,
    forgetting_attention_with_cache,
    reference_attention,
    reference_forgetting_attention,
    segment_ids_from_attention_mask,
)
from selrope.ops.attention_common import visible_keys


def test_pads_become_documents_of_their_own() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]])
    ids = segment_ids_from_attention_mask(mask)
    assert ids.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 0], [0, 1, 1, 2, 2]]
    # With packed documents: pads between documents are fine, each run is its own document.
    packed = torch.tensor([[0, 0, 0, 1, 1, 1]])
    both = segment_ids_from_attention_mask(torch.tensor([[1, 1, 0, 0, 1, 1]]), packed)
    assert both.tolist() == [[0, 0, 1, 2, 3, 3]]


@pytest.mark.parametrize(
    ("mask", "match"),
    [
        (torch.tensor([[1, 0, 1]]), "pads between real tokens of one document"),
        (torch.tensor([[1, 2, 1]]), "0/1 integers"),
        (torch.tensor([[1.0, 1.0]]), "0/1 integers"),
        (torch.tensor([1, 1]), r"\(B, T\)"),
    ],
)
def test_bad_masks_raise(mask: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        segment_ids_from_attention_mask(mask)


@pytest.mark.parametrize("op", ["attention", "fox"])
def test_cached_pads_stay_invisible_to_later_tokens(op: str) -> None:
    gen = torch.Generator().manual_seed(0)
    B, T, H, D, pads, steps = 2, 9, 2, 4, (5, 0), 3
    q, k, v = (torch.randn(B, T + steps, H, D, dtype=torch.float64, generator=gen) for _ in "qkv")
    log_forget = -torch.rand(B, T + steps, H, dtype=torch.float64, generator=gen)
    mask = torch.ones(B, T, dtype=torch.int64)
    mask[0, : pads[0]] = 0
    segment_ids = segment_ids_from_attention_mask(mask)

    def run(sl, cache, segments, visible):
        gates = (log_forget[:, sl],) if op == "fox" else ()
        fn = forgetting_attention_with_cache if op == "fox" else attention_with_cache
        o, *new = fn(
            q[:, sl],
            k[:, sl],
            v[:, sl],
            *gates,
            *cache,
            segment_ids=segments,
            cache_visible=visible,
        )
        return o, new

    _, cache = run(slice(0, T), (), segment_ids, None)
    visible = visible_keys(None, segment_ids, 0, T, q.device)
    assert visible.tolist()[0] == [False] * pads[0] + [True] * (T - pads[0])
    outputs = []
    for t in range(T, T + steps):
        o, cache = run(slice(t, t + 1), cache, None, visible)
        visible = visible_keys(visible, None, cache[0].shape[1] - 1, 1, q.device)
        outputs.append(o)
    for b in range(B):
        real = slice(pads[b], T + steps)
        if op == "fox":
            expected = reference_forgetting_attention(
                q[b : b + 1, real],
                k[b : b + 1, real],
                v[b : b + 1, real],
                log_forget[b : b + 1, real],
            )
        else:
            expected = reference_attention(
                q[b : b + 1, real], k[b : b + 1, real], v[b : b + 1, real]
            )
        torch.testing.assert_close(
            torch.cat(outputs, 1)[b], expected[0, -steps:], atol=1e-12, rtol=1e-12
        )


def test_cache_visible_is_checked() -> None:
    q = torch.randn(1, 1, 2, 4)
    with pytest.raises(ValueError, match="cache_visible must be a bool tensor"):
        attention_with_cache(
            q,
            q,
            q,
            q.expand(1, 3, 2, 4),
            q.expand(1, 3, 2, 4),
            cache_visible=torch.ones(1, 2, dtype=torch.bool),
        )
