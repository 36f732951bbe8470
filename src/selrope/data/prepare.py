"""``prepare_corpus``: documents -> tokenizer -> train / val shards + index + manifest, streaming.

The steps, each finished before the next starts:

1. check every argument and list every input (``documents.scan_inputs``): refusals come here,
   before anything is written or tokenised;
2. settle the tokenizer (``byte``; ``bpe:N`` trained on the first ``tokenizer_sample_bytes`` of
   the train documents; a ``tokenizer.json`` copied unchanged) and write it with
   ``prepare.json``, the arguments of this run;
3. read the documents in order, tokenise them in batches (in ``workers`` processes, results
   taken in order) and append each to its split's shard; a full shard is closed and renamed
   into place with its index (``selrope.data.shards``);
4. write ``manifest.json`` last: a corpus is complete exactly when its manifest exists.

Memory holds a few batches of text, never a shard or the corpus. A run that is killed and
started again with the same arguments keeps the complete shards and continues after them
(``prepare.json`` and the indexes say where); the bytes written depend on nothing but the
arguments and the inputs (not on ``workers``, nor on where a run was interrupted).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from selrope.data.documents import (
    InputPlan,
    InputReader,
    scan_default_corpus,
    scan_inputs,
    val_patterns_check,
)
from selrope.data.reader import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    SPLITS,
    TOKENIZER_FILE,
)
from selrope.data.shards import (
    MAX_SHARD_TOKENS,
    IndexHeader,
    index_bytes,
    read_index_header,
    read_shard_header,
    shard_header,
    write_file_atomically,
)
from selrope.data.split import ValByFraction, ValByPatterns
from selrope.data.tokenizer import (
    BATCH_CHARS,
    EOS_TOKEN,
    DocumentEncoder,
    TokenizerSpec,
    byte_tokenizer,
    chunk_stream,
    encode_in_worker,
    find_eos_token,
    load_tokenizer_file,
    parse_tokenizer_spec,
    token_dtype,
    train_bpe,
    vocab_size_of,
    worker_setup,
)

PREPARE_FILE = "prepare.json"
DEFAULT_SHARD_TOKENS = 100_000_000  # llm.c's and modded-nanogpt's shard size
DEFAULT_SAMPLE_BYTES = 50_000_000
SHARD_FILE = re.compile(r"^(train|val)_(\d{6})\.(bin|idx)$")
LEGACY_FILES = ("train.bin", "val.bin")  # format version 1


def shard_name(split: str, index: int, suffix: str = ".bin") -> str:
    """``train_000003.bin`` (or ``.idx``): the file of shard ``index`` of ``split``."""
    return f"{split}_{index:06d}{suffix}"


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    write_file_atomically(path, data)


def check_out_dir(out: Path) -> None:
    """Refuse an ``--out`` that cannot become a folder, before anything is written.

    Raises:
        ValueError: naming ``--out`` when it, or a folder above it, is a file, or when the
            nearest existing folder above it is not writable.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    existing = out
    while not existing.exists():
        if existing.is_symlink():
            raise ValueError(f"--out {out}: {existing} is a broken symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {existing} is not writable")


def check_options(
    spec: TokenizerSpec, eos_token: str | None, shard_tokens: int, sample_bytes: int,
    workers: int, text_field: str,
) -> None:  # fmt: skip
    """Refuse option values that cannot work, each naming its flag."""
    for flag, value, low, high in (
        ("--shard-tokens", shard_tokens, 1, MAX_SHARD_TOKENS),
        ("--tokenizer-sample-bytes", sample_bytes, 1, None),
        ("--workers", workers, 1, 1024),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < low
            or (high is not None and value > high)
        ):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ValueError(f"{flag} must be an integer {bound}; got {value!r}")
    if eos_token is not None and spec.kind != "file":
        raise ValueError(f"--eos-token applies to a tokenizer.json; byte and bpe:N use {EOS_TOKEN}")
    if not text_field:
        raise ValueError("--text-field must name a field; got ''")


