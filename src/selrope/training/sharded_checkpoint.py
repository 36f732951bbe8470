"""Sharded checkpoints of FSDP runs, through ``torch.distributed.checkpoint`` (DCP).

Layout of one checkpoint (beside the whole-model ones of ``checkpoint.py``):

    step_00000100/dcp/         the model's and AdamW's shards, written by every rank (DCP)
    step_00000100/state.pt     rank 0's plain data: step, rng, config, counters (weights-only)

DCP reshards on load, so a run saved on N ranks resumes on any number. It is written into a
hidden temporary folder and renamed whole, like every checkpoint here.

Loading never unpickles arbitrary objects: DCP's own reader reads ``.metadata`` with a plain
``pickle.load``, so a planted checkpoint could run code. ``SafeFileSystemReader`` reads it with
an unpickler that accepts only the metadata's own plain classes (and refuses the rest with a
one-line ValueError naming the file).
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from .checkpoint import (
    SHARDS_DIR,
    STATE_FILE,
    _fsync_dir,
    _save_state,
    atomic_write,
    list_checkpoints,
    read_state,
    rng_state,
    step_dir_name,
)

METADATA_FILE = ".metadata"
# The classes DCP's metadata pickle is made of (torch 2.4 - 2.13), and nothing that calls out.
_METADATA_MODULES = ("torch.distributed.checkpoint.metadata",)
_ALLOWED = {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch._utils", "_get_layout"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP metadata: its dataclasses and enums, torch sizes, dtypes and layouts."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = (module, name) in _ALLOWED or (
            module in _METADATA_MODULES and isinstance(getattr(_import(module), name, None), type)
        )
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            allowed = True
        if not allowed:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint's metadata")
        return super().find_class(module, name)


def _import(module: str) -> Any:
    __import__(module)
    import sys

    return sys.modules[module]


class SafeFileSystemReader(FileSystemReader):
    """DCP's file reader with ``.metadata`` read by ``_MetadataUnpickler``."""

    def read_metadata(self):
        path = Path(self.path) / METADATA_FILE
        try:
            with path.open("rb") as file:
                metadata = _MetadataUnpickler(file).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as error:
            raise ValueError(
                f"{path}: not a selrope checkpoint's metadata ({error}); it is never unpickled "
                "as arbitrary objects"
            ) from None
        if getattr(metadata, "storage_meta", None) is None:
            from torch.distributed.checkpoint.metadata import StorageMeta

            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def is_sharded_checkpoint(path: Path) -> bool:
    return (Path(path) / SHARDS_DIR).is_dir()


def check_sharded_checkpoint(path: Path) -> None:
    """ValueError (one line, naming the file) unless the checkpoint's state.pt and metadata
    read safely."""
    read_state(Path(path) / STATE_FILE)
    SafeFileSystemReader(Path(path) / SHARDS_DIR).read_metadata()


def save_sharded_checkpoint(
    root: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict[str, Any],
    keep: int | None,
    is_main: bool,
) -> Path:
    """Every rank writes its shards; rank 0 writes state.pt and renames the folder into place.

    Returns the checkpoint's directory.
    """
    root = Path(root)
    final = root / step_dir_name(step)
    tmp = root / f".{final.name}.tmp-0"  # the same name on every rank (cleaned like any)
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp / SHARDS_DIR)
    if is_main:
        state = {"step": step, "rng": rng_state(), "sharded": True, **extra}
        atomic_write(tmp / STATE_FILE, lambda path: _save_state(state, path))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        if keep is not None:
            for old in list_checkpoints(root)[:-keep]:
                shutil.rmtree(old)
    dist.barrier()
    return final


def load_sharded_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Load a sharded checkpoint into the sharded ``model`` and its ``optimizer`` (resharding
    as needed); return its state.pt. Every rank calls it."""
    path = Path(path)
    state = read_state(path / STATE_FILE)
    check_sharded_checkpoint(path)  # a one-line error here, not one inside DCP's collectives
    model_state, optimizer_state = get_state_dict(model, optimizer)
    loaded = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(loaded, storage_reader=SafeFileSystemReader(path / SHARDS_DIR))
    set_state_dict(
        model,
        optimizer,
        model_state_dict=loaded["model"],
        optim_state_dict=loaded["optimizer"],
    )
    return state
