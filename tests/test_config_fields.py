"""Every config field is read by something in ``src/sagegen`` (issue 14: ``llm.max_tokens`` was read by
nothing, ``solver_llm.temperature`` applied to nothing).

The scan is by source, not by running: a field ``a.b.name`` counts as read only where ``.name`` (or
``getattr(x, "name")``) is loaded from a receiver that is that section, which means either

- the receiver's last name is the section's own attribute name (``cfg.judge.max_tokens`` reads
  ``judge.max_tokens`` and nothing else, ``self.cfg.solver_llm.timeout`` only ``solver_llm.timeout``), or
- the receiver is a name annotated with the section's class in that module (``def build_llm(cfg:
  LLMConfig)`` reading ``cfg.timeout`` reads it for every role that passes its section there), or bound
  from the section (``tc = cfg.train``, ``for s in cfg.solver_llms``).

So a name shared between sections (``max_tokens`` of the judge and of the LLM) never hides an unread one.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pydantic import BaseModel

import sagegen
from sagegen.config import Config, LLMConfig, Section, _section_type

SRC = Path(sagegen.__file__).parent

# Read through a generic path that the scan cannot follow (keep each with its reason):
ALLOWED: dict[str, str] = {
    # Read in config.py itself, by the role's bound renderer (``cfg.prompts``) every role renders through.
    "judge.prompt_set": "read by JudgeConfig.prompts",
    "generator.prompt_set": "read by GeneratorConfig.prompts",
}


def _leaves(model: type[BaseModel], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], type]]:
    """(path, owning class) of every leaf field; sections (also optional and list ones) are walked."""
    out: list[tuple[tuple[str, ...], type]] = []
    for name, field in model.model_fields.items():
        section, _ = _section_type(field)
        if section is not None:
            out += _leaves(section, (*path, name))
        else:
            out.append(((*path, name), model))
    return out


def _section_attrs(model: type[BaseModel], out: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """Attribute name of each section → class names it holds (``solver_llm`` → {"LLMConfig"})."""
    out = {} if out is None else out
    for name, field in model.model_fields.items():
        section, _ = _section_type(field)
        if section is not None:
            out.setdefault(name, set()).add(section.__name__)
            _section_attrs(section, out)
    return out


def _dotted(node: ast.AST) -> str | None:
    """``self.cfg.judge`` for a chain of names and attributes; None for anything else (calls, items)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (head := _dotted(node.value)):
        return f"{head}.{node.attr}"
    return None


def _names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


class _Module:
    """One module's bindings (dotted name → section classes it holds) and reads ({(receiver, attribute)})."""

    def __init__(self, tree: ast.AST, section_attrs: dict[str, set[str]]) -> None:
        self.section_attrs = section_attrs
        self.classes = {c for cs in section_attrs.values() for c in cs}
        self.typed: dict[str, set[str]] = {}
        self.reads: set[tuple[str, str]] = set()
        for _ in range(2):  # twice: ``self.cfg = cfg`` may come before the line that types ``cfg``
            for node in ast.walk(tree):
                self._visit(node)

    def types(self, receiver: str) -> set[str] | None:
        """The classes a receiver holds where this module binds it (``self.x`` falls back to a class-level
        ``x: T``); None where it binds nothing (then the receiver's last name decides, see unread_fields)."""
        if receiver in self.typed:
            return self.typed[receiver]
        head, _, last = receiver.rpartition(".")
        return self.typed.get(last) if head == "self" else None

    def _bound(self, value: ast.AST) -> set[str]:
        """The section classes an expression evaluates to: ``cfg.train``, a bound name, ``a or b``,
        ``a if c else b``, ``cfg.solver.model_copy(...)``, ``HybridConfig.model_validate(...)``."""
        if (text := _dotted(value)) is not None and (known := self.types(text)) is not None:
            return set(known)
        if isinstance(value, ast.Attribute):
            return set(self.section_attrs.get(value.attr, set()))
        if isinstance(value, ast.BoolOp):
            return {c for v in value.values for c in self._bound(v)}
        if isinstance(value, ast.IfExp):
            return self._bound(value.body) | self._bound(value.orelse)
        if isinstance(value, ast.Call):
            func = value.func
            if isinstance(func, ast.Name) and func.id in self.classes:
                return {func.id}
            if isinstance(func, ast.Attribute) and func.attr in ("model_copy", "model_validate"):
                inner = func.value
                return {inner.id} & self.classes if isinstance(inner, ast.Name) else self._bound(inner)
        return set()

    def _bind(self, target: ast.AST, value: ast.AST | None, annotation: ast.AST | None = None) -> None:
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
            for t, v in zip(target.elts, value.elts, strict=False):
                self._bind(t, v)
        elif (name := _dotted(target)) is not None:
            got = _names_in(annotation) if annotation is not None else self._bound(value) if value else set()
            self.typed.setdefault(name, set()).update(got)

    def _visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.arg) and node.annotation is not None:
            self.typed.setdefault(node.arg, set()).update(_names_in(node.annotation))
        elif isinstance(node, ast.AnnAssign):
            self._bind(node.target, node.value, node.annotation)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                self._bind(target, node.value)
        elif isinstance(node, ast.For):
            self._bind(node.target, node.iter)  # ``for s in cfg.solver_llms``: the list's section
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            if (recv := _dotted(node.value)) is not None:
                self.reads.add((recv, node.attr))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and (recv := _dotted(node.args[0])) is not None
        ):
            self.reads.add((recv, node.args[1].value))


