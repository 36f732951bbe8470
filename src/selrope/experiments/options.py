"""Every option of ``selrope train`` / ``selrope compare``, as plain data, and their sorting
into the sections of a run (``experiments.config.build_run``).

The options come from the configs' own field metadata (``selrope.common.setting``: type hint,
default and one help line): ``LMConfig`` (model), the mixer configs (mixer: each option
applies to the mixers that have it), ``TrainConfig`` (train), the task's builder and its
registered help lines (task), and the run's own options below. Nothing is parsed out of
docstrings. Config files (``--config``, several merge in order) hold the same keys, flat as the
flags or nested by section as a run's ``run.json``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from selrope.common import field_help
from selrope.layers.blocks import FORMS
from selrope.layers.gla import DECAYS
from selrope.models import MIXER_CONFIGS, LMConfig
from selrope.models.config import MIXERS, MLP_WIDTH_RULES, ROTARY_SOURCES
from selrope.tasks import TASK_SPECS, task_spec
from selrope.tasks.language_modeling import PACKINGS
from selrope.training import TrainConfig
from selrope.training.callbacks import LOGGERS
from selrope.training.config import PRECISIONS

from .positions import POSITIONS
from .values import HintMismatchError, describe_hint, parse_value

CHOICES: dict[str, tuple[str, ...]] = {
    "task": tuple(sorted(TASK_SPECS)),
    "mixer": MIXERS,
    "mixers": MIXERS,
    "rotary": POSITIONS,
    "rotaries": POSITIONS,
    "rotary_source": ROTARY_SOURCES,
    "mlp_width_rule": MLP_WIDTH_RULES,
    "decay": DECAYS,
    "form": FORMS,
    "precision": PRECISIONS,
    "packing": PACKINGS,
    "log": LOGGERS,
}
# Fields the run sets itself (from the task, the position and the run options).
_SET_BY_RUN = {"vocab_size", "mixer", "rotary", "absolute_position", "seed", "out_dir"}


@dataclass(frozen=True)
class Option:
    """One flag / config key.

    Attributes:
        name: the config key (snake_case); the flag is ``--name-with-dashes``.
        hint: the type hint the value is parsed into (``int``, ``float | None``, ``list[int]``).
        default: shown by --help.
        help: one line for --help.
        section: "run", "task", "model", "mixer" or "train".
        required: --help says so; the run refuses a missing value.
    """

    name: str
    hint: Any
    default: Any
    help: str
    section: str
    required: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        """The accepted values in words, e.g. "an integer or a list of integers"."""
        return describe_hint(self.hint, CHOICES.get(self.name, ()))

    def parse(self, value: Any, where: str) -> Any:
        """``value`` (a command-line string or a config-file value) as the option's type.

        Raises:
            ValueError: ``"{where} must be {describe()}; got {value!r}"``.
        """
        if self.name == "mixer" and _is_mixer_data(value):
            return value  # a run.json's mixer configs; checked by the model config
        try:
            parsed = parse_value(self.hint, value)
        except HintMismatchError:
            raise ValueError(f"{where} must be {self.describe()}; got {value!r}") from None
        choices = CHOICES.get(self.name)
        for item in (parsed if isinstance(parsed, (list, tuple)) else [parsed]) if choices else []:
            if item not in choices:
                raise ValueError(f"{where} must be one of {', '.join(choices)}; got {item!r}")
        return parsed


def _is_mixer_data(value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    return any(isinstance(item, dict) for item in items)


def _field_options(cls: type, section: str) -> list[Option]:
    hints = typing.get_type_hints(cls)
    options = []
    for field in dataclasses.fields(cls):
        if field.name in _SET_BY_RUN:
            continue
        default = field.default
        if default is dataclasses.MISSING:
            default = field.default_factory()  # type: ignore[misc]
        options.append(Option(field.name, hints[field.name], default, field_help(field), section))
    return options


def mixer_options() -> list[Option]:
    """The options of every mixer kind, each once (kinds share expand_k, form, ...)."""
    options: dict[str, Option] = {}
    for cls in MIXER_CONFIGS.values():
        for option in _field_options(cls, "mixer"):
            options.setdefault(option.name, option)
    return list(options.values())


def task_options(task: str) -> list[Option]:
    """The options of one task: its builder's keyword arguments and registered help lines."""
    spec = task_spec(task)
    hints = typing.get_type_hints(spec.build)
    return [
        Option(name, hints[name], default, spec.help[name], "task", name in spec.required)
        for name, default in spec.defaults().items()
    ]


