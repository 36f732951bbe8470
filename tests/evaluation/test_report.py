"""write_report: the JSON keys, the markdown table and two real PNGs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from selrope.evaluation import EvaluatedRun, write_report
from selrope.evaluation.report import moving_average, variant_name

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(name: str, lengths: list[int], ppl: list[float], train_length: int | None):
    results = {
        length: {
            "length": length,
            "nll": float(np.log(p)),
            "perplexity": p,
            "tokens": 96,
            "windows": 96 // length,
            "loss_by_position": list(np.linspace(3.0, 2.0, length)),
        }
        for length, p in zip(lengths, ppl, strict=True)
    }
    config = {"vocab_size": 11, "d_model": 16, "n_layers": 1, "n_heads": 2, "mixer": "attention"}
    config["rotary"] = {"type": "rope", "base": 10000.0, "interleaved": False, "scaling": None}
    return EvaluatedRun(name, f"/runs/{name}", config, 1234, None, train_length, results)


def test_report_files(tmp_path):
    lengths = [8, 16, 32]
    plain = _run("rope", lengths, [9.5, 9.0, 12.25], train_length=16)
    yarn = _run("rope+yarn", lengths, [9.6, 9.1, 9.4], train_length=16)
    yarn.rotary_override = {"kind": "yarn", "factor": 2, "original_max_position": 16}
    yarn.config["rotary"]["scaling"] = {**yarn.rotary_override, "beta_fast": 32, "beta_slow": 1}
    meta = {"data": "/data", "split": "val", "lengths": lengths, "scored_tokens": 96}
    paths = write_report(tmp_path / "out", [plain, yarn], meta)
    assert [p.name for p in paths] == [
        "eval.json",
        "eval.md",
        "ppl_vs_length.png",
        "loss_vs_position.png",
    ]
    report = json.loads(paths[0].read_text())
    assert report["lengths"] == lengths and report["scored_tokens"] == 96
    assert [run["name"] for run in report["runs"]] == ["rope", "rope+yarn"]
    row = report["runs"][1]
    assert set(row) == {
        "name",
        "checkpoint",
        "model",
        "rotary_override",
        "train_length",
        "config",
        "results",
    }
    assert row["rotary_override"]["kind"] == "yarn" and row["model"]["n_parameters"] == 1234
    assert [r["length"] for r in row["results"]] == lengths
    assert set(row["results"][0]) == {
        "length",
        "nll",
        "perplexity",
        "tokens",
        "windows",
        "loss_by_position",
    }
    table = paths[1].read_text().splitlines()
    header = next(line for line in table if line.startswith("| model"))
    assert "ppl @ 8" in header and "ppl @ 32" in header and "tokens scored" in header
    rows = [line for line in table if line.startswith("| rope")]
    assert len(rows) == 2
    assert "12.25" in rows[0] and "rope (yarn x2)" in rows[1] and "| 96 |" in rows[1]
    for png in paths[2:]:
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000


def test_moving_average():
    positions, averages = moving_average(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 2)
    np.testing.assert_array_equal(positions, [1, 2, 3, 4])
    np.testing.assert_allclose(averages, [1.5, 2.5, 3.5, 4.5])
    positions, averages = moving_average(np.array([1.0, 3.0]), 10)
    np.testing.assert_array_equal(positions, [1])
    np.testing.assert_allclose(averages, [2.0])


@pytest.mark.parametrize(
    ("name", "variant"),
    [
        ("attention-rope-s1", "attention-rope"),
        ("attention-rope-s12+yarn", "attention-rope+yarn"),
        ("gla-selective", "gla-selective"),
        ("my-s1-run", "my-s1-run"),
    ],
)
def test_variant_name_drops_only_a_trailing_seed(name, variant):
    assert variant_name(name) == variant


@pytest.mark.parametrize(
    ("mixer", "rotary", "mixer_label", "position_label"),
    [
        ("attention", "rope", "attention", "rope"),
        ({"kind": "attention", "relative_positions": "none"}, "rope", "attention", "rope"),
        ({"kind": "attention", "relative_positions": "alibi"}, "nope", "attention", "alibi"),
        ({"kind": "fox", "relative_positions": "path"}, "rope", "fox", "rope + path"),
        (
            [{"kind": "gla"}, {"kind": "attention", "relative_positions": "cope"}],
            "nope",
            "gla+attention",
            "cope",
        ),
    ],
)
def test_table_names_the_mixer_kind_and_the_position_mechanism(
    tmp_path, mixer, rotary, mixer_label, position_label
):
    run = _run("run", [8], [9.5], train_length=8)
    run.config["mixer"] = mixer
    run.config["rotary"] = {"type": rotary}
    meta = {"data": "/data", "split": "val", "lengths": [8], "scored_tokens": 96}
    markdown = write_report(tmp_path / "out", [run], meta)[1].read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| run |"))
    assert row.split(" | ")[1:3] == [mixer_label, position_label]
