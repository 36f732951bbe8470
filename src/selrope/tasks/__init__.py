"""Tasks: deterministic synthetic ones (state tracking on groups, MQAR, copying, MAD) and
language modelling on a prepared corpus ("lm").

`build_task(name, seed, **params)` returns a `TaskData` (see `selrope.tasks.base`); the builders
below list each task's parameters and defaults, and docs/tasks.md describes the rules.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from selrope.tasks.base import IGNORE_INDEX, TaskData
from selrope.tasks.copying import build_copying, copying_test, copying_train
from selrope.tasks.groups import PermutationGroup, get_group, prefix_products
from selrope.tasks.language_modeling import CorpusWindows, build_language_modeling
from selrope.tasks.mad import (
    build_compression,
    build_fuzzy_recall,
    build_in_context_recall,
    build_memorization,
    build_noisy_recall,
    build_selective_copying,
    compression,
    fuzzy_recall,
    in_context_recall,
    memorization,
    selective_copying,
)
from selrope.tasks.metrics import accuracy_by_prefix_length, masked_accuracy
from selrope.tasks.mqar import build_mqar, mqar
from selrope.tasks.state_tracking import build_state_tracking, state_tracking

TASKS: dict[str, Callable[..., TaskData]] = {
    "state_tracking": build_state_tracking,
    "mqar": build_mqar,
    "copying": build_copying,
    "mad_in_context_recall": build_in_context_recall,
    "mad_noisy_recall": build_noisy_recall,
    "mad_fuzzy_recall": build_fuzzy_recall,
    "mad_selective_copying": build_selective_copying,
    "mad_memorization": build_memorization,
    "mad_compression": build_compression,
    "lm": build_language_modeling,
}


def task_parameters(name: str) -> dict[str, Any]:
    """The parameters a task accepts and their defaults."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {sorted(TASKS)}")
    signature = inspect.signature(TASKS[name])
    return {p.name: p.default for p in signature.parameters.values() if p.name != "seed"}


def build_task(name: str, seed: int = 0, **params: Any) -> TaskData:
    """Build a task's train and test sets.

    Args:
        name: one of `TASKS` ("state_tracking", "mqar", "copying", "mad_<task>").
        seed: non-negative int; the same seed and params give identical tensors.
        **params: the task's parameters (see `task_parameters(name)`).

    Raises:
        ValueError: unknown task or parameter names (listing the allowed ones) or bad values.
    """
    allowed = task_parameters(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown parameters {unknown} for task {name!r}; allowed: {sorted(allowed)}"
        )
    return TASKS[name](seed, **params)


__all__ = [
    "IGNORE_INDEX",
    "TASKS",
    "CorpusWindows",
    "PermutationGroup",
    "TaskData",
    "accuracy_by_prefix_length",
    "build_task",
    "compression",
    "copying_test",
    "copying_train",
    "fuzzy_recall",
    "get_group",
    "in_context_recall",
    "masked_accuracy",
    "memorization",
    "mqar",
    "prefix_products",
    "selective_copying",
    "state_tracking",
    "task_parameters",
]
