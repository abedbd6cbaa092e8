"""SFT data: the solver trajectories that answered a pair correctly, as chat JSONL.

Two styles, one JSON object per line, each with ``id``, ``question``, ``answer``, ``trace_id``,
``num_searches`` besides the training fields:

``chat`` (default; TRL ``SFTTrainer`` conversational format)::

    {"messages": [{"role": "system", "content": ..., "train": false, "retrieved": false},
                  {"role": "user", "content": "Question: ...", "train": false, "retrieved": false},
                  {"role": "assistant", "content": "<think>..</think><search> q </search>",
                   "train": true, "retrieved": false},
                  {"role": "user", "content": "<information>Doc 1(Title: ..) ..</information>",
                   "train": false, "retrieved": true},
                  ...,
                  {"role": "assistant", "content": "<think>..</think><answer> X </answer>",
                   "train": true, "retrieved": false}]}

  Exactly the chat our solver had (tag or tool protocol; ``tool`` messages carry retrieved text).
  Only ``train: true`` messages (the assistant's) should be in the loss; retrieved passages are
  never assistant messages, so TRL's ``assistant_only_loss=True`` masks them; other trainers can
  use the flags.

``searchr1`` (Search-R1's prompt and tags, for an SFT warm-up before verl/Search-R1 PPO)::

    {"messages": [{"role": "user", "content": <Search-R1 instruction + question>, "train": false, ...},
                  {"role": "assistant", "content": "<think>..</think><search> q </search>", "train": true},
                  {"role": "user", "content": "<information>..</information>", "retrieved": true},
                  ...,
                  {"role": "assistant", "content": "<think>..</think><answer> X </answer>", "train": true}],
     "searchr1_text": "<think>..</think><search> q </search>\\n\\n<information>..</information>\\n\\n...",
     "retrieved_spans": [[start, end], ...]}

  A conversational dataset, so stock TRL (``assistant_only_loss=True``) trains on the model's turns
  only: each ``<information>`` block is a user turn of its own. ``searchr1_text`` is the same
  rollout flattened as Search-R1's trainer sees it; ``retrieved_spans`` are the character offsets of
  its ``<information>…</information>`` blocks, for trainers that mask by span (``state_masking``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagegen.records import QAPair, Trajectory

INFO_RE = re.compile(r"<\s*information\s*>.*?<\s*/\s*information\s*>", re.IGNORECASE | re.DOTALL)
#: Events after which a trajectory is kept only with ``clean=False``: they mean a malformed or
#: failed turn that SFT would otherwise teach.
UNCLEAN_EVENTS = (
    "no_action",
    "empty_search",
    "empty_answer",
    "truncated",
    "bad_tool_call",
    "llm_error",
    "forced_answer",
    "search_budget_exhausted",
    "no_answer",
)


@dataclass
class SFTStats:
    pairs: int = 0
    pairs_with_trajectory: int = 0
    examples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def _is_retrieved(msg: dict[str, Any]) -> bool:
    # Only tool results and the user turns that carry them: the tag protocol's system prompt
    # *describes* "<information> and </information>", which is instructions, not retrieved text.
    role = msg.get("role")
    return role == "tool" or (role == "user" and bool(INFO_RE.search(str(msg.get("content") or ""))))


def chat_example(traj: Trajectory) -> list[dict[str, Any]]:
    """The solver chat with per-message ``train`` / ``retrieved`` flags."""
    out = []
    for m in traj.messages:
        msg = {k: v for k, v in m.items() if k in ("role", "content", "tool_calls", "tool_call_id", "name")}
        msg["content"] = msg.get("content") or ""
        msg["train"] = m.get("role") == "assistant"
        msg["retrieved"] = _is_retrieved(m) and m.get("role") != "assistant"
        out.append(msg)
    return out


def searchr1_turns(traj: Trajectory) -> list[tuple[str, str]]:
    """The rollout after the prompt as (``model`` | ``information``, text) turns, in Search-R1 tags."""
    turns: list[tuple[str, str]] = []
    text, spans = searchr1_example(traj)
    pos = 0
    for a, b in spans:
        if text[pos:a].strip():
            turns.append(("model", text[pos:a].strip()))
        turns.append(("information", text[a:b]))
        pos = b
    if text[pos:].strip():
        turns.append(("model", text[pos:].strip()))
    return turns


def searchr1_messages(traj: Trajectory, prompt: str) -> list[dict[str, Any]]:
    """Search-R1's prompt and tags as a chat whose retrieved blocks are user turns (never trained)."""
    msgs = [{"role": "user", "content": prompt, "train": False, "retrieved": False}]
    for kind, text in searchr1_turns(traj):
        model = kind == "model"
        msgs.append(
            {
                "role": "assistant" if model else "user",
                "content": text,
                "train": model,
                "retrieved": not model,
            }
        )
    return msgs


def searchr1_example(traj: Trajectory, question: str = "") -> tuple[str, list[list[int]]]:
    """The trajectory flattened into one Search-R1 style completion, plus retrieved-text spans."""
    parts: list[str] = []
    spans: list[list[int]] = []
    pos = 0
    started = False
    for m in traj.messages:
        role, content = m.get("role"), str(m.get("content") or "")
        if role == "assistant":
            started = True
            text = content.strip()
            if m.get("tool_calls"):  # tool protocol: render the call as the tag it stands for
                for tc in m["tool_calls"]:
                    args = tc.get("function", {}).get("arguments", "")
                    try:
                        query = json.loads(args).get("query", args) if isinstance(args, str) else args
                    except (json.JSONDecodeError, AttributeError):
                        query = args
                    text += f"<search> {query} </search>"
            parts.append(text)
            pos += len(text)
        elif started and (role == "tool" or (role == "user" and INFO_RE.search(content))):
            for block in INFO_RE.findall(content) or [f"<information>{content}</information>"]:
                sep = "\n\n"
                parts.append(sep)
                pos += len(sep)
                spans.append([pos, pos + len(block)])
                parts.append(block)
                pos += len(block)
                parts.append(sep)
                pos += len(sep)
    return "".join(parts), spans


