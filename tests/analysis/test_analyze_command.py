"""selrope analyze: the command writes its figures and report; bad arguments are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from selrope.analysis.report import read_sections, write_section
from selrope.cli import main as cli_main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*argv: str) -> None:
    cli_main(["analyze", *argv])


def assert_pngs(folder: Path, *names: str) -> None:
    for name in names:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and 5_000 < len(data) < 400_000, name


def test_theory_analyses_write_figures_and_one_report(tmp_path: Path, capsys) -> None:
    run("leakage", "--out", str(tmp_path))
    run("rff", "--out", str(tmp_path), "--seed", "1")
    assert_pngs(tmp_path, "rff_error.png", "rff_attention_maps.png")
    assert_pngs(tmp_path, "leakage_kernel.png", "leakage_recurrence.png")
    report = (tmp_path / "report.md").read_text()
    sections = read_sections(report)
    assert list(sections) == ["rff", "leakage"]  # the order of ANALYSES, not of the runs
    assert sections["rff"].startswith("## rff") and "Seed 1;" in sections["rff"]
    for name in ("rff_error.png", "rff_attention_maps.png", "leakage_kernel.png"):
        assert f"]({name})" in report
    assert "wrote" in capsys.readouterr().out


def test_model_analyses_train_a_small_model_or_load_one(tmp_path: Path) -> None:
    run("complex", "--out", str(tmp_path), "--steps", "2")
    run_dir = tmp_path / "complex-model"
    assert (run_dir / "model" / "model.safetensors").is_file()
    run("angles", "--out", str(tmp_path), "--checkpoint", str(run_dir))
    assert not (tmp_path / "angles-model").exists()
    assert_pngs(tmp_path, "complex_eigenvalues.png", "angles.png")
    sections = read_sections((tmp_path / "report.md").read_text())
    assert list(sections) == ["complex", "angles"]
    assert "trained here for 2 steps" in sections["complex"]
    assert f"`{run_dir}`" in sections["angles"]
    assert "differ by at most" in sections["complex"]
    assert "Sequence accuracy" in sections["angles"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope", "--out", "x"], "argument analysis: invalid choice: 'nope'"),
        (["rff"], "the following arguments are required: --out"),
        (["rff", "--out", "x", "--seed", "one"], "argument --seed: invalid int value"),
        (["leakage", "--out", "x", "--checkpoint", "y"], "--checkpoint applies to complex"),
        (["rff", "--out", "x", "--steps", "3"], "--steps applies to complex and angles only"),
        (["angles", "--out", "x", "--steps", "0"], "--steps must be a positive integer; got 0"),
        (["angles", "--out", "x", "--checkpoint", "y", "--steps", "3"], "does not apply with"),
        (["complex", "--out", "x", "--checkpoint", "MISSING"], "--checkpoint MISSING: "),
        (["rff", "--out", "FILE"], "is a file, not a folder"),
        (["rff", "--out", " "], "--out must name a folder"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    argv: list[str], message: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("")
    argv = [str(tmp_path / "MISSING") if a == "MISSING" else a for a in argv]
    message = message.replace("MISSING", str(tmp_path / "MISSING"))
    with pytest.raises(SystemExit) as exit_info:
        run(*argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("selrope: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_a_checkpoint_of_another_task_is_refused(tmp_path: Path, capsys) -> None:
    from selrope.models import LanguageModel, LMConfig

    LanguageModel(LMConfig(vocab_size=7, d_model=8, n_layers=1, n_heads=2)).save_pretrained(
        tmp_path / "model"
    )
    with pytest.raises(SystemExit):
        run("angles", "--out", str(tmp_path / "out"), "--checkpoint", str(tmp_path))
    assert "expected a parity (Z2 state tracking) model with vocab_size 3; got 7" in (
        capsys.readouterr().err
    )


def test_report_sections_replace_their_own_and_keep_the_order(tmp_path: Path) -> None:
    write_section(tmp_path, "angles", "## angles\nfirst")
    write_section(tmp_path, "rff", "## rff\nA")
    write_section(tmp_path, "angles", "## angles\nsecond")
    text = (tmp_path / "report.md").read_text()
    assert text.index("## rff") < text.index("## angles")
    assert "second" in text and "first" not in text and text.count("## angles") == 1
    with pytest.raises(ValueError, match="name must be one of"):
        write_section(tmp_path, "other", "## other")
