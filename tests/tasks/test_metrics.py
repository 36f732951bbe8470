import math

import pytest
import torch

from selrope.tasks import accuracy_by_prefix_length, masked_accuracy

I = -100


def test_masked_accuracy_hand_made():
    targets = torch.tensor([[1, 2, I, 4], [I, I, I, I], [5, I, 6, 7], [1, 1, 1, 1]])
    preds = torch.tensor([[1, 2, 9, 4], [0, 0, 0, 0], [5, 3, 0, 7], [1, 1, 1, 0]])
    m = masked_accuracy(preds, targets)
    assert m["num_tokens"] == 10 and m["num_sequences"] == 3
    assert m["token_accuracy"] == pytest.approx(8 / 10)
    assert m["sequence_accuracy"] == pytest.approx(1 / 3)


def test_masked_accuracy_empty_is_nan():
    m = masked_accuracy(torch.zeros(2, 3, dtype=torch.long), torch.full((2, 3), I))
    assert math.isnan(m["token_accuracy"]) and math.isnan(m["sequence_accuracy"])


def test_accuracy_by_prefix_length():
    targets = torch.tensor([[1, 2, 3, 4], [1, I, 3, 4], [1, 2, 3, 4]])
    preds = torch.tensor([[1, 2, 0, 4], [1, 0, 3, 0], [0, 2, 3, 4]])
    curve = accuracy_by_prefix_length(preds, targets)
    assert torch.allclose(curve, torch.tensor([2 / 3, 2 / 3, 1 / 3, 0.0]))


def test_shape_mismatch():
    with pytest.raises(ValueError):
        masked_accuracy(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
