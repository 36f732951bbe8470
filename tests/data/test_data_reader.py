"""Readers of a prepared corpus and segment ids for windows of a packed stream."""

from __future__ import annotations

import numpy as np
import pytest

from selrope.data import load_manifest, load_split, load_tokenizer, prepare_corpus
from selrope.data import segment_ids_for_window as segment_ids


def test_segment_ids_for_window():
    doc_starts = np.array([0, 3, 7], dtype=np.int64)  # EOS a a EOS b b b EOS c EOS
    assert segment_ids(doc_starts, 0, 10).tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    ids = segment_ids(doc_starts, 2, 6)
    assert ids.dtype == np.int64 and ids.tolist() == [0, 1, 1, 1, 1, 2]
    assert segment_ids(doc_starts, 5, 0).shape == (0,)


def test_segment_ids_match_the_documents_of_a_real_stream(many_documents, tmp_path):
    prepare_corpus([many_documents], "byte", tmp_path / "c", progress=False)
    data = load_split(tmp_path / "c", "train")
    ids = segment_ids(data.doc_starts, 0, data.tokens.size)
    assert np.array_equal(np.flatnonzero(np.diff(ids)) + 1, data.doc_starts[1:])
    assert np.all(data.tokens[1:][np.diff(ids) == 1] == data.eos_id)  # a new segment opens on EOS
    window = segment_ids(data.doc_starts, 37, 50)
    assert np.array_equal(window, ids[37:87])


@pytest.mark.parametrize(
    ("doc_starts", "start", "length", "message"),
    [([0, 4], -1, 3, "start"), ([0, 4], 0, -1, "length"), ([], 0, 3, "doc_starts"),
     ([2, 4], 0, 3, "doc_starts")],
)  # fmt: skip
def test_segment_ids_errors(doc_starts, start, length, message):
    with pytest.raises(ValueError, match=message):
        segment_ids(np.array(doc_starts, dtype=np.int64), start, length)


def test_missing_or_damaged_corpus_errors(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="selrope data prepare"):
        load_manifest(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path / "nothing")
    out = tmp_path / "c"
    prepare_corpus([folder], "byte", out, progress=False)
    with pytest.raises(ValueError, match="split must be one of"):
        load_split(out, "test")
    (out / "val.bin").write_bytes((out / "val.bin").read_bytes()[:-2])
    with pytest.raises(ValueError, match="val.bin: .* bytes, but the manifest says"):
        load_split(out, "val")
    (out / "val.bin").unlink()
    with pytest.raises(FileNotFoundError, match="val.bin"):
        load_split(out, "val")


def test_loaded_tokenizer_encodes_like_the_corpus(folder, tmp_path):
    prepare_corpus([folder], "bpe:300", tmp_path / "c", progress=False)
    tokenizer = load_tokenizer(tmp_path / "c")
    assert tokenizer.encode_special_tokens
    assert tokenizer.token_to_id("<|endoftext|>") not in tokenizer.encode("<|endoftext|>").ids
