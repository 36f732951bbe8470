"""The one argument-parser style of every ``selrope`` command.

Every command's parser is a :class:`CommandParser`: no prefix abbreviations (``--lr`` never
silently means ``--lr-schedule``), and a parse error is a ``UsageError`` (one line, exit 2 from
``selrope.cli.main``), never argparse's own ``SystemExit`` with a usage dump.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn


class UsageError(ValueError):
    """A user error on the command line or in a file it names: printed as one line, exit 2."""


class CommandParser(argparse.ArgumentParser):
    """argparse without prefix abbreviations, whose errors raise ``UsageError``.

    ``description`` is shown as written (line breaks kept), so that a command's help can hold a
    short list of examples.
    """

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")
