"""``sagegen import``: the authors' release outputs (google-research ``sage/``) into a run ledger.

The release writes three kinds of JSONL (pandas ``to_json(orient="records", lines=True)``); the
fields below are those its writer code produces, and the mapping is what ``docs/protocol.md``
documents:

``initial_questions/*.jsonl`` (``initial_question_gen.py``), one line per generated pair:
    ``initial_doc`` "Title: t\\nContent: text" → the seed passage (the release keeps no corpus id:
    ``seed_doc_id`` is ``release:<sha1 of the text>``); ``question``/``answer`` → round 1's candidate;
    ``search_steps`` (target S, or "multiple" when none was set → target 0); ``answer_type``
    ("a number" / "a date" / "an entity"); ``prompt`` and ``model_response`` (the prompt followed
    by the whole search transcript) → the generator trajectory, its ``<search>`` queries as search
    steps (the ids of the passages they returned are not kept: none recorded).
``feedbacks/*.jsonl`` (``feedback_gen.py``), one line per pair sent back, carrying the verdict of
    the *previous* round and the revision: ``prev_question``/``prev_answer`` identify the previous
    candidate; ``best_of_n`` (correct), ``best_n_search_steps`` (difficulty), ``avg_of_n`` (Avg@K),
    ``n_rollouts`` (K), ``n_correct``, ``model_answer`` (the K final answers), ``best_idx`` and
    ``best_response`` (the one attempt transcript kept) → that round's verdict and its one attempt;
    ``feedback_type`` ("difficulty" = too easy, "correctness" = incorrect) is checked against it;
    ``question``/``answer`` (null when the revision failed), ``prompt`` (the feedback prompt) and
    ``model_response`` (the reply) → the next round's candidate and reviser trajectory. Rounds chain
    through ``prev_question`` (a second feedback file's ``prev_question`` is a first one's ``question``).
``processed_data/*.jsonl`` (``process_generated_data.py``): ``question``, ``answer`` of the accepted
    pairs → the pair whose latest candidate has that question is finished as accepted (label
    ``pass``, ``acceptance="unknown"``: the release's last round also keeps too-easy pairs and the
    file does not say which; difficulty and Avg@K are not in it: ``None``).

Never invented: the K-1 attempt traces the release drops (only the answers are kept, in an event),
passage ids, the verdicts of candidates that no imported file judges (such a pair stays
``running``: its last candidate was never judged in these files), and the seed passage's corpus id.
The reviser (``feedback_gen.py``, "0turn") has no search tool: a ``<search>`` it writes in its reply
is text, not a search, so reviser trajectories hold no search steps.

The release as published is not closed under its own references: its feedbacks file judges a
question no released initial_questions line generated, and its processed_data file accepts a
question no released line generated. Such a line (a ``prev_question`` or accepted ``question``
without a source record among the imported files, directly or through a skipped line) is skipped
and reported by file and line (``ImportSummary.skipped``, an ``import_skipped`` event each). A
``processed_data`` file imported without any initial_questions line (a user holding only the
released dataset) gives one accepted pair per line, round 1, with difficulty, Avg@K, target S and
seed unknown (``None`` / ``0`` = no target, as for the release's "multiple"; the answer type is
read from the answer, ``answer_types.classify``, since the file does not record it).

What the release's file names record (``initial_question_gen.py``: ``{corpus}_{model}_{retriever}
_with_search_{n}_{max_turn}turn_{min}to{max}_steps``; each feedback round appends
``_{model}_{turns}turn``; processed files end ``_{k}{st|nd|rd|th}_feedback``) becomes the run's
config (generator model, rounds, target range, search budget, K, the HTTP retriever) and
``RUN/import.json`` (models per role, retriever name, rounds, what is unknown: ``None``), which
``analyze`` and ``report`` show.
A line that is not JSON, lacks a field, has a field of the wrong type, or matches none of the three
kinds fails with file, line and field; the ledger is written only after every file has been read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagegen.agents import tags
from sagegen.errors import InputError, SagegenError
from sagegen.jsonl import iter_text_lines
from sagegen.records import (
    AnswerType,
    Candidate,
    Judgement,
    QAPair,
    Step,
    Trajectory,
    Verdict,
    VerdictLabel,
)

_ANSWER_TYPES: dict[str, AnswerType] = {
    "a number": "number",
    "a date": "date",
    "an entity": "entity",
    "number": "number",
    "date": "date",
    "entity": "entity",
}
_INITIAL = {
    "initial_doc": str,
    "question": str,
    "answer": str,
    "model_response": str,
    "prompt": str,
    "search_steps": (int, str),
    "answer_type": str,
}
_FEEDBACK = {
    "prev_question": str,
    "prev_answer": str,
    "feedback_type": str,
    "best_of_n": int,
    "best_n_search_steps": int,
    "avg_of_n": (int, float),
    "n_rollouts": int,
    "search_steps": (int, str),
    "best_response": str,
    "question": (str, type(None)),
    "answer": (str, type(None)),
    "prompt": str,
    "model_response": (str, type(None)),
}
_PROCESSED = {"question": str, "answer": str}


@dataclass
class _Line:
    path: Path
    line: int
    row: dict[str, Any]


@dataclass
class _Round:
    question: str
    answer: str | None
    kind: str  # "generate" / "feedback"
    trajectory: Trajectory
    source: _Line
    verdict_line: _Line | None = None  # the feedback line judging this candidate
    accepted: _Line | None = None  # the processed_data line accepting it


@dataclass
class _Pair:
    #: The initial_questions line; for a processed_data line imported alone, that line.
    seed: _Line
    rounds: list[_Round] = field(default_factory=list)

    @property
    def accepted_only(self) -> bool:
        return "initial_doc" not in self.seed.row


_INITIAL_NAME = re.compile(
    r"^(?P<corpus>.+?)_(?P<model>[^_]+)_(?P<retriever>[^_]+)_with_search_(?P<n>\d+)_"
    r"(?P<turns>\d+)turn_(?P<smin>\d+)to(?P<smax>\d+)_steps(?P<rest>.*)$"
)
_FEEDBACK_ROUND = re.compile(r"_(?P<model>[^_]+)_(?P<turns>\d+)turn")
_PROCESSED_NAME = re.compile(r"_(?P<k>\d+)(?:st|nd|rd|th)_feedback$")


def read_release(paths: Iterable[str | Path]) -> tuple[list[_Line], list[_Line], list[_Line]]:
    """Every line of the given files (folders: their ``*.jsonl``, recursively), sorted into the three
    kinds by their fields; any other line is an error naming file, line and field."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.jsonl"))
        elif p.is_file():
            files.append(p)
        else:
            raise InputError("no such file or folder", path=p)
    if not files:
        raise InputError("no .jsonl files to import", path=", ".join(map(str, paths)))
    initial: list[_Line] = []
    feedback: list[_Line] = []
    processed: list[_Line] = []
    for f in files:
        # Decoded line by line (a non-UTF-8 byte is named on its own line; a BOM is dropped); closed
        # at once when a line is refused.
        with contextlib.closing(iter_text_lines(f, what="release file")) as text_lines:
            for n, raw in text_lines:
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw)
                except json.JSONDecodeError as e:
                    raise InputError(f"not JSON ({e.msg})", path=f, line=n) from None
                if not isinstance(row, dict):
                    raise InputError("expected a JSON object", path=f, line=n)
                line = _Line(f, n, row)
                if "initial_doc" in row:
                    _check(line, _INITIAL, "initial_questions")
                    initial.append(line)
                elif "feedback_type" in row or "prev_question" in row:
                    _check(line, _FEEDBACK, "feedbacks")
                    feedback.append(line)
                elif set(row) == set(_PROCESSED):
                    _check(line, _PROCESSED, "processed_data")
                    processed.append(line)
                else:
                    raise InputError(
                        "not a line of the release's initial_questions (no 'initial_doc'), feedbacks (no "
                        "'feedback_type') or processed_data (exactly 'question' and 'answer'); fields: "
                        + ", ".join(sorted(row))[:300],
                        path=f,
                        line=n,
                    )
    return initial, feedback, processed


