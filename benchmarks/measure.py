"""Timing and memory measurement shared by the benchmark scripts, and their output.

Memory: on CPU, ``saved_mib`` is what autograd keeps from forward to backward (each storage
counted once, the excluded storages, e.g. inputs and parameters, left out); on CUDA,
``peak_mib`` is ``torch.cuda.max_memory_allocated`` during one step above what was allocated
before it.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence

import torch


def saved_mib(step: Callable, exclude: set[int]) -> float:
    """MiB autograd saves for backward in ``step(saved_list)``; ``exclude`` storages left out."""
    saved: list[torch.Tensor] = []
    step(saved)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}
    return sum(n for ptr, n in storages.items() if ptr not in exclude) / 2**20


def peak_mib(step: Callable, device: torch.device) -> float:
    """Peak CUDA MiB allocated during ``step()`` above what was allocated before it."""
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def memory_mib(step: Callable, device: torch.device, exclude: set[int]) -> float:
    """``peak_mib`` on CUDA, ``saved_mib`` elsewhere."""
    return peak_mib(step, device) if device.type == "cuda" else saved_mib(step, exclude)


def time_ms(step: Callable, device: torch.device, repeats: int) -> float:
    """Median wall time of ``step()`` in ms over ``repeats`` runs, after one warm-up run."""
    return time_ms_interleaved({"step": step}, device, repeats)["step"]


def time_ms_interleaved(
    steps: dict[str, Callable], device: torch.device, repeats: int
) -> dict[str, float]:
    """Median wall time in ms of each ``steps[name]()``, run round-robin (one warm-up each), so
    that load changes on a shared machine hit every variant alike and their ratios stay fair."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def recording_saved_tensors(saved: list | None):
    """A context that appends every tensor autograd saves to ``saved`` (a no-op for None)."""
    if saved is None:
        return torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)
    return torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t)


def report_rows(
    rows: list[dict], names: Sequence[str], columns: Sequence[str], json_path: str | None
) -> None:
    """Print ``rows`` as a markdown table (header ``names``, cells ``row[column]``, None as "-")
    and, when ``json_path`` is given, write them there as JSON."""
    print("| " + " | ".join(names) + " |")
    print("|" + "---|" * len(names))
    for row in rows:
        print("| " + " | ".join("-" if row[c] is None else str(row[c]) for c in columns) + " |")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(rows, f, indent=2)
