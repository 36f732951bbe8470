"""Collect experiment rows into results.json, a mean ± std table (results.md) and PNG plots.

A row is one (run, test length) measurement, e.g.

    {"task": "state_tracking", "group": "S5", "mixer": "gla", "rotary": "selective", "seed": 0,
     "train_len": 32, "test_len": 128, "accuracy": 0.91, "token_accuracy": 0.99,
     "run_dir": "runs/s5/gla-selective-0"}

Rows are grouped into sections (one table / figure per distinct value of `section_keys`, e.g.
per task and group), within a section into variants (`variant_keys`, e.g. mixer and rotary), and
the metric is averaged over the seeds of a variant at each test length.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selrope.training.checkpoint import atomic_write_text
from selrope.training.metrics import read_metrics

SECTION_KEYS = ("task", "group", "train_len")
VARIANT_KEYS = ("mixer", "rotary")

Key = tuple[Any, ...]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0.0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _present(rows: Sequence[dict], keys: Sequence[str]) -> tuple[str, ...]:
    return tuple(k for k in keys if any(k in row for row in rows))


def _group(rows: Sequence[dict], keys: Sequence[str]) -> dict[Key, list[dict]]:
    """Rows grouped by their values of `keys`, groups in order of first appearance."""
    groups: dict[Key, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    return groups


def _check_rows(rows: Sequence[dict], metric: str) -> None:
    for i, row in enumerate(rows):
        missing = [k for k in ("test_len", metric) if k not in row]
        if missing:
            raise ValueError(f"results row {i} lacks {missing}: {row}")


def summarize(
    rows: Sequence[dict],
    metric: str = "accuracy",
    section_keys: Sequence[str] = SECTION_KEYS,
    variant_keys: Sequence[str] = VARIANT_KEYS,
) -> list[dict[str, Any]]:
    """Aggregate `metric` over seeds.

    Returns:
        One dict per (section, variant, test_len), in order of first appearance with test
        lengths ascending: the section and variant key values, "test_len", "mean", "std"
        (sample), "min", "max", "n" (number of rows = seeds) and "seeds" (distinct seeds of
        the variant over all test lengths).
    """
    _check_rows(rows, metric)
    section_keys = _present(rows, section_keys)
    variant_keys = _present(rows, variant_keys)
    summary = []
    for section, section_rows in _group(rows, section_keys).items():
        for variant, variant_rows in _group(section_rows, variant_keys).items():
            seeds = len({row.get("seed") for row in variant_rows})
            by_length = _group(variant_rows, ("test_len",))
            for (test_len,), length_rows in sorted(by_length.items(), key=lambda kv: kv[0]):
                values = [float(row[metric]) for row in length_rows]
                mean, std = _mean_std(values)
                summary.append(
                    {
                        **dict(zip(section_keys, section, strict=True)),
                        **dict(zip(variant_keys, variant, strict=True)),
                        "test_len": test_len,
                        "mean": mean,
                        "std": std,
                        "min": min(values),
                        "max": max(values),
                        "n": len(values),
                        "seeds": seeds,
                    }
                )
    return summary


def _section_title(keys: Sequence[str], values: Key) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))


def _slug(keys: Sequence[str], values: Key) -> str:
    text = "_".join(f"{k}-{v}" for k, v in zip(keys, values, strict=True))
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


def format_table(
    rows: Sequence[dict],
    metric: str = "accuracy",
    section_keys: Sequence[str] = SECTION_KEYS,
    variant_keys: Sequence[str] = VARIANT_KEYS,
    digits: int = 3,
) -> str:
    """Markdown tables of `metric`, mean ± sample std over seeds.

    One table per section; one row per variant (plus its number of seeds), one column per
    test length. Cells for a single seed show the value alone; missing cells show "-".
    """
    summary = summarize(rows, metric, section_keys, variant_keys)
    section_keys = _present(rows, section_keys)
    variant_keys = _present(rows, variant_keys)
    blocks = []
    for section, entries in _group(summary, section_keys).items():
        lengths = sorted({e["test_len"] for e in entries})
        header = [*variant_keys, "seeds", *(str(n) for n in lengths)]
        lines = []
        if section_keys:
            lines += [f"### {_section_title(section_keys, section)}", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for variant, variant_entries in _group(entries, variant_keys).items():
            cells = {e["test_len"]: e for e in variant_entries}
            row = [str(v) for v in variant] + [str(variant_entries[0]["seeds"])]
            for n in lengths:
                e = cells.get(n)
                if e is None:
                    row.append("-")
                elif e["n"] < 2:
                    row.append(f"{e['mean']:.{digits}f}")
                else:
                    row.append(f"{e['mean']:.{digits}f} ± {e['std']:.{digits}f}")
            lines.append("| " + " | ".join(row) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def write_results(
    rows: Sequence[dict],
    out_dir: str | Path,
    metric: str = "accuracy",
    section_keys: Sequence[str] = SECTION_KEYS,
    variant_keys: Sequence[str] = VARIANT_KEYS,
    plots: bool = True,
) -> list[Path]:
    """Write results.json, results.md and (with matplotlib) PNG plots into `out_dir`.

    Plots, one pair per section: `<metric>_vs_length[_<section>].png` (mean over seeds, band
    from min to max) and `training_curves[_<section>].png` (training loss vs step of every run
    whose row has a "run_dir" with a metrics.jsonl).

    Returns:
        The paths written.
    """
    _check_rows(rows, metric)
    out_dir = Path(out_dir)
    written = [
        atomic_write_text(out_dir / "results.json", json.dumps(list(rows), indent=2, default=str)),
        atomic_write_text(
            out_dir / "results.md",
            f"# Results\n\nCells: `{metric}`, mean ± sample standard deviation over seeds "
            "(a single seed shows its value).\n\n"
            + format_table(rows, metric, section_keys, variant_keys),
        ),
    ]
    if plots:
        written += plot_results(rows, out_dir, metric, section_keys, variant_keys)
    return written


def plot_results(
    rows: Sequence[dict],
    out_dir: str | Path,
    metric: str = "accuracy",
    section_keys: Sequence[str] = SECTION_KEYS,
    variant_keys: Sequence[str] = VARIANT_KEYS,
) -> list[Path]:
    """The PNGs of `write_results`; prints a note and returns [] when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure  # noqa: F401 - no pyplot: leaves the backend alone
    except ImportError:
        print("matplotlib is not installed: skipping plots (pip install 'selrope[plot]')")
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    section_keys = _present(rows, section_keys)
    variant_keys = _present(rows, variant_keys)
    summary = summarize(rows, metric, section_keys, variant_keys)
    row_groups = _group(rows, section_keys)
    written = []
    for section, entries in _group(summary, section_keys).items():
        suffix = f"_{_slug(section_keys, section)}" if section_keys else ""
        title = _section_title(section_keys, section)
        path = out_dir / f"{metric}_vs_length{suffix}.png"
        _metric_figure(entries, row_groups[section], variant_keys, metric, title).savefig(
            path, dpi=120
        )
        written.append(path)
        curves = _training_curves(row_groups[section], variant_keys)
        if curves:
            path = out_dir / f"training_curves{suffix}.png"
            _curves_figure(curves, title).savefig(path, dpi=120)
            written.append(path)
    return written


