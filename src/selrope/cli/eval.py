"""``selrope eval``: perplexity of saved models at several context lengths on a prepared
split, and/or BLiMP and PIQA through lm-evaluation-harness.

    selrope eval --checkpoint RUN[,RUN...] --data DIR --lengths 256,512,1024,2048 --out DIR
        [--split val] [--batch-size N] [--max-tokens N] [--device cpu|cuda|auto]
        [--rope-scaling JSON] [--name NAME,...]
    selrope eval --checkpoint RUN[,RUN...] --tasks blimp,piqa,completion --blimp-dir DIR
        --piqa-dir DIR
        --out DIR [--limit N] [--batch-size N] [--device ...] [--name NAME,...]

Perplexity writes ``eval.json``, ``eval.md``, ``ppl_vs_length.png`` and ``loss_vs_position.png``
into ``--out``. With ``--rope-scaling`` every RoPE model (the others are left as they are) is
evaluated a second time, rebuilt with that context extension and the same weights, as a row named
``<name>+<kind>``.
``--tasks`` (extras hf + eval; offline, see ``selrope.evaluation.harness``) writes the task
configs into ``--out/tasks/``, lm-eval's results per model into ``harness.json`` and a table into
``harness.md``; each checkpoint needs its corpus ``tokenizer.json`` beside the weights.

Everything is checked before anything is written or any model is built: the checkpoints exist,
``--data`` has the vocabulary and the ``tokenizer.json`` the models were trained with, and one
forward pass of ``--batch-size`` windows of the longest ``--lengths`` fits in memory
(``selrope.evaluation.memory``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selrope.cli.parser import CommandParser, UsageError
from selrope.common.memory import gigabytes, physical_memory_bytes
from selrope.evaluation.memory import describe_quadratic, forward_activation_bytes
from selrope.evaluation.perplexity import evaluate_lengths, scored_target_count
from selrope.evaluation.report import EvaluatedRun, write_report
from selrope.evaluation.runs import rope_scaled_rotary, training_length
from selrope.models import LMConfig
from selrope.models.io import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    check_fits_in_memory,
    check_same_tokenizer,
    lm_config,
    load_pretrained,
    model_directory,
    weight_shapes,
)
from selrope.rotary import parse_rotary_config

PERPLEXITY_BATCH_SIZE = 8  # windows of up to 2,048 tokens
HARNESS_BATCH_SIZE = 64  # requests; SelropeLM also caps a forward pass at 768 padded tokens


def build_parser() -> CommandParser:
    """The ``selrope eval`` argument parser (errors raise ``UsageError``)."""
    parser = CommandParser(
        prog="selrope eval", description=__doc__.split("\n\n")[0].replace("``", "")
    )
    parser.add_argument("--checkpoint", required=True, help="RUN[,RUN...]: model dirs or runs")
    parser.add_argument("--data", default=None, help="a directory from `selrope data prepare`")
    parser.add_argument("--lengths", default=None, help="context lengths, e.g. 256,512,1024")
    parser.add_argument("--out", required=True, help="where the report goes")
    parser.add_argument("--split", default="val", help="split of --data to score (val)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="windows (perplexity, default 8) or harness requests (--tasks, default 64) per "
        "forward pass",
    )
    parser.add_argument("--max-tokens", type=int, default=None, help="cap on scored tokens")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default="auto",
        help="where to run (auto: cuda when available)",
    )
    parser.add_argument(
        "--rope-scaling",
        default=None,
        help='e.g. \'{"kind": "yarn", "factor": 8, "original_max_position": 256}\'',
    )
    parser.add_argument("--name", default=None, help="NAME[,NAME...]: one row label per RUN")
    parser.add_argument(
        "--tasks", default=None, help="harness tasks among blimp, piqa, completion (generation)"
    )
    parser.add_argument("--blimp-dir", default=None, help="the 67 BLiMP <UID>.jsonl files")
    parser.add_argument("--piqa-dir", default=None, help="PIQA valid.jsonl + valid-labels.lst")
    parser.add_argument("--limit", type=int, default=None, help="harness: documents per task")
    return parser


def _comma_list(flag: str, text: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise UsageError(f"{flag} must be a comma-separated list without empty items; got {text!r}")
    return items


def parse_lengths(text: str) -> list[int]:
    """``"256,512"`` -> ``[256, 512]``; UsageError naming ``--lengths`` otherwise."""
    items = _comma_list("--lengths", text)
    if not all(item.isdigit() and int(item) > 0 for item in items):
        raise UsageError(f"--lengths must be positive integers like 256,512,1024; got {text!r}")
    return [int(item) for item in items]


def parse_rope_scaling(text: str | None) -> dict[str, Any] | None:
    """The ``--rope-scaling`` JSON object, validated as ``RoPEConfig.scaling``."""
    if text is None:
        return None
    try:
        scaling = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"--rope-scaling must be a JSON object; got {text!r} ({error})") from None
    parse_rotary_config({"type": "rope", "scaling": scaling})
    return scaling


@dataclass
class _Planned:
    """A model to evaluate: its row name, weights directory, config and RoPE override."""

    name: str
    model_dir: Path
    config: LMConfig
    rotary: dict[str, Any] | None  # the RoPE config with the scaling, or None: as saved


def _plan(args: argparse.Namespace, device: str) -> list[_Planned]:
    """Check every checkpoint (its config, without building it) before evaluating any."""
    runs = _comma_list("--checkpoint", args.checkpoint)
    names = [Path(run).resolve().name for run in runs]
    if args.name is not None:
        names = _comma_list("--name", args.name)
        if len(names) != len(runs):
            raise UsageError(f"--name needs one name per checkpoint ({len(runs)}); got {args.name}")
    scaling = parse_rope_scaling(args.rope_scaling)
    planned = []
    for run, name in zip(runs, names, strict=True):
        model_dir = model_directory(run)
        config = lm_config(model_dir)
        # The loader's own checks, run here so that nothing is built or written before all pass.
        check_fits_in_memory(config, model_dir / CONFIG_FILE, device)
        weight_shapes(model_dir / WEIGHTS_FILE)
        planned.append(_Planned(name, model_dir, config, None))
        # The extended row goes beside each RoPE model; other position encodings have no scaling.
        if scaling is not None and config.rotary.get("type") == "rope":
            rotary = rope_scaled_rotary(model_dir, scaling)
            planned.append(
                _Planned(
                    f"{name}+{scaling['kind']}", model_dir, lm_config(model_dir, rotary), rotary
                )
            )
    if scaling is not None and len(planned) == len(runs):
        raise UsageError("--rope-scaling needs RoPE models; none of the checkpoints uses RoPE")
    return planned


def _check_data(args: argparse.Namespace, planned: list[_Planned], split: Any) -> None:
    """The models were trained on this corpus' tokenizer (vocabulary size and tokenizer.json)."""
    for item in planned:
        if item.config.vocab_size != split.vocab_size:
            raise UsageError(
                f"checkpoint {str(item.model_dir)!r} has vocab_size {item.config.vocab_size} but "
                f"the data has {split.vocab_size}: it was trained on another tokenizer"
            )
        check_same_tokenizer(item.model_dir, args.data, "--data")


