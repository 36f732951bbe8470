"""prepare_corpus: shard layout, manifest, inputs of each kind, resume, workers, atomic writes."""

from __future__ import annotations

import gzip
import json
import platform
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from corpus_helpers import corpus_files, documents_of, read_llmc_shard, split_stream
from tokenizers import Tokenizer

from selrope.data import documents as documents_module
from selrope.data import load_manifest, load_split, load_tokenizer, prepare_corpus
from selrope.data import prepare as prepare_module
from selrope.data.shards import read_index_header


def texts_by_split(out, texts: dict[str, str]) -> dict[str, list[str]]:
    """Which of ``texts`` each split holds, in stream order, found by decoding its documents."""
    tokenizer = load_tokenizer(out)
    eos = load_manifest(out)["tokenizer"]["eos_id"]
    by_text = {text: name for name, text in texts.items()}
    return {
        split: [
            by_text[tokenizer.decode(ids)] for ids in documents_of(split_stream(out, split), eos)
        ]
        for split in ("train", "val")
    }


@pytest.mark.parametrize("tokenizer", ["byte", "bpe:300"])
def test_shards_hold_every_document_once_encoded_as_the_tokenizer_does(
    folder, jsonl, expected_texts, tmp_path, tokenizer
):
    out = tmp_path / "corpus"
    manifest = prepare_corpus(
        [folder, jsonl], tokenizer, out, val_fraction=0.25, shard_tokens=40, progress=False
    )
    assert load_manifest(out) == manifest
    hf_tokenizer = load_tokenizer(out)
    eos = manifest["tokenizer"]["eos_id"]
    assert hf_tokenizer.token_to_id("<|endoftext|>") == eos
    seen = []
    for split in ("train", "val"):
        entry = manifest["splits"][split]
        shards = sorted(out.glob(f"{split}_*.bin"))
        assert [s["file"] for s in entry["shards"]] == [p.name for p in shards]
        sizes = [len(read_llmc_shard(p)) for p in shards]
        assert all(size == 40 for size in sizes[:-1]) and 0 < sizes[-1] <= 40
        stream = split_stream(out, split)
        assert entry["tokens"] == stream.size and entry["max_id"] == stream.max()
        data = load_split(out, split)
        assert np.array_equal(np.asarray(data.tokens), stream)
        assert np.array_equal(data.doc_starts, np.flatnonzero(stream == eos)[:-1])
        documents = documents_of(stream, eos)
        assert entry["documents"] == len(documents) == data.doc_starts.size
        for ids in documents:
            text = hf_tokenizer.decode(ids)
            assert ids == hf_tokenizer.encode(text).ids and text in expected_texts.values()
            seen.append(text)
        assert entry["bytes"] == sum(len(hf_tokenizer.decode(ids).encode()) for ids in documents)
    assert sorted(seen) == sorted(expected_texts.values())  # every document in exactly one split
    assert manifest["splits"]["val"]["documents"] == 2  # round(0.25 * 8)


def test_manifest_records_inputs_skipped_files_and_rule(folder, jsonl, tmp_path):
    manifest = prepare_corpus([folder, jsonl], "byte", tmp_path / "c", seed=7, progress=False)
    assert manifest["format"] == "selrope.data" and manifest["version"] == 2
    tokenizer = dict(manifest["tokenizer"])
    assert len(tokenizer.pop("sha256")) == 64
    assert tokenizer == {
        "kind": "byte",
        "spec": "byte",
        "vocab_size": 257,
        "eos_id": 256,
        "eos_token": "<|endoftext|>",
        "file": "tokenizer.json",
    }
    assert manifest["dtype"] == "uint16" and manifest["shard_tokens"] == 100_000_000
    assert manifest["split_rule"] == {"seed": 7, "val_fraction": 0.05}
    assert manifest["python"] == platform.python_version() and manifest["seconds"] >= 0
    assert sorted(entry["path"] for entry in manifest["skipped"]) == [
        str(folder / "LICENSE"),
        str(folder / "README.md"),
    ]
    assert manifest["replaced_bytes"] == 0
    folder_record, jsonl_record = manifest["inputs"]
    assert folder_record["path"] == str(folder.resolve()) and folder_record["kind"] == "folder"
    assert folder_record["files"] == 5  # no hidden, licence or readme files
    assert jsonl_record["kind"] == "jsonl" and jsonl_record["bytes"] == jsonl.stat().st_size
    assert len({folder_record["sha256"], jsonl_record["sha256"]}) == 2
    assert not (tmp_path / "c" / "prepare.json").exists()


