"""Token shards in llm.c's format, their document-start index, and a stream over several shards.

A shard (``train_000000.bin``) is what llm.c's ``dev/data`` scripts and modded-nanogpt write and
read: a header of 256 little-endian int32 ``[magic, version, n_tokens, 0, ...]`` (magic 20240520,
version 1 for uint16 tokens; magic 20240801, version 7 for uint32 tokens), then the n_tokens
tokens, little-endian. Every document is preceded by the end-of-text token and documents run on
across shard boundaries: a split is the concatenation of its shards.

Beside each selrope shard lies its index (``train_000000.idx``), little-endian int64::

    [INDEX_MAGIC, INDEX_VERSION, n_documents, n_tokens, max_id, next_document, next_offset, 0]
    n_documents offsets (within the shard) of each document's leading end-of-text token

``next_document`` / ``next_offset`` say where the split continues in the input after this shard
(the input document, counted over every split, and how many of its tokens this and earlier
shards hold), so that an interrupted ``prepare_corpus`` resumes after its last complete shard.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import numpy as np

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
# (magic, version) of llm.c's token files, by token dtype.
SHARD_VERSIONS = {np.dtype(np.uint16): (20240520, 1), np.dtype(np.uint32): (20240801, 7)}
MAX_SHARD_TOKENS = 2**31 - 1  # n_tokens is an int32 in the header
INDEX_MAGIC = 0x73656C726F706531  # "selrope1"
INDEX_VERSION = 1
INDEX_HEADER_INTS = 8
MAX_OPEN_SHARDS = 128  # memory maps held open at once by a TokenStream (one descriptor each)


def shard_header(dtype: np.dtype, n_tokens: int) -> bytes:
    """The 1024-byte llm.c header of a shard of ``n_tokens`` tokens of ``dtype``."""
    if np.dtype(dtype) not in SHARD_VERSIONS:
        raise ValueError(f"token dtype must be uint16 or uint32; got {np.dtype(dtype).name}")
    if not 0 <= n_tokens <= MAX_SHARD_TOKENS:
        raise ValueError(f"a shard holds at most {MAX_SHARD_TOKENS} tokens; got {n_tokens}")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (*SHARD_VERSIONS[np.dtype(dtype)], n_tokens)
    return header.tobytes()


class ShardHeader(NamedTuple):
    """What a shard's header says: its token dtype and token count."""

    dtype: np.dtype
    tokens: int


def read_shard_header(path: str | Path) -> ShardHeader:
    """The header of the shard at ``path``, checked against the file's size.

    Raises:
        ValueError: naming the file when the magic / version is not llm.c's, or the size is not
            ``1024 + n_tokens * itemsize``.
    """
    path = Path(path)
    with open(path, "rb") as file:
        raw = file.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES:
        raise ValueError(f"{path}: {len(raw)} bytes, shorter than llm.c's 1024-byte header")
    magic, version, n_tokens = (int(v) for v in np.frombuffer(raw, dtype="<i4", count=3))
    by_version = {value: dtype for dtype, value in SHARD_VERSIONS.items()}
    if (magic, version) not in by_version:
        raise ValueError(
            f"{path}: not an llm.c token shard (header magic {magic}, version {version}; "
            "expected 20240520 v1 for uint16 or 20240801 v7 for uint32)"
        )
    dtype = by_version[(magic, version)]
    expected = HEADER_BYTES + n_tokens * dtype.itemsize
    size = path.stat().st_size
    if n_tokens < 0 or size != expected:
        raise ValueError(
            f"{path}: {size} bytes, but its header says {n_tokens} tokens of {dtype.name} "
            f"({expected} bytes)"
        )
    return ShardHeader(dtype, n_tokens)


def map_shard(path: str | Path, header: ShardHeader) -> np.ndarray:
    """The tokens of a shard, memory-mapped read-only: ``(n_tokens,)`` of ``header.dtype``."""
    if header.tokens == 0:
        return np.zeros(0, dtype=header.dtype)
    return np.memmap(path, dtype=header.dtype.newbyteorder("<"), mode="r",
                     offset=HEADER_BYTES, shape=(header.tokens,))  # fmt: skip


class IndexHeader(NamedTuple):
    """The header of a shard's document-start index (see the module docstring)."""

    documents: int
    tokens: int
    max_id: int
    next_document: int
    next_offset: int


def index_bytes(header: IndexHeader, doc_starts: np.ndarray) -> bytes:
    """The index file of one shard: its header and ``doc_starts`` ``(n_documents,)`` int64."""
    head = np.array([INDEX_MAGIC, INDEX_VERSION, *header, 0], dtype="<i8")
    return head.tobytes() + np.asarray(doc_starts, dtype="<i8").tobytes()


