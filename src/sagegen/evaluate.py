"""The eval harness behind ``sagegen eval``: a search agent on a FlashRAG-format benchmark.

Each question (``{"id", "question", "golden_answers"}``) is solved K times with distinct seeds
and each attempt judged. A question's result is appended to ``<out>/results.jsonl`` (its
trajectories to ``<out>/trajectories.jsonl``) the moment its last attempt is judged, so a
killed eval loses at most the questions in flight; rerunning the same command skips every id
already in ``results.jsonl``. ``<out>/summary.json`` is rewritten at the end from all results.
Trajectories are written before their result line, so a kill between the two writes can leave a
question's trajectories twice in ``trajectories.jsonl``: readers keep the last per (id, attempt).

Metrics: EM, F1 and judge accuracy are means over all attempts (avg@K); ``pass_at_k`` is the
share of questions with at least one attempt judged correct; cost is counted per question
(LLM calls, prompt/completion tokens, cached calls, seconds of solver+judge time).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagegen import outage
from sagegen.agents.solver import solve
from sagegen.benchmark_fields import Fields, read_fields
from sagegen.config import Config, semantic_view, strip_volatile
from sagegen.errors import ConfigError, InputError, SagegenError
from sagegen.jsonl import iter_json_objects
from sagegen.judge import judge_answer
from sagegen.llm.base import LLM, Message
from sagegen.records import FORMAT_VERSION, Completion
from sagegen.retrieval.base import Retriever
from sagegen.runlock import DirLock

RESULTS = "results.jsonl"
TRAJECTORIES = "trajectories.jsonl"
SUMMARY = "summary.json"
META = "eval_meta.json"


@dataclass(frozen=True)
class BenchItem:
    id: str
    question: str
    golden_answers: tuple[str, ...]


def load_benchmark(
    path: str | Path, limit: int | None = None, fields: Fields | None = None
) -> list[BenchItem]:
    """Read a benchmark JSONL (FlashRAG and other public layouts, ``sagegen.benchmark_fields``);
    a bad line raises ``InputError`` naming the file, line and field."""
    p = Path(path)
    items: list[BenchItem] = []
    seen: dict[str, int] = {}
    for lineno, row in iter_json_objects(p, what="benchmark file"):
        qid, question, golden = read_fields(row, lineno, p, fields or Fields())
        if qid in seen:
            raise InputError(
                f"duplicate id {qid!r} (first on line {seen[qid]})", path=p, line=lineno, field="id"
            )
        seen[qid] = lineno
        items.append(BenchItem(qid, question, tuple(golden)))
        if limit is not None and len(items) >= limit:
            break
    return items


class CountingLLM:
    """Counts one question's calls and tokens on top of a shared backend (per-question cost)."""

    def __init__(self, inner: LLM):
        self.inner = inner
        self.name = inner.name
        self.calls = self.cached = self.prompt_tokens = self.completion_tokens = 0
        self.seconds = 0.0  # generation time reported by the backend, fresh (uncached) calls only

    async def complete(self, messages: Sequence[Message], **kwargs: Any) -> Completion:
        self.calls += 1  # failed calls cost too
        c = await self.inner.complete(messages, **kwargs)
        self.cached += int(c.cached)
        self.prompt_tokens += c.prompt_tokens
        self.completion_tokens += c.completion_tokens
        if not c.cached:
            self.seconds += c.seconds
        return c

    def cost(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}_calls": self.calls,
            f"{prefix}_cached": self.cached,
            f"{prefix}_prompt_tokens": self.prompt_tokens,
            f"{prefix}_completion_tokens": self.completion_tokens,
            f"{prefix}_llm_seconds": round(self.seconds, 3),
        }


