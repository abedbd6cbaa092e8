"""``sagegen serve`` against Search-R1's own ``retrieval_server.py``, side by side, over the same index.

Both servers run in their own process on loopback and serve the same sagegen BM25 index of the
bundled corpus (10,033 Wikipedia leads); the load comes from this process through a minimal asyncio
HTTP/1.1 client (keep-alive, one connection per client), so client costs are equal for both.

- **ours**: the real CLI, ``sagegen serve --index DIR``.
- **theirs**: Search-R1's file run as it is (``python retrieval_server.py --retriever_name bm25
  --index_path DIR``) under :mod:`bench.searchr1_shim`, which puts a ``pyserini.search.lucene``
  module in front of it whose ``LuceneSearcher`` answers from our index (``search`` → hits with
  ``docid``/``score``, ``doc(id).raw()`` → the stored JSON with ``contents``), and points its
  ``uvicorn.run(app, host="0.0.0.0", port=8000)`` at loopback and a free port. Their FastAPI app,
  request model, ``batch_search`` loop and response building are what is measured.

Printed, in one run:

1. HTTP+JSON vs in-process at 1, 32 and 256 queries per request (one client; each batch searched
   in this process, then sent, request by request; medians): ours against ``retriever.search``,
   theirs against their ``retriever.batch_search`` run in this process over the same shim. Goal:
   ours ≤ 1.2× in-process at 256.
2. 32 single-query clients at once: requests/s for ours and theirs, and the ratio. Goal ≥ 1.5×.
   Also each server's CPU per request (from /proc): on a shared, loaded machine a server gets only
   a slice of a core, and the CPU per request is the figure that load does not move much.

Get Search-R1's server (not vendored: it is theirs)::

    git clone https://github.com/PeterGriffinJin/Search-R1   # or download the one file:
    # search_r1/search/retrieval_server.py
    python bench/bench_retrieval_server.py --searchr1 Search-R1/search_r1/search/retrieval_server.py

Without ``--searchr1`` only our server's rows are printed. Its imports (faiss, torch,
transformers, datasets) must be installed; ``pip install 'sagegen[dense,train]'`` brings them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SAGEGEN_SHARED_DATA", REPO.parent / "shared" / "data"))
SHIM = Path(__file__).resolve().parent / "searchr1_shim.py"
TOPK = 3


def questions(n: int) -> list[str]:
    """``n`` distinct queries: the shared benchmark questions, cycled with a counter."""
    qs: list[str] = []
    for name in ("hotpotqa", "musique", "2wiki"):
        path = SHARED / name / "questions.jsonl"
        if path.is_file():
            qs += [json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()]
    qs = qs or ["capital of France", "who wrote Hamlet"]
    return [f"{qs[i % len(qs)]} {i // len(qs)}" for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server process exited with {proc.returncode} before answering")
        try:
            # return_scores true: Search-R1's server fails without it (it always unpacks two lists),
            # and its own client always sends it.
            warm = {"queries": ["warm up"], "topk": TOPK, "return_scores": True}
            r = httpx.post(f"{url}/retrieve", json=warm, timeout=5)
            if r.status_code == 200:
                return
            raise SystemExit(f"{url}/retrieve answered {r.status_code}: {r.text[:300]}")
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"no answer from {url} within {timeout:.0f}s")


def start(cmd: list[str], port: int, src: Path = REPO / "src") -> subprocess.Popen:
    # Both servers import this checkout's sagegen (ours directly, theirs through the shim).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    # stderr to a file, not a pipe: a pipe nobody reads would block a server that logs.
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
    except BaseException:
        proc.kill()
        log.seek(0)
        print(log.read()[-4000:], file=sys.stderr)
        raise
    return proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU so far (Linux /proc) of a process and its live descendants (the workers of
    ``serve --workers``), to compare servers on a loaded machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # exited meanwhile
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(k)) for k in kids)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


# --------------------------------------------------------------------------- the load


class Conn:
    """One keep-alive HTTP/1.1 connection: POST a JSON body, read a Content-Length response."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> bytes:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"POST /retrieve HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = None
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None or not status_line.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected reply {status_line!r} (chunked or not 200)")
        return await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def body(queries: Sequence[str]) -> bytes:
    return json.dumps({"queries": list(queries), "topk": TOPK, "return_scores": True}).encode()


