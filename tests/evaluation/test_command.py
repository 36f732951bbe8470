"""run_eval_command: a tiny saved model on a tiny prepared corpus, and one-line user errors."""

from __future__ import annotations

import json

import pytest
import torch

from selrope.data import load_split, prepare_corpus
from selrope.evaluation.command import run_eval_command
from selrope.models import LanguageModel, LMConfig


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "docs").mkdir()
    for i in range(6):
        prefix = "val" if i < 3 else "train"
        text = f"document {i}: " + " ".join(f"word{(i * 7 + j) % 13}" for j in range(40 + 9 * i))
        (root / "docs" / f"{prefix}{i}.txt").write_text(text)
    prepare_corpus([root / "docs"], "byte", root / "data", val_documents=["val*"], progress=False)
    return root / "data"


def _save_model(directory, vocab_size, rotary, seq_len=None):
    config = LMConfig(
        vocab_size=vocab_size,
        d_model=16,
        n_layers=1,
        n_heads=2,
        mixer="attention",
        rotary=rotary,
        mlp_ratio=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        LanguageModel(config).save_pretrained(directory / "model")
    if seq_len is not None:
        final = {"step": 1, "train_length": seq_len}
        (directory / "final_metrics.json").write_text(json.dumps(final))
    return directory


def _run_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_eval_command(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("selrope: error: "), err
    return err


def test_rope_scaling_adds_rows_only_beside_rope_models(corpus, tmp_path):
    vocab = load_split(corpus, "val").vocab_size
    nope = _save_model(tmp_path / "nope-run", vocab, {"type": "nope"})
    rope = _save_model(tmp_path / "rope-run", vocab, {"type": "rope"})
    out = tmp_path / "out"
    argv = ["--checkpoint", f"{nope},{rope}", "--data", str(corpus), "--lengths", "8"]
    argv += ["--out", str(out), "--device", "cpu", "--max-tokens", "32"]
    run_eval_command([*argv, "--rope-scaling", '{"kind": "linear", "factor": 2}'])
    report = json.loads((out / "eval.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["nope-run", "rope-run", "rope-run+linear"]


def test_eval_with_yarn_row(corpus, tmp_path, capsys):
    vocab = load_split(corpus, "val").vocab_size
    run = _save_model(tmp_path / "rope-run", vocab, {"type": "rope"}, seq_len=16)
    scaling = '{"kind": "yarn", "factor": 2, "original_max_position": 16}'
    out = tmp_path / "out"
    argv = ["--checkpoint", str(run), "--data", str(corpus), "--lengths", "8,16,32"]
    argv += ["--out", str(out), "--device", "cpu", "--rope-scaling", scaling, "--max-tokens", "96"]
    run_eval_command(argv)
    report = json.loads((out / "eval.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["rope-run", "rope-run+yarn"]
    assert report["scored_tokens"] == 96
    plain, yarn = report["runs"]
    assert plain["train_length"] == yarn["train_length"] == 16
    assert plain["config"]["rotary"].get("scaling") is None
    assert yarn["config"]["rotary"]["scaling"]["kind"] == "yarn"
    for row in report["runs"]:
        assert [r["tokens"] for r in row["results"]] == [96, 96, 96]
    # same weights, other frequencies: the two rows differ
    assert plain["results"][2]["nll"] != yarn["results"][2]["nll"]
    assert "rope-run+yarn" in (out / "eval.md").read_text()
    assert (out / "ppl_vs_length.png").is_file() and (out / "loss_vs_position.png").is_file()
    assert "ppl=" in capsys.readouterr().out


def test_user_errors_are_one_line(corpus, tmp_path, capsys):
    vocab = load_split(corpus, "val").vocab_size
    rope = str(_save_model(tmp_path / "rope", vocab, {"type": "rope"}))
    nope = str(_save_model(tmp_path / "nope", vocab, {"type": "nope"}))
    other = str(_save_model(tmp_path / "other", vocab + 1, {"type": "rope"}))
    base = ["--data", str(corpus), "--out", str(tmp_path / "out"), "--device", "cpu"]
    cases = [
        (["--checkpoint", rope, "--lengths", "8,x", *base], "--lengths must be positive"),
        (["--checkpoint", rope, "--lengths", "0", *base], "--lengths must be positive"),
        (["--checkpoint", str(tmp_path / "missing"), "--lengths", "8", *base], "holds no"),
        (["--checkpoint", other, "--lengths", "8", *base], f"vocab_size {vocab + 1}"),
        (
            [
                "--checkpoint",
                nope,
                "--lengths",
                "8",
                *base,
                "--rope-scaling",
                '{"kind": "linear", "factor": 2}',
            ],
            "none of the checkpoints uses RoPE",
        ),
        (
            [
                "--checkpoint",
                rope,
                "--lengths",
                "8",
                *base,
                "--rope-scaling",
                '{"kind": "linear", "factor": 2, "foo": 1}',
            ],
            "rope.scaling.foo is not an option",
        ),
        (["--checkpoint", rope, "--lengths", "8", *base, "--rope-scaling", "{yarn"], "JSON"),
        (["--checkpoint", rope, "--lengths", "8", *base, "--name", "a,b"], "--name needs one"),
        (["--checkpoint", rope, "--lengths", "8", *base[2:], "--data", str(tmp_path)], "manifest"),
        (["--checkpoint", rope, *base], "required: --lengths"),
    ]
    for argv, message in cases:
        assert message in _run_error(argv, capsys)
    assert not (tmp_path / "out").exists()
