"""``pipeline.executor: ray`` on a real local Ray (``ray.init(num_cpus=2)``), two pair workers, against one
process: the same dataset, every result in the driver's ledger, every call in the driver's call cache.

Under CI (``CI=true``) Ray is part of the test install (``sagegen[all]`` includes the ``ray`` extra), so a
missing Ray fails here instead of skipping.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import sigint_default
from helpers.killrun import N, _cmd, _corpus, _outcome, _rows, ray_settings

if os.environ.get("CI") == "true":
    import ray
else:
    ray = pytest.importorskip("ray")

from sagegen.config import load_config
from sagegen.loop.session import run_generate
from sagegen.records import Doc

RAY = ("pipeline.executor=ray", "pipeline.workers=2")


@pytest.fixture(scope="module")
def local_ray() -> Any:
    # Loopback only: the tests reach no other address (tests/conftest.py).
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.fixture
def corpus_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _corpus(tmp_path / "corpus.jsonl")
    monkeypatch.chdir(tmp_path)  # the config's paths are relative: the Ray workers must resolve them alike
    return tmp_path


def test_two_ray_workers_make_the_same_dataset_as_one_process(local_ray: Any, corpus_dir: Path) -> None:
    one = run_generate(load_config(None, ray_settings("one.sqlite")), corpus_dir / "one" / "run")
    spread = run_generate(load_config(None, ray_settings("ray.sqlite", *RAY)), corpus_dir / "ray" / "run")
    assert one.stats.errors == spread.stats.errors == 0
    expected = _outcome(corpus_dir / "one" / "run")
    assert _outcome(corpus_dir / "ray" / "run") == expected
    assert {p[4] for p in expected["pairs"]} >= {"pass", "too_easy"}
    # Counted in the driver from the workers' reports, and booked in the driver's ledger.
    assert spread.stats.done == N and spread.calls == one.calls > 0
    ledger = corpus_dir / "ray" / "run" / "ledger.sqlite"
    paid = _rows(ledger, "SELECT SUM(1 - cached), COUNT(DISTINCT session) FROM llm_calls")
    assert paid == [(one.calls, 1)]
    # The calls went into the driver's cache file through the ledger actor, each once.
    assert _rows(corpus_dir / "ray.sqlite", "SELECT COUNT(*) FROM calls") == _rows(
        corpus_dir / "one.sqlite", "SELECT COUNT(*) FROM calls"
    )
    workers = [json.loads(m) for (m,) in _rows(ledger, "SELECT message FROM events WHERE kind='worker'")]
    assert sorted(w["worker"] for w in workers) == [0, 1]
    assert len({w["where"] for w in workers}) == 2 and sum(w["pairs"] for w in workers) == N

    # A rerun has nothing left to do and pays for nothing.
    again = run_generate(load_config(None, ray_settings("ray.sqlite", *RAY)), corpus_dir / "ray" / "run")
    assert again.resumed and again.stats.already_done == N and again.calls == 0
    assert _outcome(corpus_dir / "ray" / "run") == expected


def test_a_worker_that_reads_another_corpus_stops_the_run_with_a_clear_error(
    local_ray: Any, corpus_dir: Path
) -> None:
    from sagegen.errors import ConfigError
    from sagegen.ledger.store import RunStore
    from sagegen.loop.scale import run_pairs

    cfg = load_config(None, ray_settings("c.sqlite", *RAY))
    run = corpus_dir / "wrong" / "run"
    store, _ = RunStore.create_or_resume(run, cfg.model_dump(mode="json"), cfg.dump())
    session = store.begin_session()
    seen: list[Any] = []
    # The driver's corpus (what `docs` says) is not what the workers open from corpus.path.
    driver_docs = [Doc(id="elsewhere", title="Elsewhere", text="A passage only the driver has.")]
    with pytest.raises(ConfigError, match="is not the driver's") as err:
        run_pairs(cfg, run, list(range(N)), seen.append, session=session, docs=driver_docs)
    assert "same paths" in str(err.value) and "Traceback" not in str(err.value)
    assert seen == [] and _rows(run / "ledger.sqlite", "SELECT COUNT(*) FROM pairs") == [(0,)]
    store.close()


def test_sigkill_of_the_driver_then_the_rerun_repeats_no_pair_and_no_paid_call(corpus_dir: Path) -> None:
    """A real ``sagegen generate --ray`` (its own local Ray) killed mid-run, then run again."""
    one = run_generate(load_config(None, ray_settings("one.sqlite")), corpus_dir / "one" / "run")
    expected = _outcome(corpus_dir / "one" / "run")
    # The CLI's own demo defaults (quick_defaults) are what _settings starts from, so the runs match.
    cmd = [*_cmd("killed/run", "killed.sqlite", delay=0.1), "--ray", "--workers", "2"]
    assert cmd[0] == sys.executable
    ledger = corpus_dir / "killed" / "run" / "ledger.sqlite"
    proc = subprocess.Popen(
        cmd, cwd=corpus_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 240  # Ray's own start takes 10-30 s on a busy machine
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if ledger.exists() and _rows(ledger, "SELECT COUNT(*) FROM attempts")[0][0] >= 8:
                    break
            except Exception:
                pass  # the schema is being created
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        # Ray's head processes die with the driver; its dashboard and runtime-env agents may linger.
        time.sleep(2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert _rows(ledger, "SELECT COUNT(*) FROM pairs WHERE finished IS NOT NULL")[0][0] < N

    rerun = subprocess.run(
        cmd, cwd=corpus_dir, capture_output=True, text=True, timeout=600, start_new_session=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed" in rerun.stdout
    assert _outcome(corpus_dir / "killed" / "run") == expected
    calls = _rows(corpus_dir / "one.sqlite", "SELECT COUNT(*) FROM calls")[0][0]
    assert calls == one.calls
    assert _rows(corpus_dir / "killed.sqlite", "SELECT COUNT(*) FROM calls")[0][0] == calls
    paid = _rows(ledger, "SELECT session, SUM(1 - cached) FROM llm_calls GROUP BY session ORDER BY 1")
    assert len(paid) == 2
    # Each paid call is booked by the ledger actor right after the cache row: a kill may leave at most
    # one per worker unbooked (replayed as a hit), never one paid twice.
    assert calls - 2 <= sum(p[1] for p in paid) <= calls
    assert _rows(ledger, "SELECT status FROM sessions ORDER BY id") == [("interrupted",), ("completed",)]


def test_ctrl_c_stops_the_ray_workers_cleanly_and_the_run_resumes(local_ray: Any, corpus_dir: Path) -> None:
    cmd = [*_cmd("int/run", "int.sqlite", delay=0.15), "--ray", "--workers", "2"]
    ledger = corpus_dir / "int" / "run" / "ledger.sqlite"
    proc = subprocess.Popen(
        cmd,
        cwd=corpus_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_default,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if ledger.exists() and _rows(ledger, "SELECT COUNT(*) FROM attempts")[0][0] >= 4:
                    break
            except Exception:
                pass
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    assert _rows(ledger, "PRAGMA integrity_check") == [("ok",)]
    assert _rows(ledger, "SELECT status FROM sessions") == [("interrupted",)]
    assert _rows(ledger, "SELECT COUNT(*) FROM pairs WHERE finished IS NOT NULL")[0][0] < N
    # The same run resumed on this process's Ray, against one uninterrupted process.
    again = run_generate(
        load_config(None, ray_settings("int.sqlite", *RAY, delay=0.15)), corpus_dir / "int" / "run"
    )
    assert again.resumed and again.stats.errors == 0
    run_generate(load_config(None, ray_settings("one.sqlite", delay=0.15)), corpus_dir / "one" / "run")
    assert _outcome(corpus_dir / "int" / "run") == _outcome(corpus_dir / "one" / "run")
