"""The selrope command line and the experiment runner, with tiny settings."""

from __future__ import annotations

import copy
import json
import re

import pytest

from selrope import demo
from selrope.cli import main
from selrope.cli.train import parse_options
from selrope.experiments import all_options, rotary_preset, run_one, sort_options
from selrope.tasks import task_spec

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


def test_options_are_sorted_into_task_model_mixer_and_training() -> None:
    argv = [*TINY, "--mixer", "gdn", "--seed", "3", "--rotary", "rope", "--out", "x",
            "--expand-k", "0.5"]  # fmt: skip
    sections = sort_options(parse_options("train", argv))
    assert sections["task"] == {
        "group": "Z2",
        "train_len": 8,
        "test_lens": [8, 16],
        "num_train": 64,
        "num_test": 16,
    }
    assert sections["model"] == {"d_model": 16, "n_layers": 1, "n_heads": 2}
    assert sections["mixer"] == {"expand_k": 0.5}
    assert sections["train"] == {"steps": 4, "batch_size": 16, "eval_every": 2}
    run = sections["run"]
    assert (run["mixer"], run["rotary"], run["seed"], run["out"]) == ("gdn", "rope", 3, "x")


def test_config_files_merge_in_order_and_flags_win(tmp_path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.json"
    first.write_text("task: state_tracking\ngroup: S3\nlr: 0.01\nd_model: 32\n")
    second.write_text(json.dumps({"model": {"d_model": 48}, "train": {"steps": 7}}))
    argv = ["--config", str(first), "--config", str(second), "--lr", "0.02"]
    sections = sort_options(parse_options("train", argv))
    assert sections["task"]["group"] == "S3"
    assert sections["train"] == {"lr": 0.02, "steps": 7} and sections["model"]["d_model"] == 48


def test_a_sweep_files_grid_is_compares_and_its_first_cell_is_trains(tmp_path) -> None:
    sweep = tmp_path / "sweep.yaml"
    grid = "grid: {mixers: [gdn, gla], rotaries: 'rope,nope', seeds: [4, 5], workers: 1}\n"
    sweep.write_text("task: {name: state_tracking, group: S3}\n" + grid)
    grid = sort_options(parse_options("compare", ["--config", str(sweep)]), "compare")["grid"]
    assert grid == {"mixers": ["gdn", "gla"], "rotaries": ["rope", "nope"], "seeds": [4, 5],
                    "workers": 1}  # fmt: skip
    run = sort_options(parse_options("train", ["--config", str(sweep)]))["run"]
    assert (run["mixer"], run["rotary"], run["seed"]) == ("gdn", "rope", 4)
    run = sort_options(parse_options("train", ["--config", str(sweep), "--rotary", "selective"]))
    assert (run["run"]["rotary"], run["task"]["group"]) == ("selective", "S3")
    sweep.write_text("grid: {rotaries: [spiral]}\n")
    with pytest.raises(ValueError, match="rotaries"):
        parse_options("train", ["--config", str(sweep)])


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ValueError, match="unrecognized arguments: --not-an-option"):
        parse_options("train", [*TINY, "--not-an-option", "1"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--mixer", "attention", "--expand-k", "2"],
      "--expand-k does not apply to --mixer attention .it is an option of gla, gdn."),
     (["--mixer", "gdn", "--tie-pair-decay", "true"], "--tie-pair-decay does not apply"),
     (["--mixer", "gla", "--forget-bias-init", "1"], "--forget-bias-init does not apply")],
)  # fmt: skip
def test_a_mixer_option_of_another_mixer_is_refused(tmp_path, capsys, argv, message) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["train", *TINY, *argv, "--out", str(tmp_path / "run")])
    assert stopped.value.code == 2 and not (tmp_path / "run").exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and __import__("re").search(message, err)


def test_every_option_has_help_from_plain_data() -> None:
    for task in ("state_tracking", "mqar", "copying", "lm", "mad_fuzzy_recall"):
        for option in all_options("train", task).values():
            assert option.help, option.name
    assert "embeddings included" in all_options("train", "lm")["weight_decay"].help


def test_run_json_reproduces_the_run_as_a_config_file(tmp_path) -> None:
    main(["train", *TINY, "--mixer", "gla", "--tie-pair-decay", "true", "--out",
          str(tmp_path / "a")])  # fmt: skip
    record = json.loads((tmp_path / "a" / "run.json").read_text())
    assert record["model"]["mixer"]["kind"] == "gla" and record["model"]["mixer"]["tie_pair_decay"]
    main(["train", "--config", str(tmp_path / "a" / "run.json"), "--out", str(tmp_path / "b")])
    again = json.loads((tmp_path / "b" / "run.json").read_text())
    assert again["model"] == record["model"] and again["task"] == record["task"]
    losses = [json.loads(line)["loss"] for line in (tmp_path / "a" / "metrics.jsonl").open()]
    again_losses = [json.loads(line)["loss"] for line in (tmp_path / "b" / "metrics.jsonl").open()]
    assert losses == again_losses


