"""selrope analyze rotation: each pair's turn across a window equals the difference of the
module's own unreduced float64 angles; windows stay inside documents; the command's report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from selrope.analysis.report import read_sections
from selrope.analysis.rotation import model_rotation, pair_rotation, window_starts
from selrope.cli import main as cli_main
from selrope.data import load_split, prepare_corpus
from selrope.models import LanguageModel, LMConfig
from selrope.rotary import SELECTIVE_LM_RECIPE, build_rotary

H, D, d = 2, 8, 12


@pytest.mark.parametrize(
    "config",
    [
        dict(SELECTIVE_LM_RECIPE),
        {**SELECTIVE_LM_RECIPE, "use_bias": True, "conv_activation": None},
        {"type": "selective", "skip_conv": True},
        {"type": "carope"},
        {"type": "rope", "base": 100.0},
    ],
    ids=["selective-lm", "selective-bias", "selective-skip-conv", "carope", "rope"],
)
def test_turn_is_the_difference_of_the_modules_unreduced_angles(config: dict) -> None:
    torch.manual_seed(0)
    rotary = build_rotary(config, num_heads=H, head_dim=D, model_dim=d).double()
    with torch.no_grad():  # make the increments large enough to wrap many times
        for parameter in rotary.parameters():
            parameter.add_(3 * torch.randn_like(parameter))
    x = torch.randn(3, 40, d, dtype=torch.float64)
    theta, _ = rotary.angles(x, None, torch.float64)  # float64: not reduced mod 2 pi
    expected = (theta[:, -1] - theta[:, 0]).abs()
    turned = pair_rotation(rotary, x)
    assert turned.dtype == torch.float64
    torch.testing.assert_close(turned, expected.expand_as(turned), rtol=1e-10, atol=1e-10)
    assert turned.max() > 2 * torch.pi


def test_nope_does_not_rotate() -> None:
    nope = build_rotary({"type": "nope"}, num_heads=H, head_dim=D, model_dim=d)
    assert pair_rotation(nope, torch.randn(2, 5, d)) is None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "docs").mkdir()
    for i, size in enumerate([40, 3, 75, 20, 120, 60]):
        prefix = "val" if i % 2 == 0 or i == 1 else "train"
        (root / "docs" / f"{prefix}{i}.txt").write_text(("abcdefghij" * 20)[:size])
    prepare_corpus([root / "docs"], "byte", root / "data", val_documents=["val*"], progress=False)
    return root / "data"


def test_windows_lie_inside_documents_and_are_spread(corpus: Path) -> None:
    split = load_split(corpus, "val")
    tokens = np.asarray(split.tokens)
    starts = window_starts(split, 16, 6)
    assert len(starts) == 6 and np.all(np.diff(starts) > 0)
    for start in starts:
        assert split.eos_id not in tokens[start : start + 16]  # no document boundary inside
    # The 40-, 75- and 120-token documents hold 2 + 4 + 7 windows of 16; the 3-token one none.
    assert len(window_starts(split, 16, 100)) == 13
    assert len(window_starts(split, 120, 5)) == 1
    with pytest.raises(ValueError, match="window: no validation document holds 121 tokens"):
        window_starts(split, 121, 5)


def test_model_rotation_per_layer() -> None:
    config = LMConfig(vocab_size=11, d_model=d, n_layers=2, n_heads=H, mixer="attention")
    torch.manual_seed(0)
    rope = LanguageModel(replace(config, rotary={"type": "rope"}))
    ids = torch.randint(0, 11, (2, 9))
    rows = model_rotation(rope, ids)
    assert [(row.layer, row.rotary) for row in rows] == [(0, "RoPE"), (1, "RoPE")]
    frequencies = rope.blocks[0].mixer.rotary.frequencies().double()
    torch.testing.assert_close(rows[0].per_pair, 8 * frequencies)
    nope = model_rotation(LanguageModel(replace(config, rotary={"type": "nope"})), ids)
    assert [row.rotary for row in nope] == ["nope", "nope"]
    assert all(row.per_pair.numel() == 0 for row in nope)


def _save(directory: Path, rotary: dict, train_length: int | None = None) -> Path:
    config = LMConfig(vocab_size=257, d_model=d, n_layers=1, n_heads=H, mixer="gla", rotary=rotary)
    torch.manual_seed(0)
    LanguageModel(config).save_pretrained(directory / "model")
    if train_length is not None:
        final = {"step": 1, "train_length": train_length}
        (directory / "final_metrics.json").write_text(json.dumps(final))
    return directory


def test_command_writes_a_table_and_figure(corpus: Path, tmp_path: Path) -> None:
    runs = [
        _save(tmp_path / "rope", {"type": "rope"}, train_length=32),
        _save(tmp_path / "selective", dict(SELECTIVE_LM_RECIPE)),
        _save(tmp_path / "nope", {"type": "nope"}),
    ]
    out = tmp_path / "out"
    cli_main(
        ["analyze", "rotation", "--out", str(out), "--data", str(corpus), "--windows", "4",
         "--checkpoint", ",".join(map(str, runs))]
    )  # fmt: skip
    assert (out / "rotation.png").read_bytes().startswith(b"\x89PNG")
    section = read_sections((out / "report.md").read_text())["rotation"]
    assert "4 windows of 32 tokens" in section  # the first model's training length
    rows = [line for line in section.splitlines() if line.startswith(f"| {tmp_path}")]
    assert [row.split(" | ")[2] for row in rows] == ["RoPE", "SelectiveRoPE", "nope"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "C"], "rotation needs --checkpoint RUN[,RUN...]"),
        (["--checkpoint", "R"], "rotation needs --data CORPUS"),
        (["--checkpoint", "R", "--data", "C", "--window", "1"], "--window must be an integer >= 2"),
        (["--checkpoint", "MISSING", "--data", "C"], "--checkpoint MISSING: "),
        (["--checkpoint", "R", "--data", "MISSING"], "--data MISSING: "),
        (["--checkpoint", "R", "--data", "C", "--window", "500"], "no validation document holds"),
        (["--checkpoint", "V", "--data", "C"], "vocab_size 11 but the data has 257"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    argv: list[str], message: str, corpus: Path, tmp_path: Path, capsys
) -> None:
    run = _save(tmp_path / "run", {"type": "rope"})
    other = tmp_path / "other"
    LanguageModel(LMConfig(vocab_size=11, d_model=d, n_heads=H)).save_pretrained(other / "model")
    names = {"C": str(corpus), "R": str(run), "V": str(other), "MISSING": str(tmp_path / "missing")}
    argv = [names.get(a, a) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["analyze", "rotation", "--out", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("selrope: error: ") and message.replace("MISSING", names["MISSING"]) in err
    )
    assert err.count("\n") == 1


def test_rotation_options_are_refused_elsewhere(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        cli_main(["analyze", "rff", "--out", str(tmp_path), "--data", "x"])
    assert "--data applies to rotation only" in capsys.readouterr().err


def test_a_corpus_with_another_tokenizer_is_refused(corpus: Path, tmp_path: Path, capsys) -> None:
    run = _save(tmp_path / "run", {"type": "rope"})
    saved = json.loads((corpus / "tokenizer.json").read_text())
    saved["normalizer"] = {"type": "Lowercase"}  # same vocabulary, another tokenizer
    (run / "model" / "tokenizer.json").write_text(json.dumps(saved))
    out = tmp_path / "out"
    argv = ["analyze", "rotation", "--out", str(out), "--data", str(corpus), "--windows", "2"]
    argv += ["--window", "16"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*argv, "--checkpoint", str(run)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"selrope: error: --data {corpus}: its tokenizer.json (sha256 ")
    assert f"saved beside the model in {run / 'model'}" in err and err.count("\n") == 1
    assert not out.exists()
    # The corpus' own tokenizer beside the model: the analysis runs.
    (run / "model" / "tokenizer.json").write_bytes((corpus / "tokenizer.json").read_bytes())
    cli_main([*argv, "--checkpoint", str(run)])
    assert (out / "rotation.png").is_file()
