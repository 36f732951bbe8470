"""Does the released package work outside this repository? (`make wheel-check`, part of `make test`)

Builds the sdist and, from it, the wheel (`python -m build`), runs `twine check --strict` on both,
makes a fresh virtual environment in a temporary folder outside the checkout, installs
torch==2.13.0 first and then the wheel with its runtime dependencies only (no extras), and
there, from a folder that is not the checkout, runs:
  - `selrope --help` and `python -m selrope --help`, and both with stdout closed (no traceback);
  - a two-step `selrope train` of a tiny state-tracking model, then loads its saved model;
  - the Python snippet of README.md's "Use" section, whose `print(...)  # expected` comments
    must match what it prints.

Usage: python tests/packaging/check_wheel.py [--keep]  (--keep leaves the temporary folder)
Prints the time of each step; about a minute on 2 CPU cores, most of it installing torch.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TORCH = "torch==2.13.0"  # pinned: an unpinned torch pulls a multi-GB CUDA build
TRAIN_ARGS = [
    "train", "--task", "state_tracking", "--d-model", "16", "--n-layers", "1", "--n-heads", "2",
    "--steps", "2", "--batch-size", "8", "--num-train", "32", "--num-test", "8",
    "--train-len", "8", "--test-lens", "8",
]  # fmt: skip


def readme_snippet(readme: str) -> str:
    """The first ```python block under README.md's "## Use" heading."""
    use = re.search(r"^## Use\n(.*?)(?=^## |\Z)", readme, flags=re.S | re.M)
    if use is None:
        raise ValueError("README.md has no '## Use' section")
    block = re.search(r"^```python\n(.*?)^```", use.group(1), flags=re.S | re.M)
    if block is None:
        raise ValueError("README.md's '## Use' section has no ```python block")
    return block.group(1)


def expected_prints(snippet: str) -> list[str]:
    """What the snippet says it prints: the comment after each `print(...)` line."""
    return [
        match.group(1).strip()
        for match in re.finditer(r"^print\(.*\)\s+#\s*(.+)$", snippet, flags=re.M)
    ]


class Checker:
    """Runs each step in a clean environment, in a folder outside the checkout, and times it."""

    def __init__(self, root: Path):
        self.root = root
        self.venv = root / "venv"
        self.bin = self.venv / "bin"
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
        }
        self.env["PATH"] = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    def run(self, title: str, command: list[str], **kwargs) -> subprocess.CompletedProcess:
        start = time.perf_counter()
        result = subprocess.run(
            command, cwd=self.root, env=self.env, capture_output=True, text=True, **kwargs
        )
        elapsed = time.perf_counter() - start
        print(f"{elapsed:6.1f} s  {title}", flush=True)
        if result.returncode != 0:
            raise SystemExit(
                f"wheel check failed: {title}: exit {result.returncode}\n"
                f"$ {' '.join(map(str, command))}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        return result

    def closed_pipe(self, title: str, command: list[str]) -> None:
        """The command with its stdout closed before it writes: it must end without a word."""
        start = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=self.root, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        process.stdout.close()
        stderr = process.stderr.read().decode()
        process.stderr.close()
        code = process.wait()
        print(f"{time.perf_counter() - start:6.1f} s  {title}", flush=True)
        if stderr or code not in (0, -13, 141):  # -13 / 141: ended by SIGPIPE
            raise SystemExit(f"wheel check failed: {title}: exit {code}, stderr:\n{stderr[-3000:]}")


def check(root: Path) -> None:
    checker = Checker(root)
    dist = root / "dist"
    python = sys.executable

    checker.run(
        "python -m build (sdist, then the wheel from it)",
        [python, "-m", "build", "--outdir", str(dist), str(REPO)],
    )
    wheels = sorted(dist.glob("selrope-*.whl"))
    sdists = sorted(dist.glob("selrope-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        raise SystemExit(f"wheel check failed: expected one wheel and one sdist in {dist}")
    checker.run(
        "twine check --strict", [python, "-m", "twine", "check", "--strict", *wheels, *sdists]
    )

    checker.run("fresh venv", [python, "-m", "venv", str(checker.venv)])
    pip = [str(checker.bin / "python"), "-m", "pip", "install", "--quiet"]
    checker.run(f"pip install {TORCH}", [*pip, TORCH])
    checker.run("pip install the wheel (runtime dependencies only)", [*pip, str(wheels[0])])

    venv_python = str(checker.bin / "python")
    where = checker.run(
        "import selrope from the venv",
        [
            venv_python, "-c",
            "import importlib.metadata as m, pathlib, selrope; "
            "p = pathlib.Path(selrope.__file__).parent; "
            "assert m.version('selrope') == selrope.__version__, selrope.__version__; "
            "assert (p / 'py.typed').is_file(), 'py.typed is not installed'; "
            "print(p)",
        ],
    )  # fmt: skip
    installed = Path(where.stdout.strip())
    if installed.is_relative_to(REPO) or not installed.is_relative_to(checker.venv):
        raise SystemExit(f"wheel check failed: selrope was imported from {installed}")

    help_text = checker.run("selrope --help", [str(checker.bin / "selrope"), "--help"]).stdout
    if not help_text.startswith("usage: selrope"):
        raise SystemExit(f"wheel check failed: selrope --help printed:\n{help_text}")
    checker.run("python -m selrope --help", [venv_python, "-m", "selrope", "--help"])

    run = root / "run"
    checker.run(
        "selrope train (2 steps)", [str(checker.bin / "selrope"), *TRAIN_ARGS, "--out", str(run)]
    )
    for name in ("run.json", "metrics.jsonl", "results.json", "model/config.json"):
        if not (run / name).is_file():
            raise SystemExit(f"wheel check failed: selrope train wrote no {name}")
    checker.run(
        "load the trained model",
        [
            venv_python, "-c",
            "import sys; from selrope.models import LanguageModel; "
            "model = LanguageModel.from_pretrained(sys.argv[1]); print(type(model).__name__)",
            str(run / "model"),
        ],
    )  # fmt: skip

    snippet = readme_snippet((REPO / "README.md").read_text())
    (root / "readme_snippet.py").write_text(snippet)
    printed = checker.run("README.md's Python snippet", [venv_python, "readme_snippet.py"])
    expected = expected_prints(snippet)
    lines = printed.stdout.strip().splitlines()
    if lines != expected:
        raise SystemExit(
            f"wheel check failed: README.md's snippet printed {lines}, its comments say {expected}"
        )

    checker.closed_pipe("selrope --help, stdout closed", [str(checker.bin / "selrope"), "--help"])
    checker.closed_pipe(
        "selrope train --help, stdout closed", [str(checker.bin / "selrope"), "train", "--help"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="selrope-wheel-check-")).resolve()
    if root.is_relative_to(REPO):
        raise SystemExit(f"wheel check: the temporary folder {root} lies inside the checkout")
    try:
        check(root)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{time.perf_counter() - start:6.1f} s  wheel check passed")


if __name__ == "__main__":
    main()
