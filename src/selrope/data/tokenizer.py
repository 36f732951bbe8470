"""Tokenizers of a corpus, all Hugging Face ``tokenizers`` files, and encoding batches of documents.

Three kinds (``--tokenizer``), each saved in the corpus as a plain ``tokenizer.json`` that
``Tokenizer.from_file`` (and ``transformers.PreTrainedTokenizerFast(tokenizer_file=...)``) loads:

- ``byte``: id == byte value (0..255) plus ``<|endoftext|>`` = 256; nothing trained. Encoded
  here by numpy (the ids are the UTF-8 bytes), at memory speed.
- ``bpe:N``: byte-level BPE with N tokens (``<|endoftext|>`` = 0), trained here on a sample.
- ``PATH`` to a ``tokenizer.json`` (GPT-2, Llama, Mistral, ...): used unchanged, copied into the
  corpus; its end-of-text token is ``--eos-token`` or the first of ``EOS_CANDIDATES`` it holds.

Every document is encoded with ``encode_special_tokens`` (a literal ``<|endoftext|>`` inside text
is text, never the end-of-text id) and without the file's own template (no BOS is added): the
corpus puts the end-of-text token before each document, as llm.c does. The byte-level kinds
encode documents in chunks cut only where the ByteLevel pre-tokenizer always cuts, so a
document's ids equal ``tokenizer.encode(document).ids`` while ``encode_batch`` runs in parallel;
other tokenizers encode whole documents.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, trainers
from tokenizers.pre_tokenizers import ByteLevel

EOS_TOKEN = "<|endoftext|>"
"""The end-of-text token selrope's own tokenizers use (GPT-2's)."""
# End-of-text tokens of well-known tokenizer files, looked for in this order.
EOS_CANDIDATES = (EOS_TOKEN, "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "[EOS]")
MIN_BPE_VOCAB = 256 + 1  # the byte alphabet and EOS
MAX_BPE_VOCAB = 1 << 20
# After a newline that follows a non-space and precedes a non-space the GPT-2 split regex always
# starts a new piece, so cutting there leaves the pieces (and the ids) of the whole text unchanged.
CHUNK_BOUNDARY = re.compile(r"(?<=\S\n)(?=\S)")
BATCH_CHARS = 1 << 20


@dataclass(frozen=True)
class TokenizerSpec:
    """A parsed ``--tokenizer``: kind "byte", "bpe" (with ``vocab``) or "file" (with ``path``)."""

    kind: str
    vocab: int | None = None
    path: Path | None = None


def parse_tokenizer_spec(spec: str) -> TokenizerSpec:
    """``"byte"``, ``"bpe:8192"`` or the path of a ``tokenizer.json`` file, checked.

    Raises:
        ValueError: naming ``--tokenizer`` for any other text, a VOCAB outside [257, 2**20], or
            a path that is no file.
    """
    if spec == "byte":
        return TokenizerSpec("byte")
    kind, colon, vocab = spec.partition(":")
    if kind == "bpe" and colon:
        if not vocab.isdigit():
            raise ValueError(f"--tokenizer {spec}: VOCAB must be an integer (e.g. bpe:8192)")
        if not MIN_BPE_VOCAB <= int(vocab) <= MAX_BPE_VOCAB:
            raise ValueError(
                f"--tokenizer {spec}: VOCAB must be at least {MIN_BPE_VOCAB} "
                f"(256 byte symbols + {EOS_TOKEN}) and at most {MAX_BPE_VOCAB}; got {int(vocab)}"
            )
        return TokenizerSpec("bpe", vocab=int(vocab))
    path = Path(spec)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise ValueError(f"--tokenizer {spec}: no such tokenizer.json file")
        return TokenizerSpec("file", path=path)
    raise ValueError(
        f"--tokenizer must be 'byte', 'bpe:VOCAB' (e.g. bpe:8192) or the path of a "
        f"tokenizer.json; got {spec!r}"
    )


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


def find_eos_token(tokenizer: Tokenizer, eos_token: str | None, where: str) -> tuple[str, int]:
    """The end-of-text token of ``tokenizer`` and its id: ``eos_token`` when given, else the
    first of ``EOS_CANDIDATES`` it holds.

    Raises:
        ValueError: naming ``--eos-token`` / ``where`` when the token is not in the vocabulary.
    """
    if eos_token is not None:
        eos_id = tokenizer.token_to_id(eos_token)
        if eos_id is None:
            raise ValueError(f"--eos-token {eos_token!r}: no such token in {where}")
        return eos_token, eos_id
    for candidate in EOS_CANDIDATES:
        eos_id = tokenizer.token_to_id(candidate)
        if eos_id is not None:
            return candidate, eos_id
    raise ValueError(
        f"{where}: no end-of-text token found (looked for {', '.join(EOS_CANDIDATES)}); "
        "name it with --eos-token"
    )


def load_tokenizer_file(path: str | Path) -> Tokenizer:
    """A ``tokenizer.json`` file, loaded; ValueError naming ``--tokenizer`` if it is not one."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception for a malformed file
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"--tokenizer {path}: not a tokenizers file ({message})") from None


