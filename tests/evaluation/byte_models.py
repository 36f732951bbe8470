"""Tiny models on the byte tokenizer saved like training runs, and the reference the lm-eval tests
compare with: a model's own log-probability of a text (imported as ``byte_models``)."""

from __future__ import annotations

from pathlib import Path

import torch

from selrope.data import prepare_corpus
from selrope.models import LanguageModel, LMConfig

EOS_ID = 256  # the byte tokenizer: id == byte value, <|endoftext|> = 256


def save_byte_run(
    root: Path, mixer: str = "gla", rotary: dict | None = None, seed: int = 0, **overrides
) -> Path:
    """A 1-layer, d 16 model with every parameter moved off its initial value, saved as
    ``root/run/model/`` with the byte corpus tokenizer beside the weights; returns ``root/run``."""
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("a small corpus for the tokenizer")
    (root / "docs" / "b.txt").write_text("and a second document")
    prepare_corpus([root / "docs"], "byte", root / "data", progress=False)
    config = LMConfig.from_dict(
        dict(
            vocab_size=257,
            d_model=16,
            n_layers=1,
            n_heads=2,
            mixer=mixer,
            rotary=rotary or {"type": "nope"},
            chunk_size=8,
            **overrides,
        )
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LanguageModel(config)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5 * torch.randn_like(p))
    model.save_pretrained(root / "run" / "model")
    (root / "run" / "model" / "tokenizer.json").write_bytes(
        (root / "data" / "tokenizer.json").read_bytes()
    )
    return root / "run"


def own_logprob(model: LanguageModel, context: str, continuation: str) -> float:
    """Summed log-probability of the continuation's bytes after the context's bytes, from one
    unbatched forward pass (log-softmax in float64); an empty context reads the continuation
    after EOS."""
    context_ids = list(context.encode()) or [EOS_ID]
    ids = torch.tensor([context_ids + list(continuation.encode())])
    with torch.no_grad():
        logprobs = model(ids[:, :-1]).double().log_softmax(-1)[0]
    targets = ids[0, len(context_ids) :]
    return float(logprobs[len(context_ids) - 1 :].gather(-1, targets[:, None]).sum())


def greedy_ids(model: LanguageModel, context_ids: list[int], n_tokens: int) -> list[int]:
    """The ``n_tokens`` ids greedy decoding appends to ``context_ids`` (full recompute)."""
    ids = list(context_ids)
    with torch.no_grad():
        for _ in range(n_tokens):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(context_ids) :]
