import csv
import math

import pytest
import torch
from torch import nn

from selrope.tasks.base import TensorBatches
from selrope.training.metrics import METRIC_COLUMNS, MetricsLog, evaluate, model_logits

IGN = -100


class FixedLogits(nn.Module):
    """Predicts token (input + 1) % V at each position, with logits 0/10."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids):
        return nn.functional.one_hot((input_ids + 1) % self.vocab_size, self.vocab_size) * 10.0


def test_evaluate_batches_add_up_and_restore_train_mode():
    inputs = torch.tensor([[0, 1, 2], [1, 1, 1], [2, 0, 1]])
    targets = torch.tensor([[1, 2, 0], [2, 0, 2], [IGN, IGN, 2]])  # row 1 wrong at t=1
    model = FixedLogits(3).train()
    whole = evaluate(model, TensorBatches(inputs, targets), batch_size=3)
    batched = evaluate(model, TensorBatches(inputs, targets), batch_size=2)
    assert model.training
    for result in (whole, batched):
        assert result["token_accuracy"] == pytest.approx(6 / 7)
        assert result["sequence_accuracy"] == pytest.approx(2 / 3)
        assert result["prefix_accuracy"] == pytest.approx([1.0, 2 / 3, 2 / 3])
    right = -math.log(math.exp(10) / (math.exp(10) + 2))
    wrong = -math.log(1 / (math.exp(10) + 2))
    assert whole["loss"] == pytest.approx((6 * right + wrong) / 7)
    assert whole["perplexity"] == pytest.approx(math.exp(whole["loss"]))
    assert batched["loss"] == pytest.approx(whole["loss"])


def test_model_logits_unwraps_tuples():
    model = FixedLogits(4)
    x = torch.tensor([[0, 3]])
    assert torch.equal(model_logits(model, x), model(x))
    wrapped = nn.Module()
    wrapped.forward = lambda ids: (model(ids), "cache")
    assert torch.equal(model_logits(wrapped, x), model(x))


def test_metrics_log_writes_same_rows_to_jsonl_and_csv(tmp_path):
    log = MetricsLog(tmp_path)
    log.append({"step": 1, "split": "train", "length": 8, "loss": 0.5, "lr": 1e-3})
    log.append({"step": 2, "split": "test", "length": 16, "loss": 0.25, "sequence_accuracy": 1.0})
    log.append({"step": 3, "split": "train", "length": 8, "loss": 0.125})
    rows = log.rows()
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(tuple(r) == METRIC_COLUMNS for r in rows)
    assert rows[0]["token_accuracy"] is None
    with (tmp_path / "metrics.csv").open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == METRIC_COLUMNS
        csv_rows = list(reader)
    assert [float(r["loss"]) for r in csv_rows] == [0.5, 0.25, 0.125]
    assert csv_rows[0]["token_accuracy"] == ""

    log.truncate_after(2)
    assert [r["step"] for r in log.rows()] == [1, 2]
    with (tmp_path / "metrics.csv").open() as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2"]

    with pytest.raises(ValueError, match="unknown metric columns"):
        log.append({"step": 4, "accuracy": 1.0})
