"""Inputs of ``prepare_corpus``: listed and checked first (``scan_inputs``), then read lazily.

Kinds of input, by name:

- ``*.jsonl``, ``*.jsonl.gz``, ``*.jsonl.zst``: one document per non-blank line, from the field
  ``text_field`` (named ``file.jsonl:LINE``); zstandard needs the ``data`` extra.
- ``*.parquet``: one document per row of the string column ``text_field`` (``file.parquet:ROW``,
  from 1); needs pyarrow (the ``data`` extra).
- any other file: one text document (named by its file name, or its path inside a folder).
  A file with a NUL byte in its first 8000 bytes is not text (git's rule) and is skipped.
- a folder: every file in it, recursively, sorted by path, each read by its name as above;
  hidden files and folders and licence / readme files are left out. Symbolic links are
  followed; a link loop is refused.

Text that is not UTF-8 is replaced by U+FFFD byte by byte (and lone surrogates escaped in JSON
by one U+FFFD each); the count is reported, never dropped silently.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import platform
import re
import stat
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fnmatch import translate
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

SKIPPED_PREFIXES = ("COPYING", "COPYRIGHT", "LICENSE", "README")
STDLIB_EXCLUDED_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
)
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
SNIFF_BYTES = 8000  # git's: a NUL byte among the first 8000 bytes marks a binary file
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
PARQUET_SUFFIX = ".parquet"
READ_BYTES = 1 << 20
JSON_BLOCK_BYTES = 1 << 20  # JSONL lines parsed together


class Document(NamedTuple):
    """One document: its position among every input document, where it came from, its text.

    ``ordinal`` counts documents over all inputs in reading order, from 0; ``source`` is the
    file's name (its path relative to its input folder) and ``record`` the JSONL line or Parquet
    row (from 1; 0 for a text file).
    """

    ordinal: int
    source: str
    record: int
    text: str

    @property
    def name(self) -> str:
        """``source``, or ``source:RECORD`` (``file.jsonl:LINE``, ``file.parquet:ROW``)."""
        return f"{self.source}:{self.record}" if self.record else self.source


@dataclass(frozen=True)
class InputFile:
    """One file to read: where it is, its document name (prefix), its kind and stat fields."""

    path: Path
    name: str
    kind: str  # "text", "jsonl" or "parquet"
    bytes: int
    mtime_ns: int


@dataclass
class InputPlan:
    """Everything ``scan_inputs`` learnt before a document is tokenised.

    Attributes:
        files: the files to read, in reading order.
        inputs: one record per ``--input``: ``{"path", "kind", "files", "bytes"}``.
        skipped: ``{"path", "reason"}`` of files left out (licence / readme, not text).
        documents: D, the number of documents of all inputs together.
        text_field: the JSONL / Parquet field read as text.
    """

    files: list[InputFile] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    documents: int = 0
    text_field: str = "text"

    @property
    def bytes(self) -> int:
        """Bytes of every file to read, as stored (compressed files count compressed)."""
        return sum(file.bytes for file in self.files)

    def fingerprint(self) -> str:
        """sha256 over every file's path, size and modification time: changes when an input
        changes (cheap; the manifest records the contents' sha256 per input)."""
        digest = hashlib.sha256()
        for file in self.files:
            digest.update(f"{file.path}\0{file.bytes}\0{file.mtime_ns}\n".encode())
        return digest.hexdigest()


def decode_utf8(data: bytes) -> tuple[str, int]:
    """UTF-8 text of ``data`` with undecodable bytes replaced by U+FFFD, and how many bytes were."""
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        escaped = data.decode("utf-8", errors="surrogateescape")
        replaced = len(LONE_SURROGATE.findall(escaped))
        return data.decode("utf-8", errors="replace"), replaced


def clean_text(text: str) -> tuple[str, int]:
    """``text`` with lone surrogates (from JSON escapes) replaced by U+FFFD, and their count."""
    try:
        text.encode("utf-8")
        return text, 0
    except UnicodeEncodeError:
        return LONE_SURROGATE.subn("\ufffd", text)


def is_skipped_name(name: str) -> bool:
    """Licence and readme files (COPYING*, COPYRIGHT*, LICENSE*, README*, any case)."""
    return name.upper().startswith(SKIPPED_PREFIXES)


def input_kind(name: str) -> str:
    """ "jsonl", "parquet" or "text", from a file name."""
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    return "parquet" if name.endswith(PARQUET_SUFFIX) else "text"


def is_text_file(path: Path) -> bool:
    """False when the first 8000 bytes hold a NUL byte (images, executables, archives)."""
    with open(path, "rb") as file:
        return b"\0" not in file.read(SNIFF_BYTES)


def _entry_stat(path: Path, flag: str) -> os.stat_result:
    """``os.stat`` of ``path`` (links followed); a loop or a dangling link is a ValueError."""
    try:
        return path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            what = "a symbolic link loop"
        elif path.is_symlink() and error.errno == errno.ENOENT:
            what = f"a broken symbolic link (to {os.readlink(path)})"
        else:
            what = "cannot be read"
        raise ValueError(f"{flag} {path}: {what} ({error.strerror})") from None


def folder_files(
    root: Path, suffix: str = "", excluded_dirs: frozenset[str] = frozenset(), flag: str = "--input"
) -> list[str]:
    """Files under ``root``, recursively and through symbolic links, sorted by relative path;
    hidden files and folders and folders named in ``excluded_dirs`` are left out.

    Returns:
        relative POSIX paths.

    Raises:
        ValueError: naming ``flag`` and the link for a symbolic link loop or a broken link.
    """
    found: list[str] = []

    def walk(folder: Path, relative: str, ancestors: frozenset[tuple[int, int]]) -> None:
        for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            info = _entry_stat(path, flag)
            name = f"{relative}{entry.name}"
            if stat.S_ISDIR(info.st_mode):
                if entry.name in excluded_dirs:
                    continue
                key = (info.st_dev, info.st_ino)
                if key in ancestors:
                    raise ValueError(
                        f"{flag} {path}: a symbolic link loop (it leads back to "
                        f"{os.path.realpath(path)}, a folder above it)"
                    )
                walk(path, f"{name}/", ancestors | {key})
            elif stat.S_ISREG(info.st_mode) and name.endswith(suffix):
                found.append(name)

    top = root.stat()
    walk(root, "", frozenset({(top.st_dev, top.st_ino)}))
    return sorted(found)


def open_binary(path: Path) -> BinaryIO:
    """The decompressed bytes of ``path`` (.gz, .zst or plain) as a buffered binary file."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if path.name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise ValueError(
                f"--input {path}: reading .zst needs zstandard: pip install 'selrope[data]'"
            ) from None
        raw = open(path, "rb")  # noqa: SIM115 - closed with the reader it is handed to
        reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return io.BufferedReader(reader, READ_BYTES)  # type: ignore[arg-type]
    return open(path, "rb", buffering=READ_BYTES)


def parquet_file(path: Path, text_field: str):
    """The pyarrow ParquetFile of ``path``, checked to hold the string column ``text_field``.

    Raises:
        ValueError: naming the file when pyarrow is missing, the file is no Parquet file, the
            column is missing or not a string column, or it holds null values.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(
            f"--input {path}: reading Parquet needs pyarrow: pip install 'selrope[data]'"
        ) from None
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as error:
        raise ValueError(f"--input {path}: not a Parquet file ({error})") from None
    schema = parquet.schema_arrow
    if text_field not in schema.names:
        raise ValueError(
            f"--text-field {text_field}: {path} has no such column (it has {schema.names})"
        )
    column_type = schema.field(text_field).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise ValueError(f"--text-field {text_field}: {path} holds {column_type}, not strings")
    column = schema.names.index(text_field)
    metadata = parquet.metadata
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(column).statistics
        if statistics is not None and statistics.has_null_count and statistics.null_count:
            raise ValueError(
                f"--input {path}: column {text_field} holds {statistics.null_count} null values"
            )
    return parquet


def jsonl_document_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, raw line) of every non-blank line of a JSONL file."""
    with open_binary(path) as file:
        for number, line in enumerate(file, start=1):
            if line.strip():
                yield number, line


def count_documents(file: InputFile, text_field: str) -> int:
    """Documents in one file: 1 for text, non-blank lines of JSONL, rows of Parquet."""
    if file.kind == "text":
        return 1
    if file.kind == "parquet":
        return parquet_file(file.path, text_field).metadata.num_rows
    try:
        return sum(1 for _ in jsonl_document_lines(file.path))
    except (OSError, EOFError) as error:
        raise ValueError(f"--input {file.path}: cannot be decompressed ({error})") from None


def document_names(file: InputFile, text_field: str) -> Iterator[str]:
    """The names of the documents of one file, in order, without parsing them."""
    if file.kind == "text":
        yield file.name
    elif file.kind == "parquet":
        rows = parquet_file(file.path, text_field).metadata.num_rows
        yield from (f"{file.name}:{row}" for row in range(1, rows + 1))
    else:
        yield from (f"{file.name}:{number}" for number, _ in jsonl_document_lines(file.path))


def _check_out_outside(path: Path, out: Path | None) -> None:
    """Refuse an input folder that holds the output folder (a rerun would read its output)."""
    if out is None:
        return
    inside = out.resolve()
    folder = path.resolve()
    if inside == folder or folder in inside.parents:
        raise ValueError(
            f"--out {out} lies inside --input {path}: a second run would read its own output "
            "as documents; choose an --out outside the input folders"
        )


def scan_inputs(
    inputs: list[str | Path],
    text_field: str = "text",
    out: Path | None = None,
    count: bool = True,
) -> InputPlan:
    """List and check every input before anything is read as a document or written.

    Args:
        inputs: text, JSONL (.jsonl, .jsonl.gz, .jsonl.zst) or Parquet files, or folders of them.
        text_field: the JSONL / Parquet field read as text.
        out: the output folder, refused inside an input folder.
        count: count the documents (reads JSONL files through once; Parquet from its metadata).

    Raises:
        ValueError: naming ``--input`` (missing path, link loop, unreadable file, no Parquet
            column) or ``--out``.
    """
    plan = InputPlan(text_field=text_field)
    for given in inputs:
        path = Path(given)
        if not path.exists() and not path.is_symlink():
            raise ValueError(f"--input: no such file or directory: {given}")
        info = _entry_stat(path, "--input")
        record: dict[str, Any] = {"path": str(path.resolve()), "files": 0, "bytes": 0}
        if stat.S_ISDIR(info.st_mode):
            _check_out_outside(path, out)
            record["kind"] = "folder"
            names = folder_files(path)
        else:
            record["kind"] = input_kind(path.name)
            names = [""]
        for name in names:
            file_path = path / name if name else path
            shown = name or path.name
            if name and is_skipped_name(Path(name).name):
                plan.skipped.append({"path": str(file_path), "reason": "licence or readme"})
                continue
            kind = input_kind(shown)
            if kind == "text" and not is_text_file(file_path):
                plan.skipped.append({"path": str(file_path), "reason": "not text (a NUL byte)"})
                continue
            if kind == "parquet":
                parquet_file(file_path, text_field)
            file_info = file_path.stat()
            plan.files.append(
                InputFile(file_path, shown, kind, file_info.st_size, file_info.st_mtime_ns)
            )
            record["files"] += 1
            record["bytes"] += file_info.st_size
        plan.inputs.append(record)
    if count:
        plan.documents = sum(count_documents(file, text_field) for file in plan.files)
    return plan


def stdlib_root() -> Path:
    """The folder of this Python's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def scan_default_corpus() -> InputPlan:
    """The embedded corpus: this Python's standard library ``.py`` files, outside test folders
    (test, tests, idle_test) and installed packages (site-packages, dist-packages)."""
    root = stdlib_root()
    plan = InputPlan()
    record: dict[str, Any] = {"path": str(root), "kind": "stdlib", "files": 0, "bytes": 0}
    record["python"] = platform.python_version()
    for name in folder_files(root, ".py", STDLIB_EXCLUDED_DIRS, flag="--default"):
        info = (root / name).stat()
        plan.files.append(InputFile(root / name, name, "text", info.st_size, info.st_mtime_ns))
        record["files"] += 1
        record["bytes"] += info.st_size
    plan.inputs.append(record)
    plan.documents = len(plan.files)
    return plan


