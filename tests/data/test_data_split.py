"""Validation split by whole documents: seeded fraction or fnmatch patterns."""

from __future__ import annotations

import numpy as np
import pytest

from selrope.data import prepare_corpus
from selrope.data.split import split_by_fraction, split_by_patterns


def test_fraction_is_seeded_and_counts_round():
    first = split_by_fraction(100, 0.2, seed=0)
    assert first.dtype == bool and first.shape == (100,) and first.sum() == 20
    assert np.array_equal(first, split_by_fraction(100, 0.2, seed=0))
    assert not np.array_equal(first, split_by_fraction(100, 0.2, seed=1))
    assert split_by_fraction(2, 0.01, seed=0).sum() == 1  # at least one document
    assert split_by_fraction(10, 0.26, seed=0).sum() == 3


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
        split_by_fraction(num_documents, fraction, seed=0)


def test_patterns_select_exactly_the_matching_names():
    names = ["plays/hamlet.txt", "plays/macbeth.txt", "wiki.jsonl:3", "wiki.jsonl:30"]
    assert split_by_patterns(names, ["*hamlet*", "wiki.jsonl:3"]).tolist() == [
        True,
        False,
        True,
        False,
    ]
    with pytest.raises(ValueError, match="--val-documents: pattern 'x' matches no document"):
        split_by_patterns(names, ["*hamlet*", "x"])
    with pytest.raises(ValueError, match="--val-documents .* matches all 4 documents"):
        split_by_patterns(names, ["plays/*", "wiki*"])
    with pytest.raises(ValueError, match="--val-documents"):
        split_by_patterns(names, [])


def test_prepare_splits_whole_documents_by_seed(many_documents, tmp_path):
    val_names = []
    for seed in (0, 0, 1):
        manifest = prepare_corpus(
            [many_documents], "byte", tmp_path / f"s{seed}", val_fraction=0.25, seed=seed,
            progress=False,
        )  # fmt: skip
        train, val = (set(manifest["splits"][s]["names"]) for s in ("train", "val"))
        assert len(val) == 5 and not train & val and len(train | val) == 20
        val_names.append(val)
    assert val_names[0] == val_names[1] != val_names[2]


def test_prepare_honours_val_documents(many_documents, tmp_path):
    manifest = prepare_corpus(
        [many_documents], "byte", tmp_path / "c", val_documents=["doc0[0-2].txt", "doc19.txt"],
        progress=False,
    )  # fmt: skip
    assert manifest["splits"]["val"]["names"] == [
        "doc00.txt",
        "doc01.txt",
        "doc02.txt",
        "doc19.txt",
    ]
    assert manifest["splits"]["train"]["names"] == [f"doc{i:02d}.txt" for i in range(3, 19)]
    assert manifest["split_rule"] == {"seed": 0, "val_documents": ["doc0[0-2].txt", "doc19.txt"]}
