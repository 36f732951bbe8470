"""Which documents go to the validation split: whole documents, by name or by seed, one at a time.

Both rules decide a document from its ordinal (its position among all D input documents) or its
name alone, so documents stream through ``prepare_corpus`` in order and the choice never depends
on how they are batched or on ``--workers``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fnmatch import translate

MASK64 = (1 << 64) - 1


def splitmix64(value: int) -> int:
    """SplitMix64's output function: a well-mixed 64-bit integer of ``value``."""
    value = (value + 0x9E3779B97F4A7C15) & MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


class ValByPatterns:
    """Val = the documents whose name matches one of the fnmatch ``patterns`` (case-sensitive).

    ``documents.val_patterns_check`` refuses patterns that match nothing or everything before a
    document is read.
    """

    needs_names = True

    def __init__(self, patterns: Sequence[str]):
        if not patterns:
            raise ValueError("--val-documents: give at least one pattern")
        self.patterns = list(patterns)
        self._regex = re.compile("|".join(f"(?:{translate(p)})" for p in self.patterns))

    def is_val(self, ordinal: int, name: str) -> bool:
        """Whether the document ``name`` belongs to val (``ordinal`` is unused)."""
        del ordinal
        return self._regex.match(name) is not None

    def record(self, seed: int) -> dict:
        return {"seed": seed, "val_documents": self.patterns}


class ValByFraction:
    """Val = k = max(1, round(fraction * D)) of the D documents, one in each of k equal runs.

    Run j covers ordinals ``[floor(j D / k), floor((j + 1) D / k))``; its val document is at a
    position drawn from (seed, j). Every stretch of the corpus gives its share of val documents,
    exactly k are chosen, and the same seed always picks the same ones.

    Raises:
        ValueError: naming ``--val-fraction`` when it is outside (0, 1), when there are fewer
            than 2 documents, or when val would take every document.
    """

    def __init__(self, documents: int, fraction: float, seed: int):
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"--val-fraction must be in (0, 1); got {fraction}")
        if documents < 2:
            raise ValueError(
                f"--val-fraction: splitting by document needs at least 2 documents; got {documents}"
            )
        chosen = max(1, round(fraction * documents))
        if chosen >= documents:
            raise ValueError(
                f"--val-fraction {fraction} would put all {documents} documents in val"
            )
        self.documents, self.fraction, self.seed, self.chosen = documents, fraction, seed, chosen
        self._run = (0, self.run_start(1), self.val_ordinal(0))  # start, end, val of a run

    needs_names = False

    def run_start(self, run: int) -> int:
        """First ordinal of run ``run``."""
        return run * self.documents // self.chosen

    def val_ordinal(self, run: int) -> int:
        """The ordinal of the val document of run ``run``."""
        start, end = self.run_start(run), self.run_start(run + 1)
        draw = splitmix64(splitmix64(self.seed) ^ run)
        return start + (draw * (end - start) >> 64)

    def is_val(self, ordinal: int, name: str) -> bool:
        """Whether document ``ordinal`` belongs to val (``name`` is unused)."""
        del name
        start, end, val = self._run
        if start <= ordinal < end:  # documents come in order: mostly the run of the last one
            return ordinal == val
        run = ordinal * self.chosen // self.documents
        while self.run_start(run + 1) <= ordinal:
            run += 1
        while self.run_start(run) > ordinal:
            run -= 1
        self._run = (self.run_start(run), self.run_start(run + 1), self.val_ordinal(run))
        return ordinal == self._run[2]

    def record(self, seed: int) -> dict:
        return {"seed": seed, "val_fraction": self.fraction}
