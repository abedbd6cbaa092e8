"""Training rows from sagegen's data files.

Accepted ``DATA`` files (detected from the suffix and the first record):

- ``dataset.jsonl`` of a sagegen run (QAPair lines: ``question``, ``answer``, ``plan``, ...);
- FlashRAG / Search-R1 benchmark JSONL (``question``, ``golden_answers``), e.g. shared/data slices;
- verl / Search-R1 parquet from ``sagegen export --format verl`` (``prompt``, ``reward_model``,
  ``extra_info``); the raw question is taken from ``extra_info.question`` when present, otherwise
  from the ``Question:`` line of the last user message.

Each row becomes ``{"prompt": [system, user], "question", "golden_answers", "data_source",
"sub_questions"}``: the prompt is the solver's native-tools prompt, so the policy trains on the
exact interface ``sagegen eval -s solver.protocol=tools`` evaluates it on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sagegen.errors import InputError
from sagegen.jsonl import iter_json_objects
from sagegen.prompts import render

_QUESTION_RE = re.compile(r"Question:\s*(.+?)\s*$", re.DOTALL)


def solver_prompt(question: str, max_searches: int) -> list[dict[str, str]]:
    """The solver's tools-protocol opening messages (``solver_tools_system.j2`` + ``solver_user.j2``)."""
    return [
        {"role": "system", "content": render("solver_tools_system.j2", max_searches=max_searches)},
        {"role": "user", "content": render("solver_user.j2", question=question)},
    ]


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        for key in ("target", "golden_answers", "answers", "answer"):
            if key in value:
                return _as_list(value[key])
        return []
    try:
        return [str(v) for v in value if v is not None and str(v).strip()]
    except TypeError:
        return [str(value)]


def _plan_questions(plan: str) -> list[str]:
    """Sub-questions of a generator plan: lines (or sentences) ending with '?' (best effort)."""
    out = []
    for line in re.split(r"[\n;]+", plan or ""):
        line = re.sub(r"^\s*(\d+[.)]|[-*•]|step\s*\d+:?)\s*", "", line.strip(), flags=re.IGNORECASE)
        for q in re.findall(r"[^?]+\?", line):
            q = q.strip(" :")
            if len(q) > 8:
                out.append(q)
    return out


def _row(question: str, golds: list[str], source: str, subs: list[str], max_searches: int) -> dict[str, Any]:
    return {
        "prompt": solver_prompt(question, max_searches),
        "question": question,
        "golden_answers": golds,
        "data_source": source,
        "sub_questions": subs,
    }


def _from_record(rec: dict[str, Any], path: Path, lineno: int, max_searches: int) -> dict[str, Any]:
    question = rec.get("question")
    if not isinstance(question, str) or not question.strip():
        raise InputError("missing or empty question", path=path, line=lineno, field="question")
    if "golden_answers" in rec:
        golds = _as_list(rec["golden_answers"])
        field = "golden_answers"
    else:
        golds = _as_list(rec.get("answer"))
        field = "answer"
    if not golds:
        raise InputError("no answer", path=path, line=lineno, field=field)
    subs: list[str] = []
    decomposition = rec.get("question_decomposition")
    if isinstance(decomposition, list):  # MuSiQue: "#1" refers to the previous hop's answer
        answers: list[str] = []
        for hop in decomposition:
            q = str(hop.get("question", ""))
            for i, a in enumerate(answers, 1):
                q = q.replace(f"#{i}", a)
            subs.append(q)
            answers.append(str(hop.get("answer", "")))
    elif isinstance(rec.get("plan"), str):
        subs = _plan_questions(rec["plan"])
    source = str(rec.get("data_source") or rec.get("run_id") or path.stem)
    return _row(question.strip(), golds, source, subs, max_searches)


def _read_jsonl(path: Path, max_searches: int) -> list[dict[str, Any]]:
    rows = []
    for lineno, rec in iter_json_objects(path, what="training data file"):
        if "messages" in rec and "question" not in rec:
            raise InputError(
                "this looks like an SFT trajectory file; pass it with --sft-data, not as DATA",
                path=path,
                line=lineno,
            )
        rows.append(_from_record(rec, path, lineno, max_searches))
    return rows


def _read_parquet(path: Path, max_searches: int) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - the parquet extra
        raise InputError("reading parquet needs pyarrow (pip install 'sagegen[parquet]')", path=path) from e
    table = pq.read_table(path).to_pylist()
    rows = []
    for i, rec in enumerate(table, 1):
        extra = rec.get("extra_info") or {}
        question = extra.get("question") if isinstance(extra, dict) else None
        if not question:
            prompt = rec.get("prompt") or []
            users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
            m = _QUESTION_RE.search(users[-1]) if users else None
            question = m.group(1).strip() if m else None
        if not question:
            raise InputError(
                "no question (extra_info.question or a 'Question:' line)", path=path, line=i, field="prompt"
            )
        rm = rec.get("reward_model") or {}
        golds = _as_list(rm.get("ground_truth") if isinstance(rm, dict) else None)
        if not golds:
            raise InputError("no ground truth", path=path, line=i, field="reward_model.ground_truth.target")
        rows.append(_row(str(question), golds, str(rec.get("data_source") or path.stem), [], max_searches))
    return rows


def load_rows(path: str | Path, *, max_searches: int = 10, limit: int | None = None) -> list[dict[str, Any]]:
    """Training rows from ``path`` (see the module docstring); errors name the file, line and field."""
    p = Path(path)
    if p.is_dir() and (p / "dataset.jsonl").is_file():  # a run directory
        p = p / "dataset.jsonl"
    if not p.is_file():
        raise InputError("training data file does not exist", path=p)
    if p.suffix == ".parquet":
        rows = _read_parquet(p, max_searches)
    elif p.suffix in (".jsonl", ".json"):
        rows = _read_jsonl(p, max_searches)
    else:
        raise InputError("expected a .jsonl (dataset / FlashRAG) or .parquet (verl) file", path=p)
    if not rows:
        raise InputError(no_rows_advice(p), path=p)
    return rows[:limit] if limit else rows


def no_rows_advice(path: Path) -> str:
    """Why an empty file gives nothing to train on, and what to train on instead (the other files of
    the run when DATA is a run's ``dataset.jsonl``: a demo run usually accepts no pair)."""
    if path.name != "dataset.jsonl":
        return (
            "no training rows: training needs question-answer lines (a run's dataset.jsonl, "
            "FlashRAG JSONL or verl parquet)"
        )
    run = path.parent
    easy = run / "too_easy.jsonl"
    n_easy = sum(1 for line in easy.open(encoding="utf-8") if line.strip()) if easy.is_file() else 0
    msg = (
        f"no training rows: the run accepted no pair (dataset.jsonl is empty; sagegen status {run} says why)"
    )
    if n_easy:
        msg += f"; its {n_easy} too-easy pairs can train a first model: sagegen train {easy}"
    return (
        msg + "; for accepted pairs, generate with a real model (the embedded demo model rarely writes "
        "one its solver verifies): sagegen generate -s llm.backend=openai -s llm.model=MODEL "
        "-s llm.base_url=URL, or train on a FlashRAG benchmark JSONL"
    )
