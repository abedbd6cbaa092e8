"""The verl recipe serves the corpus its data came from, and checks it at start-up (issue 27).

Unit tests find the corpus from a run's config, an export's ``export.json`` and the dry run's own
``--set``, and refuse when it cannot be known. The slow test runs the generated ``run_verl.sh``
from a clean folder on a HotpotQA run (the shared data) with a stand-in for verl: the real
``sagegen serve`` starts on the HotpotQA corpus, the start-up check reads its ``/health``, and the
training questions retrieve their supporting passages from it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sagegen.config import CorpusConfig, RetrievalConfig, ServerConfig, load_config
from sagegen.corpus import corpus_hash, load_corpus
from sagegen.errors import ConfigError
from sagegen.integrations.verl.corpus import ServedCorpus, check_served, served_corpus, wait_and_check
from sagegen.records import QAPair
from sagegen.retrieval.index import build_index, open_index
from sagegen.server.app import create_app
from sagegen.server.testing import running_server

SRC = Path(__file__).resolve().parents[2] / "src"


def _corpus(path: Path, n: int = 3) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": f"d{i}", "contents": f"Title {i}\ntext number {i}"}) + "\n" for i in range(n)
        ),
        encoding="utf-8",
    )
    return path


def _run(folder: Path, corpus: Path | None, kind: str = "bm25", pairs: list[QAPair] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"corpus": {"path": str(corpus) if corpus else None}, "retrieval": {"kind": kind}}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    (folder / "dataset.jsonl").write_text("".join(p.model_dump_json() + "\n" for p in pairs or []))
    return folder


def test_run_config_names_the_corpus_and_its_hash(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "c.jsonl")
    run = _run(tmp_path / "run", corpus)
    for data in (run, run / "dataset.jsonl"):  # a run directory, or a file in one
        s = served_corpus(data, load_config(None, []))
        assert s.corpus.path == str(corpus.resolve()) and s.retrieval.kind == "bm25"
        docs = load_corpus(CorpusConfig(path=str(corpus)))
        assert (s.n_docs, s.corpus_hash) == (3, corpus_hash(docs))
        assert s.serve_args() == ["--corpus", str(corpus.resolve()), "--kind", "bm25"]


def test_dry_run_refuses_an_unknown_or_conflicting_corpus(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "c.jsonl")
    other = _corpus(tmp_path / "other.jsonl", 2)
    with pytest.raises(ConfigError, match="cannot tell which corpus"):
        served_corpus(tmp_path / "nothing", load_config(None, []))
    # a FlashRAG file with no run beside it: the dry run's own corpus is used when given
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "q.jsonl").write_text('{"id": "1", "question": "q", "golden_answers": ["a"]}\n')
    s = served_corpus(bench / "q.jsonl", load_config(None, [f"corpus.path={other}"]))
    assert s.n_docs == 2 and s.origin.startswith("the dry run")
    run = _run(tmp_path / "run", corpus)
    with pytest.raises(ConfigError, match="says the data came from"):
        served_corpus(run, load_config(None, [f"corpus.path={other}"]))
    assert served_corpus(run, load_config(None, [f"corpus.path={corpus}"])).n_docs == 3  # same one: fine
    http_run = _run(tmp_path / "http_run", corpus, kind="http")
    with pytest.raises(ConfigError, match=r"retrieval\.kind=http, a server the recipe cannot start"):
        served_corpus(http_run, load_config(None, []))
    gone = _run(tmp_path / "gone", tmp_path / "moved.jsonl")
    with pytest.raises(ConfigError, match=r"moved\.jsonl is not here"):
        served_corpus(gone, load_config(None, []))


def test_cli_dry_run_refuses_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SAGEGEN_VERL_PYTHON"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagegen.cli.main",
            "train",
            str(tmp_path),
            "--backend",
            "verl",
            "--dry-run",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "1000"},
        timeout=120,
    )
    assert res.returncode == 2 and "cannot tell which corpus" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def _accepted(
    id_: str, question: str, answer: str, docs: tuple[str, ...], supporting: bool = False
) -> QAPair:
    """An accepted pair (difficulty 2, round 1) seeded on ``docs[0]``; ``supporting``: its evidence."""
    return QAPair(
        id=id_,
        question=question,
        answer=answer,
        answer_type="entity",
        target=2,
        difficulty=2,
        avg_at_k=0.5,
        label="pass",
        round=1,
        seed_doc_id=docs[0],
        supporting_ids=docs if supporting else (),
    )


def test_export_json_carries_the_corpus(tmp_path: Path) -> None:
    from sagegen.export.api import export_run

    corpus = _corpus(tmp_path / "c.jsonl")
    pair = _accepted("p0", "Which title holds text number 1?", "Title 1", ("d1",))
    run = _run(tmp_path / "run", corpus, pairs=[pair])
    export_run(run, "verl", tmp_path / "exp", split=0.0)
    meta = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert meta["corpus"]["corpus"]["path"] == str(corpus)
    s = served_corpus(tmp_path / "exp", load_config(None, []))  # the export alone, copied elsewhere
    assert s.corpus.path == str(corpus.resolve()) and s.n_docs == 3


def test_health_names_the_corpus_hash(tmp_path: Path) -> None:
    import httpx

    docs = load_corpus(CorpusConfig(path=str(_corpus(tmp_path / "c.jsonl"))))
    build_index(docs, "bm25", RetrievalConfig(), tmp_path / "idx")
    with running_server(create_app(open_index(tmp_path / "idx"), ServerConfig())) as base:
        info = httpx.get(f"{base}/health").json()
        assert (info["n_docs"], info["corpus_hash"]) == (3, corpus_hash(docs))
        assert wait_and_check(f"{base}/health", 3, corpus_hash(docs), pid=None, timeout_s=5) is None
        problem = wait_and_check(f"{base}/health", 3, "0" * 32, pid=None, timeout_s=5)
        assert problem is not None and "corpus hash" in problem
    assert check_served({"n_docs": 994, "corpus_hash": "x"}, 3, "x") is not None


def test_recipe_serves_the_named_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sagegen.integrations.verl.recipe import write_recipe

    monkeypatch.delenv("SAGEGEN_VERL_PYTHON", raising=False)
    served = ServedCorpus(
        "test",
        CorpusConfig(path="/data/hotpot corpus.jsonl", chunk_words=100),
        RetrievalConfig(kind="dense"),
        994,
        "ab" * 16,
    )
    files = write_recipe(load_config(None, []), tmp_path / "data", tmp_path / "recipe", served, check=False)
    script = files["script"].read_text()
    assert (
        'sagegen serve --config "$HERE/serve_config.yaml" --port 8000 --corpus '
        "'/data/hotpot corpus.jsonl' --kind dense &"
    ) in script
    assert (
        f"python3 -m sagegen.integrations.verl.corpus http://127.0.0.1:8000/health --n-docs 994 "
        f"--corpus-hash {'ab' * 16} --pid $SERVE_PID"
    ) in script
    assert script.index("sagegen.integrations.verl.corpus") < script.index(
        'verl.trainer.main_ppo "${OVERRIDES'
    )
    conf = yaml.safe_load((tmp_path / "recipe" / "serve_config.yaml").read_text())
    assert conf["corpus"]["chunk_words"] == 100 and "path" not in conf["corpus"]
    # what `sagegen serve --config serve_config.yaml --corpus ... --kind ...` resolves to is the served corpus
    cfg = load_config(
        tmp_path / "recipe" / "serve_config.yaml",
        ["corpus.path=/data/hotpot corpus.jsonl", "retrieval.kind=dense"],
    )
    assert cfg.corpus == served.corpus and cfg.retrieval.kind == "dense"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The stand-in for the cluster's python3: verl's own checker and trainer are replaced (no verl here);
# everything else (sagegen.integrations.verl.corpus) runs in the real interpreter. The "trainer" asks the
# tool's server for each training question, as verl's search tool would, and records what came back.
_FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1 $2" = "-m sagegen.integrations.verl.check" ]; then exit 0; fi
if [ "$1 $2" = "-m verl.trainer.main_ppo" ]; then exec {python} {here}/fake_trainer.py "$@"; fi
exec {python} "$@"
"""
_FAKE_TRAINER = """import json, sys, urllib.request
import pyarrow.parquet as pq
ov = dict(a.split("=", 1) for a in sys.argv[3:-1])
tool = __import__("yaml").safe_load(open(ov["actor_rollout_ref.rollout.multi_turn.tool_config_path"]))
url = tool["tools"][0]["config"]["retrieval_service_url"]
rows = pq.read_table(ov["data.train_files"]).to_pylist()
qs = [r["question"] for r in rows]
body = json.dumps({"queries": qs, "topk": 3, "return_scores": False}).encode()
req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
res = json.load(urllib.request.urlopen(req))["result"]
json.dump({q: [d["id"] for d in hits] for q, hits in zip(qs, res)}, open(sys.argv[-1], "w"))
"""


