"""FSDP2 (--parallel fsdp) on 2 CPU ranks (gloo): one process's losses, sharded checkpoints that
resume exactly on 2 ranks and onto 1, activation checkpointing, the exported whole model, and
checkpoint metadata that is never unpickled as arbitrary objects."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selrope.cli import main
from selrope.models import LanguageModel
from selrope.training.sharded_checkpoint import METADATA_FILE, SHARDS_DIR, SafeFileSystemReader

TRAIN = [
    "train", "--task", "state_tracking", "--group", "Z2", "--train-len", "12",
    "--test-lens", "12", "--num-train", "64", "--num-test", "16", "--d-model", "16",
    "--n-layers", "2", "--n-heads", "2", "--mixer", "gla", "--rotary", "selective",
    "--batch-size", "8", "--log-every", "1", "--eval-every", "6", "--precision", "fp32",
    "--device", "cpu", "--steps", "6", "--checkpoint-every", "3", "--keep-checkpoints", "3",
]  # fmt: skip


def losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if row["split"] == "train"]


def torchrun(argv: list[str], processes: int = 2) -> None:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*launch, str(processes), "-m", "selrope", *argv]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fsdp")
    main([*TRAIN, "--out", str(root / "single")])
    torchrun([*TRAIN, "--parallel", "fsdp", "--out", str(root / "fsdp")])
    return root


def test_two_fsdp_ranks_give_one_process_losses(runs):
    single = losses(runs / "single")
    assert len(single) == 6
    torch.testing.assert_close(losses(runs / "fsdp"), single, rtol=0, atol=1e-5)
    step = runs / "fsdp" / "checkpoints" / "step_00000006"
    assert (step / SHARDS_DIR / METADATA_FILE).is_file() and (step / "state.pt").is_file()


def test_the_exported_model_equals_the_single_process_model(runs):
    ids = torch.randint(0, 3, (2, 12), generator=torch.Generator().manual_seed(0))
    exported = LanguageModel.from_pretrained(runs / "fsdp" / "model")
    single = LanguageModel.from_pretrained(runs / "single" / "model")
    torch.testing.assert_close(exported(ids), single(ids), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("processes", [2, 1])
def test_a_killed_fsdp_run_resumes_exactly(runs, tmp_path, processes):
    run = tmp_path / "run"
    shutil.copytree(runs / "fsdp", run)
    shutil.rmtree(run / "checkpoints" / "step_00000006")  # as if killed after step 3's save
    argv = [*TRAIN, "--parallel", "fsdp", "--resume", "--out", str(run)]
    if processes == 1:
        main(argv)  # a sharded checkpoint of 2 ranks, resharded onto 1
    else:
        torchrun(argv)
    torch.testing.assert_close(losses(run), losses(runs / "fsdp"), rtol=0, atol=1e-5)


def test_activation_checkpointing_changes_no_loss(runs, tmp_path):
    main([*TRAIN, "--activation-checkpointing", "true", "--out", str(tmp_path / "ac")])
    torch.testing.assert_close(losses(tmp_path / "ac"), losses(runs / "single"), rtol=0, atol=1e-6)


class _Planted:
    def __reduce__(self):
        return (os.system, ("touch planted-pickle-ran",))


def test_planted_checkpoint_metadata_never_runs(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shards = tmp_path / "shards"
    shutil.copytree(runs / "fsdp" / "checkpoints" / "step_00000006" / SHARDS_DIR, shards)
    (shards / METADATA_FILE).write_bytes(pickle.dumps(_Planted()))
    with pytest.raises(ValueError, match="not a selrope checkpoint's metadata"):
        SafeFileSystemReader(shards).read_metadata()
    assert not (tmp_path / "planted-pickle-ran").exists()
    # The real metadata reads back.
    real = runs / "fsdp" / "checkpoints" / "step_00000006" / SHARDS_DIR
    assert SafeFileSystemReader(real).read_metadata().state_dict_metadata


def test_a_planted_checkpoint_stops_a_resume_in_one_line(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(runs / "fsdp", run)
    metadata = run / "checkpoints" / "step_00000006" / SHARDS_DIR / METADATA_FILE
    metadata.write_bytes(pickle.dumps(_Planted()))
    with pytest.raises(SystemExit) as stopped:
        main([*TRAIN, "--parallel", "fsdp", "--steps", "8", "--resume", "--out", str(run)])
    assert stopped.value.code == 2 and "metadata" in capsys.readouterr().err
    assert not (tmp_path / "planted-pickle-ran").exists()
