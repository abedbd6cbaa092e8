"""``build_llm(cfg)``: pick the backend by name, import it lazily, wrap it in the call cache.

Backends import their heavy dependencies (``openai``, ``llama_cpp``) only when chosen, so
``import sagegen`` stays light and a missing optional extra is reported as a config problem.
"""

from __future__ import annotations

import json
from pathlib import Path

from sagegen.config import LLMConfig
from sagegen.errors import ConfigError
from sagegen.llm.base import LLM


def build_llm(cfg: LLMConfig) -> LLM:
    """The configured backend; wrapped in ``CachedLLM`` at ``cfg.cache_path`` when ``cfg.cache``.

    A scripted queue or response file is never cached: it exists to test control flow, and
    replaying its answers from a database would hide the very calls a test counts. A named
    fixture (``llm.model=fixture:sage``) stands in for a real backend on the command line, so it
    is cached like one: that is how a resumed run is shown to repeat no completed call.
    """
    llm: LLM
    if cfg.backend == "openai":
        from sagegen.llm.openai_backend import OpenAIBackend

        llm = OpenAIBackend(cfg)
    elif cfg.backend == "llamacpp":
        from sagegen.llm.llamacpp import LlamaCppBackend

        llm = LlamaCppBackend(cfg)
    elif cfg.backend == "transformers":
        from sagegen.llm.transformers_backend import TransformersBackend

        llm = TransformersBackend(cfg)
    elif cfg.backend == "scripted":
        from sagegen.llm.scripted import FIXTURE_PREFIX

        if not (cfg.model or "").startswith(FIXTURE_PREFIX):
            return _scripted(cfg)
        llm = _scripted(cfg)
    else:  # pragma: no cover - the config's Literal already refuses other names
        raise ConfigError(f"llm.backend: unknown backend {cfg.backend!r}")
    if cfg.cache:
        from sagegen.llm.cache import CachedLLM

        llm = CachedLLM(llm, cfg.cache_path)
    return llm


def _scripted(cfg: LLMConfig) -> LLM:
    """``llm.model``: ``fixture:NAME`` (a named deterministic fixture), or a JSON list / JSONL file of
    responses (strings or ``{"text": ...}``) replayed in order."""
    from sagegen.llm.scripted import FIXTURE_PREFIX, ScriptedLLM, fixture_llm

    if not cfg.model:
        return ScriptedLLM()
    if cfg.model.startswith(FIXTURE_PREFIX):
        return fixture_llm(cfg.model)
    path = Path(cfg.model)
    if not path.is_file():
        raise ConfigError(f"llm.model: scripted responses file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    responses: list[str] = []
    try:
        if path.suffix == ".json":
            data = json.loads(text)
            if not isinstance(data, list):
                raise ConfigError(f"{path}: expected a JSON list of response strings")
            responses = [_response(item, path, i + 1) for i, item in enumerate(data)]
        else:
            for lineno, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    responses.append(_response(json.loads(line), path, lineno))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    return ScriptedLLM(responses, name=f"scripted:{path.name}")


def _response(item: object, path: Path, where: int) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        return item["text"]
    raise ConfigError(f'{path}: item {where}: expected a string or {{"text": ...}}')
