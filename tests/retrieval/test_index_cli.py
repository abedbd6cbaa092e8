"""Index directories: manifest, reuse, stale detection (rebuild or refuse), atomic writes, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sagegen.cli.main import app
from sagegen.config import load_config
from sagegen.corpus import corpus_hash, load_corpus
from sagegen.errors import IndexError_
from sagegen.retrieval import bm25 as bm25_mod
from sagegen.retrieval.factory import build_retriever, ensure_index, open_corpus_and_retriever
from sagegen.retrieval.index import (
    INDEX_FORMAT_VERSION,
    MANIFEST,
    BuildInterrupted,
    build_index,
    open_index,
    read_manifest,
)

ROWS = [
    {"id": "p1", "contents": "Paris\nParis is the capital of France."},
    {"id": "p2", "contents": "Berlin\nBerlin is the capital of Germany."},
    {"id": "p3", "contents": "Cat\nThe cat is a small domesticated mammal."},
]


def write_corpus(path: Path, rows: list[dict[str, str]] = ROWS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def cfg_for(tmp_path: Path, corpus: Path, *extra: str):
    return load_config(None, [f"corpus.path={corpus}", f"retrieval.index_dir={tmp_path / 'indexes'}", *extra])


def test_manifest_and_reuse(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, write_corpus(tmp_path / "c.jsonl"))
    first = ensure_index(cfg)
    assert first.built and first.path.parent == tmp_path / "indexes" and first.path.name.startswith("bm25-")
    m = read_manifest(first.path)
    docs = load_corpus(cfg.corpus)
    assert m["format_version"] == INDEX_FORMAT_VERSION and m["kind"] == "bm25" and m["n_docs"] == 3
    assert m["corpus_hash"] == corpus_hash(docs)
    assert m["params"]["bm25"]["k1"] == 1.5 and m["params"]["bm25"]["tokenizer"]["stemmer"] == "english"
    second = ensure_index(cfg)
    assert not second.built and second.path == first.path
    # A different build parameter selects a different index directory (never a stale reuse).
    other = ensure_index(cfg_for(tmp_path, tmp_path / "c.jsonl", "retrieval.bm25.k1=0.9"))
    assert other.built and other.path != first.path


def test_changed_corpus_gets_a_new_index(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl")
    a = ensure_index(cfg_for(tmp_path, corpus))
    write_corpus(corpus, [*ROWS, {"id": "p4", "contents": "Dog\nThe dog descends from the wolf."}])
    b = ensure_index(cfg_for(tmp_path, corpus))
    assert b.built and b.path != a.path and b.manifest["n_docs"] == 4


def test_explicit_stale_index_rebuilt_or_refused(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl")
    out = tmp_path / "my-index"
    cfg = cfg_for(tmp_path, corpus, f"retrieval.index_path={out}")
    ensure_index(cfg)
    write_corpus(corpus, ROWS[:2])
    with pytest.raises(
        IndexError_, match=r"(?s)does not match the current corpus.*corpus: index built from another corpus"
    ):
        ensure_index(
            cfg_for(tmp_path, corpus, f"retrieval.index_path={out}", "retrieval.rebuild_stale=false")
        )
    with pytest.raises(IndexError_, match=r"params bm25.b: 0.75 -> 0.5"):
        write_corpus(corpus)
        ensure_index(
            cfg_for(
                tmp_path,
                corpus,
                f"retrieval.index_path={out}",
                "retrieval.bm25.b=0.5",
                "retrieval.rebuild_stale=false",
            )
        )
    write_corpus(corpus, ROWS[:2])
    rebuilt = ensure_index(cfg)  # rebuild_stale defaults to true
    assert rebuilt.built and rebuilt.reason.startswith("stale: corpus") and rebuilt.manifest["n_docs"] == 2
    assert [h.doc.id for h in open_index(out).search(["capital"], k=5)[0]] == ["p1", "p2"]


def test_wrong_format_version_and_missing_manifest(tmp_path: Path) -> None:
    docs = load_corpus(load_config(None, [f"corpus.path={write_corpus(tmp_path / 'c.jsonl')}"]).corpus)
    build_index(docs, "bm25", load_config().retrieval, tmp_path / "idx")
    m = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    (tmp_path / "idx" / MANIFEST).write_text(json.dumps({**m, "format_version": 999}))
    with pytest.raises(IndexError_, match="format version 999"):
        open_index(tmp_path / "idx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexError_, match=r"not a sagegen index: no manifest\.json"):
        open_index(tmp_path / "empty")


def test_never_overwrites_a_foreign_directory(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    cfg = cfg_for(tmp_path, write_corpus(tmp_path / "c.jsonl"), f"retrieval.index_path={out}")
    with pytest.raises(IndexError_, match="exists and is not a sagegen index"):
        ensure_index(cfg)
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_failed_build_leaves_nothing_and_keeps_the_old_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl")
    out = tmp_path / "idx"
    cfg = cfg_for(tmp_path, corpus, f"retrieval.index_path={out}")
    real = bm25_mod.build_bm25

    def crash(docs, bcfg, out_dir, *, progress=None):
        real(docs, bcfg, out_dir, progress=progress)  # half the files are there...
        raise RuntimeError("disk full")  # ...and then the build dies

    monkeypatch.setattr(bm25_mod, "build_bm25", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_index(cfg)
    assert not out.exists() and list(tmp_path.glob(".idx.*")) == []
    monkeypatch.setattr(bm25_mod, "build_bm25", real)
    good = ensure_index(cfg)
    monkeypatch.setattr(bm25_mod, "build_bm25", crash)
    with pytest.raises(RuntimeError):
        ensure_index(cfg, force=True)
    # The previous, complete index is untouched and still loads.
    assert read_manifest(out) == good.manifest
    assert open_index(out).search(["Paris"], k=1)[0][0].doc.id == "p1"


def test_killed_build_never_loads(tmp_path: Path) -> None:
    """SIGKILL in the middle of a build (no cleanup code runs): no index under the final name."""
    corpus = write_corpus(tmp_path / "c.jsonl")
    out = tmp_path / "idx"
    script = textwrap.dedent(
        f"""
        import os, signal
        from sagegen.config import load_config
        from sagegen.retrieval import bm25
        from sagegen.retrieval.factory import ensure_index
        real = bm25.build_bm25
        def die(docs, cfg, out_dir, *, progress=None):
            real(docs, cfg, out_dir, progress=progress)
            os.kill(os.getpid(), signal.SIGKILL)
        bm25.build_bm25 = die
        ensure_index(load_config(None, ["corpus.path={corpus}", "retrieval.index_path={out}"]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert not out.exists()
    [leftover] = tmp_path.glob(".idx.tmp-*")
    assert (leftover / "passages.jsonl").is_file() and not (leftover / MANIFEST).exists()
    with pytest.raises(IndexError_, match=r"no manifest\.json"):
        open_index(leftover)
    # The next build succeeds and removes the dead process's leftovers.
    ensure_index(cfg_for(tmp_path, corpus, f"retrieval.index_path={out}"))
    assert open_index(out).search(["cat"], k=1)[0][0].doc.id == "p3"
    assert list(tmp_path.glob(".idx.*")) == []


def test_interrupted_build_cleans_up_and_says_what_is_left(tmp_path: Path) -> None:
    """Ctrl-C mid-build: no temp dir, the old index (if any) intact, one sentence to print."""
    corpus = write_corpus(tmp_path / "c.jsonl")
    cfg = cfg_for(tmp_path, corpus)
    docs = load_corpus(cfg.corpus)
    out = tmp_path / "idx"

    def ctrl_c(stage: str, done: int, total: int) -> None:
        if done:  # after the first stage reported some work
            raise KeyboardInterrupt

    with pytest.raises(BuildInterrupted) as first:
        build_index(docs, "bm25", cfg.retrieval, out, progress=ctrl_c)
    assert not out.exists() and list(tmp_path.glob(".idx*")) == []
    assert first.value.stage and first.value.done > 0
    assert "nothing was written there" in str(first.value) and str(out) in str(first.value)

    good = build_index(docs, "bm25", cfg.retrieval, out)
    with pytest.raises(BuildInterrupted) as second:
        build_index(docs, "bm25", cfg.retrieval, out, progress=ctrl_c)
    assert "previous index there is unchanged" in str(second.value)
    assert read_manifest(out) == good and list(tmp_path.glob(".idx*")) == []
    assert open_index(out).search(["Paris"], k=1)[0][0].doc.id == "p1"


def test_factory_contract(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, write_corpus(tmp_path / "c.jsonl"))
    docs, retriever = open_corpus_and_retriever(cfg)
    assert docs is not None and [d.id for d in docs] == ["p1", "p2", "p3"]
    assert retriever.search(["Germany"], k=1)[0][0].doc.id == "p2"
    assert build_retriever(cfg).search(["Germany"], k=1)[0][0].doc.id == "p2"
    http_cfg = load_config(None, ["retrieval.kind=http"])
    docs, remote = open_corpus_and_retriever(http_cfg)
    assert docs is None and type(remote).__name__ == "HTTPRetriever"


# ----------------------------------------------------------------------------- CLI


def test_cli_index_and_search(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl")
    runner = CliRunner()
    res = runner.invoke(app, ["index", "--corpus", str(corpus), "--out", str(tmp_path / "idx")])
    assert res.exit_code == 0, res.output
    assert str(tmp_path / "idx") in res.stdout
    assert read_manifest(tmp_path / "idx")["n_docs"] == 3
    res = runner.invoke(
        app, ["search", "capital of Germany", "cat", "-k", "2", "--index", str(tmp_path / "idx"), "--json"]
    )
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert [x["query"] for x in lines] == ["capital of Germany", "cat"]
    assert (
        lines[0]["hits"][0]["id"] == "p2" and lines[0]["hits"][0]["rank"] == 1 and len(lines[0]["hits"]) == 2
    )
    assert lines[1]["hits"][0]["title"] == "Cat"
    # Without --index: the same selection logic as every other command (built on first use).
    res = runner.invoke(
        app, ["search", "Paris", "--corpus", str(corpus), "-s", f"retrieval.index_dir={tmp_path / 'ix'}"]
    )
    assert res.exit_code == 0, res.output
    assert "p1" in res.stdout and "Paris is the capital of France." in res.stdout
    assert len(list((tmp_path / "ix").glob("bm25-*"))) == 1


def test_cli_bad_corpus_line_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n" + '{"id": "p2", "content": "typo"}\n', encoding="utf-8")
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagegen.cli.main",
            "index",
            "--corpus",
            str(bad),
            "--out",
            str(tmp_path / "idx"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "bad.jsonl, line 2, field 'contents': missing field" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "idx").exists()
