"""``--format flashrag`` into a folder: the split files FlashRAG's own ``get_dataset`` opens.

FlashRAG (``flashrag/utils/utils.py``) reads ``dataset_path/{split}.jsonl`` for each split of its
config; the held-out ``test.jsonl`` is the same seeded split as the verl export's ``test.parquet``,
so "evaluate on the held-out split" evaluates on pairs the policy never trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixture_ledger import build_ledger
from sagegen.errors import SagegenError
from sagegen.export.api import export_run
from sagegen.loop.evaluate import load_benchmark


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ledger(tmp_path_factory.mktemp("flashrag") / "run")


LABELS = ("pass", "too_easy", "incorrect")


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_flashrag_get_dataset_reads_the_split_folder(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("transformers")  # flashrag.utils imports it
    utils = pytest.importorskip("flashrag.utils.utils", reason="pip install --no-deps flashrag-dev")
    out = tmp_path / "bench"
    s = export_run(run_dir, "flashrag", out, min_difficulty=0, labels=LABELS, split=0.25, dev_split=0.25)
    assert sorted(s["files"]) == ["dev", "test", "train"] and sum(s["counts"].values()) == s["selected"]
    config = {
        "dataset_path": str(out),
        "split": ["train", "dev", "test"],
        "dataset_name": "sagegen",
        "test_sample_num": None,
        "random_sample": False,
    }
    splits = utils.get_dataset(config)
    for name in ("train", "dev", "test"):
        ds = splits[name]
        assert ds is not None, f"FlashRAG found no {name}.jsonl"
        assert [it.id for it in ds.data] == _ids(out / f"{name}.jsonl")
        rows = [json.loads(x) for x in (out / f"{name}.jsonl").read_text().splitlines()]
        assert [it.golden_answers for it in ds.data] == [r["golden_answers"] for r in rows]
        assert len(ds.data) == s["counts"][name] > 0
    every = [i for n in ("train", "dev", "test") for i in _ids(out / f"{n}.jsonl")]
    assert len(every) == len(set(every)) == s["selected"]  # disjoint and complete


def test_held_out_split_is_the_verl_test_split(run_dir: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    v = export_run(run_dir, "verl", tmp_path / "verl", min_difficulty=0, labels=LABELS, split=0.4, seed=3)
    f = export_run(run_dir, "flashrag", tmp_path / "fr", min_difficulty=0, labels=LABELS, split=0.4, seed=3)
    assert "dev" not in f["files"]
    verl_test = [r["id"] for r in pq.read_table(v["files"]["test"]).to_pylist()]
    verl_train = [r["id"] for r in pq.read_table(v["files"]["train"]).to_pylist()]
    assert [i.id for i in load_benchmark(tmp_path / "fr" / "test.jsonl")] == verl_test
    assert _ids(tmp_path / "fr" / "train.jsonl") == verl_train
    assert not set(verl_test) & set(verl_train)


def test_a_jsonl_out_still_writes_one_benchmark_and_bad_fractions_are_refused(
    run_dir: Path, tmp_path: Path
) -> None:
    s = export_run(run_dir, "flashrag", tmp_path / "all.jsonl", min_difficulty=0, labels=LABELS)
    assert list(s["files"]) == ["all"] and len(_ids(tmp_path / "all.jsonl")) == s["selected"]
    with pytest.raises(SagegenError, match=r"--dev 0\.6 with --split 0\.5"):
        export_run(
            run_dir, "flashrag", tmp_path / "x", min_difficulty=0, labels=LABELS, split=0.5, dev_split=0.6
        )
