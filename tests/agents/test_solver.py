"""The search agent's control flow with a scripted model: every path of the loop, both protocols."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Sequence

import pytest

from sagegen.agents import tags
from sagegen.agents.solver import solve
from sagegen.config import SolverConfig
from sagegen.errors import LLMError
from sagegen.llm.scripted import ScriptedLLM
from sagegen.records import Completion, Doc, Hit, Trajectory

DOCS = [
    Doc(id="d1", title="Citibank", text="Citibank was founded in 1812 as the City Bank of New York."),
    Doc(
        id="d2",
        title="James Madison",
        text="James Madison was president of the United States from 1809 to 1817.",
    ),
    Doc(id="d3", title="Paris", text="Paris is the capital of France."),
    Doc(id="d4", title="Berlin", text="Berlin is the capital of Germany."),
]


class TinyRetriever:
    """Word-overlap ranking over DOCS; records queries and the thread it ran on."""

    def __init__(self, docs: Sequence[Doc] = DOCS):
        self.docs = list(docs)
        self.queries: list[str] = []
        self.threads: list[str] = []

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        self.threads.append(threading.current_thread().name)
        out = []
        for q in queries:
            self.queries.append(q)
            words = set(q.lower().split())
            scored = [
                (len(words & set((d.title + " " + d.text).lower().split())), i, d)
                for i, d in enumerate(self.docs)
            ]
            scored.sort(key=lambda t: (-t[0], t[1]))
            out.append([Hit(doc=d, score=float(s)) for s, _, d in scored[:k]])
        return out


def cfg(**kw: object) -> SolverConfig:
    return SolverConfig(**kw)  # type: ignore[arg-type]


def events(traj: Trajectory) -> list[str]:
    return [s.event for s in traj.steps if s.kind == "event"]


async def test_well_formed_multi_search() -> None:
    llm = ScriptedLLM(
        [
            "<think>When was Citibank founded?</think>\n<search> Citibank founded </search>",
            "<think>1812. Who was president in 1812?</think><search>president 1812 United States</search>",
            "<think>Madison.</think>\n<answer> James Madison </answer>",
        ]
    )
    r = TinyRetriever()
    traj = await solve("Who was president when Citibank was founded?", llm, r, cfg(topk=2), seed=7)
    assert traj.status == "answered" and traj.answer == "James Madison"
    assert traj.agent == "solver" and traj.num_searches == 2
    searches = [s for s in traj.steps if s.kind == "search"]
    assert [s.query for s in searches] == ["Citibank founded", "president 1812 United States"]
    assert searches[0].hit_ids[0] == "d1" and len(searches[0].hit_ids) == 2
    assert r.queries == ["Citibank founded", "president 1812 United States"]
    # Retrieval ran off the event loop thread (asyncio.to_thread).
    assert all(t != threading.main_thread().name for t in r.threads)
    # Every call: stop sequences, the per-attempt seed, the turn budget.
    assert all(c["stop"] == ["</search>", "</answer>"] and c["seed"] == 7 for c in llm.calls)
    # The transcript: system, user, then assistant/user alternating, closing tags restored.
    roles = [m["role"] for m in traj.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert traj.messages[2]["content"].endswith("<search> Citibank founded </search>")
    info = traj.messages[3]["content"]
    assert info.startswith("<information>Doc 1(Title: Citibank) Citibank was founded in 1812")
    assert "\nDoc 2(Title: " in info and info.endswith("</information>")
    assert traj.messages[-1]["content"].endswith("<answer> James Madison </answer>")
    assert "Question: Who was president" in traj.messages[1]["content"]
    assert "<search>" in traj.messages[0]["content"]  # Search-R1 instruction in the system prompt
    # Accounting: every model step has tokens and a duration.
    models = [s for s in traj.steps if s.kind == "model"]
    assert len(models) == 3 and all(s.completion_tokens > 0 and s.seconds >= 0 for s in models)
    assert traj.prompt_tokens > 0 and traj.retrieved_ids[:1] == ("d1",)
    assert events(traj) == []
    # The model sees the information of the first search in its second call.
    assert "Citibank was founded in 1812" in llm.calls[1]["messages"][-1]["content"]


async def test_backend_ignoring_stop_keeps_first_action_only() -> None:
    # A backend that runs past the stop sequence and invents its own <information>.
    text = "<think>x</think><search> Paris </search><information>made up</information><answer> Rome </answer>"
    llm = ScriptedLLM([Completion(text=text, finish_reason="stop"), "<answer>Paris</answer>"])
    traj = await solve("capital of France?", llm, TinyRetriever(), cfg())
    assert traj.answer == "Paris" and traj.num_searches == 1
    assert "made up" not in traj.messages[2]["content"]


async def test_no_tags_gets_one_nudge_then_answers() -> None:
    llm = ScriptedLLM(["I think the answer is Paris.", "<answer> Paris </answer>"])
    traj = await solve("capital of France?", llm, TinyRetriever(), cfg())
    assert traj.status == "answered" and traj.answer == "Paris"
    assert events(traj) == ["no_action"]
    nudge = llm.calls[1]["messages"][-1]
    assert nudge["role"] == "user" and "neither a search nor an answer" in nudge["content"]


async def test_two_malformed_turns_force_the_answer() -> None:
    llm = ScriptedLLM(["blah", "still blah", "<answer> Berlin"])
    traj = await solve("capital of Germany?", llm, TinyRetriever(), cfg())
    assert traj.status == "forced" and traj.answer == "Berlin"
    assert events(traj) == ["no_action", "no_action", "forced_answer"]
    force = llm.calls[2]
    assert force["stop"] == ["</answer>"]
    assert "only the answer" in force["messages"][-1]["content"]


async def test_forced_answer_that_is_still_malformed_fails() -> None:
    llm = ScriptedLLM(["blah", "blah", "no idea"])
    traj = await solve("q?", llm, TinyRetriever(), cfg())
    assert traj.status == "failed" and traj.answer is None
    assert events(traj) == ["no_action", "no_action", "forced_answer", "no_answer"]


async def test_empty_search_is_nudged() -> None:
    llm = ScriptedLLM(
        ["<think>hmm</think><search>   </search>", "<search>Paris</search>", "<answer>Paris</answer>"]
    )
    r = TinyRetriever()
    traj = await solve("capital of France?", llm, r, cfg())
    assert traj.status == "answered" and r.queries == ["Paris"]
    assert events(traj) == ["empty_search"]
    assert "was empty" in llm.calls[1]["messages"][-1]["content"]


async def test_empty_answer_is_nudged() -> None:
    llm = ScriptedLLM(["<answer> </answer>", "<answer>Paris</answer>"])
    traj = await solve("capital of France?", llm, TinyRetriever(), cfg())
    assert traj.answer == "Paris" and events(traj) == ["empty_answer"]


async def test_unclosed_tag_closed_by_stop_is_accepted() -> None:
    # The stop sequence removed </search>; a backend that returns it verbatim is fine too.
    llm = ScriptedLLM(
        [
            Completion(text="<think>x</think>\n<SEARCH> paris", finish_reason="stop"),
            Completion(text="< Answer >Paris</answer>", finish_reason="stop"),
        ]
    )
    traj = await solve("capital of France?", llm, TinyRetriever(), cfg())
    assert traj.status == "answered" and traj.answer == "Paris" and traj.num_searches == 1
    assert traj.messages[2]["content"].endswith("<SEARCH> paris</search>")


async def test_overlong_output_is_an_event() -> None:
    long = Completion(
        text="<think>" + "very long reasoning " * 50 + "<search> par",
        finish_reason="length",
        completion_tokens=512,
    )
    llm = ScriptedLLM([long, "<answer>Paris</answer>"])
    r = TinyRetriever()
    traj = await solve("capital of France?", llm, r, cfg())
    assert traj.answer == "Paris" and r.queries == []  # a cut-off query is not run
    assert events(traj) == ["truncated"]
    assert "cut off" in llm.calls[1]["messages"][-1]["content"]
    assert traj.steps[0].completion_tokens == 512


async def test_unclosed_answer_cut_by_length_is_not_an_answer() -> None:
    llm = ScriptedLLM(
        [
            Completion(text="<answer> The capital is a long story and", finish_reason="length"),
            Completion(text="<answer> x and", finish_reason="length"),
            Completion(text="<answer> Paris", finish_reason="stop"),
        ]
    )
    traj = await solve("capital of France?", llm, TinyRetriever(), cfg())
    assert traj.status == "forced" and traj.answer == "Paris"
    assert events(traj) == ["truncated", "truncated", "forced_answer"]


async def test_search_budget_exhaustion_forces_answer() -> None:
    llm = ScriptedLLM(
        responder=lambda msgs: (
            "<answer> Berlin </answer>"
            if "used all of your searches" in msgs[-1]["content"]
            else "<think>more</think><search> capital </search>"
        )
    )
    traj = await solve("capital of Germany?", llm, TinyRetriever(), cfg(max_searches=3))
    assert traj.num_searches == 3
    assert traj.status == "forced" and traj.answer == "Berlin"
    assert events(traj) == ["search_budget_exhausted", "forced_answer"]
    assert len(llm.calls) == 5  # 3 searches, the refused 4th, the forced answer


async def test_answer_missing_at_budget_end_fails() -> None:
    llm = ScriptedLLM(responder=lambda msgs: "<search> capital </search>")
    traj = await solve("capital of Germany?", llm, TinyRetriever(), cfg(max_searches=2))
    assert traj.status == "failed" and traj.answer is None and traj.num_searches == 2
    assert events(traj)[-3:] == ["search_budget_exhausted", "forced_answer", "no_answer"]


async def test_zero_search_budget() -> None:
    llm = ScriptedLLM(["<search>x</search>", "<answer>y</answer>"])
    traj = await solve("q", llm, TinyRetriever(), cfg(max_searches=0))
    assert traj.num_searches == 0 and traj.status == "forced" and traj.answer == "y"


async def test_llm_error_is_retried_once() -> None:
    llm = ScriptedLLM([LLMError("backend down: HTTP 503"), "<answer>Paris</answer>"])
    traj = await solve("capital of France?", llm, TinyRetriever(), cfg())
    assert traj.status == "answered" and traj.answer == "Paris"
    assert events(traj) == ["llm_error"]
    assert llm.calls[0]["messages"] == llm.calls[1]["messages"]  # the same turn, retried


async def test_llm_errors_end_in_failure_not_a_crash() -> None:
    llm = ScriptedLLM([LLMError("down")] * 3)
    traj = await solve("q", llm, TinyRetriever(), cfg())
    assert traj.status == "failed" and traj.answer is None
    assert events(traj) == ["llm_error", "llm_error", "forced_answer", "llm_error"]
    # After an error the forced prompt is merged into the last user turn: roles still alternate.
    roles = [m["role"] for m in llm.calls[-1]["messages"]]
    assert roles == ["system", "user"]


async def test_malformed_then_error_forces() -> None:
    llm = ScriptedLLM(["blah", LLMError("timeout"), "<answer>Paris</answer>"])
    traj = await solve("q", llm, TinyRetriever(), cfg())
    assert traj.status == "forced" and events(traj) == ["no_action", "llm_error", "forced_answer"]
    roles = [m["role"] for m in llm.calls[-1]["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles))


async def test_passage_chars_and_information_format() -> None:
    llm = ScriptedLLM(["<search>Citibank</search>", "<answer>1812</answer>"])
    traj = await solve("q", llm, TinyRetriever(), cfg(passage_chars=12, topk=1))
    info = traj.messages[3]["content"]
    assert info == "<information>Doc 1(Title: Citibank) Citibank was ...</information>"


async def test_seed_and_temperature_are_passed() -> None:
    llm = ScriptedLLM(["<answer>a</answer>", "<answer>a</answer>"])
    await solve("q", llm, TinyRetriever(), cfg(temperature=0.9), seed=1)
    await solve("q", llm, TinyRetriever(), cfg(temperature=0.9), seed=2)
    assert [c["seed"] for c in llm.calls] == [1, 2]
    assert all(c["temperature"] == 0.9 for c in llm.calls)


async def test_on_step_sees_steps_live() -> None:
    seen = []
    llm = ScriptedLLM(["<search>Paris</search>", "<answer>Paris</answer>"])
    traj = await solve("q", llm, TinyRetriever(), cfg(), on_step=seen.append)
    assert tuple(seen) == traj.steps and [s.kind for s in seen] == ["model", "search", "model"]


async def test_trajectory_round_trips_json() -> None:
    llm = ScriptedLLM(["<search>Paris</search>", "<answer>Paris</answer>"])
    traj = await solve("q", llm, TinyRetriever(), cfg())
    again = type(traj).model_validate_json(traj.to_json())
    assert again == traj and again.num_searches == 1


# --- the OpenAI native tool-calling variant ---------------------------------------------


def tool_call(query: object, id_: str = "call_1", name: str = "search") -> Completion:
    args = json.dumps({"query": query}) if not isinstance(query, dict) else query
    return Completion(
        text="", tool_calls=({"id": id_, "name": name, "arguments": args},), finish_reason="tool_calls"
    )


async def test_tools_protocol_multi_search() -> None:
    llm = ScriptedLLM(
        [
            tool_call("Citibank founded"),
            tool_call({"query": "president 1812"}, id_="call_2"),
            "Madison was president. <answer>James Madison</answer>",
        ]
    )
    r = TinyRetriever()
    traj = await solve("q", llm, r, cfg(protocol="tools"), seed=3)
    assert traj.status == "answered" and traj.answer == "James Madison" and traj.num_searches == 2
    assert r.queries == ["Citibank founded", "president 1812"]
    call = llm.calls[0]
    assert call["tools"][0]["function"]["name"] == "search" and call["stop"] == [] and call["seed"] == 3
    roles = [m["role"] for m in traj.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert traj.messages[2]["tool_calls"][0]["function"] == {
        "name": "search",
        "arguments": '{"query": "Citibank founded"}',
    }
    assert traj.messages[3]["tool_call_id"] == "call_1"
    assert traj.messages[3]["content"].startswith("<information>Doc 1(Title: Citibank)")
    assert json.loads(traj.messages[4]["tool_calls"][0]["function"]["arguments"]) == {
        "query": "president 1812"
    }


async def test_tools_protocol_bad_tool_call_then_answer() -> None:
    llm = ScriptedLLM([tool_call("x", name="browse"), "<answer>Paris</answer>"])
    traj = await solve("q", llm, TinyRetriever(), cfg(protocol="tools"))
    assert traj.answer == "Paris" and events(traj) == ["bad_tool_call"]
    assert traj.messages[3]["role"] == "tool" and "invalid" in traj.messages[3]["content"]


async def test_tools_protocol_bad_arguments_twice_forces() -> None:
    bad = Completion(text="", tool_calls=({"id": "c", "name": "search", "arguments": "{not json"},))
    llm = ScriptedLLM([bad, bad, "<answer>Paris</answer>"])
    traj = await solve("q", llm, TinyRetriever(), cfg(protocol="tools"))
    assert traj.status == "forced" and events(traj) == ["bad_tool_call", "bad_tool_call", "forced_answer"]
    assert llm.calls[-1]["tools"] is None


async def test_tools_protocol_budget_and_untagged_answer() -> None:
    llm = ScriptedLLM([tool_call("a"), tool_call("b"), "<answer>Berlin</answer>"])
    traj = await solve("q", llm, TinyRetriever(), cfg(protocol="tools", max_searches=1))
    assert traj.num_searches == 1 and traj.status == "forced" and traj.answer == "Berlin"
    assert events(traj) == ["search_budget_exhausted", "forced_answer"]
    # Every tool call got its reply before the forced-answer prompt.
    assert [m["role"] for m in traj.messages[-4:]] == ["assistant", "tool", "user", "assistant"]

    llm = ScriptedLLM(["Paris, I believe.", "Paris"])
    traj = await solve("q", llm, TinyRetriever(), cfg(protocol="tools"))
    assert traj.status == "failed" and events(traj)[0] == "no_action"


# --- tags helpers (the generator imports these too) -----------------------------------------


@pytest.mark.parametrize(
    ("text", "tag", "expected_last"),
    [
        ("<answer>a</answer> then <answer> b </answer>", "answer", "b"),
        ("<ANSWER>a</Answer>", "answer", "a"),
        ("< answer >a< /answer >", "answer", "a"),
        ("<answering steps>1. x</answering steps>", "answering_steps", "1. x"),
        ("<answering_steps>1. x</answering_steps>", "answering steps", "1. x"),
        ("<question>Q?</question>", "answer", None),
    ],
)
def test_tags_last(text: str, tag: str, expected_last: str | None) -> None:
    assert tags.last(text, tag) == expected_last


def test_tags_unclosed_and_first() -> None:
    text = "<question> Who? </question><answer> X <answering steps> 1. a"
    assert tags.first(text, "question") == "Who?"
    assert tags.last(text, "answer") is None
    assert tags.last(text, "answer", allow_unclosed=True) == "X <answering steps> 1. a"
    assert tags.last(text, "answering_steps", allow_unclosed=True) == "1. a"
    assert tags.has_tag(text, "answering_steps") and not tags.has_tag(text, "search")
    # A reopened tag ends the unclosed one before it.
    assert tags.find_all("<answer>a <answer>b</answer>", "answer", allow_unclosed=True) == ["a", "b"]
    assert tags.strip_tags("<think>x</think> <answer>y</answer>") == "x y"


def test_parse_action() -> None:
    a = tags.parse_action("<think>t</think><search> q </search> tail", "stop")
    assert (a.kind, a.content, a.truncated) == ("search", "q", False)
    assert a.transcript == "<think>t</think><search> q </search>"
    a = tags.parse_action("<think>t</think> <answer>x", "stop")
    assert (a.kind, a.content, a.transcript) == ("answer", "x", "<think>t</think> <answer>x</answer>")
    a = tags.parse_action("<answer>x", "length")
    assert a.truncated
    a = tags.parse_action("<think>t</think>", "length")
    assert (a.kind, a.truncated) == ("none", True)
    a = tags.parse_action("<answer>first</answer><search>later</search>", "stop")
    assert (a.kind, a.content) == ("answer", "first")
