"""``report.md`` of ``selrope analyze``: one section per analysis, kept across runs.

Each analysis replaces its own section and leaves the others, so running all of them into one
folder leaves one report listing every figure. Sections start with a marker comment
``<!-- selrope analyze NAME -->`` and appear in the order of ``ANALYSES``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

ANALYSES = ("rff", "leakage", "complex", "angles", "householder", "rotation", "runs")
REPORT_FILE = "report.md"
TITLE = "# selrope analyze: figures and the numbers behind them\n"
_MARKER = re.compile(r"^<!-- selrope analyze (\w+) -->$", re.MULTILINE)


class Section(NamedTuple):
    """What one analysis wrote: its report section (markdown starting with a ``##`` heading)
    and the paths of its figures."""

    markdown: str
    figures: tuple[Path, ...]


def read_sections(text: str) -> dict[str, str]:
    """The sections of a report's text by analysis name (the markdown after each marker)."""
    starts = list(_MARKER.finditer(text))
    ends = [match.start() for match in starts[1:]] + [len(text)]
    return {
        match.group(1): text[match.end() : end].strip()
        for match, end in zip(starts, ends, strict=True)
    }


def write_section(out_dir: Path, name: str, body: str) -> Path:
    """Put ``body`` (markdown, starting with a ``##`` heading) as the section of ``name`` into
    ``out_dir/report.md``, keeping the other analyses' sections; return the report's path."""
    if name not in ANALYSES:
        raise ValueError(f"name must be one of {', '.join(ANALYSES)}; got {name!r}")
    path = out_dir / REPORT_FILE
    sections = read_sections(path.read_text()) if path.is_file() else {}
    sections[name] = body.strip()
    ordered = [
        f"<!-- selrope analyze {key} -->\n{sections[key]}" for key in ANALYSES if key in sections
    ]
    path.write_text(TITLE + "\n" + "\n\n".join(ordered) + "\n")
    return path
