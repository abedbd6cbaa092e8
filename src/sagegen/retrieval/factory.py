"""From a :class:`~sagegen.config.Config` to a ready :class:`~sagegen.retrieval.base.Retriever`.

Local kinds (bm25/dense/hybrid) build their index on first use and load it afterwards. The index
lives at ``retrieval.index_path`` if set, else ``retrieval.index_dir/<kind>-<hash of corpus+params>``,
so changing the corpus or a build parameter selects (or builds) a different index rather than
silently reusing a stale one. An explicit ``index_path`` whose manifest does not match is rebuilt
when ``retrieval.rebuild_stale`` is true and refused with :class:`~sagegen.errors.IndexError_` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagegen.config import Config
from sagegen.errors import IndexError_
from sagegen.records import Doc
from sagegen.retrieval.base import Retriever
from sagegen.retrieval.index import (
    LOCAL_KINDS,
    MANIFEST,
    Progress,
    build_index,
    default_index_path,
    index_key,
    index_params,
    manifest_mismatches,
    open_index,
    read_manifest,
)

__all__ = ["EnsuredIndex", "build_retriever", "ensure_index", "open_corpus_and_retriever", "open_index"]


@dataclass(frozen=True)
class EnsuredIndex:
    path: Path
    manifest: dict[str, Any]
    built: bool  # False when an up-to-date index was already there
    reason: str  # why it was (re)built, or "" when reused


def ensure_index(
    cfg: Config,
    docs: list[Doc] | None = None,
    *,
    kind: str | None = None,
    path: str | Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> EnsuredIndex:
    """Make sure a current ``kind`` index of ``cfg.corpus`` (or ``docs``) exists, building it if needed.

    Without ``docs`` the corpus is streamed from disk (scanned once for its hash, read again to
    build), never held in memory: what ``sagegen index`` and ``sagegen serve`` do.
    """
    from sagegen.corpus import CorpusPassages, corpus_hash, corpus_source, scan_corpus

    rcfg = cfg.retrieval
    kind = kind or rcfg.kind
    if kind not in LOCAL_KINDS:
        raise IndexError_(
            f"retrieval.kind={kind!r} has no local index (local kinds: {', '.join(LOCAL_KINDS)})"
        )
    passages: list[Doc] | CorpusPassages
    if docs is None:
        scan = scan_corpus(cfg.corpus)
        passages, chash = CorpusPassages(cfg.corpus, scan.n_docs), scan.hash
    else:
        passages, chash = docs, corpus_hash(docs)
    params = index_params(kind, rcfg, len(passages))
    explicit = path or rcfg.index_path
    target = Path(explicit) if explicit else default_index_path(rcfg, kind, index_key(kind, chash, params))

    has_manifest = (target / MANIFEST).is_file()
    if not has_manifest and target.exists() and (not target.is_dir() or any(target.iterdir())):
        # Never replace a directory we did not write: an index build swaps the whole folder.
        raise IndexError_(f"{target} exists and is not a sagegen index; choose another index path")
    reason = "forced rebuild" if force else "no index yet"
    if has_manifest and not force:
        try:
            problems = manifest_mismatches(read_manifest(target), kind, chash, params)
        except IndexError_ as e:
            problems = [str(e)]
        if not problems:
            return EnsuredIndex(target, read_manifest(target), built=False, reason="")
        if not rcfg.rebuild_stale:
            raise IndexError_(
                f"the index at {target} does not match the current corpus/config:\n  - "
                + "\n  - ".join(problems)
                + "\nrebuild it with `sagegen index --force`, or set retrieval.rebuild_stale=true"
            )
        reason = "stale: " + "; ".join(problems)
    source = corpus_source(cfg.corpus)
    manifest = build_index(
        passages, kind, rcfg, target, corpus_hash=chash, corpus_source=source, progress=progress
    )
    return EnsuredIndex(target, manifest, built=True, reason=reason)


def open_corpus_and_retriever(
    cfg: Config, *, progress: Progress | None = None
) -> tuple[list[Doc] | None, Retriever]:
    """The corpus passages (for seed sampling) and a retriever over them.

    For ``http``/``web`` the retriever is remote; the corpus is then loaded only when
    ``corpus.path`` names one explicitly (``None`` otherwise: the caller has no local seeds).
    """
    from sagegen.corpus import load_corpus

    kind = cfg.retrieval.kind
    if kind == "http":
        from sagegen.retrieval.http import HTTPRetriever

        return (load_corpus(cfg.corpus) if cfg.corpus.path else None), HTTPRetriever(cfg.retrieval.http)
    if kind == "web":
        from sagegen.retrieval.web import WebSearchRetriever

        return (load_corpus(cfg.corpus) if cfg.corpus.path else None), WebSearchRetriever(cfg.retrieval.web)
    docs = load_corpus(cfg.corpus)
    ensured = ensure_index(cfg, docs, progress=progress)
    return docs, open_index(ensured.path, cfg.retrieval)


def build_retriever(cfg: Config, *, progress: Progress | None = None) -> Retriever:
    """The retriever ``cfg.retrieval`` describes, building its local index first if needed.

    The corpus is only streamed (to check the index is current, or to build it), never loaded: what
    ``sagegen serve``, ``search`` and ``eval`` need, whatever the corpus size.
    """
    kind = cfg.retrieval.kind
    if kind == "http":
        from sagegen.retrieval.http import HTTPRetriever

        return HTTPRetriever(cfg.retrieval.http)
    if kind == "web":
        from sagegen.retrieval.web import WebSearchRetriever

        return WebSearchRetriever(cfg.retrieval.web)
    return open_index(ensure_index(cfg, progress=progress).path, cfg.retrieval)
