import json
import statistics
import sys

import pytest

from selrope.experiments.results import format_table, summarize, write_results
from selrope.training.metrics import MetricsLog

ACCURACY = {  # (rotary, test_len) -> accuracy per seed
    ("rope", 16): [1.0, 1.0, 0.9],
    ("rope", 64): [0.2, 0.3, 0.1],
    ("selective", 16): [1.0, 1.0, 1.0],
    ("selective", 64): [0.9, 0.7, 0.8],
}


def make_rows(tmp_path=None) -> list[dict]:
    rows = []
    for (rotary, test_len), values in ACCURACY.items():
        for seed, accuracy in enumerate(values):
            row = {
                "task": "state_tracking",
                "group": "S5",
                "mixer": "gla",
                "rotary": rotary,
                "seed": seed,
                "train_len": 16,
                "test_len": test_len,
                "accuracy": accuracy,
                "token_accuracy": min(1.0, accuracy + 0.05),
            }
            if tmp_path is not None:
                row["run_dir"] = str(tmp_path / "runs" / f"{rotary}-{seed}")
            rows.append(row)
    return rows


def test_summarize_mean_std_over_seeds():
    summary = summarize(make_rows())
    assert [(e["rotary"], e["test_len"]) for e in summary] == list(ACCURACY)
    for e in summary:
        values = ACCURACY[(e["rotary"], e["test_len"])]
        assert e["mean"] == pytest.approx(statistics.mean(values))
        assert e["std"] == pytest.approx(statistics.stdev(values))
        assert (e["min"], e["max"], e["n"], e["seeds"]) == (min(values), max(values), 3, 3)
        assert e["task"] == "state_tracking" and e["group"] == "S5" and e["mixer"] == "gla"


def test_format_table_layout_and_values():
    table = format_table(make_rows())
    lines = table.strip().splitlines()
    assert lines[0] == "### task=state_tracking, group=S5, train_len=16"
    assert lines[2] == "| mixer | rotary | seeds | 16 | 64 |"
    assert lines[4] == "| gla | rope | 3 | 0.967 ± 0.058 | 0.200 ± 0.100 |"
    assert lines[5] == "| gla | selective | 3 | 1.000 ± 0.000 | 0.800 ± 0.100 |"


def test_format_table_single_seed_and_missing_cells():
    rows = [
        {"mixer": "attn", "rotary": "nope", "seed": 0, "test_len": 8, "accuracy": 0.5},
        {"mixer": "attn", "rotary": "rope", "seed": 0, "test_len": 8, "accuracy": 0.25},
        {"mixer": "attn", "rotary": "rope", "seed": 0, "test_len": 32, "accuracy": 0.125},
    ]
    lines = format_table(rows, section_keys=()).strip().splitlines()
    assert lines == [
        "| mixer | rotary | seeds | 8 | 32 |",
        "|---|---|---|---|---|",
        "| attn | nope | 1 | 0.500 | - |",
        "| attn | rope | 1 | 0.250 | 0.125 |",
    ]
    with pytest.raises(ValueError, match="accuracy"):
        format_table([{"test_len": 8}])


def test_write_results_json_md_and_plots(tmp_path):
    rows = make_rows(tmp_path)
    for (rotary, _), _values in list(ACCURACY.items())[::2]:
        for seed in range(3):
            log = MetricsLog(tmp_path / "runs" / f"{rotary}-{seed}")
            for step in (10, 20, 30):
                log.append({"step": step, "split": "train", "length": 16, "loss": 1.0 / step})
            log.append({"step": 30, "split": "test", "length": 64, "loss": 5.0})
    written = write_results(rows, tmp_path / "out")
    names = sorted(p.name for p in written)
    slug = "task-state_tracking_group-S5_train_len-16"
    assert names == sorted(
        [
            "results.json",
            "results.md",
            f"accuracy_vs_length_{slug}.png",
            f"training_curves_{slug}.png",
        ]
    )
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == rows
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| gla | selective | 3 | 1.000 ± 0.000 | 0.800 ± 0.100 |" in md
    for path in written:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_results_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    written = write_results(make_rows(), tmp_path)
    assert sorted(p.name for p in written) == ["results.json", "results.md"]
    assert "matplotlib is not installed" in capsys.readouterr().out
