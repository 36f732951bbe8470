"""``selrope train`` and ``selrope compare``: options -> run sections -> the runner.

Options are every field of the task, the model (``LMConfig``), the mixers and ``TrainConfig``
(``selrope.experiments.options``), written with dashes (``--d-model 64 --lr 3e-3``).
``--config FILE`` (repeatable; later files win, flags win over files) reads the same keys from
YAML/JSON, flat or nested as a run's ``run.json``.
"""

from __future__ import annotations

import argparse
from typing import Any

from selrope.cli.parser import CommandParser
from selrope.experiments import (
    all_options,
    check_grid,
    first_grid_cell,
    format_table,
    grid_runs,
    read_config_files,
    run_grid,
    sort_options,
    write_results,
)
from selrope.experiments.options import Option
from selrope.tasks import task_spec
from selrope.training import is_main_process

DESCRIPTIONS = {
    "train": """\
train one model on a task (synthetic or a prepared corpus) into a run folder

examples:
  selrope train --task state_tracking --group Z2 --train-len 64 --test-lens 64,256 --out runs/p
  selrope train --task lm --data runs/corpus --seq-len 256 --mixer attention --out runs/lm
  selrope train --config runs/p/run.json --steps 4000 --resume     (continue a run for longer)""",
    "compare": """\
train a grid of mixers x position encodings x seeds (one run folder each) and tabulate it

example:
  selrope compare --task mqar --seq-len 128 --num-kv-pairs 8 --mixers gla,attention \\
      --rotaries nope,rope,selective --seeds 0,1,2 --out runs/mqar""",
}
TITLES = {
    "run": "run",
    "grid": "grid",
    "task": "task {task}",
    "model": "model (LMConfig)",
    "mixer": "mixer (each applies to the mixers that have it)",
    "train": "training (TrainConfig)",
}


def build_parser(command: str, task: str, options: dict[str, Option]) -> argparse.ArgumentParser:
    """The parser of ``selrope <command>`` for ``task``: every option as a string, parsed later
    by its Option (so flags and config files share one parser of values)."""
    parser = CommandParser(prog=f"selrope {command}", description=DESCRIPTIONS[command])
    parser.add_argument(
        "--config", metavar="FILE", action="append", help="YAML/JSON file(s) of the same keys"
    )
    groups = {}
    for option in options.values():
        if option.section not in groups:
            title = TITLES[option.section].format(task=task)
            groups[option.section] = parser.add_argument_group(title)
        default = "none" if option.default is None else option.default
        default = "required" if option.required else f"default {default}"
        extra = {"nargs": "?", "const": "true"} if option.hint is bool else {}
        groups[option.section].add_argument(
            option.flag,
            dest=option.name,
            default=argparse.SUPPRESS,
            metavar=option.name.upper(),
            help=f"{option.help} [{option.describe()}; {default}]".replace("%", "%%"),
            **extra,
        )
    return parser


def parse_options(command: str, argv: list[str]) -> dict[str, Any]:
    """The option values of ``argv`` and its ``--config`` files, each parsed by its Option.

    Two passes: the first finds --task and --config, the second knows that task's options.
    """
    first = CommandParser(prog=f"selrope {command}", add_help=False)
    first.add_argument("--task")
    first.add_argument("--config", action="append")
    known, _ = first.parse_known_args(argv)
    from_files = read_config_files(known.config or [])
    task = known.task if known.task is not None else from_files.get("task", "state_tracking")
    task_spec(task)  # an unknown task is named before its options are needed
    if command != "compare":
        from_files = first_grid_cell(from_files, task)
    options = all_options(command, task)
    values: dict[str, Any] = {"task": task}
    for key, value in from_files.items():
        if key not in options:
            raise ValueError(
                f"--config: unknown option {key!r} for selrope {command} --task {task}"
            )
        values[key] = options[key].parse(value, f"--config {key}")
    from_cli = vars(build_parser(command, task, options).parse_args(argv))
    from_cli.pop("config", None)
    for key, value in from_cli.items():
        values[key] = options[key].parse(value, options[key].flag)
    values["task"] = options["task"].parse(values["task"], "--task")
    return values


def with_flag_names(error: ValueError, task: str) -> ValueError:
    """A config's check ("lr must be ...") named by its flag ("--lr must be ...")."""
    message = str(error)
    first = message.split(" ", 1)[0]
    if first in all_options("compare", task) | all_options("train", task):
        message = "--" + first.replace("_", "-") + message[len(first) :]
    return ValueError(message)


def report(rows: list[dict[str, Any]], out_dir: str, task: str) -> None:
    """Rank 0 writes results.json / .md and plots, and prints the table."""
    if not is_main_process():
        return
    metric = task_spec(task).report_metric
    write_results(rows, out_dir, metric)
    print(format_table(rows, metric))
    print(f"results written to {out_dir}/results.json, results.md and *.png")


def run(command: str, argv: list[str]) -> None:
    """``selrope train`` (one run) or ``selrope compare`` (a grid)."""
    values = parse_options(command, argv)
    task = values["task"]
    sections = sort_options(values, command)
    grid = sections.pop("grid")
    sections["run"].setdefault("out", "runs/train")
    out = sections["run"]["out"]
    try:
        if command == "train":
            rows = run_grid([sections])
        else:
            workers = grid.get("workers")
            if workers is not None and workers < 1:
                raise ValueError(f"--workers must be a positive integer or none; got {workers}")
            runs = grid_runs(
                sections,
                grid.get("mixers", ["gla"]),
                grid.get("rotaries", ["nope", "rope", "selective"]),
                grid.get("seeds", [0]),
                out,
            )
            check_grid(out, runs)  # every run checked before any starts
            metric = task_spec(task).headline_metric
            print(f"running {len(runs)} runs ({metric}) into {out}")
            rows = run_grid(runs, workers)
    except ValueError as error:
        raise with_flag_names(error, task) from None
    report(rows, out, task)
