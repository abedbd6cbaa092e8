"""Cluster recipe: verl multi-turn GRPO/PPO with the search tool on ``sagegen export --format verl`` data.

What runs on the cluster (``examples/verl/README.md`` has the full command set):

1. ``sagegen export RUN --format verl --out data/`` → ``train.parquet``, ``test.parquet`` and
   ``sagegen_reward.py`` (our stdlib-only ``compute_score``);
2. ``sagegen serve`` → the Search-R1 ``/retrieve`` server over the corpus the data came from
   (``integrations.verl.corpus``: found from the run, checked against ``/health`` before training starts);
3. ``python3 -m verl.trainer.main_ppo`` with verl's multi-turn rollout (``rollout.name=sglang``,
   ``multi_turn.enable=True``, ``max_assistant_turns`` = the turn cap + 1), sagegen's own tool class
   (``sagegen.integrations.verl.tool.SearchTool``) pointed at our server, and
   ``reward.custom_reward_function`` = our reward file. verl's multi-turn rollout builds a loss mask
   that excludes tool-response tokens, the same guarantee the TRL path checks on token ids.

``build_command`` produces the command line from ``TrainConfig.verl``. Whether verl accepts it is
decided by verl itself, never by a key list of ours: ``sagegen.integrations.verl.check`` composes
verl's ``ppo_trainer.yaml`` with the overrides through Hydra and runs verl's ``validate_config``,
inside an interpreter that has verl (``$SAGEGEN_VERL_PYTHON``, the side venv of
``scripts/verl_env.sh``), at ``--dry-run`` when one is at hand and always in ``run_verl.sh`` before
training starts.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from sagegen.config import Config
from sagegen.errors import ConfigError
from sagegen.integrations.verl.corpus import ServedCorpus

#: The tool class the tool config names: ours, so the recipe needs no tool class from verl.
TOOL_CLASS = "sagegen.integrations.verl.tool.SearchTool"
#: Environment variable naming a Python interpreter with verl installed, used to check a recipe.
VERL_PYTHON_ENV = "SAGEGEN_VERL_PYTHON"


def validate_overrides(overrides: list[str]) -> list[str]:
    """Shape problems only (``key=value``); whether verl knows the keys is ``check_with_verl``'s job."""
    return [f"{item!r}: expected key=value" for item in overrides if "=" not in item.lstrip("+~")]


def _src_root() -> Path:
    # sagegen/integrations/verl/recipe.py -> the directory holding the ``sagegen`` package
    return Path(__file__).resolve().parents[3]


