"""Language modelling on a prepared corpus (``selrope data prepare``) as a task.

A split is one token stream ``EOS d1 EOS d2 ... EOS dn EOS`` (see ``selrope.data``). It is cut
into non-overlapping windows of ``seq_len + 1`` tokens that share their edge token: window w has
inputs ``stream[w L : w L + L]`` and targets ``stream[w L + 1 : w L + L + 1]``, so every token of
the stream but the first is a target exactly once per epoch. Packing:

- ``"reset"``: each row carries segment ids, and the model processes every document in it as if
  alone (attention block-diagonal, recurrent states, positions and rotary phases restart);
- ``"concat"``: the GPT-2-style stream: a window reads straight across document boundaries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from selrope.data import TokenSplit, load_split, segment_ids_for_window
from selrope.tasks.base import Batch, TaskData, check_int

PACKINGS = ("reset", "concat")


class CorpusWindows:
    """A :class:`~selrope.tasks.base.BatchSource` over the windows of a token stream.

    Args:
        split: the token stream and its document starts.
        seq_len: L, tokens per row.
        packing: "reset" (rows carry segment ids) or "concat" (no document boundaries).
        max_rows: keep only the first rows (e.g. a fixed validation subset); None keeps all.
    """

    def __init__(
        self, split: TokenSplit, seq_len: int, packing: str = "reset", max_rows: int | None = None
    ):
        check_int("seq_len", seq_len, 1)
        if packing not in PACKINGS:
            raise ValueError(f"packing must be one of {PACKINGS}; got {packing!r}")
        windows = (len(split.tokens) - 1) // seq_len
        if windows < 1:
            raise ValueError(
                f"seq_len must leave at least one window in a split of {len(split.tokens)} "
                f"tokens; got {seq_len}"
            )
        self.split, self.seq_len, self.packing = split, seq_len, packing
        self.num_rows = windows if max_rows is None else min(windows, max_rows)

    def rows(self, indices: Tensor) -> Batch:
        """Windows ``indices`` ``(B,)`` -> inputs, targets (and segment ids) ``(B, L)`` int64."""
        L = self.seq_len
        starts = indices.cpu().numpy().astype(np.int64) * L
        positions = starts[:, None] + np.arange(L + 1)  # (B, L + 1) stream positions
        tokens = torch.from_numpy(self.split.tokens[positions].astype(np.int64))
        segment_ids = None
        if self.packing == "reset":
            documents = [segment_ids_for_window(self.split.doc_starts, s, L) for s in starts]
            segment_ids = torch.from_numpy(np.stack(documents))
        return Batch(tokens[:, :L], tokens[:, 1:], segment_ids)


def build_language_modeling(
    seed: int,
    data: str = "",
    seq_len: int = 256,
    packing: str = "reset",
    val_tokens: int = 65536,
) -> TaskData:
    """Language modelling on the corpus prepared in ``data``.

    Args:
        seed: unused by the data (the corpus is fixed; the batch order comes from the trainer's
            seed); kept for the task interface.
        data: a directory written by ``selrope data prepare`` (train.bin, val.bin, manifest).
        seq_len: training length L.
        packing: for training, "reset" (every document in a row is processed as if alone:
            attention, recurrent states and positions restart at its start) or "concat" (the
            GPT-2-style stream that reads across documents); validation always resets, so its
            loss never reads across documents.
        val_tokens: validation rows: the first ``val_tokens // seq_len`` windows of the val split.

    Returns:
        TaskData with ``train`` and ``tests[seq_len]`` as :class:`CorpusWindows`.
    """
    del seed
    if not data:
        raise ValueError("data must name a directory written by `selrope data prepare`; got ''")
    check_int("val_tokens", val_tokens, seq_len)
    train = load_split(data, "train")
    val = load_split(data, "val")
    return TaskData(
        name="lm",
        vocab_size=train.vocab_size,
        train=CorpusWindows(train, seq_len, packing),
        tests={seq_len: CorpusWindows(val, seq_len, "reset", max_rows=val_tokens // seq_len)},
        train_length=seq_len,
        params={
            "data": str(Path(data)),
            "seq_len": seq_len,
            "packing": packing,
            "val_tokens": val_tokens,
        },
    )
