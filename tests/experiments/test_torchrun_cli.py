"""``selrope train`` under torchrun into fresh folders: every launch trains (the run folder is
decided once, on rank 0, before any rank writes) and gives one process's per-step losses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selrope.cli import main

TRAIN = [
    "train", "--task", "state_tracking", "--group", "Z2", "--train-len", "12",
    "--test-lens", "12", "--num-train", "64", "--num-test", "16", "--d-model", "16",
    "--n-layers", "1", "--n-heads", "2", "--mixer", "gla", "--rotary", "selective",
    "--steps", "4", "--batch-size", "8", "--log-every", "1", "--eval-every", "4",
    "--precision", "fp32", "--device", "cpu",
]  # fmt: skip


def train_losses(out_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if row["split"] == "train"]


def torchrun(argv: list[str]) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*launch, "2", "-m", "selrope", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_torchrun_into_fresh_folders_always_trains_like_one_process(tmp_path):
    main([*TRAIN, "--out", str(tmp_path / "single")])
    single = train_losses(tmp_path / "single")
    assert len(single) == 4
    for attempt in range(3):  # the race of the old runner failed about one launch in three
        out = tmp_path / f"ddp{attempt}"
        result = torchrun([*TRAIN, "--out", str(out)])
        assert result.returncode == 0, result.stderr[-3000:]
        torch.testing.assert_close(train_losses(out), single, rtol=0, atol=1e-5)
        assert json.loads((out / "run.json").read_text())["model"]["mixer"]["kind"] == "gla"
        assert (out / "model" / "model.safetensors").is_file()


def test_torchrun_refusal_is_one_line_on_every_rank_and_writes_nothing(tmp_path):
    out = tmp_path / "used"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = torchrun([*TRAIN, "--out", str(out)])
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("selrope: error:")]
    # Every rank gets the same one-line error; torchrun may stop the second rank before it has
    # printed its copy once the first has exited.
    assert 1 <= len(errors) <= 2 and all("is not empty; pass --resume" in e for e in errors)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("resume_flag", ["--resume", "--resume-or-start"])
def test_torchrun_resumes_a_killed_single_process_run_to_its_losses(tmp_path, resume_flag):
    steps = ["--steps", "6", "--checkpoint-every", "3", "--keep-checkpoints", "3"]
    main([*TRAIN, *steps, "--out", str(tmp_path / "straight")])
    main([*TRAIN, *steps, "--out", str(tmp_path / "run")])
    # As if killed after step 3's checkpoint: the later checkpoint is gone, its rows stay.
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_00000006")
    result = torchrun([*TRAIN, *steps, resume_flag, "--out", str(tmp_path / "run")])
    assert result.returncode == 0, result.stderr[-3000:]
    straight = train_losses(tmp_path / "straight")
    assert len(straight) == 6
    torch.testing.assert_close(train_losses(tmp_path / "run"), straight, rtol=0, atol=1e-5)
