"""The trainer on a prepared corpus with the real LanguageModel: packed rows, resume, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from selrope.cli import main
from selrope.data import prepare_corpus
from selrope.models import LanguageModel, LMConfig
from selrope.rotary import SELECTIVE_LM_RECIPE
from selrope.tasks import build_task
from selrope.training import TrainConfig, read_metrics, train

TEXTS = [
    "It was the best of times, it was the worst of times.\n" * 3,
    "Call me Ishmael. Some years ago, never mind how long precisely.\n",
    "In the beginning was the word.\n" * 4,
    "All happy families are alike; each unhappy family is unhappy in its own way.\n" * 2,
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts")
    for i, text in enumerate(TEXTS):
        (folder / f"book{i}.txt").write_text(text)
    out = tmp_path_factory.mktemp("corpus")
    prepare_corpus([folder], "byte", out, val_documents=["book1.txt"], progress=False)
    return out


class InterruptedRunError(Exception):
    """Stands in for a kill in the middle of a run."""


class KilledAfter(LanguageModel):
    """A LanguageModel whose training forward number k+1 raises (a process killed mid-run)."""

    def __init__(self, config: LMConfig, k: int):
        super().__init__(config)
        self.k, self.calls = k, 0

    def forward(self, input_ids, cache=None, use_cache=False, cu_seqlens=None, segment_ids=None):
        if self.training:
            self.calls += 1
            if self.calls > self.k:
                raise InterruptedRunError
        return super().forward(input_ids, cache, use_cache, cu_seqlens, segment_ids)


def model_config(vocab_size: int) -> LMConfig:
    return LMConfig(
        vocab_size=vocab_size,
        d_model=32,
        n_layers=2,
        n_heads=2,
        mixer=["gla", "attention"],
        rotary=dict(SELECTIVE_LM_RECIPE),
        chunk_size=16,
    )


def run_config(out_dir, **overrides) -> TrainConfig:
    settings = dict(
        steps=6,
        batch_size=4,
        lr=3e-3,
        eval_every=3,
        eval_batch_size=4,
        log_every=1,
        checkpoint_every=2,
        device="cpu",
        out_dir=str(out_dir),
    )
    return TrainConfig(**{**settings, **overrides})


def losses(out_dir, split: str = "train") -> list[float]:
    return [row["loss"] for row in read_metrics(out_dir) if row["split"] == split]


def test_packed_lm_run_resumes_bit_for_bit(corpus, tmp_path):
    data = build_task("lm", data=str(corpus), seq_len=32, val_tokens=64)
    torch.manual_seed(0)
    straight = KilledAfter(model_config(data.vocab_size), k=10**9)
    final = train(straight, data, run_config(tmp_path / "straight"), progress=False)
    expected = losses(tmp_path / "straight")
    assert len(expected) == 6 and all(math.isfinite(x) for x in expected)
    validation = final["tests"][32]
    assert validation["perplexity"] == pytest.approx(math.exp(validation["loss"]))
    assert [
        row["perplexity"] for row in read_metrics(tmp_path / "straight") if row["split"] == "test"
    ]

    torch.manual_seed(0)
    with pytest.raises(InterruptedRunError):
        train(KilledAfter(model_config(data.vocab_size), k=5), data, run_config(tmp_path / "run"))
    torch.manual_seed(123)  # other weights and RNG state: everything must come from the checkpoint
    resumed = KilledAfter(model_config(data.vocab_size), k=10**9)
    train(resumed, data, run_config(tmp_path / "run"), resume=True, progress=False)
    assert losses(tmp_path / "run") == expected
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_validation_keeps_documents_apart(corpus):
    """The validation loss of packed windows equals the loss of each document scored alone."""
    data = build_task("lm", data=str(corpus), seq_len=16, val_tokens=64)
    torch.manual_seed(0)
    model = LanguageModel(model_config(data.vocab_size)).eval()
    val = data.tests[16]
    batch = val.rows(torch.arange(val.num_rows))
    with torch.no_grad():
        packed = model(batch.inputs, segment_ids=batch.segment_ids)
        for row in range(val.num_rows):
            ids = batch.segment_ids[row]
            for document in ids.unique():
                span = (ids == document).nonzero().flatten()
                alone = model(batch.inputs[row : row + 1, span])
                torch.testing.assert_close(packed[row : row + 1, span], alone, atol=1e-5, rtol=0)


def test_cli_trains_a_language_model_and_saves_the_tokenizer(corpus, tmp_path, capsys):
    out = tmp_path / "cli-run"
    argv = ["train", "--task", "lm", "--data", str(corpus), "--seq-len", "16", "--mixer", "gdn"]
    argv += ["--rotary", "rope", "--d-model", "32", "--n-layers", "1", "--n-heads", "2"]
    argv += ["--steps", "2", "--batch-size", "2", "--val-tokens", "32", "--out", str(out)]
    main(argv)
    result = json.loads((out / "results.json").read_text())
    row = result["rows"][0] if isinstance(result, dict) else result[0]
    assert row["task"] == "lm" and row["test_len"] == 16
    assert row["perplexity"] == pytest.approx(math.exp(row["loss"]))
    assert (out / "model" / "tokenizer.json").is_file()
    reloaded = LanguageModel.from_pretrained(out / "model")
    assert reloaded.config.vocab_size == 257
