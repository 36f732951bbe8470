"""The documentation pages stay true: copies of the README are the README's, examples run."""

import contextlib
import io
import re
from pathlib import Path

import pytest
import yaml
from check_wheel import expected_prints

import selrope

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README = (REPO / "README.md").read_text()


def code_blocks(text: str, language: str = r"\w*") -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.parametrize("page", ["getting-started.md", "concepts/distributed.md"])
def test_the_commands_a_page_copies_are_the_readmes(page):
    readme_blocks = code_blocks(README)
    for block in code_blocks((DOCS / page).read_text()):
        assert block in readme_blocks, f"docs/{page} has a code block the README lacks:\n{block}"


def test_every_command_a_concept_page_shows_is_in_the_readme():
    for page in sorted((DOCS / "concepts").glob("*.md")):
        for block in code_blocks(page.read_text(), "bash"):
            for line in block.splitlines():
                assert line in README, f"docs/concepts/{page.name}: {line!r} is not in README.md"


PYTHON_EXAMPLES = [
    (page.name, index, block)
    for page in sorted((DOCS / "concepts").glob("*.md"))
    for index, block in enumerate(code_blocks(page.read_text(), "python"))
]


@pytest.mark.parametrize(("page", "index", "example"), PYTHON_EXAMPLES, ids=lambda v: str(v)[:20])
def test_the_python_examples_of_the_concept_pages_run(page, index, example):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(example, f"docs/concepts/{page}[{index}]", "exec"), {})
    assert printed.getvalue().strip().splitlines() == expected_prints(example)


def test_citation_file_has_the_package_version():
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert str(citation["version"]) == selrope.__version__
    assert {ref["url"] for ref in citation["references"]} == {
        "https://arxiv.org/abs/2511.17388",
        "https://arxiv.org/abs/2507.23083",
    }
