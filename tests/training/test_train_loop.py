import csv
import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from selrope.training import (
    DeterministicBatches,
    NonFiniteLossError,
    TrainConfig,
    TrainingStoppedError,
    latest_checkpoint,
    load_checkpoint,
    read_metrics,
    train,
)
from selrope.training.metrics import METRIC_COLUMNS
from selrope.training.trainer import check_finite_parameters


def config(out_dir, **overrides) -> TrainConfig:
    settings = dict(
        steps=12,
        batch_size=16,
        lr=1e-2,
        warmup_steps=3,
        eval_every=5,
        eval_batch_size=32,
        log_every=1,
        checkpoint_every=4,
        device="cpu",
        out_dir=str(out_dir),
    )
    return TrainConfig(**{**settings, **overrides})


class SimulatedKillError(Exception):
    """Stands in for a kill: raised from inside a training step."""


class FailAfter(nn.Module):
    """Wraps a model; training forward k+1 raises SimulatedKillError ("interrupt"), a ValueError
    ("check") or returns NaN logits ("nan")."""

    def __init__(self, model: nn.Module, k: int, mode: str):
        super().__init__()
        self.model, self.k, self.mode, self.calls = model, k, mode, 0

    def forward(self, input_ids):
        logits = self.model(input_ids)[0]
        if self.training:
            self.calls += 1
            if self.calls > self.k:
                if self.mode == "interrupt":
                    raise SimulatedKillError
                if self.mode == "check":  # an op's input check meeting a diverged model's NaN
                    raise ValueError("g must hold log decays <= 0; got nan at some step")
                return logits * float("nan")
        return logits


def train_losses(out_dir) -> list[float]:
    return [r["loss"] for r in read_metrics(out_dir) if r["split"] == "train"]


def test_batches_are_a_pure_function_of_seed_and_step():
    a = DeterministicBatches(50, 8, seed=3)
    b = DeterministicBatches(50, 8, seed=3)
    steps = [13, 2, 7, 13, 0, 6, 12]  # random access, across epochs (6 batches per epoch)
    for step in steps:
        assert torch.equal(a.indices(step), b.indices(step))
    b_in_order = [DeterministicBatches(50, 8, seed=3).indices(s) for s in steps]
    assert all(torch.equal(a.indices(s), x) for s, x in zip(steps, b_in_order, strict=True))
    epoch0 = torch.cat([a.indices(s) for s in range(6)])
    assert len(set(epoch0.tolist())) == 48  # no row repeats within an epoch
    assert not torch.equal(epoch0, torch.cat([a.indices(s) for s in range(6, 12)]))
    assert not torch.equal(a.indices(0), DeterministicBatches(50, 8, seed=4).indices(0))
    with pytest.raises(ValueError, match="batch_size"):
        DeterministicBatches(5, 8, seed=0)


def test_resume_after_kill_reproduces_losses_bitwise(tmp_path, parity_task, make_model):
    straight = make_model(seed=0)
    train(straight, parity_task, config(tmp_path / "straight"), progress=False)
    expected = train_losses(tmp_path / "straight")
    assert len(expected) == 12

    killed_dir = tmp_path / "killed"
    with pytest.raises(SimulatedKillError):
        train(
            FailAfter(make_model(seed=0), k=6, mode="interrupt"),
            parity_task,
            config(killed_dir),
            progress=False,
        )
    assert latest_checkpoint(killed_dir / "checkpoints").name == "step_00000004"
    assert len(train_losses(killed_dir)) == 6  # steps 5 and 6 are lost with the process

    torch.manual_seed(999)  # the resumed process starts from other RNG state and other weights
    resumed = FailAfter(make_model(seed=1), k=10**9, mode="interrupt")
    final = train(resumed, parity_task, config(killed_dir), resume=True, progress=False)
    got = train_losses(killed_dir)
    assert got == expected  # exact float equality, not approx
    assert [r["step"] for r in read_metrics(killed_dir) if r["split"] == "train"] == list(
        range(1, 13)
    )
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    assert final["step"] == 12
    assert final["checkpoint"].endswith("step_00000012")


def test_nan_loss_raises_naming_the_step_and_keeps_last_good_checkpoint(
    tmp_path, parity_task, make_model
):
    model = FailAfter(make_model(seed=0), k=6, mode="nan")
    cfg = config(tmp_path, checkpoint_every=2, eval_every=100)
    with pytest.raises(NonFiniteLossError, match="step 7") as info:
        train(model, parity_task, cfg, progress=False)
    assert info.value.step == 7 and info.value.what == "loss"
    good = latest_checkpoint(tmp_path / "checkpoints")
    assert info.value.checkpoint == good and good.name == "step_00000006"
    assert all(torch.isfinite(p).all() for p in model.parameters())  # no update from a NaN

    restored = FailAfter(make_model(seed=5), k=10**9, mode="nan")
    state = load_checkpoint(good, restored)
    assert state["step"] == 6
    for p, q in zip(model.parameters(), restored.parameters(), strict=True):
        assert torch.equal(p, q)  # the checkpoint holds the state after the last good step


def test_a_check_failing_mid_run_is_not_taken_for_divergence(tmp_path, parity_task, make_model):
    # Divergence is found only by the finiteness checks; any other error mid-run is itself,
    # and the checkpoints written before it stay.
    model = FailAfter(make_model(seed=0), k=4, mode="check")
    cfg = config(tmp_path, checkpoint_every=2, eval_every=100)
    with pytest.raises(ValueError, match="g must hold"):
        train(model, parity_task, cfg, progress=False)
    assert (tmp_path / "checkpoints" / "step_00000004").is_dir()


