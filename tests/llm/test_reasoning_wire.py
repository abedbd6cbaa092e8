"""sagegen against the wire behaviour of the reasoning backends users run (helpers/reasoning_server.py).

Every dialect wraps the same scripted mind; the thinking it adds restates sagegen's markers with wrong
drafts. So each test compares a thinking dialect with the ``plain`` control on the same inputs: the
answers, queries, pairs and verdicts must be the control's, taken from the answer text only, and the
drafts must never reach a result or go back to the server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from helpers.reasoning_server import DIALECTS, STOPS_IN_THOUGHT, ReasoningServer
from sagegen.agents.solver import solve
from sagegen.config import JudgeConfig, LLMConfig, SolverConfig
from sagegen.llm.accounting import AccountingLLM
from sagegen.llm.openai_backend import OpenAIBackend
from sagegen.llm.reasoning import split_reasoning
from sagegen.llm.scripted import grader_fixture, sage_fixture
from sagegen.records import Doc, Hit, Trajectory
from sagegen.verdict.judge import judge_answer

THINKING = [d for d in DIALECTS if d != "plain"]
HIDDEN = {"openai", "gemini"}  # thinking never shown, only counted

DOCS = [
    Doc(id=f"d{i}", title=t, text=x)
    for i, (t, x) in enumerate(
        [
            ("Citibank", "Citibank was founded in 1812 as the City Bank of New York by Samuel Osgood."),
            ("James Madison", "James Madison was president of the United States from 1809 to 1817."),
            ("Paris", "Paris is the capital and largest city of France, on the river Seine."),
            ("Berlin", "Berlin is the capital of Germany and its largest city by population."),
            ("Samuel Osgood", "Samuel Osgood was an American merchant and the first Postmaster General."),
            ("Seine", "The Seine is a river in northern France that flows through Paris to the Channel."),
            ("Osaka", "Osaka is a designated city in the Kansai region of Honshu in Japan."),
            ("Kansai", "The Kansai region lies in the southern-central part of Honshu, Japan's main island."),
        ]
    )
]
QUESTIONS = [
    f"Which article mentions {w}?"
    for w in (
        "Samuel Osgood",
        "president 1809",
        "river Seine",
        "capital of Germany",
        "first Postmaster General",
        "northern France",
        "Kansai region",
        "Honshu main island",
        "City Bank of New York",
        "largest city",
        "merchant",
        "designated city",
    )
]


class WordRetriever:
    """Word-overlap ranking over DOCS (deterministic; the retriever is not what is under test)."""

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        out = []
        for q in queries:
            words = set(q.lower().replace("?", "").split())
            scored = sorted(
                ((len(words & set(f"{d.title} {d.text}".lower().split())), i, d) for i, d in enumerate(DOCS)),
                key=lambda t: (-t[0], t[1]),
            )
            out.append([Hit(doc=d, score=float(s)) for s, _, d in scored[:k]])
        return out


def backend(url: str, **kw: Any) -> OpenAIBackend:
    params: dict[str, Any] = {
        "backend": "openai",
        "model": "m",
        "base_url": url,
        "api_key_env": None,
        "timeout": 10.0,
        "max_retries": 1,
        "retry_backoff": 0.01,
        "cache": False,
    }
    params.update(kw)
    return OpenAIBackend(LLMConfig(**params))


def summary(t: Trajectory) -> tuple[Any, ...]:
    """What a solver attempt decides: its answer, status and the queries it searched."""
    return t.answer, t.status, tuple(s.query for s in t.steps if s.kind == "search")


def sent_text(server: ReasoningServer) -> str:
    """Everything the client sent back to the server, as one string."""
    return json.dumps([r["messages"] for r in server.requests])


async def solve_all(url: str, protocol: str, **kw: Any) -> tuple[list[Trajectory], OpenAIBackend]:
    llm = backend(url, **kw)
    cfg = SolverConfig(protocol=protocol, max_searches=4, max_turn_tokens=400, temperature=0.7)
    out = [await solve(q, llm, WordRetriever(), cfg, seed=i) for i, q in enumerate(QUESTIONS)]
    await llm.aclose()
    return out, llm


# ------------------------------------------------------------------------------ the split itself


@pytest.mark.parametrize(
    ("raw", "reasoning", "answer"),
    [
        ("no thinking <answer> 5 </answer>", "", "no thinking <answer> 5 </answer>"),
        (
            "<think>draft <search> x </search></think>\n<search> real </search>",
            "draft <search> x </search>",
            "<search> real </search>",
        ),
        (
            "drafted in the prompt's block\n</think>\n\n<answer> 7 </answer>",
            "drafted in the prompt's block",
            "<answer> 7 </answer>",
        ),
        ("<think>cut inside the thought <answer> 3", "cut inside the thought <answer> 3", ""),
        ("<THINK>a</THINK> b <think>c</think> d", "a\n\nc", "b  d"),
    ],
)
def test_split_reasoning(raw: str, reasoning: str, answer: str) -> None:
    assert split_reasoning(raw) == (reasoning, answer)


# ------------------------------------------------------------------------------ solver, both protocols


@pytest.fixture(scope="module")
def control() -> dict[str, list[tuple[Any, ...]]]:
    import asyncio

    async def run() -> dict[str, list[tuple[Any, ...]]]:
        out = {}
        for protocol in ("tags", "tools"):
            with ReasoningServer("plain", sage_fixture) as srv:
                trajs, _ = await solve_all(srv.url, protocol)
            out[protocol] = [summary(t) for t in trajs]
        return out

    return asyncio.run(run())


@pytest.mark.parametrize("protocol", ["tags", "tools"])
@pytest.mark.parametrize("dialect", THINKING)
async def test_solver_reads_the_answer_only(
    dialect: str, protocol: str, control: dict[str, list[tuple[Any, ...]]]
) -> None:
    # On loopback no host names the provider: set it as api.deepseek.com would (llm.provider=auto).
    kw = {"provider": "deepseek"} if dialect == "deepseek" else {}
    with ReasoningServer(dialect, sage_fixture) as srv:
        trajs, llm = await solve_all(srv.url, protocol, **kw)
    assert [summary(t) for t in trajs] == control[protocol]
    # The control's own mix: answered questions, "unknown" answers, more than one search somewhere.
    assert {t.status for t in trajs} == {"answered"} and any(t.num_searches > 1 for t in trajs)
    for t in trajs:
        # The history holds no thought, but the reasoning_content DeepSeek requires back on tool turns.
        history = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in t.messages]
        assert "drafted" not in json.dumps([t.answer, [s.query for s in t.steps], history])
        models = [s for s in t.steps if s.kind == "model"]
        if dialect not in HIDDEN:  # the thinking is kept in the trajectory, beside the answer text
            assert all("drafted" in s.reasoning for s in models)
    # No thought went back to the server, except the reasoning DeepSeek requires on tool-call turns.
    if not (dialect == "deepseek" and protocol == "tools"):
        assert "drafted" not in sent_text(srv)
    else:
        assert any("reasoning_content" in m for r in srv.requests for m in r["messages"])
    if dialect in STOPS_IN_THOUGHT:  # stops never went on the wire to a server that matches them in thoughts
        # ... except, without a parser, the one request whose stop fired in a <think> (then sent again).
        with_stops = [r for r in srv.requests if "stop" in r]
        assert len(with_stops) == (1 if dialect == "raw" and protocol == "tags" else 0)
        # A closed <think> block proves nothing (Search-R1's protocol writes one); tools send no stops.
        assert llm.thinks is not (dialect == "raw" and protocol == "tools")
    if dialect == "openai":  # learned one refusal at a time, once each, then never refused again
        assert srv.refused == ["max_tokens", "temperature"]
        assert any("max_completion_tokens" in n for n in llm.notes)
    else:
        assert srv.refused == []


async def test_deepseek_behind_another_host_learns_to_send_reasoning_back(
    control: dict[str, list[tuple[Any, ...]]],
) -> None:
    """A proxy in front of DeepSeek (provider ``server``): the first tool turn is refused for want of
    ``reasoning_content``; from then on it goes back, and the later attempts match the control."""
    with ReasoningServer("deepseek", sage_fixture) as srv:
        trajs, llm = await solve_all(srv.url, "tools")
    # Refused only within the first attempt (its turn, then the solver's one retry of that turn).
    assert srv.refused == ["reasoning_content", "reasoning_content"]
    assert trajs[0].status != "answered"
    assert any("reasoning_content back" in n for n in llm.notes)
    assert [summary(t) for t in trajs[1:]] == control["tools"][1:]


async def test_plain_model_gets_stops_on_the_wire_after_its_first_reply() -> None:
    with ReasoningServer("plain", sage_fixture) as srv:
        trajs, llm = await solve_all(srv.url, "tags")
    assert llm.thinks is False
    assert "stop" not in srv.requests[0] and all("stop" in r for r in srv.requests[1:])
    assert all(t.status == "answered" for t in trajs)


async def test_a_stop_fired_inside_a_thought_is_sent_again_without_stops(
    control: dict[str, list[tuple[Any, ...]]],
) -> None:
    """A hybrid model answered its first call without thinking, so stops went on the wire; then it thought
    and the server matched ``</search>`` inside the thought (content null): the call is resent without
    stops, once, and the result is the control's."""
    with ReasoningServer("vllm", sage_fixture) as srv:
        llm = backend(srv.url)
        llm.thinks = False  # as after a first reply without thinking
        cfg = SolverConfig(max_searches=4, max_turn_tokens=400, temperature=0.7)
        traj = await solve(QUESTIONS[0], llm, WordRetriever(), cfg, seed=0)
        await llm.aclose()
    assert summary(traj) == control["tags"][0]
    assert "stop" in srv.requests[0] and "stop" not in srv.requests[1]
    assert llm.thinks is True and any("inside the model's thinking" in n for n in llm.notes)


