"""Opening a corpus folder: checked cheaply, its token shards memory-mapped, nothing read whole.

Three kinds of folder are read, all as two splits of shards in llm.c's format or raw tokens:

- a corpus of ``selrope data prepare`` (format version 2)::

      manifest.json          written last: its presence marks a complete corpus
      tokenizer.json         a Hugging Face tokenizers file
      train_000000.bin ...   llm.c shards (``selrope.data.shards``), a split's stream cut in order
      train_000000.idx ...   each shard's document starts (and where the prepare continued)
      val_000000.bin / .idx

- a corpus of the first release (version 1): ``train.bin`` / ``val.bin`` raw tokens, with the
  document starts in ``manifest.json``;
- shards made elsewhere, llm.c's or modded-nanogpt's (``fineweb_train_000001.bin``,
  ``fineweb_val_000000.bin``): every ``*train*.bin`` and ``*val*.bin`` in the folder, in name
  order, with a ``tokenizer.json`` beside them or the vocabulary size and end-of-text id given;
  documents are found from the end-of-text tokens.

Each split's stream is ``EOS d1 EOS d2 ... EOS dn`` (selrope adds one final EOS): every document
follows an end-of-text token, which also serves as BOS, and a literal ``<|endoftext|>`` inside a
text was encoded as text, so end-of-text tokens mark exactly the document starts.

Opening checks, without reading the tokens: every shard's header against its size and the
manifest (dtype, token count), each index against its shard, the largest token id recorded at
prepare time against the vocabulary, the tokenizer file against its recorded sha256. A corpus
that disagrees with its metadata is refused with a ValueError naming ``--data`` and the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from selrope.common.files import TOKENIZER_FILE
from selrope.data.shards import (
    ShardHeader,
    TokenStream,
    map_shard,
    read_doc_starts,
    read_index_header,
    read_shard_header,
)
from selrope.data.tokenizer import find_eos_token, vocab_size_of

FORMAT = "selrope.data"
FORMAT_VERSION = 2
LEGACY_VERSION = 1
MANIFEST_FILE = "manifest.json"

SPLITS = ("train", "val")
TOKEN_DTYPES = ("uint16", "uint32")


class TokenSplit:
    """One split of a corpus: its token stream and where its documents start.

    Args:
        tokens: (N,) uint16/uint32 read-only memmap (one shard) or ``TokenStream`` (several),
            ``EOS d1 EOS d2 ... EOS dn [EOS]``.
        doc_starts: (D,) int64 offsets of each document's leading EOS, increasing, first 0; or
            a function computing them on first use; or None to find them from the EOS tokens.
        eos_id: id of the end-of-text token.
        vocab_size: number of token ids (all ids are below it).
    """

    def __init__(
        self,
        tokens: np.ndarray | TokenStream,
        doc_starts: np.ndarray | Callable[[], np.ndarray] | None,
        eos_id: int,
        vocab_size: int,
    ):
        self.tokens, self.eos_id, self.vocab_size = tokens, int(eos_id), int(vocab_size)
        self._doc_starts = doc_starts

    @property
    def doc_starts(self) -> np.ndarray:
        """(D,) int64 offsets of the documents' leading EOS (read on first use)."""
        if self._doc_starts is None:
            self._doc_starts = lambda: eos_positions(self.tokens, self.eos_id)
        if callable(self._doc_starts):
            self._doc_starts = np.asarray(self._doc_starts(), dtype=np.int64)
        return self._doc_starts

    def __repr__(self) -> str:
        return (
            f"TokenSplit({len(self.tokens)} tokens, eos_id={self.eos_id}, vocab={self.vocab_size})"
        )


def eos_positions(
    tokens: np.ndarray | TokenStream, eos_id: int, block: int = 1 << 26
) -> np.ndarray:
    """(D,) int64 positions of every ``eos_id`` in ``tokens``, read block by block."""
    found = [
        np.flatnonzero(np.asarray(tokens[start : start + block]) == eos_id) + start
        for start in range(0, len(tokens), block)
    ]
    return np.concatenate(found).astype(np.int64) if found else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Shard:
    """One token file of a split: path, header, and what the manifest / index recorded."""

    path: Path
    header: ShardHeader
    index: Path | None = None
    documents: int | None = None
    max_id: int | None = None