def read_index_header(path: str | Path) -> IndexHeader:
    """The header of the index at ``path``, checked against the file's size.

    Raises:
        ValueError: naming the file when it is no selrope index or its size disagrees.
    """
    path = Path(path)
    with open(path, "rb") as file:
        raw = file.read(INDEX_HEADER_INTS * 8)
    values = np.frombuffer(raw, dtype="<i8") if len(raw) == INDEX_HEADER_INTS * 8 else None
    if values is None or values[0] != INDEX_MAGIC or values[1] != INDEX_VERSION:
        raise ValueError(f"{path}: not a selrope document index (version {INDEX_VERSION})")
    header = IndexHeader(*(int(v) for v in values[2:7]))
    expected = (INDEX_HEADER_INTS + header.documents) * 8
    if path.stat().st_size != expected:
        raise ValueError(
            f"{path}: {path.stat().st_size} bytes, but its header lists {header.documents} "
            f"documents ({expected} bytes)"
        )
    return header


def read_doc_starts(path: str | Path, header: IndexHeader) -> np.ndarray:
    """The document starts of an index, memory-mapped: ``(n_documents,)`` int64."""
    if header.documents == 0:
        return np.zeros(0, dtype=np.int64)
    return np.memmap(path, dtype="<i8", mode="r", offset=INDEX_HEADER_INTS * 8,
                     shape=(header.documents,))  # fmt: skip


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a hidden temporary beside ``path``, then rename it over ``path``."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


class TokenStream:
    """One split's token stream: its shards, memory-mapped on first use, read as one array.

    Supports ``len``, ``size``, ``dtype``, integer and slice reads (``stream[a:b]`` copies only
    those tokens, across shard boundaries) and ``numpy.asarray(stream)`` (reads everything).

    Args:
        paths: the shard files, in stream order.
        headers: their headers (``read_shard_header``), one dtype.
    """

    def __init__(self, paths: list[Path], headers: list[ShardHeader]):
        if not paths or len(paths) != len(headers):
            raise ValueError("a TokenStream needs one header per shard and at least one shard")
        dtypes = {header.dtype for header in headers}
        if len(dtypes) != 1:
            raise ValueError(
                f"shards of one split must share a dtype; got {sorted(map(str, dtypes))}"
            )
        self.paths, self.headers = list(paths), list(headers)
        self.dtype = dtypes.pop()
        self.offsets = np.cumsum([0, *(header.tokens for header in headers)]).astype(np.int64)
        self.size = int(self.offsets[-1])
        self.shape = (self.size,)
        self.ndim = 1
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return self.size

    def shard(self, index: int) -> np.ndarray:
        """The tokens of shard ``index``, memory-mapped (the least recently used map is closed
        once ``MAX_OPEN_SHARDS`` are open)."""
        if index in self._maps:
            self._maps.move_to_end(index)
            return self._maps[index]
        tokens = map_shard(self.paths[index], self.headers[index])
        self._maps[index] = tokens
        if len(self._maps) > MAX_OPEN_SHARDS:
            self._maps.popitem(last=False)
        return tokens

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``start .. stop - 1`` of the stream, copied: ``(stop - start,)``."""
        if not 0 <= start <= stop <= self.size:
            raise IndexError(f"tokens {start}:{stop} out of range for a stream of {self.size}")
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        pieces, position = [], start
        index = first
        while position < stop:
            begin = int(self.offsets[index])
            end = min(stop, int(self.offsets[index + 1]))
            pieces.append(self.shard(index)[position - begin : end - begin])
            position = end
            index += 1
        if not pieces:
            return np.zeros(0, dtype=self.dtype)
        return np.concatenate(pieces) if len(pieces) > 1 else np.array(pieces[0])

    def __getitem__(self, key: int | slice) -> np.ndarray | np.integer:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.size)
            if step != 1:
                return self.read(0, self.size)[key]
            return self.read(start, max(start, stop))
        if isinstance(key, (int, np.integer)):
            index = int(key) + self.size if key < 0 else int(key)
            return self.read(index, index + 1)[0]
        positions = np.asarray(key, dtype=np.int64)
        shard = np.searchsorted(self.offsets, positions, side="right") - 1
        out = np.empty(positions.shape, dtype=self.dtype)
        for index in np.unique(shard):
            chosen = shard == index
            out[chosen] = self.shard(int(index))[positions[chosen] - self.offsets[index]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        tokens = self.read(0, self.size)
        return tokens if dtype is None else tokens.astype(dtype)