async def test_openai_preset_sends_only_what_reasoning_models_take() -> None:
    with ReasoningServer("openai", sage_fixture) as srv:
        trajs, llm = await solve_all(srv.url, "tags", provider="openai", model="gpt-5-mini")
    assert srv.refused == [] and llm.notes == []
    first = srv.requests[0]
    assert "max_completion_tokens" in first and "temperature" not in first and "stop" not in first
    assert all(t.status == "answered" for t in trajs)


async def test_gemini_without_thought_signatures_is_refused() -> None:
    """The fixture's rule has teeth: a tool turn sent back without its signature is a 400."""
    from sagegen.errors import LLMError

    with ReasoningServer("gemini", sage_fixture) as srv:
        llm = backend(srv.url)
        msgs = [
            {"role": "user", "content": "Question: q"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "search", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "<information></information>"},
        ]
        with pytest.raises(LLMError, match="thought_signature"):
            await llm.complete(msgs, max_tokens=200)
        await llm.aclose()


# ------------------------------------------------------------------------------ judge


GRADES = [
    (f"Q{i}?", resp, [gold])
    for i, (resp, gold) in enumerate(
        [
            ("Samuel Osgood, a merchant", "Samuel Osgood"),
            ("1812", "1812"),
            ("Paris", "Berlin"),
            ("the Seine river", "Seine"),
            ("Osaka", "Kansai"),
            ("James Madison", "James Madison"),
            ("1817", "1809"),
            ("Honshu", "Honshu island"),
            ("Germany's capital Berlin", "Berlin"),
            ("unknown", "Citibank"),
        ]
        * 2
    )
]