@dataclass(frozen=True)
class CorpusInfo:
    """An opened, checked corpus folder.

    Attributes:
        path: the folder.
        kind: "selrope" (version 2), "selrope-v1" or "llm.c" (shards made elsewhere).
        vocab_size: token ids are below it.
        eos_id: the end-of-text id.
        dtype: token dtype, uint16 or uint32.
        splits: "train" and "val" -> their shards in stream order.
        tokenizer_file: the tokenizer.json, or None when there is none.
        manifest: the manifest, or None (llm.c shards).
    """

    path: Path
    kind: str
    vocab_size: int
    eos_id: int
    dtype: np.dtype
    splits: dict[str, list[Shard]]
    tokenizer_file: Path | None
    manifest: dict[str, Any] | None

    def tokens(self, split: str) -> int:
        """Tokens of ``split``."""
        return sum(shard.header.tokens for shard in self.splits[split])


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
    try:
        manifest = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(
            f"--data {data_dir}: {MANIFEST_FILE} is not valid JSON ({error})"
        ) from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or manifest.get("version") not in (LEGACY_VERSION, FORMAT_VERSION)
    ):
        found = manifest.get("version") if isinstance(manifest, dict) else None
        raise ValueError(
            f"{path}: expected format {FORMAT!r} version {LEGACY_VERSION} or {FORMAT_VERSION}; "
            f"got version {found!r}"
        )
    return manifest


def open_corpus(
    data_dir: str | Path, *, vocab_size: int | None = None, eos_id: int | None = None
) -> CorpusInfo:
    """Open and check the corpus folder ``data_dir`` (any of the three kinds above).

    Args:
        data_dir: the folder.
        vocab_size: the vocabulary size, needed for shards without a tokenizer.json; for a
            prepared corpus it may exceed the tokenizer's (a padded embedding), never undercut it.
        eos_id: the end-of-text id, needed for shards without a tokenizer.json; must agree with
            a prepared corpus.

    Raises:
        FileNotFoundError: naming the folder when it holds neither a manifest nor shards, or a
            file the manifest lists.
        ValueError: naming ``--data`` and the file for every disagreement between the metadata
            and the data, and for missing ``--vocab-size`` / ``--eos-id``.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"--data {data_dir}: no such folder (prepare one with `selrope data prepare --out "
            f"{data_dir}`; its manifest.json marks it complete)"
        )
    if (folder / MANIFEST_FILE).is_file():
        manifest = load_manifest(folder)
        if manifest["version"] == LEGACY_VERSION:
            info = _open_legacy(folder, manifest)
        else:
            info = _open_prepared(folder, manifest)
    else:
        info = _open_llmc(folder, vocab_size, eos_id)
    return _with_overrides(info, vocab_size, eos_id)


def _with_overrides(info: CorpusInfo, vocab_size: int | None, eos_id: int | None) -> CorpusInfo:
    where = f"--data {info.path}"
    if info.tokenizer_file is None and (vocab_size is None or eos_id is None):
        raise ValueError(
            f"{where}: no {TOKENIZER_FILE} beside the shards: give --vocab-size and --eos-id "
            "(GPT-2's tokenizer: --vocab-size 50257 --eos-id 50256)"
        )
    if vocab_size is not None:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"--vocab-size must be an integer >= 2; got {vocab_size!r}")
        if vocab_size < info.vocab_size:
            raise ValueError(
                f"--vocab-size {vocab_size} is below the corpus tokenizer's {info.vocab_size} "
                f"({where})"
            )
    if eos_id is not None and info.eos_id >= 0 and eos_id != info.eos_id:
        raise ValueError(
            f"--eos-id {eos_id} disagrees with the corpus tokenizer's end-of-text id "
            f"{info.eos_id} ({where})"
        )
    vocab = info.vocab_size if vocab_size is None else vocab_size
    eos = info.eos_id if eos_id is None else eos_id
    if vocab > 1 << 32:
        raise ValueError(f"--vocab-size {vocab}: token ids are at most 32-bit")
    for split, shards in info.splits.items():
        for shard in shards:
            if shard.max_id is not None and shard.max_id >= vocab:
                raise ValueError(
                    f"{where}: {shard.path.name} holds token id {shard.max_id}, at or above the "
                    f"vocabulary size {vocab} ({split} split)"
                )
    if isinstance(eos, bool) or not isinstance(eos, int) or not 0 <= eos < vocab:
        if eos_id is not None:
            raise ValueError(f"--eos-id must be an integer in [0, {vocab}); got {eos!r}")
        raise ValueError(
            f"{where}: the end-of-text id {eos} is not below the vocabulary size {vocab}"
        )
    return CorpusInfo(info.path, info.kind, vocab, eos, info.dtype, info.splits,
                      info.tokenizer_file, info.manifest)  # fmt: skip


def _tokenizer_file(folder: Path, manifest: dict[str, Any]) -> Path | None:
    """The corpus tokenizer.json when present, checked against the manifest's sha256."""
    path = folder / TOKENIZER_FILE
    if not path.is_file():
        return None
    recorded = manifest.get("tokenizer", {}).get("sha256")
    if recorded is not None and hashlib.sha256(path.read_bytes()).hexdigest() != recorded:
        raise ValueError(
            f"--data {folder}: {TOKENIZER_FILE} is not the tokenizer the corpus was written with "
            "(its sha256 differs from the manifest's)"
        )
    return path


