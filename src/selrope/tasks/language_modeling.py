"""Language modelling on a corpus folder (``selrope data prepare``, or llm.c shards) as a task.

A split is one token stream ``EOS d1 EOS d2 ... EOS dn`` over its memory-mapped shards (see
``selrope.data``). It is cut into non-overlapping windows of ``seq_len + 1`` tokens that share
their edge token: window w has inputs ``stream[w L : w L + L]`` and targets
``stream[w L + 1 : w L + L + 1]``, so every token of the stream but the first is a target exactly
once per epoch. A row reads only its own ``L + 1`` tokens; nothing is read whole at start.
Packing:

- ``"reset"``: each row carries segment ids (a new one at every end-of-text token: documents
  are found from the tokens, so llm.c shards work too), and the model processes every document
  in it as if alone (attention block-diagonal, recurrent states, positions and phases restart);
- ``"concat"``: the GPT-2-style stream: a window reads straight across document boundaries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from selrope.data import TokenSplit, load_split
from selrope.tasks.base import Batch, TaskData, check_int

PACKINGS = ("reset", "concat")


class CorpusWindows:
    """A :class:`~selrope.tasks.base.BatchSource` over the windows of a token stream.

    Args:
        split: the token stream (memory-mapped shards) and its end-of-text id.
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
        """Windows ``indices`` ``(B,)`` -> inputs, targets (and segment ids) ``(B, L)`` int64.

        Segment ids count the end-of-text tokens from the row's start (0 for the row's first
        document); a row whose tokens reach the vocabulary size is refused (ValueError).
        """
        L = self.seq_len
        starts = indices.cpu().numpy().astype(np.int64) * L
        windows = np.stack([np.asarray(self.split.tokens[s : s + L + 1]) for s in starts])
        if windows.size and int(windows.max()) >= self.split.vocab_size:
            row = int(np.argmax(windows.max(axis=1) >= self.split.vocab_size))
            raise ValueError(
                f"token id {int(windows[row].max())} in the window at stream position "
                f"{int(starts[row])} is at or above the vocabulary size {self.split.vocab_size}"
            )
        tokens = torch.from_numpy(windows.astype(np.int64))
        segment_ids = None
        if self.packing == "reset":
            new_document = windows[:, 1:L] == self.split.eos_id
            ids = np.zeros((len(starts), L), dtype=np.int64)
            np.cumsum(new_document, axis=1, out=ids[:, 1:])
            segment_ids = torch.from_numpy(ids)
        return Batch(tokens[:, :L], tokens[:, 1:], segment_ids)


def build_language_modeling(
    seed: int,
    data: str = "",
    seq_len: int = 256,
    packing: str = "reset",
    val_tokens: int = 65536,
    vocab_size: int | None = None,
    eos_id: int | None = None,
) -> TaskData:
    """Language modelling on the corpus in ``data``.

    Args:
        seed: unused by the data (the corpus is fixed; the batch order comes from the trainer's
            seed); kept for the task interface.
        data: a folder written by ``selrope data prepare``, or of llm.c / modded-nanogpt shards
            (``*train*.bin``, ``*val*.bin``) with their tokenizer.json or ``vocab_size`` and
            ``eos_id``.
        seq_len: training length L.
        packing: for training, "reset" (every document in a row is processed as if alone:
            attention, recurrent states and positions restart at its start) or "concat" (the
            GPT-2-style stream that reads across documents); validation always resets, so its
            loss never reads across documents.
        val_tokens: validation rows: the first ``val_tokens // seq_len`` windows of the val split.
        vocab_size: the model's vocabulary size: needed for shards without a tokenizer.json
            (GPT-2: 50257); may pad a corpus tokenizer's (e.g. 50304), never undercut it.
        eos_id: the end-of-text id that starts each document: needed for shards without a
            tokenizer.json (GPT-2: 50256).

    Returns:
        TaskData with ``train`` and ``tests[seq_len]`` as :class:`CorpusWindows`.

    Raises:
        ValueError: naming ``--data`` for a corpus that is refused when opened
            (``selrope.data.open_corpus``), including shards without a tokenizer.json when
            ``vocab_size`` / ``eos_id`` are not given.
    """
    del seed
    if not data:
        raise ValueError("--data must name a folder written by `selrope data prepare`; got ''")
    check_int("val_tokens", val_tokens, seq_len)
    train = load_split(data, "train", vocab_size=vocab_size, eos_id=eos_id)
    val = load_split(data, "val", vocab_size=vocab_size, eos_id=eos_id)
    params = {"data": str(Path(data)), "seq_len": seq_len, "packing": packing}
    params["val_tokens"] = val_tokens
    # Only when given, so that runs made before these options keep their identity.
    params.update(
        {k: v for k, v in (("vocab_size", vocab_size), ("eos_id", eos_id)) if v is not None}
    )
    return TaskData(
        name="lm",
        vocab_size=train.vocab_size,
        train=CorpusWindows(train, seq_len, packing),
        tests={seq_len: CorpusWindows(val, seq_len, "reset", max_rows=val_tokens // seq_len)},
        train_length=seq_len,
        params=params,
    )