@pytest.mark.parametrize("verdict_line", ["last", "first"])
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_judge_verdicts_come_from_the_answer(dialect: str, verdict_line: str) -> None:
    cfg = JudgeConfig(method="llm", em_shortcut=False, verdict_line=verdict_line)  # type: ignore[arg-type]
    with ReasoningServer(dialect, grader_fixture) as srv:
        llm = backend(srv.url)
        got = [await judge_answer(q, r, g, llm, cfg) for q, r, g in GRADES]
        await llm.aclose()
    expected = [
        grader_fixture([{"role": "user", "content": f"[response]: {r}\n[correct_answer]: {g[0]}"}])
        for _, r, g in GRADES
    ]
    assert [j.correct for j in got] == ["correct: yes" in e for e in expected]
    assert {j.method for j in got} == {"llm"}
    assert sum(j.correct for j in got) not in (0, len(got))  # the set holds both verdicts


@pytest.mark.parametrize("dialect", ["vllm", "deepseek", "openai", "lone"])
async def test_judge_empty_at_its_cap_is_asked_again_with_room(dialect: str) -> None:
    """A thinking judge whose cap ends inside its thought: the empty reply is counted as cut and empty,
    and the question asked again with twice the cap, which leaves room for the verdict."""
    cfg = JudgeConfig(method="llm", em_shortcut=False, max_tokens=50)
    with ReasoningServer(dialect, grader_fixture, think_words=60) as srv:
        inner = backend(srv.url)
        if dialect == "lone":
            # With no marker at all a thought cut at the cap looks like an answer; a reply before it
            # showed the template's lone </think>, so a later reply without one is known unfinished.
            await judge_answer("Q0?", "Paris", ["Paris"], inner, cfg.model_copy(update={"max_tokens": 200}))
        llm = AccountingLLM(inner, "judge")
        j = await judge_answer("Q?", "Paris", ["Paris"], llm, cfg)
        await inner.aclose()
    assert j.method == "llm" and j.correct
    assert llm.reply_counts() == {
        "calls": 2,
        "cut": 1,
        "empty": 1,
        "thinking": 2,
        "reasoning_tokens": 0 if dialect in ("vllm", "lone") else 110,
    }
    caps = [r.get("max_tokens", r.get("max_completion_tokens")) for r in srv.requests if "messages" in r]
    assert caps[-2:] == [50, 100]


