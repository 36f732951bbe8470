import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from selrope.training import checkpoint as ckpt
from selrope.training.checkpoint import (
    MODEL_FILE,
    STATE_FILE,
    atomic_write,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.head = nn.Linear(4, 7, bias=False)
        self.head.weight = self.embed.weight
        self.norm = nn.LayerNorm(4)

    def forward(self, ids):
        return self.head(self.norm(self.embed(ids)))


def trained(seed: int = 0, steps: int = 2):
    torch.manual_seed(seed)
    model = Tied()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        model(torch.randint(0, 7, (3, 5))).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def assert_same_params(a: nn.Module, b: nn.Module):
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(p, q), name


def test_round_trip_restores_weights_ties_optimizer_and_extra(tmp_path):
    model, opt = trained()
    path = save_checkpoint(tmp_path, 2, model, opt, extra={"config": {"lr": 0.01}, "note": "x"})
    assert path == tmp_path / "step_00000002"
    fresh = Tied()
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    state = load_checkpoint(path, fresh, fresh_opt)
    assert_same_params(model, fresh)
    assert fresh.head.weight is fresh.embed.weight
    assert state["step"] == 2 and state["config"] == {"lr": 0.01} and state["note"] == "x"
    a, b = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert all(torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"]) for i in a)
    # plain data only: loads with the safe unpickler
    torch.load(path / STATE_FILE, weights_only=True)


def test_keep_prunes_old_checkpoints(tmp_path):
    model, opt = trained()
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model, opt, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]
    assert latest_checkpoint(tmp_path).name == "step_00000004"
    assert latest_checkpoint(tmp_path / "missing") is None


def test_atomic_write_failure_keeps_old_file(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old content")

    def write_half_then_fail(tmp):
        tmp.write_bytes(b"new cont")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, write_half_then_fail)
    assert target.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_failed_checkpoint_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, opt = trained(steps=2)
    good = save_checkpoint(tmp_path, 2, model, opt)
    before = {p.name: p.read_bytes() for p in good.iterdir()}

    newer, newer_opt = trained(seed=1, steps=3)

    def partial_then_raise(state, tmp):
        tmp.write_bytes(b"PK\x03\x04 truncated")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(ckpt, "_save_state", partial_then_raise)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        save_checkpoint(tmp_path, 3, newer, newer_opt)
    assert os.listdir(tmp_path) == ["step_00000002"]  # no partial dir, no temp leftovers
    assert latest_checkpoint(tmp_path) == good
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    fresh = Tied()
    load_checkpoint(good, fresh)
    assert_same_params(model, fresh)


def test_hard_kill_mid_write_leaves_previous_checkpoint_loadable(tmp_path):
    """A process dies (os._exit, no cleanup) half way through writing state.pt."""
    script = textwrap.dedent(
        f"""
        import os, torch
        from torch import nn
        from selrope.training import checkpoint as ckpt
        torch.manual_seed(0)
        model = nn.Linear(64, 64)
        opt = torch.optim.AdamW(model.parameters())
        ckpt.save_checkpoint({str(tmp_path)!r}, 1, model, opt)
        def die_half_way(state, tmp):
            with open(tmp, "wb") as f:
                f.write(b"x" * 1000)
                f.flush()
                os._exit(9)
        ckpt._save_state = die_half_way
        with torch.no_grad():
            model.weight.add_(1.0)
        ckpt.save_checkpoint({str(tmp_path)!r}, 2, model, opt)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == 9, result.stderr.decode()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers and all(".tmp-" in name for name in leftovers)  # only a hidden temp dir
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001"]

    torch.manual_seed(0)
    expected = nn.Linear(64, 64)
    model = nn.Linear(64, 64)
    opt = torch.optim.AdamW(model.parameters())
    state = load_checkpoint(latest_checkpoint(tmp_path), model, opt)
    assert state["step"] == 1
    assert_same_params(expected, model)
    # the next save cleans up the dead process's temp dir
    save_checkpoint(tmp_path, 2, model, opt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001", "step_00000002"]


def test_resaving_a_step_replaces_it(tmp_path):
    model, opt = trained()
    save_checkpoint(tmp_path, 5, model, opt, extra={"v": 1})
    save_checkpoint(tmp_path, 5, model, opt, extra={"v": 2})
    assert load_checkpoint(tmp_path / "step_00000005", Tied())["v"] == 2
    assert sorted(os.listdir(tmp_path)) == ["step_00000005"]
    assert sorted(os.listdir(tmp_path / "step_00000005")) == [MODEL_FILE, STATE_FILE]


class SharedBuffer(nn.Module):
    """Two parameters that are views into one buffer, as cuDNN lays out RNN weights."""

    def __init__(self):
        super().__init__()
        buffer = torch.randn(10)
        self.a = nn.Parameter(buffer[:4].view(2, 2))
        self.b = nn.Parameter(buffer[4:])


def test_weights_with_views_into_one_buffer_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SharedBuffer()
    assert model.a.untyped_storage().data_ptr() == model.b.untyped_storage().data_ptr()
    save_weights(model, tmp_path / "w.safetensors")
    fresh = SharedBuffer()
    load_weights(fresh, tmp_path / "w.safetensors")
    assert_same_params(model, fresh)


def test_tied_weights_are_stored_once(tmp_path):
    from safetensors import safe_open

    model, _ = trained()
    save_weights(model, tmp_path / "w.safetensors")
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["embed.weight", "norm.bias", "norm.weight"]


class NotTensorData:
    """A class a weights-only load must refuse to unpickle."""


@pytest.mark.parametrize("content", ["object", "truncated", "not torch", "list"])
def test_a_state_file_that_is_not_weights_only_data_is_a_one_line_error(tmp_path, content):
    model, opt = trained()
    path = save_checkpoint(tmp_path, 2, model, opt)
    state_file = path / STATE_FILE
    if content == "object":
        torch.save({"step": 2, "thing": NotTensorData()}, state_file)
        expected = "not a weights-only file: it holds objects other than tensors and plain data"
    elif content == "truncated":
        state_file.write_bytes(state_file.read_bytes()[:100])
        expected = "not a readable checkpoint state ("
    elif content == "not torch":
        state_file.write_bytes(b"")
        expected = "not a readable checkpoint state ("
    else:
        torch.save([1, 2], state_file)
        expected = "expected the dict (step, optimizer, rng, ...) that save_checkpoint writes"
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, Tied(), torch.optim.AdamW(Tied().parameters()))
    message = str(info.value)
    assert message.startswith(f"{state_file}: ") and expected in message
    assert "\n" not in message


def test_truncated_checkpoint_weights_are_a_one_line_error(tmp_path):
    model, opt = trained()
    path = save_checkpoint(tmp_path, 2, model, opt)
    weights = path / MODEL_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a complete safetensors file") as info:
        load_checkpoint(path, Tied())
    assert str(info.value).startswith(f"{weights}: ") and "\n" not in str(info.value)
