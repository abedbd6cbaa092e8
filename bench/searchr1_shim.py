"""Run Search-R1's own ``retrieval_server.py`` over a sagegen index (for bench_retrieval_server.py).

Their BM25 path instantiates ``pyserini.search.lucene.LuceneSearcher(index_path)`` and uses three
things of it: ``search(query, k)`` → hits with ``.docid`` and ``.score``, ``doc(docid).raw()`` → the
stored JSON string holding ``contents``, and ``doc(0).raw() is not None`` to learn that documents are
stored. This module provides exactly that, backed by our BM25 index, as a stand-in ``pyserini``
package; everything else (their FastAPI app, request model, ``batch_search`` loop, response
building, ``uvicorn.run``) is their file, executed as ``__main__``. Only ``uvicorn.run``'s host and
port are redirected to loopback and the port given.

    python bench/searchr1_shim.py PATH/TO/retrieval_server.py INDEX_DIR PORT [--pyserini]

With ``--pyserini`` the stand-in is not installed: their server runs on the real Pyserini over a
Lucene index (bench_bm25_scale.py's ``--searchr1``), only host and port redirected.
"""

from __future__ import annotations

import json
import runpy
import sys
import types
from pathlib import Path
from typing import Any


class _Hit:
    __slots__ = ("docid", "score")

    def __init__(self, docid: int, score: float) -> None:
        self.docid, self.score = docid, score


class _StoredDoc:
    def __init__(self, raw: str) -> None:
        self._raw = raw

    def raw(self) -> str:
        return self._raw


class LuceneSearcher:
    """pyserini's searcher interface as Search-R1 uses it, answered by a sagegen index directory."""

    def __init__(self, index_dir: str) -> None:
        from sagegen.retrieval.factory import open_index

        retriever = open_index(index_dir)
        self._bm25 = getattr(retriever, "bm25", retriever)
        self._store = retriever.store

    def search(self, query: str, k: int = 10) -> list[_Hit]:
        return [_Hit(i, s) for i, s in self._bm25.search_ids([query], k)[0]]

    def doc(self, docid: int) -> _StoredDoc:
        # pyserini stores each document's JSON as indexed ({"id", "contents"}); Search-R1 json.loads it.
        d = self._store[int(docid)]
        return _StoredDoc(json.dumps({"id": d.id, "contents": d.contents}))


def install() -> None:
    """Make ``from pyserini.search.lucene import LuceneSearcher`` resolve to the class above."""
    names = ("pyserini", "pyserini.search", "pyserini.search.lucene")
    pkg, search, lucene = (types.ModuleType(n) for n in names)
    lucene.LuceneSearcher = LuceneSearcher  # type: ignore[attr-defined]
    pkg.search, search.lucene = search, lucene  # type: ignore[attr-defined]
    pkg.__path__ = search.__path__ = []  # type: ignore[attr-defined]
    sys.modules.update({"pyserini": pkg, "pyserini.search": search, "pyserini.search.lucene": lucene})


def load_their_retriever(server_file: Path, index_dir: Path, topk: int) -> Any:
    """Their ``BM25Retriever`` from their file (imported, not run), for the in-process baseline."""
    install()
    module = runpy.run_path(str(server_file), run_name="searchr1_retrieval_server")
    config = module["Config"](retrieval_method="bm25", retrieval_topk=topk, index_path=str(index_dir))
    return module["get_retriever"](config)


def main() -> None:
    server_file, index_dir, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if "--pyserini" not in sys.argv[4:]:  # else the real pyserini, over a Lucene index
        install()
    import uvicorn

    real_run = uvicorn.run

    def run_on_loopback(app: Any, **kwargs: Any) -> None:
        kwargs.update(host="127.0.0.1", port=port, log_level="warning")
        real_run(app, **kwargs)

    uvicorn.run = run_on_loopback
    sys.argv = [server_file, "--retriever_name", "bm25", "--index_path", index_dir, "--topk", "3"]
    runpy.run_path(server_file, run_name="__main__")


if __name__ == "__main__":
    main()
