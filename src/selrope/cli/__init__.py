"""The ``selrope`` command line: one tree of subcommands in one parser style (``parser.py``)."""

from selrope.cli.main import main

__all__ = ["main"]