def vocab_size_of(tokenizer: Tokenizer) -> int:
    """Number of ids the tokenizer can produce: one more than its largest id."""
    return max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1


def document_chunks(text: str) -> list[str]:
    """``text`` cut at newlines between two non-space characters; the chunks' ids concatenated
    equal the ids of ``text``."""
    return CHUNK_BOUNDARY.split(text)


def chunk_stream(texts: Iterable[str]) -> Iterator[str]:
    """Every chunk of every text, in order."""
    for text in texts:
        yield from document_chunks(text)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


class DocumentEncoder:
    """Encodes batches of documents into one array ``EOS d1 EOS d2 ...`` and their lengths.

    Picklable by its arguments, so that worker processes build their own copy.

    Args:
        kind: "byte", "bpe" or "file" (a ``TokenizerSpec.kind``).
        tokenizer_json: the tokenizer's ``to_str()`` (unused for "byte").
        eos_id: the end-of-text id put before each document.
        dtype: uint16 or uint32 token dtype.
    """

    def __init__(self, kind: str, tokenizer_json: str, eos_id: int, dtype: np.dtype):
        self.kind, self.tokenizer_json = kind, tokenizer_json
        self.eos_id, self.dtype = eos_id, np.dtype(dtype)
        self._tokenizer: Tokenizer | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokenizer": None}

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer.from_str(self.tokenizer_json)
            self._tokenizer.encode_special_tokens = True
        return self._tokenizer

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``EOS ids(t1) EOS ids(t2) ...`` ``(sum(lengths),)`` of ``dtype``, and ``lengths``
        ``(len(texts),)`` int64: each document's token count, its EOS included. The byte kind
        also takes the texts' UTF-8 bytes."""
        if self.kind == "byte":
            return self._encode_bytes(texts)
        if self.kind == "bpe":
            owners, chunks = [], []
            for index, text in enumerate(texts):
                pieces = document_chunks(text)
                owners.extend([index] * len(pieces))
                chunks.extend(pieces)
        else:
            owners, chunks = list(range(len(texts))), list(texts)
        encodings = self.tokenizer.encode_batch(chunks, add_special_tokens=False)
        ids: list[list[int]] = [[] for _ in texts]
        for owner, encoding in zip(owners, encodings, strict=True):
            ids[owner].extend(encoding.ids)
        lengths = np.fromiter((len(document) + 1 for document in ids), np.int64, len(ids))
        tokens = np.empty(int(lengths.sum()), dtype=self.dtype)
        for start, document in zip(np.cumsum(lengths) - lengths, ids, strict=True):
            tokens[start] = self.eos_id
            tokens[start + 1 : start + 1 + len(document)] = document
        return tokens, lengths

    def _encode_bytes(self, texts: Sequence[str | bytes]) -> tuple[np.ndarray, np.ndarray]:
        encoded = [text if isinstance(text, bytes) else text.encode("utf-8") for text in texts]
        lengths = np.fromiter((len(data) + 1 for data in encoded), np.int64, len(encoded))
        tokens = np.empty(int(lengths.sum()), dtype=self.dtype)
        is_eos = np.zeros(tokens.size, dtype=bool)
        is_eos[np.cumsum(lengths) - lengths] = True
        tokens[is_eos] = self.eos_id
        tokens[~is_eos] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        return tokens, lengths


_WORKER_ENCODER: DocumentEncoder | None = None  # set in tokenising worker processes only


def worker_setup(encoder: DocumentEncoder, threads: int) -> None:
    """Start a tokenising worker process: keep its encoder, and give HF tokenizers' thread pool
    ``threads`` threads (before the pool first runs) so that N workers share the cores."""
    global _WORKER_ENCODER
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"
    _WORKER_ENCODER = encoder


def encode_in_worker(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``DocumentEncoder.encode(texts)`` with the encoder of this worker process."""
    if _WORKER_ENCODER is None:
        raise RuntimeError("encode_in_worker runs only in a process started by worker_setup")
    return _WORKER_ENCODER.encode(texts)
