"""``selrope demo``: the main job (``selrope.demo``)."""

from __future__ import annotations

from selrope.cli.parser import CommandParser


def run(argv: list[str]) -> None:
    from selrope.demo import run_demo

    parser = CommandParser(
        prog="selrope demo",
        description="parity with a 1-layer GLA: NoPE vs RoPE vs Selective RoPE, 2 seeds each, "
        "tested at 1x, 4x and 8x the training length (a few minutes on 2 CPU cores)",
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument(
        "--workers", type=int, default=None, help="parallel runs (default: one per core)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo's files")
    args = parser.parse_args(argv)
    run_demo(args.out, args.workers, args.overwrite)
