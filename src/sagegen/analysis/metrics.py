"""The paper's intrinsic metrics over a run ledger, plus data-quality checks.

Definitions (docs/design.md §1.2), computed from :class:`sagegen.ledger.store.PairRecord`\\ s:

* A pair's *state after round r* is the verdict of its latest verified round ≤ r. The loop stops
  at a pass, so a pair that passed in round 1 still counts as passed "after 3 rounds"; this is
  how the paper's "+1/2/3 feedback rounds" rows are built. A pair enters the round-r table when
  it has a verdict for round r, or when it finished (pass / too easy / incorrect) at an earlier
  round. Pairs whose generator never produced a parsable pair are counted (``gen_failed``) but
  are not in the denominators, because no question exists to verify.
* % correct: share with pass@K ≥ 1; % pass: share correct with difficulty ≥ S;
  Avg@K: mean share of the K attempts judged right (×100, lower = harder);
  mean #search: mean *difficulty* (fewest searches among correct attempts) over correct pairs —
  the "steps" the paper reports; ``mean_attempt_searches`` is the mean over every attempt.
* Difficulty agreement: for correct pairs, generated target S vs measured difficulty.
* An *accepted* round without a verdict of ours (``sagegen import`` of the authors' release: its
  processed_data file accepts a candidate whose judge results were not released) counts as a pass
  in every table, with what the source does not record (difficulty, Avg@K, attempts) unknown:
  left out of the means, never counted as 0.

Everything here is plain Python over records (no ledger access), so tests compute it by hand.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagegen.errors import InputError
from sagegen.ledger.store import PairRecord, RoundRecord
from sagegen.records import Candidate, Verdict

FINAL_STATES = ("pass", "too_easy", "incorrect")


def normalize_text(text: str) -> str:
    """SQuAD-style normalisation (lower, no punctuation/articles, squeezed spaces)."""
    # The judge's, not export.reward's copy: analysis sits below export (export imports analysis).
    from sagegen.verdict.judge import normalize_answer

    return normalize_answer(str(text))


@dataclass(frozen=True)
class Accepted:
    """The verdict of a round accepted by its source without one of ours (see the module doc)."""

    difficulty: int | None
    avg_at_k: float | None
    num_attempts: int | None
    correct: bool = True
    passed: bool = True
    label: str = "pass"


@dataclass(frozen=True)
class Snapshot:
    """One pair's state after some round: the candidate and verdict of its latest verified round."""

    pair: PairRecord
    round: RoundRecord
    accepted: Accepted | None = None

    @property
    def candidate(self) -> Candidate:
        assert self.round.candidate is not None
        return self.round.candidate

    @property
    def verdict(self) -> Verdict | Accepted:
        if self.accepted is not None:
            return self.accepted
        assert self.round.verdict is not None
        return self.round.verdict


def accepted_round(pair: PairRecord) -> tuple[RoundRecord, Accepted] | None:
    """The pair's final round when the pair was accepted there without a verdict of ours."""
    if pair.state != "pass" or pair.qa is None or pair.final_round is None:
        return None
    rnd = next((r for r in pair.rounds if r.round == pair.final_round), None)
    if rnd is None or rnd.candidate is None or rnd.verdict is not None:
        return None
    n = pair.qa.trace_ids.get("num_attempts")
    return rnd, Accepted(pair.qa.difficulty, pair.qa.avg_at_k, n if isinstance(n, int) else None)


def _verified(pair: PairRecord) -> list[Snapshot]:
    out = [Snapshot(pair, r) for r in pair.rounds if r.verdict is not None and r.candidate is not None]
    acc = accepted_round(pair)
    if acc is not None:
        out.append(Snapshot(pair, acc[0], acc[1]))
        out.sort(key=lambda s: s.round.round)
    return out


