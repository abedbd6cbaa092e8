"""The ``sage`` protocol profile: each test pins one row of docs/protocol.md and can fail.

Role scripts dispatch on the prompts the profile renders (not on call order), so a profile that
stops rendering its own templates breaks them.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from sage_loop_helpers import DOCS, SCRIPTED_RUN_SETS, OverlapRetriever, run_cli, write_corpus
from sagegen.agents.generator import feedback_prompt, generate, revise
from sagegen.agents.solver import solve
from sagegen.config import Config, JudgeConfig, load_config
from sagegen.errors import ConfigError
from sagegen.ledger.store import RunStore
from sagegen.llm.scripted import ScriptedLLM, fixture_llm
from sagegen.loop.session import Components, config_warnings, run_generate
from sagegen.profiles import load_profile, profile_text
from sagegen.prompts import render
from sagegen.records import Candidate, Trajectory, Verdict
from sagegen.verdict.judge import judge_answer, parse_grader


def sage_config(*overrides: str) -> Config:
    return load_config(None, list(overrides), base=load_profile("sage"))


# ------------------------------------------------------------------ solver


def test_profile_solver_forbids_own_knowledge_shows_no_budget_and_forces_no_answer() -> None:
    cfg = sage_config().solver
    llm = ScriptedLLM(["<think>a</think><search> q1 </search>"] * 20)
    traj = asyncio.run(solve("Who built the Garabit viaduct?", llm, OverlapRetriever(), cfg))
    system = llm.calls[0]["messages"][0]["content"]
    assert "do not rely on what you already know" in system
    assert "Phrase every query as a question" in system
    assert str(cfg.max_searches) not in system and "at most" not in system
    # the default prompt does show the budget: the difference is the template, not the numbers
    default = ScriptedLLM(["<answer> x </answer>"])
    asyncio.run(solve("Who?", default, OverlapRetriever(), Config().solver))
    assert f"at most {Config().solver.max_searches} searches" in default.calls[0]["messages"][0]["content"]
    # the release's --max_turn 10 is ten model calls in all: the tenth call's search is run (the release
    # counts it) but never shown, and the attempt ends with no answer and no extra "answer now" call
    assert traj.num_searches == 10 and traj.answer is None and traj.status == "failed"
    assert len(llm.calls) == 10
    assert [s.event for s in traj.steps if s.kind == "event"][-1] == "no_forced_answer"


def test_profile_solver_goes_on_after_a_malformed_turn_with_an_empty_information_block() -> None:
    # the release: no <search> in a turn -> "<information></information>" appended, next turn; the answer
    # is the last closed <answer> of a turn and an empty one does not end the attempt
    llm = ScriptedLLM(
        [
            "<think>hmm</think> no action here",
            "<think>a</think><search> q1 </search>",
            "<answer></answer>",
            "<answer>first</answer> then <answer> Eiffel </answer>",
        ]
    )
    traj = asyncio.run(solve("Who built the Garabit viaduct?", llm, OverlapRetriever(), sage_config().solver))
    assert (traj.answer, traj.status, traj.num_searches, len(llm.calls)) == ("Eiffel", "answered", 1, 4)
    second = llm.calls[1]["messages"]
    assert second[-2:] == [
        {"role": "assistant", "content": "<think>hmm</think> no action here</search>"},
        {"role": "user", "content": "<information></information>"},
    ]
    assert [e.event for e in traj.steps if e.kind == "event"] == ["no_action", "empty_answer"]
    # the default loop still nudges, then forces, after malformed turns
    d = asyncio.run(
        solve(
            "Who?",
            ScriptedLLM(["no action", "no action", "<answer>x</answer>"]),
            OverlapRetriever(),
            Config().solver,
        )
    )
    assert [e.event for e in d.steps if e.kind == "event"][:2] == ["no_action", "no_action"]


# ------------------------------------------------------------------ whole traces in feedback


#: Passages long enough that retrieved text dominates a feedback prompt.
LONG_DOCS = [d.model_copy(update={"text": " ".join([d.text] * 20)}) for d in DOCS]


def _long_trace(n: int = 25) -> tuple[Trajectory, list[str]]:
    queries = [f"query number {i} about {DOCS[i % len(DOCS)].title}" for i in range(n)]
    script = [f"<think>step {i}</think>\n<search> {q} </search>" for i, q in enumerate(queries)]
    script.append(
        "<think>done</think>\n<question> Which engineer born in Dijon completed the tower? "
        "</question>\n<answer> Gustave Eiffel </answer>\n<answering_steps> 1. a 2. b"
    )
    cfg = sage_config().generator.model_copy(update={"max_searches": n})
    out = asyncio.run(generate(DOCS[2], 3, "entity", ScriptedLLM(script), OverlapRetriever(LONG_DOCS), cfg))
    assert out.candidate is not None and out.trajectory.num_searches == n
    return out.trajectory, queries


def _solver_trace() -> Trajectory:
    llm = ScriptedLLM(
        ["<think>x</think><search> Eiffel Tower </search>", "<answer> Gustave Eiffel </answer>"]
    )
    return asyncio.run(solve("Who?", llm, OverlapRetriever(LONG_DOCS), sage_config().solver))


CAND = Candidate(
    question="Which engineer born in Dijon completed the tower?",
    answer="Gustave Eiffel",
    answer_type="entity",
    target=3,
    seed_doc_id="d3",
)
TOO_EASY = Verdict(correct=True, difficulty=1, passed=False, avg_at_k=1.0, label="too_easy", num_attempts=4)


def release_prompt(own: Trajectory, solver: Trajectory, budget_tokens: int = 0) -> tuple[str, Any]:
    """The profile's feedback prompt (``feedback_search`` off: the release's shape) and its shortening."""
    msgs, shortened = feedback_prompt(
        DOCS[2], CAND, own, solver, TOO_EASY, sage_config().generator, budget_tokens
    )
    assert len(msgs) == 1 and msgs[0]["role"] == "user"  # one flat user message, as the release sends
    return str(msgs[0]["content"]), shortened


def test_feedback_prompts_carry_all_25_queries_of_a_25_search_trace() -> None:
    own, queries = _long_trace(25)
    solver = _solver_trace()
    cand = CAND
    release, _ = release_prompt(own, solver)
    default_msgs, shortened = feedback_prompt(DOCS[2], cand, own, solver, TOO_EASY, Config().generator)
    default_prompt = default_msgs[1]["content"]
    for q in queries:
        assert q in release
        assert q in default_prompt
    assert not shortened
    # the release's prompt shows the generator's instructions and the solver's, whole
    assert "You will call the search engine for" in release
    assert "Use a search engine to answer the question below" in release


def test_over_the_context_only_the_oldest_retrieved_text_is_shortened() -> None:
    own, queries = _long_trace(25)
    solver = _solver_trace()
    whole, _ = release_prompt(own, solver)
    budget = len(whole) // 3 // 2  # tokens: half of what the whole prompt needs
    text, shortened = release_prompt(own, solver, budget)
    assert shortened and len(text) <= budget * 3 < len(whole)
    for q in queries:
        assert q in text  # queries are never shortened
    for i in range(25):
        assert f"step {i}" in text  # nor the model's own reasoning
    own_part = text.split("# Search agent")[0]
    infos = [
        x
        for x in re.findall(r"<information>(.*?)</information>", own_part, re.DOTALL)
        if x.startswith("Doc 1(")
    ]  # not the instructions that name the tag
    assert len(infos) == 25
    omitted = [i for i, x in enumerate(infos) if "characters of retrieved text omitted" in x]
    assert omitted and omitted == list(range(len(omitted)))  # oldest first, a prefix of the turns
    assert "omitted" not in infos[-1]


def test_revise_records_that_it_shortened_the_feedback() -> None:
    own, _ = _long_trace(12)
    cand = CAND
    cfg = sage_config().generator
    llm = ScriptedLLM(
        [
            "<reason>r</reason><question> Which engineer born in Dijon finished the tower in "
            "1889? </question><answer> Gustave Eiffel </answer><search steps> s </search steps>"
        ]
    )
    out = asyncio.run(
        revise(DOCS[2], cand, own, _solver_trace(), TOO_EASY, llm, None, cfg, budget_tokens=800)
    )
    assert out.candidate is not None and out.candidate.question.endswith("in 1889?")
    assert out.trajectory.steps[0].event == "feedback_shortened"
    assert len(llm.calls) == 1 and llm.calls[0]["tools"] is None  # one call, no search tool


# ------------------------------------------------------------------ judge


def test_profile_judge_accepts_an_answer_among_extra_words_where_the_strict_grader_does_not() -> None:
    grader = fixture_llm("fixture:grader")
    lenient = asyncio.run(
        judge_answer(
            "Capital of France?", "the answer is Paris, France", ["Paris"], grader, sage_config().judge
        )
    )
    strict = asyncio.run(
        judge_answer("Capital of France?", "the answer is Paris, France", ["Paris"], grader, JudgeConfig())
    )
    assert lenient.correct and not strict.correct


def test_profile_judge_counts_an_unreadable_reply_as_incorrect() -> None:
    # the release asks once and extract_judgement() gives None, which is not "yes"; the default asks
    # again and then lets F1 decide
    reply = "I cannot decide."
    sage = ScriptedLLM([reply, "correct: yes"])
    golden = ["Gustave Eiffel company"]
    j = asyncio.run(judge_answer("Q?", "Gustave Eiffel", golden, sage, sage_config().judge))
    assert (j.correct, j.method, len(sage.calls)) == (False, "unreadable", 1)
    default = ScriptedLLM([reply, reply])
    d = asyncio.run(
        judge_answer(
            "Q?", "Gustave Eiffel", ["Gustave Eiffel company"], default, JudgeConfig(f1_threshold=0.5)
        )
    )
    assert (d.correct, d.method, len(default.calls)) == (True, "f1_fallback", 2)


async def test_profile_sends_top_p_095_on_every_openai_call() -> None:
    from helpers.fault_server import FaultServer
    from sagegen.llm.openai_backend import OpenAIBackend

    cfg = sage_config("llm.backend=openai", "llm.model=m", "llm.api_key_env=null", "llm.cache=false")
    assert cfg.llm.extra_body == {"top_p": 0.95}
    with FaultServer() as srv:
        llm = OpenAIBackend(cfg.llm.model_copy(update={"base_url": srv.url}))
        await llm.complete([{"role": "user", "content": "hi"}], max_tokens=5)
    assert srv.requests[0]["json"]["top_p"] == 0.95
    assert Config().llm.extra_body == {}  # the default sends the backend's own


def test_first_correct_line_wins_in_the_profile() -> None:
    reply = "correct: yes\nreasoning: on reflection no\ncorrect: no"
    assert parse_grader(reply, first=True).correct  # type: ignore[union-attr]
    assert not parse_grader(reply).correct  # type: ignore[union-attr]
    assert sage_config().judge.verdict_line == "first"


def test_warns_when_the_judge_is_the_solvers_own_model() -> None:
    cfg = Config()
    assert any("judge is the solver's own model" in w for w in config_warnings(cfg))
    cfg2 = load_config(None, ["judge_llm.backend=openai", "judge_llm.model=a-small-judge"])
    assert config_warnings(cfg2) == []
    # The same model on another replica is still the solver's own model.
    served = [
        "llm.backend=openai",
        "llm.model=qwen",
        "llm.base_url=http://10.0.0.1:8001/v1",
        "judge_llm.backend=openai",
        "judge_llm.model=qwen",
        "judge_llm.base_url=http://10.0.0.2:8001/v1",
    ]
    assert any("judge is the solver's own model" in w for w in config_warnings(load_config(None, served)))


# ------------------------------------------------------------------ the loop: relaxation, dedup


def _respond(gen_questions: list[str], solver_searches: int) -> Any:
    """Generator (sage prompt), one-call reviser and solver, told apart by what their prompts say."""
    seen = {"gen": 0}

    def respond(messages: Sequence[dict[str, Any]]) -> str:
        first = str(messages[0]["content"])
        if "# Data generator agent" in first:
            return (
                "<reason>one passage</reason><think>more hops</think><question> Which river crosses the "
                "city where the 1889 tower stands, revised? </question><answer> Seine </answer>"
            )
        if "<answering steps>" in first:
            q = gen_questions[min(seen["gen"], len(gen_questions) - 1)]
            seen["gen"] += 1
            return f"<think>ok</think><question> {q} </question><answer> Seine </answer><answering steps> 1"
        searched = sum(1 for m in messages if str(m.get("content", "")).startswith("<information>"))
        if searched < solver_searches:
            return f"<think>look</think><search> river Paris {searched} </search>"
        return "<think>found</think><answer> Seine </answer>"

    return respond


def _run(tmp: Path, respond: Any, *overrides: str) -> RunStore:
    cfg = sage_config("judge.method=em", "pipeline.concurrency=1", *overrides)
    llm = ScriptedLLM(responder=respond)
    parts = Components(list(DOCS), OverlapRetriever(), llm, llm, None)
    run_generate(cfg, tmp / "run", parts=parts)
    return RunStore.open(tmp / "run")


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_final_round_relaxation_keeps_a_correct_too_easy_pair_and_labels_it(tmp_path: Path) -> None:
    respond = _respond(["Which river flows through the French capital city?"], solver_searches=2)
    sets = ("pipeline.num_seeds=1", "pipeline.target=5", "pipeline.rounds=2", "pipeline.attempts=2")
    with _run(tmp_path / "a", respond, *sets) as store:
        rec = store.pair(0)
        assert rec is not None and rec.state == "too_easy" and rec.output == "dataset"
        assert [r.kind for r in rec.rounds] == ["generate", "feedback"]
    [row] = _lines(tmp_path / "a" / "run" / "dataset.jsonl")
    assert row["label"] == "too_easy" and row["acceptance"] == "relaxed" and row["round"] == 2
    assert row["question"].endswith("revised?")
    with _run(tmp_path / "b", respond, *sets, "pipeline.final_round_relaxed=false") as store:
        assert store.pair(0).output == "too_easy"  # type: ignore[union-attr]
    assert _lines(tmp_path / "b" / "run" / "dataset.jsonl") == []


def test_dedup_is_exact_in_the_profile_normalised_by_default(tmp_path: Path) -> None:
    qs = ["Which river flows through the French capital?", "which river flows through the French capital"]
    sets = ("pipeline.num_seeds=2", "pipeline.target=2", "pipeline.rounds=1", "pipeline.attempts=1")
    _run(tmp_path / "exact", _respond(qs, solver_searches=3), *sets).close()
    assert len(_lines(tmp_path / "exact" / "run" / "dataset.jsonl")) == 2
    _run(tmp_path / "norm", _respond(qs, solver_searches=3), *sets, "pipeline.dedup=normalized").close()
    assert len(_lines(tmp_path / "norm" / "run" / "dataset.jsonl")) == 1


# ------------------------------------------------------------------ the command line


def test_profile_yaml_is_a_valid_starting_config(tmp_path: Path) -> None:
    path = tmp_path / "my.yaml"
    path.write_text(profile_text("sage"))
    cfg = load_config(path)
    assert cfg == sage_config()
    assert yaml.safe_load(profile_text("sage"))["pipeline"]["on_no_pair"] == "drop"


def test_generate_protocol_sage_end_to_end_on_the_scripted_fixture(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus.jsonl")
    sets = [
        s.replace("fixture:sage", "fixture:sage-release").replace("judge.method=em", "judge.method=llm")
        for s in SCRIPTED_RUN_SETS
    ]
    p = run_cli(
        "generate",
        "--profile",
        "sage",
        "-o",
        "run",
        "-n",
        "3",
        "--k",
        "2",
        "--no-progress",
        *sets,
        "-s",
        "generator.max_searches=2",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["pipeline"]["feedback_trace"] == "answered" and saved["solver"]["prompt_set"] == "sage"
    with RunStore.open(tmp_path / "run") as store:
        gens = dict(store.trajectories("generator"))
        assert gens and all("Initial document:" in str(t.messages[1]["content"]) for t in gens.values())
        revs = dict(store.trajectories("reviser"))
        for t in revs.values():  # one user message (the release's feedback prompt), one reply
            assert [m["role"] for m in t.messages] == ["user", "assistant"]
            assert "# Data generator agent" in str(t.messages[0]["content"])
        assert sum(1 for _ in store.pairs()) == 3
    assert "judge is the solver's own model" in p.stdout


def test_a_seed_whose_generation_fails_is_dropped_not_resampled(tmp_path: Path) -> None:
    def respond(messages: Sequence[dict[str, Any]]) -> str:
        return "I cannot think of a question."  # no tags, no question: the generation fails

    sets = ("pipeline.num_seeds=1", "pipeline.rounds=3", "pipeline.attempts=1")
    with _run(tmp_path / "sage", respond, *sets) as store:
        rec = store.pair(0)
        assert rec is not None and rec.state == "failed" and [r.round for r in rec.rounds] == [1]
    with _run(tmp_path / "default", respond, *sets, "pipeline.on_no_pair=resample") as store:
        assert len(store.pair(0).rounds) == 3  # type: ignore[union-attr]  # the default resamples


def test_profile_keeps_a_pair_the_default_checks_would_refuse() -> None:
    # the release keeps any generated pair with a question (initial_question_gen.py): a yes/no question
    # whose answer is in it costs the seed under the default checks (no retry left), not in the profile
    reply = (
        "<think>done</think>\n<question> Is Gustave Eiffel the engineer of the Garabit viaduct? "
        "</question>\n<answer> Gustave Eiffel </answer>\n<answering_steps> 1. a"
    )
    sage = sage_config().generator
    out = asyncio.run(generate(DOCS[2], 3, "entity", ScriptedLLM([reply]), OverlapRetriever(), sage))
    assert out.candidate is not None and out.candidate.answer == "Gustave Eiffel"
    strict = sage.model_copy(update={"pair_checks": "all"})
    refused = asyncio.run(
        generate(DOCS[2], 3, "entity", ScriptedLLM([reply] * 3), OverlapRetriever(), strict)
    )
    assert refused.candidate is None


def test_default_reviser_nests_the_previous_feedback_prompt_only_when_asked() -> None:
    from sagegen.agents.generator import render_trace

    previous = Trajectory(
        agent="reviser",
        question="q",
        messages=(
            {"role": "system", "content": "rules"},
            {"role": "user", "content": "THE ROUND-2 FEEDBACK PROMPT"},
            {"role": "assistant", "content": "<think>t</think><search> a query </search>"},
        ),
    )
    nested = render_trace(previous, Config().generator.model_copy(update={"nest_previous_prompt": True}))
    plain = render_trace(previous, Config().generator)
    assert "THE ROUND-2 FEEDBACK PROMPT" in nested and "a query" in nested
    assert "THE ROUND-2 FEEDBACK PROMPT" not in plain and "a query" in plain


def test_a_searching_reviser_of_the_sage_profile_gets_the_sage_generator_rules() -> None:
    # prompt_set=sage with feedback_search=true: the reviser's system prompt is the profile's own (it was
    # the default one when each render call had to name the set by hand)
    own, _ = _long_trace(2)
    cfg = sage_config("generator.feedback_search=true").generator
    msgs, _ = feedback_prompt(DOCS[2], CAND, own, _solver_trace(), TOO_EASY, cfg)
    assert msgs[0]["role"] == "system"
    sage_rules = render("generator_system.j2", "sage", target=3, answer_type="entity", max_searches=20)
    default_rules = render("generator_system.j2", target=3, answer_type="entity", max_searches=20)
    assert sage_rules != default_rules and msgs[0]["content"] == sage_rules


def test_the_release_feedback_prompt_needs_the_sage_templates() -> None:
    with pytest.raises(ConfigError, match=r"generator: .*feedback_prompt: release needs prompt_set: sage"):
        load_config(None, ["generator.feedback_prompt=release"])


def test_a_reviser_without_search_can_keep_sagegens_own_feedback_prompt() -> None:
    # feedback_search only says whether the reviser searches; the prompt's shape is feedback_prompt's
    own, _ = _long_trace(2)
    cfg = Config().generator.model_copy(update={"feedback_search": False})
    msgs, _ = feedback_prompt(DOCS[2], CAND, own, _solver_trace(), TOO_EASY, cfg)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == render(
        "generator_system.j2", target=3, answer_type="entity", max_searches=20
    )