def plan_inputs(
    inputs: Sequence[str | Path] | None, default: bool, text_field: str, out: Path
) -> InputPlan:
    """The checked list of input files and their document count.

    Raises:
        ValueError: naming ``--input`` / ``--default`` when both or neither are given, when the
            corpus holds no text, and for every refusal of ``scan_inputs``.
    """
    if default and inputs:
        raise ValueError("--input and --default are exclusive: give one")
    if not default and not inputs:
        raise ValueError("--input: give at least one file or folder (or --default)")
    plan = scan_default_corpus() if default else scan_inputs(list(inputs), text_field, out)
    if plan.documents == 0 or plan.bytes == 0:
        where = "--default" if default else f"--input {' '.join(map(str, inputs))}"
        raise ValueError(f"{where}: the corpus is empty (no document with any text)")
    return plan


def arguments_record(
    plan: InputPlan, spec: TokenizerSpec, spec_text: str, rule: dict, eos_token: str | None,
    sample_bytes: int, shard_tokens: int,
) -> dict[str, Any]:  # fmt: skip
    """Everything the bytes written depend on; a rerun resumes only when this is equal."""
    record: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "inputs": [entry["path"] for entry in plan.inputs],
        "inputs_fingerprint": plan.fingerprint(),
        "text_field": plan.text_field,
        "tokenizer": spec_text,
        "split_rule": rule,
        "shard_tokens": shard_tokens,
    }
    if spec.kind == "bpe":
        record["tokenizer_sample_bytes"] = sample_bytes
    if spec.kind == "file":
        record["tokenizer"] = str(spec.path.resolve())
        record["tokenizer_sha256"] = hashlib.sha256(spec.path.read_bytes()).hexdigest()
        record["eos_token"] = eos_token
    return record


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None when it is missing or unreadable."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def selrope_files(out: Path) -> list[Path]:
    """The files in ``out`` that prepare_corpus writes (shards, indexes, temporaries, ...)."""
    names = {MANIFEST_FILE, PREPARE_FILE, TOKENIZER_FILE, *LEGACY_FILES}
    found = []
    for path in out.iterdir():
        if path.is_file() and (
            path.name in names
            or SHARD_FILE.match(path.name)
            or (path.name.startswith(".") and path.name.endswith(".tmp"))
        ):
            found.append(path)
    return found


def settle_out_dir(out: Path, arguments: dict[str, Any], overwrite: bool) -> str:
    """What to do with ``out``: "new", "resume" (same arguments, unfinished) or "done".

    An out folder holding a corpus or an unfinished prepare of other arguments is refused, or
    with ``overwrite`` cleared of selrope's files (the manifest first); a non-empty folder of
    other files is refused.

    Raises:
        ValueError: naming ``--out``.
    """
    if not out.exists():
        return "new"
    manifest = read_json(out / MANIFEST_FILE)
    state = read_json(out / PREPARE_FILE)
    if manifest is not None and manifest.get("arguments") == arguments:
        (out / PREPARE_FILE).unlink(missing_ok=True)  # killed just after the manifest
        return "done"
    if state is not None and state.get("arguments") == arguments:
        return "resume"
    ours = selrope_files(out)
    others = [p for p in out.iterdir() if p not in ours and not p.name.startswith(".")]
    if others and not ours:
        raise ValueError(
            f"--out {out} is not empty and holds no selrope corpus (e.g. {others[0].name}); "
            "choose an empty or new folder"
        )
    if ours and not overwrite:
        what = "an unfinished prepare" if state is not None else "a corpus"
        raise ValueError(
            f"--out {out} holds {what} made with other arguments; give --overwrite to replace "
            "it, or choose another --out"
        )
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    for path in ours:
        path.unlink(missing_ok=True)
    return "new"