def _check_memory(
    args: argparse.Namespace, planned: list[_Planned], lengths: list[int], split: Any, device: str
) -> None:
    """Refuse --lengths / --batch-size whose forward pass cannot fit (evaluation.memory)."""
    scored = scored_target_count(len(split.tokens), max(lengths), args.max_tokens)
    batch_size = args.batch_size or PERPLEXITY_BATCH_SIZE
    available = physical_memory_bytes()
    where = "this machine's"
    if device == "cuda":
        properties = torch.cuda.get_device_properties(torch.cuda.current_device())
        available, where = properties.total_memory, "the GPU's"
    if available is None:
        return
    for item in planned:
        for length in lengths:
            rows = min(batch_size, math.ceil(scored / length))
            needed = forward_activation_bytes(item.config, rows, length)
            if needed > available:
                raise UsageError(
                    f"--lengths {length} with --batch-size {batch_size}: one forward pass of "
                    f"{rows} window(s) of checkpoint {str(item.model_dir)!r} needs about "
                    f"{gigabytes(needed)} ({describe_quadratic(item.config, length)}), more than "
                    f"{where} {gigabytes(available)} of memory; use shorter --lengths or a "
                    f"smaller --batch-size"
                )


def _check_arguments(args: argparse.Namespace) -> list[int]:
    """The flag combinations; returns the parsed --lengths ([] without --data)."""
    if args.data is None and args.tasks is None:
        raise UsageError("give --data and --lengths (perplexity) and/or --tasks (harness)")
    if args.data is not None and args.lengths is None:
        raise UsageError("the following arguments are required: --lengths (with --data)")
    if args.lengths is not None and args.data is None:
        raise UsageError("the following arguments are required: --data (with --lengths)")
    lengths = parse_lengths(args.lengths) if args.lengths is not None else []
    for flag, value in (
        ("--batch-size", args.batch_size),
        ("--max-tokens", args.max_tokens),
        ("--limit", args.limit),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be a positive integer; got {value}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return lengths


def run(argv: list[str]) -> None:
    """Run ``selrope eval`` with the arguments after ``eval`` (see the module docstring).

    Raises:
        ValueError (``UsageError`` for the flags): missing directories, bad lengths or JSON, a
            corpus of another vocabulary or tokenizer, a forward pass beyond memory, a missing
            harness data folder; ``selrope.cli.main`` prints it as one line and exits 2.
    """
    args = build_parser().parse_args(argv)
    lengths = _check_arguments(args)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        planned = _plan(args, device)
        if args.data is not None:
            if not Path(args.data).is_dir():
                raise UsageError(f"--data {args.data!r} is not a directory")
            from selrope.data import load_split

            split = load_split(args.data, args.split)
            _check_data(args, planned, split)
            _check_memory(args, planned, lengths, split, device)
        if args.tasks is not None:  # last: it writes the task configs
            harness_plan = _plan_harness(args, planned)
    except OSError as error:  # a folder that cannot be read: a user error too
        raise ValueError(str(error)) from None
    if args.data is not None:
        _run_perplexity(args, planned, split, lengths, device)
    if args.tasks is not None:
        _run_harness(args, planned, harness_plan, device)


def _run_perplexity(
    args: argparse.Namespace, planned: list[_Planned], split: Any, lengths: list[int], device: str
) -> None:
    evaluated = []
    for item in planned:
        model = load_pretrained(item.model_dir, device, rotary=item.rotary).model
        results = evaluate_lengths(
            model,
            split,
            lengths,
            batch_size=args.batch_size or PERPLEXITY_BATCH_SIZE,
            max_tokens=args.max_tokens,
            device=device,
        )
        for result in results.values():
            print(
                f"{item.name}  L={result['length']}  ppl={result['perplexity']:.3f}  "
                f"nll={result['nll']:.4f}  tokens={result['tokens']}"
            )
        evaluated.append(
            EvaluatedRun(
                name=item.name,
                checkpoint=str(item.model_dir),
                config=model.config.to_dict(),
                n_parameters=sum(p.numel() for p in model.parameters()),
                rotary_override=None if item.rotary is None else item.rotary["scaling"],
                train_length=training_length(item.model_dir),
                results=results,
            )
        )
        del model
    meta = {
        "data": str(args.data),
        "split": args.split,
        "lengths": lengths,
        "scored_tokens": next(iter(evaluated[0].results.values()))["tokens"],
        "device": device,
    }
    for path in write_report(args.out, evaluated, meta):
        print(f"wrote {path}")


def _plan_harness(args: argparse.Namespace, planned: list[_Planned]) -> list[str]:
    """Check the harness arguments and write the task configs; return the lm-eval task names."""
    from selrope.evaluation.harness import write_task_configs

    if args.rope_scaling is not None and args.data is None:
        raise UsageError("--rope-scaling applies to perplexity (--data); not to --tasks alone")
    for item in planned:
        if not (item.model_dir / TOKENIZER_FILE).is_file():
            raise ValueError(
                f"checkpoint {str(item.model_dir)!r} holds no {TOKENIZER_FILE}: --tasks scores "
                f"text, so the corpus tokenizer must lie beside the weights"
            )
    tasks = _comma_list("--tasks", args.tasks)
    try:
        import lm_eval  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        raise ValueError(
            f"--tasks needs the hf and eval extras (pip install -e '.[hf,eval]'): {error}"
        ) from None
    return write_task_configs(Path(args.out) / "tasks", tasks, args.blimp_dir, args.piqa_dir)


def _run_harness(
    args: argparse.Namespace, planned: list[_Planned], task_names: list[str], device: str
) -> None:
    """BLiMP / PIQA for every checkpoint (no RoPE-scaled rows); harness.json + harness.md."""
    from lm_eval.utils import handle_non_serializable

    from selrope.evaluation.harness import (
        evaluate_tasks,
        harness_model,
        load_tasks,
        markdown_table,
        summary_rows,
    )

    tasks = load_tasks(task_names, Path(args.out) / "tasks")
    out = Path(args.out)
    everything, rows = {}, {}
    for item in planned:
        if item.rotary is not None:
            continue
        start = time.perf_counter()
        lm = harness_model(item.model_dir, device, args.batch_size or HARNESS_BATCH_SIZE)
        results = evaluate_tasks(lm, tasks, limit=args.limit)
        seconds = time.perf_counter() - start
        rows[item.name] = summary_rows(results)
        everything[item.name] = {"checkpoint": str(item.model_dir), "seconds": seconds, **results}
        for task, row in rows[item.name].items():
            metrics = "  ".join(f"{key}={value:.4f}" for key, value in row.items() if key != "n")
            print(f"{item.name}  {task}  {metrics}  n={row['n']}  ({seconds:.0f} s)")
        del lm
        # Rewritten after every model: a long run keeps what it has finished.
        (out / "harness.json").write_text(
            json.dumps(everything, indent=2, default=handle_non_serializable) + "\n"
        )
        (out / "harness.md").write_text(markdown_table(rows))
    for name in ("harness.json", "harness.md"):
        print(f"wrote {out / name}")