# ------------------------------------------------------------------------------ provider presets


@pytest.mark.parametrize(
    ("url", "model", "name", "token", "sampling", "stops"),
    [
        ("https://api.openai.com/v1", "gpt-5-mini", "openai", "max_completion_tokens", False, False),
        ("https://api.openai.com/v1", "o4-mini", "openai", "max_completion_tokens", False, False),
        ("https://api.openai.com/v1", "gpt-4o-mini", "openai", "max_completion_tokens", True, None),
        ("https://api.openai.com/v1", "gpt-5-chat-latest", "openai", "max_completion_tokens", True, None),
        ("https://api.deepseek.com", "deepseek-reasoner", "deepseek", "max_tokens", True, None),
        (
            "https://generativelanguage.googleapis.com/v1beta/openai/",
            "gemini-2.5-flash",
            "gemini",
            "max_tokens",
            True,
            None,
        ),
        ("http://127.0.0.1:11434/v1", "qwen3:8b", "ollama", "max_tokens", True, None),
        ("http://127.0.0.1:8001/v1", "Qwen/Qwen3-8B", "server", "max_tokens", True, None),
    ],
)
def test_provider_presets_from_the_host(
    url: str, model: str, name: str, token: str, sampling: bool, stops: bool | None
) -> None:
    from sagegen.llm.providers import detect

    p = detect("auto", url, model)
    assert (p.name, p.token_param, p.sampling, p.wire_stops) == (name, token, sampling, stops)
    assert p.return_reasoning is (name == "deepseek")


def test_readme_gpt5_request_carries_only_what_it_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OpenAI command of docs/models.md (gpt-5-mini, reasoning_effort=low): the request it would send."""
    from sagegen.llm.base import CallOptions

    monkeypatch.setenv("SAGEGEN_TEST_KEY", "sk-test")
    llm = OpenAIBackend(
        LLMConfig(
            backend="openai", model="gpt-5-mini", reasoning_effort="low", api_key_env="SAGEGEN_TEST_KEY"
        )
    )
    body = llm._params(
        [{"role": "user", "content": "q"}],
        CallOptions(max_tokens=100, temperature=0.7, stop=("</answer>",), seed=3),
        llm.wire_stops(),
    )
    assert body == {
        "model": "gpt-5-mini",
        "messages": [{"role": "user", "content": "q"}],
        "max_completion_tokens": 100,
        "seed": 3,
        "reasoning_effort": "low",
    }
    assert llm.wire_stops() is False
