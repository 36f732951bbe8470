"""``selrope analyze rotation``: how far each rotation pair of a trained language model turns
within a window of held-out text.

A pair whose angle changes by less than about 0.1 rad across a window barely tells the window's
positions apart: there it acts as NoPE. A pair that turns by more than about 1 rad separates them.
RoPE's pair i turns by ``(W - 1) * omega_i`` over W tokens, whatever the text. Selective RoPE's
and CARoPE's pairs turn by ``omega_i`` times the sum of their input-dependent increments; this
measures that sum on W-token windows of a corpus' validation split, each window inside one
document, and averages its size over the windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from selrope.analysis.plots import new_figure, save_figure
from selrope.analysis.probes import mixer_inputs, rotary_module
from selrope.analysis.report import Section
from selrope.data import TokenSplit
from selrope.models import LanguageModel
from selrope.rotary import RoPE
from selrope.rotary.base import CumulativeRotaryEmbedding, RotaryEmbedding

FIGURE = "rotation.png"
STILL, TURNING = 0.1, 1.0  # rad across a window: below STILL a pair acts as NoPE there


@torch.no_grad()
def pair_rotation(rotary: nn.Module, rotary_input: torch.Tensor) -> torch.Tensor | None:
    """``|theta_(W-1) - theta_0|`` of every pair in every window, not reduced mod 2 pi.

    Args:
        rotary: a layer's rotary embedding.
        rotary_input: ``(B, W, d)`` what it reads, each row a window from its document's start
            of reading (no state carried in).

    Returns:
        ``(B, H, R)`` float64 radians (H = 1 for RoPE, whose angles are the same in every head),
        or None for a module that does not rotate by angles (NoPE).
    """
    B, W, _ = rotary_input.shape
    if isinstance(rotary, CumulativeRotaryEmbedding):
        increments, frequencies, _, _ = rotary.phase_inputs(rotary_input, None, torch.float64)
        turned = increments[:, 1:].sum(1)  # theta_0 already holds increment 0
        if frequencies is not None:
            turned = turned * frequencies.double()
        return turned.abs()
    if isinstance(rotary, RoPE):
        return ((W - 1) * rotary.frequencies().double()).expand(B, 1, -1)
    return None


def window_starts(split: TokenSplit, length: int, count: int) -> np.ndarray:
    """Stream offsets of ``count`` windows of ``length`` tokens, each inside one document.

    Every document is cut into whole windows from its first token on (after its EOS), and
    ``count`` of all those windows are taken evenly spaced (so a document contributes in
    proportion to its length).

    Raises:
        ValueError: no document holds ``length`` tokens (naming the window length).
    """
    ends = np.append(np.asarray(split.doc_starts[1:]), len(split.tokens) - 1)
    candidates = [
        np.arange(start + 1, end - length + 1, length)
        for start, end in zip(np.asarray(split.doc_starts), ends, strict=True)
    ]
    starts = np.concatenate(candidates) if candidates else np.zeros(0, dtype=np.int64)
    if len(starts) == 0:
        raise ValueError(f"window: no validation document holds {length} tokens")
    picked = np.linspace(0, len(starts) - 1, min(count, len(starts))).round().astype(np.int64)
    return starts[np.unique(picked)]


class LayerRotation(NamedTuple):
    """One layer's pairs, each one's mean turn over the windows (radians)."""

    layer: int
    rotary: str
    per_pair: torch.Tensor  # (H * R,) float64, or empty for NoPE


def model_rotation(model: LanguageModel, ids: torch.Tensor) -> list[LayerRotation]:
    """Each layer's mean ``|theta_(W-1) - theta_0|`` per pair over the windows ``ids (B, W)``."""
    rows = []
    for layer, record in enumerate(mixer_inputs(model, ids)):
        rotary = rotary_module(record.mixer, RotaryEmbedding)  # None: NoPE
        turned = None if rotary is None else pair_rotation(rotary, record.rotary_input)
        per_pair = torch.zeros(0, dtype=torch.float64) if turned is None else turned.mean(0)
        name = "nope" if rotary is None else type(rotary).__name__
        rows.append(LayerRotation(layer, name, per_pair.flatten()))
    return rows


def _table_row(name: str, row: LayerRotation) -> str:
    if row.per_pair.numel() == 0:
        return f"| {name} | {row.layer} | {row.rotary} | 0 | 0 | 0 | 0 |"
    pairs = row.per_pair
    return (
        f"| {name} | {row.layer} | {row.rotary} | {(pairs > TURNING).double().mean():.2f} | "
        f"{(pairs > STILL).double().mean():.2f} | {pairs.median():.3g} | {pairs.max():.3g} |"
    )


def _plot(path: Path, results: list[tuple[str, list[LayerRotation]]]) -> Path:
    figure = new_figure(7.0, 4.0)
    axes = figure.add_subplot()
    for index, (name, rows) in enumerate(results):  # one colour per model, a line per layer
        label = name
        for row in rows:
            if row.per_pair.numel():
                turns = row.per_pair.sort(descending=True).values.clamp(min=1e-6)
                share = (torch.arange(len(turns)) + 0.5) / len(turns)
                axes.plot(share, turns, color=f"C{index % 10}", label=label, linewidth=1)
                label = None
    for level in (STILL, TURNING):
        axes.axhline(level, color="grey", linestyle="--", linewidth=0.8)
    axes.set_yscale("log")
    axes.set_xlabel("share of the layer's pairs (sorted by turn)")
    axes.set_ylabel("mean |theta_(W-1) - theta_0| (rad)")
    axes.set_title("each line: one layer", fontsize=9)
    axes.legend(fontsize=7)
    return save_figure(figure, path)


def analyze_rotation(
    out_dir: Path,
    models: Sequence[tuple[str, LanguageModel]],
    split: TokenSplit,
    length: int,
    count: int,
    about: str,
) -> Section:
    """The rotation table and figure for ``models`` (name, model) on ``count`` windows of
    ``length`` tokens of ``split``; ``about`` says where the models and the data came from."""
    starts = window_starts(split, length, count)
    tokens = np.asarray(split.tokens)
    ids = torch.from_numpy(tokens[starts[:, None] + np.arange(length)].astype(np.int64))
    results = [(name, model_rotation(model.eval(), ids)) for name, model in models]
    lines = [
        "## rotation: how far each pair turns within a window of text",
        "",
        f"{about}. {len(starts)} windows of {length} tokens, each inside one validation "
        "document. Per layer, over its H x D/2 pairs: the share of pairs whose angle changes by "
        f"more than {TURNING:g} rad and more than {STILL:g} rad from the window's first token to "
        "its last (mean over the windows), and the median and largest change. RoPE's are "
        "(W - 1) x its frequencies whatever the text; a pair below "
        f"{STILL:g} rad acts as NoPE inside the window.",
        "",
        f"| model | layer | rotary | > {TURNING:g} rad | > {STILL:g} rad | median rad "
        "| largest rad |",
        "|---|---|---|---:|---:|---:|---:|",
        *(_table_row(name, row) for name, rows in results for row in rows),
        "",
        f"![Turn of every pair, sorted]({FIGURE})",
    ]
    figure = _plot(out_dir / FIGURE, results)
    return Section("\n".join(lines), (figure,))