def _check(line: _Line, schema: dict[str, Any], kind: str) -> None:
    for name, types in schema.items():
        if name not in line.row:
            raise InputError(f"missing in a {kind} line", path=line.path, line=line.line, field=name)
        value = line.row[name]
        if not isinstance(value, types) or isinstance(value, bool):
            raise InputError(
                f"{kind}: expected {_names(types)}, got {type(value).__name__}",
                path=line.path,
                line=line.line,
                field=name,
            )
    if kind == "initial_questions" and line.row["answer_type"] not in _ANSWER_TYPES:
        raise InputError(
            f"unknown answer type {line.row['answer_type']!r} (the release writes 'a number', "
            "'a date' or 'an entity')",
            path=line.path,
            line=line.line,
            field="answer_type",
        )
    if kind == "feedbacks" and line.row["feedback_type"] not in ("difficulty", "correctness"):
        raise InputError(
            f"expected 'difficulty' or 'correctness', got {line.row['feedback_type']!r}",
            path=line.path,
            line=line.line,
            field="feedback_type",
        )


def _names(types: Any) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def _target(line: _Line) -> int:
    s = line.row["search_steps"]
    if isinstance(s, int):
        return s
    if s == "multiple":  # the release's "no target S" generation
        return 0
    raise InputError(
        f"expected an integer or 'multiple', got {s!r}", path=line.path, line=line.line, field="search_steps"
    )


