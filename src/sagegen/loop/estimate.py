"""``sagegen estimate``: what a dataset of T accepted pairs will cost, projected from a pilot run.

Per seed of the pilot the ledger says what it cost: the generator/reviser and solver calls with
their prompt and completion tokens and seconds (from the stored trajectories, one model step per
call, cache hits included at the tokens of the call they replay, so a resumed pilot counts each call
once), plus the judge and ambiguity calls, which have no trajectory: their count per seed is read
from the judgements (one per attempt judged by the LLM; a retry counts as the role's mean) and their
tokens are the role's mean per call. Whether the seed ended in the dataset is its outcome.

Projection. Seeds needed = T / (accepted per seed); every cost scales the same way:
``cost(T) = T · Σ cost_i / Σ accepted_i`` over the pilot's seeds. The interval is a percentile
bootstrap over seeds (resample the pilot's seeds with replacement, recompute the ratio), which carries
both the spread of per-seed cost and the uncertainty of the accept rate; with few accepted pairs
in the pilot it is wide, as it should be.

Time at a given ``concurrency`` (pairs in flight) and server ``throughput`` (completion tokens per
second the server sustains over all streams; ``prompt_throughput`` likewise for prefill): the run is
bound either by the server, ``completion/throughput + prompt/prompt_throughput``, or by latency,
``model seconds per seed × seeds / concurrency`` with the pilot's measured seconds per call; the
estimate is the larger. Without ``throughput`` only the latency bound is used.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagegen.errors import InputError
from sagegen.ledger.store import LEDGER, RunStore

FIELDS = ("calls", "prompt_tokens", "completion_tokens", "seconds")


@dataclass(frozen=True)
class SeedCost:
    index: int
    accepted: int
    calls: float
    prompt_tokens: float
    completion_tokens: float
    seconds: float


def pilot_costs(run_dir: str | Path) -> tuple[list[SeedCost], dict[str, Any]]:
    """The cost of each finished seed of a run, and the run's role totals (see the module notes)."""
    run_dir = Path(run_dir)
    if not (run_dir / LEDGER).is_file():
        raise InputError(f"not a sagegen run directory (no {LEDGER})", path=run_dir)
    with RunStore.open(run_dir) as store:
        usage = store.llm_usage()
        per: dict[int, dict[str, float]] = {}
        for tid, traj in store.trajectories():
            head = tid.split(".", 1)[
                0
            ]  # trace ids are p<pair>.r<round>.<unit> (sagegen.ledger.store.trace_id)
            if not (head.startswith("p") and head[1:].isdigit()):
                continue
            acc = per.setdefault(int(head[1:]), dict.fromkeys(FIELDS, 0.0))
            for st in traj.steps:
                if st.kind == "model":
                    acc["calls"] += 1
                    acc["prompt_tokens"] += st.prompt_tokens
                    acc["completion_tokens"] += st.completion_tokens
                    acc["seconds"] += st.seconds
        side = {}
        for role in ("judge", "ambiguity"):
            u = usage.get(role)
            if u and u["calls"]:
                side[role] = {k: u[k] / u["calls"] for k in ("prompt_tokens", "completion_tokens", "seconds")}
        out = []
        for pair in store.pairs():
            if pair.state not in ("pass", "too_easy", "incorrect", "failed"):
                continue
            acc = per.setdefault(pair.index, dict.fromkeys(FIELDS, 0.0))
            n_judge = sum(
                1 for r in pair.rounds for a in r.attempts if a.judgement.method in ("llm", "f1_fallback")
            )
            n_amb = sum(1 for e in store.events(pair.index) if e.kind == "ambiguity")
            for role, n in (("judge", n_judge), ("ambiguity", n_amb)):
                if n and role in side:
                    acc["calls"] += n
                    for k, v in side[role].items():
                        acc[k] += n * v
            out.append(SeedCost(pair.index, int(pair.output == "dataset"), **acc))
    return out, usage


def _ratio(costs: list[SeedCost], key: str) -> float | None:
    acc = sum(c.accepted for c in costs)
    return sum(getattr(c, key) for c in costs) / acc if acc else None


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))
    return xs[i]


