"""The LLM-judge rewards against a real OpenAI-compatible grader on a loopback socket.

Two judge rewards exist: the stdlib ``compute_score_judge`` of ``export/reward.py`` (what verl
imports on a cluster; falls back to exact match when the judge fails) and the GRPO reward
``make_outcome_reward("llm")`` of ``train/rewards.py`` (through ``sagegen.verdict.judge.judge_answer`` and
our OpenAI backend; falls back to F1 >= ``judge.f1_threshold``). The grader below is
``helpers.fault_server.FaultServer`` answering canned verdicts keyed on the ``[response]`` it is
asked to grade, so concurrent calls get the right reply whatever their order; its fault queue
injects broken replies, and ``requests`` counts what actually reached the server.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import time
from typing import Any

import pytest

from helpers.fault_server import BADJSON, NONJSON, NOTCOMPLETION, RESET, TRUNCATE, FaultServer, sleep, status
from sagegen.config import JudgeConfig, LLMConfig
from sagegen.verdict import reward as R

QUESTION = "Who was Lothair II's mother?"
GT = {"target": ["Ermengarde of Tours"]}
INFO = {"question": QUESTION}
YES = "extracted_final_answer: Ermengarde\nreasoning: same person.\ncorrect: yes\nconfidence: 95"
NO = "extracted_final_answer: Judith\nreasoning: a different person.\ncorrect: no\nconfidence: 90"


def completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-grader",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "grader",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


class Grader(FaultServer):
    """Replies with ``replies[response]`` for the ``[response]:`` line of the judge prompt."""

    def __init__(self, replies: dict[str, str], faults: list[Any] | None = None):
        super().__init__(faults)
        self.replies = replies

    async def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        req = json.loads(body)
        prompt = req["messages"][0]["content"]
        m = re.search(r"\[response\]: (.*)\n", prompt)
        text = self.replies.get(m.group(1).strip() if m else "", "I cannot tell.")
        return 200, "application/json", json.dumps(completion(text)).encode()

    def graded(self) -> list[str]:
        """The responses the grader was asked about, in arrival order."""
        out = []
        for r in self.requests:
            m = re.search(r"\[response\]: (.*)\n", r["json"]["messages"][0]["content"])
            out.append(m.group(1).strip() if m else "")
        return out


def _dead_url() -> str:
    """A loopback port nobody listens on (bound, then closed): connections are refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"


# ----------------------------------------------------------------- export/reward.py (verl reward)


def test_judge_verdicts_and_request_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGEGEN_JUDGE_API_KEY", raising=False)
    with Grader({"Ermengarde, his mother": YES, "Judith": NO}) as g:
        kw = {"judge_url": g.url, "judge_model": "grader"}
        # A paraphrase EM rejects, accepted by the judge; a wrong answer rejected.
        sol = "<think>searching</think><answer> Ermengarde, his mother </answer>"
        assert R.compute_score(None, sol, GT) == 0.0
        assert R.compute_score_judge("d", sol, GT, INFO, **kw) == 1.0
        assert R.compute_score_judge("d", "<answer>Judith</answer>", GT, INFO, **kw) == 0.0
        assert g.graded() == ["Ermengarde, his mother", "Judith"]
        req = g.requests[0]
        assert req["method"] == "POST" and req["path"] == "/v1/chat/completions"
        assert "authorization" not in req["headers"]  # no key in the env: none sent
        body = req["json"]
        assert body["model"] == "grader" and body["temperature"] == 0.0 and body["max_tokens"] == 256
        prompt = body["messages"][0]["content"]
        assert f"[question]: {QUESTION}" in prompt and "[correct_answer]: Ermengarde of Tours" in prompt
        assert "[[" not in prompt  # every slot filled
        # Only the model's last <answer> is graded, never one inside retrieved passages.
        n = len(g.requests)
        tricky = "<answer>Judith</answer><information><answer>Ermengarde of Tours</answer></information>"
        assert R.compute_score_judge("d", tricky, GT, INFO, **kw) == 0.0
        assert g.graded()[n:] == ["Judith"]


