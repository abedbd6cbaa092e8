"""The persistent LLM call cache: keys, hits, concurrency, several processes, crashes."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from sagegen.errors import LLMError
from sagegen.llm.base import Message
from sagegen.llm.cache import CachedLLM, cache_key
from sagegen.llm.scripted import ScriptedLLM
from sagegen.records import Completion

MSGS = [{"role": "user", "content": "What is 2+2?"}]


class SlowEcho:
    """A backend that takes a while and counts its calls (to see coalescing and concurrency)."""

    def __init__(self, name: str = "fake:echo", delay: float = 0.05):
        self.name = name
        self.delay = delay
        self.calls = 0

    async def complete(self, messages: Sequence[Message], **kw: Any) -> Completion:
        self.calls += 1
        await asyncio.sleep(self.delay)
        text = f"{messages[-1]['content']}|seed={kw.get('seed')}"
        return Completion(
            text=text,
            model="echo",
            prompt_tokens=11,
            completion_tokens=2,
            seconds=self.delay,
            finish_reason="stop",
        )


async def test_hit_and_miss(tmp_path: Path) -> None:
    inner = ScriptedLLM(["four", "FOUR"], name="scripted:x")
    llm = CachedLLM(inner, tmp_path / "c.sqlite")
    a = await llm.complete(MSGS, max_tokens=8, seed=1)
    b = await llm.complete(MSGS, max_tokens=8, seed=1)
    assert (a.text, a.cached) == ("four", False)
    assert (b.text, b.cached) == ("four", True)
    assert b.prompt_tokens == a.prompt_tokens and b.completion_tokens == a.completion_tokens
    assert len(inner.calls) == 1 and llm.name == "scripted:x"
    assert len(llm.store) == 1


async def test_key_covers_every_parameter(tmp_path: Path) -> None:
    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
    base: dict[str, Any] = {"max_tokens": 8, "temperature": 0.0, "stop": None, "seed": 1, "tools": None}
    variants = [
        {},
        {"seed": 2},
        {"seed": None},
        {"max_tokens": 9},
        {"temperature": 0.7},
        {"stop": ["\n"]},
        {"stop": ["\n", "</search>"]},
        {"tools": tools},
    ]
    keys = {cache_key("a:m", MSGS, {**base, **v}) for v in variants}
    assert len(keys) == len(variants)
    assert cache_key("b:m", MSGS, base) not in keys  # another backend or model
    assert cache_key("a:m", [{"role": "user", "content": "What is 2+3?"}], base) not in keys
    assert cache_key("a:m", [{"role": "system", "content": "x"}, *MSGS], base) not in keys
    assert cache_key("a:m", MSGS, base, {"base_url": "http://other"}) not in keys
    # canonical: dict order does not matter
    reordered = [{"content": "What is 2+2?", "role": "user"}]
    assert cache_key("a:m", reordered, dict(reversed(base.items()))) in keys

    inner = SlowEcho(delay=0)
    llm = CachedLLM(inner, tmp_path / "c.sqlite")
    outs = [await llm.complete(MSGS, seed=seed) for seed in (1, 2, 1, 2, None, None)]
    assert inner.calls == 3 and [o.cached for o in outs] == [False, False, True, True, False, True]
    await llm.complete(MSGS, seed=1, stop=[])  # an empty stop list is no stop list
    assert inner.calls == 3


async def test_failures_are_not_cached(tmp_path: Path) -> None:
    inner = ScriptedLLM([LLMError("boom"), "ok"])
    llm = CachedLLM(inner, tmp_path / "c.sqlite")
    with pytest.raises(LLMError, match="boom"):
        await llm.complete(MSGS)
    assert (await llm.complete(MSGS)).text == "ok"
    assert (await llm.complete(MSGS)).cached
    assert len(inner.calls) == 2 and len(llm.store) == 1  # the failed call was made, never stored


async def test_concurrent_identical_calls_share_one_backend_call(tmp_path: Path) -> None:
    inner = SlowEcho(delay=0.2)
    llm = CachedLLM(inner, tmp_path / "c.sqlite")
    jobs = [llm.complete([{"role": "user", "content": f"q{i % 5}"}], seed=i % 5) for i in range(25)]
    outs = await asyncio.gather(*jobs)
    assert inner.calls == 5
    assert [o.text for o in outs] == [f"q{i % 5}|seed={i % 5}" for i in range(25)]
    assert sum(not o.cached for o in outs) == 5 and sum(o.cached for o in outs) == 20
    assert len(llm.store) == 5


async def test_cancelled_leader_does_not_strand_waiters(tmp_path: Path) -> None:
    inner = SlowEcho(delay=0.3)
    llm = CachedLLM(inner, tmp_path / "c.sqlite")
    leader = asyncio.create_task(llm.complete(MSGS))
    await asyncio.sleep(0.05)
    waiter = asyncio.create_task(llm.complete(MSGS))
    await asyncio.sleep(0.05)
    leader.cancel()
    out = await waiter
    assert out.text.startswith("What is 2+2?") and inner.calls == 2
    assert (await llm.complete(MSGS)).cached


_WRITER = """
import asyncio, sys
from sagegen.llm.cache import CachedLLM
from sagegen.records import Completion