def test_split_stream_is_eos_separated_documents_with_one_final_eos(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    for name, text in (("a.txt", "ab"), ("b.txt", ""), ("c.txt", "xyz"), ("d.txt", "q")):
        (root / name).write_text(text)
    prepare_corpus([root], "byte", tmp_path / "c", val_documents=["d.txt"], progress=False)
    eos = 256
    expected = [eos, *b"ab", eos, eos, *b"xyz", eos]  # the empty b.txt is a document too
    assert split_stream(tmp_path / "c", "train").tolist() == expected
    assert split_stream(tmp_path / "c", "val").tolist() == [eos, *b"q", eos]


def test_compressed_jsonl_and_parquet_give_the_same_tokens_as_plain_jsonl(tmp_path):
    records = [{"id": i, "body": f"record {i}: " + "words " * i} for i in range(12)]
    lines = "".join(json.dumps(r) + "\n" for r in records).encode()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "r.jsonl").write_bytes(lines)
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "r.jsonl.gz").write_bytes(gzip.compress(lines))
    zstandard = pytest.importorskip("zstandard")
    (tmp_path / "zst").mkdir()
    (tmp_path / "zst" / "r.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    (tmp_path / "pq").mkdir()
    table = pa.table({"id": [r["id"] for r in records], "body": [r["body"] for r in records]})
    pq.write_table(table, tmp_path / "pq" / "r.parquet", row_group_size=5)
    streams = {}
    for kind in ("in", "gz", "zst", "pq"):
        out = tmp_path / f"c-{kind}"
        prepare_corpus([tmp_path / kind], "byte", out, text_field="body", progress=False)
        streams[kind] = (split_stream(out, "train"), split_stream(out, "val"))
        documents = documents_of(np.concatenate(streams[kind]), 256)
        assert sorted(bytes(d).decode() for d in documents if d) == sorted(
            r["body"] for r in records
        )
    for kind in ("gz", "zst", "pq"):
        for split in (0, 1):
            assert np.array_equal(streams[kind][split], streams["in"][split])


def test_single_text_file_is_one_document_named_by_its_file(folder, tmp_path):
    inputs = [folder / "alpha.txt", folder / "beta.txt"]
    manifest = prepare_corpus(inputs, "byte", tmp_path / "c", val_documents=["beta.txt"],
                              progress=False)  # fmt: skip
    assert manifest["inputs"][0]["kind"] == "text"
    texts = {name: (folder / name).read_text() for name in ("alpha.txt", "beta.txt")}
    assert texts_by_split(tmp_path / "c", texts) == {"train": ["alpha.txt"], "val": ["beta.txt"]}


def test_undecodable_bytes_are_replaced_and_counted(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "bad.txt").write_bytes(b"ok \xff\xfe then \xe2\x82")  # 2 stray bytes + a cut-off char
    (raw / "good.txt").write_bytes("fine é".encode())
    manifest = prepare_corpus([raw], "byte", tmp_path / "c", val_documents=["good.txt"],
                              progress=False)  # fmt: skip
    assert manifest["replaced_bytes"] == 4
    (ids,) = documents_of(split_stream(tmp_path / "c", "train"), 256)
    assert bytes(ids).decode("utf-8") == "ok \ufffd\ufffd then \ufffd"


def test_lone_surrogates_and_bad_bytes_in_jsonl_are_replaced_and_counted(tmp_path):
    (tmp_path / "in").mkdir()
    lines = [b'{"text": "pair \\ud83d\\ude00 ok"}', b'{"text": "lone \\ud800 here"}',
             b'{"text": "bad \xff byte"}']  # fmt: skip
    (tmp_path / "in" / "r.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    manifest = prepare_corpus([tmp_path / "in"], "byte", tmp_path / "c", val_documents=["*:1"],
                              progress=False)  # fmt: skip
    assert manifest["replaced_bytes"] == 2
    train = [bytes(d).decode() for d in documents_of(split_stream(tmp_path / "c", "train"), 256)]
    assert train == ["lone \ufffd here", "bad \ufffd byte"]
    (val,) = documents_of(split_stream(tmp_path / "c", "val"), 256)
    assert bytes(val).decode() == "pair \U0001f600 ok"


def test_files_that_are_not_text_are_skipped_and_said_so(folder, tmp_path, capsys):
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(100))
    (folder / "tool").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(200))
    manifest = prepare_corpus([folder], "byte", tmp_path / "c", progress=True)
    err = capsys.readouterr().err
    assert f"skipped {folder / 'logo.png'}: not text" in err and f"skipped {folder / 'tool'}" in err
    skipped = {entry["path"]: entry["reason"] for entry in manifest["skipped"]}
    assert skipped[str(folder / "logo.png")].startswith("not text")
    assert manifest["inputs"][0]["files"] == 5
    assert manifest["replaced_bytes"] == 0