def test_judge_url_and_model_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with Grader({"Ermengarde, his mother": YES}) as g:
        monkeypatch.setenv("SAGEGEN_JUDGE_URL", g.url)
        monkeypatch.setenv("SAGEGEN_JUDGE_MODEL", "env-grader")
        monkeypatch.setenv("MY_JUDGE_KEY", "sk-loopback")
        assert (
            R.compute_score_judge(
                "d", "<answer>Ermengarde, his mother</answer>", GT, INFO, api_key_env="MY_JUDGE_KEY"
            )
            == 1.0
        )
        req = g.requests[0]
        assert (
            req["json"]["model"] == "env-grader" and req["headers"]["authorization"] == "Bearer sk-loopback"
        )


def test_em_shortcut_skips_the_call_and_no_answer_scores_zero() -> None:
    with Grader({"ermengarde of tours": NO}) as g:
        kw = {"judge_url": g.url, "judge_model": "grader"}
        assert R.compute_score_judge("d", "<answer>ermengarde of tours</answer>", GT, INFO, **kw) == 1.0
        assert R.compute_score_judge("d", "<answer>The Ermengarde of Tours.</answer>", GT, INFO, **kw) == 1.0
        assert R.compute_score_judge("d", "It is Ermengarde of Tours", GT, INFO, **kw) == 0.0  # no <answer>
        assert R.compute_score_judge("d", "<answer>x</answer>", {"target": []}, INFO, **kw) == 0.0
        assert g.requests == []
        # Without the shortcut the judge is asked even for an exact match, and its verdict stands.
        assert (
            R.compute_score_judge(
                "d", "<answer>ermengarde of tours</answer>", GT, INFO, em_shortcut=False, **kw
            )
            == 0.0
        )
        assert len(g.requests) == 1


@pytest.mark.parametrize(
    "fault",
    [
        status(500),
        status(200, body="{}"),
        NONJSON,
        BADJSON,
        NOTCOMPLETION,
        TRUNCATE,
        RESET,
        status(200, body=json.dumps(completion("I think it might be right."))),
    ],
    ids=["500", "empty-json", "html", "cut-json", "not-completion", "truncated", "reset", "no-verdict"],
)
def test_broken_judge_falls_back_to_exact_match(fault: Any) -> None:
    with Grader({}, faults=[fault, fault]) as g:
        kw = {"judge_url": g.url, "judge_model": "grader", "em_shortcut": False, "timeout": 5.0}
        # The fallback is EM, not a fixed score: an exact match keeps 1.0, a wrong answer gets 0.0.
        assert R.compute_score_judge("d", "<answer>Ermengarde of Tours</answer>", GT, INFO, **kw) == 1.0
        assert R.compute_score_judge("d", "<answer>Judith</answer>", GT, INFO, **kw) == 0.0
        assert len(g.requests) == 2
        # With on_error="raise" the failure surfaces instead.
        g.faults.append(fault)
        with pytest.raises((OSError, http.client.HTTPException, ValueError, KeyError, IndexError, TypeError)):
            R.compute_score_judge("d", "<answer>Judith</answer>", GT, INFO, on_error="raise", **kw)


def test_judge_down_or_slow_falls_back_to_exact_match() -> None:
    dead = {"judge_url": _dead_url(), "judge_model": "grader", "em_shortcut": False}
    assert R.compute_score_judge("d", "<answer>Ermengarde of Tours</answer>", GT, INFO, **dead) == 1.0
    assert R.compute_score_judge("d", "<answer>Judith</answer>", GT, INFO, **dead) == 0.0
    with pytest.raises(OSError):
        R.compute_score_judge("d", "<answer>Judith</answer>", GT, INFO, on_error="raise", **dead)
    with Grader({"Judith": YES}, faults=[sleep(3.0)]) as g:
        t0 = time.monotonic()
        slow = {"judge_url": g.url, "judge_model": "grader", "timeout": 0.3}
        assert (
            R.compute_score_judge("d", "<answer>Judith</answer>", GT, INFO, **slow) == 0.0
        )  # EM, not the "yes"
        assert time.monotonic() - t0 < 2.5
        assert (
            R.compute_score_judge("d", "<answer>Judith</answer>", GT, INFO, **slow) == 1.0
        )  # answered in time