def test_train_command_writes_results(tmp_path, capsys) -> None:
    main(["train", *TINY, "--mixer", "gla", "--rotary", "selective", "--out", str(tmp_path)])
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
    main(["train", *TINY, "--mixer", "fox", "--rotary", "rope", "--forget-bias-init", "2",
              "--out", str(tmp_path)])  # fmt: skip
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {row["mixer"] for row in rows} == {"fox"}
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["mixer"]["kind"] == "fox" and config["mixer"]["forget_bias_init"] == 2.0
    assert config["mixer"]["relative_positions"] == "none"


@pytest.mark.parametrize(
    ("mixer", "position"),
    [("attention", "alibi"), ("attention", "cope"), ("fox", "cope"), ("fox", "path")],
)
def test_train_command_trains_a_mechanism_inside_attention(tmp_path, mixer, position) -> None:
    main(["train", *TINY, "--mixer", mixer, "--rotary", position, "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {row["rotary"] for row in rows} == {position}
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["mixer"]["kind"] == mixer
    assert config["mixer"]["relative_positions"] == position
    assert config["rotary"] == {"type": "nope"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mixer", "gla", "--rotary", "alibi"], "--rotary alibi works inside softmax attention: "
         "it needs --mixer attention; got gla"),
        (["--mixer", "gdn", "--rotary", "pope"], "rotary pope .* needs mixer attention or fox"),
        (["--mixer", "fox", "--relative-positions", "alibi"],
         r"--relative-positions \(of mixer fox\) must be one of none, cope, path; got 'alibi'"),
    ],
)  # fmt: skip
def test_a_position_encoding_its_mixer_lacks_is_refused(tmp_path, capsys, argv, message) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["train", *TINY, *argv, "--out", str(tmp_path / "run")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not (tmp_path / "run").exists()


def test_compare_runs_the_grid(tmp_path) -> None:
    main(["compare", *TINY, "--mixers", "gla,attention", "--rotaries", "nope,selective",
              "--seeds", "0,1", "--workers", "1", "--out", str(tmp_path)])  # fmt: skip
    rows = json.loads((tmp_path / "results.json").read_text())
    variants = {(r["mixer"], r["rotary"], r["seed"]) for r in rows}
    assert len(variants) == 8 and len(rows) == 16
    table = (tmp_path / "results.md").read_text()
    assert "| attention | selective | 2 |" in table


def test_resume_continues_a_finished_run(tmp_path) -> None:
    run = {
        "run": {"task": "state_tracking", "mixer": "gla", "rotary": "rope", "out": str(tmp_path)},
        "task": {"train_len": 8, "test_lens": [8], "num_train": 64, "num_test": 16},
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2},
        "train": {"steps": 4, "batch_size": 16, "eval_every": 2},
    }
    first = run_one(run, progress=False)
    resumed = copy.deepcopy(run)
    resumed["run"]["resume"] = True
    again = run_one(resumed, progress=False)
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    assert final["train_loss"] is not None  # the resumed finished run keeps its last loss
    assert [r["accuracy"] for r in first] == [r["accuracy"] for r in again]
    assert again[0]["steps"] == 4


def test_rotary_presets_follow_the_task() -> None:
    def recipe(task):
        return task_spec(task).selective_recipe

    assert rotary_preset("selective", recipe("state_tracking"))["theta_base"] == 1.0
    assert rotary_preset("selective", recipe("copying"))["skip_conv"] is True
    assert rotary_preset("rope", recipe("mqar")) == {"type": "rope", "base": 500000.0}
    options = {"selective": {"use_bias": True}}
    assert rotary_preset("selective", recipe("mqar"), options) == {
        "type": "selective",
        "use_bias": True,
    }
    assert rotary_preset("rope", recipe("mqar"), options) == {"type": "rope", "base": 500000.0}
    with pytest.raises(ValueError, match="rotary_options must map rotary names"):
        rotary_preset("selective", recipe("mqar"), {"use_bias": True})
    with pytest.raises(ValueError, match="rotary must be one of"):
        rotary_preset("xpos", recipe("mqar"))


def test_demo_writes_table_json_and_plots(tmp_path, monkeypatch, capsys) -> None:
    tiny = {
        **demo.DEMO_RUN,
        "task": {**demo.DEMO_RUN["task"], "train_len": 8, "test_lens": [8, 16],
                 "num_train": 64, "num_test": 16},
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2},
        "train": {**demo.DEMO_RUN["train"], "steps": 2, "batch_size": 16, "eval_every": 2},
    }  # fmt: skip
    monkeypatch.setattr(demo, "DEMO_RUN", tiny)
    rows = demo.run_demo(tmp_path, workers=1)
    assert {r["rotary"] for r in rows} == set(demo.DEMO_ROTARIES)
    assert {r["seed"] for r in rows} == set(demo.DEMO_SEEDS)
    assert (tmp_path / "results.json").exists() and (tmp_path / "results.md").exists()
    pytest.importorskip("matplotlib")
    assert list(tmp_path.glob("accuracy_vs_length*.png"))
    assert "| gla | selective |" in capsys.readouterr().out


def test_theory_command_prints_both_tables(capsys) -> None:
    main(["theory"])
    out = capsys.readouterr().out
    assert "Softmax kernel from random rotations" in out and "Rotation kernel leakage" in out
