"""A run records what it trained on; --resume refuses another model, settings or corpus."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch

from selrope.cli import main

pytest.importorskip("tokenizers")

LM = [
    "train", "--task", "lm", "--seq-len", "16", "--d-model", "16", "--n-layers", "1",
    "--n-heads", "2", "--mixer", "attention", "--rotary", "rope", "--steps", "2",
    "--batch-size", "4", "--val-tokens", "64", "--eval-every", "2",
]  # fmt: skip


def corpus(folder, text: str, tokenizer: str = "byte"):
    source = folder.parent / f"{folder.name}-text-{len(text)}"
    source.mkdir()
    for i in range(6):
        (source / f"doc{i}.txt").write_text(f"{text} {i} " * 40)
    main(["data", "prepare", "--input", str(source), "--tokenizer", tokenizer, "--out",
          str(folder), "--quiet"])  # fmt: skip
    return folder


def test_resume_on_a_replaced_corpus_is_refused_before_anything_is_written(tmp_path, capsys):
    data = corpus(tmp_path / "corpus", "the first corpus")
    run = tmp_path / "run"
    main([*LM, "--data", str(data), "--out", str(run)])
    recorded = json.loads((run / "run.json").read_text())["data_fingerprint"]
    assert recorded["tokenizer_sha256"] and recorded["vocab_size"] == 257
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    shutil.rmtree(data)
    corpus(data, "quite another text, of another length entirely", tokenizer="bpe:300")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main([*LM, "--data", str(data), "--steps", "4", "--resume", "--out", str(run)])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and len(err.splitlines()) == 1
    assert "cannot resume" in err and "data_fingerprint" in err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


def test_a_checkpoint_state_that_is_a_pickle_is_refused_on_resume(tmp_path, capsys):
    data = corpus(tmp_path / "corpus", "some text")
    run = tmp_path / "run"
    main([*LM, "--data", str(data), "--out", str(run)])
    state = next((run / "checkpoints").iterdir()) / "state.pt"
    # A full pickle (an arbitrary object, which weights-only loading refuses), not the
    # weights-only dict that save_checkpoint writes.
    torch.save({"step": 2, "optimizer": argparse.Namespace(lr=1)}, state)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main([*LM, "--data", str(data), "--steps", "4", "--resume", "--out", str(run)])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and len(err.splitlines()) == 1 and "state.pt" in err
