"""The eval harness: benchmark parsing, metrics, K attempts, resume after a crash, the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sagegen.cli.display import summary_table
from sagegen.config import Config
from sagegen.errors import ConfigError, InputError
from sagegen.llm.base import Message
from sagegen.llm.scripted import ScriptedLLM
from sagegen.loop.evaluate import completed_ids, evaluate, load_benchmark, summarize
from sagegen.records import Completion, Doc, Hit

CAPITALS = {"France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo"}
DOCS = [Doc(id=f"d-{c}", title=city, text=f"{city} is the capital of {c}.") for c, city in CAPITALS.items()]


class TinyRetriever:
    def __init__(self, fail_on: str | None = None):
        self.fail_on = fail_on
        self.queries: list[str] = []

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        out = []
        for q in queries:
            if self.fail_on and self.fail_on in q:
                raise RuntimeError(f"retriever crashed on {q!r}")
            self.queries.append(q)
            words = set(q.lower().split())
            ranked = sorted(DOCS, key=lambda d: -len(words & set(d.text.lower().rstrip(".").split())))
            out.append([Hit(doc=d, score=1.0) for d in ranked[:k]])
        return out


def solver_responder(messages: Sequence[Message]) -> str:
    """Searches the country once, answers the top title; says "unknown" for Japan on even seeds."""
    question = messages[1]["content"]
    country = re.search(r"capital of (\w+)", question).group(1)  # type: ignore[union-attr]
    infos = [m for m in messages if m["role"] == "user" and "<information>" in m["content"]]
    if not infos:
        return f"<think>look it up</think><search> capital of {country} </search>"
    title = re.search(r"Doc 1\(Title: (\w+)\)", infos[-1]["content"]).group(1)  # type: ignore[union-attr]
    return f"<answer> {title} </answer>"


def write_bench(path: Path, countries: Sequence[str], golden: dict[str, list[str]] | None = None) -> Path:
    with path.open("w") as f:
        for i, c in enumerate(countries):
            g = (golden or {}).get(c, [CAPITALS[c]])
            f.write(
                json.dumps({"id": f"q{i}", "question": f"What is the capital of {c}?", "golden_answers": g})
                + "\n"
            )
    return path


def em_config(**solver: object) -> Config:
    return Config.model_validate({"judge": {"method": "em"}, "solver": solver})


# --- benchmark parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", r"line 2: not valid JSON"),
        ("[1]", r"line 2: expected a JSON object"),
        ('{"id": ["a"], "question": "q", "golden_answers": ["a"]}', r"line 2, field 'id'"),
        ('{"id": "x", "question": "", "golden_answers": ["a"]}', r"line 2, field 'question'"),
        ('{"id": "x", "question": "q", "golden_answers": {"a": 1}}', r"line 2, field 'golden_answers'"),
        ('{"id": "x", "question": "q", "golden_answers": []}', r"line 2, field 'golden_answers'"),
        ('{"id": "x", "question": "q", "golden_answers": [3]}', r"line 2, field 'golden_answers'"),
        ('{"id": "a", "question": "q", "golden_answers": ["a"]}', r"duplicate id 'a' \(first on line 1\)"),
    ],
)
def test_bad_benchmark_lines(tmp_path: Path, line: str, match: str) -> None:
    p = tmp_path / "b.jsonl"
    p.write_text('{"id": "a", "question": "q?", "golden_answers": ["x"]}\n' + line + "\n")
    with pytest.raises(InputError, match=match) as e:
        load_benchmark(p)
    assert str(p) in str(e.value)


def test_benchmark_ok_and_limit(tmp_path: Path) -> None:
    p = tmp_path / "b.jsonl"
    p.write_text(
        '{"id": 1, "question": " q1 ", "golden_answers": ["a", "b"], "extra": 1}\n\n'
        '{"id": "2", "question": "q2", "golden_answers": ["c"]}\n'
    )
    items = load_benchmark(p)
    assert [(i.id, i.question, i.golden_answers) for i in items] == [
        ("1", "q1", ("a", "b")),
        ("2", "q2", ("c",)),
    ]
    assert len(load_benchmark(p, limit=1)) == 1
    with pytest.raises(InputError, match="does not exist"):
        load_benchmark(tmp_path / "missing.jsonl")


def test_shared_benchmarks_parse(shared_data: Path) -> None:
    assert len(load_benchmark(shared_data / "bamboogle.jsonl")) == 125
    assert len(load_benchmark(shared_data / "hotpotqa" / "questions.jsonl")) == 100


# --- metrics and files -------------------------------------------------------------------


async def test_eval_metrics_and_files(tmp_path: Path) -> None:
    # Golden for Italy is wrong on purpose; Spain's golden is a superset (F1 < 1).
    bench = write_bench(
        tmp_path / "b.jsonl",
        ["France", "Germany", "Italy", "Spain"],
        {"Italy": ["Milan"], "Spain": ["Madrid city"]},
    )
    llm = ScriptedLLM(responder=solver_responder)
    out = tmp_path / "out"
    summary = await evaluate(
        load_benchmark(bench), llm, TinyRetriever(), em_config(), out, k=2, bench_path=bench
    )
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["q0", "q1", "q2", "q3"]
    by_id = {r["id"]: r for r in rows}
    assert by_id["q0"]["em"] == 1.0 and by_id["q0"]["pass_at_k"] is True
    assert by_id["q2"]["em"] == 0.0 and by_id["q2"]["pass_at_k"] is False
    assert by_id["q3"]["f1"] == pytest.approx(2 / 3) and by_id["q3"]["em"] == 0.0
    a = by_id["q0"]["attempts"]
    assert [x["seed"] for x in a] == [0, 1] and a[0]["num_searches"] == 1 and a[0]["status"] == "answered"
    # Cost: two attempts x two calls each; tokens counted; no judge calls with method=em.
    cost = by_id["q0"]["cost"]
    assert cost["solver_calls"] == 4 and cost["solver_prompt_tokens"] > 0 and cost["judge_calls"] == 0
    # Model time: the double reports none, so the wrapper measures its (instant) calls on the clock.
    assert 0 <= cost["solver_llm_seconds"] < 1 and cost["judge_llm_seconds"] == 0
    assert cost["solver_cached"] == 0
    assert summary["questions"] == 4 and summary["attempts"] == 8 and summary["k"] == 2
    assert summary["em"] == pytest.approx(0.5) and summary["pass_at_k"] == pytest.approx(0.5)
    assert summary["f1"] == pytest.approx((1 + 1 + 0 + 2 / 3) / 4, abs=1e-4)
    assert summary["mean_searches"] == 1.0 and summary["answered"] == 1.0
    assert summary["per_question"]["solver_calls"] == 4.0
    assert json.loads((out / "summary.json").read_text())["em"] == summary["em"]
    trajs = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert len(trajs) == 8 and trajs[0]["trajectory"]["agent"] == "solver"
    # K attempts use distinct seeds.
    assert sorted({c["seed"] for c in llm.calls}) == [0, 1]
    table = summary_table(summary)
    assert table.row_count > 10


async def test_eval_llm_judge_and_cost(tmp_path: Path) -> None:
    bench = write_bench(tmp_path / "b.jsonl", ["France", "Germany"], {"Germany": ["the city of Berlin"]})
    judge = ScriptedLLM(responder=lambda m: "extracted_final_answer: Berlin\nreasoning: same\ncorrect: yes")
    summary = await evaluate(
        load_benchmark(bench),
        ScriptedLLM(responder=solver_responder),
        TinyRetriever(),
        Config(),
        tmp_path / "o",
        judge_llm=judge,
        k=1,
        bench_path=bench,
    )
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "o" / "results.jsonl").read_text().splitlines())}
    assert rows["q0"]["attempts"][0]["judge_method"] == "em"  # EM shortcut, no call
    assert rows["q1"]["attempts"][0]["judge_method"] == "llm" and rows["q1"]["cost"]["judge_calls"] == 1
    assert summary["judge_acc"] == 1.0 and summary["em"] == 0.5
    assert summary["judge_methods"] == {"em": 1, "llm": 1}
    assert len(judge.calls) == 1


async def test_eval_resumes_after_crash_without_repeating(tmp_path: Path) -> None:
    countries = ["France", "Germany", "Italy", "Spain", "Japan"]
    bench = write_bench(tmp_path / "b.jsonl", countries)
    items = load_benchmark(bench)
    out = tmp_path / "out"
    llm = ScriptedLLM(responder=solver_responder)
    # The "kill": the retriever crashes on the 4th question; questions before it are on disk.
    with pytest.raises(RuntimeError, match="crashed"):
        await evaluate(
            items, llm, TinyRetriever(fail_on="Spain"), em_config(), out, concurrency=1, bench_path=bench
        )
    assert set(completed_ids(out)) == {"q0", "q1", "q2"}
    first_calls = len(llm.calls)

    llm2 = ScriptedLLM(responder=solver_responder)
    r2 = TinyRetriever()
    summary = await evaluate(items, llm2, r2, em_config(), out, concurrency=3, bench_path=bench)
    ids = [json.loads(line)["id"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(ids) == ["q0", "q1", "q2", "q3", "q4"] and len(ids) == len(set(ids))
    # Only the two unfinished questions were solved again.
    assert sorted(r2.queries) == ["capital of Japan", "capital of Spain"]
    assert len(llm2.calls) == 4 and first_calls >= 6
    assert summary["questions"] == 5 and summary["new_questions"] == 2 and summary["em"] == 1.0

    # A third run has nothing to do.
    llm3 = ScriptedLLM([])
    s3 = await evaluate(items, llm3, TinyRetriever(), em_config(), out, bench_path=bench)
    assert llm3.calls == [] and s3["new_questions"] == 0 and s3["questions"] == 5


async def test_torn_last_line_is_dropped_and_redone(tmp_path: Path) -> None:
    bench = write_bench(tmp_path / "b.jsonl", ["France", "Germany"])
    items = load_benchmark(bench)
    out = tmp_path / "out"
    await evaluate(
        items[:1],
        ScriptedLLM(responder=solver_responder),
        TinyRetriever(),
        em_config(),
        out,
        bench_path=bench,
    )
    with (out / "results.jsonl").open("a") as f:
        f.write('{"id": "q1", "question": "What is the cap')  # killed mid-write
    assert set(completed_ids(out)) == {"q0"}
    assert (out / "results.jsonl").read_text().endswith("\n")
    await evaluate(
        items, ScriptedLLM(responder=solver_responder), TinyRetriever(), em_config(), out, bench_path=bench
    )
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q0", "q1"]


async def test_corrupt_middle_line_is_an_input_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text('{"id": "a"}\ngarbage\n{"id": "b"}\n')
    with pytest.raises(InputError, match="line 2"):
        completed_ids(out)


async def test_changed_settings_refuse_to_mix(tmp_path: Path) -> None:
    bench = write_bench(tmp_path / "b.jsonl", ["France"])
    items = load_benchmark(bench)
    out = tmp_path / "out"
    await evaluate(
        items, ScriptedLLM(responder=solver_responder), TinyRetriever(), em_config(), out, bench_path=bench
    )
    with pytest.raises(ConfigError, match=r"changed: .*config\.solver"):
        await evaluate(
            items,
            ScriptedLLM(responder=solver_responder),
            TinyRetriever(),
            em_config(max_searches=2),
            out,
            bench_path=bench,
        )
    with pytest.raises(ConfigError, match="changed: k"):
        await evaluate(items, ScriptedLLM([]), TinyRetriever(), em_config(), out, k=2, bench_path=bench)
    s = await evaluate(
        items,
        ScriptedLLM(responder=solver_responder),
        TinyRetriever(),
        em_config(),
        out,
        k=2,
        bench_path=bench,
        restart=True,
    )
    assert s["attempts"] == 2


def test_summarize_empty() -> None:
    s = summarize([], k=3)
    assert s["questions"] == 0 and s["em"] == 0.0


# --- the CLI -----------------------------------------------------------------------------


def _corpus(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.jsonl"
    with p.open("w") as f:
        for d in DOCS:
            f.write(json.dumps({"id": d.id, "contents": f"{d.title}\n{d.text}"}) + "\n")
    return p


def _cli_sets(tmp_path: Path) -> list[str]:
    args = []
    for s in (
        f"corpus.path={_corpus(tmp_path)}",
        f"retrieval.index_dir={tmp_path / 'idx'}",
        "llm.backend=scripted",
        "llm.model=fixture:sage",
        "judge.method=em",
    ):
        args += ["-s", s]
    return args


def test_cli_eval_and_solve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sagegen.cli.main import app

    monkeypatch.chdir(tmp_path)
    bench = write_bench(tmp_path / "b.jsonl", ["France", "Germany", "Italy"])
    runner = CliRunner()
    args = ["eval", str(bench), *_cli_sets(tmp_path), "--k", "2", "--json"]
    res = runner.invoke(app, [*args, "--limit", "2"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)  # the whole of stdout is the JSON
    assert summary["questions"] == 2 and summary["k"] == 2
    out = tmp_path / "evals" / "b"
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    # Rerun with a larger limit: resumes, runs only the new question.
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["new_questions"] == 1

    res = runner.invoke(app, ["solve", "What is the capital of Italy?", *_cli_sets(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    traj = json.loads(res.stdout.strip().splitlines()[-1])
    assert traj["agent"] == "solver" and traj["status"] in ("answered", "forced", "failed")
    assert any(s["kind"] == "search" for s in traj["steps"])


def test_cli_bad_benchmark_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q", "golden_answers": ["x"]}\n{"id": "b", "question": "q"}\n')
    res = subprocess.run(
        [sys.executable, "-c", "from sagegen.cli.main import main; main()", "eval", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "1000"},  # rich wraps long lines at the terminal width
    )
    assert res.returncode == 2
    assert f"{bad}, line 2, field 'golden_answers'" in res.stderr and "Traceback" not in res.stderr


async def test_scripted_fixture_eval_is_deterministic(tmp_path: Path) -> None:
    """The "recorded" run: a fixture model gives byte-identical answers and metrics on every run."""
    from sagegen.llm.scripted import fixture_llm

    bench = write_bench(tmp_path / "b.jsonl", list(CAPITALS))
    items = load_benchmark(bench)
    outs = []
    for name in ("a", "b"):
        summary = await evaluate(
            items,
            fixture_llm("fixture:sage"),
            TinyRetriever(),
            Config(),
            tmp_path / name,
            judge_llm=fixture_llm("fixture:sage"),
            k=2,
            concurrency=3,
            bench_path=bench,
        )
        rows = sorted((tmp_path / name / "results.jsonl").read_text().splitlines())
        parsed = [json.loads(r) for r in rows]
        for r in parsed:  # timings are the only thing allowed to differ
            del r["cost"]
            for a in r["attempts"]:
                del a["solver_seconds"], a["judge_seconds"]
        outs.append((parsed, summary["em"], summary["pass_at_k"]))
    assert outs[0] == outs[1]


def test_sigkilled_eval_resumes_without_repeats(tmp_path: Path) -> None:
    """A real ``sagegen eval`` process killed with SIGKILL mid-run; the same command finishes the job."""
    import signal
    import time

    countries = list(CAPITALS) * 6
    with (tmp_path / "b.jsonl").open("w") as f:
        for i, c in enumerate(countries):
            f.write(
                json.dumps(
                    {
                        "id": f"q{i}",
                        "question": f"What is the capital of {c} ({i})?",
                        "golden_answers": [CAPITALS[c]],
                    }
                )
                + "\n"
            )
    sets = _cli_sets(tmp_path)
    sets[sets.index("llm.model=fixture:sage")] = "llm.model=fixture:sage@0.02"
    cmd = [
        sys.executable,
        "-c",
        "from sagegen.cli.main import main; main()",
        "eval",
        "b.jsonl",
        "--out",
        "out",
        "--k",
        "2",
        "--json",
        *sets,
    ]
    results = tmp_path / "out" / "results.jsonl"
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if results.is_file() and len(results.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = set()
    for line in results.read_text().splitlines():
        with contextlib.suppress(ValueError):  # the line being written when the kill came
            at_kill.add(json.loads(line)["id"])
    assert 3 <= len(at_kill) < len(countries)
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    ids = [json.loads(line)["id"] for line in results.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == len(countries)
    assert summary["new_questions"] == len(countries) - len(at_kill)


class SlowLLM:
    """The scripted solver, each call taking ``delay`` seconds (as a server would)."""

    def __init__(self, delay: float):
        self.inner, self.delay, self.name = ScriptedLLM(responder=solver_responder), delay, "slow"

    async def complete(self, messages: Sequence[Message], **kw: object) -> Completion:
        await asyncio.sleep(self.delay)
        return await self.inner.complete(messages, **kw)  # type: ignore[arg-type]


async def test_seconds_per_question_are_wall_time_not_a_sum_of_concurrent_waits(tmp_path: Path) -> None:
    bench = write_bench(tmp_path / "b.jsonl", ["France", "Germany", "Italy", "Spain"])
    t0 = time.perf_counter()
    summary = await evaluate(
        load_benchmark(bench),
        SlowLLM(0.2),
        TinyRetriever(),
        em_config(),
        tmp_path / "o",
        k=4,
        concurrency=16,
        bench_path=bench,
    )
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (tmp_path / "o" / "results.jsonl").read_text().splitlines()]
    for r in rows:  # four attempts side by side, two 0.2 s calls each: ~0.4 s, not the ~1.6 s they sum to
        summed = sum(a["solver_seconds"] + a["judge_seconds"] for a in r["attempts"])
        assert 0.39 <= r["cost"]["seconds"] < summed / 2
    pq = summary["wall_seconds_per_question_this_run"]
    assert pq == pytest.approx(summary["wall_seconds_this_run"] / 4, abs=0.01) and pq <= wall / 4 + 0.01
    mean = _mean_of(r["cost"]["seconds"] for r in rows)
    assert summary["per_question"]["seconds"] == pytest.approx(mean, abs=0.01)
    from rich.console import Console

    console = Console(record=True, width=200, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(summary_table(summary))
    assert f"{pq:.1f} wall this run" in console.export_text()


def _mean_of(xs: object) -> float:
    xs = list(xs)  # type: ignore[call-overload]
    return sum(xs) / len(xs)
