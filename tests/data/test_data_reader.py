"""Opening corpus folders: selrope's, the first release's, llm.c's; the checks; segment ids."""

from __future__ import annotations

import json

import numpy as np
import pytest
from corpus_helpers import read_llmc_shard

from selrope.data import (
    TokenStream,
    corpus_fingerprint,
    load_manifest,
    load_split,
    load_tokenizer,
    open_corpus,
    prepare_corpus,
)
from selrope.data import segment_ids_for_window as segment_ids
from selrope.data.shards import ShardHeader, read_shard_header
from selrope.data.tokenizer import byte_tokenizer, train_bpe


def write_llmc_shard(path, tokens, dtype=np.uint16) -> None:
    """A shard as llm.c's fineweb.py writes one: 256 int32 of header, then the tokens."""
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1] = (20240520, 1) if dtype == np.uint16 else (20240801, 7)
    header[2] = len(tokens)
    with open(path, "wb") as file:
        file.write(header.tobytes())
        file.write(np.asarray(tokens, dtype=dtype).tobytes())


def test_selrope_shards_read_back_in_llmc_manner(many_documents, tmp_path):
    manifest = prepare_corpus([many_documents], "byte", tmp_path / "c", shard_tokens=64,
                              progress=False)  # fmt: skip
    for split in ("train", "val"):
        entry = manifest["splits"][split]
        tokens = [read_llmc_shard(tmp_path / "c" / shard["file"]) for shard in entry["shards"]]
        stream = np.concatenate(tokens)
        assert stream.dtype == np.uint16 and stream.size == entry["tokens"]
        assert np.array_equal(np.asarray(load_split(tmp_path / "c", split).tokens), stream)


def test_llmc_shards_made_elsewhere_are_read_with_their_tokenizer(tmp_path):
    folder = tmp_path / "fineweb10B"
    folder.mkdir()
    eos = 256
    documents = [b"first document", b"second, longer document text", b"third", b"fourth one"]
    stream = np.concatenate([np.array([eos, *d]) for d in documents])
    write_llmc_shard(folder / "fineweb_train_000001.bin", stream[:30])
    write_llmc_shard(folder / "fineweb_train_000002.bin", stream[30:])  # a document runs on
    write_llmc_shard(folder / "fineweb_val_000000.bin", [eos, *b"held out", eos, *b"two"])
    with pytest.raises(ValueError, match="--data .*no tokenizer.json beside the shards: give "):
        load_split(folder, "train")
    byte_tokenizer().save(str(folder / "tokenizer.json"))
    info = open_corpus(folder)
    assert (info.kind, info.vocab_size, info.eos_id) == ("llm.c", 257, 256)
    train = load_split(folder, "train")
    assert isinstance(train.tokens, TokenStream) and len(train.tokens) == stream.size
    assert np.array_equal(np.asarray(train.tokens), stream)
    assert train.tokens[25:35].tolist() == stream[25:35].tolist()  # across the shard boundary
    assert train.doc_starts.tolist() == np.flatnonzero(stream == eos).tolist()
    val = load_split(folder, "val")
    assert val.doc_starts.tolist() == [0, 9] and val.tokens.dtype == np.uint16


