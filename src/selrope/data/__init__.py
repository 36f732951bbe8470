"""Text corpora for language modelling: documents -> byte/BPE tokenizer -> token streams.

``prepare_corpus`` (the ``selrope data prepare`` command) writes a folder that the readers below
open; ``selrope.data.reader`` describes its files and the stream layout
``EOS d1 EOS d2 ... EOS dn EOS``.
"""

from selrope.data.prepare import prepare_corpus
from selrope.data.reader import (
    TokenSplit,
    load_manifest,
    load_split,
    load_tokenizer,
    segment_ids_for_window,
)
from selrope.data.tokenizer import EOS_TOKEN

__all__ = [
    "EOS_TOKEN",
    "TokenSplit",
    "load_manifest",
    "load_split",
    "load_tokenizer",
    "prepare_corpus",
    "segment_ids_for_window",
]
