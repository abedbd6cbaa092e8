"""Supervised warm-up on tool-calling trajectories before RL.

A 135M model never emits a well-formed ``<tool_call>`` on its own, so GRPO would see reward 0 on
every rollout and learn nothing. A short SFT pass on a few correct trajectories teaches the format
(call ``search``, read the result, answer inside ``<answer>``) first.

Trajectories come from either
- the dataset itself (``build_warmup``): for each pair, search the sub-questions of its plan
  (MuSiQue decomposition, or '?' lines of a sagegen plan; else the question), with the *live*
  retriever, then answer with the gold answer; or
- an SFT trajectory file (``load_sft_file``): JSONL of ``{"messages": [...]}`` as written by
  ``sagegen export --format sft``; trajectories in the Search-R1 tag protocol are converted to
  the native tool protocol (``<search>q</search>`` → a ``search`` tool call, ``<information>`` →
  a tool message) so they teach the interface the RL stage uses.

Loss is on assistant tokens only (TRL's training chat template marks them with
``{% generation %}``); tool results and prompts are never trained on, as in RL.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sagegen.agents import tags
from sagegen.errors import InputError
from sagegen.jsonl import iter_json_objects
from sagegen.retrieval.base import Retriever
from sagegen.train.data import solver_prompt
from sagegen.train.tools import tool_schema

log = logging.getLogger(__name__)

Message = dict[str, Any]


def _call(query: str) -> Message:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": {"query": query}}}],
    }


def _answer(answer: str) -> Message:
    return {"role": "assistant", "content": f"<answer> {answer} </answer>"}


def build_warmup(
    rows: Sequence[dict[str, Any]],
    retriever: Retriever,
    *,
    topk: int = 3,
    passage_chars: int = 0,
    max_searches: int = 10,
) -> list[list[Message]]:
    """One correct tool-protocol trajectory per row, with real search results."""
    convs = []
    for row in rows:
        queries = list(row.get("sub_questions") or [])[:max_searches] or [row["question"]]
        msgs: list[Message] = [dict(m) for m in row["prompt"]]
        hits = retriever.search(queries, topk)
        for q, h in zip(queries, hits, strict=True):
            msgs.append(_call(q))
            msgs.append(
                {
                    "role": "tool",
                    "name": "search",
                    "content": tags.format_information(h[:topk], passage_chars),
                }
            )
        msgs.append(_answer(row["golden_answers"][0]))
        convs.append(msgs)
    return convs


def _from_tags(messages: list[Message], max_searches: int) -> list[Message]:
    """Convert a Search-R1 tag trajectory into the native tool protocol (see the module docstring)."""
    question = ""
    out: list[Message] = []
    for m in messages:
        role, content = m.get("role"), str(m.get("content") or "")
        if role == "system":
            continue
        if role == "user" and not out:
            q = re.search(r"Question:\s*(.+)", content, re.DOTALL)
            question = (q.group(1) if q else content).strip()
            out.extend(solver_prompt(question, max_searches))
        elif role == "user" and tags.has_tag(content, "information"):
            info = re.search(
                r"<\s*information\s*>.*?<\s*/\s*information\s*>", content, re.DOTALL | re.IGNORECASE
            )
            out.append({"role": "tool", "name": "search", "content": info.group(0) if info else content})
        elif role == "assistant" and tags.has_tag(content, "search"):
            act = tags.parse_action(content)
            pre = content[: content.lower().find("<search")].strip() if act.kind == "search" else ""
            call = _call(act.content)
            call["content"] = pre
            out.append(call)
        else:
            out.append({"role": role, "content": content})
    return out


def load_sft_file(path: str | Path, *, max_searches: int = 10) -> list[list[Message]]:
    """Trajectories from a JSONL of ``{"messages": [...]}`` (tool calls or Search-R1 tags)."""
    p = Path(path)
    convs = []
    for lineno, rec in iter_json_objects(p, what="SFT trajectory file"):
        msgs = rec.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise InputError("expected a non-empty 'messages' list", path=p, line=lineno, field="messages")
        for m in msgs:  # tool-call arguments may be JSON strings (OpenAI wire form)
            for tc in m.get("tool_calls") or []:
                fn = tc.get("function", tc)
                if isinstance(fn.get("arguments"), str):
                    try:
                        fn["arguments"] = json.loads(fn["arguments"])
                    except json.JSONDecodeError:
                        raise InputError("tool call arguments are not JSON", path=p, line=lineno) from None
        if any(m.get("tool_calls") for m in msgs):
            convs.append(msgs)
        else:
            convs.append(_from_tags(msgs, max_searches))
    if not convs:
        raise InputError("no trajectories", path=p)
    return convs


def training_template(tokenizer: Any) -> str:
    """A chat template with ``{% generation %}`` markers for assistant-only loss."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tokenizer.chat_template):
        return tokenizer.chat_template
    tpl = get_training_chat_template(tokenizer)
    return tpl or tokenizer.chat_template


