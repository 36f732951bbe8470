"""The ``selrope`` command: parses arguments into RunSpecs and hands them to the runner.

    selrope train   --task state_tracking --group Z2 --mixer gla --rotary selective --out DIR
    selrope compare --task mqar --mixers gla,gdn,attention --rotaries nope,rope,selective \\
                    --seeds 0,1,2 --out DIR
    selrope train   --task lm --data CORPUS --seq-len 256 --mixer attention --rotary rope --out DIR
    selrope eval    --checkpoint RUN[,RUN...] --data CORPUS --lengths 256,512,1024 --out DIR
    selrope demo    --out DIR
    selrope theory  (softmax as random rotations; rotation leakage and the decay window)
    selrope data prepare --input PATH [PATH ...] | --default --tokenizer byte|bpe:VOCAB --out DIR

Options come from the fields of ``LMConfig`` (model), ``TrainConfig`` (optimiser and loop) and
the chosen task's parameters (``selrope.tasks.task_parameters``), written with dashes
(``--d-model 64 --lr 3e-3 --train-len 64 --test-lens 64,256``). ``--config FILE`` reads the same
keys (snake_case) from a YAML or JSON file; flags on the command line win.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from selrope.experiments import ROTARY_NAMES, RunSpec, accuracy_metric, grid_specs, run_grid
from selrope.models import LMConfig
from selrope.tasks import TASKS, task_parameters
from selrope.training import TrainConfig, format_table, is_main_process, write_results

MODEL_OPTIONS = [
    f.name for f in dataclasses.fields(LMConfig) if f.name not in ("vocab_size", "mixer", "rotary")
]
TRAIN_OPTIONS = [
    f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("seed", "out_dir")
]


def parse_value(text: str) -> Any:
    """A command-line value: JSON if it parses ("3e-3", "[64, 256]", "null" for None, "true"),
    a comma-separated list ("64,256" -> [64, 256]), else the string itself ("none" stays a
    string: it is a valid choice of several options, e.g. ``--decay none``)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        return [parse_value(part) for part in text.split(",") if part.strip()]
    return text


def parse_list(text: str) -> list[Any]:
    """ "a,b,c" -> ["a", "b", "c"] (numbers become numbers)."""
    value = parse_value(text)
    return value if isinstance(value, list) else [value]


def add_options(parser: argparse.ArgumentParser, title: str, names: list[str]) -> None:
    group = parser.add_argument_group(title)
    for name in names:
        group.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=parse_value,
            default=argparse.SUPPRESS,
            metavar="VALUE",
        )


