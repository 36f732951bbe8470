"""selrope analyze runs: variants, seed spread and escape steps of run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selrope.analysis.report import read_sections
from selrope.analysis.training_runs import (
    assign_variants,
    escape_step,
    find_runs,
    flatten,
    variant_table,
)
from selrope.cli import main as cli_main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(
    folder: Path,
    *,
    rotary: str,
    seed: int,
    train_accuracies: list[float],
    final: dict[int, float] | None,
    lr: float = 1e-3,
    stopped_early: bool = False,
) -> Path:
    """A run folder as selrope writes it: spec.json, metrics.jsonl, final_metrics.json."""
    folder.mkdir(parents=True)
    spec = {
        "task": "mqar",
        "mixer": "gla",
        "rotary": rotary,
        "seed": seed,
        "task_params": {"seq_len": 64},
        "train": {"lr": lr, "steps": 30},
        "out_dir": str(folder),
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    rows = [
        {"step": 10 * (i + 1), "split": "train", "loss": 2.0 - a, "token_accuracy": a,
         "grad_norm": 1.0 + a}
        for i, a in enumerate(train_accuracies)
    ]  # fmt: skip
    rows.insert(1, {"step": 10, "split": "test", "length": 64, "loss": 0.1, "token_accuracy": 1.0})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    if final is not None:
        tests = {str(n): {"sequence_accuracy": a, "token_accuracy": a} for n, a in final.items()}
        final_metrics = {"step": 10 * len(train_accuracies), "stopped_early": stopped_early}
        (folder / "final_metrics.json").write_text(json.dumps({**final_metrics, "tests": tests}))
    return folder


def test_escape_step_is_the_first_training_row_at_the_threshold() -> None:
    rows = [
        {"step": 10, "split": "train", "token_accuracy": 0.2},
        {"step": 10, "split": "test", "token_accuracy": 0.9},  # test rows do not count
        {"step": 20, "split": "train", "token_accuracy": 0.5},
        {"step": 30, "split": "train", "token_accuracy": 0.9},
    ]
    assert escape_step(rows, 0.5) == 20
    assert escape_step(rows, 0.8) == 30
    assert escape_step(rows, 0.95) is None


def test_flatten_nests_keys_and_keeps_lists_comparable() -> None:
    flat = flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}, "e": None})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "d": "{}", "e": None}


def test_variants_are_the_spec_fields_that_differ_except_the_seed(tmp_path: Path) -> None:
    for rotary in ("nope", "selective"):
        for seed in (0, 1):
            write_run(tmp_path / f"{rotary}-{seed}", rotary=rotary, seed=seed,
                      train_accuracies=[0.1], final={64: 1.0})  # fmt: skip
    runs = find_runs([tmp_path])
    assert assign_variants(runs) == ["rotary"]  # seed and out_dir differ too, but do not count
    assert [run.variant for run in runs] == [(("rotary", "nope"),)] * 2 + [
        (("rotary", "selective"),)
    ] * 2


def test_a_field_one_spec_leaves_out_is_the_default(tmp_path: Path) -> None:
    write_run(tmp_path / "a", rotary="rope", seed=0, train_accuracies=[0.1], final=None)
    write_run(tmp_path / "b", rotary="rope", seed=0, train_accuracies=[0.1], final=None)
    spec = json.loads((tmp_path / "b" / "spec.json").read_text())
    spec["model"] = {"d_model": 128}
    (tmp_path / "b" / "spec.json").write_text(json.dumps(spec))
    runs = find_runs([tmp_path])
    assert assign_variants(runs) == ["model.d_model"]
    assert [run.variant for run in runs] == [
        (("model.d_model", "default"),),
        (("model.d_model", 128),),
    ]


def test_table_gives_mean_std_per_seed_and_median_escape(tmp_path: Path) -> None:
    write_run(tmp_path / "a0", rotary="rope", seed=0, train_accuracies=[0.1, 0.6, 0.9],
              final={64: 1.0, 128: 0.5}, stopped_early=True)  # fmt: skip
    write_run(tmp_path / "a1", rotary="rope", seed=1, train_accuracies=[0.1, 0.2, 0.7],
              final={64: 0.5, 128: 0.25})  # fmt: skip
    write_run(tmp_path / "a2", rotary="rope", seed=2, train_accuracies=[0.1, 0.2, 0.3],
              final={64: 0.0, 128: 0.0})  # fmt: skip
    write_run(tmp_path / "b0", rotary="nope", seed=0, train_accuracies=[0.1, 0.2],
              final=None)  # fmt: skip
    write_run(tmp_path / "b1", rotary="nope", seed=1, train_accuracies=[0.6, 0.7],
              final={64: 1.0, 128: 1.0})  # fmt: skip
    runs = find_runs([tmp_path])
    assign_variants(runs)
    header, _, rope, nope = variant_table(runs, 0.5)
    assert header.startswith("| variant | seeds | accuracy at 64 | accuracy at 128 | per seed")
    # rope: accuracies (1, 0.5, 0) at 64 -> 0.5 ± 0.5; escapes 20, 30, never -> median 30
    assert rope == (
        "| rotary=rope | 0, 1, 2 | 0.500 ± 0.500 | 0.250 ± 0.250 "
        "| 1.00 / 0.50; 0.50 / 0.25; 0.00 / 0.00 | 20, 30, - | 30 | 30*, 30, 30 |"
    )
    # nope: one seed still running, one escaped at 10; the median of (never, 10) is never
    assert nope == (
        "| rotary=nope | 0, 1 | 1.000 ± 0.000 | 1.000 ± 0.000 | 1.00 / 1.00 | -, 10 | - "
        "| running, 20 |"
    )


def test_command_writes_the_table_and_the_curves(tmp_path: Path) -> None:
    grid = tmp_path / "grid"
    for lr in (1e-3, 1e-2):
        for seed in (0, 1, 2):
            write_run(grid / f"lr{lr}-{seed}", rotary="selective", seed=seed, lr=lr,
                      train_accuracies=[0.1, 0.3 * (seed + 1)], final={64: 0.1 * seed})  # fmt: skip
    out = tmp_path / "out"
    cli_main(
        ["analyze", "runs", "--runs", str(grid), "--out", str(out), "--escape-accuracy", "0.6"]
    )
    figure = (out / "runs_training.png").read_bytes()
    assert figure.startswith(PNG_MAGIC) and len(figure) > 5_000
    section = read_sections((out / "report.md").read_text())["runs"]
    assert "6 runs from" in section and "variants differ in `train.lr`" in section
    assert "| lr=0.001 | 0, 1, 2 | 0.100 ± 0.100 |" in section
    assert "| -, 20, 20 | 20 |" in section  # seed 0 reaches 0.3 only: below 0.6
    assert "](runs_training.png)" in section


def test_a_real_compare_grid_is_read(tmp_path: Path) -> None:
    cli_main(["compare", "--task", "state_tracking", "--group", "Z2", "--train-len", "8",
              "--test-lens", "8,16", "--num-train", "64", "--num-test", "16", "--d-model", "16",
              "--n-layers", "1", "--n-heads", "2", "--steps", "4", "--batch-size", "16",
              "--eval-every", "2", "--log-every", "1", "--rotaries", "nope,rope", "--seeds", "0,1",
              "--workers", "1", "--out", str(tmp_path / "grid")])  # fmt: skip
    runs = find_runs([tmp_path / "grid"])
    assert assign_variants(runs) == ["rotary"]
    assert sorted((run.spec["rotary"], run.seed) for run in runs) == [
        ("nope", 0), ("nope", 1), ("rope", 0), ("rope", 1)
    ]  # fmt: skip
    assert all(run.final is not None and run.final["step"] == 4 for run in runs)
    lines = variant_table(runs, 1.0)
    assert len(lines) == 4 and all("accuracy at 16" in lines[0] for _ in lines)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["runs", "--out", "x"], "runs needs --runs DIR[,DIR...]"),
        (["rff", "--out", "x", "--runs", "y"], "--runs applies to runs only"),
        (["leakage", "--out", "x", "--escape-accuracy", "0.5"], "--escape-accuracy applies to"),
        (["runs", "--out", "x", "--runs", "EMPTY", "--escape-accuracy", "0"], "must be in (0, 1]"),
        (["runs", "--out", "x", "--runs", "NOWHERE"], "NOWHERE: not a folder"),
        (["runs", "--out", "x", "--runs", "EMPTY"], "EMPTY: no run folders"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    argv: list[str], message: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "EMPTY").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["analyze", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("selrope: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()