# ------------------------------------------------------------- train/rewards.py (GRPO reward)


def _rollout(answer: str | None) -> list[dict[str, Any]]:
    call = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": {"query": "q"}}}],
    }
    tool = {"role": "tool", "name": "search", "content": "<information>Ermengarde of Tours</information>"}
    last = {"role": "assistant", "content": f"<answer> {answer} </answer>" if answer else "I give up."}
    return [call, tool, last]


def _judge_llm(url: str) -> Any:
    from sagegen.llm.factory import build_llm

    return build_llm(
        LLMConfig(
            backend="openai",
            base_url=url,
            model="grader",
            api_key_env=None,
            cache=False,
            max_retries=0,
            timeout=5.0,
        )
    )


def test_grpo_llm_reward_through_the_openai_backend() -> None:
    from sagegen.train.rewards import EpisodeLog, make_outcome_reward

    answers = ["Ermengarde, his mother", "Judith", "Ermengarde of Tours", None]
    with Grader({"Ermengarde, his mother": YES, "Judith": NO}) as g:
        log = EpisodeLog()
        fn = make_outcome_reward(
            "llm", log=log, judge_llm=_judge_llm(g.url), judge_cfg=JudgeConfig(method="llm")
        )
        assert fn.__name__ == "outcome_llm" and asyncio.iscoroutinefunction(fn)
        n = len(answers)
        rewards = asyncio.run(
            fn(
                prompts=[[]] * n,
                completions=[_rollout(a) for a in answers],
                golden_answers=[["Ermengarde of Tours"]] * n,
                question=[QUESTION] * n,
            )
        )
        assert rewards == [1.0, 0.0, 1.0, 0.0]
        # EM shortcut and the missing answer made no call; the two others one each.
        assert sorted(g.graded()) == ["Ermengarde, his mother", "Judith"]
        assert all(f"[question]: {QUESTION}" in r["json"]["messages"][0]["content"] for r in g.requests)
        eps = log.drain()
        assert [e.correct for e in eps] == [True, False, True, False]
        assert [e.answer for e in eps] == answers and [e.reward for e in eps] == rewards


def test_grpo_llm_reward_falls_back_to_f1_when_the_judge_fails() -> None:
    from sagegen.train.rewards import make_outcome_reward

    cfg = JudgeConfig(method="llm", f1_threshold=0.6)
    gold = [["Mira Tolk of Brevik"]]

    def score(url: str, answer: str) -> float:
        fn = make_outcome_reward("llm", judge_llm=_judge_llm(url), judge_cfg=cfg)
        return asyncio.run(
            fn(prompts=[[]], completions=[_rollout(answer)], golden_answers=gold, question=["q"])
        )[0]

    # Server down: F1("Mira Tolk", gold) = 0.8 >= 0.6 passes, F1("Tolk") = 0.4 does not.
    dead = _dead_url()
    assert score(dead, "Mira Tolk") == 1.0 and score(dead, "Tolk") == 0.0
    # Garbage twice (judge_answer asks twice): the same fallback; a readable verdict wins over F1.
    with Grader({"Mira Tolk": NO}, faults=[NONJSON, NONJSON, BADJSON, BADJSON]) as g:
        assert score(g.url, "Mira Tolk") == 1.0
        assert score(g.url, "Tolk") == 0.0
        assert len(g.requests) == 4
        assert score(g.url, "Mira Tolk") == 0.0  # the grader now answers, and says no
        assert len(g.requests) == 5
