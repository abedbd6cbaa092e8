"""The import rules of docs/architecture.md, checked on the source: every import of ``src/sagegen``
(top level or inside a function; not those under ``if TYPE_CHECKING:``) parsed with ``ast``.

Three checks: the rules below (screens, backends, vocabulary), the layer table (a module imports only
from its own layer or below), and no import cycle of any length between areas (an area is a
subpackage such as ``analysis/`` or a top-level module such as ``judge.py``)."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
#: The command line and its screens: the only modules that may draw (rich, typer, tqdm bars).
SCREEN = {"sagegen.cli", "sagegen.__main__"}
SCREEN_LIBS = {"rich", "typer", "tqdm"}
#: What LLM backends must not know: the trainer and the run around them.
RUN_LAYERS = ("sagegen.train", "sagegen.loop")
#: The shared vocabulary every layer uses; it imports nothing but itself. The prompt templates belong to
#: it: each role's config hands out the renderer bound to its prompt set (``cfg.prompts``).
VOCABULARY = {"records", "errors", "config", "targets", "events", "prompts"}

#: The layers, bottom to top: an area imports from its own layer or a lower one, never a higher one.
#: A new area fails the test until it is placed here.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("vocabulary", frozenset(VOCABULARY)),
    (
        "helpers",  # leaves the parts share: JSON Lines input, ids, the profiles as data
        frozenset({"jsonl", "ids", "profiles"}),
    ),
    ("parts", frozenset({"corpus", "retrieval", "llm", "ledger"})),
    ("agents", frozenset({"agents", "verdict", "server", "doctor"})),
    ("run", frozenset({"loop"})),
    ("after a run", frozenset({"analysis", "export", "train", "integrations"})),
    ("screen", frozenset({"cli", "__main__"})),
)
#: Modules whose folder does not say their layer; each is an area of its own here (none since the
#: re-layout: a module that needs a line here is in the wrong package).
PLACED: dict[str, str] = {}
#: Edges that break a rule and are being removed elsewhere; listed one by one so a new edge still
#: fails. Drop each line when its fix is merged.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()

Graph = dict[str, set[str]]


def _module(path: Path, src: Path) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str, src: Path) -> bool:
    path = src.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports(src: Path = SRC, package: str = "sagegen") -> Graph:
    """Module → the modules and top-level packages it imports (``from sagegen import x`` → sagegen.x)."""
    graph: Graph = {}
    for path in sorted((src / package).rglob("*.py")):
        mod, tree = _module(path, src), ast.parse(path.read_text(encoding="utf-8"))
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
                # ``from sagegen.agents import outage`` imports the module sagegen.agents.outage
                out.update(f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}", src))
        graph[mod] = out
    return graph


def _edges(graph: Graph) -> set[tuple[str, str]]:
    return {(a, b) for a, bs in graph.items() for b in bs}


def _area(mod: str, placed: dict[str, str] | None = None) -> str:
    """``sagegen.llm.openai_backend`` → ``llm``; a top-level module is its own area; a module listed
    in ``placed`` is the area named there."""
    placed = PLACED if placed is None else placed
    for name, area in placed.items():
        if mod == name or mod.startswith(name + "."):
            return area
    return mod.split(".")[1] if mod.count(".") else mod


def _screen(mod: str) -> bool:
    return mod in SCREEN or mod.startswith("sagegen.cli.")


def _violations(graph: Graph) -> set[tuple[str, str]]:
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


def _internal(graph: Graph, package: str) -> set[tuple[str, str]]:
    """Module edges inside ``package``, its own ``__init__`` (the version string) left out."""
    return {(a, b) for a, b in _edges(graph) - KNOWN_EXCEPTIONS if b.startswith(package + ".")}


def _layer_of(area: str) -> int | None:
    return next((i for i, (_, areas) in enumerate(LAYERS) if area in areas), None)


def layer_violations(graph: Graph) -> set[str]:
    """A line for each import of a higher layer, and for each area the table does not place."""
    bad = set()
    for a, b in _internal(graph, "sagegen"):
        la, lb = _layer_of(_area(a)), _layer_of(_area(b))
        for area, layer in ((_area(a), la), (_area(b), lb)):
            if layer is None:
                bad.add(f"area {area!r} is in no layer of LAYERS: place it")
        if la is not None and lb is not None and lb > la:
            bad.add(f"{a} ({LAYERS[la][0]}) imports {b} ({LAYERS[lb][0]}, a higher layer)")
    return bad


def strongly_connected(nodes: Iterable[str], succ: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components (iterative: no recursion limit on a deep graph)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[set[str]] = []
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(succ.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(succ.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.add(top)
                    if top == node:
                        break
                found.append(component)
    return found


def area_cycles(graph: Graph, package: str = "sagegen", placed: dict[str, str] | None = None) -> list[str]:
    """One line per import cycle between areas, of any length: the areas and the module edges that
    close it (``judge → export: sagegen.verdict.judge imports sagegen.verdict.reward``)."""
    succ: dict[str, set[str]] = {}
    why: dict[tuple[str, str], list[str]] = {}
    for a, b in sorted(_internal(graph, package)):
        x, y = _area(a, placed), _area(b, placed)
        if x != y:
            succ.setdefault(x, set()).add(y)
            why.setdefault((x, y), []).append(f"{a} imports {b}")
    out = []
    for comp in strongly_connected(set(succ) | {y for ys in succ.values() for y in ys}, succ):
        if len(comp) > 1:
            inside = [
                f"{x} → {y}: {'; '.join(why[x, y])}" for x in sorted(comp) for y in sorted(succ[x] & comp)
            ]
            out.append(f"cycle between {', '.join(sorted(comp))} ({' | '.join(inside)})")
    return out


def test_the_rules_hold_except_the_listed_edges() -> None:
    graph = imports()
    assert "sagegen.loop.pipeline" in graph and "sagegen.cli.main" in graph  # the scan found the package
    assert _violations(graph) - KNOWN_EXCEPTIONS == set()


def test_no_area_imports_a_higher_layer() -> None:
    assert sorted(layer_violations(imports())) == []


def test_no_import_cycle_between_areas() -> None:
    assert area_cycles(imports()) == []


def test_placed_modules_exist() -> None:
    # A placement whose module has moved must be dropped, or it would place a name nothing has.
    assert [m for m in PLACED if not _is_module(m, SRC)] == []


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
        "sagegen.loop.pipeline": {"rich.live", "sagegen.ledger.store"},
        "sagegen.loop.evaluate": {"sagegen.cli.display"},
        "sagegen.llm.x": {"sagegen.train.hf_model"},
        "sagegen.records": {"sagegen.ledger.store"},
        "sagegen.cli.main": {"rich", "sagegen.loop.pipeline"},
    }
    assert _violations(fake) == {
        ("sagegen.loop.pipeline", "rich.live"),
        ("sagegen.loop.evaluate", "sagegen.cli.display"),
        ("sagegen.llm.x", "sagegen.train.hf_model"),
        ("sagegen.records", "sagegen.ledger.store"),
    }
    assert layer_violations(fake) == {  # pipeline → store and cli → pipeline go down: allowed
        "sagegen.loop.evaluate (run) imports sagegen.cli.display (screen, a higher layer)",
        "sagegen.llm.x (parts) imports sagegen.train.hf_model (after a run, a higher layer)",
        "sagegen.records (vocabulary) imports sagegen.ledger.store (parts, a higher layer)",
    }


def test_the_checker_catches_an_unplaced_area() -> None:
    assert layer_violations({"sagegen.newthing": {"sagegen.records"}}) == {
        "area 'newthing' is in no layer of LAYERS: place it"
    }


def test_the_checker_finds_a_three_module_cycle(tmp_path: Path) -> None:
    # a → b → c → a through a top-level import, an import inside a function and ``from pkg import a``;
    # d ↔ e only under TYPE_CHECKING (type hints, not a cycle); f → a is not in a cycle.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    files = {
        "__init__.py": "",
        "a.py": "import pkg.b\n",
        "b.py": "def late():\n    from pkg.c import thing\n    return thing\n",
        "c.py": "from pkg import a\nthing = 1\n",
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n",
        "e.py": "from pkg import d\n",
        "f.py": "from . import a\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text, encoding="utf-8")
    graph = imports(tmp_path, "pkg")
    assert graph["pkg.b"] == {"pkg.c"} and graph["pkg.f"] == {"pkg", "pkg.a"}
    found = area_cycles(graph, "pkg", placed={})
    assert len(found) == 1 and found[0].startswith("cycle between a, b, c (")
    assert "b → c: pkg.b imports pkg.c" in found[0]
    # the same check, cycle removed: nothing found
    (pkg / "c.py").write_text("thing = 1\n", encoding="utf-8")
    assert area_cycles(imports(tmp_path, "pkg"), "pkg", placed={}) == []


def test_tarjan_finds_long_cycles_and_leaves_chains() -> None:
    ring = {f"n{i}": {f"n{(i + 1) % 6}"} for i in range(6)}  # a six-node ring
    chain = {"x": {"y"}, "y": {"z"}}
    comps = strongly_connected([*ring, "x", "y", "z"], {**ring, **chain})
    assert {frozenset(c) for c in comps if len(c) > 1} == {frozenset(ring)}
