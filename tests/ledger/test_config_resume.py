"""Resume against a stored config: keys added since it was stored count at their default and never block,
a key away from its default does, a key today's config no longer has is named (there is no compatibility
layer before a first release); the volatile fields are the ones marked on the fields, for the ledger and for
eval alike.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sage_loop_helpers import SCRIPTED_RUN_SETS, run_cli, write_corpus
from sagegen.config import Config, strip_volatile
from sagegen.errors import ConfigError
from sagegen.ledger.store import VOLATILE_KEYS, RunStore, config_diff
from sagegen.loop.evaluate import _fingerprint, check_meta

#: Keys a run stored before they existed lacks (any real fields do).
NEWER = [
    ("pipeline", "precheck"),
    ("pipeline", "dedup"),
    ("solver", "force_answer"),
    ("judge", "verdict_line"),
]


def _older() -> dict[str, Any]:
    """Today's default config as a run stored before the ``NEWER`` keys existed."""
    stored = Config().model_dump(mode="json")
    for section, key in NEWER:
        del stored[section][key]
    return stored


def _resume(tmp_path: Path, stored: dict[str, Any], new: Config) -> bool:
    run = tmp_path / "run"
    if not run.exists():
        RunStore.create_or_resume(run, stored, "")[0].close()
    store, resumed = RunStore.create_or_resume(run, new.model_dump(mode="json"), new.dump())
    store.close()
    return resumed


def test_keys_added_since_count_at_their_default(tmp_path: Path) -> None:
    assert config_diff(_older(), Config().model_dump(mode="json")) == []
    assert _resume(tmp_path, _older(), Config())


def test_a_new_key_away_from_its_default_blocks(tmp_path: Path) -> None:
    cfg = Config()
    cfg.pipeline.dedup = "exact"
    with pytest.raises(ConfigError, match=r"pipeline\.dedup: 'normalized' -> 'exact'"):
        _resume(tmp_path, _older(), cfg)


def test_a_key_todays_config_lacks_is_named_not_translated(tmp_path: Path) -> None:
    stored = _older()
    stored["llm"]["temperature"] = 0.7  # a key no field reads: a difference, never silently mapped
    assert config_diff(stored, Config().model_dump(mode="json")) == ["llm.temperature: 0.7 -> None"]
    with pytest.raises(ConfigError, match=r"llm\.temperature: 0\.7 -> None"):
        _resume(tmp_path, stored, Config())


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
    # The eval fingerprint drops the same fields.
    fp = _fingerprint(cfg, Path("bench.jsonl"), 2, 0)["config"]
    assert "n_threads" not in fp["llm"] and "cache_path" not in fp["solver_llm"]
    assert "n_ctx" in fp["llm"]


def test_eval_meta_stored_before_new_keys_is_accepted(tmp_path: Path) -> None:
    cfg = Config()
    meta = _fingerprint(cfg, Path("bench.jsonl"), 2, 0)
    old = copy.deepcopy(meta)
    for section, key in NEWER:
        old["config"].get(section, {}).pop(key, None)
    (tmp_path / "meta.json").write_text(json.dumps(old), encoding="utf-8")
    check_meta(tmp_path, meta)  # accepted: nothing that decides the answers changed
    cfg.solver.temperature = 0.2
    changed = _fingerprint(cfg, Path("bench.jsonl"), 2, 0)
    with pytest.raises(ConfigError, match=r"config\.solver"):
        check_meta(tmp_path, changed)


def test_cli_resumes_a_run_whose_ledger_lacks_newer_keys(tmp_path: Path) -> None:
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
    with sqlite3.connect(ledger) as conn:  # the stored config as a run made before those keys existed
        stored = json.loads(conn.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])
        for section, key in NEWER:
            if stored[section][key] == getattr(getattr(Config(), section), key):  # the scripted run sets some
                del stored[section][key]
        conn.execute("UPDATE meta SET value=? WHERE key='config'", (json.dumps(stored),))
    again = run_cli(*cmd, cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "different configuration" not in again.stderr
    assert "(resumed;" in again.stdout and "this session 0 (0 cache hits)" in again.stdout  # nothing redone
    hot = run_cli(*cmd, "-s", "pipeline.dedup=exact", cwd=tmp_path, timeout=120)
    assert hot.returncode == 2 and "pipeline.dedup: 'normalized' -> 'exact'" in hot.stderr, hot.stderr
