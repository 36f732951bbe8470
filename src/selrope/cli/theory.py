"""``selrope theory``: the theory checks as tables (``selrope.analysis.theory``)."""

from __future__ import annotations

from selrope.cli.parser import CommandParser


def run(argv: list[str]) -> None:
    from selrope.analysis.theory import theory_report

    parser = CommandParser(
        prog="selrope theory",
        description="print the theory checks: softmax as random rotations, rotation leakage "
        "against the decay window",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws (0)")
    print(theory_report(parser.parse_args(argv).seed))
