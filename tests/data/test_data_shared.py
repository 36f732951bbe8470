"""prepare_corpus on a few real Shakespeare plays from the shared data folder beside the repo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from selrope.data import load_split, prepare_corpus

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PLAYS = SHARED_DATA / "shakespeare-works"
FILES = ["hamlet_gut.txt", "macbeth_gut.txt", "sonnets_gut.txt"]


@pytest.mark.skipif(
    not all((PLAYS / name).is_file() for name in FILES),
    reason=f"the shared corpora are not at {SHARED_DATA} (see shared/data/README.md)",
)
def test_real_plays_with_the_byte_tokenizer(tmp_path):
    inputs = [PLAYS / name for name in FILES]
    manifest = prepare_corpus(
        inputs, "byte", tmp_path / "c", val_documents=["macbeth_gut.txt"], progress=False
    )
    assert manifest["splits"]["train"]["names"] == ["hamlet_gut.txt", "sonnets_gut.txt"]
    assert manifest["replaced_bytes"] == 0
    for split, names in (
        ("train", ["hamlet_gut.txt", "sonnets_gut.txt"]),
        ("val", ["macbeth_gut.txt"]),
    ):
        data = load_split(tmp_path / "c", split)
        raw = [np.frombuffer((PLAYS / name).read_bytes(), dtype=np.uint8) for name in names]
        eos = np.array([256])
        expected = np.concatenate([part for r in raw for part in (eos, r)] + [eos])
        assert np.array_equal(data.tokens, expected)
        assert manifest["splits"][split]["bytes"] == sum(r.size for r in raw)
