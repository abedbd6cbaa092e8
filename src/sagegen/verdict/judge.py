"""Answer checking: SQuAD/Search-R1 normalisation, EM and token F1, and a BrowseComp-style LLM judge.

``exact_match`` and ``f1_score`` take the max over several golden answers, as Search-R1 and
FlashRAG do. ``judge_answer`` asks an LLM to grade a prediction with the BrowseComp grader
prompt (``prompts/judge.j2``); its reply is parsed tolerantly, retried once when unreadable,
and otherwise falls back to F1 ≥ threshold (recorded as ``method="f1_fallback"``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sagegen.config import JudgeConfig
from sagegen.errors import ConfigError, LLMError
from sagegen.llm.base import LLM, Message
from sagegen.records import Judgement
from sagegen.verdict.reward import normalize_answer  # the one SQuAD normalisation (stdlib-only there)


def _goldens(golden: str | Sequence[str]) -> list[str]:
    return [golden] if isinstance(golden, str) else [g for g in golden if isinstance(g, str)]


def exact_match(prediction: str | None, golden: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised golden answer."""
    if prediction is None:
        return 0.0
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in _goldens(golden)))


def _f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction), normalize_answer(gold)
    # FlashRAG / HotpotQA convention: yes/no answers only score on an exact match.
    if p in ("yes", "no", "noanswer") and p != g:
        return 0.0
    if g in ("yes", "no", "noanswer") and p != g:
        return 0.0
    pt, gt = p.split(), g.split()
    common = Counter(pt) & Counter(gt)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pt), same / len(gt)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str | None, golden: str | Sequence[str]) -> float:
    """Token F1 (SQuAD), max over golden answers."""
    if prediction is None:
        return 0.0
    return max((_f1(prediction, g) for g in _goldens(golden)), default=0.0)


@dataclass(frozen=True)
class GraderReply:
    correct: bool
    extracted: str | None
    reasoning: str
    confidence: int | None


_FIELD = r"[*_#\s]*{name}[*_\s]*[:：][*_\s]*"
_CORRECT_RE = re.compile(
    r"(?:^|\n|\s)"
    + _FIELD.format(name=r"correct")
    + r"[\"'`\[(]*\s*(yes|no|true|false|correct|incorrect|y|n)\b",
    re.IGNORECASE,
)
_EXTRACTED_RE = re.compile(_FIELD.format(name=r"extracted[_ ]final[_ ]answer") + r"(.*)", re.IGNORECASE)
_REASONING_RE = re.compile(
    _FIELD.format(name=r"reasoning") + r"(.*?)(?=\n[*_#\s]*(?:correct|confidence)[*_\s]*[:：]|\Z)",
    re.IGNORECASE | re.DOTALL,
)
_CONFIDENCE_RE = re.compile(_FIELD.format(name=r"confidence") + r"(\d{1,3})", re.IGNORECASE)


def parse_grader(text: str, *, first: bool = False) -> GraderReply | None:
    """Read a BrowseComp grader reply; None when it has no readable ``correct: yes/no``.

    Tolerates markdown bold (``**correct:** Yes``), quotes, full-width colons, true/false
    wording and extra prose; the last ``correct:`` line wins (a model may restate the format first),
    or with ``first`` the first one (the authors' release reads it with ``re.search``).
    """
    matches = _CORRECT_RE.findall(text)
    if not matches:
        return None
    verdict = matches[0 if first else -1].lower() in ("yes", "true", "correct", "y")
    extracted = None
    m = _EXTRACTED_RE.search(text)
    if m:
        extracted = m.group(1).strip().strip("*").strip().strip("\"'`").strip() or None
        if extracted is not None and extracted.lower() in ("none", "n/a", "null"):
            extracted = None
    r = _REASONING_RE.search(text)
    c = _CONFIDENCE_RE.search(text)
    return GraderReply(
        correct=verdict,
        extracted=extracted,
        reasoning=r.group(1).strip() if r else "",
        confidence=min(int(c.group(1)), 100) if c else None,
    )