def base_parser(prog: str, grid: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--config", type=Path, help="YAML/JSON file of the same keys")
    parser.add_argument("--task", choices=sorted(TASKS), default=argparse.SUPPRESS)
    parser.add_argument("--out", default=argparse.SUPPRESS, help="output directory")
    parser.add_argument(
        "--rotary-options",
        dest="rotary_options",
        type=json.loads,
        default=argparse.SUPPRESS,
        help='JSON overrides per rotary name, e.g. \'{"selective": {"use_bias": false}}\' '
        "(train also accepts the inner dict alone)",
    )
    if grid:
        parser.add_argument("--mixers", type=parse_list, default=argparse.SUPPRESS)
        parser.add_argument("--rotaries", type=parse_list, default=argparse.SUPPRESS)
        parser.add_argument("--seeds", type=parse_list, default=argparse.SUPPRESS)
        parser.add_argument(
            "--workers",
            type=int,
            default=argparse.SUPPRESS,
            help="parallel processes (default: one per core)",
        )
    else:
        parser.add_argument("--mixer", default=argparse.SUPPRESS)
        parser.add_argument("--rotary", choices=ROTARY_NAMES, default=argparse.SUPPRESS)
        parser.add_argument("--seed", type=int, default=argparse.SUPPRESS)
        parser.add_argument("--resume", action="store_true", default=argparse.SUPPRESS)
    return parser


def read_config_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    values = yaml.safe_load(path.read_text())
    if not isinstance(values, dict):
        raise SystemExit(f"--config {path}: expected a mapping of option names to values")
    return values


def parse_options(command: str, argv: list[str]) -> dict[str, Any]:
    """Two passes: the first finds --task / --config, the second knows that task's options."""
    grid = command == "compare"
    first, _ = base_parser(f"selrope {command}", grid).parse_known_args(argv)
    from_file = read_config_file(first.config)
    task = getattr(first, "task", from_file.get("task", "state_tracking"))
    parser = base_parser(f"selrope {command}", grid)
    add_options(parser, "model (LMConfig)", MODEL_OPTIONS)
    add_options(parser, "training (TrainConfig)", TRAIN_OPTIONS)
    add_options(parser, f"task {task}", list(task_parameters(task)))
    from_cli = vars(parser.parse_args(argv))
    from_cli.pop("config", None)
    return {"task": task, **from_file, **from_cli}


def spec_from_options(options: dict[str, Any]) -> RunSpec:
    """Sort flat options into a RunSpec; unknown keys raise SystemExit naming them."""
    options = dict(options)
    task = options.pop("task")
    task_keys = set(task_parameters(task))
    rotary = options.pop("rotary", "selective")
    rotary_options = options.pop("rotary_options", {})
    if rotary_options and not set(rotary_options) & set(ROTARY_NAMES):
        rotary_options = {rotary: rotary_options}  # train: the overrides of its one rotary
    spec = RunSpec(
        task=task,
        mixer=options.pop("mixer", "gla"),
        rotary=rotary,
        seed=int(options.pop("seed", 0)),
        rotary_options=rotary_options,
        out_dir=str(options.pop("out", "runs/train")),
        resume=bool(options.pop("resume", False)),
    )
    for key in ("mixers", "rotaries", "seeds", "workers"):
        options.pop(key, None)
    for key, value in options.items():
        if key in task_keys:
            spec.task_params[key] = value
        elif key in MODEL_OPTIONS:
            spec.model[key] = value
        elif key in TRAIN_OPTIONS:
            spec.train[key] = value
        else:
            raise SystemExit(f"unknown option {key!r} for task {task!r}")
    return spec


def report(rows: list[dict[str, Any]], out_dir: str, task: str) -> None:
    if not is_main_process():  # under torchrun every rank returns the rows; rank 0 reports
        return
    metric = "perplexity" if task == "lm" else "accuracy"
    write_results(rows, out_dir, metric)
    print(format_table(rows, metric))
    print(f"results written to {out_dir}/results.json, results.md and *.png")


def command_train(argv: list[str]) -> None:
    spec = spec_from_options(parse_options("train", argv))
    rows = run_grid([spec])
    report(rows, spec.out_dir, spec.task)


def command_compare(argv: list[str]) -> None:
    options = parse_options("compare", argv)
    mixers = options.get("mixers", ["gla"])
    rotaries = options.get("rotaries", ["nope", "rope", "selective"])
    seeds = [int(s) for s in options.get("seeds", [0])]
    workers = options.get("workers")
    base = spec_from_options(options)
    specs = grid_specs(base, mixers, rotaries, seeds, base.out_dir)
    print(f"running {len(specs)} runs ({accuracy_metric(base.task)}) into {base.out_dir}")
    rows = run_grid(specs, workers)
    report(rows, base.out_dir, base.task)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "train": command_train,
        "compare": command_compare,
        "demo": command_demo,
        "theory": command_theory,
        "data": command_data,
        "eval": command_eval,
    }
    if not argv or argv[0] not in commands:
        print(__doc__)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    try:
        commands[argv[0]](argv[1:])
    except (ValueError, FileNotFoundError) as error:
        # The library's checks name the argument and what was expected: a user error, one line.
        print(f"selrope: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def command_demo(argv: list[str]) -> None:
    from selrope.demo import run_demo

    parser = argparse.ArgumentParser(prog="selrope demo")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    run_demo(args.out, args.workers)


def command_eval(argv: list[str]) -> None:
    from selrope.evaluation.command import run_eval_command

    run_eval_command(argv)


def command_theory(argv: list[str]) -> None:
    from selrope.analysis.theory import theory_report

    parser = argparse.ArgumentParser(prog="selrope theory")
    parser.add_argument("--seed", type=int, default=0)
    print(theory_report(parser.parse_args(argv).seed))


def command_data(argv: list[str]) -> None:
    """``selrope data prepare``: tokenise a corpus into train/val token streams (selrope.data)."""
    from selrope.data import prepare_corpus

    parser = argparse.ArgumentParser(prog="selrope data")
    actions = parser.add_subparsers(dest="action", required=True)
    prepare = actions.add_parser("prepare", help="tokenise text into DIR/{train,val}.bin")
    source = prepare.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="PATH", help="text/.jsonl files, folders")
    source.add_argument("--default", action="store_true", help="the CPython stdlib's .py files")
    prepare.add_argument("--tokenizer", required=True, help="byte | bpe:VOCAB")
    prepare.add_argument("--out", required=True, metavar="DIR")
    held_out = prepare.add_mutually_exclusive_group()
    held_out.add_argument("--val-fraction", type=float, default=argparse.SUPPRESS, metavar="F")
    held_out.add_argument(
        "--val-documents",
        type=lambda text: [pattern for pattern in text.split(",") if pattern],
        default=argparse.SUPPRESS,
        metavar="GLOB[,GLOB]",
        help="fnmatch patterns on document names",
    )
    prepare.add_argument("--seed", type=int, default=argparse.SUPPRESS)
    options = vars(parser.parse_args(argv))
    options.pop("action")
    try:
        manifest = prepare_corpus(
            options.pop("input"), options.pop("tokenizer"), options.pop("out"), **options
        )
    except ValueError as error:
        print(f"selrope: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    for split, entry in manifest["splits"].items():
        print(f"{split}: {entry['tokens']:,} tokens, {entry['documents']:,} documents")
    tokenizer = manifest["tokenizer"]
    print(f"tokenizer {tokenizer['spec']} (vocab {tokenizer['vocab_size']})")
    print(f"written in {manifest['seconds']:.1f} s")
