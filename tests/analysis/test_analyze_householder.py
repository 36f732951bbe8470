"""selrope analyze householder: the extracted transforms are those a PaTH layer multiplies."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from parity_models import random_parity_model

from selrope.analysis.householder import layer_transforms, shared_directions, transform_mismatch
from selrope.analysis.probes import mixer_inputs
from selrope.cli import main


def words(seed: int = 0, batch: int = 3, length: int = 13) -> torch.Tensor:
    ids = torch.randint(0, 2, (batch, length), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = 2
    return ids


def path_parity_model(**overrides):
    return random_parity_model(mixer={"kind": "attention", "relative_positions": "path",
                               "path_low_rank_dim": 4}, rotary={"type": "nope"},
                               tie_pair_decay=None, chunk_size=None, **overrides)  # fmt: skip


@pytest.mark.parametrize("kind", ["attention", "fox"])
def test_path_layers_are_the_explicit_products_of_the_extracted_transforms(kind: str) -> None:
    mixer = {"kind": kind, "relative_positions": "path", "path_low_rank_dim": 4}
    model = random_parity_model(mixer=mixer, rotary={"type": "nope"}, tie_pair_decay=None,
                                chunk_size=None, n_layers=2)  # fmt: skip
    assert transform_mismatch(model, words()) < 1e-12
    w, beta = layer_transforms(mixer_inputs(model, words())[1])
    assert w.shape == (3, 13, 2, 8) and beta.shape == (3, 13, 2)
    assert torch.allclose(w.norm(dim=-1), torch.ones(3, 13, 2), atol=1e-6)
    assert bool(((beta > 0) & (beta < 2)).all()) and float(beta.std()) > 0.01


def test_another_transform_convention_is_caught_by_the_mismatch(monkeypatch) -> None:
    import selrope.analysis.householder as householder

    explicit = householder.reference_path_attention

    def half_strength(q, k, v, w, beta, g):  # I - (beta / 2) w w^T: never a reflection
        return explicit(q, k, v, w, beta / 2, g)

    model = path_parity_model()
    assert transform_mismatch(model, words()) < 1e-12
    monkeypatch.setattr(householder, "reference_path_attention", half_strength)
    assert transform_mismatch(model, words()) > 1e-4


def test_shared_direction_finds_a_mirror_up_to_sign() -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(2, 6, generator=g, dtype=torch.float64), dim=-1)
    signs = torch.randint(0, 2, (3, 5, 2, 1), generator=g) * 2 - 1
    noise = 0.01 * torch.randn(3, 5, 2, 6, generator=g, dtype=torch.float64)
    w = torch.nn.functional.normalize(signs * u + noise, dim=-1)
    selected = torch.ones(3, 5, dtype=torch.bool)
    selected[0, 0] = False
    w[0, 0] = torch.nn.functional.normalize(torch.randn(2, 6, generator=g, dtype=torch.float64))
    found = shared_directions(w, selected)
    assert torch.allclose((found * u).sum(-1).abs(), torch.ones(2, dtype=torch.float64), atol=1e-3)


def test_the_command_reports_a_saved_path_parity_model(tmp_path: Path) -> None:
    path_parity_model().save_pretrained(tmp_path / "run" / "model")
    main(["analyze", "householder", "--out", str(tmp_path / "out"), "--checkpoint",
          str(tmp_path / "run")])  # fmt: skip
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## householder: the transforms of PaTH attention" in report
    assert "relative_positions path" in report and "| 0 | 1 |" in report
    assert (tmp_path / "out" / "householder_transforms.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["householder", "--out", "x"], "householder needs --checkpoint RUN"),
        (["householder", "--out", "x", "--checkpoint", "GLA"], "expected PaTH attention layers"),
        (
            ["householder", "--out", "x", "--checkpoint", "GLA", "--steps", "2"],
            "--steps applies to",
        ),
    ],
)
def test_householder_needs_a_path_model(tmp_path: Path, capsys, argv, message) -> None:
    random_parity_model().save_pretrained(tmp_path / "gla" / "model")
    argv = [str(tmp_path / "gla") if a == "GLA" else a for a in argv]
    with pytest.raises(SystemExit) as stopped:
        main(["analyze", *argv, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and message in err and err.count("\n") == 1