_RUN_OPTIONS = (
    Option("task", str, "state_tracking", "the task; its own options are listed below", "run"),
    Option("out", str, "runs/train", "the run folder (compare: the grid folder)", "run"),
    Option(
        "rotary_options",
        dict[str, Any],
        {},
        'JSON overrides per rotary name, e.g. {"selective": {"use_bias": false}} (train also '
        "accepts the inner dict alone)",
        "run",
    ),
    Option("resume", bool, False, "continue the run(s) in --out from the last checkpoint", "run"),
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
)
_TRAIN_ONLY = (
    Option("mixer", str | list[str], "gla", "the mixer of every layer, or one per layer", "run"),
    Option("rotary", str, "selective", "the position encoding", "run"),
    Option("seed", int, 0, "seeds the data, the initialisation and the batch order", "run"),
)
_COMPARE_ONLY = (
    Option("mixers", list[str], ["gla"], "the mixers of the grid", "grid"),
    Option("rotaries", list[str], ["nope", "rope", "selective"], "the position encodings", "grid"),
    Option("seeds", list[int], [0], "the seeds of the grid", "grid"),
    Option("workers", int | None, None, "parallel processes; none: one per core", "grid"),
)


GRID_KEYS = tuple(option.name for option in _COMPARE_ONLY)


def first_grid_cell(values: dict[str, Any], task: str) -> dict[str, Any]:
    """A sweep file's values as one run's (train, plan): the grid's first mixer, position and
    seed where the file names no mixer, position or seed of its own; no worker count."""
    cell = {key: value for key, value in values.items() if key not in GRID_KEYS}
    grid = all_options("compare", task)
    for grid_key, run_key in (("mixers", "mixer"), ("rotaries", "rotary"), ("seeds", "seed")):
        if grid_key in values:
            cells = grid[grid_key].parse(values[grid_key], f"--config {grid_key}")
            if cells:
                cell.setdefault(run_key, cells[0])
    return cell


def all_options(command: str, task: str) -> dict[str, Option]:
    """Every option of ``selrope <command>`` ("train" or "compare") for ``task``, by key.

    A task parameter shadows a model or mixer field of the same name.
    """
    own = _COMPARE_ONLY if command == "compare" else _TRAIN_ONLY
    options: dict[str, Option] = {}
    for option in [
        *_RUN_OPTIONS,
        *own,
        *task_options(task),
        *_field_options(LMConfig, "model"),
        *mixer_options(),
        *_field_options(TrainConfig, "train"),
    ]:
        options.setdefault(option.name, option)
    return options


def sort_options(values: dict[str, Any], command: str = "train") -> dict[str, dict[str, Any]]:
    """Parsed option values (by key) sorted into the sections ``build_run`` reads; the grid
    options of compare go to "grid"."""
    options = all_options(command, values.get("task", "state_tracking"))
    sections: dict[str, dict[str, Any]] = {"run": {}, "grid": {}}
    for key, value in values.items():
        sections.setdefault(options[key].section, {})[key] = value
    return sections


def flatten_config(values: dict[str, Any], where: str) -> dict[str, Any]:
    """A config file's mapping as flat option keys: flat keys as they are, the sections of a
    run.json (task: {name, ...}, position, model: {..., mixer, rotary}, train, run), and a
    sweep file's grid: {mixers, rotaries, seeds, workers}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        key = key.replace("-", "_")
        if key == "task" and isinstance(value, dict):
            params = dict(value)
            if "name" in params:  # a later file may change a task's parameters only
                flat["task"] = params.pop("name")
            flat.update(params)
        elif key in ("model", "train", "run") and isinstance(value, dict):
            flat.update(_section_keys(key, value))
        elif key == "grid" and isinstance(value, dict):
            flat.update({name.replace("-", "_"): cells for name, cells in value.items()})
        elif key == "position":
            flat["rotary"] = value
        elif key != "data_fingerprint":
            flat[key] = value
    if isinstance(flat.get("rotary_config"), dict):
        flat["rotary_options"] = {flat.get("rotary", "selective"): flat.pop("rotary_config")}
    return flat


def _section_keys(section: str, values: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        key = key.replace("-", "_")
        if section == "model" and key == "rotary":
            flat["rotary_config"] = value  # the resolved config of the run's position
        elif section == "model" and key == "mixer" and isinstance(value, dict):
            options = dict(value)
            flat["mixer"] = options.pop("kind", "gla")
            flat.update(options)
        elif section == "train" and key in ("seed", "out_dir"):
            flat["seed" if key == "seed" else "out"] = value
        elif section == "model" and key in ("vocab_size", "absolute_position"):
            continue  # set by the task and the position
        else:
            flat[key] = value
    return flat


def read_config_files(paths: list[str]) -> dict[str, Any]:
    """The option values of YAML/JSON files, merged in order (a later file wins)."""
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            values = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as error:
            raise ValueError(f"--config {path}: not valid YAML/JSON ({error.problem})") from None
        except IsADirectoryError:
            raise ValueError(f"--config {path}: is a folder, not a file") from None
        except FileNotFoundError:
            raise ValueError(f"--config {path}: no such file") from None
        if not isinstance(values, dict) or not all(isinstance(key, str) for key in values):
            raise ValueError(f"--config {path}: expected a mapping of option names to values")
        merged.update(flatten_config(values, path))
    return merged