@pytest.mark.slow
def test_run_verl_sh_serves_the_hotpotqa_corpus(shared_data: Path, tmp_path: Path) -> None:
    corpus = shared_data / "hotpotqa" / "corpus.jsonl"
    questions = shared_data / "hotpotqa" / "questions.jsonl"
    if not corpus.is_file():
        pytest.skip(f"{corpus} absent (shared data)")
    rows = [json.loads(x) for x in questions.read_text().splitlines()[:13]]
    pairs = [
        _accepted(r["id"], r["question"], r["golden_answers"][0], tuple(r["supporting"]), supporting=True)
        for r in rows
    ]
    run = _run(tmp_path / "runs" / "hotpot", corpus, pairs=pairs)
    clean = tmp_path / "clean"  # the recipe folder, started from a clean folder (no index built yet)
    clean.mkdir()
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "1000"}
    cli = [sys.executable, "-m", "sagegen.cli.main"]
    port = _free_port()
    subprocess.run(
        [*cli, "export", str(run), "--format", "verl", "--out", str(tmp_path / "exp"), "--split", "0"],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
    )
    dry = subprocess.run(
        [
            *cli,
            "train",
            str(tmp_path / "exp"),
            "--backend",
            "verl",
            "--dry-run",
            "--out",
            str(clean / "recipe"),
            "--set",
            f"train.verl.retriever_url=http://127.0.0.1:{port}/retrieve",
        ],
        env={k: v for k, v in env.items() if k != "SAGEGEN_VERL_PYTHON"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert dry.returncode == 0, dry.stderr
    script = (clean / "recipe" / "run_verl.sh").read_text()
    assert f"--corpus {corpus.resolve()} --kind bm25" in script
    # run_verl.sh as the cluster would, with the stand-ins on PATH
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(_FAKE_PYTHON.format(python=sys.executable, here=bin_dir))
    (bin_dir / "sagegen").write_text(f'#!/usr/bin/env bash\nexec {sys.executable} -m sagegen.cli.main "$@"\n')
    (bin_dir / "fake_trainer.py").write_text(_FAKE_TRAINER)
    for f in ("python3", "sagegen"):
        (bin_dir / f).chmod(0o755)
    got = tmp_path / "retrieved.json"
    run_env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}
    proc = subprocess.run(
        ["bash", str(clean / "recipe" / "run_verl.sh"), str(got)],
        cwd=clean,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    n_passages = len(load_corpus(CorpusConfig(path=str(corpus))))
    assert f"serves the training data's corpus ({n_passages} passages)" in proc.stderr
    retrieved = json.loads(got.read_text())
    supported = [p for p in pairs if set(p.supporting_ids) & set(retrieved[p.question.strip()])]
    assert len(retrieved) == len(pairs) and len(supported) == len(pairs), (len(supported), len(pairs))
