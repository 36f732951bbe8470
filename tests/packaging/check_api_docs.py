"""Is every public name documented? (`make docs` runs it after `mkdocs build --strict`.)

A public name is one in the `__all__` of a package the API reference covers. Each must have a
docstring (for a constant, the string literal after its assignment) and a place in the built
site (its entry in `site/objects.inv`, under the package or the module that defines it).

Usage: python tests/packaging/check_api_docs.py [SITE_DIR]   (default: site)
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import griffe

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("rotary", "ops", "layers", "models", "training", "experiments", "data", "tasks",
            "evaluation")  # fmt: skip


def site_names(site: Path) -> set[str]:
    """The object names in a Sphinx-style inventory (what mkdocstrings wrote)."""
    raw = (site / "objects.inv").read_bytes()
    header_end = 0
    for _ in range(4):  # four header lines, then zlib-compressed "name domain:role prio uri ..."
        header_end = raw.index(b"\n", header_end) + 1
    lines = zlib.decompress(raw[header_end:]).decode().splitlines()
    return {line.split(" ", 1)[0] for line in lines if line}


def problems(site: Path) -> list[str]:
    loader = griffe.GriffeLoader(search_paths=[str(REPO / "src")])
    root = loader.load("selrope")
    loader.resolve_aliases(implicit=False, external=False)
    documented = site_names(site)
    found = []
    for package in PACKAGES:
        module = root[package]
        for name in map(str, module.exports or ()):
            member = module[name]
            target = member.final_target if member.is_alias else member
            if target.is_module and name in target.members:
                # `from .mqar import mqar`: griffe keeps the submodule; the export is its function
                target = target[name]
            where = f"{target.filepath.relative_to(REPO)}:{target.lineno}"
            if not (target.docstring and target.docstring.value.strip()):
                found.append(f"selrope.{package}.{name} has no docstring ({where})")
            if f"selrope.{package}.{name}" not in documented and target.path not in documented:
                found.append(f"selrope.{package}.{name} is not on the site ({where})")
    return found


def main() -> None:
    site = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "site")
    found = problems(site)
    if found:
        raise SystemExit("API reference: " + "\n  ".join([f"{len(found)} problems", *found]))
    print("API reference: every public name has a docstring and a place on the site")


if __name__ == "__main__":
    main()