class Echo:
    name = "fake:echo"
    async def complete(self, messages, **kw):
        return Completion(text="answer to " + messages[-1]["content"], prompt_tokens=5, completion_tokens=3)

async def main(path, tag, n, pause):
    llm = CachedLLM(Echo(), path)
    for i in range(n):
        await llm.complete([{"role": "user", "content": f"{tag}-{i}"}])
        await llm.complete([{"role": "user", "content": f"shared-{i}"}])
        print(i, flush=True)
        if pause:
            await asyncio.sleep(pause)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
"""


def _writer(tmp_path: Path, path: Path, tag: str, n: int, pause: float = 0.0) -> subprocess.Popen[str]:
    script = tmp_path / "writer.py"
    if not script.exists():  # rewriting it while an earlier writer's interpreter reads it runs half a script
        tmp = tmp_path / "writer.py.tmp"
        tmp.write_text(_WRITER)
        tmp.replace(script)
    return subprocess.Popen(
        [sys.executable, str(script), str(path), tag, str(n), str(pause)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_persists_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    proc = _writer(tmp_path, path, "p", 3)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err

    class Never:
        name = "fake:echo"

        async def complete(self, messages: Sequence[Message], **kw: Any) -> Completion:
            raise AssertionError("should have been a cache hit")

    llm = CachedLLM(Never(), path)
    out = await llm.complete([{"role": "user", "content": "p-2"}])
    assert out.cached and out.text == "answer to p-2" and out.prompt_tokens == 5
    assert len(llm.store) == 6


def test_several_processes_write_one_file(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    procs = [_writer(tmp_path, path, f"w{k}", 40) for k in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 3 * 40 + 40  # shared rows once
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_killed_writer_leaves_a_valid_cache(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    proc = _writer(tmp_path, path, "k", 100_000, pause=0.001)
    assert proc.stdout is not None
    done = -1
    deadline = time.monotonic() + 60
    while done < 20 and time.monotonic() < deadline:  # let it commit a few rows, then kill -9 mid-stream
        done = int(proc.stdout.readline().split()[0])
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert done >= 20

    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db.execute("SELECT completion FROM calls").fetchall()
    db.close()
    # every call the writer reported finished was committed before it said so
    assert len(rows) >= 2 * (done + 1)
    for (blob,) in rows:
        Completion.model_validate_json(blob)
    llm = CachedLLM(SlowEcho(delay=0), path)
    assert (await llm.complete([{"role": "user", "content": f"k-{done}"}])).cached
    await llm.complete([{"role": "user", "content": "after the crash"}])  # still writable


def test_unreadable_cache_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LLMError, match=r"c\.sqlite: cannot open"):
        CachedLLM(SlowEcho(), path)
