"""The ``selrope`` command: parses arguments into RunSpecs and hands them to the runner.

    selrope train   --task state_tracking --group Z2 --mixer gla --rotary selective --out DIR
    selrope compare --task mqar --mixers gla,gdn,attention --rotaries nope,rope,selective \\
                    --seeds 0,1,2 --out DIR
    selrope train   --task lm --data CORPUS --seq-len 256 --mixer attention --rotary rope --out DIR
    selrope eval    --checkpoint RUN[,RUN...] --data CORPUS --lengths 256,512,1024 --out DIR
    selrope demo    --out DIR
    selrope theory  (softmax as random rotations; rotation leakage and the decay window)
    selrope analyze rff|leakage|complex|angles|rotation|runs --out DIR   (figures + report.md)
    selrope data prepare --input PATH [PATH ...] | --default --tokenizer byte|bpe:VOCAB --out DIR

Options come from the fields of ``LMConfig`` (model), ``TrainConfig`` (optimiser and loop) and
the chosen task's parameters (``selrope.options``), written with dashes (``--d-model 64
--lr 3e-3 --train-len 64 --test-lens 64,256``); ``selrope train --task mqar --help`` lists them
with types and defaults. ``--config FILE`` reads the same keys from a YAML or JSON file; flags
on the command line win. A run folder must be empty unless ``--resume`` (continue its last
checkpoint; settings other than steps, cadences, device and precision must match) or
``--overwrite`` (remove only what selrope wrote there).

Exit status: 0 done; 2 a usage error, refused in one line before anything is written; 1 a run
that started and then stopped (a non-finite loss, a diverged model), its folder kept.

Environment: on Linux the command keeps freed memory for reuse (faster CPU steps, peak memory
held until exit); ``SELROPE_SYSTEM_MALLOC=1`` keeps glibc's defaults. On CUDA,
``SELROPE_TRITON=0`` turns the fused rotary kernel off and ``SELROPE_FLA=1`` runs fla's kernels.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, NoReturn

import yaml

from selrope.experiments import (
    ROTARY_NAMES,
    RunSpec,
    accuracy_metric,
    check_grid,
    grid_specs,
    run_grid,
)
from selrope.options import Option, all_options, run_options
from selrope.training import TrainingStoppedError, format_table, is_main_process, write_results
from selrope.training.host_memory import keep_freed_memory


class _Parser(argparse.ArgumentParser):
    """argparse without prefix abbreviations, whose errors are one-line ValueErrors."""

    def __init__(self, **kwargs: Any):
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def read_config_file(path: str) -> dict[str, Any]:
    """The mapping of option names to values in a YAML/JSON file (keys with - or _)."""
    try:
        values = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"--config {path}: not valid YAML/JSON ({error.problem})") from None
    except IsADirectoryError:
        raise ValueError(f"--config {path}: is a folder, not a file") from None
    if not isinstance(values, dict) or not all(isinstance(key, str) for key in values):
        raise ValueError(f"--config {path}: expected a mapping of option names to values")
    return {key.replace("-", "_"): value for key, value in values.items()}


def build_parser(command: str, options: dict[str, Option]) -> argparse.ArgumentParser:
    """The parser of ``selrope <command>``: every option as a string, parsed by its Option."""
    parser = _Parser(prog=f"selrope {command}", description=__doc__.split("\n\n")[1])
    parser.add_argument("--config", metavar="FILE", help="YAML/JSON file of the same keys")
    titles = {
        "run": "run",
        "task": f"task {options['task'].default}",
        "model": "model (LMConfig)",
        "train": "training (TrainConfig)",
    }
    groups = {section: parser.add_argument_group(title) for section, title in titles.items()}
    for option in options.values():
        default = "none" if option.default is None else option.default
        default = "default none: required" if default == "" else f"default {default}"
        help_text = f"{option.meaning} [{option.describe()}; {default}]"
        extra = {"nargs": "?", "const": "true"} if option.hint is bool else {}
        groups[option.section].add_argument(
            option.flag,
            dest=option.name,
            default=argparse.SUPPRESS,
            metavar=option.name.upper(),
            help=help_text.replace("%", "%%"),
            **extra,
        )
    return parser


def parse_options(command: str, argv: list[str]) -> dict[str, Any]:
    """The options of ``argv`` and of its ``--config`` file, each parsed by its type (flags win).

    Two passes: the first finds --task / --config, the second knows that task's options.

    Raises:
        ValueError: ``"--lr must be a finite float; got 'abc'"``, unknown options, bad files.
    """
    first = _Parser(add_help=False)
    first.add_argument("--task")
    first.add_argument("--config")
    known, _ = first.parse_known_args(argv)
    from_file = read_config_file(known.config) if known.config is not None else {}
    task_option = run_options(command)[0]
    if known.task is not None:
        task = task_option.parse(known.task, "--task")
    else:
        task = task_option.parse(from_file.get("task", "state_tracking"), "task")
    options = all_options(command, task)
    options["task"] = dataclasses.replace(options["task"], default=task)
    values = {"task": task}
    for key, value in from_file.items():
        if key not in options:
            raise ValueError(f"--config {known.config}: unknown option {key!r} for task {task!r}")
        values[key] = options[key].parse(value, f"--config {known.config}: {key}")
    from_cli = vars(build_parser(command, options).parse_args(argv))
    from_cli.pop("config", None)
    for key, value in from_cli.items():
        values[key] = options[key].parse(value, options[key].flag)
    return values


def spec_from_options(options: dict[str, Any]) -> RunSpec:
    """Sort parsed options (``parse_options``) into a RunSpec."""
    options = dict(options)
    task = options.pop("task")
    sections = all_options("train", task) | all_options("compare", task)
    rotary = options.pop("rotary", "selective")
    rotary_options = options.pop("rotary_options", {})
    if rotary_options and not set(rotary_options) & set(ROTARY_NAMES):
        rotary_options = {rotary: rotary_options}  # train: the overrides of its one rotary
    resume_or_start = options.pop("resume_or_start", False)
    out = options.pop("out", "runs/train")
    if not out.strip():
        raise ValueError("--out must name a folder; got ''")
    spec = RunSpec(
        task=task,
        mixer=options.pop("mixer", "gla"),
        rotary=rotary,
        seed=options.pop("seed", 0),
        rotary_options=rotary_options,
        out_dir=out,
        resume=options.pop("resume", False) or resume_or_start,
        start_if_missing=resume_or_start,
        overwrite=options.pop("overwrite", False),
    )
    for key, value in options.items():
        section = sections[key].section
        if section == "task":
            spec.task_params[key] = value
        elif section == "model":
            spec.model[key] = value
        elif section == "train":
            spec.train[key] = value
    return spec


def with_flag_names(error: ValueError, task: str) -> ValueError:
    """A config's check ("lr must be ...") named by its flag ("--lr must be ...")."""
    message = str(error)
    first = message.split(" ", 1)[0]
    if first in all_options("compare", task) | all_options("train", task):
        message = "--" + first.replace("_", "-") + message[len(first) :]
    return ValueError(message)


