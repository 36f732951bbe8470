"""Values from the command line or a config file, parsed into a field's type hint.

Booleans take true/false (or 1/0) only, numbers must parse and be finite, ``none`` / ``null``
only where the hint allows None, lists are comma-separated (``64,256``) or JSON lists, tuples
have their exact length, dicts are JSON objects. A value that does not fit raises
``HintMismatchError``; the caller names the flag.
"""

from __future__ import annotations

import json
import math
import re
import types
import typing
from typing import Any

_INT = re.compile(r"^[+-]?\d+$")


class HintMismatchError(Exception):
    """A value that does not fit a type hint."""


def _union_members(hint: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return None


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))


def parse_value(hint: Any, value: Any) -> Any:
    members = _union_members(hint)
    if members is not None:
        if type(None) in members and _is_none(value):
            return None
        listy = isinstance(value, list) or (isinstance(value, str) and "," in value)
        ordered = sorted(
            (m for m in members if m is not type(None)),
            key=lambda m: (typing.get_origin(m) in (list, tuple)) != listy,
        )
        for member in ordered:
            try:
                return parse_value(member, value)
            except HintMismatchError:
                continue
        raise HintMismatchError
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        items = value
        if isinstance(value, str):
            text = value.strip()
            items = json.loads(text) if text.startswith("[") and _json_ok(text) else text.split(",")
        variable = origin is tuple and typing.get_args(hint)[-1] is Ellipsis
        if not isinstance(items, (list, tuple)) or not (items or variable):
            raise HintMismatchError
        args = typing.get_args(hint)
        if origin is tuple and args[-1] is Ellipsis:  # tuple[X, ...]: any length, none too
            return tuple(parse_value(args[0], item) for item in items)
        if origin is tuple:
            if len(items) != len(args):
                raise HintMismatchError
            return tuple(parse_value(arg, item) for arg, item in zip(args, items, strict=True))
        return [parse_value(args[0], item) for item in items]
    if hint is bool:
        return _parse_bool(value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INT.match(value.strip()):
            return int(value)
        raise HintMismatchError
    if hint is float:
        return _parse_float(value)
    if hint is str:
        if not isinstance(value, str):
            raise HintMismatchError
        return value.strip()
    if origin is dict or hint is dict:
        parsed = json.loads(value) if isinstance(value, str) and _json_ok(value) else value
        if not isinstance(parsed, dict):
            raise HintMismatchError
        return parsed
    raise TypeError(f"no parser for the type hint {hint!r}")


def _json_ok(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = value.strip().lower() if isinstance(value, str) else None
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise HintMismatchError


def _parse_float(value: Any) -> float:
    if isinstance(value, bool):
        raise HintMismatchError
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise HintMismatchError from None
    else:
        raise HintMismatchError
    if not math.isfinite(number):
        raise HintMismatchError
    return number


def describe_hint(hint: Any, choices: tuple[str, ...] = ()) -> str:
    members = _union_members(hint)
    if members is not None:
        return " or ".join(describe_hint(m, choices) for m in members)
    if hint is type(None):
        return "none"
    origin = typing.get_origin(hint)
    if origin is tuple and typing.get_args(hint)[-1] is Ellipsis:
        return f"a comma-separated list of {_plural(typing.get_args(hint)[0], choices)}"
    if origin is tuple:
        args = typing.get_args(hint)
        return f"{len(args)} comma-separated {_plural(args[0], choices)}"
    if origin is list:
        return f"a comma-separated list of {_plural(typing.get_args(hint)[0], choices)}"
    if choices:
        return f"one of {'|'.join(choices)}"
    return {
        bool: "true or false (or 1/0)",
        int: "an integer",
        float: "a finite float",
        str: "a string",
    }.get(hint, "a JSON object")


def _plural(hint: Any, choices: tuple[str, ...]) -> str:
    if choices:
        return f"({'|'.join(choices)})"
    return {int: "integers", float: "finite floats", str: "strings"}.get(hint, "values")