@dataclass
class ShardWriter:
    """Appends one split's documents to its shards, closing each at ``shard_tokens`` tokens.

    Attributes:
        shards: records of the complete shards ``{"file", "index", "tokens", "documents",
            "max_id"}``, in order.
        next_document, next_offset: where the split continues: documents before
            ``next_document`` are in complete shards, and so are the first ``next_offset``
            tokens of that one.
        finished: the split's last shard (with the stream's final end-of-text) is complete.
    """

    out: Path
    split: str
    dtype: np.dtype
    shard_tokens: int
    total_documents: int
    shards: list[dict[str, Any]] = field(default_factory=list)
    next_document: int = 0
    next_offset: int = 0
    finished: bool = False

    def __post_init__(self) -> None:
        self._file: Any = None
        self._count = 0
        self._starts: list[int] = []
        self._max_id = -1

    def tokens_to_skip(self, ordinal: int) -> int | None:
        """Leading tokens of document ``ordinal`` already in complete shards; None when all are
        (the document need not be tokenised)."""
        if self.finished or ordinal < self.next_document:
            return None
        return self.next_offset if ordinal == self.next_document else 0

    def append(self, ordinal: int, tokens: np.ndarray, skip: int, starts_document: bool = True):
        """Append ``tokens[skip:]`` of document ``ordinal`` (``EOS ids``), across shards."""
        position = skip
        while position < len(tokens):
            if self._file is None:
                self._open()
            if position == 0 and starts_document:
                self._starts.append(self._count)
            piece = tokens[position : position + self.shard_tokens - self._count]
            self._file.write(piece.tobytes())
            self._count += len(piece)
            self._max_id = max(self._max_id, int(piece.max()))
            position += len(piece)
            if self._count == self.shard_tokens:
                done = position == len(tokens)
                self._close(ordinal + 1 if done else ordinal, 0 if done else position)

    def append_block(self, ordinals: np.ndarray, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append whole documents at once: ``tokens`` holds ``EOS ids`` of each, ``lengths``
        their token counts and ``ordinals`` their input ordinals (the same shards as ``append``
        one by one)."""
        starts = np.cumsum(lengths) - lengths
        position = 0
        while position < len(tokens):
            if self._file is None:
                self._open()
            end = min(len(tokens), position + self.shard_tokens - self._count)
            first, last = np.searchsorted(starts, [position, end])
            self._starts.extend((starts[first:last] - position + self._count).tolist())
            piece = tokens[position:end]
            self._file.write(piece.tobytes())
            self._count += len(piece)
            self._max_id = max(self._max_id, int(piece.max()))
            position = end
            if self._count == self.shard_tokens:
                document = int(np.searchsorted(starts, end - 1, side="right")) - 1
                offset = end - int(starts[document])
                if offset == lengths[document]:
                    self._close(int(ordinals[document]) + 1, 0)
                else:
                    self._close(int(ordinals[document]), offset)

    def finish(self, eos_id: int) -> None:
        """End the stream with one end-of-text token and close the last shard."""
        if self.finished:
            return
        self.append(self.total_documents, np.array([eos_id], dtype=self.dtype), 0, False)
        if self._file is not None:
            self._close(self.total_documents, 0)
        self.finished = True

    def _temporary(self) -> Path:
        return self.out / f".{shard_name(self.split, len(self.shards))}.tmp"

    def _open(self) -> None:
        self._file = open(self._temporary(), "wb")  # noqa: SIM115 - closed in _close
        self._file.write(shard_header(self.dtype, 0))

    def _close(self, next_document: int, next_offset: int) -> None:
        file, self._file = self._file, None
        file.seek(0)
        file.write(shard_header(self.dtype, self._count))
        file.flush()
        os.fsync(file.fileno())
        file.close()
        index = len(self.shards)
        os.replace(self._temporary(), self.out / shard_name(self.split, index))
        header = IndexHeader(len(self._starts), self._count, self._max_id, next_document,
                             next_offset)  # fmt: skip
        write_file_atomically(
            self.out / shard_name(self.split, index, ".idx"), index_bytes(header, self._starts)
        )
        self.shards.append(shard_record(self.split, index, header))
        self.next_document, self.next_offset = next_document, next_offset
        self.finished = next_document >= self.total_documents
        self._count, self._starts, self._max_id = 0, [], -1


def shard_record(split: str, index: int, header: IndexHeader) -> dict[str, Any]:
    """The manifest's entry of one shard."""
    return {
        "file": shard_name(split, index),
        "index": shard_name(split, index, ".idx"),
        "tokens": header.tokens,
        "documents": header.documents,
        "max_id": header.max_id,
    }


def resume_writer(writer: ShardWriter) -> None:
    """Load the complete shards of ``writer``'s split from its folder and remove the rest."""
    index = 0
    while True:
        bin_path = writer.out / shard_name(writer.split, index)
        idx_path = writer.out / shard_name(writer.split, index, ".idx")
        if not (bin_path.is_file() and idx_path.is_file()):
            break
        try:
            header = read_index_header(idx_path)
            complete = read_shard_header(bin_path).tokens == header.tokens
        except ValueError:
            complete = False
        if not complete:
            break
        writer.shards.append(shard_record(writer.split, index, header))
        writer.next_document, writer.next_offset = header.next_document, header.next_offset
        index += 1
    writer.finished = writer.next_document >= writer.total_documents
    for path in writer.out.iterdir():
        match = SHARD_FILE.match(path.name)
        stale = match is not None and match[1] == writer.split and int(match[2]) >= index
        if stale or (path.name.startswith(f".{writer.split}_") and path.name.endswith(".tmp")):
            path.unlink()


@dataclass
class Batch:
    """Documents tokenised together: their texts (UTF-8 bytes for the byte tokenizer), splits,
    ordinals and tokens to skip."""

    texts: list[str | bytes] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    ordinals: list[int] = field(default_factory=list)
    skips: list[int] = field(default_factory=list)
    chars: int = 0


def encoded(
    batches: Iterator[Batch], encoder: DocumentEncoder, workers: int
) -> Iterator[tuple[Batch, np.ndarray, np.ndarray]]:
    """Each batch with its tokens and document lengths (``DocumentEncoder.encode``), in order.

    With ``workers`` > 1 the batches are encoded in that many spawned processes, at most two
    per worker in flight; the byte tokenizer always runs here (numpy is faster than sending the
    text to another process).
    """
    if workers == 1 or encoder.kind == "byte":
        for batch in batches:
            yield (batch, *encoder.encode(batch.texts))
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=worker_setup,
        initargs=(encoder, threads),
    ) as pool:  # fmt: skip
        pending: deque = deque()
        for batch in batches:
            pending.append((batch, pool.submit(encode_in_worker, batch.texts)))
            if len(pending) >= 2 * workers:
                done, future = pending.popleft()
                yield (done, *future.result())
        while pending:
            done, future = pending.popleft()
            yield (done, *future.result())