def completed_ids(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Results already on disk, by id. A torn last line (killed mid-write) is cut off the file."""
    path = out_dir / RESULTS
    if not path.is_file():
        return {}
    data = path.read_bytes()
    done: dict[str, dict[str, Any]] = {}
    pos = 0
    lines = data.split(b"\n")
    for lineno, raw in enumerate(lines, 1):
        is_last = lineno == len(lines)
        end = pos + len(raw) + (0 if is_last else 1)
        if raw.strip():
            try:
                row = json.loads(raw)
                if not isinstance(row, dict) or "id" not in row:
                    raise ValueError("no id")
                if is_last:  # valid JSON but no newline: complete it so the next append starts clean
                    with path.open("ab") as f:
                        f.write(b"\n")
            except ValueError:
                if is_last or all(not x.strip() for x in lines[lineno:]):
                    with path.open("r+b") as f:
                        f.truncate(pos)
                    break
                raise InputError(
                    "corrupt result line (not the last one); move the file away to restart",
                    path=path,
                    line=lineno,
                ) from None
            done[str(row["id"])] = row
        pos = end
    return done


def _fingerprint(cfg: Config, bench: Path, k: int, seed: int) -> dict[str, Any]:
    dump = cfg.model_dump(mode="json")
    # The sections that decide the answers, less the fields marked volatile (cache paths, timeouts...).
    sections = ("corpus", "retrieval", "llm", "solver_llm", "judge_llm", "solver", "judge")
    keep = strip_volatile({key: dump[key] for key in sections})
    return {"benchmark": str(bench.resolve()), "k": k, "seed": seed, "config": keep}


def check_meta(out_dir: Path, meta: dict[str, Any]) -> None:
    """Refuse to mix results of different settings in one ``out`` folder."""
    path = out_dir / META
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        # A meta written by an older sagegen: its config read as today's, keys it lacks as that eval ran.
        old_cfg, new_cfg = semantic_view(old.get("config", {}), meta["config"])
        if {**old, "config": old_cfg} != {**meta, "config": new_cfg}:
            diff = sorted(
                {k for k in meta if k != "config" and old.get(k) != meta.get(k)}
                | {f"config.{k}" for k in set(old_cfg) | set(new_cfg) if old_cfg.get(k) != new_cfg.get(k)}
            )
            raise ConfigError(
                f"{out_dir} holds results of a different eval (changed: {', '.join(diff)}); "
                "use another --out or pass --restart to discard them"
            )
    else:
        path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")


ProgressHook = Callable[[dict[str, Any]], None]


async def evaluate(
    items: Sequence[BenchItem],
    llm: LLM,
    retriever: Retriever,
    cfg: Config,
    out_dir: str | Path,
    *,
    judge_llm: LLM | None = None,
    k: int = 1,
    concurrency: int = 4,
    seed: int = 0,
    bench_path: str | Path | None = None,
    restart: bool = False,
    on_result: ProgressHook | None = None,
) -> dict[str, Any]:
    """Solve and judge every item not yet in ``out_dir``; return the summary over all ``items``."""
    if k < 1:
        raise ConfigError("--k must be at least 1")
    if concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    out = Path(out_dir)
    with DirLock(out, "eval"):  # one writer per eval folder: two would append every result twice
        return await _evaluate_locked(items, llm, retriever, cfg, out, judge_llm=judge_llm, k=k,
                                      concurrency=concurrency, seed=seed, bench_path=bench_path,
                                      restart=restart, on_result=on_result)


async def _evaluate_locked(
    items: Sequence[BenchItem],
    llm: LLM,
    retriever: Retriever,
    cfg: Config,
    out: Path,
    *,
    judge_llm: LLM | None,
    k: int,
    concurrency: int,
    seed: int,
    bench_path: str | Path | None,
    restart: bool,
    on_result: ProgressHook | None,
) -> dict[str, Any]:
    if restart:
        for name in (RESULTS, TRAJECTORIES, SUMMARY, META):
            (out / name).unlink(missing_ok=True)
    check_meta(out, _fingerprint(cfg, Path(bench_path or "-"), k, seed))
    done = completed_ids(out)
    todo = [it for it in items if it.id not in done]
    sem = asyncio.Semaphore(concurrency)
    lock = asyncio.Lock()

    async def attempt(item: BenchItem, j: int, solver_llm: CountingLLM, judge: CountingLLM | None):
        async with sem:  # FIFO: earlier questions get slots first, so results land roughly in order
            t0 = time.perf_counter()
            traj = await solve(item.question, solver_llm, retriever, cfg.solver, seed=seed + j)
            outage.check_solver(traj, f"question {item.id!r} attempt {j}")  # an outage is no answer
            t1 = time.perf_counter()
            jm = await judge_answer(item.question, traj.answer, item.golden_answers, judge, cfg.judge)
            outage.check_judge(jm, f"question {item.id!r} attempt {j}")
            t2 = time.perf_counter()
        return traj, jm, t1 - t0, t2 - t1

    async def one(item: BenchItem) -> dict[str, Any]:
        solver_llm = CountingLLM(llm)
        judge = CountingLLM(judge_llm) if judge_llm is not None else None
        jobs = [asyncio.ensure_future(attempt(item, j, solver_llm, judge)) for j in range(k)]
        try:
            runs = await asyncio.gather(*jobs)
        except BaseException:  # one attempt hit an outage: the question is unfinished, stop its others
            for job in jobs:
                job.cancel()  # not awaited: gather has retrieved their outcomes, and nothing waits on them
            raise
        attempts = []
        for j, (traj, jm, s_solve, s_judge) in enumerate(runs):
            attempts.append(
                {
                    "index": j,
                    "seed": seed + j,
                    "answer": traj.answer,
                    "status": traj.status,
                    "num_searches": traj.num_searches,
                    "em": jm.em,
                    "f1": jm.f1,
                    "correct": jm.correct,
                    "judge_method": jm.method,
                    "judge_extracted": jm.extracted,
                    "judge_reason": jm.reason,
                    "events": [s.event for s in traj.steps if s.kind == "event"],
                    "solver_seconds": round(s_solve, 3),
                    "judge_seconds": round(s_judge, 3),
                }
            )
        solver_cost = solver_llm.cost("solver")
        # Same keys with zeros when no judge model is used (judge.method em/f1).
        judge_cost = (
            judge.cost("judge") if judge else {k.replace("solver_", "judge_", 1): 0 for k in solver_cost}
        )
        cost = solver_cost | judge_cost
        cost["seconds"] = round(sum(a["solver_seconds"] + a["judge_seconds"] for a in attempts), 3)
        row = {
            "format_version": FORMAT_VERSION,
            "id": item.id,
            "question": item.question,
            "golden_answers": list(item.golden_answers),
            "em": _mean(a["em"] for a in attempts),
            "f1": _mean(a["f1"] for a in attempts),
            "acc": _mean(float(a["correct"]) for a in attempts),
            "pass_at_k": any(a["correct"] for a in attempts),
            "mean_searches": _mean(a["num_searches"] for a in attempts),
            "attempts": attempts,
            "cost": cost,
        }
        async with lock:  # trajectories first: a results line promises its trajectories are on disk
            with (out / TRAJECTORIES).open("a", encoding="utf-8") as f:
                for j, (traj, *_rest) in enumerate(runs):
                    f.write(
                        json.dumps(
                            {
                                "id": item.id,
                                "attempt": j,
                                "seed": seed + j,
                                "trajectory": traj.model_dump(mode="json"),
                            }
                        )
                        + "\n"
                    )
            with (out / RESULTS).open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
        if on_result is not None:
            on_result(row)
        return row

    t_start = time.perf_counter()
    tasks = [asyncio.create_task(one(it)) for it in todo]
    # A backend that is down fails every question: stop after this many in a row (as generate does).
    max_in_a_row, in_a_row = max(3, concurrency), 0
    last_error = ""
    try:
        for t in asyncio.as_completed(tasks):
            try:
                row = await t
            except SagegenError as e:  # not stored: the next run retries this question
                in_a_row, last_error = in_a_row + 1, str(e)
                if in_a_row >= max_in_a_row:
                    break
                continue
            in_a_row = 0
            done[row["id"]] = row
    finally:
        for t in tasks:
            t.cancel()
    wall = time.perf_counter() - t_start
    rows = [done[it.id] for it in items if it.id in done]
    summary = summarize(rows, k=k)
    summary["new_questions"] = len(todo)
    summary["unfinished"] = len([it for it in todo if it.id not in done])
    summary["last_error"] = last_error
    summary["wall_seconds_this_run"] = round(wall, 2)
    summary["config_hash"] = hashlib.sha256(
        json.dumps(_fingerprint(cfg, Path(bench_path or "-"), k, seed), sort_keys=True).encode()
    ).hexdigest()[:12]
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _mean(xs: Any) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def summarize(rows: Sequence[dict[str, Any]], *, k: int) -> dict[str, Any]:
    """Aggregate per-question rows: accuracy metrics (avg@K) and cost per question."""
    attempts = [a for r in rows for a in r["attempts"]]
    n = len(rows)
    statuses = [a["status"] for a in attempts]

    def cost(key: str) -> float:
        return round(_mean(r["cost"].get(key, 0) for r in rows), 2)

    return {
        "questions": n,
        "k": k,
        "attempts": len(attempts),
        "em": round(_mean(a["em"] for a in attempts), 4),
        "f1": round(_mean(a["f1"] for a in attempts), 4),
        "judge_acc": round(_mean(float(a["correct"]) for a in attempts), 4),
        "pass_at_k": round(_mean(float(r["pass_at_k"]) for r in rows), 4),
        "em_pass_at_k": round(_mean(float(any(a["em"] == 1.0 for a in r["attempts"])) for r in rows), 4),
        "mean_searches": round(_mean(a["num_searches"] for a in attempts), 3),
        "answered": round(_mean(float(s == "answered") for s in statuses), 4),
        "forced": round(_mean(float(s == "forced") for s in statuses), 4),
        "failed": round(_mean(float(s == "failed") for s in statuses), 4),
        "judge_methods": {
            m: sum(1 for a in attempts if a["judge_method"] == m)
            for m in sorted({a["judge_method"] for a in attempts})
        },
        "per_question": {
            "solver_calls": cost("solver_calls"),
            "judge_calls": cost("judge_calls"),
            "prompt_tokens": round(
                _mean(
                    r["cost"].get("solver_prompt_tokens", 0) + r["cost"].get("judge_prompt_tokens", 0)
                    for r in rows
                ),
                1,
            ),
            "completion_tokens": round(
                _mean(
                    r["cost"].get("solver_completion_tokens", 0) + r["cost"].get("judge_completion_tokens", 0)
                    for r in rows
                ),
                1,
            ),
            "cached_calls": round(
                _mean(r["cost"].get("solver_cached", 0) + r["cost"].get("judge_cached", 0) for r in rows), 2
            ),
            "seconds": cost("seconds"),
            "llm_seconds": round(
                _mean(
                    r["cost"].get("solver_llm_seconds", 0) + r["cost"].get("judge_llm_seconds", 0)
                    for r in rows
                ),
                2,
            ),
        },
    }


def summary_table(summary: dict[str, Any], title: str = "eval") -> Any:
    """A rich Table of the summary (imported lazily: the library core does not need rich)."""
    from rich.table import Table

    t = Table(title=title, show_header=True)
    t.add_column("metric")
    t.add_column("value", justify="right")
    k = summary["k"]
    rows = [
        ("questions", str(summary["questions"])),
        (f"attempts (K={k})", str(summary["attempts"])),
        (f"EM (avg@{k})", f"{summary['em']:.3f}"),
        (f"F1 (avg@{k})", f"{summary['f1']:.3f}"),
        (f"judge acc (avg@{k})", f"{summary['judge_acc']:.3f}"),
        (f"pass@{k} (judge)", f"{summary['pass_at_k']:.3f}"),
        (f"pass@{k} (EM)", f"{summary['em_pass_at_k']:.3f}"),
        ("mean searches", f"{summary['mean_searches']:.2f}"),
        (
            "answered / forced / failed",
            f"{summary['answered']:.2f} / {summary['forced']:.2f} / {summary['failed']:.2f}",
        ),
        ("judge methods", ", ".join(f"{m}={c}" for m, c in summary["judge_methods"].items()) or "-"),
    ]
    pq = summary["per_question"]
    rows += [
        ("LLM calls / question", f"{pq['solver_calls']:.1f} solver + {pq['judge_calls']:.1f} judge"),
        ("tokens / question", f"{pq['prompt_tokens']:.0f} prompt + {pq['completion_tokens']:.0f} completion"),
        ("cached calls / question", f"{pq['cached_calls']:.1f}"),
        ("seconds / question", f"{pq['seconds']:.1f} ({pq.get('llm_seconds', 0):.1f} generating)"),
    ]
    for name, value in rows:
        t.add_row(name, value)
    return t


def default_eval_dir(bench: Path) -> Path:
    """``evals/<name>``; a generic file name (``questions.jsonl``) gets its folder's name too."""
    stem = bench.stem
    if stem in ("questions", "dev", "test", "train", "validation", "data") and bench.parent.name:
        stem = f"{bench.parent.name}_{stem}"
    return Path("evals") / stem


def build_stack(cfg: Config, *, with_judge: bool) -> tuple[LLM, LLM | None, Retriever]:
    """The solver LLM, the judge LLM (None unless ``judge.method=llm``) and the retriever.

    When the judge uses the same LLM config as the solver the backend is built once: an
    embedded model would otherwise be loaded into memory twice.
    """
    from sagegen.llm.factory import build_llm
    from sagegen.retrieval.factory import build_retriever

    solver_cfg = cfg.solver_llm or cfg.llm
    llm = build_llm(solver_cfg)
    judge_llm: LLM | None = None
    if with_judge and cfg.judge.method == "llm":
        judge_cfg = cfg.judge_llm or cfg.llm
        judge_llm = llm if judge_cfg == solver_cfg else build_llm(judge_cfg)
    return llm, judge_llm, build_retriever(cfg)


def step_markup(step: Any) -> str:
    """One trajectory step as a line of rich markup, for ``sagegen solve``'s live view."""
    from rich.markup import escape

    if step.kind == "search":
        return f"[bold cyan]search[/] {escape(step.query or '')!s} [dim]→ {escape(step.text)}[/]"
    if step.kind == "event":
        detail = f" [dim]{escape(step.text[:160])}[/]" if step.text else ""
        return f"[bold yellow]event[/] {escape(step.event or '')}{detail}"
    text = " ".join(step.text.split())
    return (
        f"[bold green]model[/] [dim]({step.completion_tokens} tok, {step.seconds:.1f}s)[/] "
        f"{escape(text[:400])}"
    )
