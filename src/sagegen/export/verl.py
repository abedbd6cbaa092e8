"""Search-R1 / verl training parquet (``train.parquet``, ``test.parquet``).

One row per pair, in the layout Search-R1's ``scripts/data_process/nq_search.py`` writes and
verl's ``RLHFDataset`` reads::

    data_source   str                      routes the reward in stock Search-R1 (docs/train.md)
    prompt        [{"role": "user", "content": <Search-R1 instruction + question>}]
    ability       "fact-reasoning"
    reward_model  {"style": "rule", "ground_truth": {"target": [answer]}}
    extra_info    {"split", "index", + every exported QAPair field (``export.fields.PAIR_FIELDS``)}
    id, question, golden_answers            the FlashRAG columns Search-R1 keeps as well

The reward function (``sagegen_reward.py``, a copy of :mod:`sagegen.verdict.reward`) is written
next to the parquet so the training cluster needs nothing else from sagegen.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagegen.errors import InputError, SagegenError
from sagegen.export.fields import arrow_fields, pair_fields
from sagegen.prompts import render
from sagegen.records import QAPair

ABILITY = "fact-reasoning"
DEFAULT_DATA_SOURCE = "sagegen"
PROMPT_TEMPLATE = "export_searchr1.j2"


def _pa() -> Any:
    try:
        import pyarrow as pa
    except ImportError:
        raise SagegenError("parquet export needs pyarrow: pip install 'sagegen[parquet]'") from None
    return pa


def verl_schema() -> Any:
    """The pyarrow schema of our parquet (and what :func:`check_verl_parquet` demands)."""
    pa = _pa()
    return pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
            ("ability", pa.string()),
            (
                "reward_model",
                pa.struct(
                    [
                        ("style", pa.string()),
                        ("ground_truth", pa.struct([("target", pa.list_(pa.string()))])),
                    ]
                ),
            ),
            ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64()), *arrow_fields()])),
            ("id", pa.string()),
            ("question", pa.string()),
            ("golden_answers", pa.list_(pa.string())),
        ]
    )


def searchr1_prompt(question: str) -> str:
    # Search-R1 ends the user message with a newline after the question; keep it identical.
    return render(PROMPT_TEMPLATE, question=question.strip()) + "\n"


def verl_row(
    pair: QAPair, split: str, index: int, data_source: str = DEFAULT_DATA_SOURCE, run_id: str = ""
) -> dict[str, Any]:
    question = pair.question.strip()
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": searchr1_prompt(question)}],
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": {"target": [pair.answer]}},
        "extra_info": {"split": split, "index": index, **pair_fields(pair, run_id)},
        "id": pair.id,
        "question": question,
        "golden_answers": [pair.answer],
    }


@dataclass
class VerlExport:
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    reward_path: Path | None = None


def write_verl(
    train: Sequence[QAPair],
    test: Sequence[QAPair],
    out_dir: str | Path,
    *,
    data_source: str = DEFAULT_DATA_SOURCE,
    run_id: str = "",
    corpus: dict[str, Any] | None = None,
) -> VerlExport:
    """Write ``train.parquet`` (and ``test.parquet`` when ``test`` is non-empty) plus the reward file.

    ``corpus``: the run's ``corpus`` and ``retrieval`` config sections, kept in ``export.json`` so the
    verl recipe serves the corpus the questions came from (``sagegen.integrations.verl.corpus``).
    """
    pa = _pa()
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = VerlExport(out)
    schema = verl_schema()
    for split, pairs in (("train", train), ("test", test)):
        if split == "test" and not pairs:
            continue
        rows = [verl_row(p, split, i, data_source, run_id) for i, p in enumerate(pairs)]
        table = pa.Table.from_pylist(rows, schema=schema)
        path = out / f"{split}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)
        check_verl_parquet(path)
        res.files[split] = path
        res.counts[split] = len(rows)
    from sagegen.verdict import reward

    res.reward_path = out / "sagegen_reward.py"
    shutil.copyfile(reward.__file__, res.reward_path)
    # compute_score_judge reads the grader prompt from beside itself (no template engine on the cluster)
    (out / reward.JUDGE_PROMPT_FILE).write_text(reward.judge_prompt_template() + "\n", encoding="utf-8")
    (out / "export.json").write_text(
        json.dumps(
            {
                "format": "verl",
                "data_source": data_source,
                "counts": res.counts,
                "reward": {"path": res.reward_path.name, "name": "compute_score"},
                **({"corpus": corpus} if corpus else {}),
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return res


def check_verl_parquet(path: str | Path) -> int:
    """Validate a parquet against the Search-R1 layout: schema and every row. Returns the row count.

    Raises ``InputError`` naming the file, the row and the field at fault.
    """
    _pa()
    import pyarrow.parquet as pq

    path = Path(path)
    table = pq.read_table(path)
    want = verl_schema()
    for f in want:
        if f.name not in table.schema.names:
            raise InputError("missing column", path=path, field=f.name)
        got = table.schema.field(f.name).type
        if not got.equals(f.type):
            raise InputError(f"column type {got} is not {f.type}", path=path, field=f.name)
    for i, row in enumerate(table.to_pylist()):
        line = i + 1
        prompt = row["prompt"]
        if not prompt or prompt[0]["role"] != "user" or not prompt[0]["content"]:
            raise InputError(
                "prompt must be a non-empty chat list starting with a user message",
                field="prompt",
                path=path,
                line=line,
            )
        if "<answer>" not in prompt[0]["content"] or row["question"] not in prompt[0]["content"]:
            raise InputError(
                "prompt lacks the Search-R1 instruction or the question", field="prompt", path=path, line=line
            )
        rm = row["reward_model"]
        if rm["style"] != "rule" or not rm["ground_truth"]["target"]:
            raise InputError(
                "reward_model must be rule-style with a non-empty target list",
                field="reward_model",
                path=path,
                line=line,
            )
        if any(not t for t in rm["ground_truth"]["target"]):
            raise InputError(
                "empty golden answer", field="reward_model.ground_truth.target", path=path, line=line
            )
        ex = row["extra_info"]
        if ex["split"] not in ("train", "test") or ex["index"] is None or ex["index"] < 0:
            raise InputError(
                "extra_info needs split train/test and a non-negative index",
                field="extra_info",
                path=path,
                line=line,
            )
        if row["ability"] != ABILITY or not row["data_source"]:
            raise InputError(
                f"ability must be {ABILITY!r} and data_source non-empty",
                field="ability",
                path=path,
                line=line,
            )
    return table.num_rows
