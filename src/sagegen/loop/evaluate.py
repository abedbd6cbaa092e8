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
(LLM calls, prompt/completion tokens, cached calls, model seconds) and timed on the wall: a
question's own seconds from its first attempt to its last judgement, and the run's wall time per
question (its attempts and questions run side by side, so neither is a sum of concurrent waits).
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

from sagegen.agents import outage
from sagegen.agents.solver import solve
from sagegen.config import Config, semantic_view, strip_volatile
from sagegen.errors import ConfigError, InputError, SagegenError, without_url_credentials
from sagegen.jsonl import iter_json_objects
from sagegen.ledger.lock import DirLock
from sagegen.llm.accounting import AccountingLLM
from sagegen.llm.base import LLM
from sagegen.loop.benchmark_fields import Fields, read_fields
from sagegen.records import FORMAT_VERSION, Judgement, Trajectory
from sagegen.retrieval.base import Retriever
from sagegen.verdict.judge import judge_answer

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
    """Read a benchmark JSONL (FlashRAG and other public layouts, ``sagegen.loop.benchmark_fields``);
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
    keep = without_url_credentials(strip_volatile({key: dump[key] for key in sections}))
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
        return await _evaluate_locked(
            items,
            llm,
            retriever,
            cfg,
            out,
            judge_llm=judge_llm,
            k=k,
            concurrency=concurrency,
            seed=seed,
            bench_path=bench_path,
            restart=restart,
            on_result=on_result,
        )


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
    fingerprint = _fingerprint(cfg, Path(bench_path or "-"), k, seed)
    check_meta(out, fingerprint)
    done = completed_ids(out)
    todo = [it for it in items if it.id not in done]
    sem = asyncio.Semaphore(concurrency)
    lock = asyncio.Lock()

    async def one(item: BenchItem) -> dict[str, Any]:
        row, runs = await _question(item, llm, judge_llm, retriever, cfg, k=k, seed=seed, sem=sem)
        async with lock:
            _append(out, item, row, runs, seed)
        if on_result is not None:
            on_result(row)
        return row

    t_start = time.perf_counter()
    last_error = await _run_stopping_on_outage([one(it) for it in todo], done, max(3, concurrency))
    wall = time.perf_counter() - t_start
    rows = [done[it.id] for it in items if it.id in done]
    new_done = sum(1 for it in todo if it.id in done)
    summary = summarize(rows, k=k)
    summary["new_questions"] = len(todo)
    summary["unfinished"] = len(todo) - new_done
    summary["last_error"] = last_error
    summary["wall_seconds_this_run"] = round(wall, 2)
    # Wall time per question this run: what a user waits, concurrency included (not the sum of waits).
    summary["wall_seconds_per_question_this_run"] = round(wall / new_done, 2) if new_done else None
    summary["config_hash"] = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
    summary["replies"] = reply_totals(rows)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def reply_totals(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per role over the rows: calls, and those cut at the cap, empty, thinking (rows written by an
    older sagegen lack the last three: counted as 0)."""
    out: dict[str, dict[str, int]] = {}
    for role in ("solver", "judge"):
        tot = {
            k: int(sum(r.get("cost", {}).get(f"{role}_{k}", 0) for r in rows))
            for k in ("calls", "cut", "empty", "thinking")
        }
        if tot["calls"]:
            out[role] = tot
    return out


async def _run_stopping_on_outage(jobs: list[Any], done: dict[str, dict[str, Any]], max_in_a_row: int) -> str:
    """Run the question jobs, adding each row to ``done``; a backend that is down fails every question,
    so stop after ``max_in_a_row`` failures in a row (as generate does). Returns the last error."""
    tasks = [asyncio.ensure_future(j) for j in jobs]
    in_a_row, last_error = 0, ""
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
    return last_error


async def _question(
    item: BenchItem,
    llm: LLM,
    judge_llm: LLM | None,
    retriever: Retriever,
    cfg: Config,
    *,
    k: int,
    seed: int,
    sem: asyncio.Semaphore,
) -> tuple[dict[str, Any], list[tuple[Trajectory, Judgement, float, float]]]:
    """K attempts at one question (concurrent, each under ``sem``), judged; its result row."""
    solver_llm = AccountingLLM(llm, "solver")
    judge = AccountingLLM(judge_llm, "judge") if judge_llm is not None else None

    async def attempt(j: int) -> tuple[Trajectory, Judgement, float, float]:
        async with sem:  # FIFO: earlier questions get slots first, so results land roughly in order
            where = f"question {item.id!r} attempt {j}"
            t0 = time.perf_counter()
            traj = await solve(item.question, solver_llm, retriever, cfg.solver, seed=seed + j)
            outage.check_solver(traj, where)  # an outage is no answer
            t1 = time.perf_counter()
            jm = await judge_answer(item.question, traj.answer, item.golden_answers, judge, cfg.judge)
            outage.check_judge(jm, where)
        return traj, jm, t1 - t0, time.perf_counter() - t1

    t0 = time.perf_counter()
    jobs = [asyncio.ensure_future(attempt(j)) for j in range(k)]
    try:
        runs = await asyncio.gather(*jobs)
    except BaseException:  # one attempt hit an outage: the question is unfinished, stop its others
        for job in jobs:
            job.cancel()  # not awaited: gather has retrieved their outcomes, and nothing waits on them
        raise
    attempts = [_attempt_row(j, seed, *run) for j, run in enumerate(runs)]
    solver_cost = solver_llm.cost("solver")
    # Same keys with zeros when no judge model is used (judge.method em/f1).
    judge_cost = judge.cost("judge") if judge else {c.replace("solver_", "judge_", 1): 0 for c in solver_cost}
    # The question's own wall time, first attempt to last judgement (its attempts run side by side).
    cost = solver_cost | judge_cost | {"seconds": round(time.perf_counter() - t0, 3)}
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
    return row, runs


def _attempt_row(j: int, seed: int, traj: Trajectory, jm: Judgement, s_solve: float, s_judge: float) -> dict:
    return {
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


def _append(out: Path, item: BenchItem, row: dict[str, Any], runs: list[Any], seed: int) -> None:
    """Trajectories first: a results line promises its trajectories are on disk."""
    with (out / TRAJECTORIES).open("a", encoding="utf-8") as f:
        for j, (traj, *_rest) in enumerate(runs):
            rec = {"id": item.id, "attempt": j, "seed": seed + j, "trajectory": traj.model_dump(mode="json")}
            f.write(json.dumps(rec) + "\n")
    with (out / RESULTS).open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


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
    if cfg.solver.prompt_set == "searchr1":  # Search-R1's rollout continues token ids (agents.searchr1)
        from sagegen.agents.searchr1_ports import with_token_port

        llm = with_token_port(llm, solver_cfg)
    return llm, judge_llm, build_retriever(cfg)