def val_patterns_check(plan: InputPlan, patterns: list[str]) -> None:
    """Refuse ``--val-documents`` patterns that match no document, or that match every one.

    Raises:
        ValueError: naming ``--val-documents``.
    """
    if not patterns:
        raise ValueError("--val-documents: give at least one pattern")
    compiled = [re.compile(translate(pattern)) for pattern in patterns]
    matched = [False] * len(patterns)
    every = True
    for file in plan.files:
        for name in document_names(file, plan.text_field):
            hits = [regex.match(name) is not None for regex in compiled]
            matched = [m or h for m, h in zip(matched, hits, strict=True)]
            every = every and any(hits)
    for pattern, hit in zip(patterns, matched, strict=True):
        if not hit:
            raise ValueError(f"--val-documents: pattern {pattern!r} matches no document")
    if every:
        raise ValueError(
            f"--val-documents {','.join(patterns)} matches all {plan.documents} documents; "
            "the train split would be empty"
        )


class InputReader:
    """The documents of an ``InputPlan``, read lazily in order, hashing every byte read.

    Attributes:
        replaced_bytes: undecodable bytes and lone surrogates replaced by U+FFFD so far.
        bytes_read: bytes of the input files consumed so far (for a progress bar).
        digests: sha256 per file read to its end, in reading order: ``{"name", "sha256"}``.
    """

    def __init__(self, plan: InputPlan):
        self.plan = plan
        self.replaced_bytes = 0
        self.bytes_read = 0
        self.digests: list[str] = []

    def documents(self) -> Iterator[Document]:
        """Every document of every file, in order (``Document.ordinal`` from 0)."""
        ordinal = 0
        for file in self.plan.files:
            for record, text in self._file_documents(file):
                yield Document(ordinal, file.name, record, text)
                ordinal += 1

    def _file_documents(self, file: InputFile) -> Iterator[tuple[int, str]]:
        digest = hashlib.sha256()
        if file.kind == "text":
            data = file.path.read_bytes()
            digest.update(data)
            self.bytes_read += len(data)
            text, replaced = decode_utf8(data)
            self.replaced_bytes += replaced
            yield 0, text
        elif file.kind == "jsonl":
            yield from self._jsonl_documents(file, digest)
        else:
            yield from self._parquet_documents(file, digest)
        self.digests.append(digest.hexdigest())

    def _jsonl_documents(self, file: InputFile, digest: Any) -> Iterator[tuple[int, str]]:
        with open(file.path, "rb", buffering=READ_BYTES) as raw:
            hashed = _HashingReader(raw, digest, self._count_read)
            source = _decompressed(hashed, file.path)
            number = 0
            try:
                while lines := source.readlines(JSON_BLOCK_BYTES):
                    numbered = [
                        (number + i, line) for i, line in enumerate(lines, 1) if line.strip()
                    ]
                    number += len(lines)
                    texts, replaced = _block_texts(numbered, self.plan.text_field, file.path)
                    self.replaced_bytes += replaced
                    # Lone surrogates come only from the escapes \uD800-\uDFFF: look first.
                    escaped = SURROGATE_ESCAPE.search(b"".join(lines)) is not None
                    for (line_number, _), text in zip(numbered, texts, strict=True):
                        yield line_number, self._clean(text) if escaped else text
            except (OSError, EOFError) as error:
                raise ValueError(f"--input {file.path}: cannot be decompressed ({error})") from None
            hashed.drain()

    def _parquet_documents(self, file: InputFile, digest: Any) -> Iterator[tuple[int, str]]:
        with open(file.path, "rb", buffering=READ_BYTES) as raw:
            for block in iter(lambda: raw.read(READ_BYTES), b""):
                digest.update(block)
        parquet = parquet_file(file.path, self.plan.text_field)
        row = 0
        for batch in parquet.iter_batches(batch_size=4096, columns=[self.plan.text_field]):
            column = batch.column(0)
            if column.null_count:
                raise ValueError(
                    f"--input {file.path}: column {self.plan.text_field} holds null values"
                )
            share = file.bytes * len(column) // max(1, parquet.metadata.num_rows)
            self.bytes_read += share
            for text in column.to_pylist():
                row += 1
                yield row, self._clean(text)

    def _clean(self, text: str) -> str:
        text, replaced = clean_text(text)
        self.replaced_bytes += replaced
        return text

    def _count_read(self, size: int) -> None:
        self.bytes_read += size


