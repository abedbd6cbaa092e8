"""Outcome reward for search-agent RL on sagegen data: verl ``custom_reward_function`` compatible.

Plug it into verl (any version with ``custom_reward_function``)::

    python3 -m verl.trainer.main_ppo ... \\
        custom_reward_function.path=/path/to/sagegen/verdict/reward.py \\
        custom_reward_function.name=compute_score            # or compute_score_f1 / _subem / _format

Extra keyword arguments go through ``+custom_reward_function.reward_kwargs.format_score=0.1`` etc.
``sagegen export --format verl`` also copies this file next to the parquet as ``sagegen_reward.py``.

Why not Search-R1's stock ``qa_em.compute_score_em``:

* Search-R1's reward manager decodes *prompt + response* and its extractor returns ``None`` unless
  there are at least **two** ``<answer>`` tags, because the instruction's example
  ``<answer> Beijing </answer>`` is always the first one. verl's reward managers pass the
  *response alone*, where a correct single answer would then score 0. We take the **last**
  ``<answer>`` of the response and, when handed a prompt+response string, first cut away the
  prompt (after the chat template's assistant marker, or after the instruction's example).
* Search-R1 routes scoring by ``data_source`` (a fixed list: nq, hotpotqa, ...) and raises for
  anything else; this function ignores ``data_source``, so any name works.

The module is deliberately **stdlib-only**: verl imports it by file path on the training cluster,
where sagegen need not be installed. The answer normalisation is the SQuAD/Search-R1 one
(lower-case, drop punctuation and articles, squeeze whitespace), which ``sagegen.verdict.judge`` imports
from here.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import string
import urllib.request
from collections import Counter
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "compute_score",
    "compute_score_f1",
    "compute_score_format",
    "compute_score_judge",
    "compute_score_subem",
    "extract_answer",
    "golden_answers",
    "normalize_answer",
]

_ANSWER_RE = re.compile(r"<\s*answer\s*>(.*?)<\s*/\s*answer\s*>", re.IGNORECASE | re.DOTALL)
_INFO_RE = re.compile(r"<\s*information\s*>.*?(<\s*/\s*information\s*>|$)", re.IGNORECASE | re.DOTALL)
# The instruction's worked example; everything up to its end is prompt, never the model's answer.
_PROMPT_EXAMPLE_RE = re.compile(r"For example,?\s*<answer>[^<]*</answer>\.?", re.IGNORECASE)
# Chat-template markers that start the model's turn (Qwen/ChatML, Llama 3, Mistral-ish).
_ASSISTANT_MARKERS = ("<|im_start|>assistant", "<|start_header_id|>assistant<|end_header_id|>", "[/INST]")
_DROP_PUNCT = str.maketrans("", "", string.punctuation)  # one C pass (a per-character loop was 1.5% of a run)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation and articles, squeeze whitespace.

    The one copy: ``sagegen.verdict.judge`` (EM, F1, the pre-check, dedup) uses this one, so training
    rewards and the pipeline's judgements normalise alike; it lives here because this file must
    run without sagegen installed.
    """
    text = str(text).lower()
    text = text.translate(_DROP_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _response_part(solution_str: str) -> str:
    """Drop a prompt prefix (Search-R1 passes prompt+response) and any retrieved text."""
    text = solution_str
    for marker in _ASSISTANT_MARKERS:
        idx = text.rfind(marker)
        if idx >= 0:
            text = text[idx + len(marker) :]
            break
    else:
        m = _PROMPT_EXAMPLE_RE.search(text)
        if m is not None:
            text = text[m.end() :]
    # Retrieved passages are not the model's words: an <answer> inside them must never score.
    return _INFO_RE.sub(" ", text)


def extract_answer(solution_str: str) -> str | None:
    """The stripped content of the last ``<answer>...</answer>`` the model wrote; ``None`` if none."""
    if not isinstance(solution_str, str):
        return None
    matches = _ANSWER_RE.findall(_response_part(solution_str))
    return matches[-1].strip() if matches else None


def golden_answers(ground_truth: Any) -> list[str]:
    """Accept ``{"target": [...]}`` (Search-R1), a list/tuple/array of answers, or one string/number."""
    if isinstance(ground_truth, dict):
        for key in ("target", "golden_answers", "answers", "answer"):
            if key in ground_truth:
                return golden_answers(ground_truth[key])
        return []
    if ground_truth is None:
        return []
    if isinstance(ground_truth, (str, bytes)):
        return [ground_truth.decode() if isinstance(ground_truth, bytes) else ground_truth]
    if isinstance(ground_truth, Iterable):  # list, tuple, numpy array (what parquet gives back)
        out: list[str] = []
        for g in ground_truth:
            out.extend(golden_answers(g))
        return out
    return [str(ground_truth)]


def _f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if not p or not g:
        return float(p == g)
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def _well_formed(solution_str: str) -> bool:
    """Every think/search/answer tag is balanced and the response ends with its answer."""
    text = _response_part(solution_str)
    for tag in ("think", "search", "answer"):
        opens = len(re.findall(rf"<\s*{tag}\s*>", text, re.IGNORECASE))
        closes = len(re.findall(rf"<\s*/\s*{tag}\s*>", text, re.IGNORECASE))
        if opens != closes:
            return False
    tail = re.sub(r"(<\|[^|]*\|>|</s>|<eos>|\s)+$", "", text)
    return (
        bool(_ANSWER_RE.search(text)) and re.search(r"<\s*/\s*answer\s*>$", tail, re.IGNORECASE) is not None
    )


def compute_score(
    data_source: str | None = None,
    solution_str: str = "",
    ground_truth: Any = None,
    extra_info: dict[str, Any] | None = None,
    *,
    method: str = "em",
    score: float = 1.0,
    format_score: float = 0.0,
    require_format: bool = False,
    f1_threshold: float | None = None,
    **_: Any,
) -> float:
    """Score one response against its golden answers (verl ``custom_reward_function`` signature).

    ``method``: ``em`` (exact match after normalisation, the default), ``subem`` (a golden
    answer is contained in the prediction) or ``f1`` (max token F1; with ``f1_threshold`` it
    becomes 0/1). A response with no ``<answer>`` scores 0. A wrong but parseable answer scores
    ``format_score`` (Search-R1's convention, default 0). With ``require_format`` a response whose
    tags are unbalanced or which does not end with its answer scores 0 whatever it answered.
    Unknown keyword arguments (e.g. Search-R1's ``method='strict'``) are ignored.
    """
    answer = extract_answer(solution_str)
    if answer is None:
        return 0.0
    golds = golden_answers(ground_truth)
    pred = normalize_answer(answer)
    if method in ("em", "strict", "flexible"):  # Search-R1 passes method="strict" meaning EM
        value = float(any(pred == normalize_answer(g) for g in golds))
    elif method == "subem":
        value = float(any(normalize_answer(g) and normalize_answer(g) in pred for g in golds))
    elif method == "f1":
        value = max((_f1(answer, g) for g in golds), default=0.0)
        if f1_threshold is not None:
            value = float(value >= f1_threshold)
    else:
        raise ValueError(f"unknown reward method {method!r}; use 'em', 'subem' or 'f1'")
    if require_format and not _well_formed(solution_str):
        return 0.0
    if value <= 0:
        return float(format_score)
    return float(score) * value


def compute_score_f1(
    data_source: str | None = None,
    solution_str: str = "",
    ground_truth: Any = None,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> float:
    """Token-F1 reward (partial credit), for ``custom_reward_function.name=compute_score_f1``."""
    kwargs.setdefault("method", "f1")
    return compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)


def compute_score_subem(
    data_source: str | None = None,
    solution_str: str = "",
    ground_truth: Any = None,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> float:
    """Substring-EM reward (a golden answer contained in the prediction)."""
    kwargs.setdefault("method", "subem")
    return compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)


def compute_score_format(
    data_source: str | None = None,
    solution_str: str = "",
    ground_truth: Any = None,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> float:
    """EM that also rewards form: 1 for right and well formed, 0.1 for wrong but well formed, else 0."""
    kwargs.setdefault("require_format", True)
    kwargs.setdefault("format_score", 0.1)
    return compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)


# ----------------------------------------------------------------------------- LLM-judge reward

#: Written next to the exported copy of this file by ``sagegen export --format verl``: sagegen's
#: BrowseComp grader prompt (``prompts/judge.j2``) with [[QUESTION]] / [[RESPONSE]] /
#: [[CORRECT_ANSWER]] slots, so the standalone file needs no template engine.
JUDGE_PROMPT_FILE = "sagegen_judge_prompt.txt"
JUDGE_SLOTS = {"question": "[[QUESTION]]", "response": "[[RESPONSE]]", "golden": "[[CORRECT_ANSWER]]"}
# The grader's verdict line, as sagegen.verdict.judge reads it (markdown, quotes, true/false tolerated).
_CORRECT_RE = re.compile(
    r"(?:^|\n|\s)[*_#\s]*correct[*_\s]*[:：][*_\s]*[\"'`\[(]*\s*(yes|no|true|false|correct|incorrect|y|n)\b",
    re.IGNORECASE,
)


def judge_prompt_template() -> str:
    """The grader prompt with slots, rendered from sagegen's ``judge.j2`` (for the exported file)."""
    from sagegen.prompts import render

    return render(
        "judge.j2",
        question=JUDGE_SLOTS["question"],
        response=JUDGE_SLOTS["response"],
        golden=[JUDGE_SLOTS["golden"]],
    )


@cache
def _load_judge_prompt(path: str | None) -> str:
    candidate = Path(path) if path else Path(__file__).with_name(JUDGE_PROMPT_FILE)
    if candidate.is_file():
        return candidate.read_text(encoding="utf-8")
    if path:
        raise FileNotFoundError(f"judge prompt file {path} not found")
    return judge_prompt_template()  # running inside the sagegen package


def parse_verdict(text: str) -> bool | None:
    """``correct: yes/no`` from a grader reply (the last one wins); ``None`` when absent."""
    found = _CORRECT_RE.findall(text or "")
    return found[-1].lower() in ("yes", "true", "correct", "y") if found else None


def compute_score_judge(
    data_source: str | None = None,
    solution_str: str = "",
    ground_truth: Any = None,
    extra_info: dict[str, Any] | None = None,
    *,
    judge_url: str | None = None,
    judge_model: str | None = None,
    api_key_env: str = "SAGEGEN_JUDGE_API_KEY",
    prompt_path: str | None = None,
    timeout: float = 60.0,
    max_tokens: int = 256,
    em_shortcut: bool = True,
    on_error: str = "em",
    **_: Any,
) -> float:
    """Outcome reward from an LLM judge (the paper's choice), via any OpenAI-compatible server.

    ``judge_url`` is the server's base URL (``http://host:8001/v1``; or env ``SAGEGEN_JUDGE_URL``),
    ``judge_model`` the model name (or env ``SAGEGEN_JUDGE_MODEL``), the key comes from the env var
    named by ``api_key_env``. The judge sees the question (``extra_info["question"]``, which our
    parquet carries), the extracted final answer and the golden answers, and must reply
    ``correct: yes/no``. An exact match scores 1 without a call (``em_shortcut``); no ``<answer>``
    scores 0. If the call fails or the reply has no verdict, the score falls back to exact match
    (``on_error="em"``) or the error is raised (``on_error="raise"``).
    """
    answer = extract_answer(solution_str)
    golds = golden_answers(ground_truth)
    if answer is None or not golds:
        return 0.0
    em = compute_score(data_source, solution_str, ground_truth)
    if em_shortcut and em >= 1.0:
        return 1.0
    url = judge_url or os.environ.get("SAGEGEN_JUDGE_URL")
    if not url:
        raise ValueError(
            "compute_score_judge needs judge_url (reward_kwargs) or the SAGEGEN_JUDGE_URL env var"
        )
    question = str((extra_info or {}).get("question") or "")
    prompt = (
        _load_judge_prompt(prompt_path)
        .replace(JUDGE_SLOTS["question"], question)
        .replace(JUDGE_SLOTS["response"], answer)
        .replace(JUDGE_SLOTS["golden"], " OR ".join(golds))
    )
    body = {
        "model": judge_model or os.environ.get("SAGEGEN_JUDGE_MODEL", ""),
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0.0,
        "max_tokens": max_tokens,
    }
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(api_key_env) if api_key_env else None
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(
        url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = json.loads(resp.read().decode("utf-8"))["choices"][0]["message"]["content"]
    # HTTPException: a reply cut short of its Content-Length raises IncompleteRead, not OSError.
    except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError, TypeError):
        if on_error == "raise":
            raise
        return em
    verdict = parse_verdict(text if isinstance(text, str) else "")
    if verdict is None:
        if on_error == "raise":
            raise ValueError(f"judge reply has no 'correct: yes/no': {str(text)[:200]!r}")
        return em
    return 1.0 if verdict else 0.0
