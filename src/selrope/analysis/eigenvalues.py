"""``selrope analyze complex``: GLA + Selective RoPE with tied pair decays is a complex diagonal
recurrence; its eigenvalues ``alpha e^{i dtheta}`` per token, head and pair, on the unit disc.

With the decays of channels i and i + D/2 shared, GLA on q, k rotated by theta_t is
``H_t = diag(lambda_t) H_(t-1) + conj(z^k_t) v_t^T``, ``o_t = D^-1/2 Re(z^q_t H_t)``, with
``z = x[:R] + i x[R:]`` the complex view of the unrotated q, k and the eigenvalue
``lambda_t = alpha_t e^{i (theta_t - theta_(t-1))}`` (research notes A.5, B.1;
``tests/layers/test_complex_equivalence.py``). Parity needs lambda = -1 for the flipping token
(a positive real decay cannot make it).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch

from selrope.analysis.angles import TOLERANCE, near, run_inputs, step_increments, wrap
from selrope.analysis.parity_model import PARITY_TOKENS
from selrope.analysis.plots import new_figure, save_figure
from selrope.analysis.probes import MixerInput, call_arguments, mixer_inputs, selective_rotary
from selrope.analysis.report import Section
from selrope.layers import GatedLinearAttention
from selrope.models import LanguageModel
from selrope.rotary import SelectiveRoPE


def complex_rotary(record: MixerInput) -> SelectiveRoPE:
    """The Selective RoPE of a layer that is exactly a complex diagonal recurrence.

    Raises:
        ValueError: the mixer is not GLA, its pair decays are not tied, it does not rotate with
            Selective RoPE, or its rotation pairs are interleaved (the decays tie i and i + D/2).
    """
    mixer = record.mixer
    rotary = selective_rotary(mixer)
    if not isinstance(mixer, GatedLinearAttention) or rotary is None:
        raise ValueError("expected GLA layers with Selective RoPE (LMConfig mixer 'gla')")
    if not mixer.tie_pair_decay:
        raise ValueError(
            "the GLA decays are not tied within rotation pairs (tie_pair_decay false): that is "
            "not a complex recurrence"
        )
    if rotary.interleaved:
        raise ValueError("interleaved rotation pairs do not match the tied decays (i, i + D/2)")
    return rotary


@torch.no_grad()
def step_eigenvalues(record: MixerInput) -> torch.Tensor:
    """``lambda_t = alpha_t e^{i (theta_t - theta_(t-1))}`` of one layer's recurrence.

    Returns:
        ``(B, T, H, R)`` complex128 for the inputs recorded in ``record`` (``mixer_inputs``).
    """
    rotary = complex_rotary(record)
    pairs = rotary.head_dim // 2
    log_alpha = record.mixer.log_decay(record.x)[..., :pairs].double()
    return torch.polar(log_alpha.exp(), step_increments(rotary, record.rotary_input))


def model_eigenvalues(model: LanguageModel, input_ids: torch.Tensor) -> torch.Tensor:
    """Every layer's ``step_eigenvalues`` on input_ids ``(B, T)``: ``(L, B, T, H, R)``."""
    return torch.stack([step_eigenvalues(r) for r in mixer_inputs(model, input_ids)])


def token_eigenvalues(model: LanguageModel) -> torch.Tensor:
    """The eigenvalue of each parity token at the end of a run of it (see ``angles``):
    ``(L, 2, H, R)`` complex128."""
    return torch.stack([step_eigenvalues(r)[:, -1] for r in run_inputs(model)])


def complex_recurrence(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eigenvalues: torch.Tensor
) -> torch.Tensor:
    """``H_t = diag(lambda_t) H_(t-1) + conj(z^k_t) v_t^T``, ``o_t = D^-1/2 Re(z^q_t H_t)``.

    Args:
        q, k: ``(B, T, H, D)`` unrotated, real; ``z = x[..., :D/2] + i x[..., D/2:]``.
        v: ``(B, T, H, V)``.
        eigenvalues: ``(B, T, H, D/2)`` complex.

    Returns:
        o ``(B, T, H, V)`` in v's dtype.
    """
    B, T, H, D = q.shape
    R = D // 2
    zq, zk = torch.complex(q[..., :R], q[..., R:]), torch.complex(k[..., :R], k[..., R:])
    state = torch.zeros(B, H, R, v.shape[-1], dtype=eigenvalues.dtype)
    outputs = []
    for t in range(T):
        update = zk[:, t].conj()[..., None] * v[:, t, :, None, :]
        state = eigenvalues[:, t, ..., None] * state + update
        outputs.append((zq[:, t, ..., None] * state).sum(2).real * D**-0.5)
    return torch.stack(outputs, dim=1).to(v.dtype)


@torch.no_grad()
def recurrence_mismatch(model: LanguageModel, input_ids: torch.Tensor) -> float:
    """Largest ``|o_GLA - o_complex|`` over the layers, in float64 on a copy of the model: the
    GLA output before its norm and gate against ``complex_recurrence`` with the extracted
    eigenvalues and the layer's own unrotated q, k, v."""
    model = copy.deepcopy(model).double()
    records = mixer_inputs(model, input_ids)
    outputs = call_arguments(model, input_ids, [record.mixer.output for record in records])
    worst = 0.0
    for record, (o, _) in zip(records, outputs, strict=True):
        mixer = record.mixer
        H, K, V = mixer.qkv.shapes
        q, k, v = (
            projection(record.x, None)[0].unflatten(-1, (H, -1))
            for projection in (mixer.qkv.q_proj, mixer.qkv.k_proj, mixer.qkv.v_proj)
        )
        o_complex = complex_recurrence(q, k, v, step_eigenvalues(record))
        worst = max(worst, float((o - o_complex).abs().max()))
    return worst