def encode(tokenizer: Any, conv: list[Message], template: str) -> tuple[list[int], list[int]]:
    """Token ids and the assistant-token mask of one conversation (rendered with the tool schema)."""
    enc = tokenizer.apply_chat_template(
        conv,
        tools=[tool_schema()],
        chat_template=template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids = list(enc["input_ids"])
    mask = list(enc["assistant_masks"])
    return ids, mask


def sft_warmup(
    model: Any,
    tokenizer: Any,
    convs: Sequence[list[Message]],
    *,
    steps: int,
    lr: float = 1e-4,
    batch_size: int = 4,
    seed: int = 0,
    max_length: int = 2048,
    on_step: Callable[[int, float], None] | None = None,
    checkpointing: bool = True,
) -> list[float]:
    """``steps`` AdamW updates on assistant tokens of ``convs``; returns the loss per step.

    ``checkpointing``: recompute each layer's activations in the backward pass instead of keeping
    them (tool results make conversations long, and without it attention and MLP activations of
    every layer are alive at once); switched off again afterwards unless it was already on.
    """
    if not convs or steps <= 0:
        return []
    turn_on = checkpointing and not _checkpointing(model)
    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    if turn_on:
        _set_checkpointing(model, True)
        # no KV cache in a training forward pass (transformers would say so on stderr)
        if config is not None and use_cache:
            config.use_cache = False
    try:
        return _sft_loop(model, tokenizer, convs, steps, lr, batch_size, seed, max_length, on_step)
    finally:
        if turn_on:
            _set_checkpointing(model, False)
            if config is not None and use_cache:
                config.use_cache = use_cache


def _checkpointing(model: Any) -> bool:
    # transformers 5.x renamed gradient_* to activation_* (the old names warn); accept both.
    new = hasattr(model, "activation_checkpointing_enable")
    return bool(getattr(model, "is_activation_checkpointing" if new else "is_gradient_checkpointing", False))


def _set_checkpointing(model: Any, on: bool) -> None:
    new = hasattr(model, "activation_checkpointing_enable")
    if on and new:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif new:
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


def _sft_loop(
    model: Any,
    tokenizer: Any,
    convs: Sequence[list[Message]],
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    max_length: int,
    on_step: Callable[[int, float], None] | None,
) -> list[float]:
    import torch

    template = training_template(tokenizer)
    data = [encode(tokenizer, c, template) for c in convs]
    data = [(ids[:max_length], m[:max_length]) for ids, m in data if any(m)]
    if not data:
        raise InputError("SFT warm-up: no trajectory has assistant tokens to learn from")
    rng = random.Random(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.train()
    losses: list[float] = []
    order: list[int] = []
    for step in range(steps):
        batch = []
        for _ in range(min(batch_size, len(data))):
            if not order:
                order = list(range(len(data)))
                rng.shuffle(order)
            batch.append(data[order.pop()])
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for i, (ids, m) in enumerate(batch):
            t = torch.tensor(ids)
            input_ids[i, : len(ids)] = t
            attn[i, : len(ids)] = 1
            labels[i, : len(ids)] = torch.where(torch.tensor(m, dtype=torch.bool), t, torch.tensor(-100))
        # Only assistant tokens are trained: project just those positions onto the vocabulary
        # (logits at position t predict token t+1). With a 49k vocabulary and long tool results
        # this is ~20x cheaper than full-sequence logits.
        target = labels[:, 1:]
        keep = (target != -100).any(dim=0).nonzero().flatten()
        logits = model(
            input_ids=input_ids.to(device), attention_mask=attn.to(device), logits_to_keep=keep.to(device)
        ).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            target[:, keep].reshape(-1).to(device),
            ignore_index=-100,
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        value = float(loss.detach())
        losses.append(value if math.isfinite(value) else float("nan"))
        if on_step is not None:
            on_step(step + 1, value)
    # Free the last gradients (a model-sized float32 copy) before RL builds its own optimizer;
    # the AdamW state (two more copies) goes with ``opt`` when this function returns.
    opt.zero_grad(set_to_none=True)
    model.eval()
    return losses
