"""The SAGE loop (docs/design.md §1) over many seeds: generate → verify K times → feedback, up to R rounds.

One pair, one screen (:meth:`Pipeline.run_pair`)::

    for round in 1..R:
        candidate = stored round, or generate (round 1 / resample) or revise (feedback)
        attempts  = stored attempts + solve×K (distinct seeds), each judged
        verdict   = Verdict.decide([attempts], target)                # pass / too_easy / incorrect
        stop when passed, or after one round with strategy "none"
    finish: the last verdict labels the pair; it goes to dataset / too_easy / unsolved.jsonl

Determinism and resume. Every random choice derives from ``pipeline.seed`` and the pair index
(seed passage, target S, answer type), and every LLM call's ``seed`` from (run seed, pair, round,
attempt) via :func:`sagegen.ledger.store.derive_seed`; so a rerun makes the very same calls, which the
persistent call cache answers, and units already in the ledger (a generation, an attempt, a
verdict, a finished pair) are read back instead of recomputed at all.

Early stop (``pipeline.early_stop``, docs/design.md §5.3). The only verdict that can be decided before all
K attempts have run is *too easy*: once some attempt is correct with fewer than S searches, the
fewest-searches-among-correct is already below S whatever the remaining attempts do. (A pass can
still turn into too-easy, and "incorrect" needs every attempt to fail, so neither stops early.)
The remaining attempts are skipped; the verdict's ``num_attempts`` says how many ran and its
``avg_at_k`` is over those attempts only — for early-stopped too-easy pairs it overstates Avg@K
(the attempts that ran are biased towards success). Accepted pairs always ran all K attempts,
so the Avg@K of the dataset is exact; compare Avg@K of rejected pairs only with early stop off.
Attempts run one after another within a pair (that is what makes early stop deterministic);
parallelism comes from ``pipeline.concurrency`` pairs in flight.

This module is the loop and its typed results only: the run's wiring and life (lock, ledger,
sessions) are ``sagegen.loop.session``; what happens reaches the caller as ``sagegen.events``, and the
command line draws it (``sagegen.cli.display``).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sagegen.agents import outage
from sagegen.agents.feedback_fit import context_budget_tokens
from sagegen.agents.generator import Authored, generate, revise
from sagegen.config import Config
from sagegen.errors import ConfigError, SagegenError
from sagegen.events import (
    Event,
    EventSink,
    PairFailed,
    PairFinished,
    PairStage,
    PairStarted,
    RoundFinished,
    RunStarted,
)
from sagegen.ids import derive_seed, trace_id
from sagegen.ledger.damage import LedgerError
from sagegen.ledger.outcomes import outcome
from sagegen.ledger.store import RunStore
from sagegen.llm.accounting import AccountingLLM
from sagegen.llm.base import LLM
from sagegen.records import AnswerType, Attempt, Candidate, Doc, Judgement, QAPair, Trajectory, Verdict
from sagegen.targets import parse_target

if TYPE_CHECKING:
    from sagegen.loop.session import Components

FINISHED = ("pass", "too_easy", "incorrect", "failed")
OUTPUT_FOR_LABEL = {"pass": "dataset", "too_easy": "too_easy", "incorrect": "unsolved"}
RoundKind = Literal["generate", "resample", "feedback"]


@dataclass
class Stats:
    """This session's pairs, kept from the events the pipeline emits (the summary reads them). Calls are
    not counted here: the accounting wrappers count them, the ledger books them (``RunResult.calls``)."""

    total: int = 0
    already_done: int = 0
    done: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    #: Finished pairs per outcome (sagegen.ledger.outcomes): where they ended, as the files hold them.
    outcomes: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    last_error: str = ""

    def count(self, event: Event) -> None:
        if isinstance(event, PairFinished):
            self.done += 1
            self.labels[event.label] = self.labels.get(event.label, 0) + 1
            if event.outcome:
                self.outcomes[event.outcome] = self.outcomes.get(event.outcome, 0) + 1
        elif isinstance(event, PairFailed):
            self.errors += 1
            self.last_error = f"pair {event.index}: {event.error}"


class FailureStreak:
    """A backend that is down fails every pair: the run stops after this many failures in a row
    (at least 3, else one per pair in flight), whichever executor runs the pairs."""

    def __init__(self, concurrency: int):
        self.limit, self.count = max(3, concurrency), 0

    def ok(self) -> None:
        self.count = 0

    def failed(self) -> None:
        self.count += 1

    @property
    def stopped(self) -> bool:
        return self.count >= self.limit

    def error(self, last: str) -> SagegenError:
        return SagegenError(
            f"stopped after {self.count} pairs in a row failed; the last: {last}\n"
            "everything finished so far is kept; fix the cause and rerun the same command"
        )


async def run_lanes(n: int, lane: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """``n`` copies of ``lane`` at once, whichever executor runs the pairs; the first to fail (or a
    cancel from outside) cancels the others and waits until they have stopped, then raises."""
    tasks = [asyncio.create_task(lane()) for _ in range(n)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


@dataclass(frozen=True)
class PairSpec:
    index: int
    doc: Doc
    target: int
    answer_type: AnswerType


@dataclass(frozen=True)
class RoundResult:
    """One verified round of a pair: what the generator wrote, how the solvers did, the verdict."""

    round: int
    candidate: Candidate
    generation: Trajectory
    attempts: list[Attempt]
    verdict: Verdict


class Pipeline:
    """Runs pairs ``0..num_seeds-1`` of one run, skipping those the ledger has finished.

    Built from ``(cfg, store, parts)`` alone, so a worker process can make its own from the run
    directory (``RunStore.open`` + ``Components.from_config``) and call :meth:`run_pair`.
    """

    def __init__(
        self,
        cfg: Config,
        store: RunStore,
        parts: Components,
        *,
        run_name: str = "",
        on_event: EventSink | None = None,
    ):
        self.cfg, self.store, self.parts = cfg, store, parts
        self.pcfg = cfg.pipeline
        self.run_name = run_name or store.run_dir.name
        self.targets = parse_target(self.pcfg.target)
        self.stats = Stats()
        self.on_event = on_event

        def llm(inner: LLM, role: str) -> AccountingLLM:
            return AccountingLLM(inner, role, ledger=store, on_event=self.emit)

        self.gen_llm = llm(parts.generator, "generator")
        self.solver_llm = llm(parts.solver, "solver")
        self.judge_llm = llm(parts.judge, "judge") if parts.judge else None
        # Solver 1 keeps the role "solver"; further ones are "solver2", "solver3"... (list order = strength).
        extra = [llm(s, f"solver{i}") for i, s in enumerate(parts.extra_solvers, 2)]
        self.solvers = [self.solver_llm, *extra]
        self.ambiguity_llm = (
            llm(parts.judge or parts.generator, "ambiguity") if self.pcfg.ambiguity_check else None
        )
        self.docs_by_id = {d.id: d for d in parts.docs}
        if not cfg.generator.answer_types:
            raise ConfigError("generator.answer_types: must name at least one of number, date, entity")
        self.rounds = 1 if self.pcfg.strategy == "none" else self.pcfg.rounds

    @property
    def llms(self) -> list[AccountingLLM]:
        """Every accounting wrapper of this pipeline (one per role)."""
        extra = [x for x in (self.judge_llm, self.ambiguity_llm) if x is not None]
        return [self.gen_llm, *self.solvers, *extra]

    def calls_made(self) -> tuple[int, int, int]:
        """(calls, cached, tokens) this process made so far, as its accounting wrappers counted them."""
        return (
            sum(x.calls for x in self.llms),
            sum(x.cached for x in self.llms),
            sum(x.prompt_tokens + x.completion_tokens for x in self.llms),
        )

    def emit(self, event: Event) -> None:
        self.stats.count(event)
        if self.on_event is not None:
            self.on_event(event)

    # -- run -----------------------------------------------------------------------------

    async def run(self) -> Stats:
        """Run every unfinished pair; errors leave a pair for the next run."""
        todo = self.todo()
        self.emit(self.run_started())
        await self.run_in_process(todo)
        return self.stats

    def run_started(self) -> RunStarted:
        s = self.stats
        return RunStarted(
            s.total, s.already_done, dict(s.labels), dict(s.outcomes), self.rounds, self.pcfg.concurrency
        )

    def finished(self, idx: int, label: str) -> PairFinished:
        """The event of a finished pair, with its outcome as the ledger recorded it."""
        rec = self.store.pair(idx)
        return PairFinished(idx, label, outcome(rec.state, rec.output) if rec is not None else "")

    def todo(self) -> list[int]:
        """The pairs not finished by earlier sessions (those are counted in ``stats`` as already done)."""
        todo = []
        for idx in range(self.pcfg.num_seeds):
            rec = self.store.pair(idx)
            if rec is not None and rec.state in FINISHED:
                self.stats.already_done += 1
                state = "ambiguous" if rec.output == "ambiguous" else rec.state  # as run_pair returned it
                self.stats.labels[state] = self.stats.labels.get(state, 0) + 1
                out = outcome(rec.state, rec.output)
                self.stats.outcomes[out] = self.stats.outcomes.get(out, 0) + 1
            else:
                todo.append(idx)
        self.stats.total = self.pcfg.num_seeds
        return todo

    async def run_in_process(self, todo: list[int]) -> None:
        """This process's dispatch: ``concurrency`` asyncio workers take pairs from ``todo`` in order.
        (``pipeline.workers`` > 1 or Ray hand the same ``todo`` to sagegen.loop.scale instead.)"""
        queue: asyncio.Queue[int] = asyncio.Queue()
        for idx in todo:
            queue.put_nowait(idx)
        streak = FailureStreak(self.pcfg.concurrency)

        async def worker() -> None:
            while not streak.stopped and not queue.empty():
                idx = queue.get_nowait()
                self.emit(PairStarted(idx))
                try:
                    self.emit(self.finished(idx, await self.run_pair(idx)))
                    streak.ok()
                except LedgerError:
                    raise  # the ledger cannot be written (disk full, read-only): nothing can go on
                except SagegenError as e:
                    # An LLM or retrieval failure after retries: log it, leave the pair unfinished so
                    # the next run retries it, and carry on with the others.
                    streak.failed()
                    self.store.event("pair_error", f"{type(e).__name__}: {e}", idx)
                    self.emit(PairFailed(idx, str(e)))

        await run_lanes(min(self.pcfg.concurrency, len(todo)) or 1, worker)
        if streak.stopped:
            raise streak.error(self.stats.last_error)

    def spec(self, idx: int) -> PairSpec:
        """The pair's seed passage, target S and answer type: from the ledger, else drawn (seeded)."""
        rec = self.store.pair(idx)
        if rec is not None:
            doc = self.docs_by_id.get(rec.seed_doc_id)
            if doc is None:
                raise ConfigError(
                    f"pair {idx}: seed passage {rec.seed_doc_id!r} is not in the corpus any more"
                )
            return PairSpec(idx, doc, rec.target, rec.answer_type)
        rng = random.Random(derive_seed(self.pcfg.seed, "pair", idx))
        if self.pcfg.seed_sampling == "stratified":
            doc = self.parts.docs[self._strata().pick(idx, rng)]
        else:
            doc = self.parts.docs[rng.randrange(len(self.parts.docs))]
        target = self.targets.sample(rng)
        answer_type = rng.choice(self.cfg.generator.answer_types)
        self.store.add_pair(idx, doc.id, target, answer_type)
        return PairSpec(idx, doc, target, answer_type)

    def _strata(self) -> Any:
        """Topic clusters of the corpus for stratified seeds (sagegen.loop.seeds), built on first use."""
        if getattr(self, "_seed_strata", None) is None:
            from sagegen.loop.seeds import StratifiedSeeds

            self._seed_strata = StratifiedSeeds(
                self.parts.docs, self.pcfg.seed, self.pcfg.seed_clusters, self.parts.retriever
            )
            self.store.event(
                "seed_clusters",
                f"{len(self._seed_strata.members)} clusters over "
                f"{self._seed_strata.vectors} vectors of {len(self.parts.docs)} passages",
            )
        return self._seed_strata

    async def run_pair(self, idx: int) -> str:
        """The SAGE loop for one seed; returns the final state (pass / too_easy / incorrect / failed)."""
        spec = self.spec(idx)
        rec = self.store.pair(idx)
        stored = {r.round: r for r in (rec.rounds if rec else ())}
        last: RoundResult | None = None
        for rnd in range(1, self.rounds + 1):
            kind: RoundKind = (
                "generate"
                if last is None and rnd == 1
                else "resample"
                if self.pcfg.strategy == "resample" or last is None
                else "feedback"
            )
            if rnd in stored:  # resume: the ledger has this round's generation
                gen_tid = stored[rnd].gen_trace_id or trace_id(f"p{idx}", f"r{rnd}", "gen")
                cand, gen_traj = stored[rnd].candidate, self.store.trajectory(gen_tid)
            else:
                cand, gen_traj = await self.author(spec, rnd, kind, last)
            if cand is None:
                self.emit(RoundFinished(idx, rnd, None))
                if last is None and self.pcfg.on_no_pair == "drop":
                    break
                continue
            attempts, verdict = await self.verify(idx, rnd, cand)
            last = RoundResult(rnd, cand, gen_traj, attempts, verdict)
            self.emit(RoundFinished(idx, rnd, verdict.label))
            if verdict.passed:
                break
        # Only pairs bound for the dataset are checked (a pass below the training floor is not).
        ambiguous = (
            last is not None
            and last.verdict.passed
            and self.ambiguity_llm is not None
            and (last.verdict.difficulty or 0) >= self.pcfg.min_difficulty_for_dataset
            and await self.ambiguity(idx, last.round, last.candidate, last.attempts)
        )
        return self._finish(spec, last, ambiguous=ambiguous)

    async def author(
        self, spec: PairSpec, rnd: int, kind: RoundKind, last: RoundResult | None
    ) -> tuple[Candidate | None, Trajectory]:
        """Write round ``rnd``'s pair (generate, resample or revise with feedback) and store it."""
        self.emit(PairStage(spec.index, rnd, "generator"))
        authored = await self._write(spec, rnd, kind, last)
        cand, traj = authored.candidate, authored.trajectory
        self.store.add_round(spec.index, rnd, kind, cand, trace_id(f"p{spec.index}", f"r{rnd}", "gen"), traj)
        if cand is None:
            self.store.event("generation_failed", f"{traj.agent} gave no usable pair", spec.index, rnd)
        return cand, traj

    async def _write(self, spec: PairSpec, rnd: int, kind: RoundKind, last: RoundResult | None) -> Authored:
        seed = derive_seed(self.pcfg.seed, "gen", spec.index, rnd)
        temp, gcfg = self.cfg.generator.temperature, self.cfg.generator
        if kind != "feedback" or last is None:
            return await generate(
                spec.doc,
                spec.target,
                spec.answer_type,
                self.gen_llm,
                self.parts.retriever,
                gcfg,
                seed=seed,
                temperature=temp,
                round=rnd,
            )
        solver_traj = self.pick_solver_trace(spec.index, rnd, last.attempts)
        budget = context_budget_tokens(self.cfg)
        return await revise(
            spec.doc,
            last.candidate,
            last.generation,
            solver_traj,
            last.verdict,
            self.gen_llm,
            self.parts.retriever,
            gcfg,
            seed=seed,
            temperature=temp,
            round=rnd,
            budget_tokens=budget,
        )

    def pick_solver_trace(self, idx: int, rnd: int, attempts: list[Attempt]) -> Trajectory:
        """The solver trace shown in feedback: a correct one (the fewest searches: the shortcut) if
        any, else one at random (seeded by run seed, pair and round)."""
        right = [a for a in attempts if a.judgement.correct]
        if right:
            return min(right, key=lambda a: (a.num_searches, a.index)).trajectory
        rng = random.Random(derive_seed(self.pcfg.seed, "feedback-trace", idx, rnd))
        if self.pcfg.feedback_trace == "answered":
            attempts = [a for a in attempts if a.trajectory.answer] or attempts
        return attempts[rng.randrange(len(attempts))].trajectory

    async def verify(self, idx: int, rnd: int, cand: Candidate) -> tuple[list[Attempt], Verdict]:
        """The shortcut pre-check, then K attempts per solver (stored ones reused), each judged; early
        stop once the verdict is certain (see the module notes and sagegen.verdict.agreement.may_stop)."""
        from sagegen.verdict.agreement import may_stop

        rec = self.store.pair(idx)
        rrec = next((r for r in rec.rounds if r.round == rnd), None) if rec else None
        pre = await self.precheck(idx, rnd, cand)
        if pre is not None and not self.pcfg.precheck_compare:
            verdict = Verdict.decide([[pre]], cand.target, source="precheck")
            if rrec is None or rrec.verdict != verdict:
                self.store.set_verdict(idx, rnd, verdict)
            return [pre], verdict
        done = {a.index: a for a in (rrec.attempts if rrec else ())}
        k = self.pcfg.attempts
        per_solver: list[list[Attempt]] = []
        for s, llm in enumerate(self.solvers):
            mine: list[Attempt] = []
            solved_before = any(x.judgement.correct for atts in per_solver for x in atts)
            for a in range(s * k, (s + 1) * k):
                tid = trace_id(f"p{idx}", f"r{rnd}", f"a{a}")
                if a in done:
                    traj, judgement = self.store.trajectory(done[a].trace_id), done[a].judgement
                else:
                    traj, judgement = await self.attempt(idx, rnd, a, tid, cand, llm)
                mine.append(Attempt(index=a, trajectory=traj, judgement=judgement))
                if self.pcfg.early_stop and may_stop(s, mine[-1], solved_before, cand.target):
                    if a + 1 < (s + 1) * k and a not in done:
                        self.store.event(
                            "early_stop",
                            f"attempt {a} correct in {traj.num_searches} searches "
                            + (
                                "(a stronger solver already solved it)"
                                if solved_before
                                else f"< target {cand.target}: too easy"
                            ),
                            idx,
                            rnd,
                        )
                    break
            per_solver.append(mine)
        attempts = [x for atts in per_solver for x in atts]
        verdict = Verdict.decide(per_solver, cand.target, self.pcfg.min_solvers_agree)
        if pre is not None:  # precheck_compare: the solvers decide; record whether they agree
            agree = verdict.label == "too_easy"
            self.store.event(
                "precheck_compare",
                json.dumps(
                    {
                        "agree": agree,
                        "solver_label": verdict.label,
                        "difficulty": verdict.difficulty,
                        "query": pre.trajectory.steps[0].query,
                        "evidence": pre.trajectory.steps[0].hit_ids[0],
                    }
                ),
                idx,
                rnd,
            )
        if rrec is None or rrec.verdict != verdict:
            self.store.set_verdict(idx, rnd, verdict)
        return attempts, verdict

    async def precheck(self, idx: int, rnd: int, cand: Candidate) -> Attempt | None:
        """The retriever-only shortcut check (sagegen.verdict.precheck); an Attempt of agent ``precheck``,
        or None."""
        from sagegen.verdict.precheck import applies, find_shortcut, shortcut_trajectory

        if not applies(cand, self.pcfg.precheck):
            return None
        shortcut = await find_shortcut(
            cand, self.parts.retriever, self.cfg.solver.topk, self.pcfg.precheck_subquestions
        )
        if shortcut is None:
            return None
        traj = shortcut_trajectory(cand, shortcut, self.cfg.solver.passage_chars)
        # Stored on every pass (deterministic, no model call), so a resumed run shows the same evidence.
        self.store.add_trajectory(trace_id(f"p{idx}", f"r{rnd}", "pre"), traj, idx, rnd)
        judgement = Judgement(
            correct=True,
            em=1.0,
            f1=1.0,
            extracted=cand.answer,
            method="precheck",
            reason=f"answer in passage {shortcut.evidence.doc.id!r} for {shortcut.query!r}",
        )
        return Attempt(index=-1, trajectory=traj, judgement=judgement)

    async def ambiguity(self, idx: int, rnd: int, cand: Candidate, attempts: list[Attempt]) -> bool:
        """Whether the judge model finds another answer that fits (stored as an ``ambiguity`` event)."""
        from sagegen.verdict.agreement import AmbiguityVerdict, check_ambiguity, evidence_ids

        for ev in self.store.events(idx):
            if ev.kind == "ambiguity" and ev.round == rnd:
                return AmbiguityVerdict.from_json(ev.message).ambiguous
        assert self.ambiguity_llm is not None
        self.emit(PairStage(idx, rnd, "judge"))
        docs = [self.docs_by_id[d] for d in evidence_ids(cand, attempts) if d in self.docs_by_id]
        got = await check_ambiguity(cand, docs, self.ambiguity_llm, max_tokens=self.cfg.judge.max_tokens)
        self.store.event("ambiguity", got.to_json(), idx, rnd)
        return got.ambiguous

    async def attempt(
        self, idx: int, rnd: int, a: int, tid: str, cand: Candidate, llm: LLM | None = None
    ) -> tuple[Trajectory, Judgement]:
        from sagegen.agents.solver import solve
        from sagegen.verdict.judge import judge_answer

        seed = derive_seed(self.pcfg.seed, "solve", idx, rnd, a)
        self.emit(PairStage(idx, rnd, "solver"))
        traj = await solve(
            cand.question, llm or self.solver_llm, self.parts.retriever, self.cfg.solver, seed=seed
        )
        # An outage is never stored as a verdict: the pair stays unfinished and the next run retries
        # it (cached calls are free). See sagegen.agents.outage.
        where = f"pair {idx} round {rnd} attempt {a}"
        outage.check_solver(traj, where)
        self.emit(PairStage(idx, rnd, "judge"))
        judgement = await judge_answer(
            cand.question, traj.answer, [cand.answer], self.judge_llm, self.cfg.judge
        )
        outage.check_judge(judgement, where)
        self.store.add_attempt(idx, rnd, a, seed, tid, traj, judgement)
        return traj, judgement

    def _finish(
        self,
        spec: PairSpec,
        last: RoundResult | None,
        *,
        ambiguous: bool = False,
    ) -> str:
        from sagegen.verdict.judge import normalize_answer

        idx = spec.index
        if last is None:
            self.store.finish_pair(idx, "failed", None, None, None, None)
            return "failed"
        rnd, cand, attempts, verdict = last.round, last.candidate, last.attempts, last.verdict
        qa = QAPair(
            id=f"{self.run_name}-{idx}",
            question=cand.question,
            answer=cand.answer,
            answer_type=cand.answer_type,
            answer_type_found=cand.answer_type_found,
            target=cand.target,
            difficulty=verdict.difficulty,
            avg_at_k=verdict.avg_at_k,
            label="ambiguous" if ambiguous else verdict.label,
            round=rnd,
            seed_doc_id=cand.seed_doc_id,
            supporting_ids=cand.supporting_ids,
            plan=cand.plan,
            trace_ids={
                "generation": trace_id(f"p{idx}", f"r{rnd}", "gen"),
                "attempts": [trace_id(f"p{idx}", f"r{rnd}", f"a{a.index}") for a in attempts if a.index >= 0],
                **(
                    {"precheck": trace_id(f"p{idx}", f"r{rnd}", "pre")}
                    if verdict.source == "precheck"
                    else {}
                ),
                "num_attempts": verdict.num_attempts,
                "rounds": [trace_id(f"p{idx}", f"r{r}", "gen") for r in range(1, rnd + 1)],
            },
            run_id=self.run_name,
        )
        output = OUTPUT_FOR_LABEL[verdict.label]
        if (
            verdict.label == "too_easy"
            and self.pcfg.final_round_relaxed
            and self.rounds > 1
            and rnd == self.rounds
        ):
            # The release's last round keeps every pair some attempt answered; labelled, not disguised.
            output, qa = "dataset", qa.model_copy(update={"acceptance": "relaxed"})
        if output == "dataset" and (verdict.difficulty or 0) < self.pcfg.min_difficulty_for_dataset:
            output = "too_easy"  # passed its own target but is below the training floor (docs/design.md §1.4)
        if ambiguous:
            # a verified pass whose question admits another answer (sagegen.verdict.agreement)
            output = "ambiguous"
        key = cand.question if self.pcfg.dedup == "exact" else normalize_answer(cand.question)
        written = self.store.finish_pair(idx, verdict.label, rnd, qa, output, key)
        if written is not None:
            self.store.append_output(written, qa)  # after the commit: the file never runs ahead of the ledger
        return "ambiguous" if ambiguous else verdict.label