async def judge_answer(
    question: str,
    predicted: str | None,
    golden: Sequence[str],
    llm: LLM | None,
    cfg: JudgeConfig,
) -> Judgement:
    """Mark ``predicted`` against ``golden`` with ``cfg.method`` (em, f1 or llm).

    ``Judgement.method`` says what decided: ``none`` (no prediction, no call), ``em``, ``f1``,
    ``llm``, ``f1_fallback`` (the judge failed twice; ``reason`` says how), or ``unreadable``
    (``judge.unreadable: incorrect``: one unreadable reply makes the attempt incorrect).
    """
    goldens = _goldens(golden)
    if predicted is None or not predicted.strip():
        return Judgement(correct=False, em=0.0, f1=0.0, extracted=None, reason="no answer", method="none")
    em, f1 = exact_match(predicted, goldens), f1_score(predicted, goldens)
    if cfg.method == "em":
        return Judgement(correct=em == 1.0, em=em, f1=f1, extracted=predicted, method="em")
    if cfg.method == "f1":
        return Judgement(correct=f1 >= cfg.f1_threshold, em=em, f1=f1, extracted=predicted, method="f1")
    if cfg.em_shortcut and em == 1.0:
        return Judgement(correct=True, em=em, f1=f1, extracted=predicted, reason="exact match", method="em")
    if llm is None:
        raise ConfigError(
            "judge.method=llm needs a judge LLM (set judge_llm or llm), or use judge.method=em|f1"
        )

    messages: list[Message] = [
        {
            "role": "user",
            "content": cfg.prompts("judge.j2", question=question, response=predicted, golden=goldens),
        }
    ]
    problems: list[str] = []
    max_tokens = cfg.max_tokens
    for attempt in range(2 if cfg.unreadable == "retry_then_f1" else 1):
        try:
            c = await llm.complete(messages, max_tokens=max_tokens, temperature=cfg.temperature, seed=attempt)
        except LLMError as e:
            problems.append(f"judge call failed: {e}")
            continue
        reply = parse_grader(c.text, first=cfg.verdict_line == "first")
        if reply is not None:
            reason = reply.reasoning + (
                f" (confidence {reply.confidence})" if reply.confidence is not None else ""
            )
            return Judgement(
                correct=reply.correct,
                em=em,
                f1=f1,
                extracted=reply.extracted,
                reason=reason.strip(),
                method="llm",
            )
        if c.finish_reason == "length" and not c.text.strip():
            # A thinking judge spent its cap on thoughts: the same question with twice the room (the
            # cap and seed make it a new call for the cache); judge.max_tokens is the lasting fix.
            problems.append(f"judge reply empty at its cap of {max_tokens} tokens (raise judge.max_tokens)")
            max_tokens = min(2 * max_tokens, 65536)
            continue
        problems.append(f"unreadable judge reply: {c.text.strip()[:200]!r}")
        # A follow-up message (not a bare re-ask) so the call cache cannot replay the same reply.
        messages = [
            *messages,
            {"role": "assistant", "content": c.text},
            {"role": "user", "content": cfg.prompts("judge_retry.j2")},
        ]
    if cfg.unreadable == "incorrect":  # the release: no verdict is not a "yes"
        failed = any(p.startswith("judge call failed") for p in problems)
        return Judgement(
            correct=False,
            em=em,
            f1=f1,
            extracted=predicted,
            reason="; ".join(problems),
            method="unreadable",
            llm_failed=failed,
        )
    return Judgement(
        correct=f1 >= cfg.f1_threshold,
        em=em,
        f1=f1,
        extracted=predicted,
        reason="; ".join(problems),
        method="f1_fallback",
        llm_failed=any(p.startswith("judge call failed") for p in problems),
    )