def _manifest_tokenizer(folder: Path, manifest: dict[str, Any]) -> tuple[int, int]:
    tokenizer = manifest.get("tokenizer")
    try:
        return int(tokenizer["vocab_size"]), int(tokenizer["eos_id"])
    except (TypeError, KeyError, ValueError):
        raise ValueError(
            f"--data {folder}: {MANIFEST_FILE} has no tokenizer vocab_size / eos_id"
        ) from None


def _manifest_dtype(folder: Path, manifest: dict[str, Any]) -> np.dtype:
    if manifest.get("dtype") not in TOKEN_DTYPES:
        raise ValueError(
            f"--data {folder}: {MANIFEST_FILE} dtype must be one of {TOKEN_DTYPES}; "
            f"got {manifest.get('dtype')!r}"
        )
    return np.dtype(manifest["dtype"])


def _split_entry(folder: Path, manifest: dict[str, Any], split: str) -> dict[str, Any]:
    entry = (manifest.get("splits") or {}).get(split)
    if not isinstance(entry, dict):
        raise ValueError(f"--data {folder}: {MANIFEST_FILE} lists no {split!r} split")
    return entry


def _open_prepared(folder: Path, manifest: dict[str, Any]) -> CorpusInfo:
    vocab_size, eos_id = _manifest_tokenizer(folder, manifest)
    dtype = _manifest_dtype(folder, manifest)
    splits: dict[str, list[Shard]] = {}
    for split in SPLITS:
        entry = _split_entry(folder, manifest, split)
        shards = []
        for record in entry.get("shards") or []:
            shards.append(_checked_shard(folder, record, dtype))
        if not shards:
            raise ValueError(f"--data {folder}: the {split!r} split lists no shards")
        total = sum(shard.header.tokens for shard in shards)
        if total != entry.get("tokens"):
            raise ValueError(
                f"--data {folder}: the {split!r} split lists {entry.get('tokens')} tokens, its "
                f"shards hold {total}"
            )
        splits[split] = shards
    return CorpusInfo(folder, "selrope", vocab_size, eos_id, dtype, splits,
                      _tokenizer_file(folder, manifest), manifest)  # fmt: skip