def test_llmc_shards_without_tokenizer_need_vocab_size_and_eos_id(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    write_llmc_shard(folder / "train_a.bin", [50256, 1, 2, 3, 50256, 4], np.uint32)
    write_llmc_shard(folder / "val_a.bin", [50256, 5, 6], np.uint32)
    split = load_split(folder, "train", vocab_size=50257, eos_id=50256)
    assert split.vocab_size == 50257 and split.tokens.dtype == np.uint32
    assert split.doc_starts.tolist() == [0, 4]
    with pytest.raises(ValueError, match="--eos-id must be an integer in \\[0, 50257\\)"):
        load_split(folder, "train", vocab_size=50257, eos_id=60000)
    (folder / "val_a.bin").unlink()
    with pytest.raises(ValueError, match="no \\*val\\*.bin shard"):
        open_corpus(folder, vocab_size=50257, eos_id=50256)


def test_missing_or_damaged_shards_are_refused(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="no manifest.json .* and no llm.c shards"):
        open_corpus(folder)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        open_corpus(tmp_path / "nothing")
    write_llmc_shard(folder / "train.bin", [0, 1, 2])
    write_llmc_shard(folder / "val.bin", [0, 1])
    (folder / "val.bin").write_bytes((folder / "val.bin").read_bytes()[:-1])
    with pytest.raises(ValueError, match="val.bin: 1027 bytes, but its header says 2 tokens"):
        open_corpus(folder, vocab_size=3, eos_id=0)
    (folder / "val.bin").write_bytes(b"\0" * 1030)
    with pytest.raises(ValueError, match="val.bin: not an llm.c token shard"):
        open_corpus(folder, vocab_size=3, eos_id=0)


def test_token_ids_past_the_vocabulary_are_refused(many_documents, tmp_path):
    out = tmp_path / "c"
    prepare_corpus([many_documents], "byte", out, progress=False)
    manifest = load_manifest(out)
    manifest["tokenizer"]["vocab_size"] = 120  # the digits and letters are above it
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="holds token id 256, at or above the vocabulary size 120"):
        load_split(out, "train")
    with pytest.raises(ValueError, match="--vocab-size 100 is below the corpus tokenizer's"):
        load_split(out, "train", vocab_size=100)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m, out: m.update(dtype="uint32"), "holds uint16 tokens, the manifest says uint32"),
        (lambda m, out: m.update(dtype="int8"), "dtype must be one of"),
        (lambda m, out: m["splits"].pop("val"), "lists no 'val' split"),
        (lambda m, out: m["splits"]["train"]["shards"][0].update(tokens=5), "the manifest says 5"),
        (lambda m, out: m["splits"]["val"].update(tokens=3), "lists 3 tokens, its shards hold"),
        (lambda m, out: (out / "val_000000.bin").unlink(), "val_000000.bin not found"),
        (lambda m, out: (out / "train_000000.idx").write_bytes(b"x" * 64), "not a selrope"),
        (lambda m, out: (out / "tokenizer.json").write_text(train_bpe(["a b"] * 9, 260).to_str()),
         "not the tokenizer the corpus was written with"),
        (lambda m, out: m.update(version=7), "expected format 'selrope.data' version 1 or 2"),
    ],
)  # fmt: skip
def test_a_corpus_whose_metadata_disagrees_with_its_data_is_refused(
    many_documents, tmp_path, damage, message
):
    out = tmp_path / "c"
    prepare_corpus([many_documents], "byte", out, progress=False)
    manifest = load_manifest(out)
    damage(manifest, out)
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
        load_split(out, "train")
    assert "\n" not in str(error.value) and str(error.value).startswith(("--data", str(out)))


def test_document_starts_past_the_end_are_refused(many_documents, tmp_path):
    out = tmp_path / "c"
    prepare_corpus([many_documents], "byte", out, progress=False)
    index = out / "train_000000.idx"
    starts = np.fromfile(index, dtype="<i8")
    starts[-1] = read_shard_header(out / "train_000000.bin").tokens + 10
    starts.tofile(index)
    with pytest.raises(ValueError, match="document starts past the end of train_000000.bin"):
        load_split(out, "train")


def write_first_release_corpus(out, documents: dict[str, list[bytes]]) -> None:
    """A corpus as the first release (format version 1) wrote it: raw train.bin / val.bin and
    the document starts in the manifest."""
    out.mkdir()
    byte_tokenizer().save(str(out / "tokenizer.json"))
    splits = {}
    for split, texts in documents.items():
        stream = np.concatenate([np.array([256, *t]) for t in texts] + [np.array([256])])
        stream.astype(np.uint16).tofile(out / f"{split}.bin")
        starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]]).tolist()
        splits[split] = {"file": f"{split}.bin", "tokens": int(stream.size), "doc_starts": starts,
                         "documents": len(texts)}  # fmt: skip
    manifest = {"format": "selrope.data", "version": 1, "dtype": "uint16", "splits": splits,
                "tokenizer": {"kind": "byte", "vocab_size": 257, "eos_id": 256}}  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest))


