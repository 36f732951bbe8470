"""Byte-level tokenizers as Hugging Face ``tokenizers.Tokenizer`` objects, and batch encoding.

Two kinds, both saved as a plain ``tokenizer.json`` that ``Tokenizer.from_file`` (and
``transformers.PreTrainedTokenizerFast(tokenizer_file=...)``) load unchanged:

- ``byte``: id == byte value (0..255) plus ``<|endoftext|>`` = 256; nothing trained.
- ``bpe:N``: byte-level BPE with N tokens (``<|endoftext|>`` = 0), trained here.

Documents are encoded in chunks cut only where the ByteLevel pre-tokenizer always cuts, so a
document's ids equal ``tokenizer.encode(document).ids`` while ``encode_batch`` runs in parallel.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, models, trainers
from tokenizers.pre_tokenizers import ByteLevel
from tqdm import tqdm

EOS_TOKEN = "<|endoftext|>"
MIN_BPE_VOCAB = 256 + 1  # the byte alphabet and EOS
# After a newline that follows a non-space and precedes a non-space the GPT-2 split regex always
# starts a new piece, so cutting there leaves the pieces (and the ids) of the whole text unchanged.
CHUNK_BOUNDARY = re.compile(r"(?<=\S\n)(?=\S)")
BATCH_CHARS = 1 << 20


def parse_tokenizer_spec(spec: str) -> tuple[str, int | None]:
    """``"byte"`` -> ("byte", None); ``"bpe:8192"`` -> ("bpe", 8192).

    Raises:
        ValueError: naming ``--tokenizer`` for any other text or a VOCAB below 257.
    """
    if spec == "byte":
        return "byte", None
    kind, colon, vocab = spec.partition(":")
    if kind != "bpe" or not colon or not vocab.isdigit():
        raise ValueError(f"--tokenizer must be 'byte' or 'bpe:VOCAB' (e.g. bpe:8192); got {spec!r}")
    if int(vocab) < MIN_BPE_VOCAB:
        raise ValueError(
            f"--tokenizer {spec}: VOCAB must be at least {MIN_BPE_VOCAB} "
            f"(256 byte symbols + {EOS_TOKEN}); got {int(vocab)}"
        )
    return "bpe", int(vocab)


def byte_to_symbol() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte, the alphabet of ByteLevel."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    others = [b for b in range(256) if b not in printable]
    symbols = {b: chr(b) for b in printable}
    symbols.update({b: chr(256 + i) for i, b in enumerate(others)})
    return symbols


def byte_tokenizer() -> Tokenizer:
    """The byte tokenizer: token id == byte value, and ``<|endoftext|>`` = 256 (vocab 257)."""
    vocab = {symbol: byte for byte, symbol in byte_to_symbol().items()}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([EOS_TOKEN])
    return tokenizer


def train_bpe(texts: Iterable[str], vocab_size: int, length: int | None = None) -> Tokenizer:
    """A byte-level BPE of ``vocab_size`` tokens trained on ``texts`` (min_frequency 2).

    Args:
        texts: training text in pieces (documents or chunks of them); never one giant string.
        vocab_size: wanted size including ``<|endoftext|>`` (id 0); a small corpus can give fewer.
        length: number of pieces, for the trainer's bookkeeping.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=ByteLevel.alphabet(),
        special_tokens=[EOS_TOKEN],
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer, length=length)
    return tokenizer


def document_chunks(text: str) -> list[str]:
    """``text`` cut at newlines between two non-space characters; the chunks' ids concatenated
    equal the ids of ``text``."""
    return CHUNK_BOUNDARY.split(text)


def chunk_stream(texts: Sequence[str]) -> Iterator[str]:
    """Every chunk of every text, in order."""
    for text in texts:
        yield from document_chunks(text)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def chunk_batches(texts: Sequence[str]) -> Iterator[tuple[list[int], list[str]]]:
    """The chunks of ``texts`` in batches of about ``BATCH_CHARS`` characters, each chunk with
    the index of its text."""
    owners: list[int] = []
    chunks: list[str] = []
    size = 0
    for index, text in enumerate(texts):
        for chunk in document_chunks(text):
            owners.append(index)
            chunks.append(chunk)
            size += len(chunk)
            if size >= BATCH_CHARS:
                yield owners, chunks
                owners, chunks, size = [], [], 0
    if chunks:
        yield owners, chunks


def encode_documents(
    tokenizer: Tokenizer, texts: Sequence[str], dtype: np.dtype, progress: bool = True
) -> list[np.ndarray]:
    """Token ids of each text, with ``<|endoftext|>`` inside a text encoded as plain text.

    Args:
        tokenizer: the corpus tokenizer (its ``encode_special_tokens`` is set to True).
        texts: D documents.
        dtype: dtype of the returned arrays (see ``token_dtype``).
        progress: show a tqdm bar over characters.

    Returns:
        D arrays of shape (n_d,), equal to ``tokenizer.encode(text).ids``.
    """
    tokenizer.encode_special_tokens = True
    pieces: list[list[np.ndarray]] = [[] for _ in texts]
    total = sum(map(len, texts))
    with tqdm(total=total, unit="char", unit_scale=True, disable=not progress) as bar:
        for owners, chunks in chunk_batches(texts):
            for owner, encoding in zip(owners, tokenizer.encode_batch(chunks), strict=True):
                pieces[owner].append(np.asarray(encoding.ids, dtype=dtype))
            bar.update(sum(map(len, chunks)))
    return [np.concatenate(parts) for parts in pieces]