def test_prepare_is_deterministic(folder, tmp_path):
    for out in ("a", "b"):
        prepare_corpus([folder], "bpe:280", tmp_path / out, seed=3, shard_tokens=50, progress=False)
    assert corpus_files(tmp_path / "a") == corpus_files(tmp_path / "b")


def test_workers_do_not_change_the_bytes(many_documents, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "BATCH_CHARS", 60)  # many batches in flight at once
    for workers in (1, 2):
        prepare_corpus([many_documents], "bpe:300", tmp_path / f"w{workers}", shard_tokens=64,
                       workers=workers, progress=False)  # fmt: skip
    files = corpus_files(tmp_path / "w1")
    assert len([name for name in files if name.endswith(".bin")]) > 4
    assert files == corpus_files(tmp_path / "w2")


class Killed(BaseException):
    """Stands in for the process being killed."""


@pytest.mark.parametrize("kill_after", [1, 3, 6])
@pytest.mark.parametrize("tokenizer", ["byte", "bpe:300"])
def test_killed_prepare_resumes_to_the_same_bytes(
    many_documents, tmp_path, monkeypatch, kill_after, tokenizer
):
    arguments = dict(shard_tokens=37, val_fraction=0.2, progress=False)
    prepare_corpus([many_documents], tokenizer, tmp_path / "straight", **arguments)
    expected = corpus_files(tmp_path / "straight")
    assert len([n for n in expected if n.endswith(".bin")]) > kill_after + 1

    out = tmp_path / "killed"
    real_close = prepare_module.ShardWriter._close
    closes = []

    def close_then_die(self, *args):
        real_close(self, *args)
        closes.append(self.split)
        if len(closes) == kill_after:
            self._open()  # a half-written next shard, as a kill leaves one
            self._file.write(b"partial")
            raise Killed

    monkeypatch.setattr(prepare_module.ShardWriter, "_close", close_then_die)
    with pytest.raises(Killed):
        prepare_corpus([many_documents], tokenizer, out, **arguments)
    monkeypatch.undo()
    assert not (out / "manifest.json").exists() and (out / "prepare.json").exists()
    assert any(p.name.endswith(".tmp") for p in out.iterdir())

    encoded = []
    real_encode = prepare_module.DocumentEncoder.encode

    def counting_encode(self, texts):
        encoded.extend(texts)
        return real_encode(self, texts)

    monkeypatch.setattr(prepare_module.DocumentEncoder, "encode", counting_encode)
    manifest = prepare_corpus([many_documents], tokenizer, out, **arguments)
    assert corpus_files(out) == expected
    assert manifest["splits"] == load_manifest(tmp_path / "straight")["splits"]
    assert len(encoded) < 20  # the documents of complete shards were not tokenised again


