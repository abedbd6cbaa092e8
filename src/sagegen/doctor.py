"""``sagegen doctor``: what each role's model and the retriever are like, before money is spent.

Two parts. :func:`preflight` is cheap (one ``GET /models`` per endpoint, no completion): ``generate``,
``eval`` and ``train`` run it before they build an index or pay for a call, so a dead server or a
refused key fails in seconds with one line. :func:`diagnose` is the whole check ``sagegen doctor``
prints: per role, the endpoint and the model it serves, then two tiny completions (no stop strings,
then a stop string on the wire) that show whether the model thinks, where its thinking comes back, whether
a stop fires inside it, which parameters the server refuses, and whether it follows the tag protocol;
last, the settings sagegen will use with it (docs/models.md).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from sagegen.config import Config, LLMConfig
from sagegen.errors import ConfigError, scrub

#: Seconds a pre-flight probe waits for an endpoint (a live server answers ``/models`` in milliseconds).
PROBE_TIMEOUT = 10.0


#: The setting that caps each role's replies (the pipeline's roles, sagegen.loop.pipeline).
CAP_SETTING = {
    "generator": "generator.max_turn_tokens",
    "solver": "solver.max_turn_tokens",
    "judge": "judge.max_tokens",
    "ambiguity": "judge.max_tokens",
}


def cap_advice(replies: dict[str, dict[str, int]], cfg: Config | None = None) -> list[str]:
    """One line per role whose replies were cut at the cap or came back empty: the share, and the
    setting to raise (with its value when the config is at hand). Empty when nothing was cut."""
    out = []
    for role, r in replies.items():
        if not r.get("calls") or not (r.get("cut") or r.get("empty")):
            continue
        setting = CAP_SETTING.get(role.rstrip("0123456789"), "the role's token cap")
        value = _setting_value(cfg, setting) if cfg is not None else None
        share = 100 * r["cut"] / r["calls"]
        out.append(
            f"{role}: {r['cut']} of {r['calls']} calls ({share:.0f}%) cut at the token cap, "
            f"{r['empty']} with no answer"
            + (f"; {r['thinking']} thought" if r.get("thinking") else "")
            + f"; raise {setting}"
            + (f" (now {value})" if value is not None else "")
        )
    return out


def _setting_value(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    return obj


def role_llms(cfg: Config) -> dict[str, LLMConfig]:
    """Each role's model config (the judge only when an LLM judges)."""
    roles = {"generator": cfg.llm}
    for i, c in enumerate(cfg.solver_llms or [cfg.solver_llm or cfg.llm]):
        roles["solver" if i == 0 else f"solver{i + 1}"] = c
    if cfg.judge.method == "llm":
        roles["judge"] = cfg.judge_llm or cfg.llm
    return roles


