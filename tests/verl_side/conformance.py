"""Runs inside the verl side venv (scripts/verl_env.sh); driven by
tests/integrations/test_verl_conformance.py.

    python conformance.py model DIR                 a tiny local Qwen2 checkpoint dir (config + tokenizer)
    python conformance.py check RECIPE DATA MODEL   (a)-(d) below; prints one JSON object

Everything here calls verl's own code: (a) Hydra composition of ``ppo_trainer.yaml`` with every
override of the written ``run_verl.sh`` plus verl's ``validate_config``; (b) verl's
``initialize_tools_from_config`` on the written tool config, then the tool against the live
server the config names; (c) ``RLHFDataset`` on the export; (d) verl's custom reward loader and
its ``naive`` reward manager on a ``DataProto`` of real token ids.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

# A chat template of our own for the tiny tokenizer: system/user/assistant/tool turns, tool list.
CHAT_TEMPLATE = (
    "{% if tools %}<|tools|>{{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def make_model(out: Path) -> None:
    """A 2-layer Qwen2 config and a byte-level BPE tokenizer trained here, saved as an HF folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config

    special = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|tools|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = ["Answer the question. <answer>Mira Tolk</answer> <search>river</search> 1999 Paris"] * 10
    tok.train_from_iterator(
        text,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    Qwen2Config(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=8192,
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
        architectures=["Qwen2ForCausalLM"],
    ).save_pretrained(out)


def script_overrides(script: Path) -> list[str]:
    """The OVERRIDES array of run_verl.sh, read by bash itself (quoting and all)."""
    code = f'eval "$(sed -n "/^OVERRIDES=(/,/^)/p" {script!s})"; printf "%s\\0" "${{OVERRIDES[@]}}"'
    out = subprocess.run(["bash", "-c", code], capture_output=True, check=True).stdout
    return [item.decode() for item in out.split(b"\0") if item]


def check(recipe: Path, data: Path, model: Path) -> dict[str, Any]:
    import torch
    import verl
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.tools.base_tool import BaseTool
    from verl.trainer.ppo.reward import get_custom_reward_fn, load_reward_manager
    from verl.utils.dataset.rl_dataset import RLHFDataset

    try:
        from verl.tools.tool_registry import initialize_tools_from_config
    except ImportError:  # verl < 0.9 kept it under tools/utils
        from verl.tools.utils.tool_registry import initialize_tools_from_config

    from sagegen.integrations.verl import check as verl_check

    report: dict[str, Any] = {"verl": verl.__version__}

    # (a) every override of the written script, composed and validated by this verl
    overrides = script_overrides(recipe / "run_verl.sh")
    report["a"] = verl_check.check(overrides)
    config = verl_check.compose(overrides)
    mt = config.actor_rollout_ref.rollout.multi_turn
    report["a"].update(
        max_assistant_turns=mt.max_assistant_turns,
        tool_config_path=mt.tool_config_path,
        reward_path=config.reward.custom_reward_function.path,
    )

    # (b) the tool config through verl's loader, then one call against the live server
    tools = initialize_tools_from_config(mt.tool_config_path)

    async def call() -> tuple[str, dict]:
        tool = tools[0]
        iid, _ = await tool.create()
        resp, _reward, metrics = await tool.execute(iid, {"query": "Zorvath Bridge engineer"})
        await tool.release(iid)
        return resp.text, metrics

    text, metrics = asyncio.run(call())
    report["b"] = {
        "n_tools": len(tools),
        "class": f"{type(tools[0]).__module__}.{type(tools[0]).__name__}",
        "is_base_tool": isinstance(tools[0], BaseTool),
        "name": tools[0].name,
        "schema": tools[0].get_openai_tool_schema().model_dump(exclude_none=True),
        "text": text,
        "metrics": metrics,
    }

    # (c) the export through RLHFDataset with the composed data config
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    train_file = str(config.data.train_files)
    ds = RLHFDataset(data_files=[train_file], tokenizer=tokenizer, config=config.data)
    rows = [ds[i] for i in range(len(ds))]
    report["c"] = {
        "len": len(ds),
        "keys": sorted(rows[0].keys()),
        "raw_prompt_roles": [m["role"] for m in rows[0]["raw_prompt"]],
        "agent_name": rows[0].get("agent_name"),
        "tools_kwargs": json.loads(json.dumps(rows[0]["tools_kwargs"], default=str)),
    }

    # (d) our reward through verl's loader and reward manager, on real token ids
    report["d"] = {"loaded": get_custom_reward_fn(config) is not None}
    manager = load_reward_manager(config, tokenizer)
    scores = []
    for row in rows[:2]:
        truth = row["reward_model"]["ground_truth"]["target"]
        for solution in (f"<think>x</think><answer>{truth[0]}</answer>", "<answer>nobody at all</answer>"):
            ids = tokenizer(solution, return_tensors="pt")["input_ids"][0]
            item = DataProto.from_dict(
                tensors={"responses": ids[None], "attention_mask": torch.ones_like(ids)[None]},
                non_tensors={
                    "data_source": [row["data_source"]],
                    "reward_model": [row["reward_model"]],
                    "extra_info": [dict(row["extra_info"])],
                },
            )
            # the manager runs its work on the event loop it captured when it was built
            out = manager.loop.run_until_complete(manager.run_single(item))
            scores.append(float(out["reward_score"]))
    report["d"]["scores"] = scores
    report["d"]["manager"] = type(manager).__name__
    report["config_reward"] = OmegaConf.to_container(config.reward.custom_reward_function)
    return report


def main() -> int:
    cmd = sys.argv[1]
    if cmd == "model":
        make_model(Path(sys.argv[2]))
        return 0
    report = check(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    print("REPORT " + json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
