"""``selrope analyze angles``: the angle each input token adds in a trained parity model.

Parity is a diagonal complex recurrence with eigenvalue -1 for the flipping token and +1 for the
other (research notes B.4), so Selective RoPE should learn an angle increment of about pi for
token 1 and 0 (mod 2 pi) for token 0, in the pairs that carry the parity.

The increment of a token is measured where it does not depend on the context: at the end of a
run of that token (``[BOS] a a ... a``), so that the short conv reads only that token. For the
first layer with the linear conv and no gate (the state-tracking recipe) that is also the token's
exact contribution to the accumulated phase of every later position,
``omega * (sum of the conv taps * p(a) + exp(b))``. Deeper layers read context-dependent inputs;
there it is the increment after a run of the token.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from selrope.analysis.parity_model import BOS, PARITY_TOKENS
from selrope.analysis.plots import new_figure, save_figure
from selrope.analysis.probes import MixerInput, mixer_inputs, selective_rotary
from selrope.analysis.report import Section
from selrope.models import LanguageModel
from selrope.rotary import SelectiveRoPE

TWO_PI = 2 * math.pi
TOLERANCE = math.pi / 8  # "near pi": within 22.5 degrees
RUN_LENGTH = 16


@torch.no_grad()
def step_increments(rotary: SelectiveRoPE, rotary_input: torch.Tensor) -> torch.Tensor:
    """``theta_t - theta_(t-1)``: the angle each step adds, ``omega * increments``, float64
    (no gradients).

    rotary_input ``(B, T, d)`` (what the module reads, from the sequence start) ->
    ``(B, T, H, R)``, not reduced mod 2 pi.
    """
    increments, _ = rotary.angle_increments(rotary_input, None, torch.float64)
    return increments * rotary.frequencies().double()


def run_inputs(
    model: LanguageModel, tokens: tuple[int, ...] = PARITY_TOKENS, run_length: int = RUN_LENGTH
) -> list[MixerInput]:
    """Each layer's inputs on the rows ``[BOS] + [a] * run_length``, one row per token a."""
    ids = torch.tensor([[BOS] + [a] * run_length for a in tokens])
    return mixer_inputs(model, ids)


def selective_layers(records: list[MixerInput]) -> list[tuple[int, MixerInput, SelectiveRoPE]]:
    """``(layer index, inputs, rotary)`` of the layers that rotate with Selective RoPE.

    Raises:
        ValueError: no layer does.
    """
    found = [
        (index, record, rotary)
        for index, record in enumerate(records)
        if (rotary := selective_rotary(record.mixer)) is not None
    ]
    if not found:
        raise ValueError("the model has no Selective RoPE layer")
    return found


def token_increments(model: LanguageModel, run_length: int = RUN_LENGTH) -> torch.Tensor:
    """The angle increment of each parity token, per Selective RoPE layer, head and pair.

    Returns:
        ``(L, 2, H, R)`` float64 (L: layers with Selective RoPE; index 1: token 0, token 1),
        the increment at the last position of ``[BOS] + [a] * run_length``.
    """
    layers = selective_layers(run_inputs(model, PARITY_TOKENS, run_length))
    return torch.stack(
        [step_increments(rotary, record.rotary_input)[:, -1] for _, record, rotary in layers]
    )


def wrap(angles: torch.Tensor) -> torch.Tensor:
    """Angles reduced to [-pi, pi)."""
    return torch.remainder(angles + math.pi, TWO_PI) - math.pi


def near(angles: torch.Tensor, target: float, tolerance: float = TOLERANCE) -> torch.Tensor:
    """Whether each angle is within ``tolerance`` of ``target`` modulo 2 pi."""
    return wrap(angles - target).abs() <= tolerance


def parity_pairs(increments: torch.Tensor) -> dict[str, torch.Tensor]:
    """Boolean masks ``(L, H, R)`` over the pairs of ``token_increments``' output.

    "flip": token 1 adds about pi and token 0 about 0 (mod 2 pi), the theory's solution;
    "difference": token 1 adds about pi more than token 0 (whatever token 0 adds);
    "token 1 near pi": token 1 alone.
    """
    zero, one = increments[:, 0], increments[:, 1]
    return {
        "flip": near(one, math.pi) & near(zero, 0.0),
        "difference": near(one - zero, math.pi),
        "token 1 near pi": near(one, math.pi),
    }


