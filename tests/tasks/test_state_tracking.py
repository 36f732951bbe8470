import numpy as np
import pytest
import torch

from selrope.tasks import IGNORE_INDEX, build_task, get_group, state_tracking


def brute_force_labels(group, words):
    out = []
    for row in words.tolist():
        perm, labels = tuple(range(group.degree)), []
        for x in row:
            perm = group.compose(perm, group.elements[x])
            labels.append(group.index(perm))
        out.append(labels)
    return torch.tensor(out)


@pytest.mark.parametrize("name", ["Z2", "S3", "A5xZ2"])
def test_labels_are_running_products(name):
    g = get_group(name)
    x, y = state_tracking(name, 12, 30, seed=1)
    assert x.shape == y.shape == (30, 12) and x.dtype == y.dtype == torch.long
    assert torch.equal(y, brute_force_labels(g, x))


def test_parity_labels_are_cumulative_xor():
    x, y = state_tracking("Z2", 50, 64, seed=np.random.default_rng(0))
    assert torch.equal(y, x.cumsum(1) % 2)


def test_bos_dataset_layout():
    d = build_task(
        "state_tracking",
        3,
        group="S3",
        train_len=16,
        test_lens=[16, 64],
        num_train=200,
        num_test=50,
    )
    g = get_group("S3")
    assert d.name == "state_tracking" and d.vocab_size == 7
    x, y = d.train
    assert x.shape == y.shape == (200, 17)
    assert torch.all(x[:, 0] == 6) and torch.all(y[:, 0] == 0) and torch.all(x[:, 1:] < 6)
    assert torch.equal(y[:, 1:], brute_force_labels(g, x[:, 1:]))
    assert sorted(d.tests) == [16, 64] and d.tests[64][0].shape == (50, 65)
    xt, yt = d.tests[64]
    assert torch.equal(yt[:, 1:], brute_force_labels(g, xt[:, 1:]))


def test_test_words_disjoint_from_train_when_space_is_small():
    # Z2 words of length 8: 256 of them; 200 training rows cover most.
    d = build_task(
        "state_tracking", 0, group="Z2", train_len=8, test_lens=[8], num_train=200, num_test=40
    )
    train = {tuple(r) for r in d.train[0][:, 1:].tolist()}
    test = [tuple(r) for r in d.tests[8][0][:, 1:].tolist()]
    assert len(set(test)) == len(test) == 40 and not train & set(test)
    with pytest.raises(ValueError, match="num_test"):
        build_task(
            "state_tracking", 0, group="Z2", train_len=4, test_lens=[4], num_train=500, num_test=5
        )


def test_mixed_training_lengths_are_padded_with_ignored_targets():
    g = get_group("A4")
    d = build_task(
        "state_tracking",
        5,
        group="A4",
        train_len="4..12",
        test_lens=[24],
        num_train=300,
        num_test=10,
    )
    x, y = d.train
    assert x.shape == (300, 13)
    valid = y != IGNORE_INDEX
    lengths = valid.sum(1) - 1
    assert lengths.min() == 4 and lengths.max() == 12
    # valid positions form a prefix, and padded inputs are the identity token
    assert torch.equal(valid, torch.arange(13)[None] <= lengths[:, None])
    assert torch.all(x[~valid] == 0)
    for n in range(0, 300, 37):
        k = int(lengths[n])
        assert torch.equal(y[n, 1 : k + 1], brute_force_labels(g, x[n : n + 1, 1 : k + 1])[0])
    assert d.params["train_len"] == "4..12"
    d2 = build_task(
        "state_tracking", 5, group="Z3", train_len=[3, 7], num_train=100, test_lens=[7], num_test=5
    )
    assert set(((d2.train[1] != IGNORE_INDEX).sum(1) - 1).tolist()) == {3, 7}


@pytest.mark.parametrize(
    "params",
    [
        {"group": "Q8"},
        {"train_len": 0},
        {"train_len": "9..3"},
        {"train_len": "a..b"},
        {"test_lens": []},
        {"num_train": 0},
        {"num_test": -1},
        {"train_len": 2.5},
    ],
)
def test_bad_parameters(params):
    with pytest.raises(ValueError):
        build_task("state_tracking", 0, **params)
