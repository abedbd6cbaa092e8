"""Every document the code cites is in the repository, and every cited section exists.

Comments cite the design as ``docs/design.md §1.2`` (several sections: ``§1.1 and §1.3``). A citation
of a file that is not under ``docs/``, of a heading that is not in it, or of the brief the project
was started from (``DESIGN``, which a user's clone does not have) fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Where citations live: the code, the tests, the benchmarks and scripts, the examples.
CITING = ("src", "tests", "bench", "scripts", "examples")
SUFFIXES = {".py", ".j2", ".yaml", ".yml", ".sh", ".md", ".txt"}

DOC_REF = re.compile(r"docs/([\w./-]+?\.md)")
#: A cited section: ``docs/x.md §2.3`` or ``docs/x.md §anchor``, then any ``and §4`` / ``, §4`` after it.
SECTION_REF = re.compile(r"docs/([\w./-]+?\.md) (§[\w.-]+(?:(?:,| and) §[\w.-]+)*)")
#: The project's brief outside the repository, under any of the names it was cited by.
FOREIGN = re.compile(r"\bDESIGN(?:\.md)?\b(?: §|\.md)|shared/DESIGN")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$")
ANCHOR = re.compile(r"\{#([\w-]+)\}")


def _citing_files() -> list[Path]:
    files = []
    for top in CITING:
        base = ROOT / top
        if base.is_dir():
            files += [p for p in base.rglob("*") if p.is_file() and p.suffix in SUFFIXES]
    return sorted(files)


def section_keys(markdown: str) -> set[str]:
    """What a ``§`` may name in a document: a heading's number (``1.2``) or its explicit anchor."""
    keys: set[str] = set()
    in_fence = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        m = None if in_fence else HEADING.match(line)
        if not m:
            continue
        text = m.group(1)
        keys.update(ANCHOR.findall(text))
        number = re.match(r"(\d+(?:\.\d+)*)\.?\s", text)
        if number:
            keys.add(number.group(1))
    return keys


def bad_citations(text: str, where: str, docs: Path) -> list[str]:
    """Every citation in ``text`` that names a missing document or section, as ``where: reason``."""
    problems = []
    for i, line in enumerate(text.splitlines(), 1):
        if FOREIGN.search(line):
            problems.append(f"{where}:{i}: cites the brief outside the repository: {line.strip()}")
        for name in DOC_REF.findall(line):
            if not (docs / name).is_file():
                problems.append(f"{where}:{i}: docs/{name} is not in the repository")
        for name, sections in SECTION_REF.findall(line):
            path = docs / name
            if not path.is_file():
                continue  # reported above
            keys = section_keys(path.read_text(encoding="utf-8"))
            for section in re.findall(r"§([\w.-]+)", sections):
                if section.rstrip(".") not in keys:
                    problems.append(f"{where}:{i}: docs/{name} has no section §{section}")
    return problems


def test_every_citation_names_an_existing_document_and_section() -> None:
    problems: list[str] = []
    for path in _citing_files():
        if path == Path(__file__).resolve():
            continue  # this file's docstring shows the patterns it looks for
        text = path.read_text(encoding="utf-8", errors="replace")
        problems += bad_citations(text, str(path.relative_to(ROOT)), ROOT / "docs")
    assert not problems, "\n".join(problems)


def test_the_code_cites_the_design_document() -> None:
    # The design is cited from the loop itself; a test that found no citation at all would pass vacuously.
    cited = [p for p in _citing_files() if "docs/design.md §" in p.read_text(encoding="utf-8")]
    assert any(p.name == "pipeline.py" for p in cited), cited


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("# see docs/design.md §9.9", "has no section §9.9"),
        ("# see docs/design.md §1.2 and §7.7", "has no section §7.7"),
        ("# see docs/nowhere.md", "docs/nowhere.md is not in the repository"),
        ("# the early stop (DESIGN §4)", "cites the brief outside the repository"),
        ("# read ../shared/DESIGN.md first", "cites the brief outside the repository"),
    ],
)
def test_a_bad_citation_is_reported(tmp_path: Path, line: str, reason: str) -> None:
    (tmp_path / "design.md").write_text("# Design\n\n## 1. Method {#method}\n\n### 1.2 Verify\n")
    problems = bad_citations(line, "x.py", tmp_path)
    assert len(problems) == 1 and reason in problems[0], problems


def test_a_good_citation_passes(tmp_path: Path) -> None:
    (tmp_path / "design.md").write_text("# Design\n\n## 1. Method {#method}\n\n### 1.2 Verify\n")
    text = "# docs/design.md §1 and §1.2, docs/design.md §method"
    assert bad_citations(text, "x.py", tmp_path) == []
