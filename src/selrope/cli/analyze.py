"""``selrope analyze``: theory figures and a look inside trained models, with a report.

    selrope analyze rff     --out DIR [--seed N]
    selrope analyze leakage --out DIR [--seed N]
    selrope analyze complex --out DIR [--seed N] [--checkpoint RUN | --steps N]
    selrope analyze angles  --out DIR [--seed N] [--checkpoint RUN | --steps N]
    selrope analyze householder --out DIR --checkpoint RUN [--seed N]
    selrope analyze rotation --out DIR --checkpoint RUN[,RUN...] --data CORPUS
                             [--window W] [--windows N]
    selrope analyze runs    --out DIR --runs DIR[,DIR...] [--escape-accuracy A]

rff: softmax attention as linear attention on randomly rotated features (error against the
number of features, attention maps). leakage: the rotation kernel with and without a decay
window, and a pure-rotation against a damped recurrence. complex: the eigenvalues of GLA +
Selective RoPE with tied pair decays. angles: the angle increment Selective RoPE learned for each
token. complex and angles train the demo's parity model (about a minute on a CPU) into
DIR/<analysis>-model unless --checkpoint names a saved parity model (a run folder or its model/).
householder: the transforms I - beta w w^T a parity model with PaTH attention learned (--checkpoint:
e.g. a run of selrope train --task state_tracking --group Z2 --mixer attention --rotary path).
rotation: how far each rotation pair of trained language models turns within windows of a
prepared corpus' validation text (pairs that barely turn act as NoPE there).
runs: finished (or running) runs of selrope train / compare: accuracy per variant with its seed
spread, the step each seed left the loss plateau, training loss and gradient norm curves.
Each writes PNG figures and its section of DIR/report.md (other analyses' sections are kept).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from selrope.analysis.parity_model import DEFAULT_STEPS
from selrope.analysis.report import ANALYSES, Section, write_section
from selrope.cli.parser import CommandParser, UsageError


def build_parser() -> CommandParser:
    """The ``selrope analyze`` argument parser (errors raise ``UsageError``)."""
    parser = CommandParser(
        prog="selrope analyze",
        description=__doc__.split("\n\n")[0].replace("``", ""),
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("analysis", choices=ANALYSES, help="which analysis to run")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for figures + report")
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds every random draw and the training (0)"
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        metavar="RUN",
        help="complex/angles: a saved parity model instead of training one; householder: the "
        "PaTH parity model; rotation: the language models (comma-separated run folders)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        metavar="N",
        help=f"complex/angles: training steps of the model trained here ({DEFAULT_STEPS})",
    )
    parser.add_argument(
        "--data",
        default=None,
        metavar="CORPUS",
        help="rotation: a prepared corpus (selrope data prepare) whose validation split is read",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=None,
        metavar="W",
        help="rotation: tokens per window (default: the first model's training length, else 256)",
    )
    parser.add_argument(
        "--windows",
        type=int,
        default=None,
        metavar="N",
        help="rotation: how many windows (16)",
    )
    parser.add_argument(
        "--runs",
        default=None,
        metavar="DIR[,DIR...]",
        help="runs: folders of runs (a compare folder, or run folders themselves)",
    )
    parser.add_argument(
        "--escape-accuracy",
        type=float,
        default=None,
        metavar="A",
        help="runs: a run escapes at the first training step with token accuracy >= A (0.5)",
    )
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """Raise UsageError for options that do not fit the chosen analysis."""
    trains = args.analysis in ("complex", "angles")
    loads = trains or args.analysis in ("householder", "rotation")
    if not loads and args.checkpoint is not None:
        raise UsageError(
            "--checkpoint applies to complex, angles, householder and rotation only; got "
            f"{args.checkpoint!r}"
        )
    if args.analysis == "householder" and not args.checkpoint:
        raise UsageError(
            "householder needs --checkpoint RUN: a parity model with PaTH attention "
            "(selrope train --task state_tracking --group Z2 --mixer attention --rotary path)"
        )
    if not trains and args.steps is not None:
        raise UsageError(f"--steps applies to complex and angles only; got {args.steps!r}")
    for flag, value in (
        ("--data", args.data),
        ("--window", args.window),
        ("--windows", args.windows),
    ):
        if args.analysis != "rotation" and value is not None:
            raise UsageError(f"{flag} applies to rotation only; got {value!r}")
    if args.analysis == "rotation":
        if not (args.checkpoint or "").strip(","):
            raise UsageError("rotation needs --checkpoint RUN[,RUN...]: the language models")
        if not args.data:
            raise UsageError("rotation needs --data CORPUS: a prepared corpus to read")
        for flag, value in (("--window", args.window), ("--windows", args.windows)):
            if value is not None and value < 2:
                raise UsageError(f"{flag} must be an integer >= 2; got {value}")
    for flag, value in (("--runs", args.runs), ("--escape-accuracy", args.escape_accuracy)):
        if args.analysis != "runs" and value is not None:
            raise UsageError(f"{flag} applies to runs only; got {value!r}")
    if args.analysis == "runs" and not (args.runs or "").strip(","):
        raise UsageError("runs needs --runs DIR[,DIR...]: the folders of the runs to compare")
    if args.checkpoint is not None and args.steps is not None:
        raise UsageError("--steps trains a model; it does not apply with --checkpoint")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be a positive integer; got {args.steps}")
    if not args.out.strip():
        raise UsageError("--out must name a folder; got ''")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out}: is a file, not a folder")


def model_section(args: argparse.Namespace, out_dir: Path) -> Section:
    """complex / angles / householder: train or load the parity model, then look inside it."""
    from selrope.analysis.angles import analyze_angles
    from selrope.analysis.eigenvalues import analyze_complex
    from selrope.analysis.householder import analyze_householder
    from selrope.analysis.parity_model import (
        describe_model,
        load_parity_model,
        parity_accuracy,
        parity_test_sets,
        train_parity_model,
    )

    tests = parity_test_sets(args.seed)
    if args.checkpoint is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        run_dir = out_dir / f"{args.analysis}-model"
        steps = DEFAULT_STEPS if args.steps is None else args.steps
        print(f"training the parity model ({steps} steps, seed {args.seed}) into {run_dir}")
        started = time.perf_counter()
        model, accuracy = train_parity_model(run_dir, args.seed, steps)
        source = (
            f"the demo's parity model trained here for {steps} steps (seed {args.seed}, "
            f"{time.perf_counter() - started:.0f} s on the CPU) into `{run_dir}`"
        )
    else:
        model = load_parity_model(args.checkpoint)
        accuracy = parity_accuracy(model, tests)
        source = f"`{args.checkpoint}`"
        out_dir.mkdir(parents=True, exist_ok=True)
    about = describe_model(model, source, accuracy, args.seed)
    if args.analysis == "complex":
        return analyze_complex(out_dir, model, tests[min(tests)][0][:16], about)
    if args.analysis == "householder":
        return analyze_householder(out_dir, model, tests[min(tests)][0][:64], about)
    return analyze_angles(out_dir, model, about, max(tests))


def rotation_section(args: argparse.Namespace, out_dir: Path) -> Section:
    """rotation: load the language models and the corpus' validation split, then measure."""
    from selrope.analysis.rotation import analyze_rotation
    from selrope.data import load_split
    from selrope.evaluation.runs import training_length
    from selrope.models.io import check_same_tokenizer, load_pretrained

    models, directories = [], []
    for run in (run for run in args.checkpoint.split(",") if run):
        try:
            loaded = load_pretrained(run)
        except (ValueError, OSError) as error:
            raise UsageError(f"--checkpoint {run}: {error}") from None
        directories.append(loaded.directory)
        models.append((run.rstrip("/"), loaded.model))
    window = args.window or training_length(directories[0])
    try:
        split = load_split(args.data, "val")
    except (ValueError, OSError) as error:
        raise UsageError(f"--data {args.data}: {error}") from None
    for (run, model), directory in zip(models, directories, strict=True):
        if model.config.vocab_size != split.vocab_size:
            raise UsageError(
                f"--checkpoint {run}: vocab_size {model.config.vocab_size} but the data has "
                f"{split.vocab_size}: it was trained on another tokenizer"
            )
        check_same_tokenizer(directory, args.data, "--data")
    out_dir.mkdir(parents=True, exist_ok=True)
    about = f"Models {', '.join(f'`{name}`' for name, _ in models)}; data `{args.data}`"
    count = 16 if args.windows is None else args.windows
    return analyze_rotation(out_dir, models, split, window or 256, count, about)


