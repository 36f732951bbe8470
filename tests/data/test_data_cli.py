"""``selrope data prepare`` from the command line: success and one-line errors with exit 2."""

from __future__ import annotations

import pytest

from selrope.cli import main
from selrope.data import load_split


def test_prepare_command_writes_a_corpus(folder, jsonl, tmp_path, capsys):
    out = tmp_path / "c"
    main(["data", "prepare", "--input", str(folder), str(jsonl), "--tokenizer", "bpe:300",
          "--out", str(out), "--val-documents", "sub/*,articles.jsonl:1"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "val: " in printed and "3 documents" in printed and "bpe:300" in printed
    assert load_split(out, "val").doc_starts.size == 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--input", "{tmp}/missing", "--tokenizer", "byte"], "--input: no such file"),
        (["--input", "{folder}", "--tokenizer", "bpe:10"], "--tokenizer bpe:10: VOCAB must be"),
        (["--input", "{folder}", "--tokenizer", "chars"], "--tokenizer must be"),
        (["--input", "{tmp}/empty", "--tokenizer", "byte"], "the corpus is empty"),
        (["--input", "{tmp}/bad.jsonl", "--tokenizer", "byte"], 'bad.jsonl:1: no "text"'),
        (["--input", "{folder}", "--tokenizer", "byte", "--val-documents", "*"], "matches all"),
        (["--input", "{folder}", "--tokenizer", "byte", "--val-fraction", "1"], "--val-fraction"),
    ],
)
def test_prepare_command_errors(folder, tmp_path, capsys, arguments, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.jsonl").write_text('{"body": "no text"}\n')
    arguments = [a.format(tmp=tmp_path, folder=folder) for a in arguments]
    with pytest.raises(SystemExit) as exit_:
        main(["data", "prepare", *arguments, "--out", str(tmp_path / "c")])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selrope: error: ") and message in lines[0]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "c" / "manifest.json").exists()


def test_prepare_command_needs_a_source(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "prepare", "--tokenizer", "byte", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--input" in capsys.readouterr().err
