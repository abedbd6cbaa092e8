"""Rewards for GRPO with the search tool, built on ``sagegen.verdict.reward.compute_score``.

TRL calls a reward function with ``completions`` (per rollout: the assistant and tool messages
after the prompt) plus every dataset column (``golden_answers``, ``question``, ...) and, with an
``environment_factory``, the per-rollout ``environments``. The outcome reward scores the text
the *model* wrote (assistant messages only, so an ``<answer>`` quoted in a retrieved passage can
never score) with the same function verl uses (``compute_score``: EM on the last ``<answer>``;
``f1`` / ``subem`` by config), or with the LLM judge (``judge_answer``, async).

Every scored rollout is appended to an ``EpisodeLog`` (answer, reward, searches), which the
trainer turns into the per-step accuracy / searches-per-episode figures of the training log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sagegen.verdict.reward import compute_score, extract_answer


def model_text(completion: Any) -> str:
    """The model's own words in one rollout: assistant contents joined (tool results excluded)."""
    if isinstance(completion, str):
        return completion
    return "\n".join(str(m.get("content") or "") for m in completion if m.get("role") == "assistant")


def followed_protocol(completion: Any) -> bool:
    """Format check: the rollout ends with an assistant ``<answer>`` and every earlier assistant
    turn made a tool call (the tools protocol's only other legal move)."""
    if isinstance(completion, str) or not completion:
        return False
    assistants = [m for m in completion if m.get("role") == "assistant"]
    if not assistants or completion[-1].get("role") != "assistant":
        return False
    if extract_answer(str(assistants[-1].get("content") or "")) is None:
        return False
    return all(m.get("tool_calls") for m in assistants[:-1])


@dataclass
class Episode:
    step: int
    question: str
    answer: str | None
    golden: list[str]
    reward: float
    correct: bool
    searches: int
    formatted: bool


@dataclass
class EpisodeLog:
    """Thread-safe list of scored rollouts; ``drain()`` hands over the ones since the last call."""

    episodes: list[Episode] = field(default_factory=list)
    _new: list[Episode] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, items: Sequence[Episode]) -> None:
        with self._lock:
            self.episodes.extend(items)
            self._new.extend(items)

    def drain(self) -> list[Episode]:
        with self._lock:
            out, self._new = self._new, []
            return out


def _searches(environments: Any, i: int) -> int:
    if environments is None:
        return 0
    env = environments[i]
    return int(getattr(env, "num_searches", 0) or 0)


def make_outcome_reward(
    method: str = "em", *, log: EpisodeLog | None = None, judge_llm: Any = None, judge_cfg: Any = None
) -> Callable[..., Any]:
    """The outcome reward: ``em`` / ``f1`` / ``subem`` via ``compute_score``; ``llm`` via the LLM judge."""

    def record(
        kwargs: dict[str, Any],
        completions: Sequence[Any],
        rewards: list[float],
        correct: list[bool] | None = None,
    ) -> None:
        if log is None:
            return
        state = kwargs.get("trainer_state")
        # TRL scores before the update, at the 0-based global_step; the step being trained is one more.
        step = int(getattr(state, "global_step", 0) or 0) + 1
        envs = kwargs.get("environments")
        log.add(
            [
                Episode(
                    step=step,
                    question=str(kwargs.get("question", [""] * len(completions))[i]),
                    answer=extract_answer(model_text(c)),
                    golden=list(kwargs["golden_answers"][i]),
                    reward=rewards[i],
                    # Accuracy is EM whatever the reward shape (F1 = partial credit), unless an LLM judges.
                    correct=correct[i]
                    if correct is not None
                    else compute_score(None, model_text(c), {"target": list(kwargs["golden_answers"][i])})
                    >= 1.0,
                    searches=_searches(envs, i),
                    formatted=followed_protocol(c),
                )
                for i, c in enumerate(completions)
            ]
        )

    if method in ("em", "f1", "subem"):

        def outcome_reward(prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float]:
            rewards = [
                compute_score(
                    kwargs.get("data_source", [None] * len(completions))[i],
                    model_text(c),
                    {"target": list(kwargs["golden_answers"][i])},
                    method=method,
                )
                for i, c in enumerate(completions)
            ]
            record(kwargs, completions, rewards)
            return rewards

        outcome_reward.__name__ = f"outcome_{method}"
        return outcome_reward

    if method == "llm":
        from sagegen.config import JudgeConfig
        from sagegen.verdict.judge import judge_answer

        cfg = judge_cfg or JudgeConfig(method="llm")

        async def outcome_llm(prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float]:
            import asyncio

            judgements = await asyncio.gather(
                *[
                    judge_answer(
                        str(kwargs["question"][i]),
                        extract_answer(model_text(c)),
                        list(kwargs["golden_answers"][i]),
                        judge_llm,
                        cfg,
                    )
                    for i, c in enumerate(completions)
                ]
            )
            rewards = [1.0 if j.correct else 0.0 for j in judgements]
            record(kwargs, completions, rewards, [j.correct for j in judgements])
            return rewards

        outcome_llm.__name__ = "outcome_llm"
        return outcome_llm
    raise ValueError(f"unknown reward {method!r}; use em, f1, subem or llm")


def format_reward(prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1 when the rollout followed the tools protocol and ended with an ``<answer>``, else 0."""
    return [1.0 if followed_protocol(c) else 0.0 for c in completions]
