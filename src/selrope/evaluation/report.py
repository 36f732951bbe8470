"""Writing a perplexity-vs-length evaluation: ``eval.json``, ``eval.md`` and two PNG plots."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY_KEYS = ("vocab_size", "d_model", "n_layers", "n_heads", "mixer", "rotary")


@dataclass
class EvaluatedRun:
    """One evaluated model (a checkpoint, possibly with a RoPE override) and its results.

    Attributes:
        name: the row label (e.g. ``run`` or ``run+yarn``).
        checkpoint: the directory the weights came from.
        config: the model's ``LMConfig.to_dict()`` as evaluated (override included).
        n_parameters: number of parameters.
        rotary_override: the ``--rope-scaling`` dict, or None.
        train_length: the training context length if the run recorded it.
        results: ``{L: selrope.evaluation.evaluate_length's dict}``.
    """

    name: str
    checkpoint: str
    config: dict[str, Any]
    n_parameters: int
    rotary_override: dict[str, Any] | None
    train_length: int | None
    results: dict[int, dict[str, Any]]


def _layer_mixers(config: dict[str, Any]) -> list[Any]:
    mixer = config["mixer"]
    return list(mixer) if isinstance(mixer, list) else [mixer]


def _position_label(config: dict[str, Any]) -> str:
    """The model's position encoding: its rotary type (with a scaling), an absolute one, or a
    mechanism inside the attention scores (ALiBi, CoPE, PaTH), beside any rotation."""
    absolute = config.get("absolute_position", "none")
    if absolute != "none":
        return f"{absolute} absolute"
    rotary = config["rotary"]
    scaling = rotary.get("scaling")
    label = rotary.get("type", "?")
    label = f"{label} ({scaling['kind']} x{scaling['factor']:g})" if scaling else label
    in_scores = [
        layer.get("relative_positions", "none") for layer in _layer_mixers(config)
        if isinstance(layer, dict)
    ]  # fmt: skip
    in_scores = [name for name in dict.fromkeys(in_scores) if name != "none"]
    if not in_scores:
        return label
    return "+".join(in_scores) if label == "nope" else f"{label} + {'+'.join(in_scores)}"


def _mixer_label(config: dict[str, Any]) -> str:
    """The mixer kind of each layer (a name, or a mixer config's ``kind``), joined by "+"."""
    layers = _layer_mixers(config)
    return "+".join(layer if isinstance(layer, str) else layer["kind"] for layer in layers)


def write_json(path: Path, runs: list[EvaluatedRun], meta: dict[str, Any]) -> None:
    """``eval.json``: ``meta`` (data, split, lengths, scored tokens) and every run and length."""
    rows = [
        {
            "name": run.name,
            "checkpoint": run.checkpoint,
            "model": {
                **{key: run.config.get(key) for key in SUMMARY_KEYS},
                "n_parameters": run.n_parameters,
            },
            "rotary_override": run.rotary_override,
            "train_length": run.train_length,
            "config": run.config,
            "results": list(run.results.values()),
        }
        for run in runs
    ]
    path.write_text(json.dumps({**meta, "runs": rows}, indent=2) + "\n")


def write_markdown(path: Path, runs: list[EvaluatedRun], meta: dict[str, Any]) -> None:
    """``eval.md``: one row per model, perplexity at each length, and the tokens scored."""
    lengths = meta["lengths"]
    header = ["model", "mixer", "position", "params", "train L"]
    header += [f"ppl @ {length}" for length in lengths] + ["tokens scored"]
    lines = [
        "# Perplexity vs evaluation length",
        "",
        f"Data `{meta['data']}`, split `{meta['split']}`: every length scores the same "
        f"{meta['scored_tokens']:,} tokens (non-overlapping windows, no reading across documents).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * 5 + "---:|" * (len(lengths) + 1),
    ]
    for run in runs:
        cells = [
            run.name,
            _mixer_label(run.config),
            _position_label(run.config),
            f"{run.n_parameters:,}",
            str(run.train_length or "?"),
        ]
        cells += [f"{run.results[length]['perplexity']:.2f}" for length in lengths]
        cells.append(f"{meta['scored_tokens']:,}")
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def moving_average(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing moving average of ``values`` ``(T,)`` over ``window`` positions.

    Returns:
        ``(positions (T - window + 1,), averages (T - window + 1,))``: the average of
        ``values[t - window + 1 : t + 1]`` at position t.
    """
    window = max(1, min(window, len(values)))
    averages = np.convolve(values, np.ones(window) / window, mode="valid")
    return np.arange(window - 1, len(values)), averages


def variant_name(run_name: str) -> str:
    """The name of a run without its seed: "attention-rope-s1+yarn" -> "attention-rope+yarn"."""
    return re.sub(r"-s\d+(?=\+|$)", "", run_name)


def _by_variant(runs: list[EvaluatedRun]) -> dict[str, list[EvaluatedRun]]:
    """Runs grouped by ``variant_name``, in first-seen order."""
    groups: dict[str, list[EvaluatedRun]] = {}
    for run in runs:
        groups.setdefault(variant_name(run.name), []).append(run)
    return groups


def _colors(count: int) -> list[Any]:
    """``count`` distinct colours (tab10, or tab20 beyond ten)."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(count)]


def _label(variant: str, members: list[EvaluatedRun]) -> str:
    return variant if len(members) == 1 else f"{variant} (mean of {len(members)} seeds, range)"


def _mark_training_lengths(axes: Any, runs: list[EvaluatedRun]) -> None:
    """A grey dotted vertical line at each distinct known training length."""
    by_length: dict[int, list[str]] = {}
    for run in runs:
        if run.train_length:
            by_length.setdefault(run.train_length, []).append(variant_name(run.name))
    for length, names in sorted(by_length.items()):
        who = "" if len(by_length) == 1 else f": {', '.join(dict.fromkeys(names))}"
        axes.axvline(length, color="0.4", linestyle=":", label=f"training length ({length}{who})")


def _finish(figure: Any, axes: Any, path: Path) -> None:
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    figure.savefig(path, dpi=120)


def plot_perplexity(path: Path, runs: list[EvaluatedRun], meta: dict[str, Any]) -> None:
    """``ppl_vs_length.png``: perplexity against evaluation length, one line per model (the mean
    over seeds, with a band from the lowest to the highest seed)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import (
        FixedLocator,
        LogLocator,
        NullFormatter,
        NullLocator,
        ScalarFormatter,
    )

    figure = Figure(figsize=(9.5, 4.8), layout="constrained")
    axes = figure.add_subplot()
    groups = _by_variant(runs)
    for color, (variant, members) in zip(_colors(len(groups)), groups.items(), strict=True):
        lengths = sorted(members[0].results)
        values = np.array([[run.results[n]["perplexity"] for n in lengths] for run in members])
        axes.plot(lengths, values.mean(0), marker="o", color=color, label=_label(variant, members))
        if len(members) > 1:
            axes.fill_between(lengths, values.min(0), values.max(0), color=color, alpha=0.2)
    _mark_training_lengths(axes, runs)
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_locator(FixedLocator(sorted(meta["lengths"])))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    axes.yaxis.set_major_formatter(ScalarFormatter())
    axes.yaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("evaluation context length (tokens)")
    axes.set_ylabel("perplexity (exp of mean NLL in nats)")
    axes.set_title(
        f"Perplexity vs context length\n({meta['split']} split, the same "
        f"{meta['scored_tokens']:,} tokens at every length)"
    )
    axes.grid(True, which="both", alpha=0.3)
    _finish(figure, axes, path)


def plot_loss_by_position(path: Path, runs: list[EvaluatedRun]) -> None:
    """``loss_vs_position.png``: smoothed loss at each position of each model's longest windows
    (mean over seeds), with the training length (when known) as a dotted vertical line."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9.5, 4.8), layout="constrained")
    axes = figure.add_subplot()
    longest = max(max(run.results) for run in runs)
    window = max(1, longest // 16)
    groups = _by_variant(runs)
    for color, (variant, members) in zip(_colors(len(groups)), groups.items(), strict=True):
        length = max(members[0].results)
        losses = np.mean([run.results[length]["loss_by_position"] for run in members], axis=0)
        positions, averages = moving_average(losses, window)
        label = f"{_label(variant, members).replace(', range', '')}, windows of {length}"
        axes.plot(positions, averages, color=color, label=label)
    _mark_training_lengths(axes, runs)
    axes.set_xlabel("position in the window (tokens)")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title(f"Loss vs position (trailing moving average over {window} positions)")
    axes.grid(True, alpha=0.3)
    _finish(figure, axes, path)


def write_report(out_dir: str | Path, runs: list[EvaluatedRun], meta: dict[str, Any]) -> list[Path]:
    """Write ``eval.json``, ``eval.md``, ``ppl_vs_length.png`` and ``loss_vs_position.png``.

    Args:
        out_dir: created if missing.
        runs: the evaluated models, in table order.
        meta: ``{"data": str, "split": str, "lengths": [L, ...], "scored_tokens": S}``.

    Returns:
        The paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in ("eval.json", "eval.md")]
    paths += [out_dir / name for name in ("ppl_vs_length.png", "loss_vs_position.png")]
    write_json(paths[0], runs, meta)
    write_markdown(paths[1], runs, meta)
    plot_perplexity(paths[2], runs, meta)
    plot_loss_by_position(paths[3], runs)
    return paths
