"""The run config: what a run trains, on what, how, and where, resolved and checked once.

``RunConfig`` nests the pieces: the task (its name and every parameter), the position encoding,
the model (``LMConfig``, with one config per mixer), the training (``TrainConfig``: seed and
folder included) and how the run starts (``Start``). ``build_run`` makes it from option values
sorted by section (``options.sort_options`` does that for flags and config files) and
builds the task's data with it, since the model's vocabulary comes from the data;
``model_and_train_configs`` is its model and training half for a vocabulary given (``selrope
plan`` uses it without building any data). A run's ``run.json`` is ``RunConfig.to_dict()``;
it reads back as a ``--config`` file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selrope.models import LMConfig
from selrope.models.config import MIXER_CONFIGS, as_mixer_config, mixer_fields
from selrope.tasks import TaskData, build_task, task_spec
from selrope.training import Start, TrainConfig
from selrope.training.config import RESUMABLE_FIELDS

from .positions import POSITIONS, absolute_position, relative_position_options, rotary_preset

SECTIONS = ("run", "task", "model", "mixer", "train")


@dataclass(frozen=True)
class RunConfig:
    """One training run, resolved.

    Attributes:
        task: the task's name; ``task_params`` all its parameters (defaults filled in).
        position: one of ``POSITIONS`` (the name results are reported under).
        model: the model config (vocabulary from the task, rotary from the position).
        train: the training config (its ``seed`` is the run's seed, ``out_dir`` its folder).
        start: how the run treats its folder (fresh, resume, resume_or_start, overwrite).
        data_fingerprint: what identifies the data (a corpus' tokenizer and files), or None.
    """

    task: str
    task_params: dict[str, Any]
    position: str
    model: LMConfig
    train: TrainConfig
    start: Start = Start.FRESH
    data_fingerprint: dict[str, Any] | None = None

    @property
    def seed(self) -> int:
        return self.train.seed

    @property
    def out_dir(self) -> str:
        return self.train.out_dir

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (``run.json``); readable as a ``--config`` file."""
        record = {
            "task": {"name": self.task, **self.task_params},
            "position": self.position,
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "run": {"seed": self.seed, "out": self.out_dir},
        }
        if self.data_fingerprint is not None:
            record["data_fingerprint"] = self.data_fingerprint
        return record

    def identity(self) -> dict[str, Any]:
        """What a resumed run may not change: all but the resumable training fields."""
        return identity_of(self.to_dict())


def identity_of(record: dict[str, Any]) -> dict[str, Any]:
    """The parts of a ``run.json`` record that identify the run (see ``RunConfig.identity``)."""
    train = {k: v for k, v in record["train"].items() if k not in RESUMABLE_FIELDS}
    kept = {k: v for k, v in record.items() if k not in ("train", "run")}
    return {**kept, "train": train}


def identity_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``"key (saved X, now Y)"`` for every identity entry that differs (dotted keys)."""
    before, after = _flatten(saved), _flatten(now)
    return [
        f"{key} (saved {before.get(key)!r}, now {after.get(key)!r})"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and key != "rotary":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def start_mode(run: dict[str, Any]) -> Start:
    """The ``Start`` of the run options resume / resume_or_start / overwrite."""
    resume, or_start = run.get("resume", False), run.get("resume_or_start", False)
    overwrite = run.get("overwrite", False)
    if (resume or or_start) and overwrite:
        raise ValueError("--resume and --overwrite exclude each other; choose one")
    if or_start:
        return Start.RESUME_OR_START
    return Start.RESUME if resume else Start.OVERWRITE if overwrite else Start.FRESH


def mixer_configs(mixer: Any, options: dict[str, Any]) -> Any:
    """The mixer (a kind, a dict, or one per layer) with the flat mixer ``options`` given to
    every layer whose kind has them.

    Raises:
        ValueError: an option that no chosen mixer has, named as its flag.
    """
    layers = mixer if isinstance(mixer, (list, tuple)) else [mixer]
    configs = [as_mixer_config(layer).to_dict() for layer in layers]
    kinds = sorted({config["kind"] for config in configs})
    for name, value in options.items():
        takers = [config for config in configs if name in mixer_fields(config["kind"])]
        if not takers:
            owners = [kind for kind in MIXER_CONFIGS if name in mixer_fields(kind)]
            raise ValueError(
                f"--{name.replace('_', '-')} does not apply to --mixer {','.join(kinds)} "
                f"(it is an option of {', '.join(owners)})"
            )
        for config in takers:
            config[name] = value
    built = [as_mixer_config(config) for config in configs]
    return built if isinstance(mixer, (list, tuple)) else built[0]


def model_and_train_configs(
    sections: dict[str, dict[str, Any]], vocab_size: int
) -> tuple[LMConfig, TrainConfig]:
    """The model and training configs of option values sorted by section (as ``build_run``
    reads them) for a vocabulary of ``vocab_size``: ``build_run`` without the task's data.

    Raises:
        ValueError: any value a config refuses, naming it.
    """
    run = sections.get("run", {})
    spec = task_spec(run.get("task", "state_tracking"))
    position = _position(run)
    rotary_options = run.get("rotary_options", {})
    if rotary_options and not set(rotary_options) & set(POSITIONS):
        rotary_options = {position: rotary_options}  # train: the overrides of its one rotary
    mixer = run.get("mixer", "gla")
    kinds = [as_mixer_config(m).kind for m in (mixer if isinstance(mixer, list) else [mixer])]
    mixer_options = {**sections.get("mixer", {}), **relative_position_options(position, kinds)}
    model = LMConfig(
        vocab_size=vocab_size,
        mixer=mixer_configs(mixer, mixer_options),
        rotary=rotary_preset(position, spec.selective_recipe, rotary_options),
        absolute_position=absolute_position(position),
        **sections.get("model", {}),
    )
    seed, out = run.get("seed", 0), _out_dir(run)
    train = TrainConfig(**{**sections.get("train", {}), "seed": seed, "out_dir": out})
    return model, train


def _out_dir(run: dict[str, Any]) -> str:
    if not str(run.get("out", "")).strip():
        raise ValueError(f"--out must name a folder; got {run.get('out', '')!r}")
    return run["out"]


def _position(run: dict[str, Any]) -> str:
    return run.get("rotary", "selective")


def build_run(sections: dict[str, dict[str, Any]]) -> tuple[RunConfig, TaskData]:
    """The run of option values sorted by section, and its task's data.

    ``sections["run"]`` holds task (name), rotary (the position name), rotary_options, seed,
    out, resume / resume_or_start / overwrite and, for the model, mixer; ``task``, ``model``,
    ``mixer`` and ``train`` hold the fields of the task builder, ``LMConfig``, the mixer configs
    and ``TrainConfig``.

    Raises:
        ValueError: any value a config refuses, naming it.
    """
    run = sections.get("run", {})
    _out_dir(run)  # refused before any data is built
    spec = task_spec(run.get("task", "state_tracking"))
    task_params = dict(sections.get("task", {}))
    for name in spec.required:
        if task_params.get(name) in (None, ""):
            raise ValueError(f"--{name.replace('_', '-')} is required for --task {spec.name}")
    data = build_task(spec.name, seed=run.get("seed", 0), **task_params)
    model, train = model_and_train_configs(sections, data.vocab_size)
    config = RunConfig(
        task=spec.name,
        task_params={**spec.defaults(), **task_params},
        position=_position(run),
        model=model,
        train=train,
        start=start_mode(run),
        data_fingerprint=spec.fingerprint(data.params),
    )
    return config, data
