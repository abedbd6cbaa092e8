"""Token ports for ``solver.prompt_set=searchr1``: the backends that continue token ids.

Search-R1's rollout concatenates separately tokenized pieces (``agents.searchr1``), so the model
must be given token ids, not text. Two backends can take them:

* ``llm.backend=transformers``: the in-process model (``model.generate`` on the ids), the same
  loaded model and sampling settings as the chat backend;
* ``llm.backend=openai`` against a vLLM or SGLang server: ``POST {base_url}/completions`` with
  ``prompt`` as the list of ids (both servers accept token ids there) and ``skip_special_tokens``;
  the tokenizer is loaded from ``llm.model`` (a Hugging Face id or folder, as vLLM serves it).

``with_token_port`` wraps the chat LLM: every other call (a judge sharing it, accounting) still goes
to the wrapped backend; ``complete_ids`` and ``tokenizer`` are what ``solve_searchr1`` needs.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from sagegen.config import LLMConfig
from sagegen.errors import ConfigError, LLMError
from sagegen.records import Completion


class _Port:
    def __init__(self, llm: Any, cfg: LLMConfig):
        self._llm, self._cfg = llm, cfg
        self._tok: Any = None

    def __getattr__(self, name: str) -> Any:  # name, complete, cache_identity, ... of the chat backend
        return getattr(self._llm, name)


class _TransformersPort(_Port):
    def _loaded(self) -> tuple[Any, Any, Any]:
        from sagegen.llm.transformers_backend import _load

        return _load(str(self._cfg.model))

    @property
    def tokenizer(self) -> Any:
        return self._loaded()[1]

    async def complete_ids(
        self, ids: list[int], *, max_tokens: int, temperature: float, seed: int | None = None
    ) -> Completion:
        t0 = time.monotonic()
        model, tok, lock = await asyncio.to_thread(self._loaded)
        new = await asyncio.to_thread(self._generate, model, tok, lock, ids, max_tokens, temperature, seed)
        text = tok.decode(new, skip_special_tokens=True)
        return Completion(
            text=text,
            model=str(self._cfg.model),
            prompt_tokens=len(ids),
            completion_tokens=len(new),
            seconds=time.monotonic() - t0,
            finish_reason="length" if len(new) >= max_tokens else "stop",
        )

    @staticmethod
    def _generate(
        model: Any, tok: Any, lock: Any, ids: list[int], max_tokens: int, temperature: float, seed: int | None
    ) -> list[int]:
        import torch

        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": tok.pad_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with lock, torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            inp = torch.tensor([ids], device=model.device)
            out = model.generate(inp, attention_mask=torch.ones_like(inp), **kwargs)
        return [int(t) for t in out[0, len(ids) :].tolist()]


class _CompletionsPort(_Port):
    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            try:
                from transformers import AutoTokenizer
            except ImportError as e:
                raise ConfigError(
                    f"solver.prompt_set=searchr1 needs transformers for the tokenizer ({e})"
                ) from None
            self._tok = AutoTokenizer.from_pretrained(str(self._cfg.model))
        return self._tok

    def _url(self) -> str:
        base = self._cfg.base_url
        first = base[0] if isinstance(base, list) else base
        if not first:
            raise ConfigError("llm.base_url: solver.prompt_set=searchr1 needs the vLLM/SGLang server's URL")
        return first.rstrip("/") + "/completions"

    async def complete_ids(
        self, ids: list[int], *, max_tokens: int, temperature: float, seed: int | None = None
    ) -> Completion:
        import httpx

        body: dict[str, Any] = {
            "model": self._cfg.model,
            "prompt": list(ids),
            "max_tokens": max_tokens,
            "temperature": temperature,
            "skip_special_tokens": True,
        }
        if seed is not None and self._cfg.send_seed:
            body["seed"] = seed
        key = os.environ.get(self._cfg.api_key_env or "", "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        t0 = time.monotonic()
        async with httpx.AsyncClient(timeout=self._cfg.timeout) as client:
            try:
                r = await client.post(self._url(), json=body, headers=headers)
            except httpx.HTTPError as e:
                raise LLMError(f"{self._url()}: {type(e).__name__}: {e}") from None
        if r.status_code != 200:
            raise LLMError(f"{self._url()}: HTTP {r.status_code}: {r.text[:300]}")
        data = r.json()
        choice = (data.get("choices") or [{}])[0]
        usage = data.get("usage") or {}
        return Completion(
            text=str(choice.get("text") or ""),
            model=str(data.get("model") or self._cfg.model),
            prompt_tokens=int(usage.get("prompt_tokens") or len(ids)),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=choice.get("finish_reason"),
            seconds=time.monotonic() - t0,
        )


def with_token_port(llm: Any, cfg: LLMConfig) -> Any:
    """``llm`` plus ``complete_ids``/``tokenizer`` for ``cfg.backend``; ConfigError for a backend without."""
    if cfg.backend == "transformers":
        return _TransformersPort(llm, cfg)
    if cfg.backend == "openai":
        return _CompletionsPort(llm, cfg)
    raise ConfigError(
        f"solver.prompt_set=searchr1 continues token ids: use llm.backend=transformers (a local checkpoint) "
        f"or llm.backend=openai against a vLLM/SGLang server; llm.backend={cfg.backend} cannot"
    )
