"""Shared pieces of the SAGE-loop tests: a tiny corpus, a word-overlap retriever, a role-aware script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sagegen.config import Config
from sagegen.llm.scripted import ScriptedLLM
from sagegen.records import Doc, Hit

DOCS = [
    Doc(id="d1", title="Paris", text="Paris is the capital and largest city of France, on the river Seine."),
    Doc(id="d2", title="Seine", text="The Seine is a river in northern France that flows through Paris."),
    Doc(
        id="d3",
        title="Eiffel Tower",
        text="The Eiffel Tower in Paris was completed in 1889 by Gustave Eiffel.",
    ),
    Doc(
        id="d4",
        title="Gustave Eiffel",
        text="Gustave Eiffel was a French civil engineer born in Dijon in 1832.",
    ),
    Doc(id="d5", title="Dijon", text="Dijon is a city in eastern France known for its mustard."),
    Doc(id="d6", title="Berlin", text="Berlin is the capital of Germany, located on the Spree."),
]


class OverlapRetriever:
    """Ranks passages by shared lowercase words: deterministic, dependency-free, good enough for tests."""

    def __init__(self, docs: Sequence[Doc] = DOCS):
        self.docs = list(docs)
        self.queries: list[str] = []

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        out = []
        for q in queries:
            self.queries.append(q)
            words = set(re.findall(r"\w+", q.lower()))
            scored = sorted(
                (
                    (len(words & set(re.findall(r"\w+", d.contents.lower()))), -i, d)
                    for i, d in enumerate(self.docs)
                ),
                reverse=True,
            )
            out.append([Hit(doc=d, score=float(s)) for s, _, d in scored[:k]])
        return out


def role(messages: Sequence[dict[str, Any]]) -> str:
    """Which agent is calling: generator, reviser, solver or judge (from the prompts it was given)."""
    system = str(messages[0].get("content", "")) if messages and messages[0].get("role") == "system" else ""
    first_user = next((str(m.get("content", "")) for m in messages if m.get("role") == "user"), "")
    if "[correct_answer]" in first_user:
        return "judge"
    if "answering_steps" in system:
        return "reviser" if "Your question:" in first_user else "generator"
    return "solver"


def infos(messages: Sequence[dict[str, Any]]) -> int:
    """How many search results the agent has seen so far."""
    return sum(
        1
        for m in messages
        if m.get("role") == "user" and str(m.get("content", "")).startswith("<information>")
    )


def final(question: str, answer: str, plan: str = "1. find X 2. find Y") -> str:
    return (
        f"<think>done</think>\n<question> {question} </question>\n<answer> {answer} </answer>\n"
        f"<answering_steps> {plan}"
    )


def search(query: str) -> str:
    return f"<think>I need to look this up.</think>\n<search> {query} </search>"


def answer(text: str) -> str:
    return f"<think>I know it now.</think>\n<answer> {text} </answer>"


class RoleScript:
    """A responder dispatching on the calling role; each role gets a function of the messages."""

    def __init__(self, **handlers: Callable[[Sequence[dict[str, Any]]], str]):
        self.handlers = handlers
        self.roles: list[str] = []

    def __call__(self, messages: Sequence[dict[str, Any]]) -> str:
        r = role(messages)
        self.roles.append(r)
        return self.handlers[r](messages)

    def llm(self) -> ScriptedLLM:
        return ScriptedLLM(responder=self)


def loop_pipeline(tmp: Path, cfg: Config, script: RoleScript) -> tuple[Any, Any]:
    """A Pipeline over DOCS and the overlap retriever with one scripted LLM in every role, and its store."""
    from sagegen.ledger.store import RunStore
    from sagegen.loop.pipeline import Pipeline
    from sagegen.loop.session import Components

    store, _ = RunStore.create_or_resume(tmp / "run", cfg.model_dump(mode="json"), cfg.dump())
    llm = script.llm()
    parts = Components(docs=list(DOCS), retriever=OverlapRetriever(), generator=llm, solver=llm, judge=llm)
    return Pipeline(cfg, store, parts), store


def question_of(messages: Sequence[dict[str, Any]]) -> str:
    """The question a solver was asked."""
    m = re.search(r"Question: (.*)", str(messages[1].get("content", "")))
    return m.group(1).strip() if m else ""


def write_corpus(path: Path, docs: Sequence[Doc] = DOCS) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "title": d.title, "text": d.text}) + "\n")
    return path


def small_config(**pipeline: Any) -> Config:
    cfg = Config()
    cfg.judge.method = "em"
    cfg.pipeline.attempts = 2
    cfg.pipeline.rounds = 3
    cfg.pipeline.target = 2
    cfg.pipeline.num_seeds = 1
    cfg.pipeline.concurrency = 1
    cfg.generator.max_searches = 4
    cfg.solver.max_searches = 4
    # These loop tests script the solver's path; the retriever-only pre-check has its own tests
    # (test_precheck.py) and would otherwise answer many of them before the solver runs.
    cfg.pipeline.precheck = "off"
    for k, v in pipeline.items():
        setattr(cfg.pipeline, k, v)
    return cfg


#: ``-s`` settings of a ``sagegen generate`` on the scripted fixture over ``corpus.jsonl`` in the cwd.
SCRIPTED_RUN_SETS = (
    "-s",
    "corpus.path=corpus.jsonl",
    "-s",
    "llm.backend=scripted",
    "-s",
    "llm.model=fixture:sage",
    "-s",
    "judge.method=em",
    "-s",
    "retrieval.index_dir=idx",
    # The fixture's questions quote their answer's passage, which the pre-check flags at once.
    "-s",
    "pipeline.precheck=off",
)


#: This checkout's sources, first on a child's path (a worktree's tests run its own code, not the install's).
SRC = Path(__file__).resolve().parent.parent / "src"


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``sagegen`` child: wide lines (rich wraps at the terminal width), our sources."""
    env = {**os.environ, "COLUMNS": "2000", **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    return env


def run_cli(
    *args: str, cwd: Path, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``sagegen ARGS`` in a fresh process, as a user would run it; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "sagegen.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(env),
    )
