"""The screens of ``sagegen index`` and ``sagegen search``: progress bars and result rendering."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from sagegen.config import Config
from sagegen.records import Hit
from sagegen.retrieval.index import Progress


def _rate_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed:,.0f}/s" if task.speed and not task.finished else "", style="dim")

    return RateColumn()


@contextmanager
def progress_bar(console: Console) -> Iterator[Progress]:
    """A build-progress callback drawing one rich bar per stage (tokenize, embed, ...); without a
    terminal, a plain line as each stage starts and every 30 s (a log is never silent)."""
    if not console.is_terminal:
        with plain_progress(console) as update:
            yield update
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    with RichProgress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        _rate_column(),  # e.g. passages embedded per second
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


@contextmanager
def plain_progress(console: Console, every: float = 30.0) -> Iterator[Any]:
    from sagegen.cli.progress import Heartbeat, eta_seconds, hms

    t0 = time.monotonic()
    stage, done, total = "", 0, 0

    def line() -> str:
        wall = time.monotonic() - t0
        eta = eta_seconds(total - done, done, wall) if total else None
        return f"[{hms(wall)}] index: {stage} {done:,}/{total:,} · ETA {hms(eta)} (this stage)"

    beat = Heartbeat(line, lambda t: console.print(t, highlight=False, markup=False), every=every)

    def update(new_stage: str, new_done: int, new_total: int) -> None:
        nonlocal t0, stage, done, total
        started = new_stage != stage
        if started:
            t0 = time.monotonic()
        ended = bool(new_total) and new_done >= new_total and done < new_total
        stage, done, total = new_stage, new_done, new_total
        if started or ended:
            beat.now()

    beat.start()
    try:
        yield update
    finally:
        beat.stop()


def run_index(
    cfg: Config, console: Console, *, out: Path | None = None, force: bool = False
) -> dict[str, Any]:
    """Build (or confirm) the index ``cfg`` selects; returns a summary dict (also printed)."""
    from sagegen.corpus import corpus_source
    from sagegen.retrieval.factory import ensure_index

    source = corpus_source(cfg.corpus)
    console.print(f"corpus: {source} (streamed: read once to check and hash, once to index)", highlight=False)
    t1 = time.perf_counter()
    with progress_bar(console) as cb:
        ens = ensure_index(cfg, path=out, force=force, progress=cb)
    t_build = time.perf_counter() - t1
    m = ens.manifest
    if ens.built:
        console.print(
            f"[green]built[/] {m['kind']} index of {m['n_docs']:,} passages in {t_build:.1f}s ({ens.reason})",
            highlight=False,
        )
    else:
        console.print(f"[green]up to date[/]: {m['kind']} index of {m['n_docs']:,} passages (nothing to do)")
    console.print(f"index: {ens.path}", highlight=False)
    return {
        "path": str(ens.path),
        "kind": m["kind"],
        "n_docs": m["n_docs"],
        "built": ens.built,
        "build_seconds": round(t_build, 3),
    }


def hits_json(query: str, hits: Sequence[Hit]) -> str:
    return json.dumps(
        {
            "query": query,
            "hits": [
                {"rank": r, "id": h.doc.id, "title": h.doc.title, "text": h.doc.text, "score": h.score}
                for r, h in enumerate(hits, 1)
            ],
        },
        ensure_ascii=False,
    )


def hits_table(query: str, hits: Sequence[Hit], *, width: int = 300) -> Table:
    table = Table(title=Text(query, style="bold"), title_justify="left", show_lines=True, expand=True)
    table.add_column("#", justify="right", style="dim", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("id", style="cyan", no_wrap=True)
    table.add_column("passage", ratio=1)
    for r, h in enumerate(hits, 1):
        text = h.doc.text if len(h.doc.text) <= width else h.doc.text[:width].rsplit(" ", 1)[0] + " …"
        # Text objects, not markup strings: passages may contain "[...]" that rich would parse.
        body = Text.assemble((h.doc.title, "bold"), "\n", text) if h.doc.title else Text(text)
        table.add_row(str(r), f"{h.score:.3f}", Text(h.doc.id), body)
    if not hits:
        table.add_row("", "", "", "[dim]no passage shares a term with the query[/]")
    return table


def run_search(
    cfg: Config,
    queries: Sequence[str],
    console: Console,
    *,
    k: int | None = None,
    index: Path | None = None,
    as_json: bool = False,
) -> list[list[Hit]]:
    """Search the index ``cfg`` selects (built if missing), or ``index``; print the results."""
    from sagegen.retrieval.factory import build_retriever, open_index

    if index is not None:
        retriever = open_index(index, cfg.retrieval)
    else:
        with progress_bar(console) as cb:
            retriever = build_retriever(cfg, progress=cb)
    k = k or cfg.retrieval.topk
    t0 = time.perf_counter()
    results = retriever.search(list(queries), k=k)
    seconds = time.perf_counter() - t0
    out = Console()  # results on stdout, diagnostics on stderr
    for q, hits in zip(queries, results, strict=True):
        if as_json:
            print(hits_json(q, hits))
        else:
            out.print(hits_table(q, hits))
    if not as_json:
        where = getattr(retriever, "path", None) or cfg.retrieval.kind
        console.print(
            f"[dim]{len(queries)} quer{'y' if len(queries) == 1 else 'ies'} in {seconds * 1000:.0f} ms "
            f"({escape(str(where))})[/]",
            highlight=False,
        )
    return results