def _checked_shard(folder: Path, record: dict[str, Any], dtype: np.dtype) -> Shard:
    """One shard of a prepared corpus, its header and index checked against the manifest."""
    path = folder / str(record.get("file"))
    index = folder / str(record.get("index"))
    for file in (path, index):
        if not file.is_file():
            raise FileNotFoundError(
                f"--data {folder}: {file.name} not found, though {MANIFEST_FILE} lists it"
            )
    header = read_shard_header(path)
    where = f"--data {folder}: {path.name}"
    if header.dtype != dtype:
        raise ValueError(
            f"{where} holds {header.dtype.name} tokens, the manifest says {dtype.name}"
        )
    if header.tokens != record.get("tokens"):
        raise ValueError(
            f"{where} holds {header.tokens} tokens, the manifest says {record.get('tokens')}"
        )
    index_header = read_index_header(index)
    recorded = (record.get("documents"), record.get("max_id"))
    if (
        index_header.tokens != header.tokens
        or (index_header.documents, index_header.max_id) != recorded
    ):
        raise ValueError(
            f"--data {folder}: {index.name} disagrees with {path.name} or the manifest"
        )
    starts = read_doc_starts(index, index_header)
    if len(starts) and not 0 <= int(starts[0]) <= int(starts[-1]) < header.tokens:
        raise ValueError(
            f"--data {folder}: {index.name} lists document starts past the end of {path.name} "
            f"({int(starts[-1])} >= {header.tokens} tokens)"
        )
    return Shard(path, header, index, index_header.documents, index_header.max_id)


def _open_legacy(folder: Path, manifest: dict[str, Any]) -> CorpusInfo:
    """A version-1 corpus (one raw token file per split): small by construction, so its
    document starts and largest id are checked against the tokens themselves."""
    vocab_size, eos_id = _manifest_tokenizer(folder, manifest)
    dtype = _manifest_dtype(folder, manifest)
    splits = {}
    for split in SPLITS:
        entry = _split_entry(folder, manifest, split)
        path = folder / str(entry.get("file"))
        if not path.is_file():
            raise FileNotFoundError(
                f"--data {folder}: {path.name} not found, though {MANIFEST_FILE} lists it"
            )
        tokens = int(entry.get("tokens", -1))
        if path.stat().st_size != tokens * dtype.itemsize:
            raise ValueError(
                f"--data {folder}: {path.name}: {path.stat().st_size} bytes, but the manifest says "
                f"{tokens} tokens of {dtype.name}"
            )
        data = (
            np.memmap(path, dtype=dtype, mode="r", shape=(tokens,))
            if tokens
            else np.zeros(0, dtype)
        )
        starts = np.asarray(entry.get("doc_starts", []), dtype=np.int64)
        if (
            len(starts) == 0
            or starts[0] != 0
            or starts[-1] >= tokens
            or np.any(np.diff(starts) <= 0)
        ):
            raise ValueError(
                f"--data {folder}: the {split!r} document starts of {MANIFEST_FILE} do not fit "
                f"{path.name} ({tokens} tokens)"
            )
        if np.any(data[starts] != eos_id):
            raise ValueError(
                f"--data {folder}: {path.name} has no end-of-text token at a listed document start"
            )
        max_id = int(data.max()) if tokens else -1
        header = ShardHeader(dtype, tokens)
        splits[split] = [Shard(path, header, None, len(starts), max_id)]
    return CorpusInfo(folder, "selrope-v1", vocab_size, eos_id, dtype, splits,
                      _tokenizer_file(folder, manifest), manifest)  # fmt: skip


def _open_llmc(folder: Path, vocab_size: int | None, eos_id: int | None) -> CorpusInfo:
    """Shards made elsewhere: ``*train*.bin`` and ``*val*.bin`` with llm.c headers."""
    files = sorted(p for p in folder.glob("*.bin") if p.is_file())
    splits = {split: [p for p in files if split in p.name] for split in SPLITS}
    if not files:
        raise FileNotFoundError(
            f"--data {folder}: no {MANIFEST_FILE} (a corpus of `selrope data prepare`; an "
            "interrupted prepare leaves none) and no llm.c shards (*train*.bin, *val*.bin)"
        )
    for split, paths in splits.items():
        if not paths:
            raise ValueError(
                f"--data {folder}: no *{split}*.bin shard (llm.c shards need both splits)"
            )
    both = set(splits["train"]) & set(splits["val"])
    if both:
        raise ValueError(f"--data {folder}: {sorted(both)[0].name} names both train and val")
    shards = {
        split: [Shard(p, read_shard_header(p)) for p in paths] for split, paths in splits.items()
    }
    dtypes = {shard.header.dtype for split in shards.values() for shard in split}
    if len(dtypes) > 1:
        raise ValueError(f"--data {folder}: shards of uint16 and uint32 tokens mixed")
    tokenizer_file = folder / TOKENIZER_FILE
    vocab, eos = vocab_size, eos_id
    if tokenizer_file.is_file():
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        vocab = vocab_size_of(tokenizer)
        eos = (
            eos_id
            if eos_id is not None
            else find_eos_token(tokenizer, None, f"--data {tokenizer_file}")[1]
        )
    else:
        tokenizer_file = None
    return CorpusInfo(folder, "llm.c", vocab or 0, -1 if eos is None else eos, dtypes.pop(),
                      shards, tokenizer_file, None)  # fmt: skip


