"""The MAD synthetic suite (Mechanistic Architecture Design; research notes §C.2), own generators.

Conventions shared by the recall and copying tasks: a row is a sequence S of `seq_len` tokens;
inputs = S[:-1] and targets = S[1:] (so tensors are (N, seq_len - 1)). Training targets are the
full next-token shift (every position, except left padding in fuzzy recall); test targets
(`recall_only=True`) keep only the recall positions and set the rest to -100. `vocab_size` is the
total number of token ids the task uses, special tokens included, as in MAD's settings.

Memorization and compression are not next-token tasks; see their docstrings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import Tensor

from selrope.tasks.base import (
    IGNORE_INDEX,
    Seed,
    TaskData,
    as_rng,
    check_int,
    sample_without_replacement,
    stream,
    to_long,
)


def _shifted(
    sequence: np.ndarray, recall: np.ndarray | None, ignore: np.ndarray | None = None
) -> tuple[Tensor, Tensor]:
    """(S[:-1], S[1:]) with targets kept where `recall` (test) or everywhere but `ignore`."""
    targets = sequence[:, 1:].copy()
    if recall is not None:
        targets[~recall] = IGNORE_INDEX
    elif ignore is not None:
        targets[ignore] = IGNORE_INDEX
    return to_long(sequence[:, :-1]), to_long(targets)


def _first_occurrence(items: np.ndarray, valid: np.ndarray, num_items: int) -> np.ndarray:
    """Per row, the first column where each item occurs among valid columns (else n_cols).

    Args:
        items: int array (N, P) with values in [0, num_items).
        valid: bool array (N, P).

    Returns:
        int array (N, num_items).
    """
    N, P = items.shape
    first = np.full((N, num_items), P, dtype=np.int64)
    rows, cols = np.nonzero(valid)
    np.minimum.at(first, (rows, items[rows, cols]), cols)
    return first


def in_context_recall(
    num_examples: int,
    seq_len: int,
    vocab_size: int,
    seed: Seed,
    *,
    noise_vocab_size: int = 0,
    frac_noise: float = 0.0,
    recall_only: bool = False,
) -> tuple[Tensor, Tensor]:
    """Key-value pairs with a per-row key->value bijection, then a probe pair (noisy if asked).

    Token ids: keys [0, K), values [K, 2K) with K = (vocab_size - noise_vocab_size) // 2, noise
    tokens [vocab_size - noise_vocab_size, vocab_size). S = seq_len / 2 pairs `k v`; each of the
    first seq_len/2 - 1 pairs is replaced by 2 random noise tokens with probability frac_noise
    (at least one pair is kept); the last pair is a probe whose key is that of a random earlier
    kept pair. Recall positions: every kept pair's value whose key appeared in an earlier kept
    pair (multi-query), the probe included.

    Args:
        num_examples: N.
        seq_len: length of S (even, >= 4).
        vocab_size: total vocabulary V (the paper: 16; noisy recall: 32 with 16 noise tokens).
        seed: int / numpy Generator / torch Generator.
        noise_vocab_size: number of noise tokens (0 for plain in-context recall).
        frac_noise: probability that a pair is replaced by noise.
        recall_only: test targets (only recall positions) instead of the full shift.

    Returns:
        (inputs, targets), LongTensors (N, seq_len - 1).
    """
    check_int("num_examples", num_examples, 0)
    check_int("seq_len", seq_len, 4)
    if seq_len % 2:
        raise ValueError(f"seq_len must be even; got {seq_len}")
    check_int("noise_vocab_size", noise_vocab_size, 0)
    K = (check_int("vocab_size", vocab_size, 2) - noise_vocab_size) // 2
    if K < 1:
        raise ValueError(
            f"vocab_size={vocab_size} leaves no keys after {noise_vocab_size} noise tokens"
        )
    if not 0.0 <= frac_noise < 1.0 or (frac_noise > 0 and noise_vocab_size == 0):
        raise ValueError(
            f"frac_noise must be in [0, 1) and needs noise_vocab_size > 0; got "
            f"frac_noise={frac_noise}, noise_vocab_size={noise_vocab_size}"
        )
    rng = as_rng(seed)
    N, P = num_examples, seq_len // 2
    value_of_key = K + np.argsort(rng.random((N, K)), axis=1, kind="stable")  # per-row bijection
    keys = rng.integers(0, K, size=(N, P))
    kept = rng.random((N, P)) >= frac_noise
    kept[:, -1] = True
    kept[~kept[:, :-1].any(axis=1), 0] = True
    # probe: the key of a uniformly random earlier kept pair
    scores = np.where(kept[:, :-1], rng.random((N, P - 1)), -1.0)
    rows = np.arange(N)
    keys[:, -1] = keys[rows, scores.argmax(axis=1)]

    sequence = np.empty((N, seq_len), dtype=np.int64)
    sequence[:, 0::2] = keys
    sequence[:, 1::2] = value_of_key[rows[:, None], keys]
    if noise_vocab_size:
        noise = rng.integers(vocab_size - noise_vocab_size, vocab_size, size=(N, seq_len))
        dropped = np.repeat(~kept, 2, axis=1)
        sequence[dropped] = noise[dropped]
    recall = None
    if recall_only:
        first = _first_occurrence(keys, kept, K)
        seen = kept & (first[rows[:, None], keys] < np.arange(P)[None, :])
        recall = np.zeros((N, seq_len - 1), dtype=bool)
        recall[:, 0::2] = seen  # target index 2p predicts the value at 2p + 1
    return _shifted(sequence, recall)


def fuzzy_recall(
    num_examples: int,
    seq_len: int,
    vocab_size: int,
    seed: Seed,
    *,
    k_motif_size: int = 3,
    v_motif_size: int = 3,
    num_motifs: int | None = None,
    recall_only: bool = False,
) -> tuple[Tensor, Tensor]:
    """Recall where keys and values are motifs (runs) of 1..k_motif_size / 1..v_motif_size tokens.

    Token ids: PAD = 0, key tokens [1, 1 + Kt) with Kt = (V - 1) // 2, value tokens [1 + Kt, V).
    Each row has a dictionary of `num_motifs` distinct key motifs, each with a value motif (lengths
    uniform, tokens uniform). S is left-padded with PAD, then random dictionary pairs `key value`,
    then a probe pair taken from one of the earlier pairs, filling exactly seq_len tokens. Keys
    and values use disjoint tokens, so a motif is a maximal run. Recall positions: every value
    token of a pair whose key motif appeared in an earlier pair. Training targets skip PAD.

    Args:
        num_examples: N.
        seq_len: length of S (>= 2 * (k_motif_size + v_motif_size)).
        vocab_size: V (the paper: 16).
        seed: int / numpy Generator / torch Generator.
        k_motif_size, v_motif_size: maximum motif lengths (the paper: 3, 3).
        num_motifs: distinct keys per row (default: Kt, the number of key tokens).
        recall_only: test targets instead of the full shift.

    Returns:
        (inputs, targets), LongTensors (N, seq_len - 1).
    """
    check_int("num_examples", num_examples, 0)
    kms = check_int("k_motif_size", k_motif_size, 1)
    vms = check_int("v_motif_size", v_motif_size, 1)
    check_int("vocab_size", vocab_size, 3)
    Kt = (vocab_size - 1) // 2
    Vt = vocab_size - 1 - Kt
    max_pair = kms + vms
    check_int("seq_len", seq_len, 2 * max_pair)
    possible = sum(Kt**i for i in range(1, kms + 1))
    D = Kt if num_motifs is None else check_int("num_motifs", num_motifs, 1, possible)
    rng = as_rng(seed)
    N = num_examples

    # dictionary with distinct key motifs (redraw rows that collide)
    klen = rng.integers(1, kms + 1, size=(N, D))
    ktok = rng.integers(0, Kt, size=(N, D, kms))
    weights = (Kt + 1) ** np.arange(kms)
    while True:
        digits = np.where(np.arange(kms) < klen[..., None], ktok + 1, 0)
        codes = np.sort(digits @ weights, axis=1)
        clash = (codes[:, 1:] == codes[:, :-1]).any(axis=1)
        if not clash.any():
            break
        n_clash = int(clash.sum())
        klen[clash] = rng.integers(1, kms + 1, size=(n_clash, D))
        ktok[clash] = rng.integers(0, Kt, size=(n_clash, D, kms))
    vlen = rng.integers(1, vms + 1, size=(N, D))
    vtok = rng.integers(0, Vt, size=(N, D, vms))
    rows = np.arange(N)[:, None]

    # pairs that fit before a probe of maximal length, then the probe
    max_pairs = seq_len // 2
    entry = rng.integers(0, D, size=(N, max_pairs + 1))
    pair_len = klen[rows, entry] + vlen[rows, entry]
    m = (np.cumsum(pair_len, axis=1) <= seq_len - max_pair).sum(axis=1)  # >= 1
    probe_from = np.floor(rng.random(N) * m).astype(np.int64)
    entry[np.arange(N), m] = entry[np.arange(N), probe_from]
    width = int(m.max()) + 1  # segments used by the fullest row (pairs + probe)
    entry = entry[:, :width]
    cols = np.arange(width)[None, :]
    valid = cols <= m[:, None]
    seg_len = np.where(valid, klen[rows, entry] + vlen[rows, entry], 0)
    ends = seq_len - seg_len.sum(axis=1, keepdims=True) + np.cumsum(seg_len, axis=1)

    # per position: its segment (count of segment ends <= p, rows offset into disjoint ranges),
    # the offset inside it, and key token o (o < klen) or value token o - klen
    positions = np.arange(seq_len)
    offsets = np.arange(N)[:, None] * (seq_len + 1)
    seg = (
        np.searchsorted(
            (ends + offsets).ravel(), (positions[None, :] + offsets).ravel(), side="right"
        ).reshape(N, seq_len)
        - np.arange(N)[:, None] * width
    )
    is_pad = positions[None, :] < ends[:, :1] - seg_len[:, :1]
    seg = np.minimum(seg, width - 1)
    e = np.take_along_axis(entry, seg, axis=1)
    o = positions[None, :] - np.take_along_axis(ends - seg_len, seg, axis=1)
    k_l = np.take_along_axis(klen, e, axis=1)
    is_key = o < k_l
    key_tok = np.take_along_axis(ktok.reshape(N, -1), e * kms + np.clip(o, 0, kms - 1), axis=1)
    val_idx = e * vms + np.clip(o - k_l, 0, vms - 1)
    val_tok = np.take_along_axis(vtok.reshape(N, -1), val_idx, axis=1)
    sequence = np.where(is_pad, 0, np.where(is_key, 1 + key_tok, 1 + Kt + val_tok))

    if not recall_only:
        return _shifted(sequence, None, ignore=sequence[:, 1:] == 0)
    first = _first_occurrence(entry, valid, D)
    seen = valid & (first[rows, entry] < cols)
    recall_pos = ~is_pad & ~is_key & np.take_along_axis(seen, seg, axis=1)
    return _shifted(sequence, recall_pos[:, 1:])


def selective_copying(
    num_examples: int,
    seq_len: int,
    vocab_size: int,
    seed: Seed,
    *,
    num_tokens_to_copy: int = 16,
    recall_only: bool = False,
) -> tuple[Tensor, Tensor]:
    """Copy the non-blank tokens of a context, in order, after a COPY token.

    Token ids: content [0, V - 2), BLANK = V - 2, COPY = V - 1. S = a context of
    C = seq_len - n - 1 tokens (n = num_tokens_to_copy content tokens at random positions, in
    order, the rest BLANK), then COPY, then the n tokens. Recall positions: the n positions from
    COPY onward, whose targets are the n tokens (teacher-forced, like copying).

    Args:
        num_examples: N.
        seq_len: length of S (>= 2n + 1; the paper: 256).
        vocab_size: V (>= 3; the paper: 16).
        seed: int / numpy Generator / torch Generator.
        num_tokens_to_copy: n (the paper: 16).
        recall_only: test targets instead of the full shift.

    Returns:
        (inputs, targets), LongTensors (N, seq_len - 1).
    """
    check_int("num_examples", num_examples, 0)
    n = check_int("num_tokens_to_copy", num_tokens_to_copy, 1)
    check_int("seq_len", seq_len, 2 * n + 1)
    check_int("vocab_size", vocab_size, 3)
    rng = as_rng(seed)
    N, C = num_examples, seq_len - n - 1
    tokens = rng.integers(0, vocab_size - 2, size=(N, n))
    where = np.sort(sample_without_replacement(rng, C, n, N), axis=1)
    sequence = np.full((N, seq_len), vocab_size - 2, dtype=np.int64)
    sequence[np.arange(N)[:, None], where] = tokens
    sequence[:, C] = vocab_size - 1
    sequence[:, C + 1 :] = tokens
    recall = None
    if recall_only:
        recall = np.zeros((N, seq_len - 1), dtype=bool)
        recall[:, C:] = True
    return _shifted(sequence, recall)


def memorization(
    num_examples: int,
    seq_len: int,
    vocab_size: int,
    seed: Seed,
    *,
    map_seed: int = 12345,
) -> tuple[Tensor, Tensor]:
    """Recall values of a fixed global key->value map (knowledge stored in the weights).

    Token ids: keys [0, K) with K = (V - 1) // 2, values [K, V - 1), INSERT = V - 1. The map
    key -> value is drawn once from `map_seed` (the same for train and test, whatever `seed`).
    inputs = `k1 INS k2 INS ...` (keys uniform), targets = the value of k_i at the INS after it
    and -100 elsewhere: a tagging layout with no shift. The other positions would only ask for
    a trivial INS or an unpredictable random key, so train and test targets are the same.

    Returns:
        (inputs, targets), LongTensors (N, seq_len) (seq_len even).
    """
    check_int("num_examples", num_examples, 0)
    check_int("seq_len", seq_len, 2)
    if seq_len % 2:
        raise ValueError(f"seq_len must be even; got {seq_len}")
    check_int("vocab_size", vocab_size, 3)
    check_int("map_seed", map_seed, 0)
    K = (vocab_size - 1) // 2
    value_of_key = np.random.default_rng(map_seed).integers(K, vocab_size - 1, size=K)
    keys = as_rng(seed).integers(0, K, size=(num_examples, seq_len // 2))
    inputs = np.full((num_examples, seq_len), vocab_size - 1, dtype=np.int64)
    inputs[:, 0::2] = keys
    targets = np.full((num_examples, seq_len), IGNORE_INDEX, dtype=np.int64)
    targets[:, 1::2] = value_of_key[keys]
    return to_long(inputs), to_long(targets)


def compression(
    num_examples: int, seq_len: int, vocab_size: int, seed: Seed
) -> tuple[Tensor, Tensor]:
    """Data for MAD's compression task (an autoencoder, not a causal LM).

    Token ids: content [0, V - 1), COMPRESS = V - 1. inputs = `x1 .. x_{L-1} COMPRESS` with x
    uniform; targets = `x1 .. x_{L-1} -100`, i.e. targets[:, t] = inputs[:, t] except at the
    compression token. The expected model (MAD's AutoEncoder backbone) encodes the whole row,
    keeps only the encoder's output at the last (COMPRESS) position as the bottleneck, and a
    decoder expands that single vector back to L positions whose logits are scored against
    targets. Feeding these tensors to a plain causal LM would make the task a trivial identity.

    Returns:
        (inputs, targets), LongTensors (N, seq_len).
    """
    check_int("num_examples", num_examples, 0)
    check_int("seq_len", seq_len, 2)
    check_int("vocab_size", vocab_size, 2)
    x = as_rng(seed).integers(0, vocab_size - 1, size=(num_examples, seq_len))
    inputs = x.copy()
    inputs[:, -1] = vocab_size - 1
    x[:, -1] = IGNORE_INDEX
    return to_long(inputs), to_long(x)


def _build(
    name: str,
    make: Callable[..., tuple[Tensor, Tensor]],
    arguments: dict[str, Any],
    test_kwargs: dict,
) -> TaskData:
    """Train from stream (seed, 0), test (keyed by seq_len) from stream (seed, 1, seq_len).

    ``arguments`` are a builder's own, seed included: its ``locals()`` before anything else.
    """
    params = dict(arguments)
    seed = params.pop("seed")
    num_train = check_int("num_train", params.pop("num_train"), 1)
    num_test = check_int("num_test", params.pop("num_test"), 1)
    seq_len, vocab_size = params["seq_len"], params["vocab_size"]
    train = make(num_train, rng=stream(seed, 0), **params)
    test = make(num_test, rng=stream(seed, 1, seq_len), **params, **test_kwargs)
    resolved = {**params, "num_train": num_train, "num_test": num_test, "seed": seed}
    return TaskData(f"mad_{name}", vocab_size, train, {seq_len: test}, seq_len, resolved)


def _call(fn: Callable[..., tuple[Tensor, Tensor]]) -> Callable[..., tuple[Tensor, Tensor]]:
    def make(num: int, *, rng: np.random.Generator, seq_len: int, vocab_size: int, **kw):
        return fn(num, seq_len, vocab_size, rng, **kw)

    return make


# The parameters of the MAD builders below (shown by `selrope train --task mad_* --help`).
PARAMETER_MEANINGS = {
    "vocab_size": "V, the number of tokens (noise tokens included).",
    "seq_len": "L, the length of every row.",
    "num_train": "number of training rows.",
    "num_test": "number of test rows.",
    "noise_vocab_size": "how many of the V tokens are noise tokens.",
    "frac_noise": "the fraction of positions filled with noise tokens.",
    "k_motif_size": "the longest key motif, in tokens.",
    "v_motif_size": "the longest value motif, in tokens.",
    "num_motifs": "key-value motifs per row; None: as many as fit.",
    "num_tokens_to_copy": "how many tokens each row asks to copy.",
    "map_seed": "seed of the fixed key -> value map to memorize.",
}


def build_in_context_recall(
    seed: int,
    *,
    vocab_size: int = 16,
    seq_len: int = 128,
    num_train: int = 12_800,
    num_test: int = 1_280,
) -> TaskData:
    """MAD in-context recall (paper baseline: V 16, L 128, 12,800 train, 1,280 test)."""
    return _build("in_context_recall", _call(in_context_recall), locals(), {"recall_only": True})


def build_noisy_recall(
    seed: int,
    *,
    vocab_size: int = 32,
    noise_vocab_size: int = 16,
    frac_noise: float = 0.2,
    seq_len: int = 128,
    num_train: int = 12_800,
    num_test: int = 1_280,
) -> TaskData:
    """MAD noisy recall (paper baseline: V 32 with 16 noise tokens, frac_noise 0.2, L 128)."""
    return _build("noisy_recall", _call(in_context_recall), locals(), {"recall_only": True})


def build_fuzzy_recall(
    seed: int,
    *,
    vocab_size: int = 16,
    seq_len: int = 128,
    k_motif_size: int = 3,
    v_motif_size: int = 3,
    num_motifs: int | None = None,
    num_train: int = 12_800,
    num_test: int = 1_280,
) -> TaskData:
    """MAD fuzzy recall (paper baseline: V 16, L 128, motifs of 1-3 tokens)."""
    return _build("fuzzy_recall", _call(fuzzy_recall), locals(), {"recall_only": True})


def build_selective_copying(
    seed: int,
    *,
    vocab_size: int = 16,
    seq_len: int = 256,
    num_tokens_to_copy: int = 16,
    num_train: int = 12_800,
    num_test: int = 1_280,
) -> TaskData:
    """MAD selective copying (paper baseline: V 16, L 256, 16 tokens to copy)."""
    return _build("selective_copying", _call(selective_copying), locals(), {"recall_only": True})


def build_memorization(
    seed: int,
    *,
    vocab_size: int = 256,
    seq_len: int = 32,
    map_seed: int = 12345,
    num_train: int = 256,
    num_test: int = 1_280,
) -> TaskData:
    """MAD memorization (paper baseline: V 256, L 32, 256 train rows, map seed 12345)."""
    return _build("memorization", _call(memorization), locals(), {})


def build_compression(
    seed: int,
    *,
    vocab_size: int = 16,
    seq_len: int = 32,
    num_train: int = 12_800,
    num_test: int = 1_280,
) -> TaskData:
    """MAD compression data (paper baseline: V 16, L 32); needs an autoencoder, see
    `compression`."""
    return _build("compression", _call(compression), locals(), {})
