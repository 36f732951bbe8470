"""The task registry: what generic code may know about a task, without naming it.

Each ``TaskSpec`` registers a task's builder, the one-line help of each parameter (plain data,
shown by ``--help``), its headline metric, the parameters that identify a variant in result
tables, the Selective RoPE recipe it uses, and the files a trained model keeps from its data
(the corpus tokenizer) or that identify the data (a corpus fingerprint). The runner, the
trainer's progress bar and the CLI read these; none of them compares a task's name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selrope.data import corpus_fingerprint
from selrope.data.reader import TOKENIZER_FILE
from selrope.rotary import (
    SELECTIVE_COPYING_RECIPE,
    SELECTIVE_LM_RECIPE,
    SELECTIVE_STATE_TRACKING_RECIPE,
)
from selrope.tasks.base import TaskData
from selrope.tasks.copying import build_copying
from selrope.tasks.language_modeling import build_language_modeling
from selrope.tasks.mad import (
    PARAMETER_MEANINGS,
    build_compression,
    build_fuzzy_recall,
    build_in_context_recall,
    build_memorization,
    build_noisy_recall,
    build_selective_copying,
)
from selrope.tasks.mqar import build_mqar
from selrope.tasks.state_tracking import build_state_tracking

HEADLINE_METRICS = ("sequence_accuracy", "token_accuracy", "perplexity")


def _no_files(params: dict[str, Any]) -> list[Path]:
    return []


def _no_fingerprint(params: dict[str, Any]) -> dict[str, Any] | None:
    return None


@dataclass(frozen=True)
class TaskSpec:
    """One registered task.

    Attributes:
        name: the ``--task`` name.
        build: ``build(seed, **params) -> TaskData``.
        help: one line per parameter of ``build`` (every parameter has one).
        headline_metric: "sequence_accuracy", "token_accuracy" or "perplexity": the result
            tables' number and the progress bar's.
        identity: the parameters that name a variant in result rows (e.g. the group).
        selective_recipe: the Selective RoPE config the task's ``selective`` position uses.
        required: parameters without a usable default.
        model_files: the data's files a trained model keeps beside its weights.
        fingerprint: what identifies the data a run trained on (None: the parameters do).
    """

    name: str
    build: Callable[..., TaskData]
    help: dict[str, str]
    headline_metric: str = "sequence_accuracy"
    identity: tuple[str, ...] = ()
    selective_recipe: dict[str, Any] = field(default_factory=lambda: {"type": "selective"})
    required: tuple[str, ...] = ()
    model_files: Callable[[dict[str, Any]], list[Path]] = _no_files
    fingerprint: Callable[[dict[str, Any]], dict[str, Any] | None] = _no_fingerprint

    def defaults(self) -> dict[str, Any]:
        """The parameters and their defaults (the builder's keyword arguments)."""
        signature = inspect.signature(self.build)
        return {p.name: p.default for p in signature.parameters.values() if p.name != "seed"}

    @property
    def report_metric(self) -> str:
        """The result tables' column: "perplexity" or "accuracy" (the headline accuracy)."""
        return "perplexity" if self.headline_metric == "perplexity" else "accuracy"


def _corpus_tokenizer(params: dict[str, Any]) -> list[Path]:
    path = Path(params["data"]) / TOKENIZER_FILE
    return [path] if path.is_file() else []


def _corpus_fingerprint(params: dict[str, Any]) -> dict[str, Any]:
    """The corpus' tokenizer digest, vocabulary, end-of-text id and token counts per split:
    cheap, and enough to tell a replaced corpus from the one a run trained on."""
    options = {key: params[key] for key in ("vocab_size", "eos_id") if key in params}
    return corpus_fingerprint(params["data"], **options)


_SYNTHETIC_SIZES = {
    "num_train": "number of training rows.",
    "num_test": "rows per test length.",
}
_MAD = {
    "vocab_size": PARAMETER_MEANINGS["vocab_size"],
    "seq_len": PARAMETER_MEANINGS["seq_len"],
    "num_train": "number of training rows.",
    "num_test": "number of test rows.",
}


def _mad(name: str, build: Callable[..., TaskData], **extra: str) -> TaskSpec:
    return TaskSpec(name, build, {**_MAD, **extra}, headline_metric="token_accuracy")


TASK_SPECS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "state_tracking",
            build_state_tracking,
            {
                "group": 'group name, e.g. "Z2" (parity), "S3", "A5", "A5xZ2".',
                "train_len": "word length k of the training rows.",
                "test_lens": "word lengths of the test sets (the paper: 512).",
                **_SYNTHETIC_SIZES,
            },
            identity=("group",),
            selective_recipe=dict(SELECTIVE_STATE_TRACKING_RECIPE),
        ),
        TaskSpec(
            "mqar",
            build_mqar,
            {
                "seq_len": "L of the training rows; a list trains on a mixture of lengths.",
                "num_kv_pairs": "n for each entry of seq_len (an int applies to all).",
                "vocab_size": "V (Zoology: 8192).",
                "num_train": "training rows per (L, n) setting (Zoology figure 2: 100,000).",
                "test_lens": "test lengths (default: the training lengths).",
                "test_kv_pairs": "n for each test length (default: the training n, else L // 16).",
                "num_test": "rows per test length (Zoology: 3,000).",
                "power_a": "gap power-law exponent.",
                "random_non_queries": "fill the query region's non-query positions with random "
                "tokens from [1, V) instead of 0.",
            },
            headline_metric="token_accuracy",
            identity=("num_kv_pairs", "vocab_size"),
        ),
        TaskSpec(
            "copying",
            build_copying,
            {
                "context_len": "packed training context C (the paper: 420).",
                "min_len": "shortest training string (the paper: 2).",
                "max_len": "longest training string (the paper: 64).",
                "num_train": "packed training rows.",
                "test_lens": "string lengths to test (the paper: 2..511).",
                "num_test": "rows per test length (the paper: 1,000).",
                "test_pad_to": "minimum test-row width: rows right-padded with * (targets -100).",
            },
            selective_recipe=dict(SELECTIVE_COPYING_RECIPE),
        ),
        _mad("mad_in_context_recall", build_in_context_recall),
        _mad(
            "mad_noisy_recall",
            build_noisy_recall,
            noise_vocab_size="how many of the V tokens are noise tokens.",
            frac_noise="the fraction of positions filled with noise tokens.",
        ),
        _mad(
            "mad_fuzzy_recall",
            build_fuzzy_recall,
            k_motif_size="the longest key motif, in tokens.",
            v_motif_size="the longest value motif, in tokens.",
            num_motifs="key-value motifs per row; none: as many as fit.",
        ),
        _mad(
            "mad_selective_copying",
            build_selective_copying,
            num_tokens_to_copy="how many tokens each row asks to copy.",
        ),
        _mad(
            "mad_memorization",
            build_memorization,
            map_seed="seed of the fixed key -> value map to memorize.",
        ),
        _mad("mad_compression", build_compression),
        TaskSpec(
            "lm",
            build_language_modeling,
            {
                "data": "a folder written by selrope data prepare (its tokens and tokenizer).",
                "seq_len": "training length L.",
                "packing": "reset (each document as if alone) or concat (the GPT-2 stream).",
                "val_tokens": "validation tokens: the first val_tokens // seq_len windows.",
                "vocab_size": "the model's vocabulary for shards without a tokenizer.json "
                "(GPT-2: 50257); may pad the tokenizer's, never undercut it.",
                "eos_id": "the end-of-text id that starts each document, for shards without a "
                "tokenizer.json (GPT-2: 50256).",
            },
            headline_metric="perplexity",
            identity=("data",),
            selective_recipe=dict(SELECTIVE_LM_RECIPE),
            required=("data",),
            model_files=_corpus_tokenizer,
            fingerprint=_corpus_fingerprint,
        ),
    )
}
"""Every registered task by name."""


def task_spec(name: str) -> TaskSpec:
    """The registered task ``name``; ValueError naming the allowed ones."""
    if name not in TASK_SPECS:
        raise ValueError(f"task must be one of {', '.join(sorted(TASK_SPECS))}; got {name!r}")
    return TASK_SPECS[name]
