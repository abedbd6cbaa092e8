"""The real ``sagegen serve`` command in a child process, for the tests that drive it over sockets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from helpers import sigint_default
from sagegen.records import Doc


def write_searchr1(path: Path, docs: Sequence[Doc]) -> Path:
    """``docs`` as a Search-R1 corpus file (one ``{"id", "contents"}`` line each)."""
    path.write_text("".join(json.dumps({"id": d.id, "contents": d.contents}) + "\n" for d in docs))
    return path


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SAGEGEN_API_KEY"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_serve(args: list[str], cwd: Path) -> tuple[Any, str]:
    """Start `sagegen serve ... --port 0` and return (process, base URL) once it prints its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sagegen.cli.main", "serve", *args, "--port", "0"],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_default,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        found = [m for line in list(lines) if (m := re.search(r"(http://127\.0\.0\.1:\d+)/retrieve", line))]
        if found:
            return proc, found[0].group(1)
        time.sleep(0.05)
    proc.kill()
    out, err = proc.communicate(timeout=10)
    pytest.fail(f"sagegen serve did not print its URL (rc={proc.returncode}):\n{''.join(lines)}{out}\n{err}")
