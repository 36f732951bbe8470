"""Typed options of ``selrope train`` / ``selrope compare``, generated from the dataclass fields
(``LMConfig``, ``TrainConfig``) and the task builders' parameters.

Each option parses a command-line string or a config-file value into its field's type hint:
booleans take true/false (or 1/0) only, numbers must parse and be finite, ``none`` / ``null``
only where the hint allows None, lists are comma-separated (``64,256``), and named choices are
checked. The meaning shown by ``--help`` is the field's entry in the docstring's ``Attributes:``
or ``Args:`` section. Ranges (positive sizes, divisibility) are the configs' own checks.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from selrope.experiments import ROTARY_NAMES
from selrope.layers.blocks import FORMS
from selrope.layers.gla import DECAYS
from selrope.models import LMConfig
from selrope.models.lm import ABSOLUTE_POSITIONS, MIXERS, ROTARY_SOURCES
from selrope.tasks import TASKS
from selrope.tasks.language_modeling import PACKINGS
from selrope.tasks.mad import PARAMETER_MEANINGS as MAD_MEANINGS
from selrope.training import TrainConfig
from selrope.training.config import PRECISIONS

CHOICES: dict[str, tuple[str, ...]] = {
    "task": tuple(sorted(TASKS)),
    "mixer": MIXERS,
    "mixers": MIXERS,
    "rotary": ROTARY_NAMES,
    "rotaries": ROTARY_NAMES,
    "rotary_source": ROTARY_SOURCES,
    "absolute_position": ABSOLUTE_POSITIONS,
    "decay": DECAYS,
    "form": FORMS,
    "precision": PRECISIONS,
    "packing": PACKINGS,
}
# Fields set by the run itself, not by an option.
_NOT_OPTIONS = {"vocab_size", "mixer", "rotary", "seed", "out_dir"}
_INT = re.compile(r"^[+-]?\d+$")


class _MismatchError(Exception):
    """A value that does not fit a type hint."""


@dataclass(frozen=True)
class Option:
    """One flag / config key.

    Attributes:
        name: the config key (snake_case); the flag is ``--name-with-dashes``.
        hint: the type hint the value is parsed into (``int``, ``float | None``, ``list[int]``).
        default: shown by --help.
        meaning: one line for --help.
        section: "run", "model" (LMConfig), "train" (TrainConfig) or "task".
    """

    name: str
    hint: Any
    default: Any
    meaning: str
    section: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        """The accepted values in words, e.g. "an integer or a list of integers"."""
        return _describe(self.hint, CHOICES.get(self.name, ()))

    def parse(self, value: Any, where: str) -> Any:
        """``value`` (a command-line string or a config-file value) as the option's type.

        Raises:
            ValueError: ``"{where} must be {describe()}; got {value!r}"``.
        """
        try:
            parsed = _parse(self.hint, value)
        except _MismatchError:
            raise ValueError(f"{where} must be {self.describe()}; got {value!r}") from None
        choices = CHOICES.get(self.name)
        if choices:
            for item in parsed if isinstance(parsed, list) else [parsed]:
                if item not in choices:
                    raise ValueError(f"{where} must be one of {', '.join(choices)}; got {item!r}")
        return parsed


def _union_members(hint: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return None


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))


def _parse(hint: Any, value: Any) -> Any:
    members = _union_members(hint)
    if members is not None:
        if type(None) in members and _is_none(value):
            return None
        listy = isinstance(value, list) or (isinstance(value, str) and "," in value)
        ordered = sorted(
            (m for m in members if m is not type(None)),
            key=lambda m: (typing.get_origin(m) in (list, tuple)) != listy,
        )
        for member in ordered:
            try:
                return _parse(member, value)
            except _MismatchError:
                continue
        raise _MismatchError
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        items = value
        if isinstance(value, str):
            text = value.strip()
            items = json.loads(text) if text.startswith("[") and _json_ok(text) else text.split(",")
        if not isinstance(items, (list, tuple)) or not items:
            raise _MismatchError
        args = typing.get_args(hint)
        if origin is tuple:
            if len(items) != len(args):
                raise _MismatchError
            return tuple(_parse(arg, item) for arg, item in zip(args, items, strict=True))
        return [_parse(args[0], item) for item in items]
    if hint is bool:
        return _parse_bool(value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INT.match(value.strip()):
            return int(value)
        raise _MismatchError
    if hint is float:
        return _parse_float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _MismatchError
        return value.strip()
    if origin is dict or hint is dict:
        parsed = json.loads(value) if isinstance(value, str) and _json_ok(value) else value
        if not isinstance(parsed, dict):
            raise _MismatchError
        return parsed
    raise TypeError(f"no parser for the type hint {hint!r}")


def _json_ok(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = value.strip().lower() if isinstance(value, str) else None
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise _MismatchError


def _parse_float(value: Any) -> float:
    if isinstance(value, bool):
        raise _MismatchError
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise _MismatchError from None
    else:
        raise _MismatchError
    if not math.isfinite(number):
        raise _MismatchError
    return number


def _describe(hint: Any, choices: tuple[str, ...] = ()) -> str:
    members = _union_members(hint)
    if members is not None:
        return " or ".join(_describe(m, choices) for m in members)
    if hint is type(None):
        return "none"
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        return f"{len(args)} comma-separated {_plural(args[0], choices)}"
    if origin is list:
        return f"a comma-separated list of {_plural(typing.get_args(hint)[0], choices)}"
    if choices:
        return f"one of {'|'.join(choices)}"
    return {
        bool: "true or false (or 1/0)",
        int: "an integer",
        float: "a finite float",
        str: "a string",
    }.get(hint, "a JSON object")


def _plural(hint: Any, choices: tuple[str, ...]) -> str:
    if choices:
        return f"({'|'.join(choices)})"
    return {int: "integers", float: "finite floats", str: "strings"}.get(hint, "values")


def _meanings(obj: Any) -> dict[str, str]:
    """Field name -> first sentence of its entry in the docstring's Attributes:/Args: section."""
    lines = inspect.getdoc(obj).splitlines()
    meanings: dict[str, str] = {}
    names: list[str] = []
    inside = False
    for line in lines:
        if line.strip() in ("Attributes:", "Args:"):
            inside = True
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):
            inside = False
            continue
        entry = re.match(r"^ {4}([\w, ]+):\s*(.*)$", line)
        if entry:
            names = [name.strip() for name in entry.group(1).split(",")]
            for name in names:
                meanings[name] = entry.group(2)
        elif line.startswith("      ") and names:
            for name in names:
                meanings[name] += " " + line.strip()
    # The first sentence: up to the first full stop, not counting "e.g." and "i.e.".
    first = re.compile(r"(?<=\.)(?<!e\.g\.)(?<!i\.e\.)\s")
    return {name: first.split(text, maxsplit=1)[0] for name, text in meanings.items()}


