"""Finding and loading the models to evaluate: checkpoint directories and training runs.

A RUN is a directory holding ``config.json`` + ``model.safetensors`` (``save_pretrained``), or a
training run directory holding them in ``RUN/model/``. Loading itself is
``selrope.models.io.load_pretrained``; this module adds what evaluation needs around it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from selrope.models.io import load_pretrained, model_directory, read_config
from selrope.models.lm import LanguageModel
from selrope.rotary import parse_rotary_config

__all__ = ["load_model", "model_directory", "rope_scaled_rotary", "training_length"]


def training_length(model_dir: Path) -> int | None:
    """The training context length recorded beside a model, if any: ``train_length`` of the
    run's ``final_metrics.json`` (the task's ``TaskData.train_length``), looked for in the model
    directory and its parent."""
    for directory in (model_dir, model_dir.parent):
        final_file = directory / "final_metrics.json"
        if final_file.is_file():
            length = json.loads(final_file.read_text()).get("train_length")
            return length if isinstance(length, int) else None
    return None


def rope_scaled_rotary(model_dir: Path, rope_scaling: Mapping[str, Any]) -> dict[str, Any]:
    """The saved RoPE config of ``model_dir`` with ``rope_scaling`` as its context extension.

    Raises:
        ValueError: the model's rotary type is not rope, or the scaling is invalid.
    """
    rotary = dict(read_config(model_dir).get("rotary", {}))
    if rotary.get("type") != "rope":
        raise ValueError(
            f"--rope-scaling needs a RoPE model; {str(model_dir)!r} has rotary type "
            f"{rotary.get('type')!r}"
        )
    rotary["scaling"] = dict(rope_scaling)
    parse_rotary_config(rotary)  # validate before building the model
    return rotary


def load_model(
    model_dir: Path,
    device: str | torch.device = "cpu",
    rope_scaling: Mapping[str, Any] | None = None,
) -> LanguageModel:
    """Load a saved model (``load_pretrained``), optionally rebuilt with a RoPE context extension.

    Args:
        model_dir: a directory written by ``LanguageModel.save_pretrained`` (or a run folder).
        device: where the model goes.
        rope_scaling: e.g. ``{"kind": "yarn", "factor": 8, "original_max_position": 256}``
            (see ``selrope.rotary.RoPEConfig``): RoPE's frequencies change, the weights do not.

    Raises:
        ValueError: the loader's refusals, or ``rope_scaling`` on a model that is not RoPE.
    """
    rotary = (
        None
        if rope_scaling is None
        else rope_scaled_rotary(model_directory(model_dir), rope_scaling)
    )
    return load_pretrained(model_dir, device, rotary=rotary).model
