"""Cluster recipe: verl multi-turn GRPO/PPO with the search tool on ``sagegen export --format verl`` data.

What runs on the cluster (``examples/verl/README.md`` has the full command set):

1. ``sagegen export RUN --format verl --out data/`` → ``train.parquet``, ``test.parquet`` and
   ``sagegen_reward.py`` (our stdlib-only ``compute_score``);
2. ``sagegen serve`` → the Search-R1 ``/retrieve`` server over the same corpus;
3. ``python3 -m verl.trainer.main_ppo`` with verl's multi-turn rollout (``rollout.name=sglang``,
   ``multi_turn.enable=True``, ``max_turns`` = the turn cap), verl's ``SearchTool`` pointed at our
   server (``search_tool_config.yaml``), and ``custom_reward_function`` = our reward file. verl's
   multi-turn rollout builds a loss mask that excludes tool-response tokens, the same guarantee
   the TRL path checks on token ids.

``build_command`` produces the command line from ``TrainConfig.verl``; every ``key=value`` is
checked against ``VERL_SCHEMA`` (dotted keys of verl's ``verl/trainer/config/ppo_trainer.yaml`` at
volcengine/verl commit 008db456bf612da5543c9bb6e26fe654029ad5b8, read through the code index,
plus the ``multi_turn`` block it defines). verl itself cannot be installed here (it needs CUDA,
ray, vLLM/SGLang), so that static schema is the check; ``+key=value`` (Hydra "add") is allowed.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from sagegen.config import Config
from sagegen.errors import ConfigError

VERL_SCHEMA_SOURCE = (
    "volcengine/verl@008db456bf612da5543c9bb6e26fe654029ad5b8:verl/trainer/config/ppo_trainer.yaml"
)

#: Dotted keys of verl's ppo_trainer.yaml (the leaves and sections a recipe may override).
VERL_SCHEMA: frozenset[str] = frozenset(
    [
        "data.tokenizer",
        "data.train_files",
        "data.val_files",
        "data.prompt_key",
        "data.reward_fn_key",
        "data.max_prompt_length",
        "data.max_response_length",
        "data.train_batch_size",
        "data.val_batch_size",
        "data.return_raw_input_ids",
        "data.return_raw_chat",
        "data.shuffle",
        "data.filter_overlong_prompts",
        "data.filter_overlong_prompts_workers",
        "data.truncation",
        "data.image_key",
        "data.video_key",
        "data.custom_cls.path",
        "data.custom_cls.name",
        "actor_rollout_ref.hybrid_engine",
        "actor_rollout_ref.model.path",
        "actor_rollout_ref.model.external_lib",
        "actor_rollout_ref.model.override_config",
        "actor_rollout_ref.model.enable_gradient_checkpointing",
        "actor_rollout_ref.model.use_remove_padding",
        "actor_rollout_ref.model.use_liger",
        "actor_rollout_ref.model.return_last_hidden_state",
        "actor_rollout_ref.model.use_fused_loss",
        "actor_rollout_ref.actor.strategy",
        "actor_rollout_ref.actor.ppo_mini_batch_size",
        "actor_rollout_ref.actor.ppo_micro_batch_size",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
        "actor_rollout_ref.actor.use_dynamic_bsz",
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu",
        "actor_rollout_ref.actor.grad_clip",
        "actor_rollout_ref.actor.clip_ratio",
        "actor_rollout_ref.actor.clip_ratio_low",
        "actor_rollout_ref.actor.clip_ratio_high",
        "actor_rollout_ref.actor.clip_ratio_c",
        "actor_rollout_ref.actor.loss_agg_mode",
        "actor_rollout_ref.actor.entropy_coeff",
        "actor_rollout_ref.actor.use_kl_loss",
        "actor_rollout_ref.actor.use_torch_compile",
        "actor_rollout_ref.actor.kl_loss_coef",
        "actor_rollout_ref.actor.kl_loss_type",
        "actor_rollout_ref.actor.ppo_epochs",
        "actor_rollout_ref.actor.shuffle",
        "actor_rollout_ref.actor.ulysses_sequence_parallel_size",
        "actor_rollout_ref.actor.checkpoint.contents",
        "actor_rollout_ref.actor.optim.lr",
        "actor_rollout_ref.actor.optim.lr_warmup_steps",
        "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio",
        "actor_rollout_ref.actor.optim.min_lr_ratio",
        "actor_rollout_ref.actor.optim.warmup_style",
        "actor_rollout_ref.actor.optim.total_training_steps",
        "actor_rollout_ref.actor.optim.weight_decay",
        "actor_rollout_ref.actor.fsdp_config.wrap_policy",
        "actor_rollout_ref.actor.fsdp_config.param_offload",
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload",
        "actor_rollout_ref.actor.fsdp_config.offload_policy",
        "actor_rollout_ref.actor.fsdp_config.reshard_after_forward",
        "actor_rollout_ref.actor.fsdp_config.fsdp_size",
        "actor_rollout_ref.ref.strategy",
        "actor_rollout_ref.ref.fsdp_config.param_offload",
        "actor_rollout_ref.ref.fsdp_config.reshard_after_forward",
        "actor_rollout_ref.ref.fsdp_config.wrap_policy",
        "actor_rollout_ref.ref.use_torch_compile",
        "actor_rollout_ref.ref.log_prob_micro_batch_size",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu",
        "actor_rollout_ref.ref.log_prob_use_dynamic_bsz",
        "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu",
        "actor_rollout_ref.ref.ulysses_sequence_parallel_size",
        "actor_rollout_ref.rollout.name",
        "actor_rollout_ref.rollout.mode",
        "actor_rollout_ref.rollout.chat_scheduler",
        "actor_rollout_ref.rollout.temperature",
        "actor_rollout_ref.rollout.top_k",
        "actor_rollout_ref.rollout.top_p",
        "actor_rollout_ref.rollout.use_fire_sampling",
        "actor_rollout_ref.rollout.prompt_length",
        "actor_rollout_ref.rollout.response_length",
        "actor_rollout_ref.rollout.dtype",
        "actor_rollout_ref.rollout.gpu_memory_utilization",
        "actor_rollout_ref.rollout.ignore_eos",
        "actor_rollout_ref.rollout.enforce_eager",
        "actor_rollout_ref.rollout.free_cache_engine",
        "actor_rollout_ref.rollout.load_format",
        "actor_rollout_ref.rollout.tensor_model_parallel_size",
        "actor_rollout_ref.rollout.max_num_batched_tokens",
        "actor_rollout_ref.rollout.max_model_len",
        "actor_rollout_ref.rollout.max_num_seqs",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
        "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz",
        "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu",
        "actor_rollout_ref.rollout.disable_log_stats",
        "actor_rollout_ref.rollout.enable_chunked_prefill",
        "actor_rollout_ref.rollout.do_sample",
        "actor_rollout_ref.rollout.n",
        "actor_rollout_ref.rollout.engine_kwargs.swap_space",
        "actor_rollout_ref.rollout.val_kwargs.top_k",
        "actor_rollout_ref.rollout.val_kwargs.top_p",
        "actor_rollout_ref.rollout.val_kwargs.temperature",
        "actor_rollout_ref.rollout.val_kwargs.n",
        "actor_rollout_ref.rollout.val_kwargs.do_sample",
        "actor_rollout_ref.rollout.multi_turn.enable",
        "actor_rollout_ref.rollout.multi_turn.max_turns",
        "actor_rollout_ref.rollout.multi_turn.tool_config_path",
        "actor_rollout_ref.rollout.multi_turn.format",
        "critic.rollout_n",
        "critic.strategy",
        "critic.optim.lr",
        "critic.optim.lr_warmup_steps_ratio",
        "critic.optim.min_lr_ratio",
        "critic.optim.warmup_style",
        "critic.optim.total_training_steps",
        "critic.optim.weight_decay",
        "critic.model.path",
        "critic.model.tokenizer_path",
        "critic.model.override_config",
        "critic.model.external_lib",
        "critic.model.enable_gradient_checkpointing",
        "critic.model.use_remove_padding",
        "critic.model.fsdp_config.param_offload",
        "critic.model.fsdp_config.optimizer_offload",
        "critic.model.fsdp_config.offload_policy",
        "critic.model.fsdp_config.reshard_after_forward",
        "critic.model.fsdp_config.wrap_policy",
        "critic.model.fsdp_config.fsdp_size",
        "critic.ppo_mini_batch_size",
        "critic.ppo_micro_batch_size",
        "critic.ppo_micro_batch_size_per_gpu",
        "critic.forward_micro_batch_size",
        "critic.forward_micro_batch_size_per_gpu",
        "critic.use_dynamic_bsz",
        "critic.ppo_max_token_len_per_gpu",
        "critic.forward_max_token_len_per_gpu",
        "critic.ulysses_sequence_parallel_size",
        "critic.ppo_epochs",
        "critic.shuffle",
        "critic.grad_clip",
        "critic.cliprange_value",
        "critic.checkpoint.contents",
        "reward_model.enable",
        "reward_model.strategy",
        "reward_model.model.input_tokenizer",
        "reward_model.model.path",
        "reward_model.micro_batch_size",
        "reward_model.micro_batch_size_per_gpu",
        "reward_model.max_length",
        "reward_model.reward_manager",
        "reward_model.launch_reward_fn_async",
        "reward_model.use_dynamic_bsz",
        "custom_reward_function.path",
        "custom_reward_function.name",
        "algorithm.gamma",
        "algorithm.lam",
        "algorithm.adv_estimator",
        "algorithm.norm_adv_by_std_in_grpo",
        "algorithm.use_kl_in_reward",
        "algorithm.kl_penalty",
        "algorithm.kl_ctrl.type",
        "algorithm.kl_ctrl.kl_coef",
        "algorithm.kl_ctrl.horizon",
        "algorithm.kl_ctrl.target_kl",
        "trainer.balance_batch",
        "trainer.total_epochs",
        "trainer.total_training_steps",
        "trainer.project_name",
        "trainer.experiment_name",
        "trainer.logger",
        "trainer.log_val_generations",
        "trainer.rollout_data_dir",
        "trainer.validation_data_dir",
        "trainer.nnodes",
        "trainer.n_gpus_per_node",
        "trainer.save_freq",
        "trainer.resume_mode",
        "trainer.resume_from_path",
        "trainer.val_before_train",
        "trainer.test_freq",
        "trainer.critic_warmup",
        "trainer.default_hdfs_dir",
        "trainer.del_local_ckpt_after_load",
        "trainer.default_local_dir",
        "trainer.max_actor_ckpt_to_keep",
        "trainer.max_critic_ckpt_to_keep",
        "trainer.ray_wait_register_center_timeout",
        "ray_init.num_cpus",
    ]
)

#: Sections whose contents are free-form dicts (any sub-key is allowed).
_FREE_SECTIONS = (
    "actor_rollout_ref.model.override_config.",
    "critic.model.override_config.",
    "actor_rollout_ref.rollout.engine_kwargs.",
)


def validate_overrides(overrides: list[str]) -> list[str]:
    """Problems with ``key=value`` overrides against ``VERL_SCHEMA`` (empty list = all valid)."""
    problems = []
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep:
            problems.append(f"{item!r}: expected key=value")
            continue
        if key.startswith("+"):  # Hydra: add a key that the schema does not define
            continue
        if key not in VERL_SCHEMA and not key.startswith(_FREE_SECTIONS):
            problems.append(f"{key!r}: not a key of verl's ppo_trainer.yaml ({VERL_SCHEMA_SOURCE})")
    return problems


def tool_config(cfg: Config) -> dict[str, Any]:
    """verl ``SearchTool`` config pointing at ``sagegen serve`` (Search-R1 /retrieve wire format)."""
    return {
        "tools": [
            {
                "class_name": "verl.tools.search_tool.SearchTool",
                "config": {
                    "retrieval_service_url": cfg.train.verl.retriever_url,
                    "topk": cfg.solver.topk,
                    "num_workers": 120,
                    "rate_limit": 120,
                    "timeout": 30,
                    "type": "native",
                },
                "tool_schema": {
                    "type": "function",
                    "function": {
                        "name": "search",
                        "description": "Searches for relevant information based on queries.",
                        "parameters": {
                            "type": "object",
                            "properties": {
                                "query_list": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                    "description": "A list of search queries.",
                                }
                            },
                            "required": ["query_list"],
                        },
                    },
                },
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
        f"actor_rollout_ref.rollout.multi_turn.max_turns={tc.max_turns}",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={tool_config_path}",
        f"custom_reward_function.path={d / 'sagegen_reward.py'}",
        "custom_reward_function.name=compute_score",
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
    """``python3 -m verl.trainer.main_ppo ...``; raises ConfigError on keys verl does not know."""
    ov = overrides(cfg, data_dir, tool_config_path)
    problems = validate_overrides(ov)
    if problems:
        raise ConfigError("train.verl: overrides verl would reject:\n  " + "\n  ".join(problems))
    return ["python3", "-m", "verl.trainer.main_ppo", *ov]


def write_recipe(cfg: Config, data_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write ``search_tool_config.yaml`` and ``run_verl.sh`` (serve + train) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tool_path = out / "search_tool_config.yaml"
    tool_path.write_text(yaml.safe_dump(tool_config(cfg), sort_keys=False), encoding="utf-8")
    cmd = build_command(cfg, data_dir, tool_path)
    host_port = cfg.train.verl.retriever_url.split("//", 1)[-1].split("/", 1)[0]
    port = host_port.rsplit(":", 1)[-1] if ":" in host_port else "8000"
    script = "\n".join(
        [
            "#!/usr/bin/env bash",
            "# Generated by `sagegen train --backend verl --dry-run`; edit TrainConfig.verl, not this file.",
            "set -euo pipefail",
            "# Serve the corpus the data came from: SAGEGEN_SERVE_ARGS='--corpus corpus.jsonl --kind dense'",
            f"sagegen serve --port {port} ${{SAGEGEN_SERVE_ARGS:-}} &  # the Search-R1 /retrieve server",
            "SERVE_PID=$!",
            "trap 'kill $SERVE_PID' EXIT",
            f"until curl -sf http://127.0.0.1:{port}/health >/dev/null; do sleep 2; done",
            " \\\n    ".join(shlex.quote(c) for c in cmd) + ' "$@"',
            "",
        ]
    )
    sh = out / "run_verl.sh"
    sh.write_text(script, encoding="utf-8")
    sh.chmod(0o755)
    return {"tool_config": tool_path, "script": sh}


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