def split_release_transcript(text: str) -> tuple[str, str]:
    """The release's own split of a flat transcript (``feedback_gen.py``): the prompt is everything
    before the third ``<think>`` (its instructions mention the tag twice), the output the rest."""
    parts = text.split("<think>")
    if len(parts) <= 3:
        return text, ""
    return "<think>".join(parts[:3]).strip(), "<think>" + "<think>".join(parts[3:])


def _trajectory(agent: str, prompt: str, output: str, question: str, answer: str | None) -> Trajectory:
    steps = [Step(kind="model", text=output)]
    if agent != "reviser":  # the release's reviser has no search tool: its written <search> searched nothing
        # The queries the transcript shows; the passage ids they returned are not in the release's files.
        steps += [Step(kind="search", query=b.content) for b in tags.blocks(output, "search") if b.content]
    messages = [{"role": "user", "content": prompt}]
    if output:
        messages.append({"role": "assistant", "content": output})
    return Trajectory(
        agent=agent,
        question=question,
        steps=tuple(steps),
        answer=answer,
        status="answered" if answer else "failed",
        messages=tuple(messages),
    )


@dataclass(frozen=True)
class ImportSummary:
    pairs: int
    rounds: int
    verdicts: int
    accepted: int
    unjudged: int
    files: tuple[str, ...]
    #: "file:line: why" for each line skipped for want of its source record.
    skipped: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = (
            f"imported {self.pairs} pairs, {self.rounds} rounds, {self.verdicts} verdicts, "
            f"{self.accepted} accepted; {self.unjudged} pairs end in a candidate no imported file "
            f"judges (left running)\nfrom {', '.join(self.files)}"
        )
        if self.skipped:
            text += f"\nskipped {len(self.skipped)} lines without a source record:\n  " + "\n  ".join(
                self.skipped
            )
        return text


def _skip(line: _Line, why: str) -> str:
    return f"{line.path}:{line.line}: {why}"


def release_facts(initial: list[_Line], feedback: list[_Line], processed: list[_Line]) -> dict[str, Any]:
    """What the release's file names and rows say about its run; ``None`` where they say nothing."""
    facts: dict[str, Any] = {
        "generator_model": None,
        "reviser_model": None,
        "solver_model": None,
        "judge_model": None,
        "retriever": None,
        "corpus": None,
        "target_min": None,
        "target_max": None,
        "generator_max_searches": None,
        "feedback_rounds": None,
        "attempts": None,
        "min_search_step": None,
    }
    for line in initial:
        m = _INITIAL_NAME.match(line.path.stem)
        if m:
            facts.update(
                generator_model=m["model"],
                retriever=m["retriever"],
                corpus=m["corpus"],
                target_min=int(m["smin"]),
                target_max=int(m["smax"]),
                generator_max_searches=int(m["turns"]),
            )
            break
    rounds_seen = []
    for line in feedback:
        m = _INITIAL_NAME.match(line.path.stem)
        chain = _FEEDBACK_ROUND.findall(m["rest"]) if m else []
        if m and chain:
            facts.update(
                retriever=facts["retriever"] or m["retriever"],
                generator_model=facts["generator_model"] or m["model"],
                reviser_model=chain[-1][0],
            )
            rounds_seen.append(len(chain))
    for line in processed:
        m = _PROCESSED_NAME.search(line.path.stem)
        if m:
            rounds_seen.append(int(m["k"]))
    if rounds_seen:
        facts["feedback_rounds"] = max(rounds_seen)
    ks = {line.row["n_rollouts"] for line in feedback}
    if len(ks) == 1:
        facts["attempts"] = ks.pop()
    return facts


