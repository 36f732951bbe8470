"""Packed documents in the ops: chunked == recurrent, and both == each document run alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import selrope.ops.gated_delta_rule as gdr_module
import selrope.ops.gla as gla_module
from selrope.ops import (
    attention_with_cache,
    causal_attention,
    causal_depthwise_conv,
    check_segment_ids,
    chunk_gated_delta_rule,
    chunk_gla,
    positions_in_segment,
    recurrent_gated_delta_rule,
    recurrent_gla,
    reference_attention,
    segment_ids_from_cu_seqlens,
    segment_starts,
)

# Chunk size 4 with T = 19: documents straddle chunk edges, one has length 1, one starts at the
# first position of a chunk (t = 8), the last chunk is padded.
CHUNK = 4
LENGTHS = [3, 5, 1, 6, 4]  # starts at t = 0, 3, 8, 9, 15
LENGTHS_ROW2 = [1, 7, 2, 9]  # starts at t = 0, 1, 8, 10


def packed_ids(*rows: list[int]) -> torch.Tensor:
    """``(len(rows), T)`` segment ids, one row per list of document lengths."""
    return torch.stack(
        [torch.arange(len(r)).repeat_interleave(torch.tensor(r)) for r in rows]
    ).long()


def split(x: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, ...]:
    """A one-row ``(1, T, ...)`` tensor into its documents along time."""
    return x.split(lengths, dim=1)


def gla_inputs(B: int, T: int, H: int = 2, K: int = 4, V: int = 3, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    kw = {"dtype": torch.float64, "generator": gen}
    return {
        "q": torch.randn(B, T, H, K, **kw),
        "k": torch.randn(B, T, H, K, **kw),
        "v": torch.randn(B, T, H, V, **kw),
        "g": F.logsigmoid(torch.randn(B, T, H, K, **kw)),
        "initial_state": torch.randn(B, H, K, V, **kw),
    }


def gdr_inputs(B: int, T: int, H: int = 2, K: int = 4, V: int = 3, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    kw = {"dtype": torch.float64, "generator": gen}
    return {
        "q": torch.randn(B, T, H, K, **kw),
        "k": F.normalize(torch.randn(B, T, H, K, **kw), dim=-1),
        "v": torch.randn(B, T, H, V, **kw),
        "g": F.logsigmoid(torch.randn(B, T, H, **kw)),
        "beta": torch.rand(B, T, H, **kw),
        "initial_state": torch.randn(B, H, K, V, **kw),
    }


OPS = {
    "gla": (chunk_gla, recurrent_gla, gla_inputs),
    "gdr": (chunk_gated_delta_rule, recurrent_gated_delta_rule, gdr_inputs),
}


@pytest.mark.parametrize("op", list(OPS))
def test_chunked_equals_recurrent_values_and_gradients(op: str) -> None:
    chunked, recurrent, make = OPS[op]
    ids = packed_ids(LENGTHS, LENGTHS_ROW2)
    inputs = make(2, ids.shape[1])
    results = []
    for fn, kwargs in ((chunked, {"chunk_size": CHUNK}), (recurrent, {})):
        leaves = {name: x.clone().requires_grad_() for name, x in inputs.items()}
        o, state = fn(**leaves, output_final_state=True, segment_ids=ids, **kwargs)
        weights = torch.randn(o.shape, dtype=o.dtype, generator=torch.Generator().manual_seed(7))
        ((o * weights).sum() + state.square().sum()).backward()
        results.append((o, state, {name: x.grad for name, x in leaves.items()}))
    (o_c, s_c, grads_c), (o_r, s_r, grads_r) = results
    torch.testing.assert_close(o_c, o_r, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(s_c, s_r, atol=1e-10, rtol=1e-10)
    for name in inputs:
        torch.testing.assert_close(grads_c[name], grads_r[name], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_packed_equals_each_document_alone(op: str, form: str) -> None:
    chunked, recurrent, make = OPS[op]
    fn = chunked if form == "chunk" else recurrent
    kwargs = {"chunk_size": CHUNK} if form == "chunk" else {}
    inputs = make(1, sum(LENGTHS))
    initial_state = inputs.pop("initial_state")
    o, state = fn(
        **inputs,
        initial_state=initial_state,
        output_final_state=True,
        segment_ids=packed_ids(LENGTHS),
        **kwargs,
    )
    pieces = zip(*(split(x, LENGTHS) for x in inputs.values()), strict=True)
    expected = []
    for n, piece in enumerate(pieces):
        # The first document continues from the initial state; the others start from zero.
        o_n, state_n = recurrent(
            *piece, initial_state=initial_state if n == 0 else None, output_final_state=True
        )
        expected.append(o_n)
    torch.testing.assert_close(o, torch.cat(expected, dim=1), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(state, state_n, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("op", list(OPS))
def test_one_document_ids_change_nothing(op: str) -> None:
    chunked, _, make = OPS[op]
    inputs = make(2, 11)
    plain, plain_state = chunked(**inputs, output_final_state=True, chunk_size=CHUNK)
    ids = torch.full((2, 11), 5)
    packed, packed_state = chunked(
        **inputs, output_final_state=True, chunk_size=CHUNK, segment_ids=ids
    )
    torch.testing.assert_close(packed, plain, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(packed_state, plain_state, atol=1e-12, rtol=1e-12)


def test_gla_overflow_free_branch_masks_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    # A strong decay sends chunk_gla to the binary-tree intra-chunk form; it must mask too.
    inputs = gla_inputs(2, 19)
    # One key channel decays past the float64 limit (-600 per chunk of 8); the others keep the
    # cross-document pairs that the masks must remove.
    inputs["g"][..., 0] -= 100.0
    ids = packed_ids(LENGTHS, LENGTHS_ROW2)
    called = []
    tree = gla_module._intra_chunk_output
    monkeypatch.setattr(gla_module, "_intra_chunk_output", lambda *a: called.append(1) or tree(*a))
    o, state = chunk_gla(**inputs, output_final_state=True, chunk_size=8, segment_ids=ids)
    o_r, state_r = recurrent_gla(**inputs, output_final_state=True, segment_ids=ids)
    assert called
    torch.testing.assert_close(o, o_r, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(state, state_r, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize(
    ("module", "step_name", "op"),
    [(gla_module, "gla_step", "gla"), (gdr_module, "gated_delta_rule_step", "gdr")],
)
def test_chunked_path_never_steps(
    monkeypatch: pytest.MonkeyPatch, module: object, step_name: str, op: str
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the chunked form must not loop over tokens")

    monkeypatch.setattr(module, step_name, refuse)
    chunked, recurrent, make = OPS[op]
    inputs = make(1, sum(LENGTHS))
    ids = packed_ids(LENGTHS)
    chunked(**inputs, chunk_size=CHUNK, segment_ids=ids)
    with pytest.raises(AssertionError, match="must not loop"):
        recurrent(**inputs, segment_ids=ids)


@pytest.mark.parametrize("attention", [causal_attention, reference_attention])
def test_attention_packed_equals_each_document_alone(attention: object) -> None:
    gen = torch.Generator().manual_seed(3)
    q, k, v = (
        torch.randn(1, sum(LENGTHS), 2, 4, dtype=torch.float64, generator=gen) for _ in "qkv"
    )
    o = attention(q, k, v, segment_ids=packed_ids(LENGTHS))
    alone = [
        reference_attention(*piece)
        for piece in zip(split(q, LENGTHS), split(k, LENGTHS), split(v, LENGTHS), strict=True)
    ]
    torch.testing.assert_close(o, torch.cat(alone, dim=1), atol=1e-12, rtol=1e-12)


def test_attention_with_cache_keeps_cached_keys_in_the_first_document() -> None:
    gen = torch.Generator().manual_seed(4)
    past, T = 5, sum(LENGTHS)
    q, k, v = (torch.randn(1, past + T, 2, 4, dtype=torch.float64, generator=gen) for _ in "qkv")
    o, new_k, new_v = attention_with_cache(
        q[:, past:],
        k[:, past:],
        v[:, past:],
        k[:, :past],
        v[:, :past],
        segment_ids=packed_ids(LENGTHS),
    )
    # Expected: the cached tokens and the first document form one document.
    lengths = [past + LENGTHS[0], *LENGTHS[1:]]
    expected = reference_attention(q, k, v, segment_ids=packed_ids(lengths))[:, past:]
    torch.testing.assert_close(o, expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(new_k, k)
    torch.testing.assert_close(new_v, v)


@pytest.mark.parametrize("activation", [None, "silu"])
def test_short_conv_packed_equals_each_document_alone(activation: str | None) -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, sum(LENGTHS), 3, dtype=torch.float64, generator=gen)
    weight = torch.randn(3, 4, dtype=torch.float64, generator=gen)
    cache = torch.randn(1, 3, 3, dtype=torch.float64, generator=gen)
    y, new_cache = causal_depthwise_conv(
        x, weight, cache, activation, segment_ids=packed_ids(LENGTHS)
    )
    expected = []
    for n, piece in enumerate(split(x, LENGTHS)):
        y_n, cache_n = causal_depthwise_conv(piece, weight, cache if n == 0 else None, activation)
        expected.append(y_n)
    torch.testing.assert_close(y, torch.cat(expected, dim=1), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(new_cache, cache_n, atol=0, rtol=0)


def test_short_conv_cache_of_a_short_last_document_holds_zeros() -> None:
    x = torch.arange(1.0, 7.0, dtype=torch.float64).view(1, 6, 1)
    ids = torch.tensor([[0, 0, 0, 0, 0, 1]])
    _, cache = causal_depthwise_conv(x, torch.ones(1, 4, dtype=torch.float64), segment_ids=ids)
    assert cache.flatten().tolist() == [0.0, 0.0, 6.0]


def test_cu_seqlens_to_segment_ids_and_positions() -> None:
    ids = segment_ids_from_cu_seqlens(torch.tensor([0, 3, 4, 7]), 7)
    assert ids.tolist() == [[0, 0, 0, 1, 2, 2, 2]]
    assert ids.dtype == torch.int64
    assert segment_starts(ids).tolist() == [[True, False, False, True, True, False, False]]
    assert positions_in_segment(ids).tolist() == [[0, 1, 2, 0, 0, 1, 2]]
    offset = torch.tensor([10])
    assert positions_in_segment(ids, offset).tolist() == [[10, 11, 12, 0, 0, 1, 2]]
    # A new document starts wherever the id changes, also back to an id seen before.
    assert positions_in_segment(torch.tensor([[4, 4, 2, 4]])).tolist() == [[0, 1, 0, 0]]


@pytest.mark.parametrize(
    "cu_seqlens",
    [
        torch.tensor([1, 3, 7]),  # does not start at 0
        torch.tensor([0, 3, 6]),  # does not end at T
        torch.tensor([0, 3, 3, 7]),  # empty document
        torch.tensor([0, 5, 3, 7]),  # decreasing
        torch.tensor([0.0, 7.0]),  # float
        torch.tensor([[0, 7]]),  # 2-D
        torch.tensor([0]),  # no document
    ],
)
def test_cu_seqlens_errors(cu_seqlens: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="cu_seqlens"):
        segment_ids_from_cu_seqlens(cu_seqlens, 7)


@pytest.mark.parametrize(
    "segment_ids", [torch.zeros(2, 5), torch.zeros(2, 4, dtype=torch.long), torch.zeros(5).long()]
)
def test_segment_ids_errors(segment_ids: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="segment_ids"):
        check_segment_ids(segment_ids, 2, 5)
    q = torch.zeros(2, 5, 1, 2)
    with pytest.raises(ValueError, match="segment_ids"):
        chunk_gla(q, q, q, q, segment_ids=segment_ids)
    with pytest.raises(ValueError, match="segment_ids"):
        causal_attention(q, q, q, segment_ids=segment_ids)
