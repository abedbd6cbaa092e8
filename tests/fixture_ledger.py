"""A small run ledger written through the store's write API, with every number known by hand.

K = 2 attempts, R = 3 rounds. Each attempt is (correct?, searches). Pairs:

    p0  S=2 number   r1 [(T,3),(F,1)] pass                                  -> dataset
    p1  S=3 date     r1 [(T,1),(T,2)] too_easy; r2 [(T,3),(F,4)] pass       -> dataset
    p2  S=3 entity   r1 [(F,2),(F,3)] incorrect; r2 [(F,1),(F,5)] incorrect;
                     r3 [(T,4),(T,2)] too_easy                              -> too_easy
    p3  S=2 number   r1 generator failed                                    -> (nothing)
    p4  S=2 number   r1 [(F,2),(F,2)], r2 [(F,0),(F,1)], r3 [(F,3),(F,1)] incorrect -> unsolved
    p5  S=2 date     r1 [(T,2),(T,2)] pass, same question as p0 (normalised) -> duplicate

The tests in test_analysis_metrics.py spell out the arithmetic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sagegen.config import Config
from sagegen.ids import trace_id
from sagegen.ledger.store import RunStore
from sagegen.records import Attempt, Candidate, Judgement, QAPair, Step, Trajectory, Verdict

K = 2
RUN_ID = "fixture-run"
EVIL = "<script>document.title='pwned'</script>"

PAIRS: list[dict[str, Any]] = [
    {
        "target": 2,
        "type": "number",
        "q": "How many moons does the planet discovered by Herschel have?",
        "a": "27",
        "rounds": [[(True, 3), (False, 1)]],
        "state": "pass",
        "output": "dataset",
    },
    {
        "target": 3,
        "type": "date",
        "q": "When was the founder of the city of Lyon born?",
        "a": "87 BC",
        "rounds": [[(True, 1), (True, 2)], [(True, 3), (False, 4)]],
        "state": "pass",
        "output": "dataset",
    },
    {
        "target": 3,
        "type": "entity",
        "q": "Who painted the ceiling of the chapel consecrated in 1483?",
        "a": "Michelangelo",
        "rounds": [[(False, 2), (False, 3)], [(False, 1), (False, 5)], [(True, 4), (True, 2)]],
        "state": "too_easy",
        "output": "too_easy",
    },
    {
        "target": 2,
        "type": "number",
        "q": None,
        "a": None,
        "rounds": [None],
        "state": "failed",
        "output": None,
    },
    {
        "target": 2,
        "type": "number",
        "q": "In which year did the 1969 moon landing take place?",
        "a": "1969",
        "rounds": [[(False, 2), (False, 2)], [(False, 0), (False, 1)], [(False, 3), (False, 1)]],
        "state": "incorrect",
        "output": "unsolved",
    },
    {
        "target": 2,
        "type": "date",
        "q": "How many moons does the planet discovered by Herschel have",
        "a": "27",
        "rounds": [[(True, 2), (True, 2)]],
        "state": "pass",
        "output": "duplicate",
    },
]


def solver_trajectory(question: str, answer: str, correct: bool, searches: int) -> Trajectory:
    msgs: list[dict[str, Any]] = [
        {
            "role": "system",
            "content": "Answer the given question. ... For example, <answer> Beijing </answer>.",
        },
        {"role": "user", "content": f"Question: {question}"},
    ]
    steps: list[Step] = []
    for i in range(searches):
        msgs.append({"role": "assistant", "content": f"<think>step {i}</think><search> query {i} </search>"})
        steps.append(Step(kind="model", text=msgs[-1]["content"], prompt_tokens=100, completion_tokens=10))
        steps.append(Step(kind="search", query=f"query {i}", hit_ids=(f"doc{i}", f"doc{i + 1}")))
        info = f"<information>Doc 1(Title: T{i}) passage {i} {EVIL if i == 0 else ''}</information>"
        msgs.append({"role": "user", "content": info})
    final = answer if correct else "wrong guess"
    msgs.append({"role": "assistant", "content": f"<think>done</think><answer> {final} </answer>"})
    steps.append(Step(kind="model", text=msgs[-1]["content"], prompt_tokens=100, completion_tokens=10))
    return Trajectory(
        agent="solver",
        question=question,
        steps=tuple(steps),
        answer=final,
        status="answered",
        messages=tuple(msgs),
    )


def build_ledger(run_dir: Path) -> Path:
    cfg = Config()
    cfg.pipeline.attempts = K
    cfg.pipeline.rounds = 3
    cfg.pipeline.target = "2-3"
    config = cfg.model_dump(mode="json")
    store, _ = RunStore.create_or_resume(run_dir, config, cfg.dump())
    store.begin_session()
    for idx, spec in enumerate(PAIRS):
        store.add_pair(idx, f"seed{idx}", spec["target"], spec["type"])
        last_cand, last_verdict, last_round = None, None, None
        for rnd, atts in enumerate(spec["rounds"], 1):
            gen_tid = trace_id(f"p{idx}", f"r{rnd}", "gen")
            gen = Trajectory(
                agent="generator",
                question=spec["q"] or "",
                steps=(Step(kind="model", text=f"<question>{spec['q']}</question>"),),
                messages=({"role": "user", "content": "write a pair"},),
            )
            if atts is None:
                store.add_round(idx, rnd, "generate", None, gen_tid, gen)
                continue
            cand = Candidate(
                question=spec["q"],
                answer=spec["a"],
                answer_type=spec["type"],
                target=spec["target"],
                seed_doc_id=f"seed{idx}",
                round=rnd,
                supporting_ids=(f"doc{idx}",),
                plan="1. find X\n2. find Y",
            )
            store.add_round(idx, rnd, "generate" if rnd == 1 else "feedback", cand, gen_tid, gen)
            attempts = []
            for a, (ok, n) in enumerate(atts):
                traj = solver_trajectory(spec["q"], spec["a"], ok, n)
                j = Judgement(correct=ok, em=float(ok), f1=float(ok), extracted=traj.answer, method="em")
                tid = trace_id(f"p{idx}", f"r{rnd}", f"a{a}")
                store.add_attempt(idx, rnd, a, 1000 * idx + 10 * rnd + a, tid, traj, j)
                attempts.append(Attempt(index=a, trajectory=traj, judgement=j))
                store.record_call("solver", "scripted", 100 * (n + 1), 10 * (n + 1), 0.01, False)
            verdict = Verdict.decide([attempts], spec["target"])
            store.set_verdict(idx, rnd, verdict)
            last_cand, last_verdict, last_round = cand, verdict, rnd
        qa = None
        if last_cand is not None and last_verdict is not None:
            qa = QAPair(
                id=f"{RUN_ID}-{idx}",
                question=last_cand.question,
                answer=last_cand.answer,
                answer_type=last_cand.answer_type,
                target=last_cand.target,
                difficulty=last_verdict.difficulty,
                avg_at_k=last_verdict.avg_at_k,
                label=last_verdict.label,
                round=last_round or 1,
                seed_doc_id=last_cand.seed_doc_id,
                supporting_ids=last_cand.supporting_ids,
                plan=last_cand.plan,
                trace_ids={"generation": trace_id(f"p{idx}", f"r{last_round}", "gen")},
                run_id=RUN_ID,
            )
        from sagegen.verdict.reward import normalize_answer

        key = store.finish_pair(
            idx,
            spec["state"],
            last_round,
            qa,
            spec["output"] if spec["output"] != "duplicate" else "dataset",
            normalize_answer(spec["q"]) if spec["q"] else None,
        )
        if key is not None and qa is not None:
            store.append_output(key, qa)
    store.end_session("done")
    store.close()
    return run_dir
