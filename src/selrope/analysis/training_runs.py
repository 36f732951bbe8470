"""``selrope analyze runs``: seeds, spread and escape times of finished training runs.

Reads run folders written by ``selrope train`` / ``selrope compare`` (``spec.json``,
``metrics.jsonl``, ``final_metrics.json``) from one or more folders, groups the runs into variants
(every spec field that differs between the runs, except the seed) and reports per variant:

- the final test accuracy (sequence accuracy: every target of a row right) at each test length,
  mean ± sample std and per seed;
- the escape step: the first logged training step whose token accuracy reaches a threshold (0.5
  by default). On recall tasks a model sits on a loss plateau before it learns to look keys up;
  this is when it leaves it (``-`` when it never did);
- the last step (``*`` when early stopping ended the run).

A figure shows the training loss and gradient norm against the step, one colour per variant and
one line per seed (the instability of high learning rates shows up there).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selrope.analysis.plots import new_figure, save_figure
from selrope.analysis.report import Section
from selrope.training.metrics import read_metrics

NOT_VARIANT_KEYS = (
    "seed",
    "out_dir",
    "resume",
    "start_if_missing",
    "overwrite",
    "run.",
    "train.seed",
    "train.out_dir",
    # run.json: the position's resolved rotary config and absolute embedding follow from
    # "rotary" (the position); the data's fingerprint from the data folder.
    "model.rotary.",
    "model.absolute_position",
    "data_fingerprint",
)
RECORD_FILES = ("run.json", "spec.json")  # the run's record; spec.json before run.json
DEFAULT = "default"  # a variant's value of a field its spec does not set
FIGURE_FILE = "runs_training.png"


@dataclass
class TrainingRun:
    """One run folder: its flattened spec, logged rows and final metrics (None: unfinished)."""

    path: Path
    spec: dict[str, Any]
    rows: list[dict[str, Any]]
    final: dict[str, Any] | None
    variant: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def seed(self) -> Any:
        return self.spec.get("seed", self.spec.get("run.seed"))


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become JSON text so they compare by value."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple, Mapping)):
            flat[name] = json.dumps(value, sort_keys=True)
        else:
            flat[name] = value
    return flat


def _spec_of(record: dict[str, Any]) -> dict[str, Any]:
    """A run's record flattened, the position named "rotary" in both formats."""
    flat = flatten(record)
    if "position" in flat:
        flat["rotary"] = flat.pop("position")
    return flat


def _record(folder: Path) -> Path | None:
    """The run's record file in ``folder`` (run.json, or an older release's spec.json)."""
    for name in RECORD_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def find_runs(folders: Iterable[str | Path]) -> list[TrainingRun]:
    """Every run under ``folders`` (a folder that holds ``spec.json`` and ``metrics.jsonl``, or
    such folders one level down), sorted by path within each folder.

    Raises:
        ValueError: a folder does not exist or holds no run.
    """
    runs = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"--runs {folder}: not a folder")
        candidates = [folder] if _record(folder) else sorted(folder.iterdir())
        found = [
            path for path in candidates if _record(path) and (path / "metrics.jsonl").is_file()
        ]
        if not found:
            raise ValueError(
                f"--runs {folder}: no run folders (run.json + metrics.jsonl) in it or below it"
            )
        for path in found:
            final_file = path / "final_metrics.json"
            runs.append(
                TrainingRun(
                    path=path,
                    spec=_spec_of(json.loads(_record(path).read_text())),
                    rows=read_metrics(path),
                    final=json.loads(final_file.read_text()) if final_file.is_file() else None,
                )
            )
    return runs


def assign_variants(runs: Sequence[TrainingRun]) -> list[str]:
    """Set each run's ``variant`` (its values of the spec fields that differ between runs, seed
    and bookkeeping fields excluded; ``"default"`` where its spec leaves a field out) and return
    those field names in first-seen order."""
    names: list[str] = []
    for run in runs:
        for name in run.spec:
            if name not in names and not name.startswith(NOT_VARIANT_KEYS):
                names.append(name)
    varying = [
        name
        for name in names
        if len({json.dumps(run.spec.get(name, DEFAULT), default=str) for run in runs}) > 1
    ]
    for run in runs:
        run.variant = tuple((name, run.spec.get(name, DEFAULT)) for name in varying)
    return varying


def escape_step(rows: Sequence[Mapping[str, Any]], threshold: float) -> int | None:
    """The first logged training step whose token accuracy is >= ``threshold`` (None: never)."""
    for row in rows:
        if row.get("split") == "train" and (row.get("token_accuracy") or 0.0) >= threshold:
            return int(row["step"])
    return None


def final_accuracies(run: TrainingRun) -> dict[int, float]:
    """``{test length: sequence accuracy}`` at the end of a finished run ({} if unfinished)."""
    if run.final is None:
        return {}
    return {int(n): r["sequence_accuracy"] for n, r in run.final.get("tests", {}).items()}


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {spread:.3f}"


