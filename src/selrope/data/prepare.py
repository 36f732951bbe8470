"""``prepare_corpus``: documents -> tokenizer -> train/val token streams + manifest, atomically."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from selrope.data.documents import Corpus, read_default_corpus, read_inputs
from selrope.data.reader import FORMAT, FORMAT_VERSION, MANIFEST_FILE, SPLITS, TOKENIZER_FILE
from selrope.data.split import split_by_fraction, split_by_patterns
from selrope.data.tokenizer import (
    EOS_TOKEN,
    byte_tokenizer,
    chunk_stream,
    encode_documents,
    parse_tokenizer_spec,
    token_dtype,
    train_bpe,
)


def read_corpus(inputs: Sequence[str | Path] | None, default: bool) -> Corpus:
    """The documents of ``inputs``, or of the embedded stdlib corpus when ``default``.

    Raises:
        ValueError: naming ``--input`` / ``--default`` when both or neither are given, or when
            the corpus holds no text.
    """
    if default and inputs:
        raise ValueError("--input and --default are exclusive: give one")
    if not default and not inputs:
        raise ValueError("--input: give at least one file or folder (or --default)")
    corpus = read_default_corpus() if default else read_inputs(list(inputs))
    if not any(document.text for document in corpus.documents):
        where = "--default" if default else f"--input {' '.join(map(str, inputs))}"
        raise ValueError(f"{where}: the corpus is empty (no document with any text)")
    return corpus


def build_stream(documents: Sequence[np.ndarray], eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The stream ``EOS d1 EOS d2 ... EOS dn EOS`` and the offsets of each leading EOS.

    Args:
        documents: n arrays (n_d,) of token ids, one dtype.
        eos_id: the EOS token id.

    Returns:
        tokens (N,) with N = n + 1 + sum(n_d), same dtype; doc_starts (n,) int64.
    """
    lengths = np.array([len(ids) for ids in documents], dtype=np.int64)
    doc_starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
    eos = np.array([eos_id], dtype=documents[0].dtype)
    tokens = np.concatenate([part for ids in documents for part in (eos, ids)] + [eos])
    return tokens, doc_starts


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def prepare_corpus(
    inputs: Sequence[str | Path] | None,
    tokenizer: str,
    out_dir: str | Path,
    val_fraction: float = 0.05,
    val_documents: Sequence[str] | None = None,
    seed: int = 0,
    default: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenise a corpus into ``out_dir``: train.bin, val.bin, tokenizer.json, manifest.json.

    The split is by whole documents: those matching ``val_documents`` (fnmatch patterns on
    document names), else round(val_fraction * D) of them (at least 1) chosen by ``seed``. A BPE
    tokenizer is trained on the train documents only. Files are written to temporary names and
    renamed, the manifest last, after any old manifest is removed: a corpus is complete exactly
    when its manifest exists.

    Args:
        inputs: text files, folders of text files, ``.jsonl`` files (a ``text`` field per line).
        tokenizer: ``"byte"`` or ``"bpe:VOCAB"``.
        out_dir: output folder, created if needed.
        val_fraction: share of documents held out when ``val_documents`` is not given.
        val_documents: fnmatch patterns naming the val documents.
        seed: seed of the document permutation behind ``val_fraction``.
        default: use the CPython standard library's ``.py`` files instead of ``inputs``.
        progress: show a tqdm bar while tokenising.

    Returns:
        The manifest (see ``selrope.data.reader`` for the layout of the files).

    Raises:
        ValueError: naming the argument for a missing path, an empty corpus, a bad ``tokenizer``,
            a bad JSONL line, or a val split that would be empty or take every document.
    """
    started = time.perf_counter()
    kind, vocab = parse_tokenizer_spec(tokenizer)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a folder")
    corpus = read_corpus(inputs, default)
    names = [document.name for document in corpus.documents]
    texts = [document.text for document in corpus.documents]
    if val_documents is not None:
        is_val = split_by_patterns(names, val_documents)
        rule: dict[str, Any] = {"seed": seed, "val_documents": list(val_documents)}
    else:
        is_val = split_by_fraction(len(names), val_fraction, seed)
        rule = {"seed": seed, "val_fraction": val_fraction}

    if kind == "byte":
        hf_tokenizer = byte_tokenizer()
    else:
        train_texts = [text for text, held_out in zip(texts, is_val, strict=True) if not held_out]
        hf_tokenizer = train_bpe(chunk_stream(train_texts), vocab)
    vocab_size = hf_tokenizer.get_vocab_size()
    eos_id = hf_tokenizer.token_to_id(EOS_TOKEN)
    dtype = token_dtype(vocab_size)
    encoded = encode_documents(hf_tokenizer, texts, dtype, progress)

    streams, splits = {}, {}
    for split, members in zip(SPLITS, (~is_val, is_val), strict=True):
        indices = np.flatnonzero(members)
        tokens, doc_starts = build_stream([encoded[i] for i in indices], eos_id)
        streams[split] = tokens
        splits[split] = {
            "file": f"{split}.bin",
            "tokens": int(tokens.size),
            "documents": int(indices.size),
            "bytes": sum(len(texts[i].encode("utf-8")) for i in indices),
            "doc_starts": doc_starts.tolist(),
            "names": [names[i] for i in indices],
        }
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tokenizer": {
            "kind": kind,
            "spec": tokenizer,
            "vocab_size": vocab_size,
            "eos_id": eos_id,
            "eos_token": EOS_TOKEN,
            "file": TOKENIZER_FILE,
        },
        "dtype": dtype.name,
        "splits": splits,
        "inputs": corpus.inputs,
        "skipped": corpus.skipped,
        "replaced_bytes": corpus.replaced_bytes,
        "split_rule": rule,
        "python": platform.python_version(),
    }
    write_corpus(out, hf_tokenizer, streams, manifest)
    manifest["seconds"] = round(time.perf_counter() - started, 3)
    write_atomically(out / MANIFEST_FILE, json.dumps(manifest, indent=1).encode())
    return manifest


def write_corpus(
    out: Path, tokenizer: Tokenizer, streams: dict[str, np.ndarray], manifest: dict[str, Any]
) -> None:
    """Everything but the manifest, each file renamed into place once written; an old manifest
    is removed first so that a half-replaced corpus never looks complete."""
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    for split, tokens in streams.items():
        write_atomically(out / manifest["splits"][split]["file"], tokens.tobytes())
    write_atomically(out / TOKENIZER_FILE, tokenizer.to_str(pretty=True).encode())
