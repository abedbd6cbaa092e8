"""``sagegen serve --workers N``: N server processes on one port, through the real CLI over sockets.

Checked: the answers are the in-process search's, more than one process answers, a worker killed
with SIGKILL is replaced while the others keep answering, Ctrl-C stops them all (exit 130 as with
one process), SIGTERM stops them all without leaking semaphores (it ends by the signal, as one
process does), and workers whose parent was killed with SIGKILL stop by themselves.

The workers are the processes that answer ``/health`` (it names its pid), not the parent's children:
multiprocessing's resource tracker is a child too, and it outlives the parent by a moment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.serve_cli import cli_env, start_serve, write_searchr1
from sagegen.config import load_config
from sagegen.records import Doc
from sagegen.retrieval.factory import build_retriever

DOCS = [
    Doc(id=f"p{i}", title=t, text=x)
    for i, (t, x) in enumerate(
        [
            ("Paris", "Paris is the capital and largest city of France."),
            ("Berlin", "Berlin is the capital of Germany."),
            ("Lyon", "Lyon lies where the Rhone meets the Saone."),
            ("Hamlet", "Hamlet is a tragedy written by William Shakespeare."),
            ("Rhine", "The Rhine flows from the Alps to the North Sea."),
        ]
    )
]
QUERIES = ["capital of Germany", "Rhone river Lyon", "largest city of France", "Who wrote Hamlet?"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _wait(what: str, cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _pids(base: str, n: int = 40) -> set[int]:
    """The processes that answered ``n`` health checks, each on a new connection."""
    return {httpx.get(f"{base}/health", timeout=10).json()["pid"] for _ in range(n)}


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return {int(x) for x in out.stdout.split()}


def _workers(base: str, parent: int) -> set[int]:
    """The two serving workers, once both answer: pids named by /health, each a child of ``parent``."""
    _wait("two workers answering", lambda: len(_pids(base)) == 2)
    workers = _pids(base, 60)
    assert len(workers) == 2 and workers <= _children(parent) and parent not in workers
    return workers


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_searchr1(tmp_path / "corpus.jsonl", DOCS)


def _start(corpus: Path, tmp_path: Path, workers: int) -> tuple[subprocess.Popen[str], str]:
    args = ["--corpus", str(corpus), "--kind", "bm25", "-s", f"retrieval.index_dir={tmp_path / 'idx'}"]
    return start_serve([*args, "--workers", str(workers)], tmp_path)  # type: ignore[no-any-return]


def test_workers_share_the_port_replace_a_dead_one_and_stop_on_ctrl_c(corpus: Path, tmp_path: Path) -> None:
    proc, base = _start(corpus, tmp_path, 2)
    try:
        _workers(base, proc.pid)
        health = httpx.get(f"{base}/health", timeout=10).json()
        assert health["workers"] == 2 and health["n_docs"] == len(DOCS)

        cfg = load_config(
            None, [f"corpus.path={corpus}", "retrieval.kind=bm25", f"retrieval.index_dir={tmp_path / 'idx'}"]
        )
        local = build_retriever(cfg).search(QUERIES, 2)
        for _ in range(6):  # new connections: several of them land on each worker
            got = httpx.post(
                f"{base}/retrieve", json={"queries": QUERIES, "topk": 2, "return_scores": True}, timeout=10
            ).json()["result"]
            assert [[(h["document"]["id"], round(h["score"], 6)) for h in q] for q in got] == [
                [(h.doc.id, round(h.score, 6)) for h in q] for q in local
            ]

        victim = sorted(_pids(base))[0]
        os.kill(victim, signal.SIGKILL)
        # The other one answers meanwhile; the parent starts a replacement.
        _wait("a replacement worker", lambda: (p := _pids(base)) and victim not in p and len(p) == 2)
        assert proc.poll() is None
        workers = _workers(base, proc.pid)
    except BaseException:
        proc.kill()
        raise
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the parent
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert not any(_alive(p) for p in workers)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/health", timeout=2)


def test_sigterm_stops_every_worker_and_leaks_nothing(corpus: Path, tmp_path: Path) -> None:
    # SIGTERM (systemd, Kubernetes, `kill`) used to leave the workers' ready-Events' semaphores behind:
    # "resource_tracker: There appear to be 10 leaked semaphore objects to clean up at shutdown".
    proc, base = _start(corpus, tmp_path, 2)
    try:
        workers = _workers(base, proc.pid)
        children = _children(proc.pid)  # the workers and multiprocessing's resource tracker
    except BaseException:
        proc.kill()
        raise
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)  # to EOF: every holder of its stderr (the tracker too) is done
    assert proc.returncode == -signal.SIGTERM, err  # it ends by the signal, as one server process does
    assert "leaked" not in err and "resource_tracker" not in err and "Traceback" not in err, err
    assert not any(_alive(p) for p in workers)
    _wait("every child of the server to exit", lambda: not any(_alive(p) for p in children), timeout=10)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/health", timeout=2)


def test_workers_stop_when_their_parent_is_killed(corpus: Path, tmp_path: Path) -> None:
    proc, base = _start(corpus, tmp_path, 2)
    try:
        workers = _workers(base, proc.pid)
    finally:
        proc.kill()  # kill -9: the parent can tell nobody
        proc.communicate(timeout=10)
    _wait("the orphaned workers to exit", lambda: not any(_alive(p) for p in workers), timeout=15)


def _serve_index(index: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sagegen.cli.main",
            "serve",
            "--index",
            str(index),
            "--port",
            "0",
            "--workers",
            "2",
        ],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_folder_that_is_no_index_is_one_clear_error_before_any_worker(tmp_path: Path) -> None:
    (tmp_path / "not-an-index").mkdir()
    proc = _serve_index(tmp_path / "not-an-index", tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    said = " ".join(proc.stderr.split())  # the CLI wraps long lines
    assert said.count("error:") == 1 and "not-an-index is not a sagegen index" in said, proc.stderr
    assert "/retrieve" not in proc.stdout  # no URL was announced


def test_workers_that_cannot_open_the_index_stop_the_server_without_announcing_it(
    corpus: Path, tmp_path: Path
) -> None:
    from sagegen.retrieval.index import build_index

    cfg = load_config(None, [f"corpus.path={corpus}", "retrieval.kind=bm25"])
    build_index(DOCS, "bm25", cfg.retrieval, tmp_path / "idx")
    for f in (tmp_path / "idx" / "bm25").iterdir():  # the manifest is there, the BM25 arrays are not
        f.unlink()
    proc = _serve_index(tmp_path / "idx", tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "before it was serving" in proc.stderr, proc.stderr
    assert "/retrieve" not in proc.stdout  # the URL is printed only once every worker serves
