"""The trainer on a prepared corpus with the real LanguageModel: packed rows, resume, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from selrope.cli import main
from selrope.data import prepare_corpus
from selrope.models import LanguageModel, LMConfig
from selrope.rotary import SELECTIVE_LM_RECIPE
from selrope.tasks import build_task
from selrope.tasks.language_modeling import CorpusWindows
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
    return LMConfig.from_dict(
        dict(
            vocab_size=vocab_size,
            d_model=32,
            n_layers=2,
            n_heads=2,
            mixer=["gla", "attention"],
            rotary=dict(SELECTIVE_LM_RECIPE),
            chunk_size=16,
        )
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


def write_llmc_shard(path, tokens) -> None:
    """A shard as a few lines of numpy write one in llm.c's format (uint16 tokens)."""
    header = np.zeros(256, dtype=np.int32)
    header[:3] = (20240520, 1, len(tokens))
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes())


TINY_LM = ["--seq-len", "16", "--mixer", "gla", "--rotary", "rope", "--d-model", "16",
           "--n-layers", "1", "--n-heads", "2", "--batch-size", "2", "--val-tokens", "32",
           "--log-every", "1"]  # fmt: skip


def train_losses(out) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if row["split"] == "train"]


def test_llmc_shards_written_by_numpy_train_from_the_command_line(tmp_path):
    rng = np.random.default_rng(0)
    eos = 50  # a 64-token vocabulary with no tokenizer.json beside the shards
    documents = [rng.integers(0, 50, rng.integers(5, 40)) for _ in range(60)]
    stream = np.concatenate([np.concatenate([[eos], d]) for d in documents])
    data = tmp_path / "shards"
    data.mkdir()
    write_llmc_shard(data / "fineweb_val_000000.bin", stream[:200])
    write_llmc_shard(data / "fineweb_train_000001.bin", stream[200:700])
    write_llmc_shard(data / "fineweb_train_000002.bin", stream[700:])
    out = tmp_path / "run"
    argv = ["train", "--task", "lm", "--data", str(data), *TINY_LM, "--steps", "3"]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(out)])
    assert exit_.value.code == 2 and not out.exists()  # no tokenizer.json: refused up front
    main([*argv, "--vocab-size", "64", "--eos-id", str(eos), "--out", str(out)])
    losses = train_losses(out)
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert LanguageModel.from_pretrained(out / "model").config.vocab_size == 64


class Killed(BaseException):
    """Stands in for the process being killed (no handler catches it)."""


def test_a_killed_run_on_sharded_data_resumes_to_the_same_losses(tmp_path, monkeypatch):
    folder = tmp_path / "texts"
    folder.mkdir()
    for i, text in enumerate(TEXTS * 3):
        (folder / f"book{i}.txt").write_text(text)
    corpus = tmp_path / "corpus"
    prepare_corpus([folder], "byte", corpus, val_documents=["book1.txt"], shard_tokens=100,
                   progress=False)  # fmt: skip
    assert len(list(corpus.glob("train_*.bin"))) > 5
    argv = ["train", "--task", "lm", "--data", str(corpus), *TINY_LM, "--steps", "5",
            "--checkpoint-every", "2"]  # fmt: skip
    main([*argv, "--out", str(tmp_path / "straight")])
    expected = train_losses(tmp_path / "straight")
    assert len(expected) == 5

    real_rows = CorpusWindows.rows
    train_calls = []

    def rows_then_die(self, indices):
        if self.split.doc_starts.size > 3:  # the train split (val is one book)
            train_calls.append(len(indices))
            if len(train_calls) == 4:  # the batch of step 4, after the checkpoint of step 2
                raise Killed
        return real_rows(self, indices)

    monkeypatch.setattr(CorpusWindows, "rows", rows_then_die)
    with pytest.raises(Killed):
        main([*argv, "--out", str(tmp_path / "run")])
    monkeypatch.undo()
    main([*argv, "--out", str(tmp_path / "run"), "--resume"])
    assert train_losses(tmp_path / "run")[-3:] == expected[-3:]
    assert train_losses(tmp_path / "run") == expected
