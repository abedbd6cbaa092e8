"""Several solvers and the ambiguity check: a stricter correctness test than pass@1-of-K (docs/design.md §4).

Several solvers (``solver_llms``, strongest first). Each solver makes its own K attempts (attempt
``s*K + a`` is solver ``s``'s attempt ``a``, so a single solver's ledger is unchanged). A pair is
correct only when at least ``pipeline.min_solvers_agree`` solvers answered it right at least once.
Its difficulty is the fewest searches among the correct attempts of the *strongest solver that
solved it*, where strength is the list order: you name the strongest model first. (Taking the minimum
over every solver would let a weak solver's lucky guess after one search call a hard pair easy; a
fixed order keeps the measure reproducible.) Avg@K is that of the first solver's attempts, the
reference solver; ``num_attempts`` counts the attempts of all solvers.

Ambiguity (``pipeline.ambiguity_check``). The paper found 7% of "incorrect" pairs were ambiguous
questions, and an ambiguous pair that *passes* is worse: a trained agent is rewarded for one answer
among several. For each pair that passes, the judge model (``judge_llm``, else ``llm``) reads the
question, the proposed answer and the passages the solvers and generator retrieved, and says
whether another answer fits them as well. Such a pair keeps its verdict (it did pass) but is labelled
``ambiguous`` and written to ``ambiguous.jsonl`` instead of the dataset.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sagegen.llm.base import LLM
from sagegen.prompts import render
from sagegen.records import Attempt, Candidate, Doc


def may_stop(solver: int, attempt: Attempt, solved_before: bool, target: int) -> bool:
    """Early stop within one solver's K attempts: its remaining attempts cannot change the verdict.

    Once a stronger solver solved the pair, this solver only adds its vote (correct or not); otherwise
    its fewest searches may become the difficulty, which is certain only once it is below S."""
    if not attempt.judgement.correct:
        return False
    return solved_before or attempt.num_searches < target


@dataclass(frozen=True)
class AmbiguityVerdict:
    ambiguous: bool
    other_answer: str | None
    reason: str
    readable: bool = True

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> AmbiguityVerdict:
        return cls(**json.loads(text))


_AMBIGUOUS_RE = re.compile(r"ambiguous[*_\s]*[:：][*_\s]*(yes|no)\b", re.IGNORECASE)
_OTHER_RE = re.compile(r"other[_ ]answer[*_\s]*[:：][*_\s]*(.*)", re.IGNORECASE)
_REASON_RE = re.compile(r"reasoning[*_\s]*[:：][*_\s]*(.*)", re.IGNORECASE)


def parse_ambiguity(text: str) -> AmbiguityVerdict | None:
    """Read ``ambiguous: yes/no`` (the last one wins) and ``other_answer:``; None when unreadable."""
    found = _AMBIGUOUS_RE.findall(text)
    if not found:
        return None
    other = _OTHER_RE.search(text)
    other_answer = other.group(1).strip() if other else None
    if other_answer and other_answer.lower() in ("none", "n/a", "-"):
        other_answer = None
    reason = _REASON_RE.search(text)
    return AmbiguityVerdict(
        ambiguous=found[-1].lower() == "yes",
        other_answer=other_answer or None,
        reason=reason.group(1).strip() if reason else "",
    )


def evidence_ids(cand: Candidate, attempts: Sequence[Attempt], limit: int = 8) -> list[str]:
    """The passages the check shows: those of the correct attempts (fewest searches first), then the
    generator's supporting passages; at most ``limit``, no repeats."""
    ids: dict[str, None] = {}
    for a in sorted((a for a in attempts if a.judgement.correct), key=lambda a: (a.num_searches, a.index)):
        for d in a.trajectory.retrieved_ids:
            ids.setdefault(d, None)
    for d in cand.supporting_ids:
        ids.setdefault(d, None)
    return list(ids)[:limit]


async def check_ambiguity(
    cand: Candidate, evidence: Sequence[Doc], llm: LLM, *, max_tokens: int = 256, passage_chars: int = 600
) -> AmbiguityVerdict:
    """Ask ``llm`` whether an answer other than the candidate's fits the question and the evidence."""
    docs = [{"title": d.title, "text": _clip(d.text, passage_chars)} for d in evidence]
    messages = [
        {
            "role": "user",
            "content": render("ambiguity.j2", question=cand.question, answer=cand.answer, docs=docs),
        }
    ]
    c = await llm.complete(messages, max_tokens=max_tokens, temperature=0.0, seed=0)
    got = parse_ambiguity(c.text)
    if got is None:
        # An unreadable reply is an expected event, not an error: the pair is kept (not ambiguous).
        return AmbiguityVerdict(False, None, f"unreadable reply: {c.text.strip()[:200]!r}", readable=False)
    return got


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if not n or len(text) <= n else text[:n].rstrip() + " ..."
