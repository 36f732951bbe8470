"""Reading corpus folders in tests the way other tools would (imported as ``corpus_helpers``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_llmc_shard(path: Path) -> np.ndarray:
    """A token shard read the way llm.c's and modded-nanogpt's loaders read one: 256 int32 of
    header (magic, version, token count), then the tokens."""
    header = np.fromfile(path, dtype="<i4", count=256)
    assert header[0] in (20240520, 20240801), f"{path}: magic {header[0]}"
    dtype = np.uint16 if header[0] == 20240520 else np.uint32
    assert header[1] == (1 if dtype == np.uint16 else 7)
    tokens = np.fromfile(path, dtype=dtype, offset=256 * 4)
    assert len(tokens) == header[2], f"{path}: header says {header[2]} tokens, has {len(tokens)}"
    return tokens


def split_stream(out: Path, split: str) -> np.ndarray:
    """The tokens of every shard of ``split`` in ``out``, concatenated in name order."""
    return np.concatenate([read_llmc_shard(p) for p in sorted(out.glob(f"{split}_*.bin"))])


def documents_of(stream: np.ndarray, eos: int) -> list[list[int]]:
    """The documents of a stream ``EOS d1 EOS d2 ... EOS dn EOS``, as lists of ids."""
    assert stream[0] == eos and stream[-1] == eos
    cuts = np.flatnonzero(stream == eos)
    return [stream[a + 1 : b].tolist() for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def corpus_files(out: Path) -> dict[str, bytes]:
    """Every file of a corpus folder but the manifest (which records the time it took)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "manifest.json"}
