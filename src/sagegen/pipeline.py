"""The SAGE loop (DESIGN §1) over many seeds: generate → verify K times → feedback, up to R rounds.

One pair, one screen (:meth:`Pipeline.run_pair`)::

    for round in 1..R:
        candidate = stored round, or generate (round 1 / resample) or revise (feedback)
        attempts  = stored attempts + solve×K (distinct seeds), each judged
        verdict   = Verdict.from_attempts(attempts, target)          # pass / too_easy / incorrect
        stop when passed, or after one round with strategy "none"
    finish: the last verdict labels the pair; it goes to dataset / too_easy / unsolved.jsonl

Determinism and resume. Every random choice derives from ``pipeline.seed`` and the pair index
(seed passage, target S, answer type), and every LLM call's ``seed`` from (run seed, pair, round,
attempt) via :func:`sagegen.store.derive_seed`; so a rerun makes the very same calls, which the
persistent call cache answers, and units already in the ledger (a generation, an attempt, a
verdict, a finished pair) are read back instead of recomputed at all.

Early stop (``pipeline.early_stop``, DESIGN §4). The only verdict that can be decided before all
K attempts have run is *too easy*: once some attempt is correct with fewer than S searches, the
fewest-searches-among-correct is already below S whatever the remaining attempts do. (A pass can
still turn into too-easy, and "incorrect" needs every attempt to fail, so neither stops early.)
The remaining attempts are skipped; the verdict's ``num_attempts`` says how many ran and its
``avg_at_k`` is over those attempts only — for early-stopped too-easy pairs it overstates Avg@K
(the attempts that ran are biased towards success). Accepted pairs always ran all K attempts,
so the Avg@K of the dataset is exact; compare Avg@K of rejected pairs only with early stop off.
Attempts run one after another within a pair (that is what makes early stop deterministic);
parallelism comes from ``pipeline.concurrency`` pairs in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sagegen import outage
from sagegen.agents.feedback_fit import context_budget_tokens
from sagegen.agents.generator import Authored, generate, revise
from sagegen.config import Config, LLMConfig
from sagegen.damage import LedgerError
from sagegen.errors import ConfigError, SagegenError
from sagegen.llm.base import LLM, Message, collect_tries, endpoint_source
from sagegen.records import Attempt, Candidate, Doc, Judgement, QAPair, Trajectory, Verdict
from sagegen.retrieval.base import Retriever
from sagegen.store import RunStore, derive_seed, trace_id
from sagegen.targets import parse_target

FINISHED = ("pass", "too_easy", "incorrect", "failed")
OUTPUT_FOR_LABEL = {"pass": "dataset", "too_easy": "too_easy", "incorrect": "unsolved"}


# ---------------------------------------------------------------------------- LLM accounting


class AccountingLLM:
    """Records every call of one role in the ledger (tokens, seconds, cache hit) and in live stats."""

    def __init__(self, inner: LLM, role: str, store: RunStore | None, stats: Stats):
        self.inner, self.role, self.store, self.stats = inner, role, store, stats
        self.name = inner.name
        if store is not None and (counted := endpoint_source(inner)) is not None:
            store.watch_endpoints(inner.name, counted)  # per-endpoint counts booked with the calls

    async def complete(self, messages: list[Message] | Any, **kw: Any) -> Any:
        t0 = time.monotonic()
        with collect_tries() as tries:  # every request the backend sends for this call, retries included
            try:
                comp = await self.inner.complete(messages, **kw)
            except SagegenError as e:
                if self.store is not None:
                    self.store.record_call(self.role, self.name, 0, 0, time.monotonic() - t0, False,
                                           str(e)[:500], tries=tries)
                raise
        # Model time of a call counts its failed tries and the waits between them, not just the last try.
        secs = sum(t.seconds + t.wait for t in tries) if tries else (comp.seconds or (time.monotonic() - t0))
        if self.store is not None:
            self.store.record_call(
                self.role,
                self.name,
                comp.prompt_tokens,
                comp.completion_tokens,
                secs if not comp.cached else 0.0,
                comp.cached,
                tries=tries,
            )
        self.stats.calls += 1
        self.stats.cached += int(comp.cached)
        self.stats.tokens += comp.prompt_tokens + comp.completion_tokens
        return comp


@dataclass
class Components:
    """What a run needs besides its config and ledger: the corpus, one retriever, an LLM per role."""

    docs: list[Doc]
    retriever: Retriever
    generator: LLM
    solver: LLM
    judge: LLM | None
    #: Further solvers after ``solver`` (``solver_llms``, strongest first; sagegen.solvers).
    extra_solvers: list[LLM] = field(default_factory=list)

    @staticmethod
    def open_corpus(cfg: Config) -> tuple[list[Doc], Retriever]:
        """The seed passages and the retriever; errors (a mistyped path, no local corpus) come first."""
        from sagegen.retrieval.factory import open_corpus_and_retriever

        if cfg.solver_llms and cfg.solver_llm is not None:
            raise ConfigError("set either solver_llm or solver_llms (the list replaces it), not both")
        docs, retriever = open_corpus_and_retriever(cfg)
        if not docs:
            raise ConfigError(
                "the generator samples seed passages from a local corpus: set corpus.path (the retriever "
                f"kind {cfg.retrieval.kind!r} has none), or leave it unset for the bundled corpus"
            )
        return list(docs), retriever

    @classmethod
    def from_config(cls, cfg: Config) -> Components:
        from sagegen.llm.factory import build_llm

        docs, retriever = cls.open_corpus(cfg)
        built: dict[str, LLM] = {}

        def get(c: LLMConfig | None) -> LLM:
            c = c or cfg.llm
            key = c.model_dump_json()
            if key not in built:  # one instance per distinct config: the embedded model loads once
                built[key] = build_llm(c)
            return built[key]

        judge = get(cfg.judge_llm) if cfg.judge.method == "llm" else None
        solvers = [get(c) for c in cfg.solver_llms] or [get(cfg.solver_llm)]
        return cls(list(docs), retriever, get(cfg.llm), solvers[0], judge, solvers[1:])

    def close(self) -> None:
        seen: set[int] = set()
        for llm in (self.generator, self.solver, self.judge, *self.extra_solvers):
            if llm is not None and id(llm) not in seen:
                seen.add(id(llm))
                close = getattr(llm, "close", None)
                if callable(close):
                    with contextlib.suppress(Exception):
                        close()


# ---------------------------------------------------------------------------- progress


@dataclass
class Stats:
    """Live counters for the progress display and the final summary (this session)."""

    total: int = 0
    already_done: int = 0
    done: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    last_error: str = ""
    calls: int = 0
    cached: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        lab = self.labels
        return (
            f"accepted {lab.get('pass', 0)} · too easy {lab.get('too_easy', 0)} · "
            f"incorrect {lab.get('incorrect', 0)} · failed {lab.get('failed', 0)}"
            + (f" · ambiguous {lab['ambiguous']}" if lab.get("ambiguous") else "")
            + (f" · errors {self.errors}" if self.errors else "")
            + f" · calls {self.calls} ({self.cached} cached) · tokens {self.tokens:,}"
        )


ProgressHook = Callable[[Stats], None]


# ---------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class PairSpec:
    index: int
    doc: Doc
    target: int
    answer_type: str


class Pipeline:
    """Runs pairs ``0..num_seeds-1`` of one run, skipping those the ledger has finished."""

    def __init__(
        self,
        cfg: Config,
        store: RunStore,
        parts: Components,
        *,
        run_name: str = "",
        on_progress: ProgressHook | None = None,
    ):
        self.cfg, self.store, self.parts = cfg, store, parts
        self.pcfg = cfg.pipeline
        self.run_name = run_name or store.run_dir.name
        self.targets = parse_target(self.pcfg.target)
        self.stats = Stats()
        self.on_progress = on_progress
        self.gen_llm = AccountingLLM(parts.generator, "generator", store, self.stats)
        self.solver_llm = AccountingLLM(parts.solver, "solver", store, self.stats)
        self.judge_llm = AccountingLLM(parts.judge, "judge", store, self.stats) if parts.judge else None
        # Solver 1 keeps the role "solver"; further ones are "solver2", "solver3"... (list order = strength).
        self.solvers = [self.solver_llm] + [
            AccountingLLM(s, f"solver{i}", store, self.stats) for i, s in enumerate(parts.extra_solvers, 2)
        ]
        self.ambiguity_llm = (
            AccountingLLM(parts.judge or parts.generator, "ambiguity", store, self.stats)
            if self.pcfg.ambiguity_check else None
        )
        self.docs_by_id = {d.id: d for d in parts.docs}
        if not cfg.generator.answer_types:
            raise ConfigError("generator.answer_types: must name at least one of number, date, entity")
        self.rounds = 1 if self.pcfg.strategy == "none" else self.pcfg.rounds

    # -- run -----------------------------------------------------------------------------

    async def run(self) -> Stats:
        """Run every unfinished pair with ``concurrency`` in flight; errors leave a pair for the next run."""
        todo = []
        for idx in range(self.pcfg.num_seeds):
            rec = self.store.pair(idx)
            if rec is not None and rec.state in FINISHED:
                self.stats.already_done += 1
                state = "ambiguous" if rec.output == "ambiguous" else rec.state  # as run_pair returned it
                self.stats.labels[state] = self.stats.labels.get(state, 0) + 1
            else:
                todo.append(idx)
        self.stats.total = self.pcfg.num_seeds
        self._tick()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for idx in todo:
            queue.put_nowait(idx)

        # A backend that is down fails every pair: stop after this many failures in a row.
        max_in_a_row = max(3, self.pcfg.concurrency)
        in_a_row = 0

        async def worker() -> None:
            nonlocal in_a_row
            while in_a_row < max_in_a_row:
                try:
                    idx = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    label = await self.run_pair(idx)
                    self.stats.labels[label] = self.stats.labels.get(label, 0) + 1
                    self.stats.done += 1
                    in_a_row = 0
                except LedgerError:
                    raise  # the ledger cannot be written (disk full, read-only): nothing can go on
                except SagegenError as e:
                    # An LLM or retrieval failure after retries: log it, leave the pair unfinished so
                    # the next run retries it, and carry on with the others.
                    self.stats.errors += 1
                    self.stats.last_error = f"pair {idx}: {e}"
                    in_a_row += 1
                    self.store.event("pair_error", f"{type(e).__name__}: {e}", idx)
                self._tick()

        workers = [asyncio.create_task(worker()) for _ in range(min(self.pcfg.concurrency, len(todo)) or 1)]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        if in_a_row >= max_in_a_row:
            raise SagegenError(
                f"stopped after {in_a_row} pairs in a row failed; the last: {self.stats.last_error}\n"
                "everything finished so far is kept; fix the cause and rerun the same command")
        return self.stats

    def _tick(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.stats)

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
        """Topic clusters of the corpus for stratified seeds (sagegen.seeds), built on first use."""
        if getattr(self, "_seed_strata", None) is None:
            from sagegen.seeds import StratifiedSeeds

            self._seed_strata = StratifiedSeeds(self.parts.docs, self.pcfg.seed, self.pcfg.seed_clusters,
                                                self.parts.retriever)
            self.store.event("seed_clusters", f"{len(self._seed_strata.members)} clusters over "
                             f"{self._seed_strata.vectors} vectors of {len(self.parts.docs)} passages")
        return self._seed_strata

    async def run_pair(self, idx: int) -> str:
        """The SAGE loop for one seed; returns the final state (pass / too_easy / incorrect / failed)."""
        spec = self.spec(idx)
        stored = {r.round: r for r in (self.store.pair(idx).rounds if self.store.pair(idx) else ())}
        last: tuple[int, Candidate, Trajectory, list[Attempt], Verdict] | None = None
        for rnd in range(1, self.rounds + 1):
            kind = (
                "generate"
                if last is None and rnd == 1
                else ("resample" if self.pcfg.strategy == "resample" or last is None else "feedback")
            )
            gen_tid = trace_id(f"p{idx}", f"r{rnd}", "gen")
            if rnd in stored:
                cand = stored[rnd].candidate
                gen_traj = self.store.trajectory(stored[rnd].gen_trace_id or gen_tid)
            else:
                authored = await self._author(spec, rnd, kind, last)
                cand, gen_traj = authored.candidate, authored.trajectory
                self.store.add_round(idx, rnd, kind, cand, gen_tid, gen_traj)
                if cand is None:
                    self.store.event("generation_failed", f"{gen_traj.agent} gave no usable pair", idx, rnd)
            if cand is None:
                if last is None and self.pcfg.protocol == "sage":
                    break  # the release drops a seed whose generation wrote no pair; it never resamples it
                continue
            attempts, verdict = await self.verify(idx, rnd, cand)
            last = (rnd, cand, gen_traj, attempts, verdict)
            if verdict.passed:
                break
        ambiguous = False
        # Only pairs bound for the dataset are checked (a pass below the training floor is not).
        if (last is not None and last[4].passed and self.ambiguity_llm is not None
                and (last[4].difficulty or 0) >= self.pcfg.min_difficulty_for_dataset):
            ambiguous = await self.ambiguity(idx, last[0], last[1], last[3])
        return self._finish(spec, last, ambiguous=ambiguous)

    async def _author(
        self,
        spec: PairSpec,
        rnd: int,
        kind: str,
        last: tuple[int, Candidate, Trajectory, list[Attempt], Verdict] | None,
    ) -> Authored:
        seed = derive_seed(self.pcfg.seed, "gen", spec.index, rnd)
        temp = self.cfg.llm.temperature
        if kind == "feedback" and last is not None:
            _, cand, own, attempts, verdict = last
            solver_traj = self.pick_solver_trace(spec.index, rnd, attempts)
            budget = context_budget_tokens(self.cfg)
            if not self.cfg.generator.feedback_search:  # the release's reviser: one call, no search tool
                from sagegen.profiles import sage

                return await sage.revise(spec.doc, cand, own, solver_traj, verdict, self.gen_llm,
                                         self.cfg.generator, seed=seed, temperature=temp, round=rnd,
                                         budget_tokens=budget)
            return await revise(
                spec.doc,
                cand,
                own,
                solver_traj,
                verdict,
                self.gen_llm,
                self.parts.retriever,
                self.cfg.generator,
                seed=seed,
                temperature=temp,
                round=rnd,
                budget_tokens=budget,
            )
        return await generate(
            spec.doc,
            spec.target,
            spec.answer_type,
            self.gen_llm,
            self.parts.retriever,
            self.cfg.generator,
            seed=seed,
            temperature=temp,
            round=rnd,
        )

    def pick_solver_trace(self, idx: int, rnd: int, attempts: list[Attempt]) -> Trajectory:
        """The solver trace shown in feedback: a correct one (the fewest searches: the shortcut) if
        any, else one at random (seeded by run seed, pair and round)."""
        right = [a for a in attempts if a.judgement.correct]
        if right:
            return min(right, key=lambda a: (a.num_searches, a.index)).trajectory
        rng = random.Random(derive_seed(self.pcfg.seed, "feedback-trace", idx, rnd))
        if self.pcfg.protocol == "sage":  # the release draws among attempts that gave some answer
            attempts = [a for a in attempts if a.trajectory.answer] or attempts
        return attempts[rng.randrange(len(attempts))].trajectory

    async def verify(self, idx: int, rnd: int, cand: Candidate) -> tuple[list[Attempt], Verdict]:
        """The shortcut pre-check, then K attempts per solver (stored ones reused), each judged; early
        stop once the verdict is certain (see the module notes and sagegen.solvers.may_stop)."""
        from sagegen.solvers import agreement_verdict, may_stop

        rec = self.store.pair(idx)
        rrec = next((r for r in rec.rounds if r.round == rnd), None) if rec else None
        pre = await self.precheck(idx, rnd, cand)
        if pre is not None and not self.pcfg.precheck_compare:
            verdict = precheck_verdict(pre)
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
                            + ("(a stronger solver already solved it)" if solved_before
                               else f"< target {cand.target}: too easy"),
                            idx,
                            rnd,
                        )
                    break
            per_solver.append(mine)
        attempts = [x for atts in per_solver for x in atts]
        verdict = agreement_verdict(per_solver, cand.target, self.pcfg.min_solvers_agree)
        if pre is not None:  # precheck_compare: the solvers decide; record whether they agree
            agree = verdict.label == "too_easy"
            self.store.event("precheck_compare", json.dumps(
                {"agree": agree, "solver_label": verdict.label, "difficulty": verdict.difficulty,
                 "query": pre.trajectory.steps[0].query, "evidence": pre.trajectory.steps[0].hit_ids[0]}),
                idx, rnd)
        if rrec is None or rrec.verdict != verdict:
            self.store.set_verdict(idx, rnd, verdict)
        return attempts, verdict

    async def precheck(self, idx: int, rnd: int, cand: Candidate) -> Attempt | None:
        """The retriever-only shortcut check (sagegen.precheck); an Attempt of agent ``precheck``, or None."""
        from sagegen.precheck import applies, find_shortcut, shortcut_trajectory

        if not applies(cand, self.pcfg.precheck):
            return None
        shortcut = await find_shortcut(cand, self.parts.retriever, self.cfg.solver.topk,
                                       self.pcfg.precheck_subquestions)
        if shortcut is None:
            return None
        traj = shortcut_trajectory(cand, shortcut, self.cfg.solver.passage_chars)
        # Stored on every pass (deterministic, no model call), so a resumed run shows the same evidence.
        self.store.add_trajectory(trace_id(f"p{idx}", f"r{rnd}", "pre"), traj, idx, rnd)
        judgement = Judgement(correct=True, em=1.0, f1=1.0, extracted=cand.answer, method="precheck",
                              reason=f"answer in passage {shortcut.evidence.doc.id!r} for {shortcut.query!r}")
        return Attempt(index=-1, trajectory=traj, judgement=judgement)

    async def ambiguity(self, idx: int, rnd: int, cand: Candidate, attempts: list[Attempt]) -> bool:
        """Whether the judge model finds another answer that fits (stored as an ``ambiguity`` event)."""
        from sagegen.solvers import AmbiguityVerdict, check_ambiguity, evidence_ids

        for ev in self.store.events(idx):
            if ev.kind == "ambiguity" and ev.round == rnd:
                return AmbiguityVerdict.from_json(ev.message).ambiguous
        assert self.ambiguity_llm is not None
        docs = [self.docs_by_id[d] for d in evidence_ids(cand, attempts) if d in self.docs_by_id]
        got = await check_ambiguity(cand, docs, self.ambiguity_llm, max_tokens=self.cfg.judge.max_tokens)
        self.store.event("ambiguity", got.to_json(), idx, rnd)
        return got.ambiguous

    async def attempt(
        self, idx: int, rnd: int, a: int, tid: str, cand: Candidate, llm: LLM | None = None
    ) -> tuple[Trajectory, Judgement]:
        from sagegen.agents.solver import solve
        from sagegen.judge import judge_answer

        seed = derive_seed(self.pcfg.seed, "solve", idx, rnd, a)
        traj = await solve(cand.question, llm or self.solver_llm, self.parts.retriever, self.cfg.solver,
                           seed=seed)
        # An outage is never stored as a verdict: the pair stays unfinished and the next run retries
        # it (cached calls are free). See sagegen.outage.
        where = f"pair {idx} round {rnd} attempt {a}"
        outage.check_solver(traj, where)
        judgement = await judge_answer(cand.question, traj.answer, [cand.answer], self.judge_llm,
                                       self.cfg.judge)
        outage.check_judge(judgement, where)
        self.store.add_attempt(idx, rnd, a, seed, tid, traj, judgement)
        return traj, judgement

    def _finish(
        self,
        spec: PairSpec,
        last: tuple[int, Candidate, Trajectory, list[Attempt], Verdict] | None,
        *,
        ambiguous: bool = False,
    ) -> str:
        from sagegen.judge import normalize_answer

        idx = spec.index
        if last is None:
            self.store.finish_pair(idx, "failed", None, None, None, None)
            return "failed"
        rnd, cand, _, attempts, verdict = last
        qa = QAPair(
            id=f"{self.run_name}-{idx}",
            question=cand.question,
            answer=cand.answer,
            answer_type=cand.answer_type,
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
                **({"precheck": trace_id(f"p{idx}", f"r{rnd}", "pre")}
                   if verdict.source == "precheck" else {}),
                "num_attempts": verdict.num_attempts,
                "rounds": [trace_id(f"p{idx}", f"r{r}", "gen") for r in range(1, rnd + 1)],
            },
            run_id=self.run_name,
        )
        output = OUTPUT_FOR_LABEL[verdict.label]
        if (verdict.label == "too_easy" and self.pcfg.final_round_relaxed and self.rounds > 1
                and rnd == self.rounds):
            # The release's last round keeps every pair some attempt answered; labelled, not disguised.
            output, qa = "dataset", qa.model_copy(update={"acceptance": "relaxed"})
        if output == "dataset" and (verdict.difficulty or 0) < self.pcfg.min_difficulty_for_dataset:
            output = "too_easy"  # passed its own target but is below the training floor (DESIGN §1.4)
        if ambiguous:
            output = "ambiguous"  # a verified pass whose question admits another answer (sagegen.solvers)
        key = cand.question if self.pcfg.dedup == "exact" else normalize_answer(cand.question)
        written = self.store.finish_pair(idx, verdict.label, rnd, qa, output, key)
        if written is not None:
            self.store.append_output(written, qa)  # after the commit: the file never runs ahead of the ledger
        return "ambiguous" if ambiguous else verdict.label


def precheck_verdict(pre: Attempt) -> Verdict:
    """Too easy by the retriever alone: one search shows the answer (no solver attempt ran)."""
    return Verdict(correct=True, difficulty=pre.num_searches, passed=False, avg_at_k=1.0, label="too_easy",
                   num_attempts=0, source="precheck")


# ---------------------------------------------------------------------------- one command


@dataclass
class RunResult:
    run_dir: Any
    resumed: bool
    stats: Stats
    seconds: float
    counts: dict[str, int]
    usage: dict[str, dict[str, float]]
    session_usage: dict[str, dict[str, float]]
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)


def config_warnings(cfg: Config) -> list[str]:
    """Settings that are legal but weaken the data; shown in the summary and kept as ledger events."""
    out = []
    if cfg.judge.method == "llm":
        judge, solver = cfg.judge_llm or cfg.llm, cfg.solver_llm or cfg.llm
        if (judge.backend, judge.model, judge.base_url) == (solver.backend, solver.model, solver.base_url):
            out.append(
                f"the judge is the solver's own model ({judge.backend}:{judge.model or 'default'}): it may "
                "excuse its own mistakes; set judge_llm to a separate model (the paper's release uses one)"
            )
    return out


def resolve_run_dir(out: str | None, cfg: Config, *, new_run: bool) -> Any:
    """``--out`` or ``runs/default``; ``--new-run`` picks a fresh ``NAME-2``, ``NAME-3``... instead."""
    from pathlib import Path

    base = Path(out) if out else Path("runs") / "default"
    if not new_run or not (base / "ledger.sqlite").exists():
        return base
    n = 2
    while (base.parent / f"{base.name}-{n}").exists():
        n += 1
    return base.parent / f"{base.name}-{n}"


def run_generate(
    cfg: Config, run_dir: Any, *, force: bool = False, progress: bool = True, parts: Components | None = None
) -> RunResult:
    """``sagegen generate``: open or resume the run at ``run_dir`` and run the SAGE loop to the end.

    Ctrl-C cancels the pairs in flight (each ledger write is atomic, nothing is corrupted) and
    re-raises ``KeyboardInterrupt``; rerunning the same command resumes.
    """
    from pathlib import Path

    from sagegen.runlock import DirLock

    run_dir = Path(run_dir)
    own_parts = parts is None
    # Whatever can refuse the input comes before any run file is written (the config was validated
    # when loaded): the corpus is opened and the LLMs are built, so a mistyped path leaves nothing.
    parts = parts or Components.from_config(cfg)
    lock: DirLock | None = None
    store: RunStore | None = None
    status = "failed"
    try:
        lock = DirLock(run_dir, "run").acquire()  # one writer per run; released however this process ends
        store, resumed = RunStore.create_or_resume(run_dir, cfg.model_dump(mode="json"), cfg.dump(),
                                                   force=force)
        # The JSONL files are views of the ledger: rebuilding them drops a line half-written by a killed run.
        store.rebuild_outputs()
        session = store.begin_session()
        t0 = time.monotonic()
        warnings = config_warnings(cfg)
        for w in warnings:
            store.event("warning", w)
        pipe = Pipeline(cfg, store, parts, run_name=run_dir.name)
        with _progress_display(progress, pipe) as hook:
            pipe.on_progress = hook
            stats = asyncio.run(pipe.run())
        status = "completed" if not stats.errors else "errors"
        return RunResult(
            run_dir,
            resumed,
            stats,
            time.monotonic() - t0,
            store.counts(),
            store.llm_usage(),
            store.llm_usage(session),
            warnings=warnings,
        )
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if store is not None:
            with contextlib.suppress(Exception):
                store.end_session(status)
            store.close()
        if lock is not None:
            lock.release()
        if own_parts:
            parts.close()


@contextlib.contextmanager
def _progress_display(enabled: bool, pipe: Pipeline) -> Any:
    """A live bar (pairs done, elapsed, ETA) over a line: accepted, rejected by reason, calls, tokens."""
    if not enabled:
        yield None
        return
    from rich.console import Console, Group
    from rich.live import Live
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    console = Console(stderr=True)
    bar = Progress(TextColumn("[bold]pairs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("eta"), TimeRemainingColumn(), console=console)
    task = bar.add_task("pairs", total=pipe.pcfg.num_seeds)
    line = Text("")

    def hook(stats: Stats) -> None:
        bar.update(task, completed=stats.already_done + stats.done + stats.errors)
        line.plain = stats.line()

    with Live(Group(bar, line), console=console, refresh_per_second=4, transient=False,
              auto_refresh=console.is_terminal, redirect_stderr=False) as live:
        if not console.is_terminal:
            live.stop()
        yield hook


def format_summary(res: RunResult) -> str:
    """The end-of-run summary: what was made, what it cost, where the files are."""
    c, d = res.counts, res.run_dir
    tot = {
        k: sum(u[k] for u in res.usage.values())
        for k in ("calls", "cached", "prompt_tokens", "completion_tokens", "seconds")
    }
    ses = {k: sum(u[k] for u in res.session_usage.values()) for k in ("calls", "cached")}
    finished = c.get("finished", 0)
    acc = c.get("pass", 0)
    lines = [
        f"run        {d}  ({'resumed' if res.resumed else 'new'}; this session {res.seconds:.1f} s)",
        f"pairs      {finished} finished of {res.stats.total}"
        + (f", {res.stats.errors} unfinished by errors (rerun to retry; last: {res.stats.last_error[:200]})"
           if res.stats.errors else ""),
        f"accepted   {acc}"
        + (f" ({100 * acc / finished:.0f}%)" if finished else "")
        + f" → {c.get('output.dataset', 0)} in dataset.jsonl"
        + (f" ({c['duplicate.pass']} repeated questions skipped)" if c.get("duplicate.pass") else ""),
        f"too easy   {c.get('too_easy', 0)}    unsolved {c.get('incorrect', 0)}    "
        f"generator failed {c.get('failed', 0)}"
        + (f"    ambiguous {c['output.ambiguous']} (passed; in ambiguous.jsonl)" if c.get("output.ambiguous")
           else ""),
        f"LLM calls  {int(tot['calls'])} total ({int(tot['cached'])} cache hits); "
        f"this session {int(ses['calls'])} ({int(ses['cached'])} cache hits)",
        f"tokens     {int(tot['prompt_tokens']):,} prompt + {int(tot['completion_tokens']):,} completion; "
        f"model time {tot['seconds']:.1f} s",
        "by role    " + ", ".join(f"{r}: {int(u['calls'])} calls" for r, u in res.usage.items()),
        f"files      {d / 'dataset.jsonl'}, {d / 'too_easy.jsonl'}, {d / 'unsolved.jsonl'},\n"
        f"           {d / 'ledger.sqlite'} (sagegen status {d})",
    ]
    lines += [f"warning    {w}" for w in res.warnings]
    return "\n".join(lines)


def format_status(store: RunStore) -> str:
    """``sagegen status RUN``: counts per round and state, accept rate, calls/tokens/time so far."""
    c = store.counts()
    finished = c.get("finished", 0)
    lines = [f"run {store.run_dir}  (config {store.config_hash})"]
    states = ", ".join(f"{s} {c.get(s, 0)}" for s in ("pending", "running", *FINISHED))
    lines.append(f"pairs {c['pairs']}: {states}")
    if finished:
        lines.append(f"accept rate {c.get('pass', 0)}/{finished} = {100 * c.get('pass', 0) / finished:.1f}%")
    lines.append(
        "outputs: " + ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in c.items() if k.startswith("output."))
    )
    for label, m in store.label_means().items():
        diff = f"{m['difficulty']:.2f}" if m["difficulty"] is not None else "-"
        avg = f"{m['avg_at_k']:.2f}" if m["avg_at_k"] is not None else "-"  # unknown for some imports
        lines.append(f"{label}: {int(m['pairs'])} pairs, mean difficulty {diff}, "
                     f"mean Avg@K {avg}, mean round {m['round']:.2f}")
    for rnd, s in store.round_stats().items():
        lines.append(f"round {rnd}: " + ", ".join(f"{k} {v}" for k, v in s.items()))
    lines.append(f"attempts {c['attempts']}, trajectories {c['trajectories']}, events {c['events']}")
    tries = store.try_stats()
    for role, u in store.llm_usage().items():
        lines.append(
            f"llm {role}: {int(u['calls'])} calls ({int(u['cached'])} cached, {int(u['errors'])} errors), "
            f"{int(u['prompt_tokens']):,}+{int(u['completion_tokens']):,} tokens, {u['seconds']:.1f} s"
        )
        if role in tries:  # requests sent: retries and the time spent waiting between them count too
            t = tries[role]
            codes = ", ".join(f"{'no response' if k is None else k}: {n}" for k, n in
                              sorted(t["statuses"].items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))
            lines.append(f"  requests {t['tries']} ({t['retries']} retries, {t['wait']:.1f} s waiting; "
                         f"{codes})")
    for e in store.endpoint_stats():  # each server of llm.base_url (a list: replicas)
        lines.append(f"endpoint {e['endpoint']} ({e['model']}): {e['calls']} requests, "
                     f"{e['failures']} failed, {e['in_flight']} in flight at the end")
    for s in store.sessions():
        dur = (s["ended"] - s["started"]) if s["ended"] else None
        lines.append(f"session {s['id']}: {s['status']}" + (f", {dur:.1f} s" if dur is not None else ""))
    return "\n".join(lines)


def quick_defaults() -> list[str]:
    """Settings of the no-config ``sagegen generate``: the paper's loop, scaled to finish in minutes
    on 2 CPU cores with the embedded SmolLM2 (few seeds, short turns, a small search budget)."""
    return [
        "pipeline.num_seeds=4",
        "pipeline.target=2",
        "pipeline.rounds=2",
        "pipeline.attempts=2",
        "pipeline.concurrency=2",
        "generator.max_searches=4",
        "generator.max_turn_tokens=160",
        "generator.max_format_retries=1",
        "generator.seed_chars=1200",
        "generator.passage_chars=400",
        "solver.max_searches=4",
        "solver.max_turn_tokens=128",
        "solver.passage_chars=400",
        "judge.max_tokens=128",
    ]