def _label(variant: tuple[tuple[str, Any], ...]) -> str:
    return ", ".join(f"{name.split('.')[-1]}={value}" for name, value in variant) or "all runs"


def variant_table(runs: Sequence[TrainingRun], threshold: float) -> list[str]:
    """Markdown table, one line per variant: seeds, accuracy per test length (mean ± std and per
    seed), escape step per seed and its median, last step per seed."""
    lengths = sorted({n for run in runs for n in final_accuracies(run)})
    by_variant: dict[tuple, list[TrainingRun]] = {}
    for run in runs:
        by_variant.setdefault(run.variant, []).append(run)
    header = ["variant", "seeds"]
    header += [f"accuracy at {n}" for n in lengths]
    header += ["per seed", f"escape step (token acc >= {threshold:g})", "median", "last step"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, members in by_variant.items():
        members = sorted(members, key=lambda run: (str(run.seed), str(run.path)))
        finished = [run for run in members if run.final is not None]
        accuracies = [final_accuracies(run) for run in finished]
        cells = [_label(variant), ", ".join(str(run.seed) for run in members)]
        cells += [_mean_std([a[n] for a in accuracies if n in a]) for n in lengths]
        cells.append(
            "; ".join(" / ".join(f"{a[n]:.2f}" for n in lengths if n in a) for a in accuracies)
            or "-"
        )
        escapes = [escape_step(run.rows, threshold) for run in members]
        cells.append(", ".join("-" if step is None else str(step) for step in escapes))
        # never = infinitely late: the median is a step only when most seeds escaped
        median = statistics.median(math.inf if step is None else step for step in escapes)
        cells.append("-" if math.isinf(median) else f"{median:g}")
        cells.append(
            ", ".join(
                "running"
                if run.final is None
                else f"{run.final['step']}" + ("*" if run.final.get("stopped_early") else "")
                for run in members
            )
        )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot_training(path: Path, runs: Sequence[TrainingRun]) -> Path:
    """Training loss and gradient norm against the step (log scales), a colour per variant and
    the legend below both panels."""
    variants = list(dict.fromkeys(run.variant for run in runs))
    columns = min(3, max(1, len(variants)))
    figure = new_figure(11, 4.2 + 0.2 * math.ceil(len(variants) / columns))
    loss_axes, norm_axes = figure.subplots(1, 2)
    colours = {variant: f"C{i % 10}" for i, variant in enumerate(variants)}
    styles = {variant: ("-", "--", ":")[(i // 10) % 3] for i, variant in enumerate(variants)}
    labelled: set[tuple] = set()
    for run in runs:
        train = [row for row in run.rows if row.get("split") == "train"]
        if not train:
            continue
        style = {"color": colours[run.variant], "ls": styles[run.variant], "lw": 0.8}
        label = None if run.variant in labelled else _label(run.variant)
        labelled.add(run.variant)
        steps = [row["step"] for row in train]
        loss_axes.plot(steps, [row["loss"] for row in train], label=label, **style)
        norms = [row.get("grad_norm") for row in train]
        if any(norm is not None and math.isfinite(norm) for norm in norms):
            norm_axes.plot(steps, [math.nan if n is None else n for n in norms], **style)
    loss_axes.set(xlabel="training step", ylabel="training loss (nats/token)", yscale="log")
    loss_axes.set_title("training loss (one line per seed)")
    norm_axes.set(xlabel="training step", ylabel="gradient norm before clipping", yscale="log")
    norm_axes.set_title("gradient norm (one line per seed)")
    if labelled:
        figure.legend(loc="outside lower center", ncols=columns, fontsize=7)
    return save_figure(figure, path)


def analyze_runs(out_dir: Path, folders: Sequence[str | Path], threshold: float = 0.5) -> Section:
    """Write ``runs_training.png`` into ``out_dir`` (made if missing) and return it with the
    report section.

    Raises:
        ValueError: a folder holds no run, or ``threshold`` is not in (0, 1].
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"--escape-accuracy must be in (0, 1]; got {threshold}")
    runs = find_runs(folders)
    varying = assign_variants(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = plot_training(out_dir / FIGURE_FILE, runs)
    unfinished = sum(run.final is None for run in runs)
    markdown = "\n".join(
        [
            "## runs: accuracy with seeds, escape steps and training curves",
            "",
            f"{len(runs)} runs from {', '.join(f'`{f}`' for f in folders)}"
            + (f" ({unfinished} still running)" if unfinished else "")
            + "; variants differ in "
            + (", ".join(f"`{name}`" for name in varying) or "nothing")
            + ". Accuracy: sequence accuracy at the end (mean ± sample std over seeds; per seed, "
            "the test lengths separated by /). Escape step: the first logged training step whose "
            f"token accuracy reached {threshold:g}; median over seeds, a seed that never "
            "escaped counting as infinitely late (`-`: never, or not for most seeds). "
            "Last step: `*` = early stopping.",
            "",
            *variant_table(runs, threshold),
            "",
            f"![training curves]({figure.name})",
        ]
    )
    return Section(markdown, (figure,))
