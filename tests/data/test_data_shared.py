"""prepare_corpus on real text from the shared data folder beside the repo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from corpus_helpers import split_stream
from tokenizers import Tokenizer

from selrope.data import prepare_corpus

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PLAYS = SHARED_DATA / "shakespeare-works"
FILES = ["hamlet_gut.txt", "macbeth_gut.txt", "sonnets_gut.txt"]
WIKI = SHARED_DATA / "wiki-vital" / "summaries_en.jsonl"


@pytest.mark.skipif(
    not all((PLAYS / name).is_file() for name in FILES),
    reason=f"the shared corpora are not at {SHARED_DATA} (see shared/data/README.md)",
)
def test_real_plays_with_the_byte_tokenizer(tmp_path):
    inputs = [PLAYS / name for name in FILES]
    manifest = prepare_corpus(inputs, "byte", tmp_path / "c", val_documents=["macbeth_gut.txt"],
                              shard_tokens=100_000, progress=False)  # fmt: skip
    assert manifest["replaced_bytes"] == 0
    for split, names in (("train", ["hamlet_gut.txt", "sonnets_gut.txt"]),
                         ("val", ["macbeth_gut.txt"])):  # fmt: skip
        raw = [np.frombuffer((PLAYS / name).read_bytes(), dtype=np.uint8) for name in names]
        eos = np.array([256])
        expected = np.concatenate([part for r in raw for part in (eos, r)] + [eos])
        assert np.array_equal(split_stream(tmp_path / "c", split), expected)
        assert manifest["splits"][split]["bytes"] == sum(r.size for r in raw)
    assert len(manifest["splits"]["train"]["shards"]) == 3  # 269,673 tokens in 100k shards


@pytest.mark.skipif(
    not WIKI.is_file(),
    reason=f"the shared corpora are not at {SHARED_DATA} (see shared/data/README.md)",
)
def test_real_jsonl_with_bpe_matches_encoding_each_article(tmp_path):
    lines = WIKI.read_text(encoding="utf-8").splitlines()[:400]
    (tmp_path / "wiki.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = prepare_corpus([tmp_path / "wiki.jsonl"], "bpe:2000", tmp_path / "c",
                              shard_tokens=20_000, workers=2, progress=False)  # fmt: skip
    assert manifest["splits"]["val"]["documents"] == 20  # 5 % of 400
    tokenizer = Tokenizer.from_file(str(tmp_path / "c" / "tokenizer.json"))
    texts = [json.loads(line)["text"] for line in lines]
    stream = np.concatenate([split_stream(tmp_path / "c", s) for s in ("train", "val")])
    expected = sum(len(tokenizer.encode(text).ids) + 1 for text in texts) + 2  # two final EOS
    assert stream.size == expected
    assert stream.size < 0.4 * sum(len(t.encode()) for t in texts)  # the BPE compresses
