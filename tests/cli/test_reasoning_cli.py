"""``generate``, ``eval``, ``solve`` and ``doctor`` over the wire of each reasoning backend, end to end.

The same scripted mind answers behind every dialect (helpers/reasoning_server.py); a command run against
a thinking dialect must write exactly what it writes against the ``plain`` control: the same pairs, the
same verdicts, the same searches. Also: the budgets a run without ``-c`` gets, and the one-line failure
of a dead server before any index is built.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers.reasoning_server import DIALECTS, ReasoningServer, write_wire_inputs
from sagegen.cli.main import app
from sagegen.llm.scripted import sage_fixture

runner = CliRunner()
QUESTIONS = int(os.environ.get("SAGEGEN_WIRE_QUESTIONS", "20"))  # the note's matrix ran 100


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 passages of the bundled corpus as a Search-R1 JSONL file, and eval questions about them."""
    d = tmp_path_factory.mktemp("wire")
    write_wire_inputs(d, 200, QUESTIONS)
    return d


def llm_args(url: str, corpus: Path) -> list[str]:
    return [
        "-s",
        "llm.backend=openai",
        "-s",
        f"llm.base_url={url}",
        "-s",
        "llm.model=m",
        "-s",
        "llm.api_key_env=null",
        "-s",
        "llm.cache=false",
        "-s",
        "llm.max_retries=1",
        "-s",
        f"corpus.path={corpus / 'corpus.jsonl'}",
        "-s",
        f"retrieval.index_dir={corpus / 'index'}",
    ]


def lines(path: Path) -> list[dict[str, Any]]:
    return (
        [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        if path.is_file()
        else []
    )


def generate(dialect: str, corpus: Path, out: Path) -> tuple[list[tuple[Any, ...]], str, ReasoningServer]:
    with ReasoningServer(dialect, sage_fixture) as srv:
        # No retriever-only shortcut check: every pair goes to the solver and the judge.
        res = runner.invoke(
            app,
            [
                "generate",
                "-n",
                "3",
                "--out",
                str(out),
                "--no-progress",
                *llm_args(srv.url, corpus),
                "-s",
                "pipeline.precheck=off",
            ],
        )
    assert res.exit_code == 0, res.output
    pairs = [
        (p["question"], p["answer"], p.get("difficulty"), p.get("round"))
        for name in ("dataset", "too_easy", "unsolved")
        for p in lines(out / f"{name}.jsonl")
    ]
    return sorted(pairs, key=str), res.output, srv


@pytest.fixture(scope="module")
def generate_control(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Any, ...]]:
    pairs, out, _ = generate("plain", corpus, tmp_path_factory.mktemp("gen") / "plain")
    assert len(pairs) == 3, out
    return pairs


@pytest.mark.parametrize("dialect", [d for d in DIALECTS if d != "plain"])
def test_generate_writes_the_controls_pairs(
    dialect: str, corpus: Path, tmp_path: Path, generate_control: list[tuple[Any, ...]]
) -> None:
    pairs, out, _ = generate(dialect, corpus, tmp_path / dialect)
    assert pairs == generate_control
    assert "drafted" not in json.dumps(pairs)
    # Every non-embedded backend runs the paper's budgets, and says so first.
    first = out.splitlines()[0]
    assert first.startswith("the paper's budgets: S=3, R=3 rounds, K=4 attempts; generator 20 searches")
    assert "cut " not in out  # nothing was cut at a cap with the paper's budgets
    # status shows what the replies were like, from the ledger
    status = runner.invoke(app, ["status", str(tmp_path / dialect)])
    assert status.exit_code == 0
    for role in ("generator", "solver", "judge"):
        line = [ln for ln in status.output.splitlines() if ln.strip().startswith(f"replies {role}:")]
        assert line and " 0 cut at the cap, 0 empty" in line[0], status.output
        if dialect not in ("openai", "gemini", "raw"):  # hidden, or <think> blocks that prove nothing
            assert " 0 thought" not in line[0]


@pytest.fixture(scope="module")
def eval_control(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Any, ...]]:
    rows = run_eval("plain", corpus, tmp_path_factory.mktemp("eval") / "plain")[0]
    assert len(rows) == QUESTIONS
    assert 0 < sum(r[1] for r in rows) < QUESTIONS  # right and wrong answers both, judged by the LLM
    return rows


