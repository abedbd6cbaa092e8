"""The real-models matrix: each backend's wire behaviour x command, against the non-thinking control.

    python scripts/wire_matrix.py [--questions 100] [--seeds 3]

For every dialect of tests/helpers/reasoning_server.py (vLLM/SGLang with and without a reasoning parser,
Qwen3-2507's lone </think>, DeepSeek, OpenAI reasoning models, Gemini 3, Ollama) it runs, through the
command line: ``solve`` on 12 questions with the tag and the tools protocols, ``eval`` on ``--questions``
questions of the bundled corpus with the LLM judge (no exact-match shortcut, so every answer is judged),
and ``generate -n --seeds`` with the paper's budgets; then prints one markdown row per dialect: whether
each result equals the ``plain`` control's (answers, searches, verdicts, pairs), how many drafted
tokens of the thinking leaked into a result (must be 0), and what the backend learned (notes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from typer.testing import CliRunner

from helpers.reasoning_server import DIALECTS, ReasoningServer, write_wire_inputs
from sagegen.cli.main import app
from sagegen.llm.scripted import sage_fixture

runner = CliRunner()


def args_for(url: str, d: Path, provider: str) -> list[str]:
    out = []
    for s in (
        "llm.backend=openai",
        f"llm.base_url={url}",
        "llm.model=m",
        "llm.api_key_env=null",
        "llm.cache=false",
        f"llm.provider={provider}",
        f"corpus.path={d / 'corpus.jsonl'}",
        f"retrieval.index_dir={d / 'index'}",
    ):
        out += ["-s", s]
    return out


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def run_dialect(dialect: str, d: Path, questions: int, seeds: int) -> dict[str, Any]:
    # On loopback no host names the provider; DeepSeek's is what api.deepseek.com selects by itself.
    provider = "deepseek" if dialect == "deepseek" else "auto"
    out: dict[str, Any] = {}
    with ReasoningServer(dialect, sage_fixture) as srv:
        base = args_for(srv.url, d, provider)
        for protocol in ("tags", "tools"):
            answers = []
            for i in range(12):
                res = runner.invoke(
                    app,
                    [
                        "solve",
                        f"Which article says {i} things?",
                        "--json",
                        "--seed",
                        str(i),
                        *base,
                        "-s",
                        f"solver.protocol={protocol}",
                    ],
                )
                traj = json.loads(res.output.strip().splitlines()[-1]) if res.exit_code == 0 else {}
                answers.append(
                    (
                        traj.get("answer"),
                        traj.get("status"),
                        [s.get("query") for s in traj.get("steps", []) if s["kind"] == "search"],
                    )
                )
            out[f"solve_{protocol}"] = answers
        ev = d / f"eval-{dialect}"
        res = runner.invoke(
            app, ["eval", str(d / "bench.jsonl"), "--out", str(ev), *base, "-s", "judge.em_shortcut=false"]
        )
        rows = sorted(jsonl(ev / "results.jsonl"), key=lambda r: r["id"])
        out["eval"] = [
            (
                r["id"],
                r["attempts"][0]["answer"],
                r["attempts"][0]["num_searches"],
                r["attempts"][0]["correct"],
                r["attempts"][0]["judge_method"],
            )
            for r in rows
        ]
        out["eval_exit"] = res.exit_code
        gen = d / f"gen-{dialect}"
        res = runner.invoke(
            app,
            [
                "generate",
                "-n",
                str(seeds),
                "--out",
                str(gen),
                "--no-progress",
                *base,
                "-s",
                "pipeline.precheck=off",
            ],
        )
        pairs = [p for f in ("dataset", "too_easy", "unsolved") for p in jsonl(gen / f"{f}.jsonl")]
        out["generate"] = sorted(((p["question"], p["answer"], p.get("difficulty")) for p in pairs), key=str)
        out["generate_first_line"] = res.output.splitlines()[0] if res.output else ""
        out["requests"] = len(srv.requests)
        out["refused"] = list(srv.refused)
        out["stops_sent"] = sum("stop" in r for r in srv.requests)
    return out


def refused(names: list[str]) -> str:
    """The 400s a server sent, counted by the parameter refused (one per process that had to learn it)."""
    from collections import Counter

    return ", ".join(f"{k} x{n}" for k, n in Counter(names).items()) or "-"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        write_wire_inputs(d, max(400, 2 * a.questions), a.questions)
        results = {dl: run_dialect(dl, d, a.questions, a.seeds) for dl in DIALECTS}
    ctl = results["plain"]
    print(
        f"| dialect | solve tags (12) | solve tools (12) | eval ({a.questions}) judged like control | "
        f"eval accuracy | generate -n {a.seeds} pairs | drafts leaked | requests | wire stops | refused |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dl, r in results.items():
        leaked = json.dumps([r["solve_tags"], r["solve_tools"], r["eval"], r["generate"]]).count("drafted")
        same = sum(x == y for x, y in zip(r["eval"], ctl["eval"], strict=False))
        acc = sum(row[3] for row in r["eval"])
        print(
            f"| {dl} | {'same' if r['solve_tags'] == ctl['solve_tags'] else 'DIFFERENT'} | "
            f"{'same' if r['solve_tools'] == ctl['solve_tools'] else 'DIFFERENT'} | "
            f"{same}/{len(ctl['eval'])} | {acc}/{len(r['eval'])} | "
            f"{len(r['generate'])} {'same' if r['generate'] == ctl['generate'] else 'DIFFERENT'} | "
            f"{leaked} | "
            f"{r['requests']} | {r['stops_sent']} | {refused(r['refused'])} |"
        )
    print()
    print("generate's first line:", ctl["generate_first_line"])


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
