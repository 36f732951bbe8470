import pytest
import torch

from selrope.tasks import IGNORE_INDEX, build_task, copying_test, copying_train
from selrope.tasks.copying import BOS, EOS, PAD, SEP, decode, encode


def test_training_rows_pack_examples_and_mask_all_but_copies():
    x, y = copying_train(40, seed=0, context_len=120, min_len=2, max_len=20)
    assert x.shape == y.shape == (40, 119)
    for row_x, row_y in zip(x, y, strict=True):
        context = torch.cat([row_x, row_x.new_tensor([PAD])])  # position 119 is only a target
        valid = row_y != IGNORE_INDEX
        context[1:][valid] = row_y[valid]
        assert context[0] == BOS
        expected = torch.full_like(row_y, IGNORE_INDEX)
        start, n_complete = 0, 0
        for piece in decode(context).split("$")[1:]:
            body = "$" + piece
            end = start + len(body)
            if body.endswith("."):  # only a cut-off last example lacks its EOS
                s, copy = body[1:-1].split("|")
                assert body[-1] == "." and s == copy and 2 <= len(s) <= 20
                # targets live on the copy and the EOS: context positions end-len(s)-1 .. end-1
                expected[end - len(s) - 2 : end - 1] = torch.tensor(encode(copy + "."))
                n_complete += 1
            start = end
        assert n_complete >= 1 and end == 120
        assert torch.equal(row_y, expected)
        assert torch.equal(row_x[1:][valid[:-1]], row_y[:-1][valid[:-1]])  # shift is consistent


def test_last_partial_example_fully_masked():
    x, y = copying_train(200, seed=1, context_len=100, min_len=5, max_len=40)
    last_bos = [max(i for i, t in enumerate(r.tolist()) if t == BOS) for r in x]
    cut = 0
    for r, b in enumerate(last_bos):
        tail = x[r, b:].tolist() + [int(y[r, -1])]  # the context's last token is a target
        if EOS not in tail:  # cut-off example: nothing after its BOS is a target
            assert torch.all(y[r, b:] == IGNORE_INDEX)
            cut += 1
    assert cut > 150


@pytest.mark.parametrize("L", [1, 2, 7, 300])
def test_test_rows_target_exactly_the_string(L):
    x, y = copying_test(L, 16, seed=3)
    assert x.shape == y.shape == (16, 2 * L + 1)
    for row_x, row_y in zip(x, y, strict=True):
        s = row_x[1 : L + 1]
        assert row_x[0] == BOS and row_x[L + 1] == SEP
        assert torch.equal(row_x[L + 2 :], s[: L - 1])
        assert torch.equal(row_y[row_y != IGNORE_INDEX], s)
        positions = (row_y != IGNORE_INDEX).nonzero().squeeze(1)
        assert torch.equal(positions, torch.arange(L + 1, 2 * L + 1))
    xp, yp = copying_test(L, 16, seed=3, pad_to=700)
    assert xp.shape[1] == max(700, 2 * L + 1) and torch.equal(xp[:, : 2 * L + 1], x)


def test_build_copying():
    d = build_task(
        "copying", 0, context_len=140, max_len=16, num_train=64, test_lens=[4, 64], num_test=8
    )
    assert d.vocab_size == 30 and d.train[0].shape == (64, 139)
    assert sorted(d.tests) == [4, 64] and d.tests[64][0].shape == (8, 129)
    assert int(d.train[0].max()) < 30 and int(d.tests[64][0].max()) < 30


@pytest.mark.parametrize(
    "params",
    [
        {"context_len": 50, "max_len": 30},
        {"min_len": 0},
        {"min_len": 10, "max_len": 5},
        {"test_lens": [0]},
        {"num_train": 0},
        {"alphabet": "abc"},
    ],
)
def test_bad_parameters(params):
    with pytest.raises(ValueError):
        build_task("copying", 0, **params)
