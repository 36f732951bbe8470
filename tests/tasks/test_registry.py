import json
import random

import numpy as np
import pytest
import torch

from selrope.tasks import TASKS, build_task, mqar, state_tracking, task_parameters
from selrope.tasks.copying import copying_train

SMALL = {
    "state_tracking": {
        "group": "S3",
        "train_len": 10,
        "test_lens": [10, 20],
        "num_train": 64,
        "num_test": 16,
    },
    "mqar": {"seq_len": 64, "num_kv_pairs": 4, "num_train": 64, "num_test": 16},
    "copying": {
        "context_len": 80,
        "max_len": 10,
        "num_train": 16,
        "test_lens": [5, 40],
        "num_test": 8,
    },
}


# The corpus-backed "lm" task draws nothing at random; tests/tasks/test_language_modeling.py.
SYNTHETIC = sorted(name for name in TASKS if name != "lm")


def small_params(name):
    if name in SMALL:
        return SMALL[name]
    return {"num_train": 32, "num_test": 8}


def tensors(d):
    out = list(d.train)
    for k in sorted(d.tests):
        out += list(d.tests[k])
    return out


@pytest.mark.parametrize("name", SYNTHETIC)
def test_contract_and_determinism(name):
    params = small_params(name)
    a = build_task(name, 11, **params)
    b = build_task(name, 11, **params)
    c = build_task(name, 12, **params)
    assert a.name == name and json.loads(json.dumps(a.params)) == a.params
    for t in tensors(a):
        assert t.dtype == torch.long and t.dim() == 2
    for x, y in [a.train, *a.tests.values()]:
        assert x.shape == y.shape and int(x.min()) >= 0 and int(x.max()) < a.vocab_size
        valid = y[y != -100]
        assert valid.numel() > 0 and int(valid.min()) >= 0 and int(valid.max()) < a.vocab_size
    assert all(torch.equal(s, t) for s, t in zip(tensors(a), tensors(b), strict=True))
    assert not torch.equal(a.train[0], c.train[0])


@pytest.mark.parametrize("name", SYNTHETIC)
def test_global_rng_untouched(name):
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    first = build_task(name, 4, **small_params(name))
    after = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(after[0], expected[0]) and np.array_equal(after[1], expected[1])
    assert after[2] == expected[2]
    torch.manual_seed(123)
    np.random.seed(123)
    second = build_task(name, 4, **small_params(name))
    assert all(torch.equal(s, t) for s, t in zip(tensors(first), tensors(second), strict=True))


def test_generators_accept_numpy_and_torch_generators():
    for seed_a, seed_b in [
        (np.random.default_rng(5), np.random.default_rng(5)),
        (torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)),
    ]:
        a, b = state_tracking("A4", 9, 7, seed_a), state_tracking("A4", 9, 7, seed_b)
        assert torch.equal(a[0], b[0])
    x1 = mqar(10, 64, 4, 128, seed=3)
    x2 = mqar(10, 64, 4, 128, seed=3)
    assert all(torch.equal(s, t) for s, t in zip(x1, x2, strict=True))
    assert torch.equal(
        copying_train(4, 9, context_len=60, max_len=10)[1],
        copying_train(4, 9, context_len=60, max_len=10)[1],
    )


def test_test_sets_do_not_depend_on_other_lengths():
    a = build_task(
        "copying", 2, context_len=80, max_len=10, num_train=4, test_lens=[5, 40], num_test=8
    )
    b = build_task(
        "copying", 2, context_len=80, max_len=10, num_train=4, test_lens=[40], num_test=8
    )
    assert torch.equal(a.tests[40][0], b.tests[40][0])


def test_unknown_task_and_parameters():
    with pytest.raises(ValueError, match="allowed"):
        build_task("parity_check", 0)
    with pytest.raises(ValueError, match="num_kv"):
        build_task("mqar", 0, n_kv=4)
    with pytest.raises(ValueError):
        build_task("mqar", -1)
    assert "group" in task_parameters("state_tracking")
