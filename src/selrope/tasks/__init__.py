"""Tasks: deterministic synthetic ones (state tracking on groups, MQAR, copying, MAD) and
language modelling on a prepared corpus ("lm").

`build_task(name, seed, **params)` returns a `TaskData` (see `selrope.tasks.base`); the builders
below list each task's parameters and defaults, and docs/tasks.md describes the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selrope.tasks.base import IGNORE_INDEX, TaskData
from selrope.tasks.copying import copying_test, copying_train
from selrope.tasks.groups import PermutationGroup, get_group, prefix_products
from selrope.tasks.language_modeling import CorpusWindows
from selrope.tasks.mad import (
    compression,
    fuzzy_recall,
    in_context_recall,
    memorization,
    selective_copying,
)
from selrope.tasks.metrics import accuracy_by_prefix_length, masked_accuracy
from selrope.tasks.mqar import mqar
from selrope.tasks.registry import TASK_SPECS, TaskSpec, task_spec
from selrope.tasks.state_tracking import state_tracking

# name -> builder, for callers that only build (the registry has the rest: registry.py)
TASKS: dict[str, Callable[..., TaskData]] = {name: spec.build for name, spec in TASK_SPECS.items()}
"""Task name -> builder, for callers that only build (the registry has the rest)."""


def task_parameters(name: str) -> dict[str, Any]:
    """The parameters a task accepts and their defaults."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {sorted(TASKS)}")
    return task_spec(name).defaults()


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
    "TASK_SPECS",
    "TaskSpec",
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
    "task_spec",
]
