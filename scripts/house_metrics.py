"""The "house" figures of issue 24, printed so a before and an after can be compared by rerunning this.

    python scripts/house_metrics.py [--docs-url URL] [--no-mypy] [--longest N]

Prints: source files per package, the longest functions, radon's blocks rated C or worse, the
``duplicates`` summary line, the mypy error count (the ``[tool.mypy]`` settings of pyproject.toml), the
number of ``type: ignore`` comments, and the README's words before its first link into the manual (a
``docs/`` path or the docs site). radon and ``duplicates`` are development tools: a figure whose tool is
missing says so instead of failing the rest.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "sagegen"
IGNORE_COMMENT = re.compile(r"#\s*type:\s*ignore")
MYPY_SUMMARY = re.compile(r"^(Found (\d+) errors? in \d+ files?|Success: no issues found).*$", re.M)
#: radon's rank C starts at cyclomatic complexity 11 (A 1-5, B 6-10, C 11-20, D 21-30, E 31-40, F 41+).
RANK_C = 11


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def files_per_package() -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in _sources():
        counts[".".join(path.parent.relative_to(SRC).parts)] += 1
    return counts


def longest_functions(n: int) -> list[tuple[int, str, str]]:
    """(lines, qualified name, file:line) of the ``n`` longest functions and methods, longest first."""
    found: list[tuple[int, str, str]] = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        stack: list[tuple[ast.AST, str]] = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        lines = (child.end_lineno or child.lineno) - child.lineno + 1
                        found.append((lines, name, f"{path.relative_to(ROOT)}:{child.lineno}"))
                    stack.append((child, f"{name}."))
                else:
                    stack.append((child, prefix))
    return sorted(found, key=lambda f: (-f[0], f[1]))[:n]


def radon_c_or_worse() -> list[str] | None:
    """``file:line name (rank complexity)`` of every block radon rates C or worse; None without radon."""
    try:
        from radon.complexity import cc_rank, cc_visit
    except ImportError:
        return None
    rows: list[tuple[int, str]] = []
    for path in _sources():
        for block in cc_visit(path.read_text(encoding="utf-8")):
            if block.complexity >= RANK_C:
                name = getattr(block, "fullname", block.name)
                where = f"{path.relative_to(ROOT)}:{block.lineno}"
                rows.append(
                    (block.complexity, f"{where} {name} ({cc_rank(block.complexity)} {block.complexity})")
                )
    return [row for _, row in sorted(rows, key=lambda r: (-r[0], r[1]))]


def duplicates_line() -> str:
    tool = shutil.which("duplicates")
    if tool is None:
        return "n/a (the `duplicates` command is not on PATH)"
    out = subprocess.run([tool, "--repo", str(SRC)], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "n/a (no output)"


def mypy_count() -> tuple[int | None, str]:
    done = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    match = MYPY_SUMMARY.search(done.stdout)
    if match is None:  # mypy missing or crashed: say its last line instead of a number
        said = (done.stderr or done.stdout).strip().splitlines()
        return None, said[-1] if said else f"exit status {done.returncode}"
    return int(match.group(2) or 0), match.group(0)


def type_ignores() -> int:
    return sum(len(IGNORE_COMMENT.findall(p.read_text(encoding="utf-8"))) for p in _sources())


def readme_words_before_manual(docs_url: str | None) -> tuple[int, str]:
    """Words of README.md before its first Markdown or HTML link into ``docs/`` (or ``docs_url``)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [r"(?:\./)?docs/"] + ([re.escape(docs_url)] if docs_url else [])
    link = re.compile(r"(?:\]\(|href=[\"'])(?:" + "|".join(targets) + ")")
    match = link.search(text)
    if match is None:
        return len(text.split()), "no link into the manual (all words counted)"
    line = text.count("\n", 0, match.start()) + 1
    return len(text[: match.start()].split()), f"first link at README.md:{line}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs-url", help="the docs site's address, counted as a link into the manual")
    parser.add_argument("--longest", type=int, default=15, help="how many of the longest functions to list")
    parser.add_argument("--no-mypy", action="store_true", help="skip the type check (about a minute cold)")
    args = parser.parse_args()

    counts = files_per_package()
    print(f"files per package ({sum(counts.values())} .py files in src/sagegen):")
    for pkg, n in sorted(counts.items()):
        print(f"  {pkg:<24} {n}")

    print(f"\nlongest {args.longest} functions (lines, name, where):")
    for lines, name, where in longest_functions(args.longest):
        print(f"  {lines:>4}  {name:<48} {where}")

    blocks = radon_c_or_worse()
    if blocks is None:
        print("\nradon blocks rated C or worse: n/a (pip install radon)")
    else:
        print(f"\nradon blocks rated C or worse: {len(blocks)}")
        for row in blocks:
            print(f"  {row}")

    print(f"\nduplicates (src): {duplicates_line()}")

    if not args.no_mypy:
        n, summary = mypy_count()
        print(f"\nmypy errors: {n if n is not None else 'n/a'} ({summary})")
    print(f"type: ignore comments in src: {type_ignores()}")

    words, where = readme_words_before_manual(args.docs_url)
    print(f"README words before its first link into the manual: {words} ({where})")


if __name__ == "__main__":
    main()
