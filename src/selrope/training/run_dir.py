"""A run folder belongs to its user: which files in it selrope wrote, and clearing only those.

A fresh run refuses a folder that already holds anything unless the caller asked to overwrite,
and overwriting removes only the files below (every other file stays):

    config.json, metrics.jsonl, metrics.csv, final_metrics.json   the trainer (``trainer_outputs``)
    checkpoints/step_XXXXXXXX/ (and hidden temporaries beside them)
    spec.json, results.json, results.md, *_vs_length*.png, training_curves*.png   the runner
    model/config.json, model/model.safetensors, model/tokenizer.json
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from selrope.data.reader import TOKENIZER_FILE
from selrope.models.lm import CONFIG_FILE, WEIGHTS_FILE

TRAINER_FILES = ("config.json", "metrics.jsonl", "metrics.csv", "final_metrics.json")
RUNNER_FILES = ("spec.json", "results.json", "results.md")
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
    """The files and checkpoint folders that ``selrope.training.train`` wrote in ``out_dir``."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    found = _with_temporaries(folder, TRAINER_FILES)
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
