"""The trainer on a GPU: bf16 autocast by default, fp32 weights, resume, CPU-loadable weights."""

import pytest
import torch

from selrope.training import TrainConfig, latest_checkpoint, load_checkpoint, read_metrics, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_cuda_bf16_training_resume_and_cpu_loadable_checkpoint(tmp_path, parity_task, make_model):
    def cfg(out_dir, steps=12):
        return TrainConfig(
            steps=steps, batch_size=16, lr=1e-2, warmup_steps=3, eval_every=4,
            log_every=1, checkpoint_every=4, device="auto", out_dir=str(out_dir),
        )  # fmt: skip

    assert cfg(tmp_path).autocast_dtype(cfg(tmp_path).resolved_device()) is torch.bfloat16
    straight = make_model(seed=0, dropout=0.0)
    final = train(straight, parity_task, cfg(tmp_path / "a"), progress=False)
    assert all(p.is_cuda and p.dtype == torch.float32 for p in straight.parameters())
    losses = [r["loss"] for r in read_metrics(tmp_path / "a") if r["split"] == "train"]
    assert len(losses) == 12 and all(0 < loss < 10 for loss in losses)
    assert set(final["tests"]) == {8, 16}

    on_cpu = make_model(seed=3, dropout=0.0)
    load_checkpoint(latest_checkpoint(tmp_path / "a" / "checkpoints"), on_cpu)
    for p, q in zip(straight.parameters(), on_cpu.parameters(), strict=True):
        assert torch.equal(p.cpu(), q)

    # resume run "b" from its step-8 checkpoint (the step-12 one moved out of sight)
    partial = make_model(seed=0, dropout=0.0)
    train(partial, parity_task, cfg(tmp_path / "b"), progress=False)
    resumed = make_model(seed=1, dropout=0.0)
    for old in sorted((tmp_path / "b" / "checkpoints").iterdir())[1:]:
        old.rename(old.with_name(".removed-" + old.name))  # keep only step 8
    train(resumed, parity_task, cfg(tmp_path / "b"), resume=True, progress=False)
    resumed_losses = [r["loss"] for r in read_metrics(tmp_path / "b") if r["split"] == "train"]
    assert resumed_losses == pytest.approx(losses, rel=1e-3)