def write_batch(
    writers: dict[str, ShardWriter], batch: Batch, tokens: np.ndarray, lengths: np.ndarray
) -> None:
    """Append the documents of an encoded batch to their splits' shards, in order."""
    splits = np.array(batch.splits)
    ordinals = np.array(batch.ordinals, dtype=np.int64)
    skips = np.array(batch.skips, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    for split, writer in writers.items():
        mine = splits == split
        if not mine.any():
            continue
        if skips[mine].any():  # the document a resumed split continues inside
            for i in np.flatnonzero(mine):
                writer.append(int(ordinals[i]), tokens[starts[i] : starts[i] + lengths[i]],
                              int(skips[i]))  # fmt: skip
        else:
            writer.append_block(ordinals[mine], tokens[np.repeat(mine, lengths)], lengths[mine])


def bpe_sample(plan: InputPlan, is_val: Any, sample_bytes: int) -> Iterator[str]:
    """Chunks of the first ``sample_bytes`` of text of the train documents, in input order."""
    left = sample_bytes
    for document in InputReader(plan).documents():
        if is_val(document.ordinal, document.name):  # (names are cheap next to BPE training)
            continue
        text = document.text[:left]
        left -= len(text.encode("utf-8"))
        yield from chunk_stream([text])
        if left <= 0:
            return


def settle_tokenizer(
    spec: TokenizerSpec, plan: InputPlan, is_val: Any, eos_token: str | None,
    sample_bytes: int,
) -> tuple[bytes, str, int]:  # fmt: skip
    """The tokenizer file's bytes, its end-of-text token and that token's id."""
    if spec.kind == "file":
        data = spec.path.read_bytes()
        tokenizer = load_tokenizer_file(spec.path)
        token, eos_id = find_eos_token(tokenizer, eos_token, f"--tokenizer {spec.path}")
        return data, token, eos_id
    if spec.kind == "byte":
        tokenizer = byte_tokenizer()
    else:
        tokenizer = train_bpe(bpe_sample(plan, is_val, sample_bytes), spec.vocab)
    return tokenizer.to_str(pretty=True).encode(), EOS_TOKEN, tokenizer.token_to_id(EOS_TOKEN)


def load_or_make_tokenizer(
    out: Path,
    action: str,
    spec: Any,
    plan: Any,
    rule: Any,
    tokenizer: str,
    eos_token: str | None,
    sample_bytes: int,
    note: Any,
) -> tuple[bytes, str, int]:
    """The tokenizer's JSON bytes, end-of-text token and id: those of the unfinished prepare
    being resumed in ``out``, else made (a BPE trained on the train documents' sample)."""
    state = read_json(out / PREPARE_FILE) if action == "resume" else None
    if state is not None and (out / TOKENIZER_FILE).is_file():
        return (out / TOKENIZER_FILE).read_bytes(), state["eos_token"], state["eos_id"]
    if note and spec.kind == "bpe":
        note(f"training {tokenizer} on the first {sample_bytes:,} bytes of the train documents")
    return settle_tokenizer(spec, plan, rule.is_val, eos_token, sample_bytes)


def document_batches(
    reader: InputReader, rule: Any, writers: dict[str, ShardWriter], as_bytes: bool, counts: dict
) -> Iterator[Batch]:
    """The documents still to write, in input order, in batches of about ``BATCH_CHARS``;
    ``counts`` gathers the documents seen and each split's bytes."""
    batch = Batch()
    names = rule.needs_names
    for document in reader.documents():
        counts["documents"] += 1
        ordinal, text = document.ordinal, document.text
        split = "val" if rule.is_val(ordinal, document.name if names else "") else "train"
        data = text.encode("utf-8")
        counts[split] += len(data)
        skip = writers[split].tokens_to_skip(ordinal)
        if skip is None:
            continue
        batch.texts.append(data if as_bytes else text)  # the byte encoder takes UTF-8 bytes
        batch.splits.append(split)
        batch.ordinals.append(ordinal)
        batch.skips.append(skip)
        batch.chars += len(text)
        if batch.chars >= BATCH_CHARS:
            yield batch
            batch = Batch()
    if batch.texts:
        yield batch


def tokenise_documents(
    reader: InputReader,
    rule: Any,
    writers: dict[str, ShardWriter],
    encoder: DocumentEncoder,
    workers: int,
    progress: bool,
) -> dict[str, int]:
    """Encode and write every document still missing (a progress bar of MB/s and tokens);
    return the bytes of text each split holds."""
    counts = {"documents": 0, **dict.fromkeys(SPLITS, 0)}
    batches = document_batches(reader, rule, writers, encoder.kind == "byte", counts)
    written = 0
    with tqdm(total=reader.plan.bytes, unit="B", unit_scale=True, disable=not progress,
              desc="tokenising", file=sys.stderr) as bar:  # fmt: skip
        for batch, tokens, lengths in encoded(batches, encoder, workers):
            write_batch(writers, batch, tokens, lengths)
            written += int(lengths.sum())
            bar.set_postfix_str(f"{written:,} tokens", refresh=False)
            bar.update(reader.bytes_read - bar.n)
        bar.update(reader.bytes_read - bar.n)
    if counts["documents"] != reader.plan.documents:
        raise ValueError(
            f"--input: {counts['documents']} documents read but {reader.plan.documents} counted "
            "before: an input changed while it was read; run again"
        )
    return {split: counts[split] for split in SPLITS}


def prepare_corpus(
    inputs: Sequence[str | Path] | None,
    tokenizer: str,
    out_dir: str | Path,
    val_fraction: float = 0.05,
    val_documents: Sequence[str] | None = None,
    seed: int = 0,
    default: bool = False,
    progress: bool = True,
    *,
    text_field: str = "text",
    eos_token: str | None = None,
    tokenizer_sample_bytes: int = DEFAULT_SAMPLE_BYTES,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    workers: int = 1,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Tokenise a corpus into ``out_dir``: shards, their indexes, tokenizer.json, manifest.json.

    The split is by whole documents: those matching ``val_documents`` (fnmatch patterns on
    document names), else k = max(1, round(val_fraction * D)) of the D documents, one in each of
    k equal runs of the input (``split.ValByFraction``, by ``seed``). A BPE tokenizer is trained
    on the first ``tokenizer_sample_bytes`` of the train documents only. Each split's stream is
    ``EOS d1 EOS d2 ... EOS dn EOS`` cut into shards of ``shard_tokens`` tokens
    (``selrope.data.shards``).

    Args:
        inputs: text files, folders, JSONL (.jsonl, .jsonl.gz, .jsonl.zst) or Parquet files.
        tokenizer: ``"byte"``, ``"bpe:VOCAB"`` or the path of a ``tokenizer.json``.
        out_dir: output folder, created if needed; an unfinished prepare of the same arguments
            there is continued.
        val_fraction: share of documents held out when ``val_documents`` is not given.
        val_documents: fnmatch patterns naming the val documents.
        seed: seed of the choice of val documents behind ``val_fraction``.
        default: use the CPython standard library's ``.py`` files instead of ``inputs``.
        progress: show a bar (MB/s, tokens) and notes (skipped files, resuming) on stderr.
        text_field: the JSONL / Parquet field holding the text.
        eos_token: the end-of-text token of a ``tokenizer.json`` (default: found in the file).
        tokenizer_sample_bytes: text a ``bpe:VOCAB`` tokenizer is trained on.
        shard_tokens: tokens per shard (the last shard of a split holds the rest).
        workers: tokenising processes (results are taken in order: the bytes do not change).
        overwrite: replace a corpus of other arguments in ``out_dir``.

    Returns:
        The manifest (see ``selrope.data.reader`` for the files).

    Raises:
        ValueError: naming the argument for a missing path, an empty corpus, a bad
            ``tokenizer``, a link loop, an ``--out`` that cannot be written or lies inside an
            input, a val split that would be empty or take every document (all before anything
            is written), and a bad JSONL line (when it is read; no manifest is written).
    """
    started = time.perf_counter()
    spec = parse_tokenizer_spec(tokenizer)
    check_options(spec, eos_token, shard_tokens, tokenizer_sample_bytes, workers, text_field)
    out = Path(out_dir)
    check_out_dir(out)
    plan = plan_inputs(inputs, default, text_field, out)
    if val_documents is not None:
        val_patterns_check(plan, list(val_documents))
        rule: Any = ValByPatterns(val_documents)
    else:
        rule = ValByFraction(plan.documents, val_fraction, seed)
    arguments = arguments_record(
        plan, spec, tokenizer, rule.record(seed), eos_token, tokenizer_sample_bytes, shard_tokens
    )
    action = settle_out_dir(out, arguments, overwrite)
    note = (lambda text: print(f"selrope data: {text}", file=sys.stderr)) if progress else None
    if action == "done":
        if note:
            note(f"{out} already holds this corpus, complete")
        return json.loads((out / MANIFEST_FILE).read_text())
    for skipped in plan.skipped if note else ():
        if skipped["reason"].startswith("not text"):
            note(f"skipped {skipped['path']}: {skipped['reason']}")

    tokenizer_bytes, eos_name, eos_id = load_or_make_tokenizer(
        out, action, spec, plan, rule, tokenizer, eos_token, tokenizer_sample_bytes, note
    )
    vocab_size = vocab_size_of(Tokenizer.from_str(tokenizer_bytes.decode()))
    dtype = token_dtype(vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / TOKENIZER_FILE, tokenizer_bytes)
    state = {
        "arguments": arguments,
        "eos_token": eos_name,
        "eos_id": eos_id,
        "vocab_size": vocab_size,
        "dtype": dtype.name,
    }
    write_atomically(out / PREPARE_FILE, json.dumps(state, indent=1).encode())

    writers = {
        split: ShardWriter(out, split, dtype, shard_tokens, plan.documents) for split in SPLITS
    }
    for writer in writers.values():
        resume_writer(writer)
    if note and action == "resume":
        kept = {split: len(writer.shards) for split, writer in writers.items()}
        note(f"resuming in {out}: keeping {kept['train']} train and {kept['val']} val shards")
    reader = InputReader(plan)
    encoder = DocumentEncoder(spec.kind, tokenizer_bytes.decode(), eos_id, dtype)
    split_bytes = tokenise_documents(reader, rule, writers, encoder, workers, progress)
    for writer in writers.values():
        writer.finish(eos_id)

    manifest = build_manifest(
        plan, reader, writers, split_bytes, spec, tokenizer, eos_name, eos_id, vocab_size,
        dtype, tokenizer_bytes, arguments, rule.record(seed),
    )  # fmt: skip
    manifest["seconds"] = round(time.perf_counter() - started, 3)
    write_atomically(out / MANIFEST_FILE, json.dumps(manifest, indent=1).encode())
    (out / PREPARE_FILE).unlink(missing_ok=True)
    return manifest


def build_manifest(
    plan: InputPlan, reader: InputReader, writers: dict[str, ShardWriter],
    split_bytes: dict[str, int], spec: TokenizerSpec, spec_text: str, eos_name: str,
    eos_id: int, vocab_size: int, dtype: np.dtype, tokenizer_bytes: bytes,
    arguments: dict[str, Any], rule: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The manifest: tokenizer, dtype, shards per split, inputs with their sha256, the rule."""
    splits = {}
    for split, writer in writers.items():
        shards = writer.shards
        splits[split] = {
            "tokens": sum(shard["tokens"] for shard in shards),
            "documents": sum(shard["documents"] for shard in shards),
            "bytes": split_bytes[split],
            "max_id": max(shard["max_id"] for shard in shards),
            "shards": shards,
        }
    inputs, position = [], 0
    for record in plan.inputs:
        digests = reader.digests[position : position + record["files"]]
        position += record["files"]
        combined = hashlib.sha256("".join(f"{d}\n" for d in digests).encode()).hexdigest()
        inputs.append({**record, "sha256": combined})
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tokenizer": {
            "kind": spec.kind,
            "spec": spec_text,
            "vocab_size": vocab_size,
            "eos_id": eos_id,
            "eos_token": eos_name,
            "file": TOKENIZER_FILE,
            "sha256": hashlib.sha256(tokenizer_bytes).hexdigest(),
        },
        "dtype": dtype.name,
        "shard_tokens": arguments["shard_tokens"],
        "splits": splits,
        "inputs": inputs,
        "skipped": plan.skipped,
        "replaced_bytes": reader.replaced_bytes,
        "split_rule": rule,
        "arguments": arguments,
        "python": platform.python_version(),
    }
