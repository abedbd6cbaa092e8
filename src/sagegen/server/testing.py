"""A real retrieval server in a background thread, for tests and notebooks."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from sagegen.config import ServerConfig
from sagegen.server.guard import guarded_protocol
from sagegen.server.run import bind_socket, socket_url


@contextlib.contextmanager
def running_server(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    startup_timeout: float = 30.0,
    limits: ServerConfig | None = None,
) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yields its base URL (``http://host:port``).

    For tests and notebooks: a real server on a real socket (ephemeral port by default),
    stopped and joined on exit.
    """
    sock = bind_socket(host, port)
    limits = limits or ServerConfig()  # its read deadlines, as `sagegen serve` applies them
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level=log_level,
            lifespan="off",
            timeout_graceful_shutdown=2,
            http=guarded_protocol(limits.header_timeout, limits.body_timeout),
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="sagegen-server", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server thread died during start-up (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start within {startup_timeout:.0f}s")
            time.sleep(0.01)
        yield socket_url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