def _metric_figure(entries, section_rows, variant_keys, metric: str, title: str):
    """The metric against test length, one line (mean, min-max band) per variant."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for variant, variant_entries in _group(entries, variant_keys).items():
        lengths = [e["test_len"] for e in variant_entries]
        means = [e["mean"] for e in variant_entries]
        (line,) = ax.plot(lengths, means, marker="o", label="/".join(map(str, variant)))
        low, high = [e["min"] for e in variant_entries], [e["max"] for e in variant_entries]
        ax.fill_between(lengths, low, high, color=line.get_color(), alpha=0.2)
    lengths = sorted({e["test_len"] for e in entries})
    if all(isinstance(n, (int, float)) and n > 0 for n in lengths):
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.minorticks_off()
    train_lens = {row.get("train_len") for row in section_rows}
    if len(train_lens) == 1 and None not in train_lens:
        ax.axvline(train_lens.pop(), color="gray", ls="--", lw=0.8, label="train length")
    ax.set(xlabel="test length (tokens)", ylabel=metric, title=title)
    if metric.endswith("accuracy"):
        ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize="small")
    return fig


def _curves_figure(curves, title: str):
    """Training loss against step, one colour per variant (its seeds share it)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    colors = {}
    for variant, steps, losses in curves:
        if variant in colors:
            ax.plot(steps, losses, color=colors[variant], lw=0.8, alpha=0.7)
        else:
            label = "/".join(map(str, variant))
            (line,) = ax.plot(steps, losses, lw=0.8, alpha=0.7, label=label)
            colors[variant] = line.get_color()
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="training loss", title=title)
    ax.legend(fontsize="small")
    return fig


def _training_curves(
    rows: Sequence[dict], variant_keys: Sequence[str]
) -> list[tuple[Key, list[int], list[float]]]:
    """(variant, steps, training losses) for each distinct run_dir among `rows`."""
    curves = []
    seen = set()
    for row in rows:
        run_dir = row.get("run_dir")
        if run_dir is None or run_dir in seen:
            continue
        seen.add(run_dir)
        train_rows = [r for r in read_metrics(run_dir) if r["split"] == "train"]
        if train_rows:
            variant = tuple(row.get(k) for k in variant_keys)
            curves.append(
                (variant, [r["step"] for r in train_rows], [r["loss"] for r in train_rows])
            )
    return curves
