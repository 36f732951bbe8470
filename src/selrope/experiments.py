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
from selrope.models import LanguageModel, LMConfig, parameter_count
from selrope.rotary import (
    SELECTIVE_COPYING_RECIPE,
    SELECTIVE_LM_RECIPE,
    SELECTIVE_STATE_TRACKING_RECIPE,
    parse_rotary_config,
)
from selrope.tasks import build_task, task_parameters
from selrope.training import TrainConfig, is_main_process, latest_checkpoint, run_parallel, train
from selrope.training.checkpoint import STATE_FILE, atomic_write_text
from selrope.training.config import RESUMABLE_FIELDS
from selrope.training.distributed import world_size_from_environment
from selrope.training.host_memory import physical_memory_bytes
from selrope.training.loop import check_resumable, check_training_data
from selrope.training.run_dir import (
    CHECKPOINT_DIR,
    check_out_dir,
    is_empty,
    remove_outputs,
    selrope_outputs,
)

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

# Parameters that identify a task variant in the result rows.
IDENTITY_PARAMS = {
    "state_tracking": ("group",),
    "mqar": ("num_kv_pairs", "vocab_size"),
    "lm": ("data",),
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
        mixer: one of ``selrope.models.lm.MIXERS`` ("attention", "fox", "gla", "gdn") or a
            per-layer list.
        rotary: the position encoding, a name of ``ROTARY_NAMES`` (rotary embeddings, or the
            absolute baselines "sinusoidal" / "learned"); ``rotary_options`` maps rotary names
            to overrides of their presets (see ``rotary_preset``).
        seed: seeds the data, the model initialisation and the batch order.
        model: ``LMConfig`` fields (vocab_size, mixer and rotary come from the task and above).
        train: ``TrainConfig`` fields (seed and out_dir are set by the run).
        out_dir: the run's directory (metrics, checkpoints, final metrics, model).
        resume: continue from the latest checkpoint in ``out_dir`` (see ``check_run``).
        start_if_missing: with ``resume``, start a fresh run when there is no checkpoint.
        overwrite: a fresh run into a folder that is not empty: remove what selrope wrote there
            (``selrope.training.run_dir``), keep every other file.
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
    start_if_missing: bool = False
    overwrite: bool = False


# RunSpec fields that say where and how to start, not what is trained.
_START_FIELDS = ("out_dir", "resume", "start_if_missing", "overwrite")


def model_config(spec: RunSpec, vocab_size: int) -> LMConfig:
    """The spec's ``LMConfig`` (validated, rotary config included) for a task of ``vocab_size``."""
    model_options = dict(spec.model)
    if spec.rotary in ABSOLUTE_POSITIONS:
        model_options["absolute_position"] = spec.rotary
    config = LMConfig(
        vocab_size=vocab_size,
        mixer=spec.mixer,
        rotary=rotary_preset(spec.rotary, spec.task, spec.rotary_options),
        **model_options,
    )
    parse_rotary_config(config.rotary)
    return config


def train_config(spec: RunSpec) -> TrainConfig:
    """The spec's ``TrainConfig`` (validated, device present), with the run's seed and folder."""
    config = TrainConfig.from_dict({**spec.train, "seed": spec.seed, "out_dir": spec.out_dir})
    config.resolved_device()
    return config


TRAINING_BYTES_PER_PARAMETER = 16  # float32 weights, gradients and AdamW's two moments


def check_model_fits(config: LMConfig) -> None:
    """Raise ValueError when training the model needs more memory than the machine has.

    Counted before anything is allocated (``parameter_count``), so that a mistyped size
    (``--expand-k 1e7``) is a one-line error instead of the OS killing the process midway.
    Activations come on top; this is the floor.
    """
    available = physical_memory_bytes()
    needed = parameter_count(config) * TRAINING_BYTES_PER_PARAMETER
    if available is not None and needed > available:
        raise ValueError(
            f"the model has {needed // TRAINING_BYTES_PER_PARAMETER:,} parameters: training it "
            f"needs at least {needed / 2**30:,.1f} GiB (float32 weights, gradients and AdamW's "
            f"two moments), more than this machine's {available / 2**30:.1f} GiB; make "
            "--d-model, --n-layers, --expand-k / --expand-v or the vocabulary smaller"
        )


def build_model(spec: RunSpec, vocab_size: int) -> LanguageModel:
    """The spec's model, initialised from ``spec.seed`` without touching the global RNG.

    Raises:
        ValueError: training it would not fit in the machine's memory (``check_model_fits``).
    """
    config = model_config(spec, vocab_size)
    check_model_fits(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return LanguageModel(config)


def run_identity(spec: RunSpec) -> dict[str, Any]:
    """What a run trains, with every default filled in: task and its parameters, mixer, rotary
    config, seed, model options and the training options a resume may not change."""
    model_defaults = {
        f.name: f.default
        for f in dataclasses.fields(LMConfig)
        if f.default is not dataclasses.MISSING and f.name not in ("mixer", "rotary")
    }
    train_options = {**TrainConfig().to_dict(), **spec.train}
    identity = {
        "task": spec.task,
        "mixer": spec.mixer,
        "rotary": spec.rotary,
        "seed": spec.seed,
        "rotary_config": rotary_preset(spec.rotary, spec.task, spec.rotary_options),
        **{f"task.{k}": v for k, v in {**task_parameters(spec.task), **spec.task_params}.items()},
        **{f"model.{k}": v for k, v in {**model_defaults, **spec.model}.items()},
        **{
            f"train.{k}": v
            for k, v in train_options.items()
            if k not in RESUMABLE_FIELDS and k != "seed"
        },
    }
    return json.loads(json.dumps(identity, default=str))  # tuples as lists, like spec.json


def spec_differences(saved: dict[str, Any], spec: RunSpec) -> list[str]:
    """``"key (saved X, now Y)"`` for every entry of ``run_identity`` that differs between the
    spec saved in a run folder's spec.json and ``spec``."""
    known = {f.name for f in dataclasses.fields(RunSpec)}
    before = run_identity(RunSpec(**{k: v for k, v in saved.items() if k in known}))
    now = run_identity(spec)
    return [
        f"{key} (saved {before.get(key)!r}, now {now.get(key)!r})"
        for key in sorted(set(before) | set(now))
        if before.get(key) != now.get(key)
    ]


def check_run(spec: RunSpec) -> bool:
    """Whether ``spec`` resumes the run in its folder; raise ValueError if the folder may not be
    used as asked. Reads the folder, writes nothing.

    Rules: a fresh run needs an empty (or missing) folder unless ``overwrite``; ``resume`` needs
    a checkpoint there (else ValueError, or a fresh start with ``start_if_missing``) and a saved
    spec that matches in everything but steps, cadences, device, precision and compile.
    """
    out_dir = check_out_dir(spec.out_dir)
    if spec.resume and spec.overwrite:
        raise ValueError("--resume and --overwrite exclude each other; choose one")
    checkpoint = latest_checkpoint(out_dir / CHECKPOINT_DIR)
    if spec.resume and checkpoint is not None:
        saved = out_dir / "spec.json"
        differences = (
            spec_differences(json.loads(saved.read_text()), spec) if saved.exists() else []
        )
        if differences:
            raise ValueError(
                f"cannot resume {out_dir}: the saved run differs in {', '.join(differences)}; "
                f"only {', '.join(RESUMABLE_FIELDS[:-1])} may change (or start over with "
                "--overwrite)"
            )
        state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
        check_resumable(state["config"], train_config(spec))
        return True
    if spec.resume and not spec.start_if_missing:
        raise ValueError(
            f"nothing to resume in {out_dir}: it has no checkpoint (a run saves one at its end "
            "and every --checkpoint-every steps); pass --resume-or-start to start a fresh run"
        )
    if not (spec.overwrite or (spec.resume and spec.start_if_missing) or is_empty(out_dir)):
        raise ValueError(
            f"{out_dir} is not empty; pass --resume to continue the run in it, or --overwrite "
            "to replace the files selrope wrote there (other files are kept)"
        )
    return False


def check_grid(out_dir: str, specs: list[RunSpec]) -> None:
    """Check a grid before any of its runs starts: its specs' configs and task parameters, the
    grid folder (results and plots live there) and every run folder (``check_run``).

    On ``overwrite`` the grid folder's results and plots are removed; nothing else is written.
    """
    base = specs[0]
    data = build_task(base.task, seed=base.seed, **base.task_params)
    for spec in specs:
        model_config(spec, data.vocab_size)
        train_config(spec)
    root = check_out_dir(out_dir)
    flags = base.resume or base.overwrite
    if not (flags or is_empty(root)):
        raise ValueError(
            f"{root} is not empty; pass --resume to continue the grid in it, or --overwrite to "
            "replace the files selrope wrote there (other files are kept)"
        )
    for spec in specs:
        check_run(spec)
    if base.overwrite:
        remove_outputs(root, selrope_outputs(root))


def run_one(spec: RunSpec, progress: bool = True) -> list[dict[str, Any]]:
    """Train one model and return one result row per test length.

    Row keys: task, the task's identifying parameters (e.g. group), mixer, rotary, seed,
    train_len (the task's longest training length, ``TaskData.train_length``), test_len, accuracy
    (see ``accuracy_metric``), sequence_accuracy, token_accuracy, loss, perplexity, steps,
    elapsed_s, run_dir.

    Under torchrun every process trains; only rank 0 writes ``spec.json`` and ``model/`` (the
    final weights, with the corpus tokenizer beside them for language models).
    """
    data = build_task(spec.task, seed=spec.seed, **spec.task_params)
    model = build_model(spec, data.vocab_size)
    config = train_config(spec)
    resume = check_run(spec)  # every check before anything is written
    check_training_data(data, config, world_size_from_environment())
    out_dir = Path(spec.out_dir)
    spec_text = json.dumps(dataclasses.asdict(spec), indent=2) + "\n"
    if is_main_process() and not resume:
        remove_outputs(out_dir, selrope_outputs(out_dir))
        atomic_write_text(out_dir / "spec.json", spec_text)
    final = train(model, data, config, resume=resume, progress=progress)
    if is_main_process():
        atomic_write_text(out_dir / "spec.json", spec_text)  # a resume may change steps, ...
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
        "train_len": data.train_length,
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
