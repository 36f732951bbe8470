"""Run folders written by the release before run.json (spec.json + config.json, commit 7e86176)
still resume, and refuse changed settings, through today's configs (experiments/legacy.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from selrope.cli import main

RELEASE_RUN = Path(__file__).parent / "release_runs" / "gla-selective"
# The flags that made it (with the release's CLI: --tie-pair-decay was then a model option).
FLAGS = [
    "train", "--task", "state_tracking", "--group", "Z2", "--train-len", "8", "--test-lens",
    "8", "--num-train", "64", "--num-test", "16", "--d-model", "16", "--n-layers", "1",
    "--n-heads", "2", "--mixer", "gla", "--tie-pair-decay", "true", "--rotary", "selective",
    "--batch-size", "16", "--eval-every", "2", "--checkpoint-every", "2",
]  # fmt: skip


@pytest.fixture
def release_run(tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(RELEASE_RUN, run)
    return run


def test_a_release_run_resumes_for_more_steps(release_run):
    before = [json.loads(line) for line in (release_run / "metrics.jsonl").open()]
    main([*FLAGS, "--steps", "6", "--resume", "--out", str(release_run)])
    rows = [json.loads(line) for line in (release_run / "metrics.jsonl").open()]
    assert rows[: len(before)] == before
    assert max(row["step"] for row in rows) == 6
    assert (release_run / "checkpoints" / "step_00000006").is_dir()
    record = json.loads((release_run / "run.json").read_text())
    assert record["model"]["mixer"] == {**record["model"]["mixer"], "tie_pair_decay": True}


def test_a_release_run_refuses_another_model_on_resume(release_run, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([*FLAGS, "--d-model", "32", "--steps", "6", "--resume", "--out", str(release_run)])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "model.d_model (saved 16, now 32)" in err
    assert not (release_run / "run.json").exists()