def run_eval(dialect: str, corpus: Path, out: Path) -> tuple[list[tuple[Any, ...]], str]:
    with ReasoningServer(dialect, sage_fixture) as srv:
        res = runner.invoke(
            app,
            [
                "eval",
                str(corpus / "bench.jsonl"),
                "--out",
                str(out),
                *llm_args(srv.url, corpus),
                "-s",
                "judge.em_shortcut=false",
            ],
        )
    assert res.exit_code == 0, res.output
    rows = sorted(lines(out / "results.jsonl"), key=lambda r: r["id"])
    return [
        (
            r["id"],
            r["pass_at_k"],
            r["attempts"][0]["answer"],
            r["attempts"][0]["num_searches"],
            r["attempts"][0]["judge_method"],
        )
        for r in rows
    ], res.output


@pytest.mark.parametrize("dialect", [d for d in DIALECTS if d != "plain"])
def test_eval_judges_like_the_control(
    dialect: str, corpus: Path, tmp_path: Path, eval_control: list[tuple[Any, ...]]
) -> None:
    rows, _ = run_eval(dialect, corpus, tmp_path / dialect)
    assert rows == eval_control
    assert "drafted" not in json.dumps(rows)


def test_solve_shows_the_thinking_and_names_a_cut(corpus: Path) -> None:
    with ReasoningServer("vllm", sage_fixture, think_words=80) as srv:
        res = runner.invoke(
            app,
            [
                "solve",
                "Which article says hello?",
                *llm_args(srv.url, corpus),
                "-s",
                "solver.max_turn_tokens=50",
            ],
        )
    assert res.exit_code == 0, res.output
    assert "thinks" in res.output and "cut at the cap" in res.output
    assert "raise solver.max_turn_tokens (now 50)" in res.output


def test_demo_budgets_only_for_the_embedded_model(tmp_path: Path) -> None:
    from sagegen.loop.session import generate_config

    demo, src = generate_config(None, [], None)
    assert src == "demo" and demo.solver.max_turn_tokens == 128 and demo.pipeline.num_seeds == 4
    real, src = generate_config(None, ["llm.backend=openai", "llm.model=gpt-5-mini"], None)
    assert src == "paper" and real.solver.max_turn_tokens == 8192 and real.judge.max_tokens == 4096
    assert (real.pipeline.rounds, real.pipeline.attempts, real.generator.max_searches) == (3, 4, 20)
    assert real.solver.passage_chars == 0 and real.generator.passage_chars == 0
    sage, src = generate_config(None, [], "sage")  # the profile's budgets, even on the embedded model
    assert src == "profile sage" and sage.solver.max_turn_tokens == 65536 and sage.pipeline.target == "2-10"
    # A judge served elsewhere takes the run off the demo budgets too.
    _, src = generate_config(None, ["judge_llm.backend=openai", "judge_llm.model=x"], None)
    assert src == "paper"


def test_a_dead_server_fails_in_one_line_before_any_index(tmp_path: Path, corpus: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = runner.invoke(
        app,
        [
            "generate",
            "-n",
            "2",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            *llm_args(f"http://127.0.0.1:{port}/v1", corpus)[:-2],
            "-s",
            f"retrieval.index_dir={tmp_path / 'idx'}",
        ],
    )
    assert res.exit_code != 0
    assert "is not reachable" in str(res.exception) and f"127.0.0.1:{port}" in str(res.exception)
    assert not (tmp_path / "idx").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("dialect", ["vllm", "openai", "plain"])
def test_doctor_reports_thinking_stops_and_settings(dialect: str, corpus: Path) -> None:
    with ReasoningServer(dialect, lambda _: "<answer> 42 </answer>") as srv:
        res = runner.invoke(
            app, ["doctor", *llm_args(srv.url, corpus), "-s", "judge.method=em", "--max-tokens", "400"]
        )
    assert res.exit_code == 0, res.output
    out = res.output
    assert "reachable; model m NOT listed" in out  # the server serves "<dialect>-model"
    assert "retriever" in out and "returned 3 passages" in out
    assert "follows it (<answer> 42 </answer>)" in out
    if dialect == "vllm":
        assert "characters of reasoning" in out and "wire stop fired inside the thinking" in out
        assert "applied to the answer text only" in out
    if dialect == "openai":  # learned from the server's 400s on loopback (no host names the provider)
        assert "hidden (60 reasoning tokens counted)" in out
        assert "token cap as max_completion_tokens; temperature not sent" in out
        assert "stop refused by the server" in out
    if dialect == "plain":
        assert "none seen" in out and "stops on the wire" in out
