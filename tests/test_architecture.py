"""The import rules of docs/architecture.md, checked on the source: every import of ``src/sagegen``
(top level or inside a function; not those under ``if TYPE_CHECKING:``) parsed with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
#: The command line and its screens: the only modules that may draw (rich, typer, tqdm bars).
SCREEN = {"sagegen.cli", "sagegen.cli_display", "sagegen.cli_retrieval", "sagegen.ui"}
SCREEN_LIBS = {"rich", "typer", "tqdm"}
#: What LLM backends must not know: the trainer and the run around them.
RUN_LAYERS = ("sagegen.train", "sagegen.pipeline", "sagegen.session")
#: The shared vocabulary every layer uses; it imports nothing but itself. The prompt templates belong to
#: it: each role's config hands out the renderer bound to its prompt set (``cfg.prompts``).
VOCABULARY = {"records", "errors", "config", "targets", "events", "prompts"}
#: Edges that break a rule today and are being removed by other branches of issue 14; listed one by
#: one so a new edge still fails. Drop each line when its fix is merged.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = SRC.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports() -> dict[str, set[str]]:
    """Module → the modules and top-level packages it imports (``from sagegen import x`` → sagegen.x)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((SRC / "sagegen").rglob("*.py")):
        mod, tree = _module(path), ast.parse(path.read_text(encoding="utf-8"))
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        skip, out = _type_checking_nodes(tree), set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, one level up per extra dot
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                out.add(base)
                # ``from sagegen import outage`` imports the module sagegen.outage
                out.update(f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}"))
        graph[mod] = out
    return graph


def _edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, bs in graph.items() for b in bs}


def _area(mod: str) -> str:
    """``sagegen.llm.openai_backend`` → ``llm``; a top-level module is its own area."""
    return mod.split(".")[1] if mod.count(".") else mod


def _screen(mod: str) -> bool:
    return mod in SCREEN or mod.startswith("sagegen.ui.")


def _violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    bad = set()
    for a, b in _edges(graph):
        top = b.split(".")[0]
        if not _screen(a) and (top in SCREEN_LIBS or _screen(b)):
            bad.add((a, b))  # the core knows no screen
        if a.startswith("sagegen.llm") and b.startswith(RUN_LAYERS):
            bad.add((a, b))  # backends are leaves: they know no trainer and no run
        if _area(a) in VOCABULARY and b.startswith("sagegen.") and _area(b) not in VOCABULARY:
            bad.add((a, b))  # the shared vocabulary imports nothing above it
    return bad


def _area_cycles(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Module edges that close a cycle between two areas (a package or a top-level module)."""
    edges = {(a, b) for a, b in _edges(graph) - KNOWN_EXCEPTIONS if b.startswith("sagegen.")}
    area_edges = {(_area(a), _area(b)) for a, b in edges if _area(a) != _area(b)}
    return {(a, b) for a, b in edges if (_area(b), _area(a)) in area_edges and _area(a) != _area(b)}


def test_the_rules_hold_except_the_listed_edges() -> None:
    graph = imports()
    assert "sagegen.pipeline" in graph and "sagegen.cli" in graph  # the scan found the package
    assert _violations(graph) - KNOWN_EXCEPTIONS == set()
    assert _area_cycles(graph) == set()


def test_known_exceptions_are_still_there() -> None:
    # An exception whose edge is gone must be dropped from the list, or it would hide a regression.
    graph = imports()
    edges = _edges(graph)
    assert {
        e
        for e in KNOWN_EXCEPTIONS
        if e not in edges and not any(x.startswith(e[1] + ".") for x in graph.get(e[0], ()))
    } == set()


def test_the_checker_catches_forbidden_edges() -> None:
    # The rules themselves, on a made-up graph: each kind of edge is caught.
    fake = {
        "sagegen.pipeline": {"rich.live", "sagegen.store"},
        "sagegen.evaluate": {"sagegen.cli_display"},
        "sagegen.llm.x": {"sagegen.train.hf_model"},
        "sagegen.records": {"sagegen.store"},
        "sagegen.analysis.a": {"sagegen.export.b"},
        "sagegen.export.b": {"sagegen.analysis.c"},
        "sagegen.cli": {"rich", "sagegen.pipeline"},
    }
    assert _violations(fake) == {
        ("sagegen.pipeline", "rich.live"),
        ("sagegen.evaluate", "sagegen.cli_display"),
        ("sagegen.llm.x", "sagegen.train.hf_model"),
        ("sagegen.records", "sagegen.store"),
    }
    assert _area_cycles(fake) == {
        ("sagegen.analysis.a", "sagegen.export.b"),
        ("sagegen.export.b", "sagegen.analysis.c"),
    }
