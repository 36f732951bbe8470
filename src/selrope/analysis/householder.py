"""``selrope analyze householder``: the transforms a PaTH attention layer learned for parity.

PaTH (Yang et al. 2025) scores key j for query i through the transforms between them,
``q_i^T H_i ... H_(j+1) k_j`` with ``H_t = I - beta_t w_t w_t^T``: along the unit direction
``w_t`` the transform scales by ``1 - beta_t`` in (-1, 1) and it leaves the rest alone. Parity has
an exact solution of that form: token 1 a reflection (beta = 2, eigenvalue -1) about one shared
direction u, token 0 the identity (beta = 0), so the product is ``(I - 2 u u^T)^n`` for the n ones
between key and query, and the score's component along u changes sign with their parity.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from selrope.analysis.parity_model import PARITY_TOKENS
from selrope.analysis.plots import new_figure, save_figure
from selrope.analysis.probes import MixerInput, call_arguments, mixer_inputs
from selrope.analysis.report import Section
from selrope.layers import PathAttention
from selrope.models import LanguageModel
from selrope.ops.path_attention import reference_path_attention


def path_layer(record: MixerInput) -> PathAttention:
    """The layer's PaTH attention mixer.

    Raises:
        ValueError: the layer is not PaTH attention.
    """
    if not isinstance(record.mixer, PathAttention):
        raise ValueError(
            "expected PaTH attention layers (--mixer attention --rotary path, or fox); got "
            f"{type(record.mixer).__name__}"
        )
    return record.mixer


@torch.no_grad()
def layer_transforms(record: MixerInput) -> tuple[torch.Tensor, torch.Tensor]:
    """The directions and strengths of one layer's transforms for the recorded inputs.

    Returns:
        w ``(B, T, H, D)`` unit vectors and beta ``(B, T, H)`` in (0, 2), float32 or better.
    """
    w, beta, _, _ = path_layer(record).transforms(record.x, None, None)
    return w, beta


@torch.no_grad()
def transform_mismatch(model: LanguageModel, input_ids: torch.Tensor) -> float:
    """Largest ``|o_layer - o_explicit|`` over the layers, in float64 on a copy of the model:
    the attention output a forward pass feeds each layer's output projection against
    ``reference_path_attention`` (the transforms multiplied out one by one) with the extracted
    w and beta and the layer's own q, k, v and forget gate."""
    model = copy.deepcopy(model).double()
    records = mixer_inputs(model, input_ids)
    outputs = call_arguments(model, input_ids, [path_layer(r).o_proj for r in records])
    worst = 0.0
    for record, (o,) in zip(records, outputs, strict=True):
        mixer = path_layer(record)
        q, k, v, _ = mixer.rotated_qkv(record.x, None, record.rotary_input, None)
        w, beta, g, _ = mixer.transforms(record.x, None, None)
        explicit = reference_path_attention(q, k, v, w, beta, g)
        worst = max(worst, float((o - explicit.flatten(-2)).abs().max()))
    return worst