def report(rows: list[dict[str, Any]], out_dir: str, task: str) -> None:
    if not is_main_process():  # under torchrun every rank returns the rows; rank 0 reports
        return
    metric = "perplexity" if task == "lm" else "accuracy"
    write_results(rows, out_dir, metric)
    print(format_table(rows, metric))
    print(f"results written to {out_dir}/results.json, results.md and *.png")


def command_train(argv: list[str]) -> None:
    options = parse_options("train", argv)
    spec = spec_from_options(options)
    try:
        rows = run_grid([spec])
    except ValueError as error:
        raise with_flag_names(error, spec.task) from None
    report(rows, spec.out_dir, spec.task)


def command_compare(argv: list[str]) -> None:
    options = parse_options("compare", argv)
    mixers = options.pop("mixers", ["gla"])
    rotaries = options.pop("rotaries", ["nope", "rope", "selective"])
    seeds = options.pop("seeds", [0])
    workers = options.pop("workers", None)
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be a positive integer or none; got {workers}")
    base = spec_from_options(options)
    specs = grid_specs(base, mixers, rotaries, seeds, base.out_dir)
    try:
        check_grid(base.out_dir, specs)  # every run checked before any starts
    except ValueError as error:
        raise with_flag_names(error, base.task) from None
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
        "analyze": command_analyze,
    }
    if not argv or argv[0] not in commands:
        print(__doc__)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    keep_freed_memory()
    try:
        commands[argv[0]](argv[1:])
    except (ValueError, FileNotFoundError) as error:
        # The library's checks name the argument and what was expected: a user error, one line.
        print(f"selrope: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except TrainingStoppedError as error:
        # A run that started and then failed: its folder keeps the log (exit 1, not a usage error).
        print(f"\nselrope: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def command_demo(argv: list[str]) -> None:
    from selrope.demo import run_demo

    parser = _Parser(prog="selrope demo")
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument(
        "--workers", type=int, default=None, help="parallel runs (default: one per core)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo's files")
    args = parser.parse_args(argv)
    run_demo(args.out, args.workers, args.overwrite)


def command_eval(argv: list[str]) -> None:
    from selrope.evaluation.command import run_eval_command

    run_eval_command(argv)


def command_analyze(argv: list[str]) -> None:
    from selrope.analysis.command import run_analyze_command

    run_analyze_command(argv)


def command_theory(argv: list[str]) -> None:
    from selrope.analysis.theory import theory_report

    parser = _Parser(prog="selrope theory")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws (0)")
    print(theory_report(parser.parse_args(argv).seed))


def command_data(argv: list[str]) -> None:
    """``selrope data prepare``: tokenise a corpus into train/val token streams (selrope.data)."""
    from selrope.data import prepare_corpus

    parser = argparse.ArgumentParser(prog="selrope data")
    actions = parser.add_subparsers(dest="action", required=True)
    prepare = actions.add_parser("prepare", help="tokenise text into DIR/{train,val}.bin")
    source = prepare.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input",
        nargs="+",
        metavar="PATH",
        help="text or .jsonl files, or folders of them "
        "(one document per file, or per line of a .jsonl)",
    )
    source.add_argument("--default", action="store_true", help="the CPython stdlib's .py files")
    prepare.add_argument(
        "--tokenizer",
        required=True,
        help="byte (byte ids, nothing to train) or bpe:VOCAB (train a byte-level BPE of VOCAB "
        "tokens)",
    )
    prepare.add_argument(
        "--out", required=True, metavar="DIR", help="folder for the token streams and manifest"
    )
    held_out = prepare.add_mutually_exclusive_group()
    held_out.add_argument(
        "--val-fraction",
        type=float,
        default=argparse.SUPPRESS,
        metavar="F",
        help="share of documents held out for validation (default 0.05)",
    )
    held_out.add_argument(
        "--val-documents",
        type=lambda text: [pattern for pattern in text.split(",") if pattern],
        default=argparse.SUPPRESS,
        metavar="GLOB[,GLOB]",
        help="documents whose names match one of these fnmatch patterns form the validation split",
    )
    prepare.add_argument(
        "--seed", type=int, default=argparse.SUPPRESS, help="seed of the document split (0)"
    )
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