def test_a_process_killed_mid_run_resumes_to_the_same_bytes(tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    rng = np.random.default_rng(0)
    words = np.array(["river", "stone", "light", "the", "of", "a", "moves", "under", "green"])
    for i in range(100):
        (root / f"d{i:03d}.txt").write_text(" ".join(rng.choice(words, 1000)) + "\n")
    command = [sys.executable, "-c", "import sys; from selrope.cli import main; main(sys.argv[1:])",
               "data", "prepare", "--input", str(root),
               "--tokenizer", "bpe:400", "--shard-tokens", "2k", "--quiet"]  # fmt: skip
    subprocess.run([*command, "--out", str(tmp_path / "straight")], check=True)
    expected = corpus_files(tmp_path / "straight")
    out = tmp_path / "killed"
    process = subprocess.Popen([*command, "--out", str(out)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.glob("train_*.idx"))) < 3:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists()  # killed before it finished
    subprocess.run([*command, "--out", str(out)], check=True)
    assert corpus_files(out) == expected


def test_rerun_of_a_complete_corpus_and_other_arguments(folder, tmp_path, capsys):
    out = tmp_path / "c"
    first = prepare_corpus([folder], "byte", out, progress=False)
    files = corpus_files(out)
    assert prepare_corpus([folder], "byte", out, progress=True) == first  # nothing to do
    assert "already holds this corpus" in capsys.readouterr().err
    assert corpus_files(out) == files
    with pytest.raises(ValueError, match="--out .* made with other arguments; give --overwrite"):
        prepare_corpus([folder], "bpe:300", out, progress=False)
    assert corpus_files(out) == files
    prepare_corpus([folder], "bpe:300", out, overwrite=True, progress=False)
    assert load_manifest(out)["tokenizer"]["spec"] == "bpe:300"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no selrope corpus"):
        prepare_corpus([folder], "byte", tmp_path / "other", overwrite=True, progress=False)


def test_interrupted_rewrite_leaves_no_manifest(folder, tmp_path, monkeypatch):
    out = tmp_path / "c"
    prepare_corpus([folder], "byte", out, progress=False)
    real_write = prepare_module.write_atomically

    def failing_write(path, data: bytes) -> None:
        if path.name == "tokenizer.json":
            raise KeyboardInterrupt
        real_write(path, data)

    monkeypatch.setattr(prepare_module, "write_atomically", failing_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus([folder], "bpe:300", out, overwrite=True, progress=False)
    with pytest.raises(FileNotFoundError, match="no llm.c shards"):
        load_split(out, "train")
    monkeypatch.undo()
    prepare_corpus([folder], "byte", out, progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["manifest.json", "tokenizer.json", "train_000000.bin", "train_000000.idx",
                     "val_000000.bin", "val_000000.idx"]  # fmt: skip


def test_bpe_is_trained_on_a_bounded_sample_of_train_documents(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    (root / "a_train.txt").write_text("aaaa bbbb aaaa bbbb " * 50)
    (root / "b_val.txt").write_text("zzqq zzqq zzqq " * 50)
    (root / "c_late.txt").write_text("kkww kkww kkww " * 50)
    prepare_corpus([root], "bpe:300", tmp_path / "c", val_documents=["b_val.txt"],
                   tokenizer_sample_bytes=1000, progress=False)  # fmt: skip
    vocab = Tokenizer.from_file(str(tmp_path / "c" / "tokenizer.json")).get_vocab()
    assert "aaaa" in vocab and "zz" not in vocab and "kk" not in vocab
    prepare_corpus([root], "bpe:300", tmp_path / "d", val_documents=["b_val.txt"], progress=False)
    vocab = Tokenizer.from_file(str(tmp_path / "d" / "tokenizer.json")).get_vocab()
    assert "kkww" in vocab and "zz" not in vocab


def test_default_corpus_is_the_stdlib_without_tests(tmp_path, monkeypatch):
    root = tmp_path / "lib"
    for name in ("json/decoder.py", "os.py", "test/test_os.py", "idlelib/idle_test/t.py",
                 "site-packages/pkg/mod.py", "ctypes/tests/t.py", "notes.txt"):  # fmt: skip
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"# {name}\nx = 1\n")
    monkeypatch.setattr(documents_module, "stdlib_root", lambda: root)
    manifest = prepare_corpus(None, "byte", tmp_path / "c", default=True, progress=False)
    texts = {name: (root / name).read_text() for name in ("json/decoder.py", "os.py")}
    found = texts_by_split(tmp_path / "c", texts)
    assert sorted(found["train"] + found["val"]) == ["json/decoder.py", "os.py"]
    (record,) = manifest["inputs"]
    assert record["kind"] == "stdlib" and record["python"] == platform.python_version()


def test_real_stdlib_listing_leaves_out_tests():
    names = documents_module.folder_files(
        documents_module.stdlib_root(), ".py", documents_module.STDLIB_EXCLUDED_DIRS
    )
    assert "json/decoder.py" in names and len(names) > 300
    assert not any({"test", "tests", "site-packages"} & set(name.split("/")) for name in names)


def test_index_records_where_each_shard_ends(many_documents, tmp_path):
    prepare_corpus([many_documents], "byte", tmp_path / "c", shard_tokens=100,
                   val_documents=["doc00.txt"], progress=False)  # fmt: skip
    train = sorted((tmp_path / "c").glob("train_*.idx"))
    headers = [read_index_header(p) for p in train]
    assert [h.tokens for h in headers[:-1]] == [100] * (len(headers) - 1)
    assert headers[-1].next_document == 20 and headers[-1].next_offset == 0  # finished
    for header in headers[:-1]:
        assert 1 <= header.next_document < 20


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda tmp: [tmp / "nope.txt"], "--input: no such file or directory"),
        (lambda tmp: [], "--input: give at least one"),
        (lambda tmp: [tmp / "empty"], "the corpus is empty"),
        (lambda tmp: [tmp / "empty" / "blank.txt"], "the corpus is empty"),
        (lambda tmp: [tmp / "loop"], "a symbolic link loop"),
        (lambda tmp: [tmp / "selfloop"], "a symbolic link loop"),
        (lambda tmp: [tmp / "dangling"], "a broken symbolic link"),
    ],
)
def test_bad_inputs_are_refused_before_anything_is_written(tmp_path, make_input, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.txt").write_text("")
    (tmp_path / "empty" / "README").write_text("skipped, so it is no document\n")
    (tmp_path / "loop" / "sub").mkdir(parents=True)
    (tmp_path / "loop" / "a.txt").write_text("text")
    (tmp_path / "loop" / "sub" / "up").symlink_to(tmp_path / "loop")
    (tmp_path / "selfloop").mkdir()
    (tmp_path / "selfloop" / "me").symlink_to(tmp_path / "selfloop" / "me")
    (tmp_path / "dangling").mkdir()
    (tmp_path / "dangling" / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    with pytest.raises(ValueError) as error:
        prepare_corpus(make_input(tmp_path), "byte", tmp_path / "c", progress=False)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda tmp: [tmp / "no_text.jsonl"], 'no_text.jsonl:2: no "text" field'),
        (lambda tmp: [tmp / "broken.jsonl"], "broken.jsonl:1: not valid JSON"),
    ],
)
def test_bad_records_name_their_line_and_leave_no_corpus(tmp_path, make_input, message):
    (tmp_path / "no_text.jsonl").write_text('{"text": "fine"}\n{"title": "no text"}\n')
    (tmp_path / "broken.jsonl").write_text('{"text": \n{"text": "fine"}\n')
    with pytest.raises(ValueError) as error:
        prepare_corpus(make_input(tmp_path), "byte", tmp_path / "c", progress=False)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "c" / "manifest.json").exists()


