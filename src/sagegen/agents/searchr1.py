"""Search-R1's own rollout (``solver.prompt_set=searchr1``), token for token.

For evaluating a checkpoint trained by Search-R1 on the prompt and rollout it was trained with
(``search_r1/llm_agent/generation.py``, ``LLMGenerationManager.run_llm_loop``), step by step:

* prompt: one user turn, Search-R1's ``make_prefix`` (``export_searchr1.j2``) on the question
  stripped and ending in ``?`` (``scripts/data_process/nq_search.py``), a newline after it; the
  model's chat template with the generation prompt; tokenized without added special tokens;
* each turn the model continues the token ids so far; its text (special tokens skipped) is cut
  after the first ``</search>``, else after the first ``</answer>``, and **re-tokenized**;
* the action is the first ``<search>``/``<answer>`` block (``<(search|answer)>(.*?)</\\1>``,
  content stripped): an answer ends the rollout; a search appends
  ``\\n\\n<information>passages</information>\\n\\n`` (``tags.format_information``; no hits: an
  empty block), tokenized on its own and cut to ``max_obs_tokens``; anything else appends
  Search-R1's invalid-action text (``searchr1/solver_invalid.j2``) and goes on;
* ``max_turns`` such turns, then one last generation whose search is not run (``do_search=False``).

The pieces are concatenated as token ids, never re-rendered as one text: tokenizing the whole text
merges ``>\\n\\n`` across the boundary between a response and its observation (Qwen2.5: ``</search>``
+ ``\\n\\n<information>`` is 7 ids piecewise, 6 as one text), so a chat "continue this assistant
message" call cannot reproduce what the checkpoint was trained on. The model is therefore called
through a *token port*: ``generate(ids, ...) -> Completion`` whose text is the decoded
continuation (a text-completion endpoint given token ids, e.g. vLLM's ``/v1/completions`` with
``prompt`` as ids, or ``model.generate`` on ids).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sagegen.agents.conversation import Conversation, StepCallback
from sagegen.config import SolverConfig
from sagegen.errors import ConfigError
from sagegen.prompts import render
from sagegen.records import Completion, Step, Trajectory
from sagegen.retrieval.base import Retriever

#: ``solver.prompt_set`` value selecting this rollout.
PROMPT_SET = "searchr1"
_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)


class Tokenizer(Protocol):
    """The slice of a Hugging Face tokenizer Search-R1's rollout uses."""

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def __call__(self, text: str, **kwargs: Any) -> Any: ...


#: ``generate(ids, max_tokens=, temperature=, seed=)``: the decoded continuation of ``ids``.
TokenGenerate = Callable[..., Awaitable[Completion]]


def question_text(question: str) -> str:
    """Search-R1's data prep: stripped, and a ``?`` appended unless it already ends with one."""
    q = question.strip()
    return q if q.endswith("?") else q + "?"


def user_prompt(question: str) -> str:
    """The single user turn: ``make_prefix`` on the prepared question, ending in a newline."""
    return render("export_searchr1.j2", question=question_text(question)) + "\n"


def cut_response(text: str) -> str:
    """``_postprocess_responses``: up to the first ``</search>``, else the first ``</answer>``."""
    if "</search>" in text:
        return text.split("</search>")[0] + "</search>"
    if "</answer>" in text:
        return text.split("</answer>")[0] + "</answer>"
    return text


def parse_action(text: str) -> tuple[str | None, str]:
    """``postprocess_predictions``: (``search``/``answer``/None, stripped content)."""
    m = _ACTION.search(text)
    return (m.group(1), m.group(2).strip()) if m else (None, "")


def information_observation(block: str) -> str:
    """The observation after a search, around ``tags.format_information``'s block."""
    return f"\n\n{block}\n\n"


def invalid_observation() -> str:
    return "\n" + render("solver_invalid.j2", PROMPT_SET) + "\n"


