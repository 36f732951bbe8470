"""Data-parallel training: 2 CPU processes (torchrun) == 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from selrope.models import LanguageModel, LMConfig
from selrope.tasks import build_task
from selrope.training import TrainConfig, train

SCRIPT = textwrap.dedent(
    """
    import torch
    from selrope.models import LanguageModel, LMConfig
    from selrope.tasks import build_task
    from selrope.training import TrainConfig, train

    torch.manual_seed(0)
    model = LanguageModel(LMConfig.from_dict(dict(**{model_config!r})))
    config = TrainConfig(**{train_config!r})
    train(model, build_task("state_tracking", **{task!r}), config, progress=False)
    """
)

TASK = {"group": "Z2", "train_len": 12, "test_lens": [12], "num_train": 64, "num_test": 16}
MODEL = {
    "vocab_size": 3,
    "d_model": 16,
    "n_layers": 1,
    "n_heads": 2,
    "mixer": "attention",
    "rotary": {"type": "rope"},
    "mlp_ratio": 2.0,
}


def train_config(out_dir: Path, **overrides) -> dict:
    return {
        "steps": 4,
        "batch_size": 8,
        "lr": 1e-2,
        "log_every": 1,
        "eval_every": 4,
        "precision": "fp32",
        "device": "cpu",
        "out_dir": str(out_dir),
        **overrides,
    }


def logged_losses(out_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if row["split"] == "train"]


def train_here(out_dir: Path, **overrides) -> list[float]:
    torch.manual_seed(0)
    model = LanguageModel(LMConfig.from_dict(dict(**MODEL)))
    task = build_task("state_tracking", **TASK)
    train(model, task, TrainConfig(**train_config(out_dir, **overrides)), progress=False)
    return logged_losses(out_dir)


def test_gradient_accumulation_equals_one_pass(tmp_path):
    whole = train_here(tmp_path / "whole")
    accumulated = train_here(tmp_path / "accumulated", micro_batch_size=2)
    assert len(whole) == 4
    torch.testing.assert_close(accumulated, whole, rtol=0, atol=1e-5)


def test_batch_size_must_split_over_micro_batches(tmp_path):
    # Rejected with the settings, before a run folder exists.
    with pytest.raises(ValueError, match=r"micro_batch_size must divide batch_size \(8\); got 3"):
        train_here(tmp_path / "run", micro_batch_size=3)
    assert not (tmp_path / "run").exists()
    # The split over processes is known only when training starts.
    config = TrainConfig(**train_config(tmp_path / "run", micro_batch_size=2))
    assert config.micro_steps(world_size=2) == 2
    with pytest.raises(ValueError, match=r"batch_size must be a multiple of processes x"):
        config.micro_steps(world_size=3)


def test_two_processes_equal_one_process(tmp_path):
    single = train_here(tmp_path / "single")
    script = tmp_path / "ddp_train.py"
    config = train_config(tmp_path / "ddp", micro_batch_size=2)
    script.write_text(SCRIPT.format(task=TASK, model_config=MODEL, train_config=config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    result = subprocess.run(
        [*launch, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    torch.testing.assert_close(logged_losses(tmp_path / "ddp"), single, rtol=0, atol=1e-5)
    checkpoints = sorted((tmp_path / "ddp" / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step_00000004"]