def plot_increments(path: Path, increments: torch.Tensor, flip: torch.Tensor) -> Path:
    """Left: histograms of each token's increment mod 2 pi; right: per pair, token 0's wrapped
    increment against token 1's, coloured by head; the theory's point (0, pi) marked."""
    figure = new_figure(10.5, 4.2)
    left, right = figure.subplots(1, 2)
    # [-pi/2, 3 pi/2): both theory values (0 and pi) inside, away from the edges.
    reduced = torch.remainder(increments + math.pi / 2, TWO_PI) - math.pi / 2
    bins = torch.linspace(-math.pi / 2, 3 * math.pi / 2, 37)
    for token in PARITY_TOKENS:
        left.hist(
            reduced[:, token].flatten(), bins=bins, alpha=0.6,
            label=f"token {token} ({'flips' if token else 'keeps'} the parity)",
        )  # fmt: skip
    left.axvline(0, color="C0", ls="--", lw=0.8, label="0 (theory for token 0)")
    left.axvline(math.pi, color="C1", ls="--", lw=0.8, label="pi (theory for token 1)")
    left.set_xticks(
        [-math.pi / 2, 0, math.pi / 2, math.pi, 3 * math.pi / 2],
        ["-pi/2", "0", "pi/2", "pi", "3pi/2"],
    )
    ticks = [0, math.pi / 2, math.pi, 3 * math.pi / 2, TWO_PI]
    left.set(
        xlabel="angle increment mod 2 pi, in [-pi/2, 3pi/2) (rad)",
        ylabel="pairs (all heads)",
        title="increment per token",
    )
    left.legend(fontsize="small")

    layers, _, heads, pairs = increments.shape
    colours = [f"C{h}" for h in range(heads)]
    for h in range(heads):
        x = wrap(increments[:, 0, h]).flatten()
        y = torch.remainder(increments[:, 1, h], TWO_PI).flatten()
        right.scatter(x, y, s=22, color=colours[h], alpha=0.8, label=f"head {h}")
    chosen = flip.nonzero().tolist()
    for layer, h, j in chosen:
        x, y = float(wrap(increments[layer, 0, h, j])), float(increments[layer, 1, h, j] % TWO_PI)
        right.annotate(f"L{layer} h{h} pair {j}", (x, y), (x + 0.25, y + 0.5), fontsize="small",
                       arrowprops={"arrowstyle": "-", "lw": 0.6})  # fmt: skip
    right.scatter([0], [math.pi], marker="*", s=220, facecolors="none", edgecolors="k",
                  label="theory (0, pi)")  # fmt: skip
    right.set_xlim(-math.pi, math.pi)
    right.set_ylim(0, TWO_PI)
    right.set_xticks([-math.pi, -math.pi / 2, 0, math.pi / 2, math.pi],
                     ["-pi", "-pi/2", "0", "pi/2", "pi"])  # fmt: skip
    right.set_yticks(ticks, ["0", "pi/2", "pi", "3pi/2", "2pi"])
    right.set(
        xlabel="token 0 increment, wrapped to [-pi, pi) (rad)",
        ylabel="token 1 increment mod 2 pi (rad)",
        title=f"per pair ({layers} layer(s) x {heads} heads x {pairs} pairs)",
    )
    right.legend(fontsize="x-small", loc="lower left")
    figure.suptitle("Selective RoPE angle increments of a trained parity model")
    return save_figure(figure, path)


def phase_drift(increments: torch.Tensor, length: int) -> torch.Tensor:
    """How far a pair's parity phase is off after ``length`` tokens, half of them each token.

    increments ``(L, 2, H, R)`` (``token_increments``) -> ``(L, H, R)`` float64 radians:
    ``length / 2 * (wrap(token 1 - pi) + wrap(token 0))``. The exact automaton adds pi and 0;
    a small error per token piles up linearly (research notes, pitfall 6), and a pair read at
    length n turns the wrong way once its drift passes pi/2.
    """
    zero, one = increments[:, 0], increments[:, 1]
    return length / 2 * (wrap(one - math.pi) + wrap(zero))


def analyze_angles(
    out_dir: Path, model: LanguageModel, about_model: str, drift_length: int = 256
) -> Section:
    """Write ``angles.png`` into ``out_dir``; return it with the report section.

    ``about_model``: one markdown paragraph on where the model came from and how well it does;
    ``drift_length``: the word length at which the table gives each pair's ``phase_drift``.
    """
    increments = token_increments(model)
    masks = parity_pairs(increments)
    drift = phase_drift(increments, drift_length)
    figure = plot_increments(out_dir / "angles.png", increments, masks["flip"])
    total = increments[:, 0].numel()
    counts = {name: int(mask.sum()) for name, mask in masks.items()}
    rows = [
        f"| {layer} | {h} | {j} | {float(wrap(increments[layer, 0, h, j])):+.3f} | "
        f"{float(increments[layer, 1, h, j] % TWO_PI):.3f} | "
        f"{float(wrap(increments[layer, 1, h, j] - increments[layer, 0, h, j])):+.3f} | "
        f"{float(drift[layer, h, j]):+.2f} |"
        for layer, h, j in masks["difference"].nonzero().tolist()
    ]
    fractions = ", ".join(
        f"{name}: {count}/{total} ({count / total:.1%})" for name, count in counts.items()
    )
    markdown = "\n".join(
        [
            "## angles: the angle each token adds in a trained parity model",
            "",
            about_model,
            "",
            "![angles.png](angles.png)",
            "",
            "**angles.png.** The increment omega * (conv(p) + exp(b)) of each token, measured at "
            f"the end of a run of {RUN_LENGTH} copies of it (for the first layer's linear conv "
            "without gate: the token's exact contribution to every later phase). Theory "
            "(research notes B.4): about pi for token 1, 0 mod 2 pi for token 0, in the pairs "
            "that carry the parity. Pairs within pi/8 of it: "
            f"{fractions}.",
            "",
            "Pairs whose token-1 increment exceeds token 0's by pi (within pi/8):",
            "",
            "| layer | head | pair | token 0 (rad, wrapped) | token 1 (rad, mod 2pi) | "
            f"difference (rad, wrapped) | drift at {drift_length} (rad) |",
            "|---|---|---|---|---|---|---|",
            *(rows or ["| - | - | - | - | - | - | - |"]),
            "",
            f"Drift at {drift_length}: {drift_length // 2} x (token 1 - pi) + "
            f"{drift_length // 2} x token 0, both wrapped: how far the pair's phase is off the "
            f"automaton's after a word of {drift_length} with as many 1s as 0s. Past pi/2 "
            "(1.57) the pair reads the parity the wrong way.",
        ]
    )
    return Section(markdown, (figure,))
