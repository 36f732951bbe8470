"""Byte and BPE tokenizers: ids, round trips, the saved file, chunked == whole encoding."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer
from tokenizers.pre_tokenizers import ByteLevel

from selrope.data.tokenizer import (
    EOS_TOKEN,
    DocumentEncoder,
    TokenizerSpec,
    byte_to_symbol,
    byte_tokenizer,
    parse_tokenizer_spec,
    token_dtype,
    train_bpe,
)

TEXTS = [
    "Hello, world!\r\nTabs\tand  double  spaces \n\n\nend",
    "café naïve 東京 🙂 \x00\x7f\u2028 — dashes",
    "def f(x):\n    return x + 1  # comment\n\n\nclass A:\n\tpass\n",
    f"a literal {EOS_TOKEN} inside text",
]


def random_text(rng: random.Random, length: int) -> str:
    """Text dense in the whitespace patterns where naive chunking would change the pieces."""
    return "".join(rng.choice("ab cd\n\n \t.,1é'sS") for _ in range(length))


def test_byte_alphabet_is_bytelevels() -> None:
    assert sorted(byte_to_symbol().values()) == sorted(ByteLevel.alphabet())


def test_byte_ids_are_raw_bytes_and_round_trip(tmp_path: Path) -> None:
    tokenizer = byte_tokenizer()
    tokenizer.encode_special_tokens = True
    assert tokenizer.get_vocab_size() == 257
    assert tokenizer.token_to_id(EOS_TOKEN) == 256
    every_byte = bytes(range(256)).decode("latin-1")  # code points 0..255 -> 1 or 2 UTF-8 bytes
    for text in [*TEXTS, every_byte]:
        ids = tokenizer.encode(text).ids
        assert ids == list(text.encode("utf-8"))
        assert tokenizer.decode(ids) == text
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert loaded.encode(TEXTS[1]).ids == list(TEXTS[1].encode("utf-8"))
    assert loaded.encode(EOS_TOKEN).ids == [256]  # the file keeps the standard special handling


def test_bpe_trains_round_trips_and_loads(tmp_path: Path) -> None:
    rng = random.Random(0)
    corpus = [*TEXTS, *(random_text(rng, 400) for _ in range(20))] * 3
    tokenizer = train_bpe(corpus, 300)
    assert tokenizer.get_vocab_size() == 300
    assert tokenizer.token_to_id(EOS_TOKEN) == 0
    tokenizer.encode_special_tokens = True
    encoded = [tokenizer.encode(text).ids for text in TEXTS]
    for text, ids in zip(TEXTS, encoded, strict=True):
        assert tokenizer.decode(ids) == text
    assert sum(map(len, encoded)) < sum(len(text.encode("utf-8")) for text in TEXTS)  # merges
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert loaded.encode(TEXTS[2]).ids == tokenizer.encode(TEXTS[2]).ids
    assert train_bpe(corpus, 300).to_str() == tokenizer.to_str()  # deterministic


def encode(kind: str, tokenizer: Tokenizer, texts: list[str], eos_id: int) -> list[list[int]]:
    """Each text's ids through ``DocumentEncoder``, checked to come as ``EOS ids`` per text."""
    encoder = DocumentEncoder(kind, tokenizer.to_str(), eos_id, np.dtype(np.uint16))
    tokens, lengths = encoder.encode(texts)
    assert tokens.dtype == np.uint16 and lengths.tolist() == [len(t) for t in np.split(
        tokens, np.cumsum(lengths)[:-1])]  # fmt: skip
    starts = np.cumsum(lengths) - lengths
    assert np.all(tokens[starts] == eos_id)
    return [tokens[a + 1 : a + n].tolist() for a, n in zip(starts, lengths, strict=True)]


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_chunked_encoding_equals_encoding_the_whole_text(kind: str) -> None:
    rng = random.Random(1)
    texts = [*TEXTS, "", *(random_text(rng, 3000) for _ in range(4))]
    tokenizer = byte_tokenizer() if kind == "byte" else train_bpe(texts * 2, 400)
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    tokenizer.encode_special_tokens = True
    for text, ids in zip(texts, encode(kind, tokenizer, texts, eos_id), strict=True):
        assert ids == tokenizer.encode(text).ids


def test_literal_eos_in_text_is_never_the_eos_id() -> None:
    (ids,) = encode("byte", byte_tokenizer(), [TEXTS[3]], 256)
    assert 256 not in ids and bytes(ids).decode() == TEXTS[3]
    (ids,) = encode("bpe", train_bpe(TEXTS * 3, 300), [TEXTS[3]], 0)
    assert 0 not in ids


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("byte", TokenizerSpec("byte")),
        ("bpe:257", TokenizerSpec("bpe", 257)),
        ("bpe:8192", TokenizerSpec("bpe", 8192)),
        ("bpe:1048576", TokenizerSpec("bpe", 1 << 20)),
    ],
)
def test_parse_tokenizer_spec(spec: str, parsed) -> None:
    assert parse_tokenizer_spec(spec) == parsed


def test_a_tokenizer_file_is_a_spec(tmp_path: Path) -> None:
    byte_tokenizer().save(str(tmp_path / "tokenizer.json"))
    spec = parse_tokenizer_spec(str(tmp_path / "tokenizer.json"))
    assert spec == TokenizerSpec("file", path=tmp_path / "tokenizer.json")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bpe", "must be 'byte', 'bpe:VOCAB'"),
        ("bpe:", "VOCAB must be an integer"),
        ("bpe:lots", "VOCAB must be an integer"),
        ("wordpiece:100", "must be 'byte', 'bpe:VOCAB'"),
        ("bpe:256", "VOCAB must be at least 257"),
        ("bpe:0", "VOCAB must be at least 257"),
        ("bpe:99999999999", "and at most 1048576"),
        ("missing/tokenizer.json", "no such tokenizer.json file"),
    ],
)
def test_bad_tokenizer_spec(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="--tokenizer") as error:
        parse_tokenizer_spec(spec)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_token_dtype_uint16_until_65536_ids() -> None:
    assert token_dtype(257) == np.uint16
    assert token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32