def encode(tok: Tokenizer, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def prompt_ids(tok: Tokenizer, question: str) -> list[int]:
    """The rendered chat template (generation prompt added), tokenized as Search-R1's dataset does."""
    text = tok.apply_chat_template(
        [{"role": "user", "content": user_prompt(question)}], add_generation_prompt=True, tokenize=False
    )
    return encode(tok, str(text))


@dataclass
class Rollout:
    """The token ids of one rollout, piece by piece, and which ids are observations (loss-masked)."""

    prompt: list[int]
    pieces: list[tuple[str, str, list[int]]] = field(default_factory=list)  # (kind, text, ids)

    def add(self, kind: str, text: str, ids: list[int]) -> None:
        self.pieces.append((kind, text, ids))

    @property
    def ids(self) -> list[int]:
        return self.prompt + [i for _, _, ids in self.pieces for i in ids]

    @property
    def response_mask(self) -> list[int]:
        """1 for the model's tokens, 0 for observations (Search-R1's ``info_mask``)."""
        return [int(kind == "response") for kind, _, ids in self.pieces for _ in ids]


class _Run(Conversation):
    def __init__(
        self,
        question: str,
        generate: TokenGenerate,
        tok: Tokenizer,
        retriever: Retriever,
        cfg: SolverConfig,
        seed: int | None,
        on_step: StepCallback | None,
        max_obs_tokens: int,
    ):
        super().__init__(
            "solver",
            None,
            retriever,
            max_turn_tokens=cfg.max_turn_tokens,
            temperature=cfg.temperature,
            seed=seed,
            topk=cfg.topk,
            passage_chars=cfg.passage_chars,
            on_step=on_step,
        )
        self.question, self.cfg, self.generate, self.tok = question, cfg, generate, tok
        self.max_obs_tokens = max_obs_tokens
        self.rollout = Rollout(prompt_ids(tok, question))
        self.messages = [
            {"role": "user", "content": user_prompt(question)},
            {"role": "assistant", "content": ""},
        ]

    async def turn(self) -> tuple[str | None, str]:
        t0 = time.perf_counter()
        c = await self.generate(
            self.rollout.ids, max_tokens=self.max_turn_tokens, temperature=self.temperature, seed=self.seed
        )
        text = cut_response(c.text)
        self.add(
            Step(
                kind="model",
                text=text,
                prompt_tokens=c.prompt_tokens,
                completion_tokens=c.completion_tokens,
                seconds=c.seconds or time.perf_counter() - t0,
            )
        )
        self.append("response", text)
        return parse_action(text)

    def append(self, kind: str, text: str) -> None:
        ids = encode(self.tok, text)
        if kind == "observation":
            ids = ids[: self.max_obs_tokens]  # _process_next_obs
        self.rollout.add(kind, text, ids)
        self.messages[-1]["content"] += text  # the assistant's one continuous text, for the transcript

    async def run(self) -> Trajectory:
        for _ in range(self.cfg.max_searches):
            action, content = await self.turn()
            if action == "answer":
                return self.trajectory("answered", self.question, content)
            if action == "search":
                self.append("observation", information_observation(await self.search(content)))
            else:
                self.event("invalid_action", self.rollout.pieces[-1][1][-300:])
                self.append("observation", invalid_observation())
        action, content = await self.turn()  # the final generation: a search here is not run
        if action == "answer":
            return self.trajectory("answered", self.question, content)
        self.event("max_turns", "the final turn gave no answer")
        return self.trajectory("failed", self.question, None)


async def run_searchr1(
    question: str,
    generate: TokenGenerate,
    tok: Tokenizer,
    retriever: Retriever,
    cfg: SolverConfig,
    *,
    seed: int | None = None,
    on_step: StepCallback | None = None,
    max_obs_tokens: int = 500,
) -> tuple[Trajectory, Rollout]:
    """One Search-R1 rollout; ``max_obs_tokens`` is Search-R1's ``max_obs_length`` (its default 500)."""
    run = _Run(question, generate, tok, retriever, cfg, seed, on_step, max_obs_tokens)
    traj = await run.run()
    return traj, run.rollout


async def solve_searchr1(
    question: str,
    llm: Any,
    retriever: Retriever,
    cfg: SolverConfig,
    *,
    seed: int | None = None,
    on_step: StepCallback | None = None,
) -> Trajectory:
    """``solve`` for ``solver.prompt_set=searchr1``: needs an LLM with a token port (see the module doc;
    ``agents.searchr1_ports`` gives the transformers and vLLM/SGLang backends one, ``sagegen eval``
    wraps the solver's LLM with it). Token calls are not cached; they are booked on the accounting
    wrappers around the port (calls, tokens, seconds)."""
    port, wrappers = llm, []
    while port is not None and not hasattr(port, "complete_ids"):  # under accounting / cache wrappers
        wrappers.append(port)
        port = getattr(port, "inner", None)
    port_generate = getattr(port, "complete_ids", None)
    tok = getattr(port, "tokenizer", None)
    if port_generate is None or tok is None:
        raise ConfigError(
            f"solver.prompt_set={PROMPT_SET} reproduces Search-R1's rollout on token ids and needs an LLM "
            f"backend that continues token ids and exposes its tokenizer (complete_ids, tokenizer); "
            f"{getattr(llm, 'name', type(llm).__name__)} has none"
        )
    # token calls do not pass through the wrappers' complete(): book them on the accounting ones
    counters = [
        w
        for w in wrappers
        if all(
            isinstance(getattr(w, a, None), (int, float))
            for a in ("calls", "prompt_tokens", "completion_tokens", "seconds")
        )
    ]

    async def generate(ids: list[int], **kw: Any) -> Completion:
        c: Completion = await port_generate(ids, **kw)
        for w in counters:
            w.calls += 1
            w.prompt_tokens += c.prompt_tokens
            w.completion_tokens += c.completion_tokens
            w.seconds += c.seconds
        return c

    traj, _ = await run_searchr1(
        question,
        generate,
        tok,
        retriever,
        cfg,
        seed=seed,
        on_step=on_step,
    )
    return traj
