"""End to end with the real embedded model (SmolLM2-135M via llama.cpp) over the bundled corpus (BM25).

Assertions are on structure, never on the model being right: a 135M model rarely follows the
Search-R1 protocol, so the trajectory may end answered, forced or failed, but it must end, with
every step recorded and accounted for.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sagegen.config import Config

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("llama_cpp")
    from sagegen.llm.factory import build_llm
    from sagegen.llm.llamacpp import default_gguf
    from sagegen.retrieval.factory import build_retriever

    try:
        default_gguf()
    except Exception as e:  # the model package is an optional install
        pytest.skip(str(e))
    idx = tmp_path_factory.mktemp("idx")
    cfg = Config.model_validate(
        {
            "corpus": {"limit": 2000},  # the bundled corpus, cut so the BM25 build takes a second
            "retrieval": {"kind": "bm25", "index_dir": str(idx)},
            # No call cache: the point is to run the model.
            "llm": {"backend": "llamacpp", "cache": False, "n_ctx": 4096},
            "solver": {"max_searches": 2, "max_turn_tokens": 64, "passage_chars": 300},
            "judge": {"max_tokens": 64},
        }
    )
    return cfg, build_llm(cfg.llm), build_retriever(cfg)


def _check_structure(traj, max_searches: int, question: str) -> None:
    assert traj.agent == "solver" and traj.question == question
    assert (traj.answer is None) == (traj.status == "failed")
    if traj.status == "answered":  # the answer is the one the model wrote in its last turn
        last_model_turn = [s for s in traj.steps if s.kind == "model"][-1].text
        assert traj.answer.strip() and traj.answer.strip() in last_model_turn
    assert traj.num_searches <= max_searches
    kinds = {s.kind for s in traj.steps}
    assert "model" in kinds
    models = [s for s in traj.steps if s.kind == "model"]
    assert all(s.prompt_tokens > 0 and s.seconds > 0 for s in models)
    assert traj.completion_tokens > 0
    for s in traj.steps:
        if s.kind == "search":
            assert s.query and 1 <= len(s.hit_ids) <= 3
        if s.kind == "event":
            assert s.event in {
                "no_action",
                "empty_search",
                "empty_answer",
                "truncated",
                "llm_error",
                "bad_tool_call",
                "search_budget_exhausted",
                "forced_answer",
                "no_answer",
            }
    if traj.status != "answered":
        assert any(s.event == "forced_answer" for s in traj.steps)
    roles = [m["role"] for m in traj.messages]
    assert roles[:2] == ["system", "user"] and len(roles) >= 3


@pytest.mark.ci
async def test_real_model_solves_end_to_end(stack) -> None:
    from sagegen.agents.solver import solve
    from sagegen.verdict.judge import exact_match, f1_score, judge_answer

    cfg, llm, retriever = stack
    question = "What is the capital city of France?"
    traj = await solve(question, llm, retriever, cfg.solver, seed=0)
    _check_structure(traj, cfg.solver.max_searches, question)
    # The judge runs on whatever came out, and its marks follow from that answer.
    j = await judge_answer(question, traj.answer, ["Paris"], llm, cfg.judge)
    if traj.answer is None:
        assert j.method == "none" and not j.correct
    else:
        assert (j.em, j.f1) == (exact_match(traj.answer, ["Paris"]), f1_score(traj.answer, ["Paris"]))
        # judge.method=llm with the exact-match shortcut: "em" decides exactly when em == 1.
        assert j.method == ("em" if j.em == 1.0 else "llm") or j.method == "f1_fallback"
    # A wrong answer goes to the real model (no exact-match shortcut); only its own verdict may pass it.
    wrong = await judge_answer(question, "Berlin", ["Paris"], llm, cfg.judge)
    assert wrong.em == 0.0 and wrong.method in ("llm", "f1_fallback")
    assert wrong.method == "llm" or not wrong.correct


async def test_real_model_search_turn_hits_bundled_corpus(stack) -> None:
    """Force the search path: the first turn is scripted, the rest is the real model."""
    from sagegen.agents.solver import solve
    from sagegen.llm.scripted import ScriptedLLM

    cfg, llm, retriever = stack
    first = ScriptedLLM(["<think>I should look it up.</think><search> Eiffel Tower Paris </search>"])

    class Then:
        name = "mixed"

        async def complete(self, messages, **kw):
            return await (first if first.queue else llm).complete(messages, **kw)

    traj = await solve("In which city is the Eiffel Tower?", Then(), retriever, cfg.solver, seed=1)
    _check_structure(traj, cfg.solver.max_searches, "In which city is the Eiffel Tower?")
    assert traj.num_searches >= 1 and traj.steps[1].kind == "search"
    assert "<information>Doc 1(Title: " in traj.messages[3]["content"]


async def test_real_model_tools_protocol(stack) -> None:
    from sagegen.agents.solver import solve

    cfg, llm, retriever = stack
    scfg = cfg.solver.model_copy(update={"protocol": "tools"})
    traj = await solve("Who painted the Mona Lisa?", llm, retriever, scfg, seed=2)
    _check_structure(traj, cfg.solver.max_searches, "Who painted the Mona Lisa?")


def test_bundled_index_is_local(stack) -> None:
    cfg, _, _ = stack
    assert any(Path(cfg.retrieval.index_dir).iterdir())
