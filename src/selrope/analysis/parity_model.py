"""The parity model that ``selrope analyze complex`` and ``angles`` look inside: trained here
(the demo's model, shorter) or loaded from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from selrope.demo import DEMO_RUN
from selrope.experiments import run_one
from selrope.models import LanguageModel
from selrope.models.io import model_directory
from selrope.tasks import build_task
from selrope.tasks.base import as_batch_source
from selrope.training import evaluate

PARITY_TOKENS = (0, 1)  # token 1 flips the parity, token 0 keeps it
BOS = 2
TEST_LENGTHS = (64, 256)
DEFAULT_STEPS = 1000
# The demo's model and data (1-layer GLA, d 64, 4 heads, tied pair decays, no MLP, full-rank
# Selective RoPE with the state-tracking recipe), trained for DEFAULT_STEPS on the CPU.
PARITY_RUN = {
    **DEMO_RUN,
    "task": {**DEMO_RUN["task"], "test_lens": list(TEST_LENGTHS)},
    "train": {
        **DEMO_RUN["train"],
        "steps": DEFAULT_STEPS,
        "eval_every": DEFAULT_STEPS,
        "device": "cpu",
    },
}
TEST_WORDS = PARITY_RUN["task"]["num_test"]


def train_parity_model(
    out_dir: Path, seed: int, steps: int = DEFAULT_STEPS
) -> tuple[LanguageModel, dict[int, float]]:
    """Train ``PARITY_RUN`` with ``seed`` for ``steps`` into the run folder ``out_dir``
    (replacing an earlier run there).

    Returns:
        the trained model (eval mode) and its sequence accuracy on the run's test sets
        (``parity_test_sets(seed)``), ``{length: accuracy}``.
    """
    if steps < 1:
        raise ValueError(f"--steps must be a positive integer; got {steps}")
    run = {
        **PARITY_RUN,
        "run": {**PARITY_RUN["run"], "seed": seed, "out": str(out_dir), "overwrite": True},
        "train": {**PARITY_RUN["train"], "steps": steps, "eval_every": steps},
    }
    rows = run_one(run, progress=False)
    accuracy = {row["test_len"]: row["sequence_accuracy"] for row in rows}
    return LanguageModel.from_pretrained(out_dir / "model").eval(), accuracy


def load_parity_model(checkpoint: str) -> LanguageModel:
    """The model saved in ``checkpoint`` (a model folder or a run folder holding ``model/``).

    Raises:
        ValueError: no model there, or not a parity model (vocabulary 0, 1, BOS).
    """
    model = LanguageModel.from_pretrained(model_directory(checkpoint)).eval()
    if model.config.vocab_size != len(PARITY_TOKENS) + 1:
        raise ValueError(
            "expected a parity (Z2 state tracking) model with vocab_size 3; got "
            f"{model.config.vocab_size}"
        )
    return model


def parity_test_sets(
    seed: int, num_words: int = TEST_WORDS
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``{length: (inputs, targets)}``, each ``(num_words, length + 1)`` with BOS first: the
    test words a ``PARITY_RUN`` run of this seed is evaluated on (the same random streams;
    a run also redraws any test word equal to one of its 10,000 training words, which at
    2^64 possible words does not happen in practice)."""
    data = build_task(
        "state_tracking",
        seed=seed,
        group="Z2",
        train_len=PARITY_RUN["task"]["train_len"],
        test_lens=list(TEST_LENGTHS),
        num_train=1,
        num_test=num_words,
    )
    return data.tests


def parity_accuracy(
    model: LanguageModel, tests: dict[int, tuple[torch.Tensor, torch.Tensor]]
) -> dict[int, float]:
    """Sequence accuracy (every running parity right) of ``model`` on each test set."""
    return {
        length: evaluate(model, as_batch_source(split), batch_size=split[0].shape[0])[
            "sequence_accuracy"
        ]
        for length, split in tests.items()
    }


def describe_model(model: LanguageModel, source: str, accuracy: dict[int, float], seed: int) -> str:
    """One markdown paragraph: where the model comes from, its shape and its parity accuracy."""
    config = model.config
    rotary = config.rotary
    mixer = config.layer_mixer_configs()[0].to_dict()
    options = "".join(
        f"{key} {mixer[key]}, "
        for key in ("tie_pair_decay", "relative_positions")
        if mixer.get(key) not in (None, "none")
    )
    shape = (
        f"{config.n_layers}-layer {'/'.join(dict.fromkeys(config.layer_mixers()))}, d "
        f"{config.d_model}, {config.n_heads} heads, {options}"
        f"mlp_ratio {config.mlp_ratio:g}; rotary {rotary.get('type')} "
        f"({rotary.get('projection', '-')} projection, frequencies {rotary.get('frequencies', '-')}"
        f", theta_base {rotary.get('theta_base', '-')})"
    )
    scores = ", ".join(f"length {n}: {a:.2f}" for n, a in accuracy.items())
    return (
        f"Model: {source}: {shape}. Sequence accuracy (every running parity right) on "
        f"{TEST_WORDS} test words of seed {seed}: {scores}."
    )
