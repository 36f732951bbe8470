"""The run folder: one object decides, once, whether a run starts fresh, resumes or overwrites.

A run folder belongs to its user. A fresh run refuses a folder that already holds anything
unless the caller asked to overwrite, and overwriting removes only the files selrope wrote
(every other file stays):

    run.json                      the resolved run config (what was trained, on what)
    metrics.jsonl, metrics.csv, final_metrics.json, tensorboard/, wandb/   the trainer
    checkpoints/step_XXXXXXXX/    (and hidden temporaries beside them)
    results.json, results.md, *_vs_length*.png, training_curves*.png   the runner
    model/config.json, model/model.safetensors, model/tokenizer.json
    spec.json, config.json        written by releases before run.json (read for --resume)

``RunFolder.prepare`` makes the decision on rank 0 before any process writes anything, and hands
it to the other ranks (a broadcast), so that under torchrun every process sees the same answer.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import torch.distributed as dist

from selrope.data.reader import TOKENIZER_FILE
from selrope.models.lm import CONFIG_FILE, WEIGHTS_FILE

from .checkpoint import atomic_write_text, latest_checkpoint
from .distributed import World

RUN_FILE = "run.json"
LEGACY_FILES = ("spec.json", "config.json")  # the run's record before run.json
TRAINER_FILES = ("metrics.jsonl", "metrics.csv", "final_metrics.json")
TRAINER_DIRS = ("tensorboard", "wandb")
RUNNER_FILES = (RUN_FILE, *LEGACY_FILES, "results.json", "results.md")
PLOT_PATTERNS = ("*_vs_length*.png", "training_curves*.png")
MODEL_DIR = "model"
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)
CHECKPOINT_DIR = "checkpoints"
# step_XXXXXXXX, and the hidden .step_*.tmp-PID / .step_*.old-PID of an interrupted save
_CHECKPOINT_ENTRY = re.compile(r"^\.?step_\d+(\.(tmp|old)-\d+)?$")


def check_out_dir(out_dir: str | Path) -> Path:
    """``out_dir`` as a Path; raise ValueError if it is empty or names a file."""
    if str(out_dir).strip() == "":
        raise ValueError("out_dir must name a folder; got ''")
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"out_dir must be a folder; got the file {str(path)!r}")
    return path


def _with_temporaries(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """The files ``names`` in ``folder`` and the hidden temporaries of their atomic writes."""
    found = [folder / name for name in names if (folder / name).is_file()]
    found += [p for name in names for p in folder.glob(f".{name}.tmp-*") if p.is_file()]
    return found


def trainer_outputs(out_dir: str | Path) -> list[Path]:
    """The files and folders that the trainer wrote in ``out_dir`` (checkpoints, metrics,
    logger folders)."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    found = _with_temporaries(folder, TRAINER_FILES)
    found += [folder / name for name in TRAINER_DIRS if (folder / name).is_dir()]
    checkpoints = folder / CHECKPOINT_DIR
    if checkpoints.is_dir():
        found += sorted(p for p in checkpoints.iterdir() if _CHECKPOINT_ENTRY.match(p.name))
    return found


def selrope_outputs(out_dir: str | Path) -> list[Path]:
    """Everything selrope writes in a run (or grid) folder: the trainer's, the runner's and the
    results writer's files, and the saved model's files."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    found = trainer_outputs(folder) + _with_temporaries(folder, RUNNER_FILES)
    found += sorted(p for pattern in PLOT_PATTERNS for p in folder.glob(pattern) if p.is_file())
    if (folder / MODEL_DIR).is_dir():
        found += _with_temporaries(folder / MODEL_DIR, MODEL_FILES)
    return found


def remove_outputs(out_dir: str | Path, paths: list[Path]) -> None:
    """Delete ``paths`` (from ``trainer_outputs`` / ``selrope_outputs``), then the checkpoints/
    and model/ folders of ``out_dir`` if that left them empty."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for name in (CHECKPOINT_DIR, MODEL_DIR):
        folder = Path(out_dir) / name
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def is_empty(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` is missing or an empty folder."""
    folder = Path(out_dir)
    return not folder.exists() or not any(folder.iterdir())


class Start(str, Enum):
    """How a run treats its folder."""

    FRESH = "fresh"  # the folder must be missing or empty
    RESUME = "resume"  # continue from the latest checkpoint (there must be one)
    RESUME_OR_START = "resume_or_start"  # resume where there is a checkpoint, else start fresh
    OVERWRITE = "overwrite"  # start fresh, removing only what selrope wrote there


ResumeCheck = Callable[[Path], None]


class RunFolder:
    """One run's folder and its start decision.

    Args:
        path: the folder (created when the run starts).
        start: a ``Start`` (or its value).
    """

    def __init__(self, path: str | Path, start: Start | str = Start.FRESH):
        self.path = check_out_dir(path)
        try:
            self.start = Start(start)
        except ValueError:
            allowed = ", ".join(s.value for s in Start)
            raise ValueError(f"start must be one of {allowed}; got {start!r}") from None
        self.resume: bool | None = None  # decided by ``decide`` / ``prepare``

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.checkpoints)

    def decide(self, check_resume: ResumeCheck | None = None) -> bool:
        """Whether the run resumes; raise ValueError if the folder may not be used as asked.
        Reads the folder, writes nothing.

        ``check_resume(checkpoint)`` raises ValueError when the saved run may not be continued
        by this one (another model, corpus or settings).
        """
        checkpoint = self.latest_checkpoint()
        if self.start in (Start.RESUME, Start.RESUME_OR_START) and checkpoint is not None:
            if check_resume is not None:
                check_resume(checkpoint)
            self.resume = True
            return True
        if self.start is Start.RESUME:
            raise ValueError(
                f"nothing to resume in {self.path}: it has no checkpoint (a run saves one at its "
                "end and every --checkpoint-every steps); pass --resume-or-start to start fresh"
            )
        if self.start is Start.FRESH and not is_empty(self.path):
            raise ValueError(
                f"{self.path} is not empty; pass --resume to continue the run in it, or "
                "--overwrite to replace the files selrope wrote there (other files are kept)"
            )
        self.resume = False
        return False

    def set_up(self, record: dict[str, Any] | None) -> None:
        """Act on the decision (rank 0 only): clear what an earlier fresh run wrote, create the
        folder, and write ``run.json`` (``record``), also on resume (steps may change)."""
        if not self.resume:
            remove_outputs(self.path, selrope_outputs(self.path))
        self.path.mkdir(parents=True, exist_ok=True)
        if record is not None:
            atomic_write_text(self.path / RUN_FILE, json.dumps(record, indent=2) + "\n")

    def prepare(
        self,
        world: World,
        record: dict[str, Any] | None = None,
        check_resume: ResumeCheck | None = None,
    ) -> bool:
        """``decide`` and ``set_up`` on rank 0, before any process writes; every rank gets the
        same answer (or the same ValueError) through a broadcast. Returns whether it resumes."""
        outcome: list[Any] = [None]
        if world.is_main:
            try:
                self.decide(check_resume)
                self.set_up(record)
                outcome = [("ok", self.resume)]
            except ValueError as error:
                outcome = [("error", str(error))]
        if world.size > 1:
            dist.broadcast_object_list(outcome, src=0)
        kind, value = outcome[0]
        if kind == "error":
            raise ValueError(value)
        self.resume = bool(value)
        return self.resume

    def saved_record(self) -> dict[str, Any] | None:
        """The saved ``run.json`` (None if there is none)."""
        path = self.path / RUN_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error.msg})") from None
