"""The shared data contract of every synthetic task, and the random-number plumbing.

Every generator in `selrope.tasks` returns LongTensors `(inputs, targets)` of shape `(N, L)`
aligned for a causal model: the model predicts `targets[:, t]` from `inputs[:, :t+1]`, and
`targets == IGNORE_INDEX` (-100) marks positions without a loss. Next-token tasks apply the shift
inside the generator; tagging tasks (state tracking) have none.

Randomness: generators take a `seed` that may be an int, a `numpy.random.Generator` or a
`torch.Generator`, and draw only from a private `numpy.random.Generator` built from it. They never
read or advance the global torch / numpy / python RNGs. Their output is a function of the seed
and the parameters alone, the same on every machine: orderings come from stable sorts
(`kind="stable"`), never from `argpartition` or another order numpy leaves unspecified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

IGNORE_INDEX = -100
"""The target of positions that are not scored (the cross-entropy's ignore_index)."""

Seed = int | np.random.Generator | torch.Generator


class Batch(NamedTuple):
    """Rows of a data set, ready for a causal model.

    inputs: ``(B, T)`` int64 token ids.
    targets: ``(B, T)`` int64; ``targets[:, t]`` is predicted from ``inputs[:, :t+1]``,
        IGNORE_INDEX where nothing is scored.
    segment_ids: ``(B, T)`` int64 document index of each token for packed rows (a document
        starts where the id changes; the model keeps documents apart), or None.
    """

    inputs: Tensor
    targets: Tensor
    segment_ids: Tensor | None = None


@runtime_checkable
class BatchSource(Protocol):
    """A data set of ``num_rows`` rows of length ``seq_len`` that can be read row by row.

    In-memory task tensors (:class:`TensorBatches`) and token streams of a prepared corpus
    (``selrope.tasks.language_modeling.CorpusWindows``) both implement it; the trainer and the
    evaluation read nothing else.
    """

    num_rows: int
    seq_len: int

    def rows(self, indices: Tensor) -> Batch:
        """The rows ``indices`` ``(B,)`` int64 as one :class:`Batch`."""
        ...


class TensorBatches:
    """A :class:`BatchSource` over in-memory ``(inputs, targets)`` LongTensors of shape (N, L)."""

    def __init__(self, inputs: Tensor, targets: Tensor):
        if inputs.dim() != 2 or inputs.shape != targets.shape:
            raise ValueError(
                f"inputs and targets must have one shape (N, L); got {tuple(inputs.shape)} "
                f"and {tuple(targets.shape)}"
            )
        self.inputs, self.targets = inputs, targets
        self.num_rows, self.seq_len = inputs.shape

    def rows(self, indices: Tensor) -> Batch:
        return Batch(self.inputs[indices], self.targets[indices])


def as_batch_source(split: tuple[Tensor, Tensor] | BatchSource) -> BatchSource:
    """A task split as a :class:`BatchSource` (an ``(inputs, targets)`` pair is wrapped)."""
    if isinstance(split, BatchSource):
        return split
    return TensorBatches(*split)


@dataclass
class TaskData:
    """A task's training set and its test sets, ready for a model.

    Attributes:
        name: "state_tracking", "mqar", "copying", "mad_<task>" or "lm".
        vocab_size: the embedding / output size a model needs (all token ids are < vocab_size).
        train: (inputs, targets), LongTensors of shape (N, L) with targets -100 where ignored, or
            any :class:`BatchSource` (a corpus).
        tests: test sets keyed by test length (word length for state tracking, sequence length
            for MQAR, MAD and language modelling, string length for copying); each value is like
            `train`.
        train_length: the longest training length, in the unit of the test keys (state tracking:
            the longest word; copying: `max_len`, the longest string). The result rows report it,
            and early stopping watches the test set of this length when there is one
            (`selrope.training.main_test_length`).
        params: the generator's resolved parameters (JSON-serialisable), defaults included.
    """

    name: str
    vocab_size: int
    train: tuple[Tensor, Tensor] | BatchSource
    tests: dict[int, tuple[Tensor, Tensor] | BatchSource]
    train_length: int
    params: dict = field(default_factory=dict)


def as_rng(seed: Seed) -> np.random.Generator:
    """Turn an int / numpy Generator / torch Generator into a private numpy Generator.

    A numpy Generator is used as is (and advanced); a torch Generator is advanced once to draw a
    64-bit seed. An int gives `numpy.random.default_rng(seed)`.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, torch.Generator):
        drawn = torch.randint(0, 2**62, (1,), generator=seed, dtype=torch.int64).item()
        return np.random.default_rng(int(drawn))
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        if seed < 0:
            raise ValueError(f"seed must be a non-negative int; got {seed}")
        return np.random.default_rng(int(seed))
    raise ValueError(
        f"seed must be an int, numpy.random.Generator or torch.Generator; got {type(seed).__name__}"
    )


def stream(seed: int, *labels: int) -> np.random.Generator:
    """An independent numpy Generator for one part of a dataset (e.g. train, or test length L).

    `stream(seed, 1, 512)` depends only on those numbers, so a test set of length 512 is the same
    whichever other test lengths are requested.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    return np.random.default_rng([int(seed), *labels])


def sample_without_replacement(
    rng: np.random.Generator, population: int, k: int, num_rows: int
) -> np.ndarray:
    """Per row, k distinct integers from range(population) in uniformly random order.

    Robert Floyd's algorithm vectorised over rows (O(num_rows * k^2) work, O(num_rows * k) memory,
    independent of `population`), then a per-row shuffle.

    Returns:
        int64 array of shape (num_rows, k).
    """
    if not 0 <= k <= population:
        raise ValueError(f"cannot draw {k} distinct values from a population of {population}")
    chosen = np.empty((num_rows, k), dtype=np.int64)
    for i, j in enumerate(range(population - k, population)):
        draw = rng.integers(0, j + 1, size=num_rows)
        taken = (chosen[:, :i] == draw[:, None]).any(axis=1)
        chosen[:, i] = np.where(taken, j, draw)
    order = np.argsort(rng.random((num_rows, k)), axis=1, kind="stable")
    return np.take_along_axis(chosen, order, axis=1)


def check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """Validate an integer parameter; raise ValueError naming it otherwise."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int; got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bound}; got {value}")
    return int(value)


def check_int_list(name: str, value: object, minimum: int) -> list[int]:
    """Validate an int or a non-empty sequence of ints; return a list."""
    values = [value] if isinstance(value, (int, np.integer)) else value
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be an int or a list of ints; got {value!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    return [check_int(name, v, minimum) for v in values]


def to_long(array: np.ndarray) -> Tensor:
    """numpy int array -> contiguous torch.int64 tensor (owns its memory)."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
