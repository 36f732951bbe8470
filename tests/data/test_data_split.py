"""Validation split by whole documents: seeded fraction or fnmatch patterns, one at a time."""

from __future__ import annotations

import numpy as np
import pytest
from corpus_helpers import documents_of, split_stream

from selrope.data import prepare_corpus
from selrope.data.documents import scan_inputs, val_patterns_check
from selrope.data.split import ValByFraction, ValByPatterns


def chosen(rule: ValByFraction) -> np.ndarray:
    return np.array([rule.is_val(i, "") for i in range(rule.documents)])


@pytest.mark.parametrize("documents", [2, 3, 7, 20, 101, 1000, 12345])
@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.26, 0.5])
def test_fraction_takes_exactly_k_documents_one_per_run(documents, fraction):
    if max(1, round(fraction * documents)) >= documents:
        pytest.skip("val would take every document (refused, tested below)")
    rule = ValByFraction(documents, fraction, seed=3)
    is_val = chosen(rule)
    k = max(1, round(fraction * documents))
    assert is_val.sum() == k  # at least one, and round(f D)
    picked = np.flatnonzero(is_val)  # the j-th val document lies in run j
    assert all(rule.run_start(j) <= p < rule.run_start(j + 1) for j, p in enumerate(picked))
    assert rule.run_start(0) == 0 and rule.run_start(k) == documents


def test_fraction_is_seeded():
    first = chosen(ValByFraction(100, 0.2, seed=0))
    assert np.array_equal(first, chosen(ValByFraction(100, 0.2, seed=0)))
    assert not np.array_equal(first, chosen(ValByFraction(100, 0.2, seed=1)))
    positions = [np.flatnonzero(chosen(ValByFraction(1000, 0.01, seed=s))) % 100 for s in range(8)]
    assert len({tuple(p) for p in positions}) == 8  # not one fixed offset in every run
    assert np.std(np.concatenate(positions)) > 20  # spread within the runs


@pytest.mark.parametrize(
    ("num_documents", "fraction", "message"),
    [
        (10, 0.0, "must be in \\(0, 1\\)"),
        (10, 1.0, "must be in \\(0, 1\\)"),
        (1, 0.5, "at least 2 documents; got 1"),
        (10, 0.96, "would put all 10 documents in val"),
    ],
)
def test_fraction_errors(num_documents, fraction, message):
    with pytest.raises(ValueError, match=f"--val-fraction.*{message}"):
        ValByFraction(num_documents, fraction, seed=0)


def test_patterns_select_exactly_the_matching_names(tmp_path):
    rule = ValByPatterns(["*hamlet*", "wiki.jsonl:3"])
    names = ["plays/hamlet.txt", "plays/macbeth.txt", "wiki.jsonl:3", "wiki.jsonl:30"]
    assert [rule.is_val(i, n) for i, n in enumerate(names)] == [True, False, True, False]
    root = tmp_path / "docs"
    (root / "plays").mkdir(parents=True)
    (root / "plays" / "hamlet.txt").write_text("to be")
    (root / "plays" / "macbeth.txt").write_text("out, out")
    (root / "wiki.jsonl").write_text('{"text": "a"}\n\n{"text": "b"}\n')
    plan = scan_inputs([root])
    assert plan.documents == 4
    val_patterns_check(plan, ["*hamlet*", "wiki.jsonl:3"])  # line 3: line 2 is blank
    with pytest.raises(ValueError, match="--val-documents: pattern 'x' matches no document"):
        val_patterns_check(plan, ["*hamlet*", "x"])
    with pytest.raises(ValueError, match="--val-documents .* matches all 4 documents"):
        val_patterns_check(plan, ["plays/*", "wiki*"])
    with pytest.raises(ValueError, match="--val-documents"):
        ValByPatterns([])


def test_prepare_splits_whole_documents_by_seed(many_documents, tmp_path):
    val_sets = []
    for seed in (0, 0, 1):
        out = tmp_path / f"s{seed}-{len(val_sets)}"
        prepare_corpus([many_documents], "byte", out, val_fraction=0.25, seed=seed, progress=False)
        train, val = (
            {bytes(d).decode() for d in documents_of(split_stream(out, s), 256)}
            for s in ("train", "val")
        )
        assert len(val) == 5 and not train & val and len(train | val) == 20
        val_sets.append(val)
    assert val_sets[0] == val_sets[1] != val_sets[2]


def test_prepare_honours_val_documents(many_documents, tmp_path):
    manifest = prepare_corpus(
        [many_documents], "byte", tmp_path / "c", val_documents=["doc0[0-2].txt", "doc19.txt"],
        progress=False,
    )  # fmt: skip
    val = [bytes(d).decode() for d in documents_of(split_stream(tmp_path / "c", "val"), 256)]
    assert [text.split(":")[0] for text in val] == [f"document {i}" for i in (0, 1, 2, 19)]
    assert manifest["splits"]["train"]["documents"] == 16
    assert manifest["split_rule"] == {"seed": 0, "val_documents": ["doc0[0-2].txt", "doc19.txt"]}