def _reads_section(mod: _Module, recv: str, classes: set[str], section_attr: str | None) -> bool:
    known = mod.types(recv)
    return bool(classes & known) if known is not None else recv.rpartition(".")[2] == section_attr


def unread_fields(root: type[BaseModel] = Config, src: Path = SRC) -> list[str]:
    """Dotted paths of ``root``'s leaf fields that no module under ``src`` reads (config.py aside)."""
    section_attrs = _section_attrs(root)
    modules = [
        _Module(ast.parse(path.read_text(encoding="utf-8")), section_attrs)
        for path in sorted(src.rglob("*.py"))
        if not (path.name == "config.py" and path.parent == src)  # the definitions are not readers
    ]
    missing = []
    for path, owner in _leaves(root):
        name, section_attr = path[-1], path[-2] if len(path) > 1 else None
        # A receiver bound to the class (or to a base class that already has the field) reads it for
        # every path of that class; an unbound one only for the section its last name is.
        classes = {c.__name__ for c in owner.__mro__ if name in getattr(c, "model_fields", {})}
        found = any(
            attr == name and _reads_section(mod, recv, classes, section_attr)
            for mod in modules
            for recv, attr in mod.reads
        )
        if not found and ".".join(path) not in ALLOWED:
            missing.append(".".join(path))
    return missing


def test_every_config_field_is_read() -> None:
    assert unread_fields() == [], "config fields nothing reads: read them where they apply, or remove them"


class _Dummies(Section):
    also_unread: int = 1


class _LLMWithTokens(LLMConfig):
    max_tokens: int = 512  # the field issue 14 found unread: judge.max_tokens shares its name


class _ConfigWithDummies(Config):
    never_read_knob: int = 0
    dummies: _Dummies = _Dummies()
    llm: _LLMWithTokens = _LLMWithTokens()


def test_scan_reports_fields_nothing_reads() -> None:
    assert unread_fields(_ConfigWithDummies) == ["llm.max_tokens", "never_read_knob", "dummies.also_unread"]


def test_scan_counts_a_read_through_the_section_or_an_annotated_name(tmp_path: Path) -> None:
    (tmp_path / "reader.py").write_text(
        "def f(cfg: _ConfigWithDummies, x: _Dummies):\n"
        "    return cfg.llm.max_tokens, x.also_unread, getattr(cfg, 'never_read_knob')\n",
        encoding="utf-8",
    )
    every = [".".join(p) for p, _ in _leaves(_ConfigWithDummies)]
    read = {"llm.max_tokens", "dummies.also_unread", "never_read_knob"}
    assert unread_fields(_ConfigWithDummies, tmp_path) == [p for p in every if p not in read | set(ALLOWED)]


def test_allow_list_names_real_fields() -> None:
    paths = {".".join(p) for p, _ in _leaves(Config)}
    assert set(ALLOWED) <= paths, set(ALLOWED) - paths
