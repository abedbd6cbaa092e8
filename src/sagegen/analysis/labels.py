"""Optional LLM labelling: reasoning strategies of accepted pairs and why pairs failed.

The paper's categories (DESIGN.md §1): six reasoning strategies (multi-label) for accepted
pairs; for too-easy verdicts one of four shortcut causes; for incorrect verdicts one of four
failure causes. Prompts are ``label_strategies.j2``, ``label_easy.j2``, ``label_incorrect.j2``.

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


def _tasks(store: Any, pairs: list[Any]) -> list[dict[str, Any]]:
    """One labelling prompt per accepted pair (its final round) and per too-easy / incorrect round."""
    tasks = []
    for p in pairs:
        for r in p.rounds:
            if r.candidate is None or r.verdict is None or not r.attempts:
                continue
            right = sorted(
                (a for a in r.attempts if a.judgement.correct), key=lambda a: (a.num_searches, a.index)
            )
            label = r.verdict.label
            if label == "pass" and not (p.output == "dataset" and p.final_round == r.round):
                continue  # only the version of a pair that went into the dataset
            # the trace shown: the cheapest correct attempt, or (incorrect) the first attempt
            att = right[0] if right else r.attempts[0]
            try:
                traj = store.trajectory(att.trace_id)
            except KeyError:
                continue
            c = r.candidate
            common = {"question": c.question, "answer": c.answer, "trace": trace_text(traj)}
            if label == "pass":
                kind, prompt = "strategies", render("label_strategies.j2", **common)
            elif label == "too_easy":
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
        from sagegen.config import LLMConfig, upgrade_stored
        from sagegen.llm.factory import build_llm

        stored = upgrade_stored(store.config)  # a run made by an older sagegen may hold retired keys
        cfg = stored.get("judge_llm") or stored.get("llm") or {}
        llm = build_llm(LLMConfig.model_validate(cfg))
    cache = _Cache(Path(store.run_dir) / LABELS_FILE)
    tasks = _tasks(store, pairs)
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
