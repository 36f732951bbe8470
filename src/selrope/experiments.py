"""The experiment runner: one run = task data + model + training -> result rows; grids of runs.

A run is described by a :class:`RunSpec` (plain data, so it can be sent to a worker process).
``run_one`` builds the task with ``selrope.tasks.build_task``, the model from ``LMConfig`` with
the rotary preset for (task, rotary name), trains with ``selrope.training.train`` and returns
one row per test length. ``run_grid`` runs many specs in parallel processes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from selrope.data.reader import TOKENIZER_FILE
from selrope.models import LanguageModel, LMConfig
from selrope.rotary import (
    SELECTIVE_COPYING_RECIPE,
    SELECTIVE_LM_RECIPE,
    SELECTIVE_STATE_TRACKING_RECIPE,
)
from selrope.tasks import build_task
from selrope.tasks.base import as_batch_source
from selrope.training import TrainConfig, is_main_process, run_parallel, train

ROTARY_NAMES = ("nope", "rope", "carope", "selective", "sinusoidal", "learned")
# Absolute position baselines: no rotation in the mixers, a position vector added to the token
# embeddings instead (``LMConfig.absolute_position``).
ABSOLUTE_POSITIONS = ("sinusoidal", "learned")

# The fixed-RoPE baseline of the Selective RoPE paper uses base 500,000 in every task.
BASELINE_ROPE = {"type": "rope", "base": 500000.0}

# Which Selective RoPE variant each task uses (research notes A.6/A.7): state tracking and copying
# have their own recipes; the language-modelling recipe for "lm"; MQAR and MAD the yaml defaults
# (low-rank 32, linear conv, no gate, no bias).
SELECTIVE_BY_TASK: dict[str, dict[str, Any]] = {
    "state_tracking": dict(SELECTIVE_STATE_TRACKING_RECIPE),
    "copying": dict(SELECTIVE_COPYING_RECIPE),
    "lm": dict(SELECTIVE_LM_RECIPE),
}

# Parameters that identify a task variant in the result rows, and the one that is the training
# length.
IDENTITY_PARAMS = {
    "state_tracking": ("group",),
    "mqar": ("num_kv_pairs", "vocab_size"),
    "lm": ("data",),
}
TRAIN_LENGTH_PARAM = {
    "state_tracking": "train_len",
    "mqar": "seq_len",
    "copying": "max_len",
    "lm": "seq_len",
}


def rotary_preset(
    name: str, task: str, options: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The rotary config called ``name`` (one of ``ROTARY_NAMES``) for ``task``.

    The absolute baselines ("sinusoidal", "learned") rotate nothing: their rotary is NoPE.

    ``options`` maps rotary names to overrides of their preset, e.g.
    ``{"selective": {"projection": "full-rank"}}``; only ``options[name]`` applies, so one grid
    can change one embedding without touching the others.
    """
    if name not in ROTARY_NAMES:
        raise ValueError(f"rotary must be one of {ROTARY_NAMES}; got {name!r}")
    options = options or {}
    unknown = sorted(set(options) - set(ROTARY_NAMES))
    if unknown:
        raise ValueError(
            f"rotary_options must map rotary names {ROTARY_NAMES} to overrides; got keys {unknown}"
        )
    preset = {
        "nope": {"type": "nope"},
        "rope": dict(BASELINE_ROPE),
        "carope": {"type": "carope"},
        "selective": SELECTIVE_BY_TASK.get(task, {"type": "selective"}),
        "sinusoidal": {"type": "nope"},
        "learned": {"type": "nope"},
    }[name]
    return {**preset, **options.get(name, {})}


def accuracy_metric(task: str) -> str:
    """The headline accuracy of a task: sequence accuracy for state tracking (all positions
    right) and copying (exact string match), token (query) accuracy for MQAR and MAD."""
    return "sequence_accuracy" if task in ("state_tracking", "copying") else "token_accuracy"


@dataclass
class RunSpec:
    """One training run.

    Attributes:
        task: a ``selrope.tasks`` task name; ``task_params`` its parameters.
        mixer: "attention" | "gla" | "gdn" (or a per-layer list).
        rotary: the position encoding, a name of ``ROTARY_NAMES`` (rotary embeddings, or the
            absolute baselines "sinusoidal" / "learned"); ``rotary_options`` maps rotary names
            to overrides of their presets (see ``rotary_preset``).
        seed: seeds the data, the model initialisation and the batch order.
        model: ``LMConfig`` fields (vocab_size, mixer and rotary come from the task and above).
        train: ``TrainConfig`` fields (seed and out_dir are set by the run).
        out_dir: the run's directory (metrics, checkpoints, final metrics, model).
        resume: continue from the latest checkpoint in ``out_dir``.
    """

    task: str
    mixer: str | list[str]
    rotary: str
    seed: int = 0
    task_params: dict[str, Any] = field(default_factory=dict)
    rotary_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    out_dir: str = "runs/run"
    resume: bool = False


