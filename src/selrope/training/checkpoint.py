"""Crash-safe checkpoints: one directory per step, written whole or not at all.

Layout under a checkpoint root (the trainer uses `out_dir/checkpoints`):

    step_00000100/model.safetensors  weights (`selrope.models.io.save_weights`, the writer of
                                     `save_pretrained` too: tied weights stored once)
    step_00000100/state.pt           torch.save'd dict: step, optimizer, rng, config, ...

A checkpoint is assembled in a hidden temporary directory next to its final name, every file
fsync'd, and only then renamed to `step_XXXXXXXX`. A crash or kill mid-write leaves at most a
hidden `.step_*.tmp-*` directory, which is ignored and cleaned up by the next save. `state.pt`
holds only tensors, dicts, lists, tuples, numbers and strings, so it loads with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

# One weight format for model directories and checkpoints (re-exported from here).
from selrope.models.io import load_weights, save_weights

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
SHARDS_DIR = "dcp"  # a sharded checkpoint's weights and optimizer state (sharded_checkpoint.py)
_STEP_DIR = re.compile(r"^step_(\d+)$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write a file so that `path` holds either its old content or the complete new one.

    `write(tmp_path)` writes the content to a temporary file in the same directory; it is then
    fsync'd and moved over `path` with os.replace. If `write` raises (or the process dies), the
    temporary file is removed (or left under a hidden name) and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with tmp.open("rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write` for a text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _save_state(state: dict[str, Any], tmp: Path) -> None:
    with tmp.open("wb") as f:
        torch.save(state, f)


def rng_state() -> dict[str, Any]:
    """The global torch RNG states (CPU and, when present, every CUDA device)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned (used on resume so dropout etc. continue exactly)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint directories under `root` (whole-model or sharded), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        weights = (child / MODEL_FILE).is_file() or (child / SHARDS_DIR).is_dir()
        if match and weights and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def latest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint directory with the highest step, or None."""
    checkpoints = list_checkpoints(root)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(
    root: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict[str, Any] | None = None,
    keep: int | None = None,
) -> Path:
    """Write the checkpoint for `step` atomically and return its directory.

    Args:
        root: directory holding the `step_XXXXXXXX` checkpoints.
        step: number of optimizer updates done.
        extra: more entries for state.pt (config dict, elapsed time, ...); plain data only.
        keep: if given, delete all but the `keep` most recent checkpoints afterwards.
    Returns:
        The path of the new checkpoint directory.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".step_*.tmp-*"):  # left behind by an earlier crash
        shutil.rmtree(stale, ignore_errors=True)
    final = root / step_dir_name(step)
    tmp_dir = root / f".{final.name}.tmp-{os.getpid()}"
    state = {"step": step, "optimizer": optimizer.state_dict(), "rng": rng_state(), **(extra or {})}
    try:
        tmp_dir.mkdir()
        atomic_write(tmp_dir / MODEL_FILE, lambda tmp: save_weights(model, tmp))
        atomic_write(tmp_dir / STATE_FILE, lambda tmp: _save_state(state, tmp))
        if final.exists():  # re-saving a step: move the old copy aside, never merge into it
            trash = root / f".{final.name}.old-{os.getpid()}"
            os.replace(final, trash)
            os.replace(tmp_dir, final)
            shutil.rmtree(trash)
        else:
            os.replace(tmp_dir, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    if keep is not None:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old)
    return final


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Load weights into `model` (and optimizer state, if given) from a checkpoint directory.

    Tensors are copied into the model's parameters and the optimizer's state follows them, so
    a checkpoint written on one device loads onto any other.

    The global RNG is not touched; call `restore_rng_state(state["rng"])` to continue a run.

    Returns:
        The state dict saved beside the weights ("step", "optimizer", "rng", and the `extra` keys).

    Raises:
        ValueError: one line naming the file: weights that are truncated or of another model
            (`load_weights`), or a state.pt that is not a weights-only file (`read_state`).
    """
    path = Path(path)
    load_weights(model, path / MODEL_FILE)
    state = read_state(path / STATE_FILE)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    return state


def read_state(path: str | Path) -> dict[str, Any]:
    """The dict a checkpoint's state.pt holds, loaded with ``weights_only=True`` (never unpickled
    as arbitrary objects) on the CPU: RNG states must stay CPU tensors, and the optimizer moves
    its state to the parameters.

    Raises:
        ValueError: one line naming the file, when it is not a complete weights-only torch file
            (a pickle of other objects, truncated, or not a torch file at all).
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message is a paragraph; its "Unsupported global: ..." line says what was found.
        found = [line.strip() for line in str(error).splitlines() if "Unsupported" in line]
        detail = f" ({found[0]})" if found else ""
        raise ValueError(
            f"{path}: not a weights-only file: it holds objects other than tensors and plain data"
            f"{detail}, which selrope never unpickles; expected the state.pt that "
            "save_checkpoint writes"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{path}: not a readable checkpoint state ({reason}); expected the state.pt that "
            "save_checkpoint writes"
        ) from None
    if not isinstance(state, dict) or "step" not in state:
        raise ValueError(
            f"{path}: expected the dict (step, optimizer, rng, ...) that save_checkpoint writes; "
            f"got {type(state).__name__}"
        )
    return state