def check_with_verl(overrides_: list[str], python: str) -> dict[str, Any]:
    """Compose and validate ``overrides_`` with the verl that ``python`` imports (``check``)."""
    import json
    import os
    import subprocess

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_src_root()), env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(
            [python, "-m", "sagegen.integrations.verl.check", *overrides_],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
    except OSError as e:
        raise ConfigError(f"{VERL_PYTHON_ENV}={python}: cannot run it ({e.strerror or e})") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        reason = next((ln for ln in lines if ln.startswith("error: ")), lines[-1] if lines else "no output")
        reason = reason.removeprefix("error: ")
        raise ConfigError(f"train.verl: the installed verl refuses the recipe: {reason}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tool_schema() -> dict[str, Any]:
    """The ``search(query)`` function the policy sees: the solver's own native tool, one definition."""
    from sagegen.agents.solver import search_tool_spec

    return search_tool_spec()


def tool_config(cfg: Config) -> dict[str, Any]:
    """verl tool config: sagegen's SearchTool against a Search-R1 ``/retrieve`` server."""
    return {
        "tools": [
            {
                "class_name": TOOL_CLASS,
                "config": {
                    "type": "native",
                    "retrieval_service_url": cfg.train.verl.retriever_url,
                    "topk": cfg.solver.topk,
                    "timeout": 30,
                    "passage_chars": cfg.solver.passage_chars,
                    "api_key_env": cfg.server.api_key_env,
                },
                "tool_schema": tool_schema(),
            }
        ]
    }


def overrides(cfg: Config, data_dir: str | Path, tool_config_path: str | Path) -> list[str]:
    """The ``key=value`` list for ``verl.trainer.main_ppo`` (validated by ``build_command``)."""
    v, tc = cfg.train.verl, cfg.train
    d = Path(data_dir)
    grpo = v.algorithm == "grpo"
    out = [
        f"algorithm.adv_estimator={v.algorithm}",
        f"data.train_files={d / 'train.parquet'}",
        f"data.val_files={d / 'test.parquet'}",
        f"data.train_batch_size={v.train_batch_size}",
        f"data.max_prompt_length={v.max_prompt_length}",
        f"data.max_response_length={v.max_response_length}",
        "data.return_raw_chat=True",
        "data.filter_overlong_prompts=True",
        "data.truncation=error",
        f"actor_rollout_ref.model.path={v.model}",
        "actor_rollout_ref.model.use_remove_padding=True",
        "actor_rollout_ref.model.enable_gradient_checkpointing=True",
        "actor_rollout_ref.actor.optim.lr=1e-6",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={v.ppo_mini_batch_size}",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
        f"actor_rollout_ref.actor.use_kl_loss={grpo}",
        "actor_rollout_ref.actor.kl_loss_coef=0.001",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        "actor_rollout_ref.rollout.name=sglang",
        "actor_rollout_ref.rollout.mode=async",
        f"actor_rollout_ref.rollout.n={v.rollout_n if grpo else 1}",
        "actor_rollout_ref.rollout.gpu_memory_utilization=0.5",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.rollout.multi_turn.enable=True",
        # verl >= 0.7.1 counts assistant turns (``max_turns`` is gone): one per tool call, plus the answer.
        f"actor_rollout_ref.rollout.multi_turn.max_assistant_turns={tc.max_turns + 1}",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={tool_config_path}",
        # verl 0.9 reads the reward file from ``reward.custom_reward_function`` (the top level is legacy).
        f"reward.custom_reward_function.path={d / 'sagegen_reward.py'}",
        "reward.custom_reward_function.name=compute_score",
        "algorithm.use_kl_in_reward=False",
        f"trainer.n_gpus_per_node={v.n_gpus_per_node}",
        f"trainer.nnodes={v.nnodes}",
        f"trainer.total_training_steps={v.total_training_steps}",
        f"trainer.project_name={v.project_name}",
        f"trainer.experiment_name={v.experiment_name}",
        "trainer.logger=['console']",
        "trainer.save_freq=100",
        "trainer.test_freq=50",
        "trainer.critic_warmup=0",
    ]
    if not grpo:  # PPO with a value model (the paper's setting)
        out += [
            f"critic.model.path={v.model}",
            "critic.optim.lr=1e-5",
            "critic.ppo_micro_batch_size_per_gpu=8",
        ]
    return out + list(v.overrides)


def build_command(cfg: Config, data_dir: str | Path, tool_config_path: str | Path) -> list[str]:
    """``python3 -m verl.trainer.main_ppo ...``; raises ConfigError on a malformed override."""
    ov = overrides(cfg, data_dir, tool_config_path)
    problems = validate_overrides(ov)
    if problems:
        raise ConfigError("train.verl: overrides verl would reject:\n  " + "\n  ".join(problems))
    return ["python3", "-m", "verl.trainer.main_ppo", *ov]


def verl_python() -> str | None:
    """An interpreter with verl: ``$SAGEGEN_VERL_PYTHON``, else this one if it imports verl, else None."""
    import importlib.util
    import os
    import sys

    named = os.environ.get(VERL_PYTHON_ENV, "").strip()
    if named:
        return named
    return sys.executable if importlib.util.find_spec("verl") is not None else None


def write_recipe(
    cfg: Config, data_dir: str | Path, out_dir: str | Path, served: ServedCorpus, *, check: bool = True
) -> dict[str, Any]:
    """Write ``search_tool_config.yaml``, ``serve_config.yaml`` and ``run_verl.sh`` (serve the data's
    corpus, check that /health names it, check the overrides, train) into ``out_dir``.

    ``served`` is the data's corpus (``corpus.served_corpus``). With ``check`` and a verl
    interpreter at hand (``verl_python``), the overrides are composed and validated by that verl
    first; ``checked`` in the result says which verl did it (None: not here, ``run_verl.sh`` checks
    on the cluster before training).
    """
    out = Path(out_dir)
    tool_path = out / "search_tool_config.yaml"
    serve_path = out / "serve_config.yaml"
    cmd = build_command(cfg, data_dir, tool_path)
    python = verl_python() if check else None
    checked = check_with_verl(cmd[3:], python) if python else None
    out.mkdir(parents=True, exist_ok=True)
    tool_path.write_text(yaml.safe_dump(tool_config(cfg), sort_keys=False), encoding="utf-8")
    host_port = cfg.train.verl.retriever_url.split("//", 1)[-1].split("/", 1)[0]
    port = host_port.rsplit(":", 1)[-1] if ":" in host_port else "8000"
    serve_path.write_text(yaml.safe_dump(served.serve_config(), sort_keys=False), encoding="utf-8")
    serve = [
        "sagegen",
        "serve",
        "--config",
        '"$HERE/serve_config.yaml"',
        "--port",
        port,
        *(shlex.quote(a) for a in served.serve_args()),
    ]
    health = f"http://127.0.0.1:{port}/health"
    script = "\n".join(
        [
            "#!/usr/bin/env bash",
            "# Generated by `sagegen train --backend verl --dry-run`; edit TrainConfig.verl, not this file.",
            "set -euo pipefail",
            "OVERRIDES=(",
            *(f"  {shlex.quote(c)}" for c in cmd[3:]),
            ")",
            "# Compose and validate the overrides with the verl installed here; refuses unchecked versions.",
            'python3 -m sagegen.integrations.verl.check "${OVERRIDES[@]}" "$@"',
            'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
            f"# The corpus the data came from ({served.origin}):",
            f"#   {served.describe()}",
            " ".join(serve) + " &  # the Search-R1 /retrieve server",
            "SERVE_PID=$!",
            "trap 'kill $SERVE_PID' EXIT",
            "# Training against another corpus's passages would run on silently: stop unless /health",
            "# names this one.",
            f"python3 -m sagegen.integrations.verl.corpus {health} --n-docs {served.n_docs} "
            f"--corpus-hash {served.corpus_hash} --pid $SERVE_PID",
            'python3 -m verl.trainer.main_ppo "${OVERRIDES[@]}" "$@"',
            "",
        ]
    )
    sh = out / "run_verl.sh"
    sh.write_text(script, encoding="utf-8")
    sh.chmod(0o755)
    return {"tool_config": tool_path, "script": sh, "checked": checked}


def convert_for_tools(export_dir: str | Path, out_dir: str | Path, *, max_searches: int = 10) -> list[Path]:
    """Rewrite ``sagegen export --format verl`` parquet for verl's multi-turn *tool* rollout.

    The export's prompt is Search-R1's tag instruction (``<search>`` in text); verl's SGLang tool
    rollout instead offers a ``search`` function through the chat template. Each row gets the
    solver's native-tools prompt (``solver_tools_system.j2`` + ``solver_user.j2``, the same one
    ``sagegen train`` uses), ``extra_info.tools_kwargs`` for the search tool and
    ``agent_name = "tool_agent"`` (verl's agent-loop rollout). Everything else (reward_model,
    data_source, ids) is kept, and ``sagegen_reward.py`` is copied along.
    """
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from sagegen.train.data import solver_prompt

    src, out = Path(export_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("train.parquet", "test.parquet"):
        if not (src / name).is_file():
            continue
        rows = pq.read_table(src / name).to_pylist()
        for i, row in enumerate(rows):
            extra = dict(row.get("extra_info") or {})
            question = extra.get("question") or row.get("question")
            if not question:
                raise ConfigError(f"{src / name}: row {i + 1} has no question (extra_info.question)")
            row["prompt"] = solver_prompt(str(question), max_searches)
            targets = ((row.get("reward_model") or {}).get("ground_truth") or {}).get("target") or []
            # verl's search_r1_like preprocessing uses this shape (and parquet cannot store an empty struct).
            extra["tools_kwargs"] = {
                "search": {
                    "create_kwargs": {
                        "ground_truth": {"target": list(targets)},
                        "question": str(question),
                        "data_source": str(row.get("data_source") or "sagegen"),
                    }
                }
            }
            extra["need_tools_kwargs"] = True
            row["extra_info"] = extra
            row["agent_name"] = "tool_agent"
        pq.write_table(pa.Table.from_pylist(rows), out / name)
        written.append(out / name)
    if not written:
        raise ConfigError(f"{src}: no train.parquet / test.parquet (run `sagegen export RUN --format verl`)")
    if (src / "sagegen_reward.py").is_file():
        shutil.copy2(src / "sagegen_reward.py", out / "sagegen_reward.py")
    return written
