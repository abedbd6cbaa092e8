"""BM25 on ``tantivy`` (Rust, Lucene-like): the engine for corpora too large for the numpy arrays.

The numpy engine (:mod:`sagegen.retrieval.bm25`) precomputes every (term, passage) score in memory
(~8 KB per passage while building) and a query sums every posting of its terms, so query CPU grows
with the corpus. tantivy writes an inverted index to disk in segments from a writer whose buffer is
bounded (``retrieval.bm25.index_memory_mb``), merges them in the background and reads them
memory-mapped. tantivy itself has block-max WAND, but tantivy-py (0.27) always wraps its top-k
collector in a ``MultiCollector``, which scores every posting of the query's terms: query CPU still
grows with the corpus, below the numpy engine's and Lucene's through 3M passages (bench/README.md).

Tokens are sagegen's own :class:`~sagegen.retrieval.tokenize.Tokenizer` output, joined by spaces and
indexed with tantivy's whitespace tokenizer; queries become one ``Should`` term per token. So both
engines see exactly the same terms (a query word repeated counts once per occurrence in both), and
``retrieval.bm25.stopwords`` / ``stemmer`` mean the same thing whichever engine serves the index.
Scoring is Lucene's BM25 with tantivy's fixed k1 = 1.2, b = 0.75 (not settable from Python).

Each passage carries its corpus position in a fast field (``pos``), so a hit maps straight to the
:class:`~sagegen.retrieval.index.DocStore` line; tantivy stores no text of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sagegen.config import BM25Config
from sagegen.errors import ConfigError, IndexError_
from sagegen.records import Hit
from sagegen.retrieval.base import SearchPace
from sagegen.retrieval.index import DocStore, Passages, Progress, to_hits
from sagegen.retrieval.tokenize import Tokenizer

#: tantivy's BM25 constants (tantivy/src/query/bm25.rs), recorded in the manifest.
TANTIVY_K1, TANTIVY_B = 1.2, 0.75
BODY, POS = "body", "pos"


def _tantivy() -> Any:
    try:
        import tantivy
    except ImportError:
        raise ConfigError(
            "retrieval.bm25.engine=tantivy (or auto on a large corpus) needs tantivy: pip install tantivy"
        ) from None
    return tantivy


def tantivy_params(cfg: BM25Config, tokenizer: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``params.bm25`` of a tantivy index; a k1/b/method it cannot apply is refused."""
    fields = BM25Config.model_fields
    set_here = [n for n in ("k1", "b", "method") if getattr(cfg, n) != fields[n].default]
    changed = [f"{n}={getattr(cfg, n)!r}" for n in set_here]
    if changed:
        raise ConfigError(
            f"retrieval.bm25.{', '.join(changed)} applies to the numpy engine only; tantivy scores with "
            f"Lucene's BM25 at k1={TANTIVY_K1}, b={TANTIVY_B}: set retrieval.bm25.engine=numpy to keep them"
        )
    return {"engine": "tantivy", "k1": TANTIVY_K1, "b": TANTIVY_B, "method": "lucene", "tokenizer": tokenizer}


def _schema(tantivy: Any) -> Any:
    sb = tantivy.SchemaBuilder()
    # Term frequencies without positions: BM25 needs no phrase queries, and positions would double the index.
    sb.add_text_field(BODY, stored=False, tokenizer_name="whitespace", index_option="freq")
    sb.add_unsigned_field(POS, stored=False, indexed=False, fast=True)
    return sb.build()


def build_tantivy(
    docs: Passages, cfg: BM25Config, out_dir: Path, *, progress: Progress | None = None
) -> None:
    """Index ``docs`` (iterated once, never held) into a tantivy index at ``out_dir``."""
    tantivy = _tantivy()
    tok = Tokenizer(cfg.stopwords, cfg.stemmer)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = tantivy.Index(_schema(tantivy), path=str(out_dir), reuse=False)
    # One indexing thread: this process' tokenizing is the other busy core. The buffer is what bounds
    # memory; a full buffer is written out as a segment and segments are merged in the background.
    writer = index.writer(heap_size=cfg.index_memory_mb * 1_000_000, num_threads=1)
    total = len(docs)
    step = max(1, total // 100)
    for n, d in enumerate(docs, 1):
        doc = tantivy.Document()
        doc.add_unsigned(POS, n - 1)
        doc.add_text(BODY, " ".join(tok(d.contents)))
        writer.add_document(doc)
        if progress and (n % step == 0 or n == total):
            progress("bm25: tantivy index", n, total)
    writer.commit()
    if progress:
        progress("bm25: merge segments", 0, 1)
    writer.wait_merging_threads()
    if progress:
        progress("bm25: merge segments", 1, 1)


class TantivyRetriever:
    """Batched BM25 search over a tantivy index (memory-mapped segments) and a :class:`DocStore`."""

    #: A tantivy Searcher is shared read-only state (Send + Sync in Rust), and it releases the GIL
    #: while it searches, so server threads search in parallel.
    thread_safe = True

    def __init__(self, index: Any, tokenizer: Tokenizer, store: DocStore) -> None:
        tantivy = _tantivy()
        self._query, self._should = tantivy.Query, tantivy.Occur.Should
        self.index, self.tokenizer, self.store = index, tokenizer, store
        self.schema = index.schema
        self.searcher = index.searcher()
        self.n_docs = int(self.searcher.num_docs)
        #: Mostly a few memory-mapped reads; quick searches may run on the event loop (SearchPace).
        self.pace = SearchPace()

    @classmethod
    def load(cls, directory: Path, store: DocStore, params: dict[str, Any]) -> TantivyRetriever:
        tantivy = _tantivy()
        try:
            index = tantivy.Index.open(str(directory))
        except ValueError as e:  # tantivy reports a missing, damaged or newer-format index this way
            raise IndexError_(
                f"{directory}: cannot open the tantivy index ({e}); rebuild it with `sagegen index`"
            ) from None
        spec = params["tokenizer"]
        retriever = cls(index, Tokenizer(spec["stopwords"], spec["stemmer"]), store)
        if retriever.n_docs != len(store):
            raise IndexError_(
                f"{directory}: tantivy holds {retriever.n_docs} passages, the store {len(store)}"
            )
        return retriever

    def _query_of(self, query: str) -> Any:
        terms = self.tokenizer(query)
        if not terms:
            return None
        tq = self._query.term_query
        return self._query.boolean_query(
            [(self._should, tq(self.schema, BODY, t, index_option="freq")) for t in terms]
        )

    def search_ids(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        """Top-``k`` (position, score) per query; documents sharing no term with it are not returned."""
        out: list[list[tuple[int, float]]] = []
        searcher = self.searcher
        for q in queries:
            query = self._query_of(q)
            if query is None:
                out.append([])
                continue
            hits = searcher.search(query, k, count=False).hits
            if not hits:
                out.append([])
                continue
            pos = searcher.fast_field_values(POS, [a for _, a in hits])
            # Best first; ties broken by corpus position, as the numpy engine does.
            out.append(
                sorted(
                    ((int(p), float(s)) for (s, _), p in zip(hits, pos, strict=True)),
                    key=lambda h: (-h[1], h[0]),
                )
            )
        return out

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        if k < 1:
            raise ValueError("k must be >= 1")
        return to_hits(self.store, self.search_ids(queries, k))
