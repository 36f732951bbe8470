"""The selrope command line and the experiment runner, with tiny settings."""

from __future__ import annotations

import dataclasses
import json

import pytest

from selrope import cli, demo
from selrope.experiments import RunSpec, rotary_preset, run_one
from selrope.options import all_options

TINY = [
    "--task", "state_tracking", "--group", "Z2", "--train-len", "8", "--test-lens", "8,16",
    "--num-train", "64", "--num-test", "16", "--d-model", "16", "--n-layers", "1",
    "--n-heads", "2", "--steps", "4", "--batch-size", "16", "--eval-every", "2",
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [("lr", "3e-3", 3e-3), ("steps", "64", 64), ("test_lens", "64,256", [64, 256]),
     ("warmup_steps", "null", None), ("decay", "none", "none"), ("tie_embeddings", "true", True),
     ("tie_embeddings", "0", False), ("mixer", "gla", "gla"), ("mixer", "gla,attention",
     ["gla", "attention"]), ("rotary_options", '{"a": 1}', {"a": 1}), ("train_len", "2..64",
     "2..64"), ("betas", "0.9,0.95", (0.9, 0.95)), ("mixer", "fox,gla", ["fox", "gla"]),
     ("forget_bias_init", "0", 0.0)],
)  # fmt: skip
def test_options_parse_their_field_types(name: str, text: str, value) -> None:
    option = all_options("train", "state_tracking")[name]
    assert option.parse(text, option.flag) == value


def test_options_are_sorted_into_task_model_and_training() -> None:
    spec = cli.spec_from_options(
        cli.parse_options(
            "train", [*TINY, "--mixer", "gdn", "--seed", "3", "--rotary", "rope", "--out", "x"]
        )
    )
    assert spec.task_params == {
        "group": "Z2",
        "train_len": 8,
        "test_lens": [8, 16],
        "num_train": 64,
        "num_test": 16,
    }
    assert spec.model == {"d_model": 16, "n_layers": 1, "n_heads": 2}
    assert spec.train == {"steps": 4, "batch_size": 16, "eval_every": 2}
    assert (spec.mixer, spec.rotary, spec.seed, spec.out_dir) == ("gdn", "rope", 3, "x")


def test_config_file_is_read_and_flags_win(tmp_path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("task: state_tracking\ngroup: S3\nlr: 0.01\nd_model: 32\n")
    spec = cli.spec_from_options(
        cli.parse_options("train", ["--config", str(config), "--lr", "0.02"])
    )
    assert spec.task_params["group"] == "S3"
    assert spec.train["lr"] == 0.02 and spec.model["d_model"] == 32


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ValueError, match="unrecognized arguments: --not-an-option"):
        cli.parse_options("train", [*TINY, "--not-an-option", "1"])


def test_train_command_writes_results(tmp_path, capsys) -> None:
    cli.main(["train", *TINY, "--mixer", "gla", "--rotary", "selective", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["test_len"] for r in rows] == [8, 16]
    for row in rows:
        assert row["task"] == "state_tracking" and row["group"] == "Z2"
        assert (row["mixer"], row["rotary"], row["seed"], row["train_len"]) == (
            "gla",
            "selective",
            0,
            8,
        )
        assert 0.0 <= row["accuracy"] <= 1.0 and row["accuracy"] == row["sequence_accuracy"]
    assert "| gla | selective |" in capsys.readouterr().out
    assert (tmp_path / "model" / "model.safetensors").exists()


def test_train_command_trains_fox(tmp_path) -> None:
    cli.main(["train", *TINY, "--mixer", "fox", "--rotary", "rope", "--forget-bias-init", "2",
              "--out", str(tmp_path)])  # fmt: skip
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {row["mixer"] for row in rows} == {"fox"}
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert (config["mixer"], config["forget_bias_init"]) == ("fox", 2.0)


def test_compare_runs_the_grid(tmp_path) -> None:
    cli.main(["compare", *TINY, "--mixers", "gla,attention", "--rotaries", "nope,selective",
              "--seeds", "0,1", "--workers", "1", "--out", str(tmp_path)])  # fmt: skip
    rows = json.loads((tmp_path / "results.json").read_text())
    variants = {(r["mixer"], r["rotary"], r["seed"]) for r in rows}
    assert len(variants) == 8 and len(rows) == 16
    table = (tmp_path / "results.md").read_text()
    assert "| attention | selective | 2 |" in table


def test_resume_continues_a_finished_run(tmp_path) -> None:
    spec = RunSpec(task="state_tracking", mixer="gla", rotary="rope", out_dir=str(tmp_path),
                   task_params={"train_len": 8, "test_lens": [8], "num_train": 64, "num_test": 16},
                   model={"d_model": 16, "n_layers": 1, "n_heads": 2},
                   train={"steps": 4, "batch_size": 16, "eval_every": 2})  # fmt: skip
    first = run_one(spec, progress=False)
    again = run_one(dataclasses.replace(spec, resume=True), progress=False)
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    assert final["train_loss"] is not None  # the resumed finished run keeps its last loss
    assert [r["accuracy"] for r in first] == [r["accuracy"] for r in again]
    assert again[0]["steps"] == 4


def test_rotary_presets_follow_the_task() -> None:
    assert rotary_preset("selective", "state_tracking")["theta_base"] == 1.0
    assert rotary_preset("selective", "copying")["skip_conv"] is True
    assert rotary_preset("rope", "mqar") == {"type": "rope", "base": 500000.0}
    options = {"selective": {"use_bias": True}}
    assert rotary_preset("selective", "mqar", options) == {"type": "selective", "use_bias": True}
    assert rotary_preset("rope", "mqar", options) == {"type": "rope", "base": 500000.0}
    with pytest.raises(ValueError, match="rotary_options must map rotary names"):
        rotary_preset("selective", "mqar", {"use_bias": True})
    with pytest.raises(ValueError, match="rotary must be one of"):
        rotary_preset("alibi", "mqar")


def test_demo_writes_table_json_and_plots(tmp_path, monkeypatch, capsys) -> None:
    tiny = dataclasses.replace(
        demo.DEMO_SPEC,
        task_params={**demo.DEMO_SPEC.task_params, "train_len": 8, "test_lens": [8, 16],
                     "num_train": 64, "num_test": 16},
        model={"d_model": 16, "n_layers": 1, "n_heads": 2},
        train={**demo.DEMO_SPEC.train, "steps": 2, "batch_size": 16, "eval_every": 2},
    )  # fmt: skip
    monkeypatch.setattr(demo, "DEMO_SPEC", tiny)
    rows = demo.run_demo(tmp_path, workers=1)
    assert {r["rotary"] for r in rows} == set(demo.DEMO_ROTARIES)
    assert {r["seed"] for r in rows} == set(demo.DEMO_SEEDS)
    assert (tmp_path / "results.json").exists() and (tmp_path / "results.md").exists()
    pytest.importorskip("matplotlib")
    assert list(tmp_path.glob("accuracy_vs_length*.png"))
    assert "| gla | selective |" in capsys.readouterr().out


def test_theory_command_prints_both_tables(capsys) -> None:
    cli.main(["theory"])
    out = capsys.readouterr().out
    assert "Softmax kernel from random rotations" in out and "Rotation kernel leakage" in out
