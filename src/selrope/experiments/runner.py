"""The experiment runner: one run = task data + model + trainer -> result rows; grids of runs.

``run_one(sections)`` resolves the run (``build_run``), decides its folder once on rank 0
(``RunFolder.prepare``: fresh, resume or overwrite, with every check before anything is
written), trains with ``Trainer``, saves the model and returns one row per test length.
``run_grid`` runs many in parallel processes; ``check_grid`` checks them all first.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from selrope.models import LanguageModel
from selrope.models.io import check_fits_in_memory
from selrope.tasks import TaskData, task_spec
from selrope.training import RunFolder, Start, TrainConfig, Trainer, is_main_process
from selrope.training.callbacks import build_loggers
from selrope.training.checkpoint import STATE_FILE, read_state
from selrope.training.run_folder import LEGACY_FILES, is_empty, remove_outputs, selrope_outputs
from selrope.training.sharded_checkpoint import check_sharded_checkpoint, is_sharded_checkpoint
from selrope.training.sharding import full_state_dict, is_sharded
from selrope.training.trainer import check_resumable, check_training_data, training_world

from .config import RunConfig, build_run, identity_differences, identity_of
from .legacy import sections_of_legacy_spec
from .parallel import run_parallel
from .plan import Hardware, RunPlan, plan_run

Sections = dict[str, dict[str, Any]]
TRAINING_BYTES_PER_PARAMETER = 16  # float32 weights, gradients and AdamW's two moments
MODEL_SIZE_FLAGS = "--d-model, --n-layers, --expand-k / --expand-v or the vocabulary"


def build_model(config: RunConfig) -> LanguageModel:
    """The run's model, initialised from its seed without touching the global RNG.

    Its size is checked first, on the meta device, so that a mistyped size (``--expand-k
    1e7``) is a one-line error instead of the OS killing the process midway (activations come
    on top: this is the floor).
    """
    check_fits_in_memory(
        config.model,
        f"{MODEL_SIZE_FLAGS} (make them smaller)",
        config.train.resolved_device(),
        TRAINING_BYTES_PER_PARAMETER,
        "to train (float32 weights, gradients and AdamW's two moments)",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return LanguageModel(config.model)


def saved_identity(folder: RunFolder) -> dict[str, Any] | None:
    """The identity of the run saved in ``folder``: from run.json, or from the spec.json of a
    run written before run.json (rebuilt through today's configs); None if neither exists."""
    record = folder.saved_record()
    if record is not None and "model" in record:
        return identity_of(record)
    legacy = folder.path / LEGACY_FILES[0]
    if not legacy.is_file():
        return None
    saved, _ = build_run(sections_of_legacy_spec(json.loads(legacy.read_text())))
    return saved.identity()


def resume_check(config: RunConfig, folder: RunFolder):
    """The check ``RunFolder.prepare`` runs before resuming: the same model, task, data and
    non-resumable training settings as the saved run."""

    def check(checkpoint: Path) -> None:
        saved = saved_identity(folder)
        now = config.identity()
        if saved is not None:
            if "data_fingerprint" not in saved:  # written before runs recorded their data
                now.pop("data_fingerprint", None)
            differences = identity_differences(saved, now)
            if differences:
                raise ValueError(
                    f"cannot resume {folder.path}: the saved run differs in "
                    f"{'; '.join(differences)} (only steps, cadences, device, precision, "
                    "compile and log may change; or start over with --overwrite)"
                )
        state = read_state(checkpoint / STATE_FILE)
        if is_sharded_checkpoint(checkpoint):
            check_sharded_checkpoint(checkpoint)
        check_resumable(state.get("config"), config.train)

    return check


def result_rows(config: RunConfig, data: TaskData, final: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per test length: task, identifying parameters, mixer, rotary, seed, lengths,
    the headline accuracy, both accuracies, loss, perplexity, steps, time, run folder."""
    spec = task_spec(config.task)
    mixers = config.model.layer_mixers()
    base = {
        "task": config.task,
        **{key: data.params[key] for key in spec.identity},
        "mixer": mixers[0] if len(set(mixers)) == 1 else "+".join(mixers),
        "rotary": config.position,
        "seed": config.seed,
        "train_len": data.train_length,
        "steps": final["step"],
        "elapsed_s": round(final["elapsed_s"], 2),
        "run_dir": config.out_dir,
    }
    accuracy = "token_accuracy" if spec.headline_metric == "perplexity" else spec.headline_metric
    return [
        {
            **base,
            "test_len": int(length),
            "accuracy": result[accuracy],
            "sequence_accuracy": result["sequence_accuracy"],
            "token_accuracy": result["token_accuracy"],
            "loss": result["loss"],
            "perplexity": result["perplexity"],
        }
        for length, result in sorted(final["tests"].items())
    ]


def whole_model(model: LanguageModel, config: RunConfig) -> LanguageModel:
    """``model`` itself, or for an FSDP run an unsharded copy with the gathered weights."""
    if not is_sharded(model):
        return model
    weights = full_state_dict(model)
    whole = LanguageModel(config.model)
    if weights:  # rank 0 receives the gathered weights; the other ranks an empty dict
        whole.load_state_dict(weights)
    return whole


def save_model(model: LanguageModel, config: RunConfig, folder: RunFolder, params: dict) -> None:
    """``model/``: the final weights and config, with the data's files a model keeps."""
    model.save_pretrained(folder.model_dir)
    for path in task_spec(config.task).model_files(params):
        shutil.copyfile(path, folder.model_dir / path.name)


def plan_summary(cost: RunPlan, train: TrainConfig) -> str:
    """Two lines of ``selrope plan`` for the start of a run (its parallelism's memory)."""
    memory = cost.fsdp if train.parallel == "fsdp" else cost.ddp
    total = memory.total_checkpointed if train.activation_checkpointing else memory.total
    return (
        f"plan: {cost.parameters:,} parameters, {cost.flops_per_token.training / 1e9:.3g} GFLOPs "
        f"per training token, {cost.tokens:,} tokens to train; about {total / 1e9:.2f} GB per "
        "process (weights, gradients, AdamW, activations at the micro-batch: selrope plan)"
    )


def run_one(sections: Sections, progress: bool = True) -> list[dict[str, Any]]:
    """Train one run (option values by section, see ``build_run``); return its result rows.

    Under torchrun every process trains; rank 0 decides the folder (before any process
    writes), writes run.json, the metrics, checkpoints and ``model/``.
    """
    config, data = build_run(sections)
    model = build_model(config)
    folder = RunFolder(config.out_dir, config.start)
    with training_world(config.train) as world:
        check_training_data(data, config.train, world.size)
        folder.prepare(world, config.to_dict(), resume_check(config, folder))
        loggers = (
            build_loggers(config.train.log, folder.path, config.to_dict()) if world.is_main else []
        )
        cost = plan_run(config.model, config.train, data.train_length, Hardware(world.size))
        if world.is_main and progress:
            print(plan_summary(cost, config.train), flush=True)
        trainer = Trainer(
            model,
            data,
            config.train,
            folder,
            world,
            loggers,
            progress,
            task_spec(config.task).headline_metric,
            cost.flops_per_token.training,
        )
        final = trainer.train()
        whole = whole_model(model, config)  # every rank takes part in gathering FSDP shards
        if world.is_main:
            save_model(whole, config, folder, data.params)
    return result_rows(config, data, final)


def _run_quietly(sections: Sections) -> list[dict[str, Any]]:
    """run_one without a progress bar (for worker processes), then one summary line."""
    rows = run_one(sections, progress=False)
    accuracies = "  ".join(f"{row['test_len']}: {row['accuracy']:.3f}" for row in rows)
    print(f"finished {sections['run']['out']}  accuracy by test length  {accuracies}", flush=True)
    return rows


def run_grid(runs: list[Sections], workers: int | None = None) -> list[dict[str, Any]]:
    """Run every run (in parallel processes when cores allow) and concatenate their rows."""
    if len(runs) == 1 or workers == 1:
        return [row for run in runs for row in run_one(run, progress=len(runs) == 1)]
    results = run_parallel([(_run_quietly, {"sections": run}) for run in runs], workers)
    return [row for rows in results for row in rows]


def grid_runs(
    base: Sections, mixers: list[str], rotaries: list[str], seeds: list[int], out_dir: str
) -> list[Sections]:
    """``base`` x mixers x rotaries x seeds, each run in ``out_dir/<mixer>-<rotary>-s<seed>``."""
    runs = []
    for mixer in mixers:
        for rotary in rotaries:
            for seed in seeds:
                run = copy.deepcopy(base)
                out = str(Path(out_dir) / f"{mixer}-{rotary}-s{seed}")
                run["run"].update(mixer=mixer, rotary=rotary, seed=seed, out=out)
                runs.append(run)
    return runs


def check_grid(out_dir: str, runs: list[Sections]) -> None:
    """Check a grid before any of its runs starts: every run's config and folder decision,
    and the grid folder (results and plots live there). On overwrite the grid folder's
    results and plots are removed; nothing else is written."""
    configs = [build_run(run)[0] for run in runs]
    start = configs[0].start
    root = Path(out_dir)
    if start is Start.FRESH and not is_empty(root):
        raise ValueError(
            f"{root} is not empty; pass --resume to continue the grid in it, or --overwrite to "
            "replace the files selrope wrote there (other files are kept)"
        )
    for config in configs:
        folder = RunFolder(config.out_dir, config.start)
        folder.decide(resume_check(config, folder))
    if start is Start.OVERWRITE and is_main_process():
        remove_outputs(root, selrope_outputs(root))