async def interleaved(
    port: int, search: Callable[[list[str]], Any], batches: list[list[str]]
) -> tuple[float, float, float, float]:
    """(in-process wall, HTTP wall, in-process CPU) seconds per request, medians, and the median of
    each request's HTTP / in-process ratio. Each batch is searched in this process, then sent to
    the server (replies parsed, as clients do), request by request: on a machine whose speed drifts
    (a shared VM's CPU steal moved one identical BM25 batch from 36 to 73 ms within a minute), a
    ratio of two back-to-back series measures the drift; the paired ratio compares each batch with
    itself, a few milliseconds apart."""
    conn = Conn(port)
    search(batches[0])
    await conn.post(body(batches[0]))
    local, http, cpu = [], [], []
    for b in batches[1:]:
        t, c = time.perf_counter(), time.process_time()
        search(b)
        local.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        t = time.perf_counter()
        reply = json.loads(await conn.post(body(b)))
        http.append(time.perf_counter() - t)
        assert len(reply["result"]) == len(b)
    conn.close()
    paired = statistics.median(h / x for h, x in zip(http, local, strict=True))
    return statistics.median(local), statistics.median(http), statistics.median(cpu), paired


async def clients(port: int, n_clients: int, queries: list[str], seconds: float) -> float:
    """Requests per second with ``n_clients`` single-query clients, each with one request in flight."""
    conns = [Conn(port) for _ in range(n_clients)]
    await asyncio.gather(*(c.post(body([queries[i]])) for i, c in enumerate(conns)))  # connect, warm
    done = 0
    stop_at = time.perf_counter() + seconds

    async def loop(c: Conn, offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < stop_at:
            reply = json.loads(await c.post(body([queries[i % len(queries)]])))
            assert len(reply["result"]) == 1
            done += 1
            i += n_clients

    t = time.perf_counter()
    await asyncio.gather(*(loop(c, i) for i, c in enumerate(conns)))
    elapsed = time.perf_counter() - t
    for c in conns:
        c.close()
    return done / elapsed


def batches_of(queries: list[str], size: int, n_requests: int) -> list[list[str]]:
    return [[queries[(r * size + j) % len(queries)] for j in range(size)] for r in range(n_requests + 1)]


# --------------------------------------------------------------------------- main


def with_port(name: str, cmd: list[str], port: int) -> list[str]:
    return [*cmd, "--port", str(port)] if name == "ours" else [*cmd, str(port)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--searchr1", type=Path, help="Search-R1's retrieval_server.py, or a checkout holding it")
    ap.add_argument("--index-dir", type=Path, help="where the BM25 index is built or reused (default: temp)")
    ap.add_argument("--sizes", default="1,32,256", help="queries per request for the overhead rows")
    ap.add_argument("--requests", default="300,60,40", help="requests per size (same order as --sizes)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each concurrent-clients round")
    ap.add_argument("--rounds", type=int, default=3, help="concurrent rounds per server, alternated; median")
    ap.add_argument(
        "--ours-src",
        type=Path,
        default=REPO / "src",
        help="the sagegen src our server runs from (another checkout's, for a before)",
    )
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="a server.* override for ours, e.g. --set server.max_concurrency=1 (repeatable)",
    )
    args = ap.parse_args()

    theirs_file = args.searchr1
    if theirs_file is not None and theirs_file.is_dir():
        theirs_file = theirs_file / "search_r1" / "search" / "retrieval_server.py"
    if theirs_file is not None and not theirs_file.is_file():
        raise SystemExit(f"--searchr1: {theirs_file} is not Search-R1's retrieval_server.py")
    if theirs_file is None:
        print("(no --searchr1: ours only; see this file's docstring for how to get Search-R1's server)")

    from sagegen.config import load_config
    from sagegen.retrieval.factory import ensure_index, open_index

    tmp = tempfile.TemporaryDirectory()
    index_dir = args.index_dir or Path(tmp.name)
    cfg = load_config(None, [f"retrieval.index_dir={index_dir}"])
    index = ensure_index(cfg).path
    ours_search = open_index(index, cfg.retrieval)

    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(c) for c in args.requests.split(",")]
    queries = questions(max(sizes) * (max(counts) + 1) + 4096)

    servers: dict[str, tuple[list[str], Callable[[list[str]], Any]]] = {}
    cli = "import sys; from sagegen.cli.main import main; sys.argv[0] = 'sagegen'; main()"
    ours_cmd = [
        sys.executable,
        "-c",
        cli,
        "serve",
        "--index",
        str(index),
        "--set",
        "server.log_level=warning",
    ]
    for o in args.overrides:
        ours_cmd += ["--set", o]
    servers["ours"] = (ours_cmd, lambda qs: ours_search.search(qs, TOPK))
    if theirs_file is not None:
        sys.path.insert(0, str(SHIM.parent))
        import searchr1_shim

        their_retriever = searchr1_shim.load_their_retriever(theirs_file, index, TOPK)
        theirs_cmd = [sys.executable, str(SHIM), str(theirs_file), str(index)]
        servers["theirs"] = (theirs_cmd, lambda qs: their_retriever.batch_search(qs, TOPK, True))

    load_start = os.getloadavg()
    print(
        f"index {index} ({len(ours_search.store)} passages), top-{TOPK}, return_scores; "
        f"load {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}; "
        f"ours from {args.ours_src} with {args.overrides or 'its defaults'}"
    )
    overhead: dict[str, dict[int, tuple[float, float, float, float]]] = {}
    rps: dict[str, list[float]] = {name: [] for name in servers}
    cpu_ms: dict[str, list[float]] = {name: [] for name in servers}
    procs: dict[str, subprocess.Popen] = {}
    ports: dict[str, int] = {}
    try:
        for name, (cmd, search) in servers.items():
            port = ports[name] = free_port()
            proc = procs[name] = start(with_port(name, cmd, port), port, args.ours_src)
            overhead[name] = {}
            for size, count in zip(sizes, counts, strict=True):
                bs = batches_of(queries, size, count)
                before = cpu_seconds(proc.pid)
                local, http, local_cpu, paired = asyncio.run(interleaved(port, search, bs))
                server_cpu = (cpu_seconds(proc.pid) - before) / len(bs)  # the warm-up request counted too
                overhead[name][size] = (local, http, local_cpu, server_cpu, paired)
            # the servers run one at a time, so neither steals the other's CPU
            stop(procs.pop(name))
        for _ in range(args.rounds):
            for name, (cmd, _search) in servers.items():
                port = ports[name]
                proc = procs[name] = start(with_port(name, cmd, port), port, args.ours_src)
                before, t = cpu_seconds(proc.pid), time.perf_counter()
                rate = asyncio.run(clients(port, args.clients, queries, args.seconds))
                used, elapsed = cpu_seconds(proc.pid) - before, time.perf_counter() - t
                rps[name].append(rate)
                cpu_ms[name].append(1e3 * used / (rate * elapsed))
                stop(procs.pop(name))
    finally:
        for p in procs.values():
            stop(p)

    print(
        "\n| server | queries/request | in-process ms | HTTP+JSON ms | ratio | paired ratio "
        "| in-process CPU ms | server CPU ms | CPU ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rows in overhead.items():
        for size, (local, http, local_cpu, server_cpu, paired) in rows.items():
            print(
                f"| {name} | {size} | {local * 1e3:.2f} | {http * 1e3:.2f} | {http / local:.2f}x "
                f"| {paired:.2f}x "
                f"| {local_cpu * 1e3:.2f} | {server_cpu * 1e3:.2f} | {server_cpu / local_cpu:.2f}x |"
            )
    print(
        f"\n| server | {args.clients} single-query clients: req/s (median of {args.rounds}) | rounds "
        "| server CPU ms/request (median) |"
    )
    print("|---|---|---|---|")
    for name, values in rps.items():
        print(
            f"| {name} | {statistics.median(values):.0f} | {', '.join(f'{v:.0f}' for v in values)} "
            f"| {statistics.median(cpu_ms[name]):.2f} |"
        )
    if "theirs" in rps:
        ratio = statistics.median(rps["ours"]) / statistics.median(rps["theirs"])
        per_cpu = statistics.median(cpu_ms["theirs"]) / statistics.median(cpu_ms["ours"])
        print(
            f"\nours / theirs with {args.clients} single-query clients: {ratio:.2f}x req/s (goal >= 1.5x), "
            f"{per_cpu:.2f}x requests per server CPU-second"
        )
    at = max(sizes)
    local, http, local_cpu, server_cpu, paired = overhead["ours"][at]
    print(
        f"ours HTTP+JSON / in-process at {at} queries/request: {paired:.2f}x wall, paired (goal <= 1.2x; "
        f"{http / local:.2f}x as a ratio of medians), "
        f"{server_cpu / local_cpu:.2f}x CPU (server process against the search alone)"
    )
    end = os.getloadavg()
    print(f"load at the end {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
