"""Optional LLM labelling: reasoning strategies of accepted pairs and why pairs failed.

The paper's categories (docs/design.md §1.5): six reasoning strategies (multi-label) for every accepted
pair — strict, relaxed (accepted although too easy: it also gets a shortcut cause) or imported —
from the cheapest correct attempt's trace, or from question and answer alone when the round kept
no attempt (an imported acceptance); for too-easy verdicts one of four shortcut causes; for
incorrect verdicts one of four failure causes. A benchmark file (``sagegen analyze BENCH.jsonl
--labels``: the paper's SAGE-vs-MuSiQue table) gets strategies from question and gold answer.
Prompts are ``label_strategies.j2``, ``label_strategies_question.j2``, ``label_easy.j2``,
``label_incorrect.j2``.

Every answer is cached in ``RUN/labels.jsonl`` keyed by a hash of the rendered prompt, so a
rerun labels only what is new and a changed prompt relabels.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from sagegen.prompts import render
from sagegen.records import Trajectory

STRATEGIES = (
    "calculation",
    "temporal",
    "inference",
    "conflict_resolution",
    "hypothesis_generation",
    "self_correction",
)
EASY_CAUSES = ("one_document", "direct_search", "merged_hops", "superficial")
INCORRECT_CAUSES = ("retrieval_failure", "reasoning_error", "generator_error", "ambiguous")
LABELS_FILE = "labels.jsonl"
TRACE_CHARS = 6000


def _json_object(text: str) -> dict[str, Any] | None:
    """The last parseable ``{...}`` in ``text`` (models wrap JSON in prose or code fences)."""
    for m in reversed(list(re.finditer(r"\{[^{}]*\}", text, re.DOTALL))):
        try:
            obj = json.loads(m.group(0))
        except json.JSONDecodeError:
            try:  # single quotes / Python booleans
                obj = json.loads(
                    m.group(0).replace("'", '"').replace("True", "true").replace("False", "false")
                )
            except json.JSONDecodeError:
                continue
        if isinstance(obj, dict):
            return obj
    return None


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "yes", "1", "y")
    return bool(v)


def _key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def parse_strategies(text: str) -> dict[str, bool] | None:
    """``{strategy: bool}`` from JSON, or from ``name: yes`` lines; ``None`` when nothing is readable."""
    obj = _json_object(text)
    if obj is not None:
        norm = {_key(k): v for k, v in obj.items()}
        if isinstance(norm.get("strategies"), list):
            chosen = {_key(str(s)) for s in norm["strategies"]}
            return {s: s in chosen for s in STRATEGIES}
        if any(s in norm for s in STRATEGIES):
            return {s: _truthy(norm.get(s, False)) for s in STRATEGIES}
    found: dict[str, bool] = {}
    for s in STRATEGIES:
        pat = s.replace("_", r"[\s_\-]+")
        m = re.search(rf"{pat}\W{{0,3}}\s*[:=\-]\s*\W?(yes|no|true|false)", text, re.IGNORECASE)
        if m:
            found[s] = m.group(1).lower() in ("yes", "true")
    return {s: found.get(s, False) for s in STRATEGIES} if found else None


def parse_cause(text: str, choices: tuple[str, ...]) -> str | None:
    """One of ``choices`` from ``{"cause": ...}``, else the first choice named in the text."""
    obj = _json_object(text)
    if obj is not None:
        cause = obj.get("cause") or obj.get("label") or obj.get("category")
        if isinstance(cause, str) and _key(cause) in choices:
            return _key(cause)
    hits = []
    for c in choices:
        m = re.search(c.replace("_", r"[\s_\-]+"), text, re.IGNORECASE)
        if m:
            hits.append((m.start(), c))
    return min(hits)[1] if hits else None


def trace_text(traj: Trajectory, limit: int = TRACE_CHARS) -> str:
    """The agent's chat without its system prompt, trimmed from the middle when long."""
    parts = [
        f"[{m.get('role')}] {m.get('content') or ''}" for m in traj.messages if m.get("role") != "system"
    ]
    text = "\n".join(parts) or "\n".join(s.text for s in traj.steps if s.text)
    if len(text) > limit:
        text = text[: limit // 2] + "\n[...]\n" + text[-limit // 2 :]
    return text


class _Cache:
    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.data[row["key"]] = row
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a torn last line after a crash: relabel that item

    def add(self, row: dict[str, Any]) -> None:
        self.data[row["key"]] = row
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _strategies_prompt(question: str, answer: str, traj: Trajectory | None) -> str:
    if traj is None:
        return render("label_strategies_question.j2", question=question, answer=answer)
    return render("label_strategies.j2", question=question, answer=answer, trace=trace_text(traj))


def _trace(store: Any, r: Any) -> Trajectory | None:
    """The trace shown: the cheapest correct attempt, else the first attempt; None without attempts."""
    right = sorted((a for a in r.attempts if a.judgement.correct), key=lambda a: (a.num_searches, a.index))
    att = right[0] if right else (r.attempts[0] if r.attempts else None)
    if att is None:
        return None
    try:
        return store.trajectory(att.trace_id)
    except KeyError:
        return None


def _tasks(store: Any, pairs: list[Any]) -> list[dict[str, Any]]:
    """Strategies for each accepted pair (the round that went into the dataset, whatever its verdict);
    a cause for each too-easy / incorrect round that was verified."""
    tasks = []
    for p in pairs:
        for r in p.rounds:
            if r.candidate is None:
                continue
            c = r.candidate
            accepted = p.output == "dataset" and p.final_round == r.round
            traj = _trace(store, r)
            if accepted:
                tasks.append(
                    {
                        "kind": "strategies",
                        "pair": p.index,
                        "round": r.round,
                        "prompt": _strategies_prompt(c.question, c.answer, traj),
                    }
                )
            if r.verdict is None or traj is None:
                continue
            label = r.verdict.label
            common = {"question": c.question, "answer": c.answer, "trace": trace_text(traj)}
            if label == "pass":
                continue
            if label == "too_easy":
                kind = "easy_causes"
                prompt = render(
                    "label_easy.j2",
                    plan=c.plan or "(none)",
                    target=c.target,
                    searches=r.verdict.difficulty,
                    **common,
                )
            else:
                kind = "incorrect_causes"
                prompt = render(
                    "label_incorrect.j2", plan=c.plan or "(none)", predicted=traj.answer or "(none)", **common
                )
            tasks.append({"kind": kind, "pair": p.index, "round": r.round, "prompt": prompt})
    return tasks


def label_run(
    store: Any, pairs: list[Any], *, llm: Any = None, concurrency: int = 4, max_tokens: int = 256
) -> dict[str, Any]:
    """Label every accepted pair and every failed round; returns shares per category."""
    if llm is None:
        from sagegen.config import LLMConfig
        from sagegen.llm.factory import build_llm

        cfg = store.config.get("judge_llm") or store.config.get("llm") or {}
        llm = build_llm(LLMConfig.model_validate(cfg))
    cache = _Cache(Path(store.run_dir) / LABELS_FILE)
    return _label(_tasks(store, pairs), cache, llm, concurrency, max_tokens)


def benchmark_labels_path(bench: str | Path) -> Path:
    """Where ``label_benchmark`` caches its answers: beside the benchmark, ``NAME.labels.jsonl``."""
    b = Path(bench)
    return b.with_name(b.stem + "." + LABELS_FILE)


def label_benchmark(
    bench: str | Path, llm: Any, *, concurrency: int = 4, max_tokens: int = 256
) -> dict[str, Any]:
    """Strategies of every question of a benchmark file (FlashRAG or the other layouts ``eval`` reads),
    from question and first gold answer; the same shares as ``label_run`` (causes: n = 0)."""
    from sagegen.jsonl import iter_json_objects
    from sagegen.loop.benchmark_fields import Fields, read_fields

    path = Path(bench)
    tasks = []
    for no, row in iter_json_objects(path, what="benchmark file"):
        qid, question, golds = read_fields(row, no, path, Fields())
        tasks.append(
            {
                "kind": "strategies",
                "pair": qid,
                "round": None,
                "prompt": _strategies_prompt(question, golds[0], None),
            }
        )
    return _label(tasks, _Cache(benchmark_labels_path(path)), llm, concurrency, max_tokens)


def _label(
    tasks: list[dict[str, Any]], cache: _Cache, llm: Any, concurrency: int, max_tokens: int
) -> dict[str, Any]:
    for t in tasks:
        t["key"] = hashlib.sha256(f"{t['kind']}\n{t['prompt']}".encode()).hexdigest()[:24]

    async def one(t: dict[str, Any], sem: asyncio.Semaphore) -> None:
        if t["key"] in cache.data:
            return
        async with sem:
            c = await llm.complete(
                [{"role": "user", "content": t["prompt"]}], max_tokens=max_tokens, temperature=0.0, seed=0
            )
        if t["kind"] == "strategies":
            value: Any = parse_strategies(c.text)
        else:
            value = parse_cause(c.text, EASY_CAUSES if t["kind"] == "easy_causes" else INCORRECT_CAUSES)
        cache.add(
            {
                "key": t["key"],
                "kind": t["kind"],
                "pair": t["pair"],
                "round": t["round"],
                "value": value,
                "raw": c.text[:2000],
            }
        )

    async def main() -> None:
        sem = asyncio.Semaphore(concurrency)
        await asyncio.gather(*(one(t, sem) for t in tasks))

    asyncio.run(main())
    out: dict[str, Any] = {}
    for kind, cats in (
        ("strategies", STRATEGIES),
        ("easy_causes", EASY_CAUSES),
        ("incorrect_causes", INCORRECT_CAUSES),
    ):
        rows = [cache.data[t["key"]] for t in tasks if t["kind"] == kind]
        parsed = [r["value"] for r in rows if r["value"] is not None]
        counts: Counter[str] = Counter()
        for v in parsed:
            if kind == "strategies":
                counts.update(s for s, on in v.items() if on)
            else:
                counts[v] += 1
        n = len(parsed)
        out[kind] = {
            "n": n,
            "unparsed": len(rows) - n,
            "counts": {c: counts.get(c, 0) for c in cats},
            "pct": {c: 100.0 * counts.get(c, 0) / n if n else 0.0 for c in cats},
            "items": [{"pair": r["pair"], "round": r["round"], "value": r["value"]} for r in rows],
        }
    return out
