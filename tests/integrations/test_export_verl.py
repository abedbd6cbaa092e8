"""verl / Search-R1 parquet: read back field by field, with pyarrow and with `datasets`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fixture_ledger import RUN_ID, build_ledger

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from sagegen.errors import InputError, SagegenError  # noqa: E402
from sagegen.export.api import export_run  # noqa: E402
from sagegen.export.source import select, split_pairs  # noqa: E402
from sagegen.export.verl import check_verl_parquet, verl_schema  # noqa: E402
from sagegen.records import QAPair  # noqa: E402
from sagegen.verdict import reward  # noqa: E402

# Search-R1's scripts/data_process/nq_search.py prefix, word for word (typo "your want" included).
SEARCH_R1_INSTRUCTION = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first "
    "every time you get new information. After reasoning, if you find you lack some knowledge, "
    "you can call a search engine by <search> query </search> and it will return the top "
    "searched results between <information> and </information>. You can search as many times "
    "as your want. If you find no further external knowledge needed, you can directly provide "
    "the answer inside <answer> and </answer>, without detailed illustrations. "
    "For example, <answer> Beijing </answer>. Question: "
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ledger(tmp_path_factory.mktemp("verl") / "run")


def _qa(i: int, difficulty: int | None, q: str | None = None) -> QAPair:
    return QAPair(
        id=f"q{i}",
        question=q or f"Question number {i}?",
        answer=f"A{i}",
        answer_type="entity",
        target=3,
        difficulty=difficulty,
        avg_at_k=0.5,
        label="pass",
        round=1,
        seed_doc_id=f"d{i}",
    )


def test_parquet_matches_search_r1_format(run_dir: Path, tmp_path: Path) -> None:
    s = export_run(run_dir, "verl", tmp_path / "out", split=0.5, min_difficulty=2, seed=0)
    assert s["counts"] == {"train": 1, "test": 1}
    rows = {}
    for split in ("train", "test"):
        table = pq.read_table(tmp_path / "out" / f"{split}.parquet")
        assert table.schema.equals(verl_schema())
        for row in table.to_pylist():
            rows[row["id"]] = row
            assert row["extra_info"]["split"] == split and row["extra_info"]["index"] == 0
    assert set(rows) == {f"{RUN_ID}-0", f"{RUN_ID}-1"}  # the two accepted pairs, both difficulty 3
    r = rows[f"{RUN_ID}-1"]
    q = "When was the founder of the city of Lyon born?"
    assert r["data_source"] == "sagegen"
    assert r["prompt"] == [{"role": "user", "content": SEARCH_R1_INSTRUCTION + q + "\n"}]
    assert r["ability"] == "fact-reasoning"
    assert r["reward_model"] == {"style": "rule", "ground_truth": {"target": ["87 BC"]}}
    ex = r["extra_info"]
    assert ex["id"] == r["id"] and ex["question"] == q and ex["answer"] == "87 BC"
    assert (ex["answer_type"], ex["target"], ex["difficulty"], ex["round"], ex["label"]) == (
        "date",
        3,
        3,
        2,
        "pass",
    )
    assert ex["avg_at_k"] == pytest.approx(0.5) and ex["run_id"] == RUN_ID and ex["seed_doc_id"] == "seed1"
    assert r["question"] == q and r["golden_answers"] == ["87 BC"]
    # the reward file travels with the data and is the same code
    copy = tmp_path / "out" / "sagegen_reward.py"
    assert copy.read_text() == Path(reward.__file__).read_text()
    judge_prompt = (tmp_path / "out" / reward.JUDGE_PROMPT_FILE).read_text()
    assert all(slot in judge_prompt for slot in reward.JUDGE_SLOTS.values()) and "{{" not in judge_prompt
    meta = json.loads((tmp_path / "out" / "export.json").read_text())
    assert meta["reward"] == {"path": "sagegen_reward.py", "name": "compute_score"}


def test_read_back_with_datasets_and_score(run_dir: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    export_run(run_dir, "verl", tmp_path / "out", split=0.0, min_difficulty=0, labels=("pass", "too_easy"))
    assert not (tmp_path / "out" / "test.parquet").exists()
    ds = datasets.load_dataset("parquet", data_files={"train": str(tmp_path / "out" / "train.parquet")})[
        "train"
    ]
    assert ds.num_rows == 3 and ds.column_names[:5] == [
        "data_source",
        "prompt",
        "ability",
        "reward_model",
        "extra_info",
    ]
    assert [row["extra_info"]["index"] for row in ds] == [0, 1, 2]
    # what verl hands the reward: ground_truth from the parquet row, response from the policy
    for row in ds:
        gt = row["reward_model"]["ground_truth"]
        answer = row["golden_answers"][0]
        assert (
            reward.compute_score(row["data_source"], f"<think>x</think><answer> {answer} </answer>", gt)
            == 1.0
        )
        assert reward.compute_score(row["data_source"], "<answer> nope </answer>", gt) == 0.0
        # Search-R1's reward manager decodes prompt + response together
        full = row["prompt"][0]["content"] + f"<think>x</think><answer>{answer}</answer>"
        assert reward.compute_score(row["data_source"], full, gt) == 1.0
    # pandas (verl's RLHFDataset reads parquet through it) sees the same structure
    df = pq.read_table(tmp_path / "out" / "train.parquet").to_pandas()
    assert list(df["reward_model"][0]["ground_truth"]["target"]) == [ds[0]["golden_answers"][0]]


def test_min_difficulty_and_dedupe() -> None:
    pairs = [_qa(0, 1), _qa(1, 2), _qa(2, None), _qa(3, 5), _qa(4, 4, q="question NUMBER 3")]
    assert [p.id for p in select(pairs, min_difficulty=2)] == [
        "q1",
        "q3",
    ]  # q4 duplicates q3 after normalising
    assert [p.id for p in select(pairs, min_difficulty=0)] == ["q0", "q1", "q2", "q3"]
    assert [p.id for p in select(pairs, min_difficulty=0, dedupe=False)] == ["q0", "q1", "q2", "q3", "q4"]


def test_split_is_seeded_and_disjoint() -> None:
    pairs = [_qa(i, 3) for i in range(50)]
    tr, te = split_pairs(pairs, 0.1, seed=7)
    assert len(te) == 5 and len(tr) == 45 and not {p.id for p in tr} & {p.id for p in te}
    assert split_pairs(pairs, 0.1, seed=7) == (tr, te)
    assert split_pairs(pairs, 0.1, seed=8)[1] != te
    assert split_pairs(pairs[:2], 0.1)[1] and split_pairs(pairs[:2], 0.1)[0]  # one each side
    assert split_pairs(pairs[:1], 0.5) == (pairs[:1], [])
    with pytest.raises(SagegenError, match="--split"):
        split_pairs(pairs, 1.0)


def test_schema_check_rejects_wrong_parquet(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"data_source": ["x"], "prompt": ["just a string"]}), bad)
    with pytest.raises(InputError, match=r"field 'prompt': column type string is not list"):
        check_verl_parquet(bad)
    pq.write_table(pa.table({"data_source": ["x"]}), bad)
    with pytest.raises(InputError, match=r"field 'prompt': missing column"):
        check_verl_parquet(bad)
    # right schema, broken row: empty golden answer list
    from sagegen.export.verl import verl_row

    row = verl_row(_qa(1, 3), "train", 0)
    row["reward_model"]["ground_truth"]["target"] = []
    pq.write_table(pa.Table.from_pylist([row], schema=verl_schema()), bad)
    with pytest.raises(InputError, match=r"line 1, field 'reward_model'"):
        check_verl_parquet(bad)


def test_export_errors(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SagegenError, match="no pairs to export"):
        export_run(run_dir, "verl", tmp_path / "o", min_difficulty=9)
    with pytest.raises(SagegenError, match="unknown export format"):
        export_run(run_dir, "csv", tmp_path / "o")
    with pytest.raises(InputError, match="no such run directory"):
        export_run(tmp_path / "missing", "verl")
    bad = tmp_path / "dataset.jsonl"
    bad.write_text('{"id": "x"}\n')
    with pytest.raises(InputError, match=r"dataset.jsonl, line 1, field"):
        export_run(bad, "verl")


def test_export_from_dataset_jsonl_without_ledger(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copied"
    copy.mkdir()
    (copy / "dataset.jsonl").write_text((run_dir / "dataset.jsonl").read_text())
    s = export_run(copy, "verl", tmp_path / "o2", split=0)
    assert s["counts"] == {"train": 2}


def test_cli_export_verl(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagegen.cli.main",
            "export",
            str(run_dir),
            "--format",
            "verl",
            "--out",
            str(out),
            "--split",
            "0.5",
            "--data-source",
            "hotpotqa",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["counts"] == {"train": 1, "test": 1}
    assert pq.read_table(out / "train.parquet").column("data_source").to_pylist() == ["hotpotqa"]
    bad = subprocess.run(
        [sys.executable, "-m", "sagegen.cli.main", "export", str(run_dir), "--min-difficulty", "9"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        bad.returncode == 2
        and "no pairs to export" in " ".join(bad.stderr.split())
        and "Traceback" not in bad.stderr
    )
