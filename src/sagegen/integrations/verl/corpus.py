"""Which corpus the verl recipe serves: the one the training data came from, checked at start-up.

A policy trained against passages of another corpus learns nothing about the data's questions
(on a HotpotQA run served the bundled corpus, 0 of 13 training questions retrieved a supporting
passage; 13 of 13 on HotpotQA's). So ``sagegen train --backend verl --dry-run`` finds the corpus
of its data and refuses to write a recipe when it cannot:

1. the run's own ``config.yaml`` (DATA is a run directory, or a file in one);
2. the ``corpus`` block ``sagegen export --format verl`` writes into ``export.json``;
3. else the corpus the dry run itself was given (``--set corpus.path=...``).

Given both (1 or 2) and a different (3), the dry run refuses rather than guess. The corpus is
named by its passage count and ``corpus_hash`` (the hash index manifests carry, over the passages
as served, after chunking); ``run_verl.sh`` starts ``sagegen serve`` on it and, once ``/health``
answers, runs ``python3 -m sagegen.integrations.verl.corpus`` to check that the server names the same
two facts before any training step.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sagegen.config import Config, CorpusConfig, RetrievalConfig
from sagegen.errors import ConfigError

#: ``export.json`` key holding the run's corpus and retrieval sections (written by the verl export).
EXPORT_CORPUS_KEY = "corpus"
#: Retrieval kinds that search a local index run_verl.sh can start; http/web search someone else's.
_SERVABLE = ("bm25", "dense", "hybrid")


@dataclass(frozen=True)
class ServedCorpus:
    """The corpus (and retriever settings) the recipe serves, and the facts /health must report."""

    origin: str
    corpus: CorpusConfig
    retrieval: RetrievalConfig
    n_docs: int
    corpus_hash: str

    def describe(self) -> str:
        where = self.corpus.path or "the bundled corpus"
        return f"{where} ({self.retrieval.kind}, {self.n_docs} passages, corpus hash {self.corpus_hash})"

    def serve_args(self) -> list[str]:
        """``sagegen serve`` flags naming the corpus and retriever (the rest is in serve_config.yaml)."""
        args = ["--kind", self.retrieval.kind]
        return (["--corpus", self.corpus.path] if self.corpus.path else []) + args

    def serve_config(self) -> dict[str, Any]:
        """Every other corpus/retrieval setting that changes the served passages or their ranking."""
        corpus = self.corpus.model_dump(exclude={"path"})
        retrieval = self.retrieval.model_dump(exclude={"kind", "http", "web", "index_dir", "rebuild_stale"})
        return {"corpus": corpus, "retrieval": retrieval}


def _abs(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _from_sections(origin: str, data: dict[str, Any]) -> tuple[CorpusConfig, RetrievalConfig]:
    try:
        corpus = CorpusConfig.model_validate(data.get("corpus") or {})
        retrieval = RetrievalConfig.model_validate(data.get("retrieval") or {})
    except Exception as e:  # pydantic's message names the field
        raise ConfigError(f"{origin}: unreadable corpus/retrieval settings: {e}".splitlines()[0]) from None
    return corpus, retrieval


def _recorded(data_path: Path) -> tuple[str, dict[str, Any]] | None:
    """(origin, {"corpus", "retrieval"}) recorded beside the data, or None."""
    from sagegen.ledger.store import CONFIG_FILE

    folder = data_path if data_path.is_dir() else data_path.parent
    run_cfg = folder / CONFIG_FILE
    if run_cfg.is_file():
        try:
            data = yaml.safe_load(run_cfg.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{run_cfg}: not YAML ({e})".splitlines()[0]) from None
        if isinstance(data, dict):
            return str(run_cfg), data
    export_json = folder / "export.json"
    if export_json.is_file():
        try:
            meta = json.loads(export_json.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{export_json}: not JSON ({e})") from None
        block = meta.get(EXPORT_CORPUS_KEY) if isinstance(meta, dict) else None
        if isinstance(block, dict):
            return f"{export_json} ({EXPORT_CORPUS_KEY})", block
    return None


def _identity(corpus: CorpusConfig, retrieval: RetrievalConfig) -> tuple[int, str]:
    """(passages, corpus hash) as ``sagegen serve`` will report them: from a built index's manifest
    when ``retrieval.index_path`` names one (no corpus read), else by loading the corpus once."""
    from sagegen.corpus import corpus_hash, load_corpus
    from sagegen.retrieval.index import MANIFEST, read_manifest

    if retrieval.index_path and (Path(retrieval.index_path) / MANIFEST).is_file():
        m = read_manifest(retrieval.index_path)
        return int(m["n_docs"]), str(m["corpus_hash"])
    docs = load_corpus(corpus)
    return len(docs), corpus_hash(docs)


def served_corpus(data: str | Path, cfg: Config) -> ServedCorpus:
    """The corpus ``run_verl.sh`` must serve for ``data``; ConfigError when it cannot be known."""
    data_path = Path(data)
    recorded = _recorded(data_path)
    given = cfg.corpus.path is not None
    if recorded is not None:
        origin, sections = recorded
        # A path in a run's config is relative to where the run was started; resolve it against the
        # current folder (where the run's own commands run), as every other command does.
        corpus, retrieval = _from_sections(origin, sections)
        if retrieval.kind not in _SERVABLE:
            if not given:
                raise ConfigError(
                    f"{origin}: the data was made with retrieval.kind={retrieval.kind}, a server the "
                    "recipe cannot start; name the corpus it served: --set corpus.path=FILE "
                    "retrieval.kind=bm25|dense|hybrid"
                )
            origin, corpus, retrieval = "the dry run's --set/--config", cfg.corpus, cfg.retrieval
        elif given and _abs(cfg.corpus.path, Path.cwd()) != _abs(corpus.path, Path.cwd()):
            raise ConfigError(
                f"the dry run names corpus.path={cfg.corpus.path} but {origin} says the data came from "
                f"{corpus.path or 'the bundled corpus'}; drop the --set (or fix the config)"
            )
    elif given:
        origin, corpus, retrieval = "the dry run's --set/--config", cfg.corpus, cfg.retrieval
        if retrieval.kind not in _SERVABLE:
            raise ConfigError(
                f"retrieval.kind={retrieval.kind}: the recipe serves a local index; "
                "choose bm25, dense or hybrid"
            )
    else:
        raise ConfigError(
            f"{data_path}: cannot tell which corpus this data came from (no run config.yaml, no export.json "
            "corpus block); give a run directory, re-export it, or name it: --set corpus.path=FILE"
        )
    corpus = corpus.model_copy(update={"path": _abs(corpus.path, Path.cwd())})
    retrieval = retrieval.model_copy(update={"index_path": _abs(retrieval.index_path, Path.cwd())})
    if corpus.path is not None and not Path(corpus.path).exists():
        raise ConfigError(
            f"{origin}: corpus {corpus.path} is not here; run the dry run where the corpus is "
            "(its passage count and hash go into run_verl.sh's start-up check)"
        )
    n_docs, chash = _identity(corpus, retrieval)
    return ServedCorpus(origin, corpus, retrieval, n_docs, chash)


# ----------------------------------------------------------------------------- start-up check


def health(url: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The server's /health JSON, or None while it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            data = json.loads(r.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_served(info: dict[str, Any], n_docs: int, chash: str) -> str | None:
    """Why the served corpus is not the expected one (None: it is)."""
    got = (info.get("n_docs"), info.get("corpus_hash"))
    if got == (n_docs, chash):
        return None
    return (
        f"the server serves {got[0]} passages, corpus hash {got[1]}; the training data's corpus has "
        f"{n_docs} passages, hash {chash}"
    )


def wait_and_check(url: str, n_docs: int, chash: str, *, pid: int | None, timeout_s: float) -> str | None:
    """Poll ``url`` (/health) until it answers, then check it; an error line or None."""
    import os

    deadline = time.monotonic() + timeout_s
    while True:
        info = health(url)
        if info is not None:
            return check_served(info, n_docs, chash)
        if pid is not None:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return f"sagegen serve (pid {pid}) exited before {url} answered"
            except PermissionError:
                pass
        if time.monotonic() > deadline:
            return f"{url} did not answer within {timeout_s:.0f} s"
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python3 -m sagegen.integrations.verl.corpus",
        description="Wait for sagegen serve's /health and check the corpus it serves.",
    )
    p.add_argument("url", help="the server's /health URL")
    p.add_argument("--n-docs", type=int, required=True)
    p.add_argument("--corpus-hash", required=True)
    p.add_argument("--pid", type=int, default=None, help="the server's process (stop waiting if it exits)")
    p.add_argument(
        "--timeout", type=float, default=7200.0, help="seconds to wait (indexing a corpus takes a while)"
    )
    a = p.parse_args(argv)
    problem = wait_and_check(a.url, a.n_docs, a.corpus_hash, pid=a.pid, timeout_s=a.timeout)
    if problem:
        print(f"run_verl.sh: {problem}", file=sys.stderr)
        return 1
    print(f"run_verl.sh: {a.url} serves the training data's corpus ({a.n_docs} passages)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
