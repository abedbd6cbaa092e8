"""A scripted LLM for tests of control flow: a queue of responses or a function of the prompt.

It never touches the network. Each call is recorded in ``calls`` so tests can assert
on what the agent sent and how many calls were made.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sagegen.errors import LLMError
from sagegen.llm.base import LLM, CallOptions, Message, apply_stop
from sagegen.records import Completion

Responder = Callable[[Sequence[Message]], "str | Completion"]


class ScriptedLLM(LLM):
    """Answers from ``responses`` in order (strings or Completions), or by calling ``responder``.

    A response that is an ``Exception`` instance is raised instead, to script failures.
    """

    def __init__(
        self,
        responses: Iterable[str | Completion | Exception] = (),
        *,
        responder: Responder | None = None,
        name: str = "scripted:test",
    ):
        self.queue: deque[str | Completion | Exception] = deque(responses)
        self.responder = responder
        self.name = name
        self.calls: list[dict[str, Any]] = []

    async def _complete(self, messages: Sequence[Message], o: CallOptions) -> Completion:
        self.calls.append(
            {
                "messages": [dict(m) for m in messages],
                "max_tokens": o.max_tokens,
                "stop": list(o.stop),
                "temperature": o.temperature,
                "seed": o.seed,
                "tools": list(o.tools) or None,
            }
        )
        if self.queue:
            item = self.queue.popleft()
        elif self.responder is not None:
            item = self.responder(messages)
        else:
            raise LLMError(f"{self.name}: script exhausted after {len(self.calls) - 1} calls")
        if isinstance(item, Exception):
            raise item
        if isinstance(item, Completion):
            return item
        text = apply_stop(item, o.stop)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        return Completion(
            text=text,
            model=self.name,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(text.split()),
            finish_reason="stop",
        )


# --- Named deterministic fixtures, selectable from config (``llm.backend=scripted``,
# ``llm.model=fixture:NAME[@DELAY_SECONDS]``), so a real ``sagegen generate`` process can run the
# whole SAGE loop offline (the SIGKILL/resume test). Pure functions of the messages.

FIXTURE_PREFIX = "fixture:"


def sage_fixture(messages: Sequence[Message]) -> str:
    """Plays generator, reviser, solver and judge for the SAGE loop, deterministically.

    Generator/reviser (its system prompt asks for ``<answering_steps>``): searches the seed (or
    previous question) once, then asks for the title of the top passage, quoting some of its words.
    Solver: a hash of the question picks its behaviour — answer after one search, after two, or
    give up with "unknown" — so a run meets passes, too-easy and incorrect verdicts.
    Judge (a BrowseComp grader prompt): compares normalised response and correct answer.
    """
    contents = [str(m.get("content") or "") for m in messages]
    system = contents[0] if messages and messages[0].get("role") == "system" else ""
    infos = [
        c
        for m, c in zip(messages, contents, strict=True)
        if m.get("role") in ("user", "tool") and c.lstrip().startswith("<information>")
    ]
    if "[correct_answer]" in contents[-1]:
        return _fixture_grade(contents[-1])
    opening = contents[1] if len(contents) > 1 else ""
    if "answering_steps" in system:
        return _fixture_generate(opening, infos)
    return _fixture_solve(opening, contents[-1], infos)


def _fixture_top(info: str) -> tuple[str, str]:
    """(title, text) of the first passage of an ``<information>`` block."""
    m = re.search(r"Doc 1\(Title: (.*?)\) (.*?)(?:\nDoc 2\(|</information>)", info, re.DOTALL)
    return (m.group(1).strip(), m.group(2).strip()) if m else ("", "")


def _fixture_norm(s: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", s.lower()).split())


def _fixture_grade(prompt: str) -> str:
    resp = re.search(r"\[response\]: (.*)", prompt)
    gold = re.search(r"\[correct_answer\]: (.*)", prompt)
    same = bool(
        resp and gold and _fixture_norm(resp.group(1)) == _fixture_norm(gold.group(1).split(" OR ")[0])
    )
    return (
        f"extracted_final_answer: {resp.group(1) if resp else 'None'}\nreasoning: compared.\n"
        f"correct: {'yes' if same else 'no'}\nconfidence: 100"
    )


def _fixture_generate(opening: str, infos: list[str]) -> str:
    if not infos:
        asked = re.search(r"Your question: (.*)", opening)
        t = re.search(r"Title: (.*)", opening)
        query = asked.group(1) if asked else (t.group(1) if t else "history")
        return f"<think>I look up what the passage is about.</think>\n<search> {query.strip()} </search>"
    title, text = _fixture_top(infos[-1])
    shown = _fixture_norm(title).split()
    words = [w for w in text.split() if _fixture_norm(w) and _fixture_norm(w) not in shown][:10]
    revised = " (revised)" if "Your question:" in opening else ""
    question = f'Which article states: "{" ".join(words)}"{revised}?'
    return (
        f"<think>The top passage is {title}.</think>\n<question> {question} </question>\n"
        f"<answer> {title} </answer>\n<answering_steps> 1. search the quote -> {title}"
    )


def _fixture_solve(opening: str, last: str, infos: list[str]) -> str:
    asked = re.search(r"Question: (.*)", opening)
    q = asked.group(1).strip() if asked else last
    mode = int(hashlib.sha256(q.encode()).hexdigest(), 16) % 4
    needed = 2 if mode == 1 else 1
    if len(infos) < needed:
        query = q if not infos else q.split('"')[1] if '"' in q else q
        return f"<think>I need to search.</think>\n<search> {query} </search>"
    if mode == 0:
        return "<think>Nothing fits.</think>\n<answer> unknown </answer>"
    return f"<think>Found it.</think>\n<answer> {_fixture_top(infos[0])[0]} </answer>"


def grader_fixture(messages: Sequence[Message]) -> str:
    """A grader that reads its own prompt: lenient (every word of the correct answer appears in the
    response) when the prompt says extra detail is fine — the ``sage`` judge's recall rule —, else
    strict (normalised equality), as the BrowseComp grader asks. Used to pin what each prompt says."""
    import re

    prompt = str(messages[-1].get("content") or "")
    resp = re.search(r"\[response\]: (.*)", prompt)
    gold = re.search(r"\[correct_answer\]: (.*)", prompt)

    def words(s: str) -> list[str]:
        return re.sub(r"[^a-z0-9 ]", " ", s.lower()).split()

    r, golds = words(resp.group(1)) if resp else [], re.split(r",| OR ", gold.group(1)) if gold else []
    if "extra detail is fine" in prompt.lower():
        ok = any(words(g) and set(words(g)) <= set(r) for g in golds)
    else:
        ok = any(words(g) == r for g in golds)
    return (
        f"extracted_final_answer: {resp.group(1) if resp else 'None'}\nreasoning: compared.\n"
        f"correct: {'yes' if ok else 'no'}\nconfidence: 100"
    )


def sage_release_fixture(messages: Sequence[Message]) -> str:
    """The ``sage`` fixture for ``--profile sage`` prompts: generator (``<answering steps>``), one-call
    reviser (the release's feedback prompt), solver (as ``sage``) and the lenient judge."""
    import re

    contents = [str(m.get("content") or "") for m in messages]
    system = contents[0] if messages and messages[0].get("role") == "system" else ""
    if "[correct_answer" in contents[-1]:
        return grader_fixture(messages)
    if "# Data generator agent" in contents[0]:
        gen = contents[0].split("# Data generator agent", 1)[1].split("# Search agent", 1)[0]
        q = re.findall(r"<question>(.*?)</question>", gen, re.DOTALL)
        a = re.findall(r"<answer>(.*?)</answer>", gen, re.DOTALL)
        question = (q[-1].strip().rstrip("?") + " (revised)?") if q else "Which article was revised?"
        return (
            f"<reason>One search found it.</reason>\n<think>Add a hop.</think>\n<question> {question} "
            f"</question>\n<answer> {a[-1].strip() if a else 'unknown'} </answer>\n"
            "<search steps> 1. the quote -> the article </search steps>"
        )
    if "<answering steps>" in system:
        reply = sage_fixture([{"role": "system", "content": "answering_steps"}, *messages[1:]])
        return reply.replace("answering_steps", "answering steps")
    return sage_fixture(messages)


FIXTURES: dict[str, Responder] = {
    "sage": sage_fixture,
    "sage-release": sage_release_fixture,
    "grader": grader_fixture,
}


def fixture_llm(spec: str) -> ScriptedLLM:
    """A ScriptedLLM playing a named fixture: ``"sage"`` or ``"sage@0.05"`` (sleep 50 ms per call)."""
    import time

    from sagegen.errors import ConfigError

    name, _, delay = spec.removeprefix(FIXTURE_PREFIX).partition("@")
    if name not in FIXTURES:
        raise ConfigError(f"llm.model: unknown scripted fixture {name!r} (known: {', '.join(FIXTURES)})")
    seconds = float(delay) if delay else 0.0
    fn = FIXTURES[name]

    def responder(messages: Sequence[Message]) -> str | Completion:
        if seconds:
            time.sleep(seconds)  # simulates model latency so a test can kill the process mid-run
        return fn(messages)

    return ScriptedLLM(responder=responder, name=f"scripted:fixture-{name}")
