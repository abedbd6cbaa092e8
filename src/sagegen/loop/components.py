"""A run's parts built from its config: the corpus, one retriever and an LLM per role.

Its own module so that whatever runs pairs (this process's session, a ``--workers``/Ray worker in
sagegen.loop.scale) builds them the same way without importing the run's life (sagegen.loop.session).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from sagegen.config import Config, LLMConfig
from sagegen.errors import ConfigError
from sagegen.llm.base import LLM
from sagegen.records import Doc
from sagegen.retrieval.base import Retriever


@dataclass
class Components:
    """What a run needs besides its config and ledger: the corpus, one retriever, an LLM per role."""

    docs: list[Doc]
    retriever: Retriever
    generator: LLM
    solver: LLM
    judge: LLM | None
    #: Further solvers after ``solver`` (``solver_llms``, strongest first; sagegen.verdict.agreement).
    extra_solvers: list[LLM] = field(default_factory=list)

    @staticmethod
    def open_corpus(cfg: Config) -> tuple[list[Doc], Retriever]:
        """The seed passages and the retriever; errors (a mistyped path, no local corpus) come first."""
        from sagegen.retrieval.factory import open_corpus_and_retriever

        if cfg.solver_llms and cfg.solver_llm is not None:
            raise ConfigError("set either solver_llm or solver_llms (the list replaces it), not both")
        docs, retriever = open_corpus_and_retriever(cfg)
        if not docs:
            raise ConfigError(
                "the generator samples seed passages from a local corpus: set corpus.path (the retriever "
                f"kind {cfg.retrieval.kind!r} has none), or leave it unset for the bundled corpus"
            )
        return list(docs), retriever

    @classmethod
    def from_config(cls, cfg: Config) -> Components:
        from sagegen.llm.factory import build_llm

        docs, retriever = cls.open_corpus(cfg)
        built: dict[str, LLM] = {}

        def get(c: LLMConfig | None) -> LLM:
            c = c or cfg.llm
            key = c.model_dump_json()
            if key not in built:  # one instance per distinct config: the embedded model loads once
                built[key] = build_llm(c)
            return built[key]

        judge = get(cfg.judge_llm) if cfg.judge.method == "llm" else None
        solvers = [get(c) for c in cfg.solver_llms] or [get(cfg.solver_llm)]
        return cls(list(docs), retriever, get(cfg.llm), solvers[0], judge, solvers[1:])

    def close(self) -> None:
        seen: set[int] = set()
        for llm in (self.generator, self.solver, self.judge, *self.extra_solvers):
            if llm is not None and id(llm) not in seen:
                seen.add(id(llm))
                close = getattr(llm, "close", None)
                if callable(close):
                    with contextlib.suppress(Exception):
                        close()