def _block_texts(
    numbered: list[tuple[int, bytes]], field_name: str, path: Path
) -> tuple[list[str], int]:
    """The ``field_name`` strings of a block of JSONL lines, and how many undecodable bytes
    were replaced. The block is parsed as one JSON array (one call instead of one per line); on
    any problem each line is parsed alone, to name the bad one."""
    try:
        records = json.loads(b"[" + b",".join(line for _, line in numbered) + b"]")
        texts = [record[field_name] for record in records]
        if len(texts) == len(numbered) and all(type(text) is str for text in texts):
            return texts, 0
    except (ValueError, TypeError, KeyError):
        pass
    texts, replaced = [], 0
    for number, line in numbered:
        decoded, count = decode_utf8(line)
        texts.append(_record_text(decoded, field_name, f"{path}:{number}"))
        replaced += count
    return texts, replaced


def _record_text(line: str, field_name: str, where: str) -> str:
    """The ``field_name`` string of one JSONL line; ValueError naming ``where`` otherwise."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"--input {where}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get(field_name), str):
        raise ValueError(f'--input {where}: no "{field_name}" field with a string value')
    return record[field_name]


class _HashingReader(io.RawIOBase):
    """A raw reader that hashes and counts the (compressed) bytes it passes on."""

    def __init__(self, raw: BinaryIO, digest: Any, count: Callable[[int], None]):
        self.raw, self.digest, self.count = raw, digest, count

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = self.raw.readinto(buffer)
        if size:
            view = memoryview(buffer)[:size]
            self.digest.update(view)
            self.count(size)
        return size or 0

    def drain(self) -> None:
        """Hash whatever a decompressor left unread (trailing bytes)."""
        for block in iter(lambda: self.raw.read(READ_BYTES), b""):
            self.digest.update(block)
            self.count(len(block))


def _decompressed(hashed: _HashingReader, path: Path) -> BinaryIO:
    """The decompressed line source over a hashing reader of ``path``."""
    buffered = io.BufferedReader(hashed, READ_BYTES)
    if path.name.endswith(".gz"):
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    if path.name.endswith(".zst"):
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(buffered)
        return io.BufferedReader(reader, READ_BYTES)  # type: ignore[arg-type]
    return buffered  # type: ignore[return-value]