def shared_directions(w: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Per head, the unit direction closest to all selected steps' w (up to sign): the top right
    singular vector of their stacked directions.

    Args:
        w: ``(B, T, H, D)`` unit directions; selected: ``(B, T)`` bool, the steps to fit.

    Returns:
        ``(H, D)`` unit vectors.
    """
    chosen = w[selected].double()  # (N, H, D)
    return torch.stack(
        [torch.linalg.svd(chosen[:, h], full_matrices=False).Vh[0] for h in range(w.shape[2])]
    )


def _strips(ax, values: torch.Tensor, tokens: torch.Tensor, most: int = 400) -> None:
    """One column per layer and head: up to ``most`` steps of each token, jittered sideways.
    values ``(L, B, T, H)``; tokens ``(B, T)``."""
    generator = torch.Generator().manual_seed(0)
    L, _, _, H = values.shape
    for column in range(L * H):
        layer, h = divmod(column, H)
        for token in PARITY_TOKENS:
            chosen = values[layer, ..., h][tokens == token]
            chosen = chosen[torch.randperm(chosen.numel(), generator=generator)[:most]]
            offset = (token - 0.5) * 0.4 + 0.12 * (
                torch.rand(chosen.numel(), generator=generator) - 0.5
            )
            role = "flips" if token else "keeps"
            label = f"token {token} ({role} the parity)" if column == 0 else None
            ax.scatter(column + offset, chosen, s=3, color=f"C{token}", alpha=0.4, label=label)
    ax.set_xticks(range(L * H), [f"{layer}.{h}" for layer in range(L) for h in range(H)])
    ax.set_xlabel("layer.head")


def plot_transforms(
    path: Path, eigenvalues: torch.Tensor, alignment: torch.Tensor, input_ids: torch.Tensor
) -> Path:
    """Left: the eigenvalue ``1 - beta_t`` of steps, per head and input token; right: how close
    each step's direction is to its head's shared direction of token 1, ``|w_t . u1|``.
    Both ``(L, B, T, H)``; input_ids ``(B, T)``."""
    figure = new_figure(10.5, 4.5)
    left, right = figure.subplots(1, 2)
    _strips(left, eigenvalues, input_ids)
    _strips(right, alignment, input_ids)
    for theory in (-1.0, 1.0):
        left.axhline(theory, color="k", lw=0.8, ls="--")
    left.set(ylabel="1 - beta_t (the eigenvalue along w_t)", ylim=(-1.1, 1.1),
             title="strength of each step's transform")  # fmt: skip
    right.set(ylabel="|w_t . u1| (u1: the head's direction of token 1)", ylim=(0, 1.05),
              title="direction of each step's transform")  # fmt: skip
    legend = left.legend(fontsize="x-small", loc="center right", markerscale=4)
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
    B, T = input_ids.shape
    figure.suptitle(f"PaTH transforms I - beta w w^T on {B} test words of length {T - 1}")
    return save_figure(figure, path)


def analyze_householder(
    out_dir: Path, model: LanguageModel, input_ids: torch.Tensor, about_model: str
) -> Section:
    """Write ``householder_transforms.png`` into ``out_dir``; return it with the report section.

    input_ids ``(B, T)``: test words (BOS first); ``about_model``: one markdown paragraph.
    """
    records = mixer_inputs(model, input_ids)
    transforms = [layer_transforms(record) for record in records]
    mismatch = transform_mismatch(model, input_ids[:4])
    ones = input_ids == PARITY_TOKENS[1]
    eigenvalues = torch.stack([1 - beta for _, beta in transforms])
    directions = [shared_directions(w, ones) for w, _ in transforms]
    zeros = [shared_directions(w, input_ids == PARITY_TOKENS[0]) for w, _ in transforms]
    alignment = torch.stack(
        [torch.einsum("bthd,hd->bth", w.double(), u).abs() for (w, _), u in zip(
            transforms, directions, strict=True)]
    )  # fmt: skip
    figure = plot_transforms(
        out_dir / "householder_transforms.png", eigenvalues, alignment, input_ids
    )
    tokens = input_ids[:, :, None].expand(eigenvalues.shape[1:])
    rows = []
    for layer in range(eigenvalues.shape[0]):
        for h in range(eigenvalues.shape[-1]):
            cells = []
            for values in (eigenvalues, alignment):
                for token in PARITY_TOKENS:
                    chosen = values[layer, ..., h][tokens[..., h] == token]
                    cells.append(f"{float(chosen.mean()):+.3f} ± {float(chosen.std()):.3f}")
            between = float((directions[layer][h] @ zeros[layer][h]).abs())
            rows.append(f"| {layer} | {h} | " + " | ".join(cells) + f" | {between:.3f} |")
    markdown = "\n".join(
        [
            "## householder: the transforms of PaTH attention",
            "",
            about_model,
            "",
            "![householder_transforms.png](householder_transforms.png)",
            "",
            "**householder_transforms.png.** PaTH scores key j for query i through "
            "q_i^T H_i ... H_(j+1) k_j with H_t = I - beta_t w_t w_t^T, whose eigenvalue along "
            "the unit direction w_t is 1 - beta_t (the others are 1). Checked on this model: "
            "the attention output of a forward pass and the explicit product of the extracted "
            f"transforms differ by at most {mismatch:.1e} (float64, 4 test words). An exact "
            "parity solution: token 1 a reflection (1 - beta = -1) about one direction u_h "
            "per head, token 0 the identity (1 - beta = +1); left: the eigenvalue of every "
            "step by its input token; right: |w_t . u1|, u1 the direction closest to all "
            "token-1 steps of the head (1: the same mirror every time). Mean ± sd over every "
            "step of the test words, and |u0 . u1|, u0 the same fit to the token-0 steps (two "
            "mirrors at right angles, |u0 . u1| = 0, also give parity: their products are "
            "plus or minus the identity on that plane by the parity of the ones):",
            "",
            "| layer | head | 1 - beta, token 0 | 1 - beta, token 1 | |w . u1|, token 0 | "
            "|w . u1|, token 1 | |u0 . u1| |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    return Section(markdown, (figure,))