def test_corpora_of_the_first_release_still_open(tmp_path):
    out = tmp_path / "v1"
    write_first_release_corpus(out, {"train": [b"abc", b"de"], "val": [b"xyz"]})
    train = load_split(out, "train")
    assert train.tokens.tolist() == [256, 97, 98, 99, 256, 100, 101, 256]
    assert train.doc_starts.tolist() == [0, 4] and train.vocab_size == 257
    assert corpus_fingerprint(out)["kind"] == "selrope-v1"
    manifest = load_manifest(out)
    manifest["splits"]["train"]["doc_starts"] = [0, 9]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="document starts of manifest.json do not fit"):
        load_split(out, "train")


def test_corpus_fingerprint_names_tokenizer_sizes_and_shards(many_documents, tmp_path):
    prepare_corpus([many_documents], "byte", tmp_path / "a", shard_tokens=100, progress=False)
    prepare_corpus([many_documents], "bpe:280", tmp_path / "b", shard_tokens=100, progress=False)
    a, b = corpus_fingerprint(tmp_path / "a"), corpus_fingerprint(tmp_path / "b")
    manifest = load_manifest(tmp_path / "a")
    assert a == {
        "kind": "selrope",
        "tokenizer_sha256": manifest["tokenizer"]["sha256"],
        "vocab_size": 257,
        "eos_id": 256,
        "dtype": "uint16",
        "splits": {
            split: {
                "tokens": manifest["splits"][split]["tokens"],
                "shards": [shard["file"] for shard in manifest["splits"][split]["shards"]],
            }
            for split in ("train", "val")
        },
    }
    assert len(a["splits"]["train"]["shards"]) > 2
    assert a["tokenizer_sha256"] != b["tokenizer_sha256"] and a["splits"] != b["splits"]
    assert corpus_fingerprint(tmp_path / "a") == a


def test_token_stream_reads_like_one_array():
    pieces = [np.arange(0, 5), np.arange(5, 12), np.arange(12, 13), np.arange(13, 20)]
    whole = np.arange(20, dtype=np.uint16)

    class FakeStream(TokenStream):
        def shard(self, index):
            return pieces[index].astype(np.uint16)

    headers = [ShardHeader(np.dtype(np.uint16), len(p)) for p in pieces]
    stream = FakeStream([f"s{i}" for i in range(4)], headers)
    assert len(stream) == 20 and stream.dtype == np.uint16
    for start in range(21):
        for stop in range(start, 21):
            assert stream[start:stop].tolist() == whole[start:stop].tolist()
    assert stream[12] == 12 and stream[-1] == 19
    positions = np.array([[19, 0, 5], [4, 12, 13]])
    assert np.array_equal(stream[positions], whole[positions])
    assert np.array_equal(np.asarray(stream), whole)


def test_loaded_tokenizer_encodes_like_the_corpus(folder, tmp_path):
    prepare_corpus([folder], "bpe:300", tmp_path / "c", progress=False)
    tokenizer = load_tokenizer(tmp_path / "c")
    assert tokenizer.encode_special_tokens
    assert tokenizer.token_to_id("<|endoftext|>") not in tokenizer.encode("<|endoftext|>").ids


def test_segment_ids_for_window():
    doc_starts = np.array([0, 3, 7], dtype=np.int64)  # EOS a a EOS b b b EOS c EOS
    assert segment_ids(doc_starts, 0, 10).tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    ids = segment_ids(doc_starts, 2, 6)
    assert ids.dtype == np.int64 and ids.tolist() == [0, 1, 1, 1, 1, 2]
    assert segment_ids(doc_starts, 5, 0).shape == (0,)


@pytest.mark.parametrize(
    ("doc_starts", "start", "length", "message"),
    [([0, 4], -1, 3, "start"), ([0, 4], 0, -1, "length"), ([], 0, 3, "doc_starts"),
     ([2, 4], 0, 3, "doc_starts")],
)  # fmt: skip
def test_segment_ids_errors(doc_starts, start, length, message):
    with pytest.raises(ValueError, match=message):
        segment_ids(np.array(doc_starts, dtype=np.int64), start, length)