def split_tokens(info: CorpusInfo, split: str) -> np.ndarray | TokenStream:
    """The token stream of ``split``: the memmap of its one shard, or a ``TokenStream``."""
    shards = info.splits[split]
    if info.kind == "selrope-v1":
        shard = shards[0]
        if shard.header.tokens == 0:
            return np.zeros(0, dtype=info.dtype)
        return np.memmap(shard.path, dtype=info.dtype, mode="r", shape=(shard.header.tokens,))
    if len(shards) == 1:
        return map_shard(shards[0].path, shards[0].header)
    return TokenStream([shard.path for shard in shards], [shard.header for shard in shards])


def split_doc_starts(info: CorpusInfo, split: str) -> Callable[[], np.ndarray] | None:
    """How to find the document starts of ``split``: from the manifest (version 1), the shards'
    indexes (version 2), or None: from the end-of-text tokens (llm.c shards)."""
    if info.kind == "selrope-v1":
        starts = info.manifest["splits"][split]["doc_starts"]
        return lambda: np.asarray(starts, dtype=np.int64)
    if info.kind == "llm.c":
        return None
    shards = info.splits[split]

    def from_indexes() -> np.ndarray:
        parts, offset = [], 0
        for shard in shards:
            parts.append(read_doc_starts(shard.index, read_index_header(shard.index)) + offset)
            offset += shard.header.tokens
        return np.concatenate(parts).astype(np.int64)

    return from_indexes


def load_split(
    data_dir: str | Path, split: str, *, vocab_size: int | None = None, eos_id: int | None = None
) -> TokenSplit:
    """The ``split`` ("train" or "val") of the corpus in ``data_dir``, memory-mapped.

    Args:
        data_dir: a corpus folder (see the module docstring for the three kinds).
        split: "train" or "val".
        vocab_size, eos_id: see ``open_corpus``.

    Raises:
        ValueError: for another split name, and every refusal of ``open_corpus``.
        FileNotFoundError: when the folder, its manifest or a listed file is missing.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    info = open_corpus(data_dir, vocab_size=vocab_size, eos_id=eos_id)
    return TokenSplit(split_tokens(info, split), split_doc_starts(info, split), info.eos_id,
                      info.vocab_size)  # fmt: skip


def corpus_fingerprint(
    data_dir: str | Path, *, vocab_size: int | None = None, eos_id: int | None = None
) -> dict[str, Any]:
    """What identifies a corpus, cheaply: the tokenizer file's sha256, the vocabulary size, the
    end-of-text id, and per split its token count and shard names.

    Two folders with equal fingerprints hold the same tokenizer and shards of the same sizes;
    a run records it and refuses to resume or evaluate on a corpus with another one.
    """
    info = open_corpus(data_dir, vocab_size=vocab_size, eos_id=eos_id)
    digest = None
    if info.tokenizer_file is not None:
        digest = hashlib.sha256(info.tokenizer_file.read_bytes()).hexdigest()
    return {
        "kind": info.kind,
        "tokenizer_sha256": digest,
        "vocab_size": info.vocab_size,
        "eos_id": info.eos_id,
        "dtype": info.dtype.name,
        "splits": {
            split: {"tokens": info.tokens(split), "shards": [s.path.name for s in shards]}
            for split, shards in info.splits.items()
        },
    }


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
