"""``selrope data prepare`` / ``selrope data info`` from the command line: success, and refusals
in one line with exit 2 before anything is written."""

from __future__ import annotations

import numpy as np
import pytest

from selrope.cli import main
from selrope.data import load_split


def test_prepare_command_writes_a_corpus(folder, jsonl, tmp_path, capsys):
    out = tmp_path / "c"
    main(["data", "prepare", "--input", str(folder), str(jsonl), "--tokenizer", "bpe:300",
          "--out", str(out), "--val-documents", "sub/*,articles.jsonl:1", "--shard-tokens", "50",
          "--workers", "2", "--quiet"])  # fmt: skip
    captured = capsys.readouterr()
    assert "val: " in captured.out and "3 documents" in captured.out and "bpe:300" in captured.out
    assert captured.err == ""  # --quiet: no bar
    assert load_split(out, "val").doc_starts.size == 3
    assert len(list(out.glob("train_*.bin"))) > 1


def test_prepare_shows_progress_and_info_checks_a_folder(folder, tmp_path, capsys):
    main(["data", "prepare", "--input", str(folder), "--tokenizer", "byte", "--out",
          str(tmp_path / "c"), "--shard-tokens", "1k"])  # fmt: skip
    err = capsys.readouterr().err
    assert "tokenising" in err and "B/s" in err and "tokens" in err
    main(["data", "info", str(tmp_path / "c")])
    printed = capsys.readouterr().out
    assert "selrope corpus, uint16 tokens, vocab 257, end-of-text id 256" in printed
    assert "train: " in printed and "train_000000.bin" in printed


def test_info_on_llmc_shards_needs_vocab_size_and_eos_id(tmp_path, capsys):
    header = np.zeros(256, dtype=np.int32)
    header[:3] = (20240520, 1, 4)
    for name in ("fineweb_train_000001.bin", "fineweb_val_000000.bin"):
        (tmp_path / name).write_bytes(
            header.tobytes() + np.array([50256, 1, 2, 3], "<u2").tobytes()
        )
    with pytest.raises(SystemExit) as exit_:
        main(["data", "info", str(tmp_path)])
    assert exit_.value.code == 2 and "give --vocab-size and --eos-id" in capsys.readouterr().err
    main(["data", "info", str(tmp_path), "--vocab-size", "50257", "--eos-id", "50256"])
    assert "llm.c corpus, uint16 tokens, vocab 50257" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--input", "{tmp}/missing", "--tokenizer", "byte"], "--input: no such file"),
        (["--input", "{folder}", "--tokenizer", "bpe:10"], "--tokenizer bpe:10: VOCAB must be"),
        (["--input", "{folder}", "--tokenizer", "bpe:99999999999"], "at most 1048576"),
        (["--input", "{folder}", "--tokenizer", "chars"], "--tokenizer must be"),
        (["--input", "{tmp}/empty", "--tokenizer", "byte"], "the corpus is empty"),
        (["--input", "{tmp}/loop", "--tokenizer", "byte"], "a symbolic link loop"),
        (["--input", "{folder}", "--tokenizer", "byte", "--val-documents", "*"], "matches all"),
        (["--input", "{folder}", "--tokenizer", "byte", "--val-fraction", "1"], "--val-fraction"),
        (
            ["--input", "{folder}", "--tokenizer", "byte", "--shard-tokens", "lots"],
            "--shard-tokens",
        ),
        (["--input", "{folder}", "--tokenizer", "byte", "--eos-token", "</s>"], "--eos-token"),
        (["--input", "{folder}", "--tokenizer", "byte", "--workers", "0"], "--workers must be"),
        (["--input", "{folder}", "--tokenizer", "byte", "--out", "{tmp}/file/c"], "is a file"),
        (["--input", "{folder}", "--tokenizer", "byte", "--out", "{folder}/c"], "lies inside"),
        (["--input", "{folder}", "--tokenizer", "byte", "--bogus"], "unrecognized arguments"),
        (["--input", "{folder}", "--tokenizer", "byte", "--seed", "-1"], "--seed: must be a non"),
    ],
)
def test_prepare_command_refusals(folder, tmp_path, capsys, arguments, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "back").symlink_to(tmp_path / "loop")
    (tmp_path / "file").write_text("x")
    arguments = [a.format(tmp=tmp_path, folder=folder) for a in arguments]
    if "--out" not in arguments:
        arguments += ["--out", str(tmp_path / "c")]
    with pytest.raises(SystemExit) as exit_:
        main(["data", "prepare", *arguments])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selrope: error: ") and message in lines[0]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "c").exists() and not (folder / "c").exists()


def test_the_second_run_into_an_input_folder_is_refused_too(folder, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["data", "prepare", "--input", str(folder), "--tokenizer", "byte", "--out",
              str(folder / "corpus")])  # fmt: skip
    assert "a second run would read its own output" in capsys.readouterr().err


def test_prepare_command_needs_a_source(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "prepare", "--tokenizer", "byte", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--input" in capsys.readouterr().err
