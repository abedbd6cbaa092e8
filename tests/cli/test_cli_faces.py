"""What each command shows a person: one output style (a table; ``--json`` for machines), one name
per outcome on every screen, next-step advice that works on the run at hand, ``solve`` saying why
there is no answer, ``train`` on an empty run saying what to train on, no third-party bars."""

from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path

import pytest
from rich.console import Console

from sage_loop_helpers import SCRIPTED_RUN_SETS, run_cli, write_corpus
from sagegen.cli.display import CompareProgress, QuestionView, answer_line, question_progress
from sagegen.ledger.outcomes import NAMES, OUTCOMES, name
from sagegen.records import Step, Trajectory


def _generate(cwd: Path, run: str, *args: str) -> str:
    write_corpus(cwd / "corpus.jsonl")
    p = run_cli("generate", "-o", run, "-n", "4", "--no-progress", *args, *SCRIPTED_RUN_SETS, cwd=cwd)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def _next_command(summary: str, tag: str) -> list[str]:
    """The ``sagegen export ...`` the summary's line ``tag`` suggests, as argv after ``sagegen``."""
    line = next(ln for ln in summary.splitlines() if ln.startswith(tag))
    cmd = re.search(r"sagegen (export [^)]*?)(?:,|\)|$)", line)
    assert cmd, line
    return shlex.split(cmd[1])


