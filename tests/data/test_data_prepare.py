"""prepare_corpus: stream layout, manifest, inputs of each kind, replaced bytes, atomic writes."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from selrope.data import documents as documents_module
from selrope.data import load_manifest, load_split, load_tokenizer, prepare_corpus
from selrope.data import prepare as prepare_module


@pytest.mark.parametrize("tokenizer", ["byte", "bpe:300"])
def test_stream_layout_and_manifest_match_the_documents(
    folder, jsonl, expected_texts, tmp_path, tokenizer
):
    out = tmp_path / "corpus"
    manifest = prepare_corpus([folder, jsonl], tokenizer, out, val_fraction=0.25, progress=False)
    assert load_manifest(out) == manifest
    texts = expected_texts
    hf_tokenizer = load_tokenizer(out)
    eos = manifest["tokenizer"]["eos_id"]
    assert hf_tokenizer.token_to_id("<|endoftext|>") == eos
    seen = []
    for split in ("train", "val"):
        data = load_split(out, split)
        entry = manifest["splits"][split]
        assert data.eos_id == eos and data.vocab_size == hf_tokenizer.get_vocab_size()
        assert data.tokens.dtype == np.uint16 and not data.tokens.flags.writeable
        assert (out / f"{split}.bin").stat().st_size == 2 * entry["tokens"] == 2 * data.tokens.size
        assert entry["documents"] == len(entry["names"]) == data.doc_starts.size
        assert np.array_equal(data.doc_starts, entry["doc_starts"])
        # EOS d1 EOS d2 ... EOS dn EOS, and each d re-encodes to exactly its document's text
        assert np.all(data.tokens[data.doc_starts] == eos) and data.tokens[-1] == eos
        ends = [*data.doc_starts[1:], data.tokens.size - 1]
        for name, start, end in zip(entry["names"], data.doc_starts, ends, strict=True):
            ids = data.tokens[start + 1 : end].tolist()
            assert eos not in ids
            assert ids == hf_tokenizer.encode(texts[name]).ids
            assert hf_tokenizer.decode(ids) == texts[name]
        expected = sum(len(hf_tokenizer.encode(texts[n]).ids) + 1 for n in entry["names"]) + 1
        assert entry["tokens"] == expected
        assert entry["bytes"] == sum(len(texts[n].encode("utf-8")) for n in entry["names"])
        seen += entry["names"]
    assert sorted(seen) == sorted(texts)  # every document in exactly one split
    assert manifest["splits"]["val"]["documents"] == 2  # round(0.25 * 8)


def test_manifest_records_inputs_skipped_files_and_rule(folder, jsonl, expected_texts, tmp_path):
    manifest = prepare_corpus([folder, jsonl], "byte", tmp_path / "c", seed=7, progress=False)
    assert manifest["format"] == "selrope.data" and manifest["version"] == 1
    assert manifest["tokenizer"] == {
        "kind": "byte",
        "spec": "byte",
        "vocab_size": 257,
        "eos_id": 256,
        "eos_token": "<|endoftext|>",
        "file": "tokenizer.json",
    }
    assert manifest["dtype"] == "uint16"
    assert manifest["split_rule"] == {"seed": 7, "val_fraction": 0.05}
    assert manifest["python"] == platform.python_version() and manifest["seconds"] >= 0
    assert sorted(manifest["skipped"]) == [str(folder / "LICENSE"), str(folder / "README.md")]
    assert manifest["replaced_bytes"] == 0
    folder_record, jsonl_record = manifest["inputs"]
    assert folder_record["path"] == str(folder.resolve()) and folder_record["kind"] == "folder"
    names = [record["name"] for record in folder_record["files"]]
    assert names == sorted(n for n in expected_texts if ".jsonl" not in n)  # no hidden files
    for record in folder_record["files"]:
        data = (folder / record["name"]).read_bytes()
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["bytes"] == len(data)
    assert folder_record["bytes"] == sum(r["bytes"] for r in folder_record["files"])
    assert jsonl_record["kind"] == "jsonl" and jsonl_record["bytes"] == jsonl.stat().st_size
    names = manifest["splits"]["train"]["names"] + manifest["splits"]["val"]["names"]
    assert sorted(names) == sorted(expected_texts)


def test_single_text_file_is_one_document_named_by_its_file(folder, tmp_path):
    text_file = folder / "alpha.txt"
    manifest = prepare_corpus(
        [text_file, folder / "beta.txt"], "byte", tmp_path / "c", val_fraction=0.5, progress=False
    )
    names = manifest["splits"]["train"]["names"] + manifest["splits"]["val"]["names"]
    assert sorted(names) == ["alpha.txt", "beta.txt"]
    assert manifest["inputs"][0]["kind"] == "file"


def test_undecodable_bytes_are_replaced_and_counted(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "bad.txt").write_bytes(b"ok \xff\xfe then \xe2\x82")  # 2 stray bytes + a cut-off char
    (raw / "good.txt").write_bytes("fine é".encode())
    manifest = prepare_corpus([raw], "byte", tmp_path / "c", val_fraction=0.5, progress=False)
    assert manifest["replaced_bytes"] == 4
    files = {record["name"]: record for record in manifest["inputs"][0]["files"]}
    assert files["bad.txt"]["replaced_bytes"] == 4 and files["good.txt"]["replaced_bytes"] == 0
    split = "train" if "bad.txt" in manifest["splits"]["train"]["names"] else "val"
    data = load_split(tmp_path / "c", split)
    index = manifest["splits"][split]["names"].index("bad.txt")
    ends = [*data.doc_starts[1:], data.tokens.size - 1]
    ids = data.tokens[data.doc_starts[index] + 1 : ends[index]].tolist()
    assert bytes(ids).decode("utf-8") == "ok \ufffd\ufffd then \ufffd"


def test_prepare_is_deterministic(folder, tmp_path):
    for out in ("a", "b"):
        prepare_corpus([folder], "bpe:280", tmp_path / out, seed=3, progress=False)
    for name in ("train.bin", "val.bin", "tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_bpe_is_trained_on_train_documents_only(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    (root / "train.txt").write_text("aaaa bbbb aaaa bbbb " * 50)
    (root / "val.txt").write_text("zzqq zzqq zzqq " * 50)
    prepare_corpus([root], "bpe:300", tmp_path / "c", val_documents=["val.txt"], progress=False)
    vocab = Tokenizer.from_file(str(tmp_path / "c" / "tokenizer.json")).get_vocab()
    assert "aaaa" in vocab and "zz" not in vocab


def test_interrupted_rewrite_leaves_no_manifest(folder, tmp_path, monkeypatch):
    out = tmp_path / "c"
    prepare_corpus([folder], "byte", out, progress=False)
    real_write = prepare_module.write_atomically

    def failing_write(path: Path, data: bytes) -> None:
        if path.name == "tokenizer.json":
            raise KeyboardInterrupt
        real_write(path, data)

    monkeypatch.setattr(prepare_module, "write_atomically", failing_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus([folder], "bpe:300", out, progress=False)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_split(out, "train")
    monkeypatch.undo()
    prepare_corpus([folder], "byte", out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "tokenizer.json",
        "train.bin",
        "val.bin",
    ]  # no temporary files left behind


def test_default_corpus_is_the_stdlib_without_tests(tmp_path, monkeypatch):
    root = tmp_path / "lib"
    for name in ("json/decoder.py", "os.py", "test/test_os.py", "idlelib/idle_test/t.py",
                 "site-packages/pkg/mod.py", "ctypes/tests/t.py", "notes.txt"):  # fmt: skip
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"# {name}\nx = 1\n")
    monkeypatch.setattr(documents_module, "stdlib_root", lambda: root)
    manifest = prepare_corpus(None, "byte", tmp_path / "c", default=True, progress=False)
    names = manifest["splits"]["train"]["names"] + manifest["splits"]["val"]["names"]
    assert sorted(names) == ["json/decoder.py", "os.py"]
    (record,) = manifest["inputs"]
    assert record["kind"] == "stdlib" and record["python"] == platform.python_version()


def test_real_stdlib_listing_leaves_out_tests():
    names = documents_module.folder_files(
        documents_module.stdlib_root(), ".py", documents_module.STDLIB_EXCLUDED_DIRS
    )
    assert "json/decoder.py" in names and len(names) > 300
    assert not any({"test", "tests", "site-packages"} & set(name.split("/")) for name in names)


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda tmp: [tmp / "nope.txt"], "--input: no such file or directory"),
        (lambda tmp: [], "--input: give at least one"),
        (lambda tmp: [tmp / "empty"], "the corpus is empty"),
        (lambda tmp: [tmp / "empty" / "blank.txt"], "the corpus is empty"),
        (lambda tmp: [tmp / "no_text.jsonl"], 'no_text.jsonl:2: no "text" field'),
        (lambda tmp: [tmp / "broken.jsonl"], "broken.jsonl:1: not valid JSON"),
    ],
)
def test_bad_inputs_raise_one_line_errors(tmp_path, make_input, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.txt").write_text("")
    (tmp_path / "empty" / "README").write_text("skipped, so it is no document\n")
    (tmp_path / "no_text.jsonl").write_text('{"text": "fine"}\n{"title": "no text"}\n')
    (tmp_path / "broken.jsonl").write_text('{"text": \n')
    with pytest.raises(ValueError) as error:
        prepare_corpus(make_input(tmp_path), "byte", tmp_path / "c", progress=False)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "c").exists()


def test_other_bad_arguments(folder, tmp_path):
    (tmp_path / "file").write_text("x")
    cases = [
        (dict(inputs=[folder], tokenizer="bpe:100", out_dir=tmp_path / "c"), "--tokenizer"),
        (
            dict(inputs=[folder], tokenizer="byte", out_dir=tmp_path / "c", default=True),
            "--default",
        ),
        (dict(inputs=[folder], tokenizer="byte", out_dir=tmp_path / "file"), "--out"),
    ]
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=name):
            prepare_corpus(progress=False, **kwargs)


def test_manifest_is_plain_json(folder, tmp_path):
    prepare_corpus([folder], "byte", tmp_path / "c", progress=False)
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["splits"]["val"]["tokens"] > 2
