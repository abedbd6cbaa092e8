"""llama-cpp-python's own OpenAI-compatible server with SmolLM2, on a free loopback port, for tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_llama_server(log_dir: Path, *, n_ctx: int = 2048, startup_s: float = 120) -> Iterator[str]:
    """Start ``python -m llama_cpp.server`` with SmolLM2; yield its ``/v1`` base URL; stop it.

    Skips the calling test when the server extras or the model package are missing.
    """
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python server extras not installed")
    from sagegen.errors import ConfigError
    from sagegen.llm.llamacpp import default_gguf

    try:
        model = default_gguf()
    except ConfigError as e:
        pytest.skip(str(e))
    port = free_port()
    # The server logs a lot to stderr: a file, not an unread pipe that would fill and block it.
    log_path = log_dir / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                str(n_ctx),
                "--n_threads",
                str(min(2, os.cpu_count() or 1)),
                "--model_alias",
                "smollm2",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            import httpx

            deadline = time.monotonic() + startup_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
                try:
                    if httpx.get(url + "/v1/models", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama_cpp.server did not come up in {startup_s:.0f} s")
                time.sleep(0.3)
            yield url + "/v1"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