def estimate(
    costs: list[SeedCost],
    target_pairs: int,
    *,
    concurrency: int = 1,
    throughput: float | None = None,
    prompt_throughput: float | None = None,
    price_in: float = 0.0,
    price_out: float = 0.0,
    samples: int = 2000,
    seed: int = 0,
    level: float = 0.9,
) -> dict[str, Any]:
    """Project calls, tokens, wall time and cost of ``target_pairs`` accepted pairs, with a bootstrap
    interval at ``level`` (see the module notes). Quantities are None when the pilot accepted none."""
    if not costs:
        raise InputError("the pilot has no finished seed to estimate from")
    n, accepted = len(costs), sum(c.accepted for c in costs)

    def project(sample: list[SeedCost]) -> dict[str, float] | None:
        acc = sum(c.accepted for c in sample)
        if not acc:
            return None
        scale = target_pairs / acc
        tot = {k: scale * sum(getattr(c, k) for c in sample) for k in FIELDS}
        seeds = scale * len(sample)
        latency = tot["seconds"] / max(1, concurrency)
        server = None
        if throughput:
            server = tot["completion_tokens"] / throughput + (
                tot["prompt_tokens"] / prompt_throughput if prompt_throughput else 0.0
            )
        return {
            "seeds": seeds,
            **tot,
            "wall_seconds": max(latency, server or 0.0),
            "cost": tot["prompt_tokens"] / 1e6 * price_in + tot["completion_tokens"] / 1e6 * price_out,
        }

    point = project(costs)
    rng = random.Random(seed)
    boots = [project([costs[rng.randrange(n)] for _ in range(n)]) for _ in range(samples)]
    ok = [b for b in boots if b is not None]
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    interval = (
        {k: [_pct([b[k] for b in ok], lo_q), _pct([b[k] for b in ok], hi_q)] for k in ok[0]} if ok else None
    )
    return {
        "pilot_seeds": n,
        "pilot_accepted": accepted,
        "accept_rate": accepted / n,
        "per_seed": {k: sum(getattr(c, k) for c in costs) / n for k in FIELDS},
        "target_pairs": target_pairs,
        "estimate": point,
        "interval": interval,
        "level": level,
        # Resamples without an accepted pair have no finite projection: their share widens the upper end.
        "resamples_without_accepted": len(boots) - len(ok),
        "settings": {
            "concurrency": concurrency,
            "throughput": throughput,
            "prompt_throughput": prompt_throughput,
            "price_in": price_in,
            "price_out": price_out,
        },
    }


def format_estimate(res: dict[str, Any]) -> str:
    """The projection as a small table: quantity, estimate, interval."""
    lines = [
        f"pilot      {res['pilot_seeds']} seeds, {res['pilot_accepted']} accepted "
        f"({100 * res['accept_rate']:.1f}%); per seed {res['per_seed']['calls']:.1f} calls, "
        f"{res['per_seed']['prompt_tokens']:,.0f}+{res['per_seed']['completion_tokens']:,.0f} tokens",
    ]
    est, iv = res["estimate"], res["interval"]
    if est is None:
        lines.append(
            f"no accepted pair in the pilot: cannot project {res['target_pairs']} accepted pairs; "
            "run a larger pilot"
        )
        return "\n".join(lines)
    lines.append(
        f"target     {res['target_pairs']} accepted pairs  (estimate, {100 * res['level']:.0f}% interval)"
    )
    names = {
        "seeds": "seeds",
        "calls": "LLM calls",
        "prompt_tokens": "prompt tok",
        "completion_tokens": "compl. tok",
        "wall_seconds": "wall time",
        "cost": "cost",
    }
    for k, label in names.items():

        def f(x: float, k: str = k) -> str:
            if k == "wall_seconds":
                return f"{x / 3600:.2f} h" if x >= 3600 else f"{x:.0f} s"
            return f"{x:,.2f}" if k == "cost" else f"{x:,.0f}"

        rng = f"  [{f(iv[k][0])} – {f(iv[k][1])}]" if iv else ""
        lines.append(f"{label:<10} {f(est[k])}{rng}")
    if res["resamples_without_accepted"]:
        lines.append(
            f"({res['resamples_without_accepted']} resamples had no accepted pair: the upper end is "
            "understated)"
        )
    return "\n".join(lines)


def estimate_json(res: dict[str, Any]) -> str:
    return json.dumps(res, indent=2)