def _dataclass_options(cls: type, section: str) -> list[Option]:
    hints = typing.get_type_hints(cls)
    meanings = _meanings(cls)
    options = []
    for field in dataclasses.fields(cls):
        if field.name in _NOT_OPTIONS:
            continue
        default = field.default
        if default is dataclasses.MISSING:
            default = field.default_factory()  # type: ignore[misc]
        meaning = meanings.get(field.name, "")
        options.append(Option(field.name, hints[field.name], default, meaning, section))
    return options


def task_options(task: str) -> list[Option]:
    """The options of one task, from its builder's signature, type hints and docstring."""
    builder = TASKS[task]
    hints = typing.get_type_hints(builder)
    meanings = {**(MAD_MEANINGS if task.startswith("mad_") else {}), **_meanings(builder)}
    return [
        Option(name, hints[name], parameter.default, meanings.get(name, ""), "task")
        for name, parameter in inspect.signature(builder).parameters.items()
        if name != "seed"
    ]


def run_options(command: str) -> list[Option]:
    """The options of the run itself (what is trained where, and how to start)."""
    common = [
        Option("task", str, "state_tracking", "the task; its own options are listed below", "run"),
        Option("out", str, "runs/train", "the run folder (compare: the grid folder)", "run"),
        Option(
            "rotary_options",
            dict[str, Any],
            {},
            'JSON overrides per rotary name, e.g. {"selective": {"use_bias": false}} (train '
            "also accepts the inner dict alone)",
            "run",
        ),
        Option(
            "resume", bool, False, "continue the run(s) in --out from the last checkpoint", "run"
        ),
        Option(
            "resume_or_start",
            bool,
            False,
            "like --resume, but start a fresh run where there is no checkpoint",
            "run",
        ),
        Option(
            "overwrite",
            bool,
            False,
            "start fresh in a used folder, removing only the files selrope wrote there",
            "run",
        ),
    ]
    if command == "compare":
        return common + [
            Option("mixers", list[str], ["gla"], "the mixers of the grid", "run"),
            Option(
                "rotaries",
                list[str],
                ["nope", "rope", "selective"],
                "the position encodings",
                "run",
            ),
            Option("seeds", list[int], [0], "the seeds of the grid", "run"),
            Option("workers", int | None, None, "parallel processes; none: one per core", "run"),
        ]
    return common + [
        Option(
            "mixer", str | list[str], "gla", "the mixer of every layer, or one per layer", "run"
        ),
        Option("rotary", str, "selective", "the position encoding", "run"),
        Option("seed", int, 0, "seeds the data, the initialisation and the batch order", "run"),
    ]


def all_options(command: str, task: str) -> dict[str, Option]:
    """Every option of ``selrope <command>`` for ``task``, by config key.

    Raises:
        ValueError: an unknown task.
    """
    if task not in TASKS:
        raise ValueError(f"--task must be one of {', '.join(sorted(TASKS))}; got {task!r}")
    options: dict[str, Option] = {}
    for option in [
        *run_options(command),
        *task_options(task),
        *_dataclass_options(LMConfig, "model"),
        *_dataclass_options(TrainConfig, "train"),
    ]:
        options.setdefault(option.name, option)  # a task parameter shadows a model field
    return options