def _unit_disc(ax) -> None:
    angles = torch.linspace(0, 2 * math.pi, 361)
    ax.plot(torch.cos(angles), torch.sin(angles), color="0.5", lw=0.8)
    ax.axhline(0, color="0.85", lw=0.5)
    ax.axvline(0, color="0.85", lw=0.5)
    ax.set_aspect("equal")
    ax.set(xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), xlabel="Re lambda", ylabel="Im lambda")


def plot_eigenvalues(
    path: Path, per_token: torch.Tensor, per_step: torch.Tensor, input_ids: torch.Tensor
) -> Path:
    """Left: each pair's eigenvalue for token 0 and token 1 (end of a run); right: the
    eigenvalue of every step of the test words, coloured by the step's input token."""
    figure = new_figure(10.5, 5)
    left, right = figure.subplots(1, 2)
    for token in PARITY_TOKENS:
        values = per_token[:, token].flatten()
        role = "flips" if token else "keeps"
        left.scatter(values.real, values.imag, s=18, color=f"C{token}", alpha=0.8,
                     label=f"token {token} ({role} the parity)")  # fmt: skip
    for theory, name in ((1.0, "+1"), (-1.0, "-1")):
        left.scatter([theory], [0.0], marker="*", s=200, facecolors="none", edgecolors="k")
        left.annotate(f"theory {name}", (theory, 0.0), (theory * 0.55, 0.15), fontsize="small")
    _unit_disc(left)
    left.set_title(f"per pair and token ({per_token[:, 0].numel()} pairs)")
    left.legend(fontsize="x-small", loc="lower left")

    tokens = input_ids[None, :, :, None, None].expand(per_step.shape)
    for token in PARITY_TOKENS:
        values = per_step[tokens == token]
        right.scatter(values.real, values.imag, s=2, color=f"C{token}", alpha=0.15,
                      rasterized=True, label=f"token {token}")  # fmt: skip
    _unit_disc(right)
    B, T = input_ids.shape
    right.set_title(f"every step of {B} test words of length {T - 1}")
    legend = right.legend(fontsize="x-small", loc="lower left", markerscale=5)
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
    figure.suptitle("Eigenvalues alpha e^(i dtheta) of GLA + Selective RoPE (tied pair decays)")
    return save_figure(figure, path)


def analyze_complex(
    out_dir: Path, model: LanguageModel, input_ids: torch.Tensor, about_model: str
) -> Section:
    """Write ``complex_eigenvalues.png`` into ``out_dir``; return it with the report section.

    input_ids ``(B, T)``: test words (BOS first) for the per-step eigenvalues;
    ``about_model``: one markdown paragraph on the model.
    """
    per_token = token_eigenvalues(model)
    per_step = model_eigenvalues(model, input_ids)
    mismatch = recurrence_mismatch(model, input_ids[:4])
    figure = plot_eigenvalues(out_dir / "complex_eigenvalues.png", per_token, per_step, input_ids)

    zero, one = per_token[:, 0], per_token[:, 1]
    parity = near(one.angle(), math.pi) & near(zero.angle(), 0.0)
    lines = [
        f"| {layer} | {h} | {j} | {abs(complex(zero[layer, h, j])):.3f} | "
        f"{float(wrap(zero[layer, h, j].angle())):+.3f} | {abs(complex(one[layer, h, j])):.3f} | "
        f"{float(wrap(one[layer, h, j].angle())):+.3f} |"
        for layer, h, j in parity.nonzero().tolist()
    ]
    tokens = input_ids[None, :, :, None, None].expand(per_step.shape)
    moduli = ", ".join(
        f"token {a}: {float(per_step[tokens == a].abs().mean()):.3f}" for a in PARITY_TOKENS
    )
    markdown = "\n".join(
        [
            "## complex: eigenvalues of GLA + Selective RoPE on the unit disc",
            "",
            about_model,
            "",
            "![complex_eigenvalues.png](complex_eigenvalues.png)",
            "",
            "**complex_eigenvalues.png.** With tied pair decays each GLA layer is the complex "
            "diagonal recurrence H_t = diag(lambda_t) H_(t-1) + conj(z^k_t) v_t^T with "
            "lambda_t = alpha_t e^(i (theta_t - theta_(t-1))). Checked on this model: the GLA "
            "output and the complex recurrence with the extracted eigenvalues differ by at most "
            f"{mismatch:.1e} (float64, 4 test words). Left: each pair's eigenvalue for a token, "
            "at the end of a run of it (the increment as in `angles`, the decay of that token); "
            "right: the eigenvalue of every step of the test words (a step's angle also depends "
            "on the tokens before it inside the short conv's window). Mean |lambda| per step: "
            f"{moduli}. Theory: lambda = -1 for token 1 and +1 for token 0 in the pairs that "
            f"carry the parity. Pairs with arg lambda within pi/8 of both ({int(parity.sum())} of "
            f"{parity.numel()}; tolerance {TOLERANCE:.3f} rad):",
            "",
            "| layer | head | pair | token 0 abs | token 0 arg (rad) | token 1 abs | "
            "token 1 arg (rad) |",
            "|---|---|---|---|---|---|---|",
            *(lines or ["| - | - | - | - | - | - | - |"]),
        ]
    )
    return Section(markdown, (figure,))