@pytest.mark.parametrize(
    "error",
    [
        TrainingStoppedError(5, "g must hold log decays <= 0", None),
        NonFiniteLossError(7, "loss", float("inf"), Path("run/checkpoints/step_00000006")),
    ],
)
def test_training_errors_survive_pickling(error):
    # run_parallel's worker processes send them back pickled (selrope compare, the demo).
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert (copy.step, copy.checkpoint) == (error.step, error.checkpoint)


def test_non_finite_parameters_are_refused_before_evaluating_or_saving(tmp_path):
    params = [torch.zeros(3), torch.tensor([1.0, float("inf")])]
    with pytest.raises(NonFiniteLossError, match=r"non-finite parameter after the update \(inf\)"):
        check_finite_parameters(params, step=3, checkpoint=None)
    check_finite_parameters(params[:1], step=3, checkpoint=None)  # finite: no error


def test_metrics_files_and_run_outputs(tmp_path, parity_task, make_model):
    cfg = config(tmp_path, steps=10, log_every=3, eval_every=4, checkpoint_every=None)
    final = train(make_model(), parity_task, cfg, progress=False)
    rows = read_metrics(tmp_path)
    train_rows = [r for r in rows if r["split"] == "train"]
    test_rows = [r for r in rows if r["split"] == "test"]
    assert [r["step"] for r in train_rows] == [3, 6, 9, 10]
    assert [(r["step"], r["length"]) for r in test_rows] == [
        (4, 8),
        (4, 16),
        (8, 8),
        (8, 16),
        (10, 8),
        (10, 16),
    ]
    assert all(r["length"] == 8 and r["grad_norm"] > 0 for r in train_rows)
    assert all(0 <= r["sequence_accuracy"] <= r["token_accuracy"] <= 1 for r in rows)
    assert all(r["elapsed_s"] >= 0 and r["lr"] > 0 for r in rows)
    with (tmp_path / "metrics.csv").open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == METRIC_COLUMNS
        assert len(list(reader)) == len(rows)

    assert TrainConfig.from_dict(json.loads((tmp_path / "run.json").read_text())["train"]) == cfg
    on_disk = json.loads((tmp_path / "final_metrics.json").read_text())
    assert on_disk["step"] == final["step"] == 10
    assert on_disk["train_length"] == final["train_length"] == 8
    assert set(final["tests"]) == {8, 16}
    last = final["tests"][16]
    assert last["sequence_accuracy"] == test_rows[-1]["sequence_accuracy"]
    assert len(last["prefix_accuracy"]) == 16
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000010"]


def test_fresh_start_refuses_an_old_run_and_overwrite_clears_only_its_files(
    tmp_path, parity_task, make_model
):
    train(make_model(), parity_task, config(tmp_path, steps=8), progress=False)
    (tmp_path / "checkpoints" / "my_model.bin").write_text("mine")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty; pass --resume"):
        train(make_model(), parity_task, config(tmp_path, steps=4), progress=False)
    assert max(r["step"] for r in read_metrics(tmp_path)) == 8
    train(make_model(), parity_task, config(tmp_path, steps=4), progress=False, overwrite=True)
    assert max(r["step"] for r in read_metrics(tmp_path)) == 4
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step_00000004"
    assert (tmp_path / "checkpoints" / "my_model.bin").read_text() == "mine"
    assert (tmp_path / "notes.txt").read_text() == "mine"


class CopyLM(nn.Module):
    """Learns target = input quickly: embedding straight into a linear head."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 8)
        self.head = nn.Linear(8, vocab_size)

    def forward(self, input_ids):
        return self.head(self.embed(input_ids))


def test_early_stop_and_resume_of_a_finished_run(tmp_path, parity_task):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 5, (64, 6), generator=generator)
    task = type(parity_task)("copy", 5, (inputs, inputs.clone()), {6: (inputs, inputs.clone())}, 6)
    torch.manual_seed(0)
    cfg = config(
        tmp_path,
        steps=300,
        lr=5e-2,
        eval_every=5,
        early_stop_accuracy=0.99,
        checkpoint_every=None,
        log_every=50,
    )
    final = train(CopyLM(5), task, cfg, progress=False)
    assert final["stopped_early"] and final["step"] < 300 and final["step"] % 5 == 0
    assert final["tests"][6]["sequence_accuracy"] >= 0.99
    again = train(CopyLM(5), task, cfg, resume=True, progress=False)
    assert again["step"] == final["step"] and again["stopped_early"]
    assert again["tests"][6]["sequence_accuracy"] == final["tests"][6]["sequence_accuracy"]


def test_denormals_are_flushed_while_training_and_restored_after(tmp_path, parity_task):
    tiny = torch.tensor(1e-40)  # a float32 denormal: reads as zero while they are flushed

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(1, 2)
            self.flushed = []

        def forward(self, input_ids):
            self.flushed.append(bool(tiny * 1.0 == 0))
            return self.head(input_ids.unsqueeze(-1).float())

    probe = Probe()
    assert not bool(tiny * 1.0 == 0)
    train(probe, parity_task, config(tmp_path, steps=4), progress=False)
    assert probe.flushed and all(probe.flushed)
    assert not bool(tiny * 1.0 == 0)  # hypothesis and numpy need IEEE denormals back
