"""--log tensorboard and --log wandb: what the loggers write, read back by their own readers."""

from __future__ import annotations

import json

import pytest

from selrope.cli import main

TINY = [
    "train", "--task", "state_tracking", "--group", "Z2", "--train-len", "8",
    "--test-lens", "8,16", "--num-train", "64", "--num-test", "16", "--d-model", "16",
    "--n-layers", "1", "--n-heads", "2", "--steps", "4", "--batch-size", "16",
    "--eval-every", "2", "--log-every", "1",
]  # fmt: skip


def test_tensorboard_event_file_holds_loss_lr_tokens_per_s_and_grad_norm(tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    main([*TINY, "--log", "tensorboard", "--out", str(tmp_path)])
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/loss", "train/lr", "train/tokens_per_s", "train/grad_norm"):
        assert tag in tags
        assert [event.step for event in events.Scalars(tag)] == [1, 2, 3, 4]
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    losses = [row["loss"] for row in logged if row["split"] == "train"]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(losses, rel=1e-6)
    assert [e.step for e in events.Scalars("test_16/sequence_accuracy")] == [2, 4]


def test_wandb_offline_writes_a_run_folder_without_network(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    main([*TINY, "--log", "wandb", "--out", str(tmp_path)])
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb")), "the offline run holds its event log"


def test_an_unknown_logger_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([*TINY, "--log", "mlflow", "--out", str(tmp_path / "r")])
    assert stopped.value.code == 2 and not (tmp_path / "r").exists()
    assert "--log must be one of tensorboard, wandb; got 'mlflow'" in capsys.readouterr().err


def test_mfu_is_on_the_bar_and_in_tensorboard_when_the_peak_is_known(tmp_path, capsys):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    main([*TINY, "--log", "tensorboard", "--peak-flops", "1e9", "--out", str(tmp_path)])
    assert "mfu=" in capsys.readouterr().err
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    mfu = [event.value for event in events.Scalars("train/mfu")]
    speeds = [event.value for event in events.Scalars("train/tokens_per_s")]
    plan = json.loads((tmp_path / "run.json").read_text())
    assert len(mfu) == 4 and all(value > 0 for value in mfu)
    # mfu = tokens/s x training FLOPs per token / peak: the ratio is the same at every step.
    ratios = [m / s for m, s in zip(mfu, speeds, strict=True)]
    assert ratios == pytest.approx([ratios[0]] * 4, rel=1e-5)  # TensorBoard keeps float32
    assert plan["train"]["peak_flops"] == 1e9
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert all("mfu" not in row for row in rows)  # the metrics files keep their columns
