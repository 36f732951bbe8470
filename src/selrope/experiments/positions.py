"""The position encodings a run can name, and the rotary config each name means for a task.

"nope", "rope", "carope" and "selective" are rotary embeddings in every mixer, "pope" (q and k
of twice the head width) in softmax attention and FoX; "sinusoidal" and
"learned" are absolute baselines (no rotation; a position vector added to the token
embeddings); "alibi", "cope" and "path" are mechanisms inside softmax attention's scores (no
rotation; the mixer's ``relative_positions``: ALiBi in attention, CoPE and PaTH in attention
and FoX). "selective" means the task's own Selective RoPE recipe (``TaskSpec``).
"""

from __future__ import annotations

from typing import Any

POSITIONS = (
    "nope", "rope", "carope", "selective", "pope", "sinusoidal", "learned", "alibi", "cope",
    "path",
)  # fmt: skip
"""The position encodings a run can name (``--rotary``)."""
ABSOLUTE_POSITIONS = ("sinusoidal", "learned")
"""The absolute baselines among them (no rotation; a vector added to the embeddings)."""
RELATIVE_POSITIONS = {
    "alibi": ("attention",),
    "cope": ("attention", "fox"),
    "path": ("attention", "fox"),
}
"""The mechanisms inside attention scores among them, with the mixers that have each."""
# The fixed-RoPE baseline of the Selective RoPE paper uses base 500,000 in every task.
BASELINE_ROPE = {"type": "rope", "base": 500000.0}
"""The fixed-RoPE baseline of the Selective RoPE paper (base 500,000 in every task)."""


def rotary_preset(
    name: str,
    selective_recipe: dict[str, Any],
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The rotary config called ``name`` (one of ``POSITIONS``).

    ``options`` maps position names to overrides of their preset, e.g.
    ``{"selective": {"projection": "full-rank"}}``; only ``options[name]`` applies, so one grid
    can change one embedding without touching the others.
    """
    if name not in POSITIONS:
        raise ValueError(f"rotary must be one of {', '.join(POSITIONS)}; got {name!r}")
    options = options or {}
    unknown = sorted(set(options) - set(POSITIONS))
    if unknown:
        raise ValueError(
            f"rotary_options must map rotary names {POSITIONS} to overrides; got keys {unknown}"
        )
    preset = {
        "rope": dict(BASELINE_ROPE),
        "carope": {"type": "carope"},
        "pope": {"type": "pope"},
        "selective": dict(selective_recipe),
    }.get(name, {"type": "nope"})
    return {**preset, **options.get(name, {})}


def absolute_position(name: str) -> str:
    """The ``LMConfig.absolute_position`` of position ``name``."""
    return name if name in ABSOLUTE_POSITIONS else "none"


def relative_position_options(name: str, mixer_kinds: list[str]) -> dict[str, Any]:
    """The mixer options position ``name`` sets in layers of ``mixer_kinds``: ``{}`` or
    ``{"relative_positions": name}``.

    Raises:
        ValueError: a mechanism of attention scores asked of a mixer without one.
    """
    if name not in RELATIVE_POSITIONS:
        return {}
    takers = RELATIVE_POSITIONS[name]
    others = sorted(set(mixer_kinds) - set(takers))
    if others:
        raise ValueError(
            f"--rotary {name} works inside softmax attention: it needs --mixer "
            f"{' or '.join(takers)}; got {','.join(others)}"
        )
    return {"relative_positions": name}
