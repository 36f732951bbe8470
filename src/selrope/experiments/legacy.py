"""Run folders written before ``run.json``: their ``spec.json`` read as today's options, so that
``--resume`` compares a saved run with the current one through the same configs."""

from __future__ import annotations

from typing import Any

from .options import sort_options


def sections_of_legacy_spec(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``build_run`` sections of a saved ``RunSpec`` (task, mixer, rotary, seed,
    task_params, rotary_options, model, train, out_dir, resume flags)."""
    train = {k: v for k, v in spec.get("train", {}).items() if k not in ("seed", "out_dir")}
    flat = {
        "task": spec["task"],
        "mixer": spec["mixer"],
        "rotary": spec["rotary"],
        "seed": spec.get("seed", 0),
        "out": spec.get("out_dir", "runs/run"),
        "rotary_options": spec.get("rotary_options", {}),
        **spec.get("task_params", {}),
        **spec.get("model", {}),
        **train,
    }
    return sort_options(flat)
