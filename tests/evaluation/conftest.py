"""A hand-made token split and a tiny causal stand-in model for the evaluation tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from selrope.data import TokenSplit

EOS = 0


def _make_split(doc_lengths: list[int], vocab_size: int, seed: int = 0) -> TokenSplit:
    """``EOS d1 EOS d2 ... EOS dn EOS`` with random tokens 1..V-1 and documents of the given
    lengths (tokens after the leading EOS)."""
    rng = np.random.default_rng(seed)
    pieces, doc_starts, offset = [], [], 0
    for length in doc_lengths:
        doc_starts.append(offset)
        pieces.append(np.concatenate([[EOS], rng.integers(1, vocab_size, length)]))
        offset += length + 1
    tokens = np.concatenate([*pieces, [EOS]]).astype(np.uint16)
    return TokenSplit(tokens, np.array(doc_starts, dtype=np.int64), EOS, vocab_size)


class PrefixMeanLM(nn.Module):
    """Logits at t read every earlier token of t's document: a running mean of embeddings that
    restarts wherever ``segment_ids`` changes (no ids: one document per row)."""

    def __init__(self, vocab_size: int, dim: int = 8, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.embedding = nn.Parameter(torch.randn(vocab_size, dim, generator=generator))
        self.head = nn.Parameter(torch.randn(dim, vocab_size, generator=generator))
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None, bool]] = []

    def forward(self, input_ids, cache=None, use_cache=False, cu_seqlens=None, segment_ids=None):
        self.calls.append((input_ids.clone(), segment_ids, self.training))
        h = self.embedding[input_ids]  # (B, T, d)
        if segment_ids is None:
            segment_ids = torch.zeros_like(input_ids)
        means = torch.empty_like(h)
        for row in range(input_ids.shape[0]):
            _, counts = torch.unique_consecutive(segment_ids[row], return_counts=True)
            start = 0
            for count in counts.tolist():
                piece = h[row, start : start + count]
                steps = torch.arange(1, count + 1, dtype=h.dtype)[:, None]
                means[row, start : start + count] = piece.cumsum(0) / steps
                start += count
        return torch.tanh(means + h) @ self.head


@pytest.fixture
def make_split():
    return _make_split


@pytest.fixture
def stand_in_model():
    return PrefixMeanLM
