import pytest
import torch

from selrope.tasks import IGNORE_INDEX, build_task, mqar


def check_rows(x, y, n_kv, vocab):
    N, L = x.shape
    half = vocab // 2
    keys, values = x[:, 0 : 2 * n_kv : 2], x[:, 1 : 2 * n_kv : 2]
    assert torch.all((keys >= 1) & (keys < half)) and torch.all((values >= half) & (values < vocab))
    for row_keys, row_values in zip(keys, values, strict=True):
        assert len(set(row_keys.tolist())) == n_kv and len(set(row_values.tolist())) == n_kv
    mask = y != IGNORE_INDEX
    assert torch.all(mask.sum(1) == n_kv)
    assert not mask[:, : 2 * n_kv].any()
    rows, pos = mask.nonzero(as_tuple=True)
    assert torch.all((pos - 2 * n_kv) % 2 == 0)
    for r, p in zip(rows.tolist(), pos.tolist(), strict=True):
        query = x[r, p]
        i = (keys[r] == query).nonzero().item()  # the query is one of this row's keys
        assert y[r, p] == values[r, i]
    # each key is queried exactly once
    queried = torch.sort(x[mask].view(N, n_kv), dim=1).values
    assert torch.equal(queried, torch.sort(keys, dim=1).values)


@pytest.mark.parametrize("L,n_kv", [(64, 4), (128, 8), (256, 16)])
def test_standard_grid(L, n_kv):
    d = build_task(
        "mqar", 0, seq_len=L, num_kv_pairs=n_kv, vocab_size=8192, num_train=200, num_test=50
    )
    assert list(d.tests) == [L] and d.vocab_size == 8192
    for x, y in [d.train, d.tests[L]]:
        assert x.shape[1] == L
        check_rows(x, y, n_kv, 8192)
        non_query = (y == IGNORE_INDEX) & (torch.arange(L) >= 2 * n_kv)
        assert torch.all(x[non_query] == 0)


def test_random_non_queries_and_gap_power_law():
    x, y = mqar(2000, 64, 4, 256, seed=7, random_non_queries=True)
    check_rows(x, y, 4, 256)
    non_query = (y == IGNORE_INDEX) & (torch.arange(64) >= 8)
    assert torch.all((x[non_query] >= 1) & (x[non_query] < 256))
    # a = 0.01 puts far more mass on small gaps than a uniform draw would
    gaps = ((y != IGNORE_INDEX).nonzero()[:, 1] - 8) // 2
    assert (gaps < 6).float().mean() > 0.3


def test_mixture_and_defaults_for_test_kv():
    d = build_task(
        "mqar",
        1,
        seq_len=[64, 128],
        num_kv_pairs=[4, 8],
        num_train=50,
        test_lens=[64, 256],
        num_test=20,
        vocab_size=1024,
    )
    x, y = d.train
    assert x.shape == (100, 128)
    assert sorted((y != IGNORE_INDEX).sum(1).unique().tolist()) == [4, 8]
    assert d.params["test_kv_pairs"] == [4, 16]
    check_rows(*d.tests[256], 16, 1024)


@pytest.mark.parametrize(
    "params",
    [
        {"seq_len": 63},
        {"seq_len": 64, "num_kv_pairs": 17},
        {"vocab_size": 8, "num_kv_pairs": 4},
        {"power_a": 0.0},
        {"seq_len": [64, 128], "num_kv_pairs": [4, 8, 16]},
        {"test_lens": [64, 64]},
        {"num_kv_pairs": 0},
        {"vocab": 10},
    ],
)
def test_bad_parameters(params):
    with pytest.raises(ValueError):
        build_task("mqar", 0, **params)
