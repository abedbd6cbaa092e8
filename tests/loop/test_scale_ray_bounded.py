"""``--ray`` never hangs (issue 25): more workers asked than the cluster has CPUs, a worker that can never
be placed, no worker able to start, a node lost mid-run; and docs/generate.md's cluster recipe on the Ray
that ``pip install 'sagegen[ray]'`` installs today (token authentication).

Before: ``generate --ray --workers 3`` on 2 CPUs finished its pairs, then waited for ever on the third
actor (pending for a CPU that no finished worker gave back); after a node was lost the rerun finished
every pair and hung the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.killrun import N, _corpus, _rows, ray_settings
from sagegen.loop.scale import WorkerError
from sagegen.loop.scale.ray_cluster import worker_count

SRC = Path(__file__).resolve().parents[2] / "src"


# ---------------------------------------------------------------------------- the worker count (no Ray)


def test_workers_are_capped_at_the_free_cpus_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sagegen.loop.scale.ray_cluster"):
        assert worker_count(3, {"CPU": 2.0}, {"CPU": 2.0}, pairs=10) == 2
    assert "--workers 3: the Ray cluster has 2 free CPU(s) of 2; running 2 pair workers" in caplog.text
    assert worker_count(1, {"CPU": 8.0}, {"CPU": 5.0}, pairs=10) == 5  # default: one per CPU, free ones
    assert worker_count(4, {"CPU": 8.0}, {"CPU": 8.0}, pairs=2) == 2  # never more than the pairs
    with pytest.raises(WorkerError, match="no free CPU"):
        worker_count(2, {"CPU": 2.0}, {}, pairs=10)


# ---------------------------------------------------------------------------- a local Ray (2 CPUs)

if os.environ.get("CI") == "true":
    import ray
else:
    ray = pytest.importorskip("ray")

from sagegen.config import load_config  # noqa: E402
from sagegen.loop.session import run_generate  # noqa: E402


def _settings(*extra: str, delay: float = 0.02) -> list[str]:
    return ray_settings("cache.sqlite", "pipeline.executor=ray", *extra, delay=delay)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.fixture
def corpus_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _corpus(tmp_path / "corpus.jsonl")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _finished(run: Path) -> int:
    return _rows(
        run / "ledger.sqlite", "SELECT COUNT(*) FROM pairs WHERE state NOT IN ('running', 'pending')"
    )[0][0]


def test_three_workers_on_two_cpus_end_with_every_pair(local_ray: Any, corpus_dir: Path) -> None:
    res = run_generate(
        load_config(None, _settings("pipeline.workers=3")),
        corpus_dir / "run",
    )
    assert res.stats.errors == 0 and res.stats.done == N
    deadline = time.monotonic() + 20  # every worker gives its CPU back (ray.kill is asynchronous)
    while ray.available_resources().get("CPU") != 2.0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU") == 2.0


def test_a_worker_that_can_never_be_placed_does_not_hold_the_run(
    local_ray: Any, corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three actors of one CPU on two CPUs (as a cluster that shrank after the count was taken):
    # the third stays pending; the run ends when the pairs are done, not when it starts.
    monkeypatch.setattr("sagegen.loop.scale.ray_cluster.worker_count", lambda *a, **k: 3)
    t0 = time.monotonic()
    res = run_generate(load_config(None, _settings()), corpus_dir / "run")
    assert res.stats.done == N and time.monotonic() - t0 < 100


def test_no_worker_able_to_start_ends_the_run_in_bounded_time_and_the_rerun_finishes(
    local_ray: Any, corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @ray.remote(num_cpus=2)
    class Hog:  # another job holding every CPU
        def ping(self) -> int:
            return 1

    hog = Hog.remote()
    ray.get(hog.ping.remote())
    monkeypatch.setattr("sagegen.loop.scale.ray_cluster.worker_count", lambda *a, **k: 1)
    monkeypatch.setattr("sagegen.loop.scale.ray_cluster.START_TIMEOUT", 3.0)
    monkeypatch.setattr("sagegen.loop.scale.ray_cluster.SETTLE", 0.0)
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"no Ray pair worker started within 3s .*rerun the same command"):
        run_generate(load_config(None, _settings()), corpus_dir / "run")
    assert time.monotonic() - t0 < 60
    ray.kill(hog)
    monkeypatch.undo()
    monkeypatch.chdir(corpus_dir)
    res = run_generate(load_config(None, _settings()), corpus_dir / "run")
    assert res.resumed and res.stats.done == N


# ---------------------------------------------------------------------------- two Ray nodes, `ray start`


class TwoNodes:
    """docs/generate.md's recipe on one machine: ``ray start --head`` and ``ray start --address`` (one CPU
    each), as the Ray installed today runs them: with token authentication on the head's machine."""

    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="sgray")  # short: Ray's socket paths must fit 107 bytes
        self.port = _free_port()
        self.env = {
            **os.environ,
            "RAY_TMPDIR": self.tmp,
            "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        }
        try:
            self._start()
        except BaseException:
            self.stop()  # a head without its second node: stopped all the same
            raise

    def _start(self) -> None:
        ray_cli = str(Path(sys.executable).with_name("ray"))
        subprocess.run(
            [
                ray_cli,
                "start",
                "--head",
                f"--port={self.port}",
                "--num-cpus=1",
                "--include-dashboard=false",
                f"--temp-dir={self.tmp}",
            ],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.address = f"127.0.0.1:{self.port}"
        # Every other node joins with the head's token (docs/generate.md: Scaling).
        self.env["RAY_AUTH_MODE"] = "token"
        subprocess.run(
            [ray_cli, "start", f"--address={self.address}", "--num-cpus=1"],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def second_raylet(self) -> int:
        out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
        (pid,) = [
            int(line.split()[0])
            for line in out.splitlines()
            if self.tmp in line and "/sockets/raylet.1" in line
        ]
        return pid

    def stop(self) -> None:  # only this cluster's processes: those started with its temp dir, and theirs
        out = subprocess.run(["ps", "-ww", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
        rows = [line.split(None, 2) for line in out.splitlines()[1:]]
        mine = {int(r[0]) for r in rows if len(r) == 3 and self.tmp in r[2]}
        mine |= {int(r[0]) for r in rows if len(r) >= 2 and int(r[1]) in mine}
        for pid in mine:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def two_nodes() -> Iterator[TwoNodes]:
    if shutil.which("ps") is None:
        pytest.skip("needs ps to find the Ray processes it started")
    nodes = TwoNodes()
    try:
        yield nodes
    finally:
        nodes.stop()


def _generate(cwd: Path, address: str, env: dict[str, str], *extra: str, delay: float = 0.02):
    sets = [x for s in _settings(f"pipeline.ray_address={address}", *extra, delay=delay) for x in ("-s", s)]
    return subprocess.Popen(
        [sys.executable, "-m", "sagegen.cli.main", "generate", "--out", "run", "--no-progress", *sets],
        cwd=cwd,
        env={**env, "COLUMNS": "1000"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_the_readme_recipe_with_token_auth_and_a_lost_node(two_nodes: TwoNodes, tmp_path: Path) -> None:
    _corpus(tmp_path / "corpus.jsonl")
    no_token = {k: v for k, v in two_nodes.env.items() if k != "RAY_AUTH_MODE"}
    p = _generate(tmp_path, two_nodes.address, no_token)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "RAY_AUTH_MODE=token" in err and "ray get-auth-token" in err, err

    p = _generate(tmp_path, two_nodes.address, two_nodes.env, "pipeline.workers=3")  # 3 asked, 2 CPUs
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "running 2 pair workers" in err and f"{N} finished of {N}" in out

    shutil.rmtree(tmp_path / "run")
    # A fresh call cache: the run above cached every call, and a run answered from it is over too soon.
    lost_run = ("pipeline.workers=2", "llm.cache_path=cache-2.sqlite")
    p = _generate(tmp_path, two_nodes.address, two_nodes.env, *lost_run, delay=0.5)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        (tmp_path / "run" / "ledger.sqlite").exists() and _finished(tmp_path / "run") >= 2
    ):
        time.sleep(0.2)  # both workers are busy: some pairs are done, most are not
    assert p.poll() is None and _finished(tmp_path / "run") < N
    os.kill(two_nodes.second_raylet(), signal.SIGKILL)  # the second machine is gone
    t0 = time.monotonic()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "was lost" in err and "rerun the same command" in err, err
    assert time.monotonic() - t0 < 60
    p = _generate(tmp_path, two_nodes.address, two_nodes.env, *lost_run, delay=0.5)  # one node left
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0 and f"{N} finished of {N}" in out and "resumed" in out, err
