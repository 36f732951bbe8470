"""Config fields that carry their own documentation as plain data.

``setting(default, help="...")`` is a ``dataclasses.field`` whose metadata holds the one-line
meaning that ``--help`` shows; nothing is parsed out of docstrings at run time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # noqa: A002 - the word users know from argparse
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    required: bool = False,
) -> Any:
    """A dataclass field with its ``help`` line. ``required=True``: the default is None and the
    config's own check refuses None (``--help`` says "required")."""
    metadata = {"help": help, "required": required}
    if required:
        return dataclasses.field(default=None, metadata=metadata)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_help(field: dataclasses.Field) -> str:
    """The field's help line ('' if it has none)."""
    return field.metadata.get("help", "")


def is_required(field: dataclasses.Field) -> bool:
    return bool(field.metadata.get("required", False))