def test_symlinked_files_and_folders_are_followed(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.txt").write_text("alpha")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "linked").symlink_to(tmp_path / "real")
    (tmp_path / "in" / "b.txt").symlink_to(tmp_path / "real" / "a.txt")
    manifest = prepare_corpus([tmp_path / "in"], "byte", tmp_path / "c", progress=False)
    assert manifest["inputs"][0]["files"] == 2


def test_other_bad_arguments_are_refused_before_anything_is_written(folder, tmp_path):
    (tmp_path / "file").write_text("x")
    cases = [
        (dict(tokenizer="bpe:100"), "--tokenizer bpe:100: VOCAB must be at least 257"),
        (dict(tokenizer="bpe:99999999999"), "at most 1048576"),
        (dict(tokenizer=str(tmp_path / "missing.json")), "no such tokenizer.json"),
        (dict(tokenizer=str(tmp_path / "file")), "not a tokenizers file"),
        (dict(default=True), "--input and --default are exclusive"),
        (dict(out_dir=tmp_path / "file"), "--out .* exists and is not a folder"),
        (dict(out_dir=tmp_path / "file" / "corpus"), "--out .*file is a file, not a folder"),
        (dict(out_dir=folder / "corpus"), "--out .* lies inside --input"),
        (dict(eos_token="</s>"), "--eos-token applies to a tokenizer.json"),
        (dict(shard_tokens=0), "--shard-tokens must be an integer"),
        (dict(workers=0), "--workers must be an integer"),
        (dict(val_fraction=1.0), "--val-fraction must be in"),
        (dict(val_documents=["*"]), "--val-documents \\* matches all"),
        (dict(val_documents=["nothing*"]), "pattern 'nothing\\*' matches no document"),
    ]
    for overrides, message in cases:
        kwargs = {"inputs": [folder], "tokenizer": "byte", "out_dir": tmp_path / "c", **overrides}
        with pytest.raises(ValueError, match=message):
            prepare_corpus(progress=False, **kwargs)
        assert not (tmp_path / "c").exists() and not (folder / "corpus").exists()
