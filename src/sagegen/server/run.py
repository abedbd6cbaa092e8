"""Running the retrieval server: bind first, then uvicorn on that socket (``sagegen serve``)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from sagegen.config import Config, ServerConfig
from sagegen.errors import ConfigError
from sagegen.retrieval.base import Retriever
from sagegen.server.app import create_app
from sagegen.server.guard import check_bind, guarded_protocol, resolve_api_key


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen now, so the printed URL is connectable before uvicorn's loop starts."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise ConfigError(f"server.host={host!r}: cannot resolve")
    family, stype, proto, _, addr = infos[0]
    sock = socket.socket(family, stype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        # A wildcard bind is reachable through loopback too; that is the URL worth printing.
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class PreparedServer:
    """A configured uvicorn server whose socket already listens; ``run()`` serves until stopped."""

    def __init__(self, app: ASGIApp, sock: socket.socket, cfg: ServerConfig) -> None:
        self.app, self.sock = app, sock
        self.url = socket_url(sock)
        config = uvicorn.Config(
            app,
            log_level=cfg.log_level,
            lifespan="off",
            timeout_graceful_shutdown=5,
            http=guarded_protocol(cfg.header_timeout, cfg.body_timeout),
        )
        self.server = uvicorn.Server(config)

    def run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.sock.close()

    def stop(self) -> None:
        """Ask a running server (e.g. in another thread) to finish its requests and return."""
        self.server.should_exit = True


def prepare_server(
    retriever: Retriever, cfg: ServerConfig, *, kind: str | None = None, n_docs: int | None = None
) -> PreparedServer:
    """Read the API key from ``cfg.api_key_env``, refuse a public bind without one, build the app, bind."""
    api_key = resolve_api_key(cfg)
    check_bind(cfg, api_key)
    app = create_app(retriever, cfg, api_key=api_key, kind=kind, n_docs=n_docs)
    return PreparedServer(app, bind_socket(cfg.host, cfg.port), cfg)


def serve(
    retriever: Retriever,
    cfg: ServerConfig,
    *,
    on_ready: Callable[[str], None] | None = None,
    kind: str | None = None,
    n_docs: int | None = None,
) -> None:
    """Serve ``retriever`` until interrupted. ``on_ready(base_url)`` runs once the port listens.

    The API key comes from the environment variable ``cfg.api_key_env``; binding beyond
    loopback without one is refused with a ConfigError.
    """
    prepared = prepare_server(retriever, cfg, kind=kind, n_docs=n_docs)
    if on_ready is not None:
        try:
            on_ready(prepared.url)
        except BaseException:
            prepared.sock.close()
            raise
    prepared.run()


def serve_from_config(
    cfg: Config,
    *,
    index: str | Path | None = None,
    on_ready: Callable[[str], None] | None = None,
    on_loading: Callable[[str], None] | None = None,
) -> None:
    """``sagegen serve``: open ``index`` (a directory from ``sagegen index``) or the retriever that
    ``cfg.retrieval`` describes (building its index first if needed), then serve it.

    The bind/API-key check runs first, so a refused public bind fails before minutes of indexing.
    """
    check_bind(cfg.server, resolve_api_key(cfg.server))
    if cfg.server.workers > 1:
        _serve_in_processes(cfg, index, on_ready, on_loading)
        return
    from sagegen.retrieval.factory import build_retriever, open_index

    if index is not None:
        if on_loading is not None:
            on_loading(f"loading index {index}")
        retriever = open_index(index, cfg.retrieval)
    else:
        if on_loading is not None:
            on_loading(_opening(cfg))
        retriever = build_retriever(cfg)
    serve(retriever, cfg.server, on_ready=on_ready)


def _opening(cfg: Config) -> str:
    where = cfg.corpus.path or "the bundled corpus"
    return f"opening a {cfg.retrieval.kind} retriever over {where} (indexing it if needed)"


def _serve_in_processes(
    cfg: Config,
    index: str | Path | None,
    on_ready: Callable[[str], None] | None,
    on_loading: Callable[[str], None] | None,
) -> None:
    """``serve --workers N``: a local index is found (or built) once, here, and each worker only opens
    it: no worker reads the corpus again, and this process, which only supervises, never loads what
    only the workers search."""
    from sagegen.retrieval.index import LOCAL_KINDS, read_manifest
    from sagegen.server.processes import serve_processes

    if index is not None:
        read_manifest(index)  # not an index: one clear error here, not one per worker
    elif cfg.retrieval.kind in LOCAL_KINDS:
        from sagegen.retrieval.factory import ensure_index

        if on_loading is not None:
            on_loading(_opening(cfg))
        index = ensure_index(cfg).path
    if on_loading is not None:
        on_loading(f"starting {cfg.server.workers} server processes on {index or cfg.retrieval.kind}")
    sock = bind_socket(cfg.server.host, cfg.server.port)
    serve_processes(sock, cfg, index, cfg.server.workers, on_ready=on_ready, url=socket_url(sock))
