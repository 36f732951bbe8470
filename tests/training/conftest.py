"""Stand-ins for the task data and the LanguageModel, small enough to train in a second."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from torch import nn


@dataclass
class ToyTaskData:
    """The TaskData attributes the trainer reads."""

    name: str
    vocab_size: int
    train: tuple[torch.Tensor, torch.Tensor]
    tests: dict[int, tuple[torch.Tensor, torch.Tensor]]
    train_length: int
    params: dict = field(default_factory=dict)


def parity_split(rows: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Bits in, running parity out; the first target is ignored (-100)."""
    inputs = torch.randint(0, 2, (rows, length), generator=generator)
    targets = inputs.cumsum(dim=1) % 2
    targets[:, 0] = -100
    return inputs, targets


def make_parity_task(train_rows: int = 96, train_len: int = 8) -> ToyTaskData:
    generator = torch.Generator().manual_seed(1234)
    return ToyTaskData(
        name="parity",
        vocab_size=2,
        train=parity_split(train_rows, train_len, generator),
        tests={n: parity_split(40, n, generator) for n in (train_len, 2 * train_len)},
        train_length=train_len,
    )


class TinyRecurrentLM(nn.Module):
    """Embedding -> dropout -> causal GRU -> norm -> linear head; returns (logits, None)."""

    def __init__(self, vocab_size: int = 2, dim: int = 16, dropout: float = 0.1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.GRU(dim, dim, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, input_ids: torch.Tensor):
        hidden, _ = self.rnn(self.drop(self.embed(input_ids)))
        return self.head(self.norm(hidden)), None


@pytest.fixture
def parity_task() -> ToyTaskData:
    return make_parity_task()


@pytest.fixture
def make_model():
    """Factory: a TinyRecurrentLM initialised from a fixed seed (the global RNG is reseeded)."""

    def make(seed: int = 0, **kwargs) -> TinyRecurrentLM:
        torch.manual_seed(seed)
        return TinyRecurrentLM(**kwargs)

    return make