def _endpoints(c: LLMConfig) -> list[str]:
    import os

    from sagegen.llm.openai_backend import DEFAULT_BASE_URL

    if isinstance(c.base_url, list):
        return [u.rstrip("/") for u in c.base_url]
    return [(c.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")]


def probe_endpoint(c: LLMConfig, url: str) -> list[str]:
    """``GET {url}/models``: the model ids served. Raises ``ConfigError`` (one line) when the endpoint is
    unreachable or refuses the key; any other answer (404 included) counts as reachable."""
    import os

    import httpx

    from sagegen.llm.openai_backend import _Endpoint, endpoint_label

    _Endpoint(url)  # a malformed URL: the backend's own one-line refusal (its password masked)
    key = os.environ.get(c.api_key_env) if c.api_key_env else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    where = endpoint_label(url)
    try:
        resp = httpx.get(f"{url}/models", headers=headers, timeout=min(PROBE_TIMEOUT, c.timeout))
    except httpx.TimeoutException:
        raise ConfigError(
            f"llm server {where} did not answer within {min(PROBE_TIMEOUT, c.timeout):g}s "
            f"(model {c.model}): is it up? (llm.base_url)"
        ) from None
    except httpx.HTTPError as e:
        reason = str(e).split("]")[-1].strip() or type(e).__name__
        raise ConfigError(
            f"llm server {where} is not reachable ({reason}); start it or fix llm.base_url (model {c.model})"
        ) from None
    if resp.status_code in (401, 403):
        raise ConfigError(
            scrub(
                f"llm server {where} refused the API key from ${c.api_key_env} "
                f"(HTTP {resp.status_code}); set a valid key"
            )
        )
    try:
        data = resp.json().get("data") if resp.status_code == 200 else None
    except ValueError:
        data = None
    return [str(m.get("id")) for m in data or () if isinstance(m, dict)]


def preflight(cfg: Config) -> None:
    """The cheap part: every OpenAI-compatible endpoint of every role answers, and takes the key."""
    from sagegen.llm.openai_backend import _Endpoint

    todo: dict[tuple[str, str | None], LLMConfig] = {}
    for c in role_llms(cfg).values():
        if c.backend == "openai":
            for url in _endpoints(c):
                _Endpoint(url)  # every URL well-formed before any is probed (a malformed one says so)
                todo.setdefault((url, c.api_key_env), c)
    for (url, _), c in todo.items():
        probe_endpoint(c, url)


@dataclass
class RoleReport:
    role: str
    backend: str
    model: str
    lines: list[tuple[str, str]] = field(default_factory=list)  # (what, finding)
    ok: bool = True

    def add(self, what: str, finding: str) -> None:
        self.lines.append((what, finding))


PROBE_SYSTEM = (
    "Answer the question. Write your final answer, and nothing else, between <answer> and "
    "</answer>, e.g. <answer> 12 </answer>."
)
PROBE_USER = "What is 17 + 25?"


async def _diagnose_llm(role: str, c: LLMConfig, max_tokens: int) -> RoleReport:
    from sagegen.agents import tags
    from sagegen.llm.factory import build_llm

    rep = RoleReport(role, c.backend, c.model or "(embedded SmolLM2-135M)")
    if c.backend == "openai":
        for url in _endpoints(c):
            try:
                served = probe_endpoint(c, url)
            except ConfigError as e:
                rep.add("endpoint", str(e))
                rep.ok = False
                return rep
            listed = (
                "listed"
                if c.model in served
                else (f"NOT listed (serves {', '.join(served[:5])})" if served else "no model list")
            )
            rep.add("endpoint", f"{url} reachable; model {c.model} {listed}")
    llm: Any = build_llm(c.model_copy(update={"cache": False}))  # the backend itself: no cache wrapper
    msgs = [{"role": "system", "content": PROBE_SYSTEM}, {"role": "user", "content": PROBE_USER}]
    try:
        t0 = time.monotonic()
        first = await llm.complete(msgs, max_tokens=max_tokens, temperature=0.0, seed=1)
        secs = time.monotonic() - t0
        answer = tags.first(first.text, "answer", allow_unclosed=True)
        where = _thinking_where(first)
        rep.add(
            "reply",
            f"{secs:.1f}s, finish_reason={first.finish_reason}, {first.completion_tokens} "
            f"completion tokens"
            + (f" ({first.reasoning_tokens} reasoning)" if first.reasoning_tokens else ""),
        )
        rep.add("thinking", where)
        rep.add(
            "tag protocol",
            f"follows it (<answer> {answer} </answer>)"
            if answer
            else f"did not write <answer>: {first.text.strip()[:80]!r}",
        )
        if first.finish_reason == "length":
            rep.add("cap", f"the reply was cut at {max_tokens} tokens: raise the role's token cap")
        thinks = bool(first.reasoning or first.reasoning_tokens)
        if thinks and c.backend == "openai":
            # The same call with the stop on the wire: does the server match it inside the thinking?
            forced = c.model_copy(update={"wire_stops": "on", "cache": False})
            probe: Any = build_llm(forced)
            # What the first probe learned (refused parameters) holds for this one too.
            probe.learn_from(llm)
            second = await probe.complete(
                msgs, max_tokens=max_tokens, temperature=0.0, seed=2, stop=["</answer>"]
            )
            cut = any("inside the model's thinking" in n for n in getattr(probe, "notes", []))
            rep.add(
                "stops in thoughts",
                "a wire stop fired inside the thinking: sagegen keeps stops off the wire for this model"
                if cut
                else "a wire stop did not cut the thinking here; sagegen "
                "still applies stops to the answer text only once a model thinks",
            )
            rep.add("stop probe answer", repr(second.text.strip()[:60]))
            await _aclose(probe)
            for n in probe.notes:  # already logged by the probe's backend
                if "inside the model's thinking" not in n and n not in llm.notes:
                    llm.notes.append(n)
        if c.backend == "openai":
            rep.add("refused parameters", "; ".join(llm.notes) or "none")
            rep.add("settings", llm.request_rules())
    except Exception as e:  # a probe's failure is its finding
        rep.add("call", scrub(str(e))[:300])
        rep.ok = False
    finally:
        await _aclose(llm)
    return rep


def _thinking_where(c: Any) -> str:
    if c.reasoning_tokens and not c.reasoning:
        return f"yes, hidden ({c.reasoning_tokens} reasoning tokens counted)"
    if c.reasoning:
        return f"yes, {len(c.reasoning)} characters of reasoning, kept out of the answer" + (
            f" ({c.reasoning_tokens} reasoning tokens counted)" if c.reasoning_tokens else ""
        )
    return "none seen"


async def _aclose(llm: Any) -> None:
    close = getattr(llm, "aclose", None)
    if callable(close):
        await close()


def diagnose(cfg: Config, *, max_tokens: int = 2048) -> list[RoleReport]:
    """The whole check, one report per distinct model (roles sharing one model are probed once)."""

    async def run() -> list[RoleReport]:
        out: list[RoleReport] = []
        done: dict[str, RoleReport] = {}
        for role, c in role_llms(cfg).items():
            key = c.model_dump_json()
            if key in done:
                done[key].role += f", {role}"
                continue
            done[key] = await _diagnose_llm(role, c, max_tokens)
            out.append(done[key])
        return out

    return asyncio.run(run())


def diagnose_retriever(cfg: Config) -> tuple[bool, str]:
    """One search through the configured retriever (an HTTP one: its server)."""
    from sagegen.retrieval.factory import build_retriever

    try:
        t0 = time.monotonic()
        retriever = build_retriever(cfg)
        built = time.monotonic() - t0
        t1 = time.monotonic()
        hits = retriever.search(["history of science"], cfg.retrieval.topk)[0]
        return bool(hits), (
            f"{cfg.retrieval.kind}: opened in {built:.1f}s; a search returned {len(hits)} "
            f"passages in {(time.monotonic() - t1) * 1000:.0f} ms"
        )
    except Exception as e:
        return False, f"{cfg.retrieval.kind}: {scrub(str(e))[:300]}"
