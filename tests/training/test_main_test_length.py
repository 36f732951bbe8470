"""Each task's training length (TaskData.train_length) is the length early stopping watches."""

from __future__ import annotations

import pytest

from selrope.tasks import build_task
from selrope.training import main_test_length

SMALL = {"num_train": 8, "num_test": 4}


@pytest.mark.parametrize(
    ("name", "params", "train_length", "main"),
    [
        # Copying trains on strings of 2..max_len: its main length is max_len, not test_lens[0].
        ("copying", {"context_len": 40, "max_len": 16, "test_lens": [8, 16, 32]}, 16, 16),
        ("copying", {"context_len": 40, "max_len": 12, "test_lens": [8, 16, 32]}, 12, 8),
        # Several training word lengths: the longest.
        ("state_tracking", {"group": "Z2", "train_len": [4, 6], "test_lens": [4, 6, 12]}, 6, 6),
        ("state_tracking", {"group": "Z2", "train_len": "3..5", "test_lens": [5, 10]}, 5, 5),
        ("mqar", {"seq_len": [32, 64], "num_kv_pairs": [4, 8], "test_lens": [64, 128]}, 64, 64),
        ("mad_selective_copying", {"seq_len": 64}, 64, 64),
    ],
)
def test_main_length_is_the_training_length(name, params, train_length, main) -> None:
    data = build_task(name, seed=0, **SMALL, **params)
    assert data.train_length == train_length
    assert main_test_length(data) == main