def test_the_suggested_export_works_when_accepted_pairs_are_below_its_default_floor(tmp_path: Path) -> None:
    # target 1 with a floor of 1: accepted pairs of difficulty 1, which export's default (2) refuses
    out = _generate(tmp_path, "run", "--target", "1", "-s", "pipeline.min_difficulty_for_dataset=1")
    assert re.search(r"^accepted\s+[1-9]", out, re.M), out
    args = _next_command(out, "next")
    assert args[-2:] == ["--min-difficulty", "1"]
    p = run_cli(*args, "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    accepted = len((tmp_path / "run" / "dataset.jsonl").read_text().splitlines())
    assert json.loads(p.stdout)["selected"] == accepted  # every accepted pair, as the advice promised
    # what the old advice said leaves out the pairs below its default floor (or refuses them all)
    plain = run_cli(*args[:-2], "--json", cwd=tmp_path)
    assert plain.returncode != 0 or json.loads(plain.stdout)["selected"] < accepted


def test_zero_accepted_says_so_and_what_still_works(tmp_path: Path) -> None:
    out = _generate(tmp_path, "run", "--target", "5", "--rounds", "1")
    assert re.search(r"^accepted\s+0", out, re.M) and "no pair was accepted" in out
    args = _next_command(out, "meanwhile")
    p = run_cli(*args, "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout)["selected"] >= 1
    # train on the run (the README's example) refuses, and says what to train on instead
    t = run_cli("train", "run", cwd=tmp_path)
    assert t.returncode == 2
    err = " ".join(t.stderr.split())
    assert "no training rows: the run accepted no pair" in err
    assert "sagegen train run/too_easy.jsonl" in err and "llm.backend=openai" in err


def test_train_data_with_no_rows_explains_itself(tmp_path: Path) -> None:
    from sagegen.errors import InputError
    from sagegen.train.data import load_rows

    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(InputError, match="no training rows: training needs question-answer lines"):
        load_rows(tmp_path / "empty.jsonl")
    run = tmp_path / "run"
    run.mkdir()
    (run / "dataset.jsonl").write_text("")
    with pytest.raises(InputError) as e:
        load_rows(run)
    assert "the run accepted no pair" in str(e.value) and "too-easy" not in str(e.value)


def test_outcome_names_agree_on_every_screen(tmp_path: Path) -> None:
    from sagegen.analysis.analyze import analyze_run
    from sagegen.analysis.tables import funnel_table

    out = _generate(tmp_path, "run")
    status = run_cli("status", "run", cwd=tmp_path).stdout
    funnel = [c.label for c in funnel_table(analyze_run(tmp_path / "run", write=False)).columns]
    assert funnel == ["seeds", *(name(k) for k in OUTCOMES)]
    for screen in (out, status):
        for old in ("unsolved ", "gen_failed", "too_easy "):  # the stored spellings never reach a person
            assert old not in screen.replace("unsolved.jsonl", ""), (old, screen)
    assert f"{name('failed')} " in out and name("failed") == "generator failed"
    assert f"outcomes: {name('accepted')} " in status and f"{name('too_easy')} " in status
    # the report: each pair's badge and the filter say the outcome by the same names
    from sagegen.analysis.report import write_report

    html = write_report(tmp_path / "run").read_text()
    assert f'<option value="failed">{name("failed")}</option>' in html
    assert f'<span class="badge accepted">{name("accepted")}</span>' in html
    # the stored spellings map to the same names
    assert name("unsolved") == name("incorrect") == NAMES["incorrect"] and name("gen_failed") == name(
        "failed"
    )


def test_eval_and_export_print_a_table_or_json_never_both(tmp_path: Path) -> None:
    _generate(tmp_path, "run")
    bench = tmp_path / "b.jsonl"
    bench.write_text(
        "\n".join(
            json.dumps({"id": str(i), "question": q, "golden_answers": [a]})
            for i, (q, a) in enumerate([("Where is the Seine?", "France"), ("Capital of Germany?", "Berlin")])
        )
    )
    for cmd in (["export", "run", "--format", "flashrag"], ["eval", "b.jsonl", "--out", "ev"]):
        sets = [*SCRIPTED_RUN_SETS] if cmd[0] == "eval" else []
        table = run_cli(*cmd, *sets, cwd=tmp_path)
        assert table.returncode == 0, table.stderr[-2000:]
        assert "{" not in table.stdout and ("┃" in table.stdout or "│" in table.stdout), table.stdout
        as_json = run_cli(*cmd, "--json", *sets, cwd=tmp_path)
        assert as_json.returncode == 0, as_json.stderr[-2000:]
        assert isinstance(json.loads(as_json.stdout), dict) and "│" not in as_json.stdout
        # no terminal: the eval's progress comes as plain lines on stderr, one per question
        if cmd[0] == "eval":
            lines = [ln for ln in table.stderr.splitlines() if "questions done" in ln]
            assert [ln.split("] ")[1].split(" questions")[0] for ln in lines][-1] == "eval: 2/2", lines


def test_analyze_shows_no_third_party_bars(tmp_path: Path) -> None:
    from sagegen.analysis.duplicates import embedder_available

    if not embedder_available():
        pytest.skip("no local sentence-transformers model (the bars come from loading it)")
    _generate(tmp_path, "run")
    p = run_cli("analyze", "run", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "it/s" not in p.stderr and "Loading" not in p.stderr and "%|" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines() == ["wrote run/analysis.json"]


def test_solve_says_no_answer_and_why() -> None:
    failed = Trajectory(
        agent="solver",
        question="q",
        status="failed",
        steps=(Step(kind="event", event="no_answer", text="I think   it may be"),),
    )
    line = answer_line(failed)
    assert "None" not in line and "no answer" in line and "the model gave none" in line
    assert "(I think it may be)" in line and "status=failed" in line
    assert "[bold]answer[/] Paris" in answer_line(Trajectory(agent="solver", answer="Paris"))


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_eval_progress_without_a_terminal_counts_and_estimates() -> None:
    out, clock = io.StringIO(), _Clock()
    console = Console(file=out, force_terminal=False, width=300)
    view = QuestionView("eval", total=5, already=1, k=2, clock=clock)
    with question_progress(console, view, every=30, clock=clock) as on_result:
        clock.t = 20
        on_result({"pass_at_k": 1.0})
        clock.t = 40
        on_result({"pass_at_k": 0.0})
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "[00:00:00] eval: 1/5 questions done · no result yet · ETA — (from finished questions) "
        "· wall 00:00:00"
    )
    # 2 questions in 40 s, 2 left: 40 s more
    assert lines[-1] == (
        "[00:00:40] eval: 3/5 questions done · pass@2 1/2 this run · ETA 00:00:40 (from finished "
        "questions) · wall 00:00:40"
    )


def test_train_eval_says_which_model_it_evaluates() -> None:
    out = io.StringIO()
    shown = CompareProgress(Console(file=out, force_terminal=False, width=300), every=30)
    hook = shown.watch("base", 3)
    hook({"pass_at_k": 1})
    hook2 = shown.watch("trained", 3)
    hook2({"pass_at_k": 0})
    shown.close()
    text = out.getvalue()
    assert "evaluating the base model on 3 questions" in text and "base model: 1/3 questions done" in text
    assert text.index("evaluating the trained model") > text.index("base model: 1/3")
    assert "trained model: 1/3 questions done · pass@1 0/1 this run" in text


def test_train_prints_a_table_of_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    from sagegen.cli.display import print_facts

    summary = {
        "checkpoint": "out/checkpoint-final",
        "reward_last": 0.25,
        "sft_loss_first": None,
        "mask": {"tokens": 10, "masked": 4},
        "comparison": {"em": {"base": 0.1, "trained": 0.3}},
    }
    print_facts(summary, "sagegen train (trl)")
    out = capsys.readouterr().out
    assert "{" not in out and "sagegen train (trl)" in out
    assert "reward last" in out and "0.25" in out and "mask: masked" in out
    assert "comparison: em" in out and "base 0.1, trained 0.3" in out


def test_index_without_a_terminal_prints_a_line_per_stage(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus.jsonl")
    p = run_cli("index", "--corpus", "corpus.jsonl", "--out", "idx", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.splitlines() if "] index: " in ln]
    # each stage says when it starts and when it is done (and every 30 s between: the heartbeat)
    assert any(ln.split("] ", 1)[1].startswith("index: bm25: tokenize 6/6") for ln in lines), p.stderr
    assert "\x1b[" not in p.stderr
