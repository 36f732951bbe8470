"""Reading text corpora into named documents: text files, folders of them, JSONL, the stdlib.

Every input becomes a list of `Document` (a name and its text) plus a record of the files read
(path, sha256, bytes) for the manifest. Bytes that are not UTF-8 are replaced by U+FFFD and
counted, never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SKIPPED_PREFIXES = ("COPYING", "COPYRIGHT", "LICENSE", "README")
STDLIB_EXCLUDED_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
)
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Document:
    """One document: its name (path relative to its input, or ``file.jsonl:LINE``) and text."""

    name: str
    text: str


@dataclass
class Corpus:
    """Documents in input order, with what the manifest records about where they came from.

    Attributes:
        documents: every document read, in input order (files sorted within a folder).
        inputs: one record per input: ``{"path", "kind", "bytes", "files": [{"name", "sha256",
            "bytes", "replaced_bytes"}]}``.
        skipped: licence/readme files left out of folders, as paths.
        replaced_bytes: undecodable bytes (and lone surrogates escaped in JSON) replaced by U+FFFD.
    """

    documents: list[Document] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    replaced_bytes: int = 0


def decode_utf8(data: bytes) -> tuple[str, int]:
    """UTF-8 text of ``data`` with undecodable bytes replaced by U+FFFD, and how many bytes were."""
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        escaped = data.decode("utf-8", errors="surrogateescape")
        replaced = len(LONE_SURROGATE.findall(escaped))
        return data.decode("utf-8", errors="replace"), replaced


def is_skipped_name(name: str) -> bool:
    """Licence and readme files (COPYING*, COPYRIGHT*, LICENSE*, README*, any case)."""
    return name.upper().startswith(SKIPPED_PREFIXES)


def folder_files(
    root: Path, suffix: str = "", excluded_dirs: frozenset[str] = frozenset()
) -> list[str]:
    """Files under ``root``, recursively, sorted by relative path; hidden files and folders and
    folders named in ``excluded_dirs`` are left out. Returns relative POSIX paths."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in excluded_dirs]
        relative = Path(folder).relative_to(root)
        found.extend(
            (relative / name).as_posix()
            for name in files
            if not name.startswith(".") and name.endswith(suffix)
        )
    return sorted(found)


def jsonl_documents(text: str, name: str, where: str) -> tuple[list[Document], int]:
    """Documents of a JSONL file, one per non-blank line, from each line's ``text`` field.

    Returns the documents (named ``name:LINE``) and the number of lone surrogates replaced.
    Raises ValueError naming ``where`` and the line when a line is not JSON or has no text."""
    documents, replaced = [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"--input {where}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ValueError(f'--input {where}:{number}: no "text" field with a string value')
        body, count = LONE_SURROGATE.subn("\ufffd", record["text"])
        documents.append(Document(f"{name}:{number}", body))
        replaced += count
    return documents, replaced


def add_file(corpus: Corpus, record: dict[str, Any], path: Path, name: str) -> None:
    """Read one file into ``corpus``: a JSONL file gives a document per line, else one document."""
    data = path.read_bytes()
    text, replaced = decode_utf8(data)
    if path.suffix == ".jsonl":
        documents, surrogates = jsonl_documents(text, name, str(path))
        corpus.documents.extend(documents)
        replaced += surrogates
    else:
        corpus.documents.append(Document(name, text))
    corpus.replaced_bytes += replaced
    record["files"].append(
        {
            "name": name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "replaced_bytes": replaced,
        }
    )
    record["bytes"] += len(data)


def read_inputs(inputs: list[str | Path]) -> Corpus:
    """Documents of text files, folders of text files and JSONL files, in the order given.

    A text file is one document named by its file name; a ``.jsonl`` file gives one document per
    line (``file.jsonl:LINE``, from the ``text`` field); a folder gives one document per file
    (recursive, sorted, named by the path relative to the folder; a ``.jsonl`` file in it is read
    as JSONL), leaving out hidden files and licence/readme files (recorded in ``Corpus.skipped``).

    Raises:
        ValueError: naming ``--input`` when a path does not exist or a JSONL line is bad.
    """
    corpus = Corpus()
    for given in inputs:
        path = Path(given)
        if not path.exists():
            raise ValueError(f"--input: no such file or directory: {given}")
        kind = "folder" if path.is_dir() else "jsonl" if path.suffix == ".jsonl" else "file"
        record: dict[str, Any] = {"path": str(path.resolve()), "kind": kind, "bytes": 0}
        record["files"] = []
        if path.is_dir():
            for name in folder_files(path):
                if is_skipped_name(Path(name).name):
                    corpus.skipped.append(str(path / name))
                else:
                    add_file(corpus, record, path / name, name)
        else:
            add_file(corpus, record, path, path.name)
        corpus.inputs.append(record)
    return corpus


def stdlib_root() -> Path:
    """The folder of this Python's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def read_default_corpus() -> Corpus:
    """The embedded corpus: this Python's standard library ``.py`` files, outside test folders
    (test, tests, idle_test) and installed packages (site-packages, dist-packages)."""
    root = stdlib_root()
    record: dict[str, Any] = {
        "path": str(root),
        "kind": "stdlib",
        "python": platform.python_version(),
        "bytes": 0,
        "files": [],
    }
    corpus = Corpus(inputs=[record])
    for name in folder_files(root, suffix=".py", excluded_dirs=STDLIB_EXCLUDED_DIRS):
        add_file(corpus, record, root / name, name)
    return corpus
