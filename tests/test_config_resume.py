"""Resume against a config stored by an older sagegen: new keys at their default never block, a new key
whose default changes behaviour does, moved keys are read at their new place; the volatile fields are the
ones marked on the fields, for the ledger and for eval alike.

``data/config_b28380c.json`` is ``Config().model_dump(mode="json")`` at commit b28380c (before
``pipeline.precheck``, ``pipeline.dedup``, ``solver.force_answer``... existed, with ``llm.temperature`` and
``llm.max_tokens``), i.e. the config a run made by that version stored in its ledger.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sage_loop_helpers import SCRIPTED_RUN_SETS, run_cli, write_corpus
from sagegen.config import Config, strip_volatile
from sagegen.errors import ConfigError
from sagegen.evaluate import _fingerprint, check_meta
from sagegen.store import VOLATILE_KEYS, RunStore, config_diff

OLD = json.loads((Path(__file__).parent / "data" / "config_b28380c.json").read_text(encoding="utf-8"))


def _as_old_defaults(**pipeline: Any) -> Config:
    """Today's config set to what b28380c's defaults did (defaults that changed since are real changes)."""
    cfg = Config()
    cfg.generator.max_turn_tokens = 768
    cfg.generator.feedback_message_chars = 600
    cfg.generator.feedback_max_entries = 24
    cfg.solver.max_turn_tokens = 512
    cfg.judge.max_tokens = 256
    cfg.pipeline.precheck = "off"
    for k, v in pipeline.items():
        setattr(cfg.pipeline, k, v)
    return cfg


def _resume(tmp_path: Path, new: Config) -> bool:
    run = tmp_path / "run"
    if not run.exists():
        RunStore.create_or_resume(run, OLD, "")[0].close()  # the ledger as the older version wrote it
    store, resumed = RunStore.create_or_resume(run, new.model_dump(mode="json"), new.dump())
    store.close()
    return resumed


def test_the_old_stored_config_lacks_the_new_keys_and_holds_the_retired_ones() -> None:
    assert "precheck" not in OLD["pipeline"] and "dedup" not in OLD["pipeline"]
    assert "force_answer" not in OLD["solver"] and "temperature" not in OLD["generator"]
    assert OLD["llm"]["temperature"] == 0.7 and OLD["llm"]["max_tokens"] == 512


def test_a_run_of_an_older_version_resumes_when_only_new_keys_appeared(tmp_path: Path) -> None:
    assert config_diff(OLD, _as_old_defaults().model_dump(mode="json")) == []
    assert _resume(tmp_path, _as_old_defaults())


def test_a_new_key_away_from_its_default_blocks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pipeline\.dedup: 'normalized' -> 'exact'"):
        _resume(tmp_path, _as_old_defaults(dedup="exact"))


def test_a_new_key_whose_default_changes_behaviour_blocks(tmp_path: Path) -> None:
    # precheck is marked absent_as("off"): the old run had no pre-check, today's default "auto" has one.
    with pytest.raises(ConfigError, match=r"pipeline\.precheck: 'off' -> 'auto'"):
        _resume(tmp_path, _as_old_defaults(precheck="auto"))


def test_a_moved_key_is_compared_at_its_new_place(tmp_path: Path) -> None:
    hot = _as_old_defaults()
    hot.generator.temperature = 1.0  # the old run's generator sampled at llm.temperature = 0.7
    assert config_diff(OLD, hot.model_dump(mode="json")) == ["generator.temperature: 0.7 -> 1.0"]
    with pytest.raises(ConfigError, match=r"generator\.temperature: 0\.7 -> 1\.0"):
        _resume(tmp_path, hot)


def test_a_default_that_changed_since_blocks() -> None:
    diff = config_diff(OLD, Config().model_dump(mode="json"))
    assert "solver.max_turn_tokens: 512 -> 8192" in diff and "judge.max_tokens: 256 -> 4096" in diff


def test_volatile_fields_come_from_the_marks_for_ledger_and_eval() -> None:
    assert {
        "llm.n_threads",
        "llm.retry_backoff",
        "solver_llm.cache_path",
        "solver_llms.*.timeout",
        "pipeline.num_seeds",
        "pipeline.concurrency",
        "server",
    } <= set(VOLATILE_KEYS)
    cfg = Config(solver_llm=Config().llm, solver_llms=[Config().llm])
    stripped = strip_volatile(cfg.model_dump(mode="json"))
    assert "server" not in stripped and "num_seeds" not in stripped["pipeline"]
    assert "n_threads" not in stripped["solver_llm"] and "timeout" not in stripped["solver_llms"][0]
    assert stripped["llm"]["n_ctx"] == 8192 and stripped["solver"]["max_searches"] == 10
    # The eval fingerprint drops the same fields (n_threads was kept by its own list before).
    fp = _fingerprint(cfg, Path("bench.jsonl"), 2, 0)["config"]
    assert "n_threads" not in fp["llm"] and "cache_path" not in fp["solver_llm"]
    assert "n_ctx" in fp["llm"]


def test_eval_meta_of_an_older_version_is_accepted(tmp_path: Path) -> None:
    cfg = _as_old_defaults()
    meta = _fingerprint(cfg, Path("bench.jsonl"), 2, 0)
    # What an older eval wrote: its own list kept n_threads, llm.temperature/max_tokens were fields.
    old = {**meta, "config": {k: OLD[k] for k in meta["config"]}}
    (tmp_path / "meta.json").write_text(json.dumps(old), encoding="utf-8")
    check_meta(tmp_path, meta)  # accepted: nothing that decides the answers changed
    cfg.solver.temperature = 0.2
    changed = _fingerprint(cfg, Path("bench.jsonl"), 2, 0)
    with pytest.raises(ConfigError, match=r"config\.solver"):
        check_meta(tmp_path, changed)


def test_cli_resumes_a_run_whose_ledger_holds_an_older_config(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus.jsonl")
    cmd = [
        "generate",
        "--out",
        "runs/x",
        "--no-progress",
        *SCRIPTED_RUN_SETS,
        "-s",
        "llm.cache_path=cache.sqlite",
        "-n",
        "2",
    ]
    first = run_cli(*cmd, cwd=tmp_path, timeout=120)
    assert first.returncode == 0, first.stderr
    ledger = tmp_path / "runs" / "x" / "ledger.sqlite"
    with sqlite3.connect(ledger) as conn:  # rewrite the stored config the way b28380c wrote it
        stored = json.loads(conn.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])
        for section, key in [
            ("pipeline", "precheck"),
            ("pipeline", "dedup"),
            ("solver", "force_answer"),
            ("judge", "verdict_line"),
            ("generator", "feedback_search"),
        ]:
            del stored[section][key]
        stored["llm"]["temperature"] = stored["generator"].pop("temperature")
        stored["llm"]["max_tokens"] = 512
        conn.execute("UPDATE meta SET value=? WHERE key='config'", (json.dumps(stored),))
    again = run_cli(*cmd, cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "different configuration" not in again.stderr
    assert "(resumed;" in again.stdout and "this session 0 (0 cache hits)" in again.stdout  # nothing redone
    # Asked for a hotter generator than the old run's llm.temperature, the same run is refused.
    hot = run_cli(*cmd, "-s", "generator.temperature=1.0", cwd=tmp_path, timeout=120)
    assert hot.returncode == 2 and "generator.temperature: 0.7 -> 1.0" in hot.stderr, hot.stderr
