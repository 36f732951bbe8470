"""selrope eval (selrope.cli.eval): a tiny saved model on a tiny prepared corpus, and its
refusals, each one line on stderr with exit 2 and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from selrope.cli import main
from selrope.data import load_split, prepare_corpus
from selrope.evaluation.memory import forward_activation_bytes
from selrope.models import LanguageModel, LMConfig


def _write_docs(folder: Path, vocabulary: str = "word", count: int = 6) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        prefix = "val" if i < count // 2 else "train"
        words = " ".join(f"{vocabulary}{(i * 7 + j) % 13}" for j in range(40 + 9 * i))
        (folder / f"{prefix}{i}.txt").write_text(f"document {i}: {words}")
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    prepare_corpus(
        [_write_docs(root / "docs")], "byte", root / "data", val_documents=["val*"],
        progress=False,
    )  # fmt: skip
    return root / "data"


def _save_model(directory: Path, vocab_size: int, rotary: dict, seq_len=None, **overrides) -> Path:
    config = LMConfig.from_dict(
        dict(
            vocab_size=vocab_size,
            d_model=16,
            n_layers=1,
            n_heads=2,
            mixer="attention",
            rotary=rotary,
            mlp_ratio=0,
            **overrides,
        )
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        LanguageModel(config).save_pretrained(directory / "model")
    if seq_len is not None:
        final = {"step": 1, "train_length": seq_len}
        (directory / "final_metrics.json").write_text(json.dumps(final))
    return directory


def run_eval(argv: list[str]) -> None:
    main(["eval", *argv])


def _run_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_eval(argv)
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
    run_eval([*argv, "--rope-scaling", '{"kind": "linear", "factor": 2}'])
    report = json.loads((out / "eval.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["nope-run", "rope-run", "rope-run+linear"]


def test_eval_with_yarn_row(corpus, tmp_path, capsys):
    vocab = load_split(corpus, "val").vocab_size
    run = _save_model(tmp_path / "rope-run", vocab, {"type": "rope"}, seq_len=16)
    scaling = '{"kind": "yarn", "factor": 2, "original_max_position": 16}'
    out = tmp_path / "out"
    argv = ["--checkpoint", str(run), "--data", str(corpus), "--lengths", "8,16,32"]
    argv += ["--out", str(out), "--device", "cpu", "--rope-scaling", scaling, "--max-tokens", "96"]
    run_eval(argv)
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
    scaling = ["--rope-scaling", '{"kind": "linear", "factor": 2}']
    cases = [
        (["--checkpoint", rope, "--lengths", "8,x", *base], "--lengths must be positive"),
        (["--checkpoint", rope, "--lengths", "0", *base], "--lengths must be positive"),
        (["--checkpoint", str(tmp_path / "missing"), "--lengths", "8", *base], "holds no"),
        (["--checkpoint", other, "--lengths", "8", *base], f"vocab_size {vocab + 1}"),
        (["--checkpoint", nope, "--lengths", "8", *base, *scaling], "none of the checkpoints"),
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
        ),  # fmt: skip
        (["--checkpoint", rope, "--lengths", "8", *base, "--rope-scaling", "{yarn"], "JSON"),
        (["--checkpoint", rope, "--lengths", "8", *base, "--name", "a,b"], "--name needs one"),
        (["--checkpoint", rope, "--lengths", "8", *base[2:], "--data", str(tmp_path)], "manifest"),
        (["--checkpoint", rope, *base], "required: --lengths"),
        (["--checkpoint", rope, "--lengths", "8", *base, "--batch-size", "x"], "invalid int"),
        (["--checkpoint", rope, "--lengths", "8", *base, "--bogus"], "unrecognized arguments"),
    ]
    for argv, message in cases:
        assert message in _run_error(argv, capsys)
    assert not (tmp_path / "out").exists()


def test_a_corpus_with_another_tokenizer_is_refused(tmp_path, capsys):
    # Two BPE tokenizers of the same vocabulary size, trained on different text: the vocabulary
    # check passes, the tokenizer.json check does not.
    root = tmp_path / "corpora"
    for name, vocabulary in (("a", "word"), ("b", "quartz")):
        docs = _write_docs(root / f"docs-{name}", vocabulary)
        prepare_corpus([docs], "bpe:262", root / name, val_documents=["val*"], progress=False)
    vocab = load_split(root / "a", "val").vocab_size
    assert vocab == load_split(root / "b", "val").vocab_size
    tokenizer_a = (root / "a" / "tokenizer.json").read_bytes()
    assert tokenizer_a != (root / "b" / "tokenizer.json").read_bytes()
    run = _save_model(tmp_path / "run", vocab, {"type": "rope"})
    (run / "model" / "tokenizer.json").write_bytes(tokenizer_a)
    out = tmp_path / "out"
    argv = ["--checkpoint", str(run), "--lengths", "8", "--out", str(out), "--device", "cpu"]
    err = _run_error([*argv, "--data", str(root / "b")], capsys)
    assert f"--data {root / 'b'}: its tokenizer.json" in err
    assert f"not the one saved beside the model in {run / 'model'}" in err
    assert not out.exists()
    run_eval([*argv, "--data", str(root / "a"), "--max-tokens", "16"])  # its own corpus: fine
    assert (out / "eval.json").is_file()
    # A model directory without tokenizer.json keeps today's behaviour (vocabulary check only).
    (run / "model" / "tokenizer.json").unlink()
    run_eval(
        [*argv, "--data", str(root / "b"), "--max-tokens", "16", "--out", str(tmp_path / "o2")]
    )
    assert (tmp_path / "o2" / "eval.json").is_file()


def test_attention_scores_beyond_memory_are_refused(tmp_path, capsys, monkeypatch):
    # 60,000 tokens of one validation document (bytes), an attention model, one window.
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "val.txt").write_text("abcdefghij " * 5600)
    (docs / "train.txt").write_text("some training text")
    prepare_corpus([docs], "byte", tmp_path / "data", val_documents=["val*"], progress=False)
    run = _save_model(tmp_path / "run", 257, {"type": "rope"})
    config = LanguageModel.from_pretrained(run).config
    # The estimate counts at least the 2 heads x T x T float32 scores and weights.
    assert forward_activation_bytes(config, 1, 60_000) >= 2 * 2 * 60_000**2 * 4
    # Whatever this machine has, pretend it has 16 GB.
    monkeypatch.setattr("selrope.cli.eval.physical_memory_bytes", lambda: 16 * 10**9)
    out = tmp_path / "out"
    argv = ["--checkpoint", str(run), "--data", str(tmp_path / "data"), "--out", str(out)]
    argv += ["--device", "cpu", "--batch-size", "1"]
    err = _run_error([*argv, "--lengths", "60000"], capsys)
    assert "--lengths 60000 with --batch-size 1: one forward pass of 1 window(s)" in err
    assert "2 heads x 60000 x 60000 attention scores per window" in err
    assert "more than this machine's 16.0 GB of memory" in err
    assert not out.exists()
    run_eval([*argv, "--lengths", "64", "--max-tokens", "128"])  # a short length still runs
    assert (out / "eval.json").is_file()


@pytest.mark.parametrize("cut", ["100 bytes", "half"])
def test_a_truncated_weights_file_is_refused(corpus, tmp_path, capsys, cut):
    run = _save_model(tmp_path / "run", 257, {"type": "rope"})
    weights = run / "model" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:100] if cut == "100 bytes" else data[: len(data) // 2])
    out = tmp_path / "out"
    argv = ["--checkpoint", str(run), "--data", str(corpus), "--lengths", "8"]
    err = _run_error([*argv, "--out", str(out), "--device", "cpu"], capsys)
    assert f"selrope: error: {weights}: not a complete safetensors file (" in err
    assert "expected the weights that save_pretrained writes" in err
    assert not out.exists()


def test_a_model_beyond_the_machine_and_weights_of_another_shape_are_refused(
    corpus, tmp_path, capsys
):
    run = _save_model(tmp_path / "run", 257, {"type": "rope"})
    config_file = run / "model" / "config.json"
    values = json.loads(config_file.read_text())
    out = tmp_path / "out"
    argv = ["--checkpoint", str(run), "--data", str(corpus), "--lengths", "8"]
    argv += ["--out", str(out), "--device", "cpu"]
    config_file.write_text(json.dumps({**values, "d_model": 10**9}))
    err = _run_error(argv, capsys)
    assert f"selrope: error: {config_file}: a model of 4,000,000,516,000,000,000 parameters" in err
    config_file.write_text(json.dumps({**values, "d_model": 200_000, "n_heads": 2}))
    err = _run_error(argv, capsys)
    assert f"{config_file}: a model of " in err and "parameters needs about" in err
    config_file.write_text(json.dumps({**values, "d_model": 32}))
    err = _run_error(argv, capsys)
    assert f"{run / 'model' / 'model.safetensors'}: weights of another model: " in err
    assert "has shape [257, 16]" in err and "expects [257, 32]" in err
    assert not out.exists()