def sft_rows(
    store: Any,
    keep_ids: Container[str],
    *,
    style: str = "chat",
    clean: bool = True,
    per_pair: int | None = None,
    stats: SFTStats | None = None,
) -> list[dict[str, Any]]:
    """Rows for every correct attempt of the final round of each kept pair (ledger order).

    ``clean`` drops trajectories that were forced, malformed or hit an LLM error; ``per_pair``
    keeps at most that many per pair, fewest searches first (ties: attempt order).
    """
    from sagegen.export.verl import searchr1_prompt

    if style not in ("chat", "searchr1"):
        raise ValueError(f"unknown SFT style {style!r}; use 'chat' or 'searchr1'")
    stats = stats if stats is not None else SFTStats()
    rows: list[dict[str, Any]] = []
    for rec in store.pairs():
        qa: QAPair | None = rec.qa
        if qa is None or qa.id not in keep_ids:
            continue
        stats.pairs += 1
        final = next((r for r in rec.rounds if r.round == (rec.final_round or qa.round)), None)
        if final is None:
            stats.skip("final_round_missing")
            continue
        chosen = []
        seen: set[str] = set()
        for att in sorted(final.attempts, key=lambda a: (a.num_searches, a.index)):
            if not att.judgement.correct:
                continue
            try:
                traj = store.trajectory(att.trace_id)
            except KeyError:
                stats.skip("trajectory_missing")
                continue
            if not traj.messages:
                stats.skip("no_messages")
                continue
            if clean and (
                traj.status != "answered"
                or any(s.kind == "event" and s.event in UNCLEAN_EVENTS for s in traj.steps)
            ):
                stats.skip("unclean")
                continue
            if any(
                m.get("role") == "assistant" and INFO_RE.search(str(m.get("content") or ""))
                for m in traj.messages
            ):
                stats.skip("assistant_wrote_information")  # would teach hallucinated retrieval
                continue
            digest = hashlib.sha256(
                json.dumps(traj.messages, sort_keys=True, default=str).encode()
            ).hexdigest()
            if digest in seen:
                stats.skip("duplicate_trajectory")
                continue
            seen.add(digest)
            chosen.append((att, traj))
            if per_pair is not None and len(chosen) >= per_pair:
                break
        if chosen:
            stats.pairs_with_trajectory += 1
        for att, traj in chosen:
            row: dict[str, Any] = {
                "id": f"{qa.id}.a{att.index}",
                "pair_id": qa.id,
                "question": qa.question,
                "answer": qa.answer,
                "trace_id": att.trace_id,
                "num_searches": att.num_searches,
                "difficulty": qa.difficulty,
                "target": qa.target,
            }
            if style == "chat":
                row["messages"] = chat_example(traj)
            else:
                flat, spans = searchr1_example(traj, qa.question)
                row["messages"] = searchr1_messages(traj, searchr1_prompt(qa.question))
                row["searchr1_text"] = flat
                row["retrieved_spans"] = spans
            rows.append(row)
            stats.examples += 1
    return rows


def write_sft(rows: list[dict[str, Any]], out_dir: str | Path, *, name: str = "sft.jsonl") -> Path:
    from sagegen.export.source import write_jsonl

    path = Path(out_dir) / name
    write_jsonl(path, rows)
    check_sft(path)
    return path


ROLES = ("system", "user", "assistant", "tool")


def check_sft(path: str | Path) -> int:
    """Validate an SFT JSONL (either style) as a trainer will read it; returns the row count.

    Both styles: ``messages`` is a list of {role, content(str), train(bool), retrieved(bool)}, with
    at least one trained assistant turn and no trained retrieved text. ``searchr1`` also has
    ``retrieved_spans`` that each cover one ``<information>`` block of ``searchr1_text``. (Files
    from earlier releases had ``prompt``/``completion`` instead of ``messages``; still checked.)
    """
    from sagegen.errors import InputError

    path = Path(path)
    n = 0
    with path.open(encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            row = json.loads(line)
            n += 1
            if "messages" in row:
                msgs = row["messages"]
                for m in msgs:
                    if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                        raise InputError(
                            "every message needs a known role and string content",
                            path=path,
                            line=no,
                            field="messages",
                        )
                    if m.get("train") and (m.get("retrieved") or m["role"] != "assistant"):
                        raise InputError(
                            "only assistant turns may be trained on",
                            path=path,
                            line=no,
                            field="messages.train",
                        )
                if not any(m.get("train") for m in msgs):
                    raise InputError("no assistant turn to train on", path=path, line=no, field="messages")
            if "retrieved_spans" in row:
                if "searchr1_text" in row:
                    text = row["searchr1_text"]
                else:
                    text = row["completion"][0]["content"]
                    if row["prompt"][0]["role"] != "user" or row["completion"][0]["role"] != "assistant":
                        raise InputError(
                            "prompt must be a user turn, completion an assistant turn",
                            path=path,
                            line=no,
                            field="prompt",
                        )
                for a, b in row["retrieved_spans"]:
                    if not INFO_RE.fullmatch(text[a:b]):
                        raise InputError(
                            f"span [{a}, {b}] is not one <information> block",
                            path=path,
                            line=no,
                            field="retrieved_spans",
                        )
    return n
