"""Text corpora for language modelling: documents -> tokenizer -> token shards, and reading them.

``prepare_corpus`` (the ``selrope data prepare`` command) streams text files, folders, JSONL
(also .gz / .zst) and Parquet through a byte, BPE or any ``tokenizer.json`` tokenizer into
shards in llm.c's format (``selrope.data.shards``); ``open_corpus`` / ``load_split`` read those,
corpora of the first release, and llm.c / modded-nanogpt shards made elsewhere
(``selrope.data.reader``). Each split's stream is ``EOS d1 EOS d2 ... EOS dn EOS``.
"""

from selrope.data.prepare import prepare_corpus
from selrope.data.reader import (
    CorpusInfo,
    TokenSplit,
    corpus_fingerprint,
    load_manifest,
    load_split,
    load_tokenizer,
    open_corpus,
    segment_ids_for_window,
)
from selrope.data.shards import TokenStream
from selrope.data.tokenizer import EOS_TOKEN

__all__ = [
    "EOS_TOKEN",
    "CorpusInfo",
    "TokenSplit",
    "TokenStream",
    "corpus_fingerprint",
    "load_manifest",
    "load_split",
    "load_tokenizer",
    "open_corpus",
    "prepare_corpus",
    "segment_ids_for_window",
]
