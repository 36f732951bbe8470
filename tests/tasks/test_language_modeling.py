"""The language-modelling task: windows of a prepared corpus as rows, with document segment ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selrope.data import TokenStream, prepare_corpus, segment_ids_for_window
from selrope.tasks import build_task
from selrope.tasks.language_modeling import CorpusWindows

DOCUMENTS = ["alpha beta gamma\n", "one two\n", "x" * 50, "last words here\n", "tiny"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs")
    for i, text in enumerate(DOCUMENTS):
        (folder / f"doc{i}.txt").write_text(text)
    out = tmp_path_factory.mktemp("corpus")
    prepare_corpus([folder], "byte", out, val_documents=["doc1.txt"], progress=False)
    return out


def test_rows_are_consecutive_windows_sharing_edge_tokens(corpus):
    data = build_task("lm", data=str(corpus), seq_len=8, val_tokens=8)
    source = data.train
    stream = np.asarray(source.split.tokens, dtype=np.int64)
    assert source.num_rows == (len(stream) - 1) // 8
    batch = source.rows(torch.arange(source.num_rows))
    assert batch.inputs.shape == batch.targets.shape == (source.num_rows, 8)
    covered = source.num_rows * 8
    assert torch.equal(batch.inputs.flatten(), torch.from_numpy(stream[:covered]))
    assert torch.equal(batch.targets.flatten(), torch.from_numpy(stream[1 : covered + 1]))


def test_segment_ids_change_exactly_at_document_starts(corpus):
    source = build_task("lm", data=str(corpus), seq_len=8, val_tokens=8).train
    batch = source.rows(torch.arange(source.num_rows))
    doc_starts = source.split.doc_starts
    for row, ids in enumerate(batch.segment_ids.numpy()):
        # the document index of each position, counted from the row's first document
        expected = segment_ids_for_window(doc_starts, row * 8, 8)
        assert ids.tolist() == (expected - expected[0]).tolist()
    eos = source.split.eos_id
    flat = batch.inputs.numpy()
    assert np.all(flat[:, 1:][np.diff(batch.segment_ids.numpy(), axis=1) == 1] == eos)


def test_windows_read_across_shard_boundaries(tmp_path_factory, corpus):
    folder = tmp_path_factory.mktemp("docs-sharded")
    for i, text in enumerate(DOCUMENTS):
        (folder / f"doc{i}.txt").write_text(text)
    out = tmp_path_factory.mktemp("sharded")
    prepare_corpus([folder], "byte", out, val_documents=["doc1.txt"], shard_tokens=7,
                   overwrite=True, progress=False)  # fmt: skip
    sharded = build_task("lm", data=str(out), seq_len=5, val_tokens=5)
    whole = build_task("lm", data=str(corpus), seq_len=5, val_tokens=5)
    assert isinstance(sharded.train.split.tokens, TokenStream)
    assert sharded.train.num_rows == whole.train.num_rows
    rows = torch.arange(whole.train.num_rows).flip(0)
    for a, b in zip(sharded.train.rows(rows), whole.train.rows(rows), strict=True):
        assert torch.equal(a, b)


def write_llmc_shard(path, tokens) -> None:
    header = np.zeros(256, dtype=np.int32)
    header[:3] = (20240520, 1, len(tokens))
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes())


def test_llmc_shards_need_a_tokenizer_or_vocab_size_and_eos_id(tmp_path):
    write_llmc_shard(tmp_path / "fineweb_train_000001.bin", [9, 1, 2, 9, 3, 4, 5, 9, 6])
    write_llmc_shard(tmp_path / "fineweb_val_000000.bin", [9, 7, 8, 9, 1])
    with pytest.raises(ValueError, match=f"--data {tmp_path}: no tokenizer.json .* --vocab-size"):
        build_task("lm", data=str(tmp_path), seq_len=4, val_tokens=4)
    data = build_task("lm", data=str(tmp_path), seq_len=4, val_tokens=4, vocab_size=16, eos_id=9)
    assert data.vocab_size == 16
    assert data.params == {"data": str(tmp_path), "seq_len": 4, "packing": "reset",
                           "val_tokens": 4, "vocab_size": 16, "eos_id": 9}  # fmt: skip
    batch = data.train.rows(torch.tensor([0, 1]))
    assert batch.inputs.tolist() == [[9, 1, 2, 9], [3, 4, 5, 9]]
    assert batch.segment_ids.tolist() == [[0, 0, 0, 1], [0, 0, 0, 1]]
    small = build_task("lm", data=str(tmp_path), seq_len=4, val_tokens=4, vocab_size=6, eos_id=5)
    with pytest.raises(ValueError, match="token id 9 in the window at stream position 0 is at or"):
        small.train.rows(torch.tensor([0]))


def test_a_padded_vocab_size_is_kept(corpus):
    data = build_task("lm", data=str(corpus), seq_len=8, val_tokens=8, vocab_size=320)
    assert data.vocab_size == 320
    with pytest.raises(ValueError, match="--vocab-size 100 is below the corpus tokenizer's 257"):
        build_task("lm", data=str(corpus), seq_len=8, val_tokens=8, vocab_size=100)
    with pytest.raises(ValueError, match="--eos-id 3 disagrees"):
        build_task("lm", data=str(corpus), seq_len=8, val_tokens=8, eos_id=3)


def test_concat_packing_has_no_segment_ids_and_validation_always_resets(corpus):
    data = build_task("lm", data=str(corpus), seq_len=4, packing="concat", val_tokens=8)
    assert data.train.rows(torch.arange(2)).segment_ids is None
    val = data.tests[4]
    assert val.num_rows == 2 and val.rows(torch.arange(2)).segment_ids is not None
    assert data.params == {"data": str(corpus), "seq_len": 4, "packing": "concat", "val_tokens": 8}


def test_bad_arguments_name_themselves(corpus, tmp_path):
    with pytest.raises(ValueError, match="--data must name a folder"):
        build_task("lm")
    with pytest.raises(ValueError, match="packing must be one of"):
        build_task("lm", data=str(corpus), packing="both")
    with pytest.raises(ValueError, match="seq_len must leave at least one window"):
        build_task("lm", data=str(corpus), seq_len=10_000, val_tokens=10_000)
    with pytest.raises(ValueError, match="val_tokens"):
        build_task("lm", data=str(corpus), seq_len=16, val_tokens=8)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        build_task("lm", data=str(tmp_path / "missing"))
    split = build_task("lm", data=str(corpus), seq_len=8, val_tokens=8).train.split
    with pytest.raises(ValueError, match="seq_len"):
        CorpusWindows(split, 0)
