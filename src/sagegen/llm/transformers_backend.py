"""Hugging Face transformers backend: a local folder such as a ``sagegen train`` checkpoint.

``llm.model`` is anything ``sagegen.llm.hf_models.load_policy`` loads: a Hugging Face folder,
``smollm2`` (converted once from the GGUF), ``tiny-llama`` (random weights, for tests) or a
``.gguf`` file. The tokenizer's chat template renders the messages (the tool-capable Qwen2.5
template is installed when the model's own cannot render tools), so a checkpoint trained on the
native tool protocol is evaluated with exactly the format it was trained on; ``<tool_call>``
blocks in the output come back as ``Completion.tool_calls``.

Needs the ``train`` extra (torch, transformers). The model loads once per process; calls run in a
worker thread, one at a time (generation is already parallel inside torch).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

from sagegen.config import LLMConfig
from sagegen.errors import ConfigError, LLMError
from sagegen.llm.base import LLM, CallOptions, Message, apply_stop
from sagegen.llm.llamacpp import _parse_tool_calls, _plain, trim_messages
from sagegen.records import Completion

_MODELS: dict[str, tuple[Any, Any, threading.Lock]] = {}
_LOAD_LOCK = threading.Lock()


def _load(name: str) -> tuple[Any, Any, threading.Lock]:
    with _LOAD_LOCK:
        if name not in _MODELS:
            try:
                from sagegen.llm.hf_models import load_policy
            except ImportError as e:
                raise ConfigError(
                    f"llm.backend=transformers needs the train extra ({e}): pip install 'sagegen[train]'"
                ) from None
            model, tok = load_policy(name)
            model.eval()
            _MODELS[name] = (model, tok, threading.Lock())
        return _MODELS[name]


class TransformersBackend(LLM):
    """``LLM`` over an in-process transformers causal LM."""

    def __init__(self, cfg: LLMConfig):
        if not cfg.model:
            raise ConfigError(
                "llm.model: the transformers backend needs a model folder (or smollm2 / tiny-llama)"
            )
        self.cfg = cfg
        self.model_name = cfg.model
        self.name = f"transformers:{cfg.model}"
        self._alock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    def cache_identity(self) -> dict[str, Any]:
        from pathlib import Path

        p = Path(self.model_name)
        # A checkpoint folder is retrained in place: its weights' mtime tells versions apart.
        stamp = max((f.stat().st_mtime for f in p.glob("*.safetensors")), default=0) if p.is_dir() else 0
        return {"path": str(p.resolve()) if p.exists() else self.model_name, "mtime": int(stamp)}

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._alock is None or self._alock[0] is not loop:
            self._alock = (loop, asyncio.Lock())
        return self._alock[1]

    async def _complete(self, messages: Sequence[Message], o: CallOptions) -> Completion:
        loaded = await asyncio.to_thread(_load, self.model_name)
        async with self._loop_lock():
            t0 = time.monotonic()
            text, n_prompt, n_new, finish = await asyncio.to_thread(
                self._generate,
                loaded,
                [_plain(m) for m in messages],
                o.max_tokens,
                o.temperature,
                list(o.stop),
                o.seed,
                o.tools,
            )
            seconds = time.monotonic() - t0
        calls: list[dict[str, Any]] = []
        if o.tools:
            calls, text = _parse_tool_calls(text)
            if calls:
                finish = "tool_calls"
        return Completion(
            text=text,
            model=self.model_name,
            prompt_tokens=n_prompt,
            completion_tokens=n_new,
            finish_reason=finish,
            seconds=seconds,
            tool_calls=tuple(calls),
        )

    def _generate(
        self,
        loaded: tuple[Any, Any, threading.Lock],
        msgs: list[dict[str, Any]],
        max_tokens: int,
        temperature: float,
        stops: list[str],
        seed: int | None,
        tools: Sequence[dict[str, Any]] | None,
    ) -> tuple[str, int, int, str]:
        import torch

        model, tok, lock = loaded
        limit = int(getattr(model.config, "max_position_embeddings", 0) or 4096)
        reserve = min(max_tokens, limit // 4)

        def render(ms: list[dict[str, Any]]) -> list[int]:
            try:
                text = tok.apply_chat_template(
                    ms, tools=list(tools) if tools else None, add_generation_prompt=True, tokenize=False
                )
            except Exception as e:  # jinja2 raises many types
                raise LLMError(f"{self.name}: the chat template cannot render these messages: {e}") from None
            return list(tok(text, add_special_tokens=False)["input_ids"])

        ids = render(msgs)
        if len(ids) + reserve > limit:
            smaller = trim_messages(
                msgs, len(ids) + reserve - limit, lambda t: len(tok(t, add_special_tokens=False)["input_ids"])
            )
            ids = render(smaller) if smaller is not None else ids
            if len(ids) + reserve > limit:
                raise LLMError(
                    f"{self.name}: the prompt needs {len(ids)} tokens plus {reserve} to answer, "
                    f"over the model's {limit}; show shorter passages"
                )
        with lock, torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": tok.pad_token_id}
            if temperature > 0:
                kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if stops:
                kwargs.update(stop_strings=stops, tokenizer=tok)
            inp = torch.tensor([ids], device=model.device)
            out = model.generate(inp, attention_mask=torch.ones_like(inp), **kwargs)
        new = out[0, len(ids) :].tolist()
        gen_eos = getattr(model.generation_config, "eos_token_id", None)
        eos = {
            t
            for t in [tok.eos_token_id, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])]
            if isinstance(t, int)
        }
        ended = bool(new) and new[-1] in eos
        raw = tok.decode(new, skip_special_tokens=True)
        text = apply_stop(raw, stops)
        finish = "stop" if ended or text != raw or len(new) < max_tokens else "length"
        return text, len(ids), len(new), finish