def _config_overrides(facts: dict[str, Any], n_pairs: int) -> list[str]:
    """The run config's rows the release's files fix; the rest stays the ``sage`` profile's."""
    out = [
        f"pipeline.num_seeds={max(n_pairs, 1)}",
        # The release searched a Search-R1 /retrieve server (its E5 index) at this address.
        "retrieval.kind=http",
        "retrieval.http.url=http://127.0.0.1:8000/retrieve",
        # process_generated_data.py's --min_search_step is in no file name: no minimum of ours applies
        # on top of the release's own acceptance (import.json says it is unknown).
        "pipeline.min_difficulty_for_dataset=0",
    ]
    if facts["generator_model"]:
        out += ["llm.backend=openai", f"llm.model={facts['generator_model']}"]
    if facts["feedback_rounds"] is not None:
        out.append(f"pipeline.rounds={facts['feedback_rounds'] + 1}")
    if facts["target_min"] is not None:
        out.append(f"pipeline.target={facts['target_min']}-{facts['target_max']}")
    if facts["generator_max_searches"] is not None:
        out.append(f"generator.max_searches={facts['generator_max_searches']}")
    if facts["attempts"] is not None:
        out.append(f"pipeline.attempts={facts['attempts']}")
    return out


def import_release(paths: Iterable[str | Path], out: str | Path, *, force: bool = False) -> ImportSummary:
    """Read the release's files, then write them as a run ledger at ``out`` (see the module doc)."""
    from sagegen.config import load_config
    from sagegen.ids import trace_id
    from sagegen.ledger.lock import DirLock
    from sagegen.ledger.store import IMPORT_FILE, RunStore
    from sagegen.profiles import load_profile

    paths = list(paths)
    initial, feedback, processed = read_release(paths)
    skipped: list[str] = []
    if not initial and not processed:
        raise InputError(
            "no initial_questions or processed_data line: pairs start in one of them",
            path=", ".join(map(str, paths)),
        )
    pairs = [_Pair(seed=line) for line in initial]
    latest: dict[str, tuple[int, int]] = {}  # question → (pair, round index) of its candidate
    for i, p in enumerate(pairs):
        row = p.seed.row
        prompt = row["prompt"]
        transcript = row["model_response"]
        output = (
            transcript[len(prompt) :]
            if transcript.startswith(prompt)
            else split_release_transcript(transcript)[1]
        )
        traj = _trajectory("generator", prompt, output, row["question"], row["answer"])
        p.rounds.append(_Round(row["question"], row["answer"], "generate", traj, p.seed))
        latest.setdefault(row["question"], (i, 0))
    pending = list(feedback)
    while pending:  # chain rounds: a line's prev_question is a candidate already placed
        placed = [fb for fb in pending if fb.row["prev_question"] in latest]
        if not placed:  # the rest judge questions whose source record is not among the imported files
            why = (
                "prev_question: no imported initial_questions or feedbacks line generated this question "
                "(its source record is not in these files)"
            )
            skipped += [_skip(fb, why) for fb in pending]
            break
        for fb in placed:
            pending.remove(fb)
            i, r = latest[fb.row["prev_question"]]
            rnd = pairs[i].rounds[r]
            if rnd.verdict_line is not None:
                seen = rnd.verdict_line
                raise InputError(
                    f"the question was already judged by {seen.path} line {seen.line}",
                    path=fb.path,
                    line=fb.line,
                    field="prev_question",
                )
            if r != len(pairs[i].rounds) - 1:
                raise InputError(
                    "revises a candidate that was already revised",
                    path=fb.path,
                    line=fb.line,
                    field="prev_question",
                )
            _judged(fb, _target(pairs[i].seed))  # checked now: nothing is written before all is read
            rnd.verdict_line = fb
            q, a = fb.row["question"], fb.row["answer"]
            traj = _trajectory("reviser", fb.row["prompt"], fb.row["model_response"] or "", q or "", a)
            pairs[i].rounds.append(_Round(q or "", a, "feedback", traj, fb))
            if q:
                latest[q] = (i, len(pairs[i].rounds) - 1)
    for line in processed:
        hit = latest.get(line.row["question"])
        if hit is not None:
            pairs[hit[0]].rounds[hit[1]].accepted = line
        elif initial:
            skipped.append(
                _skip(
                    line,
                    "question: no imported initial_questions or feedbacks line generated "
                    "this accepted question (its source record is not in these files)",
                )
            )
        else:  # only the released dataset: each line is an accepted pair, all else unknown
            q, a = line.row["question"], line.row["answer"]
            traj = Trajectory(agent="generator", question=q, answer=a, status="answered")
            pairs.append(_Pair(seed=line, rounds=[_Round(q, a, "generate", traj, line, accepted=line)]))
            latest.setdefault(q, (len(pairs) - 1, 0))

    facts = release_facts(initial, feedback, processed)
    cfg = load_config(None, _config_overrides(facts, len(pairs)), base=load_profile("sage"))
    out = Path(out)
    for p in pairs:
        if not p.accepted_only:
            _target(p.seed)
    files = sorted({str(x.path) for x in (*initial, *feedback, *processed)})
    counts = {"rounds": 0, "verdicts": 0, "accepted": 0, "unjudged": 0}
    with DirLock(out, "run"):  # one writer per run directory, as for `generate`
        if (out / "ledger.sqlite").exists() and not force:
            raise SagegenError(
                f"{out} already holds a run; pass --force to replace it, or choose another --out"
            )
        store, _ = RunStore.create_or_resume(out, cfg.model_dump(mode="json"), cfg.dump(), force=force)
        try:
            store.begin_session()
            store.event("import", "sagegen import of the authors' release: " + ", ".join(files))
            for why in skipped:
                store.event("import_skipped", why)
            for idx, p in enumerate(pairs):
                _write_pair(store, idx, p, out.name, counts, trace_id)
            store.end_session("completed")
        finally:
            store.close()
        meta = {
            "source": "the authors' release (google-research, sage/outputs/agentic_question_gen)",
            "files": files,
            **facts,
            "skipped": skipped,
            "unknown": sorted(k for k, v in facts.items() if v is None),
        }
        (out / IMPORT_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return ImportSummary(
        len(pairs),
        counts["rounds"],
        counts["verdicts"],
        counts["accepted"],
        counts["unjudged"],
        tuple(files),
        tuple(skipped),
    )


def _write_pair(store: Any, idx: int, p: _Pair, run: str, counts: dict[str, int], trace_id: Any) -> None:
    row = p.seed.row
    if p.accepted_only:
        from sagegen.agents.answer_types import classify

        doc_id, target = "", 0
        answer_type = classify(row["answer"]) or "entity"
        store.add_pair(idx, doc_id, target, answer_type)
        store.event(
            "import_unknown",
            "a processed_data line alone: seed passage, target S, answer type "
            "(read from the answer), difficulty, Avg@K and the round it was accepted in are not "
            "recorded",
            idx,
        )
    else:
        doc_id = "release:" + hashlib.sha1(row["initial_doc"].encode("utf-8")).hexdigest()[:16]
        target = _target(p.seed)
        answer_type = _ANSWER_TYPES[row["answer_type"]]
        store.add_pair(idx, doc_id, target, answer_type)
        store.event("import_unknown", "seed passage: the release keeps its text, not its corpus id", idx)
    last: tuple[int, Candidate, Verdict | None, list[str]] | None = None
    for r, rnd in enumerate(p.rounds, 1):
        gen_tid = trace_id(f"p{idx}", f"r{r}", "gen")
        cand = None
        if rnd.question and rnd.answer:
            plan_tag = "answering steps" if rnd.kind == "generate" else "search steps"
            msgs = rnd.trajectory.messages
            plan = (tags.last(str(msgs[-1]["content"]), plan_tag, allow_unclosed=True) or "") if msgs else ""
            cand = Candidate(
                question=rnd.question,
                answer=rnd.answer,
                answer_type=answer_type,
                target=target,
                plan=plan,
                seed_doc_id=doc_id,
                round=r,
                supporting_ids=(doc_id,) if doc_id else (),
            )
        store.add_round(idx, r, rnd.kind, cand, gen_tid, rnd.trajectory)
        counts["rounds"] += 1
        if cand is None:
            store.event("generation_failed", "the release's reviser gave no question/answer", idx, r)
            continue
        verdict: Verdict | None = None
        attempt_ids: list[str] = []
        if rnd.verdict_line is not None:
            verdict, attempt_ids = _write_verdict(store, idx, r, cand, rnd.verdict_line, trace_id)
            counts["verdicts"] += 1
        last = (r, cand, verdict, attempt_ids)
    if last is None:
        store.finish_pair(idx, "failed", None, None, None, None)
        return
    r, cand, verdict, attempt_ids = last
    accepted = p.rounds[r - 1].accepted is not None
    if verdict is None and not accepted:
        counts["unjudged"] += 1
        store.event(
            "import_unknown", f"round {r}'s candidate is judged by none of the imported files", idx, r
        )
        return
    label = "pass" if accepted or verdict is None else verdict.label  # None: accepted (returned above)
    qa = QAPair(
        id=f"{run}-{idx}",
        question=cand.question,
        answer=cand.answer,
        answer_type=cand.answer_type,
        target=cand.target,
        difficulty=verdict.difficulty if verdict else None,
        avg_at_k=verdict.avg_at_k if verdict else None,
        label=label,
        round=r,
        seed_doc_id=cand.seed_doc_id,
        supporting_ids=cand.supporting_ids,
        plan=cand.plan,
        trace_ids={
            "generation": trace_id(f"p{idx}", f"r{r}", "gen"),
            "attempts": attempt_ids,
            "num_attempts": verdict.num_attempts if verdict else None,
            "rounds": [trace_id(f"p{idx}", f"r{k}", "gen") for k in range(1, r + 1)],
        },
        run_id=run,
        acceptance="unknown" if accepted else "strict",
    )
    output = {"pass": "dataset", "too_easy": "too_easy", "incorrect": "unsolved"}[label]
    if accepted:
        counts["accepted"] += 1
    written = store.finish_pair(idx, label, r, qa, output, cand.question)  # the release dedups exactly
    if written is not None:
        store.append_output(written, qa)


def _judged(line: _Line, target: int) -> tuple[bool, int | None, bool, VerdictLabel]:
    """(correct, difficulty, passed, label) of a feedbacks line, as the release's ``pass_check``."""
    row = line.row
    correct = row["best_of_n"] == 1
    difficulty = row["best_n_search_steps"] if correct else None
    passed = correct and difficulty is not None and difficulty >= target
    label: VerdictLabel = "pass" if passed else ("too_easy" if correct else "incorrect")
    expected = {"too_easy": "difficulty", "incorrect": "correctness"}.get(label)
    if expected != row["feedback_type"]:
        raise InputError(
            f"best_of_n={row['best_of_n']}, best_n_search_steps={row['best_n_search_steps']} "
            f"and target {target} make this pair {label}, but the line says "
            f"{row['feedback_type']!r}",
            path=line.path,
            line=line.line,
            field="feedback_type",
        )
    return correct, difficulty, passed, label


def _write_verdict(
    store: Any, idx: int, r: int, cand: Candidate, line: _Line, trace_id: Any
) -> tuple[Verdict, list[str]]:
    row = line.row
    correct, difficulty, passed, label = _judged(line, cand.target)
    verdict = Verdict(
        correct=correct,
        difficulty=difficulty,
        passed=passed,
        avg_at_k=float(row["avg_of_n"]),
        label=label,
        num_attempts=row["n_rollouts"],
    )
    answers, best = row.get("model_answer"), row.get("best_idx")
    answers = answers if isinstance(answers, list) else []
    best = best if isinstance(best, int) else 0
    prompt, output = split_release_transcript(row["best_response"])
    extracted = answers[best] if best < len(answers) and isinstance(answers[best], str) else None
    traj = _trajectory("solver", prompt, output, cand.question, extracted)
    tid = trace_id(f"p{idx}", f"r{r}", f"a{best}")
    judgement = Judgement(
        correct=correct,
        extracted=extracted,
        method="release",
        reason="the release's judge verdict (best_of_n); its reply is not kept",
    )
    store.add_attempt(idx, r, best, 0, tid, traj, judgement)
    store.set_verdict(idx, r, verdict)
    store.event(
        "import_unknown",
        f"{row['n_rollouts'] - 1} attempt traces not kept by the release; "
        f"their final answers: {json.dumps(answers)[:500]}",
        idx,
        r,
    )
    return verdict, [tid]