def snapshot(pair: PairRecord, after_round: int | None = None) -> Snapshot | None:
    """The pair's state after ``after_round`` (``None`` = its latest), or ``None`` if not known yet."""
    verified = _verified(pair)
    if not verified:
        return None
    if after_round is None:
        return verified[-1]
    upto = [s for s in verified if s.round.round <= after_round]
    if not upto:
        return None
    latest = upto[-1]
    if latest.round.round == after_round:
        return latest
    # A later round exists (or may still come) unless the pair finished at ``latest``.
    finished = pair.state in FINAL_STATES and (pair.final_round is None or pair.final_round <= after_round)
    return latest if finished else None


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def summarize(snaps: Sequence[Snapshot]) -> dict[str, Any]:
    """The paper's four numbers (plus counts and distributions) over pair snapshots."""
    n = len(snaps)
    correct = [s for s in snaps if s.verdict.correct]
    passed = [s for s in snaps if s.verdict.passed]
    difficulties = [s.verdict.difficulty for s in correct if s.verdict.difficulty is not None]
    attempt_searches = [a.num_searches for s in snaps for a in s.round.attempts]
    labels = Counter(s.verdict.label for s in snaps)
    # Unknown Avg@K / attempt counts (imported acceptances) are left out of the means, not taken as 0.
    avgs = [a for s in snaps if (a := s.verdict.avg_at_k) is not None]
    return {
        "n": n,
        "correct": len(correct),
        "passed": len(passed),
        "pct_correct": 100.0 * len(correct) / n if n else None,
        "pct_pass": 100.0 * len(passed) / n if n else None,
        "avg_at_k": 100.0 * sum(avgs) / len(avgs) if avgs else None,
        "mean_searches": _mean(difficulties),
        "mean_attempt_searches": _mean(attempt_searches),
        # Avg@K is over the attempts actually run: with early stopping a too-easy pair can be
        # decided after one attempt, so report how many there were.
        "mean_attempts": _mean([k for s in snaps if (k := s.verdict.num_attempts) is not None]),
        "labels": {k: labels.get(k, 0) for k in ("pass", "too_easy", "incorrect")},
        "difficulty_hist": dict(sorted(Counter(difficulties).items())),
        "attempt_searches_hist": dict(sorted(Counter(attempt_searches).items())),
    }


def by_round(pairs: Sequence[PairRecord]) -> dict[int, dict[str, Any]]:
    """State after each round r = 1..max: the paper's per-round table."""
    max_round = max((r.round for p in pairs for r in p.rounds), default=0)
    out: dict[int, dict[str, Any]] = {}
    for r in range(1, max_round + 1):
        snaps = [s for p in pairs if (s := snapshot(p, r)) is not None]
        out[r] = summarize(snaps)
    return out


def round_verdicts(pairs: Sequence[PairRecord]) -> dict[int, dict[str, int]]:
    """What happened *in* each round: generated, generator failures, and each verdict label."""
    out: dict[int, dict[str, int]] = {}
    for p in pairs:
        acc = accepted_round(p)
        for r in p.rounds:
            row = out.setdefault(
                r.round,
                {"generated": 0, "gen_failed": 0, "pass": 0, "too_easy": 0, "incorrect": 0, "unverified": 0},
            )
            row["generated"] += 1
            if r.candidate is None:
                row["gen_failed"] += 1
            elif r.verdict is None:
                row["pass" if acc is not None and acc[0] is r else "unverified"] += 1
            else:
                row[r.verdict.label] += 1
    return dict(sorted(out.items()))


def by_target(pairs: Sequence[PairRecord]) -> dict[int, dict[str, Any]]:
    """Final state per target S."""
    groups: dict[int, list[Snapshot]] = {}
    for p in pairs:
        s = snapshot(p)
        if s is not None:
            groups.setdefault(s.candidate.target, []).append(s)
    return {t: summarize(groups[t]) for t in sorted(groups)}


