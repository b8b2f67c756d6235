"""The project's own docs: every citation of docs/math.md or docs/design.md names a section that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    *sorted((ROOT / "dlngeo").rglob("*.py")),
    *sorted((ROOT / "plugins").rglob("*.py")),
    *sorted((ROOT / "tests").rglob("*.py")),
    *sorted((ROOT / "examples").rglob("*.py")),
    *sorted((ROOT / "examples").rglob("*.toml")),
    *sorted((ROOT / "benchmarks").rglob("*.py")),
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
]
# "docs/math.md §3", "§2.1-2.2, §9", "§3-§5", "section 5" (a line break may follow the file name).
CITATION = re.compile(
    r"docs/(math|design)\.md\s*((?:§\s*[0-9.]+(?:\s*[-–]\s*§?[0-9.]+)?(?:,\s*)?)+|section\s+[0-9]+)?"
)


def _sections(name: str) -> set[str]:
    text = (ROOT / "docs" / f"{name}.md").read_text()
    return set(re.findall(r"^#{2,3} ([0-9]+(?:\.[0-9]+)?)\.? ", text, flags=re.M))


def _cited():
    for path in SOURCES:
        if path.name == "test_docs.py":
            continue
        for match in CITATION.finditer(path.read_text(encoding="utf-8")):
            numbers = re.findall(r"[0-9]+(?:\.[0-9]+)?", match.group(2) or "")
            yield path.relative_to(ROOT), match.group(1), [n.rstrip(".") for n in numbers]


def test_the_docs_exist_and_are_numbered():
    math, design = _sections("math"), _sections("design")
    assert {str(k) for k in range(1, 10)} <= math  # sections 1-7 as cited, plus 8 and 9
    assert {"3.2", "5.5", "6.1", "6.3", "8.4"} <= math
    assert {str(k) for k in range(1, 8)} <= design


def test_every_citation_of_the_docs_resolves():
    sections = {"math": _sections("math"), "design": _sections("design")}
    citations = list(_cited())
    assert len(citations) >= 50  # the docstrings, tests, examples and README cite them
    for path, doc, numbers in citations:
        for number in numbers:
            assert number in sections[doc], f"{path}: docs/{doc}.md §{number} does not exist"


@pytest.mark.parametrize("name", ["MATH.md", "MATH-NOTES", "DESIGN.md"])
def test_no_reference_to_files_outside_the_repository(name):
    for path in SOURCES:
        if path.name == "test_docs.py":
            continue
        assert name not in path.read_text(encoding="utf-8"), path
