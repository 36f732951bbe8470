"""Reading a prepared corpus: the manifest, the token streams as memmaps, the tokenizer.

A prepared corpus is a folder written by ``prepare_corpus`` (``selrope data prepare``)::

    manifest.json    written last: its presence marks a complete corpus
    tokenizer.json   a Hugging Face tokenizers file
    train.bin        raw token ids, dtype manifest["dtype"] (uint16 or uint32)
    val.bin

Each split's stream is ``EOS d1 EOS d2 ... EOS dn EOS``: every document follows an EOS
(``<|endoftext|>``, which also serves as BOS), and one EOS ends the stream, so each next-token
target lies within its own document (a document's last token predicts the EOS after it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

FORMAT = "selrope.data"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
SPLITS = ("train", "val")


@dataclass(frozen=True)
class TokenSplit:
    """One split of a prepared corpus.

    Attributes:
        tokens: (N,) uint16/uint32 read-only memmap, ``EOS d1 EOS d2 ... EOS dn EOS``.
        doc_starts: (D,) int64 offsets of each document's leading EOS, increasing, first 0.
        eos_id: id of ``<|endoftext|>``.
        vocab_size: number of token ids (all ids are below it).
    """

    tokens: np.ndarray
    doc_starts: np.ndarray
    eos_id: int
    vocab_size: int


def load_manifest(data_dir: str | Path) -> dict[str, Any]:
    """The manifest of the corpus in ``data_dir``.

    Raises:
        FileNotFoundError: when ``data_dir`` has no manifest (never prepared, or interrupted).
        ValueError: when the manifest is of another format or version.
    """
    path = Path(data_dir) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: prepare the corpus with `selrope data prepare --out {data_dir}` "
            "(a prepare that was interrupted leaves no manifest)"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: expected format {FORMAT!r} version {FORMAT_VERSION}; "
            f"got {manifest.get('format')!r} version {manifest.get('version')!r}"
        )
    return manifest


def load_split(data_dir: str | Path, split: str) -> TokenSplit:
    """The ``split`` ("train" or "val") of the corpus in ``data_dir``, its tokens memory-mapped.

    Raises:
        ValueError: for another split name, or a token file whose size disagrees with the manifest.
        FileNotFoundError: when the manifest or the split's file is missing.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    manifest = load_manifest(data_dir)
    entry = manifest["splits"][split]
    path = Path(data_dir) / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found, though {MANIFEST_FILE} lists it")
    dtype = np.dtype(manifest["dtype"])
    if path.stat().st_size != entry["tokens"] * dtype.itemsize:
        raise ValueError(
            f"{path}: {path.stat().st_size} bytes, but the manifest says "
            f"{entry['tokens']} tokens of {dtype.name}"
        )
    tokens = np.memmap(path, dtype=dtype, mode="r", shape=(entry["tokens"],))
    return TokenSplit(
        tokens=tokens,
        doc_starts=np.asarray(entry["doc_starts"], dtype=np.int64),
        eos_id=manifest["tokenizer"]["eos_id"],
        vocab_size=manifest["tokenizer"]["vocab_size"],
    )


def load_tokenizer(data_dir: str | Path) -> Tokenizer:
    """The corpus tokenizer, set to encode text exactly as the corpus was encoded: a literal
    ``<|endoftext|>`` inside text is encoded as text, never as the EOS id."""
    path = Path(data_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: prepare the corpus with `selrope data prepare`")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.encode_special_tokens = True
    return tokenizer


def segment_ids_for_window(doc_starts: np.ndarray, start: int, length: int) -> np.ndarray:
    """Document index of each stream position ``start .. start + length - 1``.

    A document's leading EOS belongs to it; the stream's final EOS belongs to the last document.

    Args:
        doc_starts: (D,) int64 increasing offsets of the documents' leading EOS, first 0.
        start: first stream position, >= 0.
        length: number of positions, >= 0.

    Returns:
        (length,) int64 document indices (non-decreasing).
    """
    if start < 0:
        raise ValueError(f"start must be >= 0; got {start}")
    if length < 0:
        raise ValueError(f"length must be >= 0; got {length}")
    if len(doc_starts) == 0 or doc_starts[0] != 0:
        raise ValueError("doc_starts must be non-empty and start at 0 (the stream's first EOS)")
    positions = np.arange(start, start + length, dtype=np.int64)
    return np.searchsorted(doc_starts, positions, side="right").astype(np.int64) - 1
