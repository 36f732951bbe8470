"""The ``selrope`` command: one tree of subcommands; each lives in its own module here."""

from __future__ import annotations

import importlib
import os
import sys

from selrope.training import TrainingStoppedError
from selrope.training.host_memory import keep_freed_memory

USAGE = """\
usage: selrope COMMAND [options]      (selrope COMMAND --help: its options)

Train and compare models with input-dependent rotary position embeddings.

commands:
  train     train one model on a task or a corpus
  compare   train a grid (mixers x position encodings x seeds) and tabulate it
  plan      what a run will cost: parameters, FLOPs, tokens, memory per GPU, time
  data      prepare a text corpus for language modelling (data prepare) or check one (info)
  eval      perplexity of trained language models against context length; lm-eval tasks
  analyze   figures and reports: theory demos, inside trained models, training runs
  theory    print the theory checks (softmax as random rotations, rotation leakage)
  demo      the main job: parity with NoPE, RoPE and Selective RoPE (a few minutes on a CPU)

examples:
  selrope train --task state_tracking --group Z2 --mixer gla --rotary selective --out runs/parity
  selrope compare --task mqar --mixers gla,attention --rotaries nope,rope,selective --out runs/mqar
  selrope train --config runs/parity/run.json --steps 2000 --resume

exit status: 0 done; 2 a usage error (one line, nothing written); 1 a run that started and then
stopped (a non-finite loss), its folder and last checkpoint kept.
environment: SELROPE_SYSTEM_MALLOC=1 keeps glibc's malloc defaults (see the README);
SELROPE_TRITON=0 turns the fused CUDA rotary kernel off; SELROPE_FLA=1 runs fla's kernels.
"""

# command -> the module of selrope.cli that runs it (``run(argv)``)
COMMANDS = {
    "train": "train",
    "compare": "train",
    "plan": "plan",
    "data": "data",
    "eval": "eval",
    "analyze": "analyze",
    "theory": "theory",
    "demo": "demo",
}


def dispatch(argv: list[str]) -> None:
    """Run ``selrope argv[0] argv[1:]``."""
    command, rest = argv[0], argv[1:]
    module = importlib.import_module(f"selrope.cli.{COMMANDS[command]}")
    if command in ("train", "compare"):
        module.run(command, rest)
    else:
        module.run(rest)


def usage(argv: list[str]) -> None:
    """The command list: on stdout when asked for (exit 0), else on stderr (exit 2)."""
    asked = bool(argv) and argv[0] in ("-h", "--help")
    print(USAGE, end="", file=sys.stdout if asked else sys.stderr)
    if argv and not asked:
        print(f"selrope: error: unknown command {argv[0]!r}", file=sys.stderr)
    raise SystemExit(0 if asked else 2)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] not in COMMANDS:
            usage(argv)
        keep_freed_memory()
        dispatch(argv)
    except (ValueError, FileNotFoundError) as error:
        # The library's checks name the argument and what was expected: a user error, one line.
        print(f"selrope: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except TrainingStoppedError as error:
        # A run that started and then failed: its folder keeps the log (exit 1, not a usage error).
        print(f"\nselrope: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except BrokenPipeError:
        # `selrope ... | head`: the reader left; end quietly, as other command-line tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(0) from None
