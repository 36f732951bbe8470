"""PoPE in the whole model: its q and k are twice the head width, so only softmax attention and
FoX take it; there it decodes, packs and pads exactly like every other rotary embedding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_model

from selrope.layers import Attention
from selrope.models import LMConfig
from selrope.rotary import PoPE

POPE = {"type": "pope"}
MIXERS = ["attention", "fox", "alibi"]


def random_ids(B: int, T: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 23, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mixer", MIXERS)
def test_parallel_equals_prefill_then_steps_and_packed_equals_alone(mixer: str) -> None:
    model = tiny_model(mixer, POPE)
    ids = random_ids(2, 17, 1)
    with torch.no_grad():
        full = model(ids)
        logits, cache = model(ids[:, :6], use_cache=True)
        steps = [logits]
        for t in range(6, 17):
            logits, cache = model(ids[:, t : t + 1], cache)
            steps.append(logits)
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
        row = random_ids(1, 12, 2)
        packed = model(row, cu_seqlens=torch.tensor([0, 5, 12]))
        alone = torch.cat([model(row[:, :5]), model(row[:, 5:])], dim=1)
        torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)


def test_left_padded_batch_equals_each_row_alone() -> None:
    model = tiny_model("attention", POPE)
    rows = [random_ids(1, n, n)[0] for n in (4, 9)]
    ids = torch.zeros(2, 9, dtype=torch.int64)
    mask = torch.zeros(2, 9, dtype=torch.int64)
    for b, row in enumerate(rows):
        ids[b, 9 - len(row) :], mask[b, 9 - len(row) :] = row, 1
    with torch.no_grad():
        logits = model(ids, attention_mask=mask)
        for b, row in enumerate(rows):
            got = logits[b, mask[b].bool()]
            torch.testing.assert_close(got, model(row[None])[0], atol=1e-5, rtol=1e-5)
    batched = model.generate(ids, 5, attention_mask=mask)
    for b, row in enumerate(rows):
        assert torch.equal(batched[b, 9:], model.generate(row[None], 5)[0, len(row) :])


def test_attention_scale_is_that_of_the_head_dim_not_of_the_wider_q() -> None:
    # The score q_rot . k_rot / sqrt(D): D of the head, though q_rot is 2D wide.
    torch.manual_seed(0)
    layer = Attention(16, 2, POPE)
    assert isinstance(layer.rotary, PoPE)
    x = torch.randn(1, 6, 16)
    q, k, v, _ = layer.rotated_qkv(x, None)
    assert q.shape == (1, 6, 2, 16)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / 8**0.5
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    weights = scores.masked_fill(~causal, -torch.inf).softmax(-1)
    expected = torch.einsum("bhij,bjhd->bihd", weights, v).reshape(1, 6, 16)
    got, _ = layer(x)
    torch.testing.assert_close(got, F.linear(expected, layer.o_proj.weight), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    ("mixer", "described"),
    [
        ("gla", "got gla"),
        ("gdn", "got gdn"),
        ({"kind": "attention", "relative_positions": "cope"}, "got attention with cope"),
        ({"kind": "fox", "relative_positions": "path"}, "got fox with path"),
    ],
)
def test_pope_is_refused_by_mixers_of_fixed_key_width(mixer, described: str) -> None:
    message = f"rotary pope .* needs mixer attention or fox.*{described}"
    with pytest.raises(ValueError, match=message):
        LMConfig(vocab_size=8, d_model=16, n_heads=2, mixer=mixer, rotary=POPE)
