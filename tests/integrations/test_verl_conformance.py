"""The verl hand-off checked by verl itself, in the side venv that ``scripts/verl_env.sh`` builds.

On an export of a scripted run, with a live ``sagegen serve`` on loopback, verl's own code:
(a) composes every override of the written ``run_verl.sh`` with ``ppo_trainer.yaml`` and runs its
``validate_config``; (b) loads the tool config with ``initialize_tools_from_config`` and calls the
tool against the server; (c) loads the export with ``RLHFDataset``; (d) scores a ``DataProto``
through its custom reward loader. Point the tests at the side venv with
``SAGEGEN_VERL_PYTHON=.venv-verl/bin/python``; without it they skip locally, and fail under CI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.llama_server import free_port
from sage_loop_helpers import SCRIPTED_RUN_SETS, run_cli, write_corpus

pytest.importorskip("pyarrow")

ROOT = Path(__file__).resolve().parents[2]
SIDE = Path(__file__).parents[1] / "verl_side" / "conformance.py"


def _verl_python() -> str:
    named = os.environ.get("SAGEGEN_VERL_PYTHON", "").strip()
    default = ROOT / ".venv-verl" / "bin" / "python"
    python = named or (str(default) if default.is_file() else "")
    why = ""
    if not python:
        why = "no verl side venv: run `bash scripts/verl_env.sh` or set SAGEGEN_VERL_PYTHON"
    elif not Path(python).is_file():
        why = f"SAGEGEN_VERL_PYTHON={python} does not exist"
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the verl conformance tests, but {why}")
        pytest.skip(why)
    return python


def _side_env() -> dict[str, str]:
    env = dict(os.environ)
    # this checkout's sagegen, never a stale copy in the side venv
    env["PYTHONPATH"] = str(ROOT / "src")
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env


@pytest.fixture(scope="module")
def verl_python() -> str:
    return _verl_python()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, verl_python: str) -> Iterator[dict[str, Any]]:
    """A scripted run in a fresh folder, and ``sagegen serve`` over its corpus on a loopback port."""
    base = tmp_path_factory.mktemp("verlrun")
    write_corpus(base / "corpus.jsonl")
    gen = run_cli("generate", "--out", "run", "--no-progress", "-n", "4", *SCRIPTED_RUN_SETS, cwd=base)
    assert gen.returncode == 0, gen.stderr[-3000:]
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sagegen.cli.main",
            "serve",
            "--port",
            str(port),
            "-s",
            "corpus.path=corpus.jsonl",
            "-s",
            "retrieval.index_dir=idx",
        ],
        cwd=base,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, f"sagegen serve died: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "sagegen serve did not come up"
            time.sleep(0.3)
        yield {"base": base, "url": url}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def recipe(served: dict[str, Any], verl_python: str) -> dict[str, Any]:
    """Export → tiny local model → ``sagegen train --backend verl --dry-run`` checked by verl."""
    base = served["base"]
    exp = run_cli(
        "export",
        "run",
        "-f",
        "verl",
        "--min-difficulty",
        "0",
        "--include",
        "too_easy",
        "--split",
        "0.5",
        "--out",
        "data",
        cwd=base,
    )
    assert exp.returncode == 0, exp.stderr[-3000:]
    model = base / "tiny-qwen2"
    made = subprocess.run(
        [verl_python, str(SIDE), "model", str(model)],
        env=_side_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    env = {**_side_env(), "SAGEGEN_VERL_PYTHON": verl_python, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    dry = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagegen.cli.main",
            "train",
            "data",
            "--backend",
            "verl",
            "--dry-run",
            "--out",
            "recipe",
            "-s",
            f"train.verl.model={model}",
            "-s",
            f"train.verl.retriever_url={served['url']}/retrieve",
            "-s",
            "train.verl.n_gpus_per_node=1",
            "-s",
            "train.verl.train_batch_size=4",
            "-s",
            "train.verl.ppo_mini_batch_size=4",
            "-s",
            "train.verl.max_prompt_length=8192",
        ],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-3000:]
    checked = re.search(r"checked against verl (\S+): ", " ".join((dry.stdout + dry.stderr).split()))
    assert checked, dry.stderr[-2000:]
    args = [verl_python, str(SIDE), "check", str(base / "recipe"), str(base / "recipe" / "data"), str(model)]
    side = subprocess.run(args, cwd=base, env=_side_env(), capture_output=True, text=True, timeout=600)
    assert side.returncode == 0, side.stdout[-2000:] + side.stderr[-4000:]
    line = next(ln for ln in side.stdout.splitlines() if ln.startswith("REPORT "))
    report = json.loads(line[len("REPORT ") :])
    assert checked.group(1) == report["verl"]  # --dry-run was checked by the same verl
    return {"report": report, "base": base, "dry": dry.stdout}


def test_a_every_override_composes_and_validates(recipe: dict[str, Any]) -> None:
    a = recipe["report"]["a"]
    assert a["ok"] and a["verl"] == recipe["report"]["verl"]
    assert a["max_assistant_turns"] == 11  # train.max_turns=10 tool calls + the answer turn
    assert a["tool_config_path"].endswith("recipe/search_tool_config.yaml")
    assert a["reward_path"].endswith("recipe/data/sagegen_reward.py")


def test_a_ppo_recipe_with_a_critic_validates_too(recipe: dict[str, Any], verl_python: str) -> None:
    """The paper's PPO (``gae``, a value model) goes through verl's critic checks as well."""
    from sagegen.config import load_config
    from sagegen.errors import ConfigError
    from sagegen.integrations.verl.recipe import check_with_verl, overrides

    base = recipe["base"]
    sets = [
        f"train.verl.model={base / 'tiny-qwen2'}",
        "train.verl.algorithm=gae",
        "train.verl.n_gpus_per_node=1",
        "train.verl.train_batch_size=4",
        "train.verl.ppo_mini_batch_size=4",
    ]
    recipe_dir = base / "recipe"
    ov = overrides(load_config(None, sets), recipe_dir / "data", recipe_dir / "search_tool_config.yaml")
    assert any(o.startswith("critic.model.path=") for o in ov)
    assert check_with_verl(ov, verl_python)["ok"]
    # and verl's own refusal comes back as one ConfigError naming what verl said
    refused = r"verl [0-9.]+'s ppo_trainer\.yaml rejects the overrides: .*max_turns"
    with pytest.raises(ConfigError, match=refused):
        check_with_verl([*ov, "actor_rollout_ref.rollout.multi_turn.max_turns=10"], verl_python)


def test_b_tool_loads_through_verl_and_searches_the_live_server(
    recipe: dict[str, Any], served: dict[str, Any]
) -> None:
    from sagegen.agents.tags import format_information
    from sagegen.records import Doc, Hit

    b = recipe["report"]["b"]
    assert b["n_tools"] == 1 and b["is_base_tool"]
    assert b["class"] == "sagegen.integrations.verl.tool.SearchTool" and b["name"] == "search"
    assert b["schema"]["function"]["parameters"]["required"] == ["query"]
    # what the tool showed the policy is the server's answer, formatted as the solver formats it
    body = {"queries": ["Zorvath Bridge engineer"], "topk": 3, "return_scores": True}
    result = httpx.post(f"{served['url']}/retrieve", json=body, timeout=30).json()["result"][0]
    hits = [
        Hit(doc=Doc.from_contents(d["document"]["id"], d["document"]["contents"]), score=d["score"])
        for d in result
    ]
    assert result and b["text"] == format_information(hits)
    assert b["text"].startswith("<information>Doc 1(Title: ") and b["metrics"] == {"hits": len(result)}


def test_c_rlhf_dataset_reads_the_export(recipe: dict[str, Any]) -> None:
    import pyarrow.parquet as pq

    c = recipe["report"]["c"]
    rows = pq.read_table(recipe["base"] / "recipe" / "data" / "train.parquet").to_pylist()
    assert c["len"] == len(rows) > 0
    assert c["raw_prompt_roles"] == [m["role"] for m in rows[0]["prompt"]]
    assert c["agent_name"] == "tool_agent"
    assert c["tools_kwargs"]["search"]["create_kwargs"]["question"] == rows[0]["extra_info"]["question"]


def test_d_reward_scores_a_dataproto_through_verls_loader(recipe: dict[str, Any]) -> None:
    d = recipe["report"]["d"]
    assert d["loaded"] and d["manager"] == "NaiveRewardManager"
    # per row: the right answer scores 1, a wrong one 0
    assert d["scores"][0::2] == [1.0] * (len(d["scores"]) // 2)
    assert d["scores"][1::2] == [0.0] * (len(d["scores"]) // 2)


def test_unchecked_verl_version_is_refused_by_name(verl_python: str, tmp_path: Path) -> None:
    probe = (
        "import sys, verl; verl.__version__ = '0.0.1'; "
        "from sagegen.integrations.verl import check as verl_check; "
        "sys.exit(verl_check.main(['trainer.nnodes=1']))"
    )
    env = {k: v for k, v in _side_env().items() if k != "SAGEGEN_VERL_UNCHECKED"}
    res = subprocess.run([verl_python, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert "verl 0.0.1 is not a version sagegen has checked" in res.stderr and "0.9.1" in res.stderr
