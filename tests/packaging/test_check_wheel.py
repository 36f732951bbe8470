"""The wheel check's reading of README.md (the check itself runs as `make wheel-check`)."""

from pathlib import Path

import pytest
from check_wheel import expected_prints, readme_snippet

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_snippet_is_the_use_sections_python_block():
    snippet = readme_snippet(README.read_text())
    assert "from selrope" in snippet
    compile(snippet, "README.md", "exec")
    # What it promises to print is what the wheel check compares against.
    assert expected_prints(snippet) == ["torch.Size([1, 13])"]


def test_readme_snippet_takes_the_first_block_of_the_use_section_only():
    readme = (
        "# x\n```python\nnot this\n```\n## Use\ntext\n```bash\nnor this\n```\n"
        "```python\nprint(1)  # 1\nprint(2)\n```\n```python\nnor that\n```\n## Next\n"
    )
    snippet = readme_snippet(readme)
    assert snippet == "print(1)  # 1\nprint(2)\n"
    assert expected_prints(snippet) == ["1"]


@pytest.mark.parametrize(
    "readme", ["# x\n```python\nprint(1)\n```\n", "## Use\nno code\n## Next\n```python\nx\n```\n"]
)
def test_a_readme_without_the_snippet_is_refused(readme):
    with pytest.raises(ValueError, match="README.md"):
        readme_snippet(readme)
