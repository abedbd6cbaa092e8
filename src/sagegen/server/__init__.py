"""A Search-R1-compatible retrieval server: ``POST /retrieve`` over any :class:`Retriever`.

Wire format (Search-R1's ``search_r1/search/retrieval_server.py``)::

    POST /retrieve  {"queries": ["q1", ...], "topk": 3, "return_scores": true}
    -> {"result": [[{"document": {"id": ..., "contents": "title\\ntext"}, "score": 12.3}, ...], ...]}

With ``"return_scores": false`` each query's list holds the bare document dicts, as in
Search-R1. ``topk`` may be omitted (or null): the server's ``default_topk`` applies, as
Search-R1 falls back to its configured topk.

Beyond Search-R1: strict request validation (every malformed request gets a 4xx with a
message naming the field, never a 500), limits on body size, query count, query length and
topk, an optional API key (``Authorization: Bearer <key>`` or ``X-API-Key``) that is
mandatory when binding beyond loopback, ``GET /health``, and OpenAPI docs at ``/docs``.
Retrieval runs in worker threads so the event loop keeps answering while a batch is searched.

This module is the public face; the parts live beside it: the app (``server_app``), the wire
models (``server_wire``), the guards and bind check (``server_guard``), running it (``server_run``)
and a background-thread server for tests (``server_testing``).
"""

from sagegen.server.app import RETRIEVE_PATH, create_app
from sagegen.server.guard import check_bind, is_loopback_host, resolve_api_key
from sagegen.server.run import (
    PreparedServer,
    bind_socket,
    prepare_server,
    serve,
    serve_from_config,
    socket_url,
)
from sagegen.server.testing import running_server

__all__ = [
    "RETRIEVE_PATH",
    "PreparedServer",
    "bind_socket",
    "check_bind",
    "create_app",
    "is_loopback_host",
    "prepare_server",
    "resolve_api_key",
    "running_server",
    "serve",
    "serve_from_config",
    "socket_url",
]
