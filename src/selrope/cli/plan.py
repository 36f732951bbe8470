"""``selrope plan``: what a run of ``selrope train``'s options will cost, before it runs.

The options are train's (``--config`` files and flags, parsed by ``cli.train.parse_options``)
plus the machine: ``--gpus``, ``--mfu``, ``--gpu-flops``, ``--gpu-memory``, and ``--vocab-size``
for a corpus task without ``--data``. Nothing is allocated and no token is read
(``selrope.experiments.plan``).
"""

from __future__ import annotations

import json

from selrope.cli.parser import CommandParser, UsageError
from selrope.cli.train import parse_options, with_flag_names
from selrope.experiments import sort_options
from selrope.experiments.plan import (
    DEFAULT_MFU,
    H100_BF16_FLOPS,
    H100_MEMORY_GB,
    Hardware,
    RunPlan,
    configs_for_plan,
    plan_run,
)
from selrope.models import LMConfig

DESCRIPTION = """\
what a training run will cost: parameters, FLOPs per token, tokens, memory per GPU (DDP and
FSDP, with and without activation checkpointing) and time, from the configs alone (no weights
allocated, no tokens read). Every option of `selrope train` is accepted (selrope train --help).

examples:
  selrope plan --config configs/selective_rope/lm_gla_selective.yaml --vocab-size 32000 --gpus 8
  selrope plan --config configs/selective_rope/lm_gdn_rope.yaml --data runs/corpus --json"""


def build_parser() -> CommandParser:
    """The parser of plan's own flags (train's options are parsed by train's parser)."""
    parser = CommandParser(prog="selrope plan", description=DESCRIPTION)
    parser.add_argument(
        "--config", metavar="FILE", action="append", help="YAML/JSON file(s) of train's options"
    )
    parser.add_argument("--gpus", type=int, default=1, help="data-parallel GPUs [default 1]")
    parser.add_argument(
        "--mfu",
        type=float,
        default=DEFAULT_MFU,
        help=f"model FLOPs utilisation the time assumes, in (0, 1] [default {DEFAULT_MFU}]",
    )
    parser.add_argument(
        "--gpu-flops",
        type=float,
        default=H100_BF16_FLOPS,
        help=f"peak FLOP/s per GPU [default {H100_BF16_FLOPS:g}: H100 / H200 bf16 dense]",
    )
    parser.add_argument(
        "--gpu-memory",
        type=float,
        default=H100_MEMORY_GB,
        metavar="GB",
        help=f"memory per GPU in GB, for the fit verdict [default {H100_MEMORY_GB:g}: H100]",
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="the vocabulary when --task lm has no --data (the recipes: 32000)",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser


def run(argv: list[str]) -> None:
    """``selrope plan ARGV``: print the plan (a table, or JSON with --json)."""
    own, rest = build_parser().parse_known_args(argv)
    config_args = [arg for path in own.config or [] for arg in ("--config", path)]
    try:
        values = parse_options("train", config_args + rest)
    except UsageError as error:
        raise UsageError(str(error).replace("selrope train:", "selrope plan:", 1)) from None
    task = values["task"]
    sections = sort_options(values, "train")
    sections["run"].setdefault("out", "runs/train")
    try:
        hardware = Hardware(own.gpus, own.mfu, own.gpu_flops, own.gpu_memory)
        model, train, seq_len = configs_for_plan(sections, own.vocab_size)
        plan = plan_run(model, train, seq_len, hardware)
    except ValueError as error:
        raise with_flag_names(error, task) from None
    if own.json:
        print(json.dumps({"model": describe_model(model), **plan.to_dict()}, indent=2))
    else:
        print(format_plan(plan, model))


def describe_model(model: LMConfig) -> str:
    """``"gla x 24, d 1,024, 4 heads, vocab 32,000, rotary selective"``."""
    kinds = model.layer_mixers()
    mixers = f"{kinds[0]} x {len(kinds)}" if len(set(kinds)) == 1 else "+".join(kinds)
    return (
        f"{mixers}, d {model.d_model:,}, {model.n_heads} heads, MLP {model.mlp_hidden_size:,}, "
        f"vocab {model.vocab_size:,}, rotary {model.rotary.get('type', 'nope')}"
    )


def _gb(count: float) -> str:
    return f"{count / 1e9:,.2f}"


def _giga(count: float) -> str:
    """FLOPs with a unit: ``"2.112 G"``, ``"4.1 M"``."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:,.3g} {unit}"
    return f"{count:,.0f}"


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:,.1f} h ({hours / 24:,.2f} days)" if hours >= 1 else f"{seconds / 60:,.1f} min"


def format_plan(plan: RunPlan, model: LMConfig) -> str:
    """The plan as a table of lines."""
    hw, flops = plan.hardware, plan.flops_per_token
    N = hw.gpus
    lines = [
        f"model            {describe_model(model)}",
        f"parameters       {plan.parameters:,}  (embedding + head {plan.embedding_parameters:,}; "
        f"the rest {plan.other_parameters:,})",
        f"FLOPs per token  forward {_giga(flops.forward)}, training (3x forward) "
        f"{_giga(flops.training)}",
        f"  forward by part: mixer projections {_giga(flops.mixer_projections)}, "
        f"MLP {_giga(flops.mlp)}, sequence mixing {_giga(flops.sequence_mixing)},",
        f"                   rotary {_giga(flops.rotary)}, LM head {_giga(flops.head)}",
        f"tokens to train  {plan.tokens:,}  ({plan.steps:,} steps x {plan.batch_size:,} rows x "
        f"{plan.seq_len:,} tokens); {plan.tokens_per_parameter:,.1f} tokens per parameter",
        f"training FLOPs   {plan.training_flops:.3e}",
        f"time             {_duration(plan.seconds)} on {N} GPU{'s' if N > 1 else ''} at "
        f"{hw.mfu:.0%} MFU of {hw.gpu_flops / 1e12:,.0f} TFLOP/s each",
        "",
        f"memory per GPU (GB)   micro-batch {plan.micro_batch_size} x {plan.seq_len:,} tokens",
        f"  {'':<36}{'DDP':>10}{f'FSDP/{N}':>10}",
    ]
    rows = [
        ("weights (float32)", "weights"),
        ("gradients (float32)", "gradients"),
        ("AdamW moments (float32)", "optimizer"),
        ("buffers (DDP buckets, FSDP gathers)", "buffers"),
        ("activations", "activations"),
        ("activations, checkpointed", "activations_checkpointed"),
        ("total", "total"),
        ("total, checkpointed", "total_checkpointed"),
    ]
    for label, name in rows:
        ddp, fsdp = getattr(plan.ddp, name), getattr(plan.fsdp, name)
        lines.append(f"  {label:<36}{_gb(ddp):>10}{_gb(fsdp):>10}")
    lines.append(f"  fits in {hw.gpu_memory_gb:g} GB: " + _verdict(plan, hw.gpu_memory_gb))
    return "\n".join(lines)


def _verdict(plan: RunPlan, memory_gb: float) -> str:
    limit = memory_gb * 1e9
    choices: list[str] = []
    for name, memory in (("DDP", plan.ddp), ("FSDP", plan.fsdp)):
        if memory.total <= limit:
            choices.append(name)
        elif memory.total_checkpointed <= limit:
            choices.append(f"{name} with activation checkpointing")
    return ", ".join(choices) if choices else "neither (a smaller --micro-batch-size, more --gpus)"
