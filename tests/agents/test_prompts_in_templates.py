"""Every sentence the model reads lives in a template (src/sagegen/prompts/): the agent loops and the
release profile hold prose only where it goes to the ledger or to the user, never to the model."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import sagegen

SRC = Path(sagegen.__file__).parent
#: The modules that talk to the model: the agent loops, the release profile.
#: (``agents/answer_types.py`` holds the regular expressions of answer shapes: nothing the model reads.)
MODULES = sorted(
    p
    for p in [*SRC.joinpath("agents").glob("*.py"), *SRC.joinpath("profiles").glob("*.py")]
    if p.name != "answer_types.py"
)
_WORD = re.compile(r"[A-Za-z]{2}")
#: Calls whose string arguments go to the ledger or the user, not the model: a recorded step or event.
_LEDGER_CALLS = {"Step", "event"}
#: Functions whose text is a ledger line (``Shortening.describe`` feeds the ``feedback_shortened`` event).
_LEDGER_FUNCTIONS = {"describe"}


def prose_sent_to_model(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string (or f-string) of four or more words outside docstrings, ledger
    calls, raises, asserts and regular expressions."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            skip.add(id(body[0].value))  # a docstring
        allowed = (
            isinstance(node, ast.Raise | ast.Assert)
            or (isinstance(node, ast.Call) and _name(node.func) in _LEDGER_CALLS | {"compile"})
            or (isinstance(node, ast.FunctionDef) and node.name in _LEDGER_FUNCTIONS)
        )
        if allowed:
            skip.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.JoinedStr):  # an f-string counts whole, its fields as one word each
            skip.update(id(n) for n in ast.walk(node))
            text = "".join(v.value if isinstance(v, ast.Constant) else " {} " for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        if sum(1 for w in text.split() if _WORD.search(w) or w == "{}") >= 4:
            found.append((node.lineno, text))
    return found


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def test_no_model_facing_prose_in_the_agent_modules() -> None:
    assert MODULES and any(p.name == "generator.py" for p in MODULES)
    offenders = [
        f"{path.relative_to(SRC)}:{line}: {text!r}"
        for path in MODULES
        for line, text in prose_sent_to_model(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "move these sentences into src/sagegen/prompts/:\n" + "\n".join(offenders)


def test_the_scan_finds_a_sentence_headed_for_the_model() -> None:
    planted = '''
def nudge(messages, problem, n):
    """A docstring of many words is fine."""
    messages.append({"role": "user", "content": "You must finish now, write the pair."})
    messages.append({"role": "user", "content": f"the answer has {n} words; keep it short."})
    self.event("malformed", "no question in the reply at all")
    raise ValueError("a user-facing error message is fine")
'''
    found = prose_sent_to_model(planted)
    assert [line for line, _ in found] == [4, 5]
    assert found[0][1] == "You must finish now, write the pair."


#: The modules of the roles that own a prompt set (solver, generator, judge).
ROLE_MODULES = [SRC / "agents" / "generator.py", SRC / "agents" / "solver.py", SRC / "verdict" / "judge.py"]
#: Functions there that render without a role: the tool schema is shared with training (train/tools.py)
#: and belongs to no prompt set.
_ROLELESS = {"search_tool_spec"}


def bare_renders(source: str) -> list[int]:
    """Lines of ``render(...)`` calls outside ``_ROLELESS`` functions: a role's template rendered without
    the role's bound renderer (``cfg.prompts``), which would miss its prompt set."""
    tree = ast.parse(source)
    roleless = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef) and f.name in _ROLELESS
        for n in ast.walk(f)
    }
    return [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and _name(n.func) == "render" and id(n) not in roleless
    ]


def test_roles_render_only_through_their_bound_prompt_set() -> None:
    found = {p.name: bare_renders(p.read_text(encoding="utf-8")) for p in ROLE_MODULES}
    assert all(not lines for lines in found.values()), found


def test_the_scan_finds_a_bare_render() -> None:
    src = (
        "def f(cfg):\n    return render('j.j2', x=1)\n\ndef search_tool_spec():\n    return render('t.j2')\n"
    )
    assert bare_renders(src) == [2]