def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def _ranks(xs: Sequence[float]) -> list[float]:
    """Average ranks (ties share the mean rank), 1-based, for Spearman's rho."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def difficulty_agreement(pairs: Sequence[PairRecord]) -> dict[str, Any]:
    """Target S vs measured difficulty over finally-correct pairs."""
    rows = []
    for p in pairs:
        s = snapshot(p)
        if s is not None and s.verdict.correct and s.verdict.difficulty is not None:
            rows.append((s.candidate.target, s.verdict.difficulty))
    n = len(rows)
    if not n:
        return {
            "n": 0,
            "exact": None,
            "at_least_target": None,
            "mae": None,
            "mean_diff": None,
            "pearson": None,
            "spearman": None,
            "matrix": {},
        }
    ts = [float(t) for t, _ in rows]
    ds = [float(d) for _, d in rows]
    matrix: dict[str, dict[str, int]] = {}
    for t, d in rows:
        cell = matrix.setdefault(str(t), {})
        cell[str(d)] = cell.get(str(d), 0) + 1
    return {
        "n": n,
        "exact": sum(t == d for t, d in rows) / n,
        "at_least_target": sum(d >= t for t, d in rows) / n,
        "mae": sum(abs(t - d) for t, d in rows) / n,
        "mean_diff": sum(d - t for t, d in rows) / n,  # measured minus target: < 0 means easier than asked
        "pearson": _pearson(ts, ds),
        "spearman": _pearson(_ranks(ts), _ranks(ds)),
        "matrix": {
            t: dict(sorted(v.items(), key=lambda kv: int(kv[0])))
            for t, v in sorted(matrix.items(), key=lambda kv: int(kv[0]))
        },
    }


def answer_types(pairs: Sequence[PairRecord]) -> dict[str, dict[str, Any]]:
    """Answer-type mix over all final pairs and over accepted ones, with each type's pass rate."""
    out: dict[str, dict[str, Any]] = {}
    for p in pairs:
        s = snapshot(p)
        if s is None:
            continue
        row = out.setdefault(s.candidate.answer_type, {"n": 0, "passed": 0})
        row["n"] += 1
        row["passed"] += int(s.verdict.passed)
    total = sum(r["n"] for r in out.values())
    for row in out.values():
        row["share"] = row["n"] / total if total else None
        row["pct_pass"] = 100.0 * row["passed"] / row["n"] if row["n"] else None
    return dict(sorted(out.items()))


def answer_leaks(items: Iterable[tuple[str, str, str]]) -> list[dict[str, str]]:
    """(id, question, answer) whose normalised answer appears as whole words in the question."""
    leaks = []
    for pid, question, answer in items:
        a, q = normalize_text(answer), normalize_text(question)
        if a and re.search(rf"(?<!\S){re.escape(a)}(?!\S)", q):
            leaks.append({"id": pid, "question": question, "answer": answer})
    return leaks


# ---------------------------------------------------------------------------- contamination


def load_benchmark(path: str | Path) -> list[dict[str, Any]]:
    """Read a FlashRAG JSONL benchmark (``{"id","question","golden_answers"}``), naming bad lines."""
    from sagegen.jsonl import iter_json_objects

    rows = []
    for no, row in iter_json_objects(path, what="benchmark file"):
        if not isinstance(row.get("question"), str):
            raise InputError("expected a string", path=path, line=no, field="question")
        rows.append(row)
    return rows


def _ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def contamination(
    items: Sequence[tuple[str, str]],
    benchmark: Sequence[dict[str, Any]],
    *,
    n: int = 8,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Overlap of generated questions (id, question) with a benchmark's questions.

    ``exact``: normalised question identical to a benchmark question. ``ngram``: the share of a
    question's word ``n``-grams (the whole question when shorter) found anywhere in the benchmark's
    questions is ≥ ``threshold``. Each flagged question names its closest benchmark id.
    """
    bench_norm: dict[str, str] = {}
    gram_owner: dict[tuple[str, ...], str] = {}
    for i, row in enumerate(benchmark):
        bid = str(row.get("id", i))
        norm = normalize_text(row["question"])
        bench_norm.setdefault(norm, bid)
        for g in _ngrams(norm.split(), n):
            gram_owner.setdefault(g, bid)
    flagged = []
    for pid, question in items:
        norm = normalize_text(question)
        grams = _ngrams(norm.split(), n)
        shared = [gram_owner[g] for g in grams if g in gram_owner]
        overlap = len(shared) / len(grams) if grams else 0.0
        exact = norm in bench_norm
        if exact or overlap >= threshold:
            match = bench_norm[norm] if exact else Counter(shared).most_common(1)[0][0]
            flagged.append(
                {
                    "id": pid,
                    "question": question,
                    "exact": exact,
                    "overlap": round(overlap, 4),
                    "benchmark_id": match,
                }
            )
    total = len(items)
    return {
        "n": total,
        "benchmark_size": len(benchmark),
        "ngram": n,
        "threshold": threshold,
        "exact": sum(1 for f in flagged if f["exact"]),
        "flagged": len(flagged),
        "pct_flagged": 100.0 * len(flagged) / total if total else None,
        "items": flagged,
    }
