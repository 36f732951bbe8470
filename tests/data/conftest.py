"""Tiny corpora written into tmp_path: a folder of text files, a JSONL file, a single text file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PLAY = "ACT I.\n  Enter Ghost.\nHam. Speak; I am bound to hear.\n\n  Exit.\n"
FOLDER_TEXTS = {
    "alpha.txt": "The quick brown fox jumps over the lazy dog.\nIt barks: 'woof'.\n",
    "beta.txt": PLAY * 3,
    "sub/gamma.txt": "def f(x):\n    return x + 1  # café, naïve, 東京 🙂\n",
    "sub/delta.txt": "tabs\there \t\nand trailing spaces   \nend",
    "zeta.txt": "<|endoftext|> is only text inside a document.\n",
}
JSONL_TEXTS = ["First short article about rivers.", "Second one,\nwith two lines.", "3 ≠ 4"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder of 5 documents, plus a README, a LICENSE and hidden files to be left out."""
    root = tmp_path / "texts"
    for name, text in FOLDER_TEXTS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / "README.md").write_text("not a document\n")
    (root / "LICENSE").write_text("not a document\n")
    (root / ".hidden.txt").write_text("not a document\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("not a document\n")
    return root


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    """A JSONL file of 3 documents (a blank line between two of them)."""
    path = tmp_path / "articles.jsonl"
    lines = [json.dumps({"title": f"t{i}", "text": text}) for i, text in enumerate(JSONL_TEXTS)]
    path.write_text(lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def many_documents(tmp_path: Path) -> Path:
    """A folder of 20 short documents doc00.txt .. doc19.txt."""
    root = tmp_path / "many"
    root.mkdir()
    for i in range(20):
        (root / f"doc{i:02d}.txt").write_text(f"document {i}: " + "lorem ipsum " * (i + 1))
    return root


@pytest.fixture
def expected_texts() -> dict[str, str]:
    """Document name -> text for the ``folder`` and ``jsonl`` fixtures together."""
    texts = dict(FOLDER_TEXTS)
    lines = (1, 3, 4)  # line 2 of the JSONL file is blank
    texts.update({f"articles.jsonl:{n}": text for n, text in zip(lines, JSONL_TEXTS, strict=True)})
    return texts