def run(argv: list[str]) -> None:
    """Parse ``argv`` (after ``selrope analyze``), run the analysis, write figures and report.

    Raises:
        ValueError (``UsageError`` for the flags): bad arguments, or a checkpoint that is not a
            fitting parity model (the message names the option); ``selrope.cli.main`` prints it
            as one line and exits 2.
    """
    args = build_parser().parse_args(argv)
    check_arguments(args)
    out_dir = Path(args.out)
    started = time.perf_counter()
    if args.analysis == "rff":
        from selrope.analysis.rff import analyze_rff

        out_dir.mkdir(parents=True, exist_ok=True)
        section = analyze_rff(out_dir, args.seed)
    elif args.analysis == "leakage":
        from selrope.analysis.leakage import analyze_leakage

        out_dir.mkdir(parents=True, exist_ok=True)
        section = analyze_leakage(out_dir, args.seed)
    elif args.analysis == "rotation":
        section = rotation_section(args, out_dir)
    elif args.analysis == "runs":
        from selrope.analysis.training_runs import analyze_runs

        folders = [folder for folder in args.runs.split(",") if folder]
        threshold = 0.5 if args.escape_accuracy is None else args.escape_accuracy
        section = analyze_runs(out_dir, folders, threshold)
    else:
        try:
            section = model_section(args, out_dir)
        except ValueError as error:
            if args.checkpoint is None:
                raise
            raise UsageError(f"--checkpoint {args.checkpoint}: {error}") from None
    report = write_section(out_dir, args.analysis, section.markdown)
    for figure in section.figures:
        print(f"wrote {figure}")
    print(f"wrote {report} (section {args.analysis}) in {time.perf_counter() - started:.1f} s")
