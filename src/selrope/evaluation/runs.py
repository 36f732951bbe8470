"""Finding and loading the models to evaluate: checkpoint directories and training runs.

A RUN is a directory holding ``config.json`` + ``model.safetensors`` (``save_pretrained``), or a
training run directory holding them in ``RUN/model/`` (``selrope.experiments``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from selrope.models.lm import CONFIG_FILE, WEIGHTS_FILE, LanguageModel, LMConfig
from selrope.rotary import parse_rotary_config


def model_directory(run: str | Path) -> Path:
    """The directory holding the run's ``config.json`` and ``model.safetensors``.

    Raises:
        ValueError: neither ``run`` nor ``run/model`` holds both files.
    """
    run = Path(run)
    for candidate in (run, run / "model"):
        if (candidate / CONFIG_FILE).is_file() and (candidate / WEIGHTS_FILE).is_file():
            return candidate
    raise ValueError(
        f"checkpoint {str(run)!r} holds no {CONFIG_FILE} + {WEIGHTS_FILE} (nor does its model/)"
    )


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


def load_model(
    model_dir: Path,
    device: str | torch.device = "cpu",
    rope_scaling: Mapping[str, Any] | None = None,
) -> LanguageModel:
    """Load a saved model, optionally rebuilt with a RoPE context extension.

    Args:
        model_dir: a directory written by ``LanguageModel.save_pretrained``.
        device: where the model goes.
        rope_scaling: e.g. ``{"kind": "yarn", "factor": 8, "original_max_position": 256}``
            (see ``selrope.rotary.RoPEConfig``): RoPE's frequencies change, the weights do not.

    Raises:
        ValueError: the model's rotary type is not rope while ``rope_scaling`` is given, or the
            scaling is invalid.
    """
    from safetensors.torch import load_model as load_weights

    values = json.loads((model_dir / CONFIG_FILE).read_text())
    if rope_scaling is not None:
        rotary = dict(values.get("rotary", {}))
        if rotary.get("type") != "rope":
            raise ValueError(
                f"--rope-scaling needs a RoPE model; {str(model_dir)!r} has rotary type "
                f"{rotary.get('type')!r}"
            )
        rotary["scaling"] = dict(rope_scaling)
        parse_rotary_config(rotary)  # validate before building the model
        values["rotary"] = rotary
    with torch.random.fork_rng(devices=[]):  # the initialisation is overwritten anyway
        model = LanguageModel(LMConfig.from_dict(values)).to(device)
    load_weights(model, str(model_dir / WEIGHTS_FILE), device=str(device))
    return model
