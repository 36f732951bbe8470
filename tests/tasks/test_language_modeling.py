"""The language-modelling task: windows of a prepared corpus as rows, with document segment ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selrope.data import prepare_corpus
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
    ids = batch.segment_ids.flatten().numpy()
    eos = source.split.eos_id
    starts = np.flatnonzero(np.diff(ids)) + 1
    # Every id change is at a document's leading EOS, and every leading EOS inside the covered
    # stream (past position 0) is an id change.
    covered = batch.inputs.flatten().numpy()
    assert all(covered[s] == eos for s in starts)
    doc_starts = source.split.doc_starts
    assert list(starts) == [s for s in doc_starts if 0 < s < len(covered)]
    # A row that starts inside a document carries that document's index.
    assert ids[0] == 0 and ids[-1] == np.searchsorted(doc_starts, len(covered) - 1, "right") - 1


def test_concat_packing_has_no_segment_ids_and_validation_always_resets(corpus):
    data = build_task("lm", data=str(corpus), seq_len=4, packing="concat", val_tokens=8)
    assert data.train.rows(torch.arange(2)).segment_ids is None
    val = data.tests[4]
    assert val.num_rows == 2 and val.rows(torch.arange(2)).segment_ids is not None
    assert data.params == {"data": str(corpus), "seq_len": 4, "packing": "concat", "val_tokens": 8}


def test_bad_arguments_name_themselves(corpus, tmp_path):
    with pytest.raises(ValueError, match="data must name a directory"):
        build_task("lm")
    with pytest.raises(ValueError, match="packing must be one of"):
        build_task("lm", data=str(corpus), packing="both")
    with pytest.raises(ValueError, match="seq_len must leave at least one window"):
        build_task("lm", data=str(corpus), seq_len=10_000, val_tokens=10_000)
    with pytest.raises(ValueError, match="val_tokens"):
        build_task("lm", data=str(corpus), seq_len=16, val_tokens=8)
    with pytest.raises(FileNotFoundError, match="manifest.json not found"):
        build_task("lm", data=str(tmp_path / "missing"))
    split = build_task("lm", data=str(corpus), seq_len=8, val_tokens=8).train.split
    with pytest.raises(ValueError, match="seq_len"):
        CorpusWindows(split, 0)
