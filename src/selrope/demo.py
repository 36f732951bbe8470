"""The README's main job: parity (Z2 state tracking) with a 1-layer GLA, NoPE vs RoPE vs
Selective RoPE, trained at length 64 and tested at 64, 256 and 512."""

from __future__ import annotations

from pathlib import Path

from selrope.experiments import RunSpec, grid_specs, run_grid
from selrope.training import format_table, write_results

DEMO_SEEDS = [0, 1]
DEMO_ROTARIES = ["nope", "rope", "selective"]
DEMO_SPEC = RunSpec(
    task="state_tracking",
    mixer="gla",
    rotary="selective",
    task_params={
        "group": "Z2",
        "train_len": 64,
        "test_lens": [64, 256, 512],
        "num_train": 4000,
        "num_test": 200,
    },
    model={"d_model": 64, "n_layers": 1, "n_heads": 4},
    train={
        "steps": 600,
        "batch_size": 64,
        "lr": 3e-3,
        "weight_decay": 1e-6,
        "eval_every": 200,
        "precision": "fp32",
    },
)


def run_demo(out_dir: str | Path, workers: int | None = None) -> list[dict]:
    """Run the demo grid into ``out_dir``, write results.json/.md/.png, print the table."""
    specs = grid_specs(DEMO_SPEC, ["gla"], DEMO_ROTARIES, DEMO_SEEDS, str(out_dir))
    print(f"selrope demo: parity, 1-layer GLA, {len(specs)} runs -> {out_dir}")
    rows = run_grid(specs, workers)
    write_results(rows, out_dir)
    print(format_table(rows))
    return rows