def build_model(spec: RunSpec, vocab_size: int) -> LanguageModel:
    """The spec's model, initialised from ``spec.seed`` without touching the global RNG."""
    model_options = dict(spec.model)
    if spec.rotary in ABSOLUTE_POSITIONS:
        model_options["absolute_position"] = spec.rotary
    config = LMConfig(
        vocab_size=vocab_size,
        mixer=spec.mixer,
        rotary=rotary_preset(spec.rotary, spec.task, spec.rotary_options),
        **model_options,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return LanguageModel(config)


def run_one(spec: RunSpec, progress: bool = True) -> list[dict[str, Any]]:
    """Train one model and return one result row per test length.

    Row keys: task, the task's identifying parameters (e.g. group), mixer, rotary, seed,
    train_len, test_len, accuracy (see ``accuracy_metric``), sequence_accuracy, token_accuracy,
    loss, perplexity, steps, elapsed_s, run_dir.

    Under torchrun every process trains; only rank 0 writes ``spec.json`` and ``model/`` (the
    final weights, with the corpus tokenizer beside them for language models).
    """
    data = build_task(spec.task, seed=spec.seed, **spec.task_params)
    model = build_model(spec, data.vocab_size)
    train_config = TrainConfig.from_dict({**spec.train, "seed": spec.seed, "out_dir": spec.out_dir})
    out_dir = Path(spec.out_dir)
    if is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "spec.json").write_text(json.dumps(dataclasses.asdict(spec), indent=2) + "\n")
    final = train(model, data, train_config, resume=spec.resume, progress=progress)
    if is_main_process():
        model.save_pretrained(out_dir / "model")
        if spec.task == "lm":
            shutil.copyfile(
                Path(data.params["data"]) / TOKENIZER_FILE, out_dir / "model" / TOKENIZER_FILE
            )
    base = {
        "task": spec.task,
        **{key: data.params[key] for key in IDENTITY_PARAMS.get(spec.task, ())},
        "mixer": spec.mixer if isinstance(spec.mixer, str) else "+".join(spec.mixer),
        "rotary": spec.rotary,
        "seed": spec.seed,
        "train_len": data.params.get(
            TRAIN_LENGTH_PARAM.get(spec.task, ""), as_batch_source(data.train).seq_len
        ),
        "steps": final["step"],
        "elapsed_s": round(final["elapsed_s"], 2),
        "run_dir": str(out_dir),
    }
    metric = accuracy_metric(spec.task)
    return [
        {
            **base,
            "test_len": int(length),
            "accuracy": result[metric],
            "sequence_accuracy": result["sequence_accuracy"],
            "token_accuracy": result["token_accuracy"],
            "loss": result["loss"],
            "perplexity": result["perplexity"],
        }
        for length, result in sorted(final["tests"].items())
    ]


def _run_quietly(spec: RunSpec) -> list[dict[str, Any]]:
    """run_one without a progress bar (for worker processes), then one summary line."""
    rows = run_one(spec, progress=False)
    accuracies = "  ".join(f"{row['test_len']}: {row['accuracy']:.3f}" for row in rows)
    print(f"finished {spec.out_dir}  accuracy by test length  {accuracies}", flush=True)
    return rows


def run_grid(specs: list[RunSpec], workers: int | None = None) -> list[dict[str, Any]]:
    """Run every spec (in parallel processes when cores allow) and concatenate their rows."""
    if len(specs) == 1 or workers == 1:
        return [row for spec in specs for row in run_one(spec, progress=len(specs) == 1)]
    results = run_parallel([(_run_quietly, {"spec": spec}) for spec in specs], workers)
    return [row for rows in results for row in rows]


def grid_specs(
    base: RunSpec, mixers: list[str], rotaries: list[str], seeds: list[int], out_dir: str
) -> list[RunSpec]:
    """``base`` x mixers x rotaries x seeds, each run in ``out_dir/<mixer>-<rotary>-s<seed>``."""
    return [
        dataclasses.replace(
            base,
            mixer=mixer,
            rotary=rotary,
            seed=seed,
            out_dir=str(Path(out_dir) / f"{mixer}-{rotary}-s{seed}"),
        )
        for mixer in mixers
        for rotary in rotaries
        for seed in seeds
    ]
