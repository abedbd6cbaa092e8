"""OpenAI-compatible servers on loopback that behave on the wire like the reasoning backends users run.

A *mind* (a scripted fixture of ``sagegen.llm.scripted``) decides what the model means to say; a
*dialect* wraps it the way one backend puts a thinking model's output on the wire. Each dialect's rules
come from its vendor's documentation or its server's source, cited beside it:

- ``vllm``: vLLM >= 0.11 with ``--reasoning-parser qwen3`` (``vllm/reasoning/qwen3_reasoning_parser.py``;
  docs "Reasoning Outputs"): the thinking in ``message.reasoning``, the rest in ``content``; ``stop`` is
  matched over the whole generated text, thinking included, and a thought cut before ``</think>`` comes
  back as reasoning with ``content: null``.
- ``sglang``: SGLang ``--reasoning-parser`` (docs "Reasoning Parser") and vLLM before 0.11: the same, in
  ``reasoning_content``.
- ``raw``: vLLM / SGLang without a parser: ``<think>…</think>`` inside ``content``; stops over all of it.
- ``lone``: Qwen3-2507 thinking templates open ``<think>`` in the prompt, so only ``</think>`` appears.
- ``deepseek``: DeepSeek API thinking mode (api-docs.deepseek.com, "Reasoning Model", "Thinking Mode
  Tool Calls"): ``reasoning_content``; sampling parameters ignored; ``max_tokens`` counts the thinking;
  an assistant tool-call turn of the current turn sent back without its ``reasoning_content`` is a 400.
- ``openai``: OpenAI o-series / GPT-5 (API reference, "Reasoning models"): thinking hidden, counted in
  ``usage.completion_tokens_details.reasoning_tokens`` and against ``max_completion_tokens``; a 400 for
  ``max_tokens``, for ``temperature`` other than 1 and for ``stop``, one at a time, each naming ``param``.
- ``gemini``: Gemini 3 on the OpenAI-compatible endpoint (ai.google.dev "OpenAI compatibility",
  "Thought signatures"): thinking hidden; each tool call carries ``extra_content.google.thought_signature``
  and a request whose assistant tool call lacks it is a 400 (Gemini's error list shape).
- ``ollama``: Ollama ``/v1`` (docs "OpenAI compatibility"): ``message.reasoning``; ``max_tokens`` honoured,
  ``max_completion_tokens`` silently ignored; stops applied during thinking too.
- ``plain``: the control, a model that does not think.

The thinking restates sagegen's own markers with wrong content ("<search> draft … </search>",
"<answer> draft … </answer>", "correct: yes"/"no" opposite to the verdict, a drafted ``<question>``), so
a client that reads any of it gets a different result than against ``plain``. Its length is
``think_words`` words (a word is a token here), so a cap below it cuts inside the thought.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from helpers.loop_server import LoopServer, read_request, reply

Mind = Callable[[Sequence[dict[str, Any]]], str]

DIALECTS = ("plain", "vllm", "sglang", "raw", "lone", "deepseek", "openai", "gemini", "ollama")
#: Where the dialect puts visible thinking: a message field, inside content, or nowhere (hidden).
FIELD = {
    "vllm": "reasoning",
    "ollama": "reasoning",
    "sglang": "reasoning_content",
    "deepseek": "reasoning_content",
}
#: Dialects whose server matches stop strings inside the thinking.
STOPS_IN_THOUGHT = {"vllm", "sglang", "raw", "lone", "ollama"}
_SEARCH = re.compile(r"<search>\s*(.*?)\s*(?:</search>|$)", re.DOTALL)


def thought(messages: Sequence[dict[str, Any]], words: int) -> str:
    """Thinking that restates the protocol with wrong drafts, ``words`` long."""
    last = str(messages[-1].get("content") or "")
    verdict = "no" if "correct: yes" in last else "yes"
    draft = (
        f"The format is <search> query </search> then <answer> answer </answer>. Draft: <search> "
        f"drafted wrong query </search> and <answer> drafted wrong answer </answer>. A grader "
        f"writes correct: {verdict} here. <question> drafted question? </question> "
    )
    out = (draft + "Let me check once more. ") * (words // 30 + 1)
    return " ".join(out.split()[:words])


class ReasoningServer(LoopServer):
    kind = "reasoning dialect server"

    def __init__(self, dialect: str, mind: Mind, *, think_words: int = 60):
        super().__init__()
        assert dialect in DIALECTS, dialect
        self.dialect, self.mind, self.think_words = dialect, mind, think_words
        self.requests: list[dict[str, Any]] = []  # every request body, in order
        self.refused: list[str] = []  # the 400s sent, by reason
        self._signatures = 0
        self.model_id = f"{dialect}-model"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                body = await read_request(reader)
                if "messages" not in body:  # GET /v1/models (a probe): the one model served
                    await _send(writer, 200, {"object": "list", "data": [{"id": self.model_id}]})
                    continue
                self.requests.append(body)
                error = self.refuse(body)
                if error is not None:
                    self.refused.append(error[0])
                    await _send(writer, 400, error[1])
                    continue
                await _send(writer, 200, self.answer(body))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    # -- what the server refuses ------------------------------------------------------------

    def refuse(self, body: dict[str, Any]) -> tuple[str, Any] | None:
        d = self.dialect
        if d == "openai":
            if "max_tokens" in body:
                return "max_tokens", _openai_error(
                    "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                    "'max_completion_tokens' instead.",
                    "max_tokens",
                    "unsupported_parameter",
                )
            if body.get("temperature", 1) != 1:
                return "temperature", _openai_error(
                    f"Unsupported value: 'temperature' does not support {body['temperature']} with this "
                    "model. Only the default (1) value is supported.",
                    "temperature",
                    "unsupported_value",
                )
            if "stop" in body:
                return "stop", _openai_error(
                    "Unsupported parameter: 'stop' is not supported with this model.",
                    "stop",
                    "unsupported_parameter",
                )
        turn = _current_turn(body["messages"])
        if d == "deepseek" and any(m.get("tool_calls") and "reasoning_content" not in m for m in turn):
            return "reasoning_content", {
                "error": {
                    "message": "Missing `reasoning_content` field in the assistant message at message index "
                    "2. For more information, please refer to the documentation.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_request_error",
                }
            }
        if d == "gemini" and any(
            not ((tc.get("extra_content") or {}).get("google") or {}).get("thought_signature")
            for m in turn
            for tc in m.get("tool_calls") or ()
        ):
            return "thought_signature", [
                {
                    "error": {
                        "code": 400,
                        "status": "INVALID_ARGUMENT",
                        "message": "Function call is missing a thought_signature in functionCall parts. "
                        "This is required for tools to work correctly.",
                    }
                }
            ]
        return None

    # -- what the model writes ----------------------------------------------------------------

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        d, messages = self.dialect, body["messages"]
        meant = self.mind(messages)
        think = "" if d == "plain" else thought(messages, self.think_words)
        cap = body.get("max_completion_tokens") if d == "openai" else body.get("max_tokens")
        if d in ("vllm", "sglang", "raw", "lone", "gemini", "deepseek") and cap is None:
            cap = body.get("max_completion_tokens")  # vLLM, SGLang and Gemini take either name
        stops = [s for s in (body.get("stop") or []) if s]
        tools = bool(body.get("tools"))
        # The model's whole output as it generates it: thinking first, then the answer.
        think_words, answer_words = think.split(), meant.split()
        finish, cut_in_thought = "stop", False
        if cap is not None and len(think_words) + len(answer_words) > cap:
            finish = "length"
            if think_words and cap <= len(think_words):  # the cap ends the thought: no answer at all
                think_words, answer_words, cut_in_thought = think_words[:cap], [], True
            else:
                answer_words = answer_words[: cap - len(think_words)]
        think, text = " ".join(think_words), _first_words(meant, len(answer_words))
        if stops and d in STOPS_IN_THOUGHT:
            pos = min((think.find(s) for s in stops if s in think), default=-1)
            if pos >= 0:  # the server matched a stop inside the thinking: the thought ends there
                think, text, finish, cut_in_thought = think[:pos], "", "stop", True
        if stops and not cut_in_thought:
            pos = min((text.find(s) for s in stops if s in text), default=-1)
            if pos >= 0:
                text, finish = text[:pos], "stop"
        message: dict[str, Any] = {"role": "assistant"}
        calls = []
        if tools and not cut_in_thought and (m := _SEARCH.search(text)) is not None and m.group(1):
            self._signatures += 1
            call: dict[str, Any] = {
                "id": f"call_{len(self.requests)}",
                "type": "function",
                "function": {"name": "search", "arguments": json.dumps({"query": m.group(1)})},
            }
            if d == "gemini":
                call["extra_content"] = {"google": {"thought_signature": f"sig{self._signatures}"}}
            calls.append(call)
            text, finish = text[: m.start()].strip(), "tool_calls"
        if d in FIELD:
            message[FIELD[d]] = think
            message["content"] = text or None if cut_in_thought else text
        elif d == "raw":
            message["content"] = f"<think>\n{think}" + ("" if cut_in_thought else f"\n</think>\n\n{text}")
        elif d == "lone":
            message["content"] = think + ("" if cut_in_thought else f"\n</think>\n\n{text}")
        else:  # plain, or hidden thinking (openai, gemini)
            message["content"] = text
        if calls:
            message["tool_calls"] = calls
        prompt = sum(len(str(m.get("content") or "").split()) for m in messages)
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": len(think.split()) + len(text.split()),
        }
        if d in ("openai", "gemini", "deepseek") and think:
            usage["completion_tokens_details"] = {"reasoning_tokens": len(think.split())}
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }


def write_wire_inputs(d: Path, passages: int, questions: int) -> None:
    """``d/corpus.jsonl``: the first ``passages`` of the bundled corpus (Search-R1 lines), and
    ``d/bench.jsonl``: ``questions`` eval questions quoting them, each with its title as the answer."""
    from sagegen.config import CorpusConfig
    from sagegen.corpus import load_corpus

    docs = load_corpus(CorpusConfig(limit=passages))
    (d / "corpus.jsonl").write_text(
        "".join(json.dumps({"id": x.id, "contents": x.contents}) + "\n" for x in docs), encoding="utf-8"
    )
    with (d / "bench.jsonl").open("w", encoding="utf-8") as f:
        for i, x in enumerate(docs[:questions]):
            quote = " ".join(x.text.split()[3:11])
            f.write(
                json.dumps(
                    {"id": f"q{i}", "question": f'Which article says "{quote}"?', "golden_answers": [x.title]}
                )
                + "\n"
            )


def _first_words(text: str, n: int) -> str:
    """``text`` up to the end of its ``n``-th word, its own spacing and newlines kept."""
    m = re.match(rf"\s*(?:\S+\s*){{{n}}}", text) if n else None
    return text if n >= len(text.split()) else (m.group(0).rstrip() if m else "")


def _current_turn(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages after the last user message: the turn a provider checks tool state in."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    return [m for m in messages[last_user + 1 :] if m.get("role") == "assistant"]


def _openai_error(message: str, param: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


async def _send(writer: asyncio.StreamWriter, status: int, payload: Any) -> None:
    await reply(writer, payload, status)  # type: ignore[arg-type]  # Gemini's errors come as a list
