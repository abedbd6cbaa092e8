"""``sagegen train``: GRPO with the search tool on one machine (TRL 1.16).

The loop, per step: for ``prompts_per_step`` questions, sample ``num_generations`` rollouts each.
A rollout is a multi-turn conversation in the solver's native tool protocol: the policy writes a
``search`` tool call, TRL runs it on a ``SearchEnv`` (our retriever), appends the passages as a
tool message and lets the policy continue, for at most ``max_turns`` tool rounds; the rollout
ends when the policy answers without a tool call. Each rollout is scored by the outcome reward
(EM on the last ``<answer>``, see ``rewards``), advantages are group-normalised, and the policy
takes one gradient step. Tool-result tokens get ``tool_mask = 0`` and never enter the loss; every
batch is audited on token ids (``masking.audit``) and the counts are logged.

Outputs in ``output_dir``:
- ``train_log.jsonl`` / ``train_log.csv``: one row per step (reward, accuracy, searches per
  episode, loss, masked tokens, leaks, seconds), for plots;
- ``episodes.jsonl``: every scored rollout (question, answer, gold, reward, searches);
- ``sft_log.jsonl``: the warm-up losses, when ``sft_warmup_steps > 0``;
- ``checkpoint-final/``: a Hugging Face folder (model + tokenizer with the tool chat template),
  loadable by ``sagegen eval -s llm.backend=transformers -s llm.model=<dir>``;
- ``summary.json``: the figures of the run.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sagegen.config import Config
from sagegen.errors import ConfigError
from sagegen.retrieval.base import Retriever
from sagegen.train.masking import MaskAudit, audit
from sagegen.train.rewards import EpisodeLog, format_reward, make_outcome_reward

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class TrainResult:
    output_dir: Path
    checkpoint: Path
    steps: list[dict[str, Any]] = field(default_factory=list)
    sft_losses: list[float] = field(default_factory=list)
    mask: MaskAudit = field(default_factory=MaskAudit)
    #: Sum over trainable tensors of max |after - before| (> 0 means the weights really moved).
    param_change: float = 0.0
    seconds: float = 0.0
    #: Per rollout of the last batch: completion ids, loss mask and the tool results (for tests).
    last_rollouts: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        rewards = [s["reward"] for s in self.steps if s.get("reward") is not None]
        return {
            "output_dir": str(self.output_dir),
            "checkpoint": str(self.checkpoint),
            "steps": len(self.steps),
            "reward_first": rewards[0] if rewards else None,
            "reward_last": rewards[-1] if rewards else None,
            "reward_mean": sum(rewards) / len(rewards) if rewards else None,
            "sft_loss_first": self.sft_losses[0] if self.sft_losses else None,
            "sft_loss_last": self.sft_losses[-1] if self.sft_losses else None,
            "mask": asdict(self.mask),
            "param_change": self.param_change,
            "seconds": round(self.seconds, 1),
        }


def _trainer_class() -> type:
    """GRPOTrainer plus a token-id audit of the loss mask on every generated batch."""
    from trl import GRPOTrainer

    class SearchGRPOTrainer(GRPOTrainer):  # type: ignore[misc, valid-type]
        mask_audit: MaskAudit
        last_rollouts: list[dict[str, Any]]

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
            out = super()._generate_and_score_completions(inputs)
            envs = self.environments or []
            results = [list(getattr(e, "results", [])) for e in envs] or [[] for _ in inputs]
            cmask = out["completion_mask"].cpu()
            loss_mask = cmask * out["tool_mask"].cpu() if "tool_mask" in out else cmask
            ids_rows, mask_rows = [], []
            for ids, cm, lm in zip(out["completion_ids"].cpu(), cmask, loss_mask, strict=True):
                keep = cm.bool()
                ids_rows.append(ids[keep].tolist())
                mask_rows.append(lm[keep].tolist())
            report = audit(self.processing_class, ids_rows, mask_rows, results)
            if not hasattr(self, "mask_audit"):
                self.mask_audit = MaskAudit()
            self.mask_audit.add(report)
            self._last_batch_audit = report
            self.last_rollouts = [
                {"completion_ids": i, "loss_mask": m, "tool_results": r}
                for i, m, r in zip(ids_rows, mask_rows, results, strict=True)
            ]
            return out

    return SearchGRPOTrainer


def _step_logger(
    out_dir: Path,
    episodes: EpisodeLog,
    trainer_ref: dict[str, Any],
    progress: Progress | None,
    rows: list[dict[str, Any]],
) -> Any:
    from transformers import TrainerCallback

    jsonl = (out_dir / "train_log.jsonl").open("a", encoding="utf-8")
    ep_file = (out_dir / "episodes.jsonl").open("a", encoding="utf-8")
    t0 = time.perf_counter()

    class StepLogger(TrainerCallback):  # type: ignore[misc]
        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
        ) -> None:
            logs = logs or {}
            if "loss" not in logs and "reward" not in logs:
                return  # the end-of-training summary log
            eps = episodes.drain()
            for e in eps:
                ep_file.write(json.dumps(asdict(e)) + "\n")
            ep_file.flush()
            trainer = trainer_ref.get("trainer")
            batch = getattr(trainer, "_last_batch_audit", None) or MaskAudit()
            n = len(eps) or 1
            row = {
                "step": state.global_step,
                "reward": logs.get("reward"),
                "reward_std": logs.get("reward_std"),
                "accuracy": sum(e.correct for e in eps) / n if eps else None,
                "searches_per_episode": sum(e.searches for e in eps) / n if eps else None,
                "answered": sum(e.answer is not None for e in eps) / n if eps else None,
                "format_ok": sum(e.formatted for e in eps) / n if eps else None,
                "loss": logs.get("loss"),
                "tool_calls_per_episode": logs.get("tools/call_frequency"),
                "tool_failure_rate": logs.get("tools/failure_frequency"),
                "completion_tokens": logs.get("completions/mean_length"),
                "masked_tool_tokens": batch.masked_tokens,
                "trained_tokens": batch.trained_tokens,
                "tool_results_checked": batch.tool_results,
                "leaked_tool_results": batch.leaked_results,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            rows.append(row)
            jsonl.write(json.dumps(row) + "\n")
            jsonl.flush()
            if progress:

                def f(v: Any) -> str:
                    return "-" if v is None else f"{v:.3f}"

                progress(
                    f"step {row['step']}: reward {f(row['reward'])} acc {f(row['accuracy'])} "
                    f"searches/ep {f(row['searches_per_episode'])} loss {f(row['loss'])} "
                    f"masked {row['masked_tool_tokens']} leaks {row['leaked_tool_results']} "
                    f"({row['seconds']}s)"
                )

        def on_train_end(self, *a: Any, **kw: Any) -> None:
            self.close()

        def close(self) -> None:
            jsonl.close()
            ep_file.close()

    return StepLogger()


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _build_retriever(cfg: Config) -> Retriever:
    try:
        from sagegen.retrieval.factory import build_retriever
    except ImportError as e:  # pragma: no cover - the retrieval team's module
        raise ConfigError(f"retrieval factory unavailable: {e}") from e
    return build_retriever(cfg)


def _judge_llm(cfg: Config) -> Any:
    from sagegen.llm.factory import build_llm

    return build_llm(cfg.judge_llm or cfg.llm)


def _peft_config(cfg: Config) -> Any:
    if not cfg.train.lora.enabled:
        return None
    from peft import LoraConfig

    lc = cfg.train.lora
    return LoraConfig(
        r=lc.r,
        lora_alpha=lc.alpha,
        lora_dropout=lc.dropout,
        target_modules=lc.target_modules,
        task_type="CAUSAL_LM",
    )


def _snapshot(model: Any) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _change(model: Any, before: dict[str, Any]) -> float:
    total = 0.0
    params = dict(model.named_parameters())
    for n, old in before.items():
        p = params.get(n)
        if p is None:  # peft wraps names; match by suffix
            cands = [q for k, q in params.items() if k.endswith(n)]
            p = cands[0] if cands else None
        if p is not None and p.shape == old.shape:
            total += float((p.detach().to(old.device) - old).abs().max())
    return total


def train(
    cfg: Config,
    data: str | Path,
    *,
    output_dir: str | Path | None = None,
    retriever: Retriever | None = None,
    progress: Progress | None = None,
    model_and_tokenizer: tuple[Any, Any] | None = None,
) -> TrainResult:
    """Run SFT warm-up (optional) and GRPO with the search tool; see the module docstring."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    t_start = time.perf_counter()
    tc = cfg.train
    if tc.sft_data and tc.sft_warmup_steps <= 0:
        # Without this the file would be silently ignored (the warm-up only runs for steps > 0).
        raise ConfigError(
            f"train.sft_data={tc.sft_data} is set but train.sft_warmup_steps is 0: "
            "pass --sft-warmup N (or -s train.sft_warmup_steps=N) to warm up on it"
        )
    out = Path(output_dir or tc.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train_log.jsonl", "episodes.jsonl"):  # a rerun starts a fresh log
        (out / name).unlink(missing_ok=True)
    (out / "config.yaml").write_text(cfg.dump(), encoding="utf-8")

    from sagegen.train.data import load_rows

    rows = load_rows(data, max_searches=cfg.solver.max_searches, limit=tc.limit)
    say = progress or (lambda s: None)
    say(f"{len(rows)} training rows from {data}")

    import torch
    from datasets import Dataset
    from trl import GRPOConfig

    from sagegen.hf_models import load_policy
    from sagegen.train.tools import env_factory

    torch.manual_seed(tc.seed)
    if not torch.cuda.is_available():
        # Measured on 2 shared cores: 2 torch threads generate ~25x slower than 1 (they wait on each other).
        torch.set_num_threads(tc.threads or max(1, (os.cpu_count() or 2) // 2))
    if retriever is None:
        retriever = _build_retriever(cfg)
    if model_and_tokenizer is None:
        say(f"loading policy {tc.model}")
        model, tok = load_policy(tc.model, cache_dir=tc.model_cache_dir, seed=tc.seed, dtype=tc.dtype)
    else:
        model, tok = model_and_tokenizer
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        model = model.to("cuda")
    topk = cfg.solver.topk or cfg.retrieval.topk

    peft_config = _peft_config(cfg)
    if peft_config is not None and tc.sft_warmup_steps > 0:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)  # the warm-up trains the same adapter RL continues
        peft_config = None

    result = TrainResult(output_dir=out, checkpoint=out / "checkpoint-final")

    # -- SFT warm-up ---------------------------------------------------------------------
    if tc.sft_warmup_steps > 0:
        from sagegen.train.sft import build_warmup, load_sft_file, sft_warmup

        if tc.sft_data:
            convs = load_sft_file(tc.sft_data, max_searches=cfg.solver.max_searches)
            say(f"SFT warm-up on {len(convs)} trajectories from {tc.sft_data}")
        else:
            convs = build_warmup(
                rows,
                retriever,
                topk=topk,
                passage_chars=cfg.solver.passage_chars,
                max_searches=cfg.solver.max_searches,
            )
            say(f"SFT warm-up on {len(convs)} trajectories built from the data (live searches)")
        sft_log = (out / "sft_log.jsonl").open("w", encoding="utf-8")

        def on_sft(step: int, loss: float) -> None:
            sft_log.write(json.dumps({"step": step, "loss": loss}) + "\n")
            if step == 1 or step % 10 == 0 or step == tc.sft_warmup_steps:
                say(f"sft step {step}/{tc.sft_warmup_steps}: loss {loss:.4f}")

        try:
            result.sft_losses = sft_warmup(
                model,
                tok,
                convs,
                steps=tc.sft_warmup_steps,
                lr=tc.sft_learning_rate,
                batch_size=tc.sft_batch_size,
                seed=tc.seed,
                on_step=on_sft,
            )
        finally:
            sft_log.close()

    # -- GRPO ----------------------------------------------------------------------------
    episodes = EpisodeLog()
    judge = _judge_llm(cfg) if tc.reward == "llm" else None
    reward_funcs: list[Any] = [
        make_outcome_reward(tc.reward, log=episodes, judge_llm=judge, judge_cfg=cfg.judge)
    ]
    weights = [1.0]
    if tc.format_reward > 0:
        reward_funcs.append(format_reward)
        weights.append(tc.format_reward)

    bf16 = tc.dtype == "bfloat16" and use_cuda
    args = GRPOConfig(
        output_dir=str(out / "trainer"),
        max_steps=max(tc.steps, 1),
        learning_rate=tc.learning_rate,
        per_device_train_batch_size=tc.prompts_per_step * tc.num_generations,
        gradient_accumulation_steps=1,
        num_generations=tc.num_generations,
        temperature=tc.temperature,
        max_completion_length=tc.max_completion_length,
        max_tool_calling_iterations=tc.max_turns,
        beta=tc.beta,
        reward_weights=weights,
        logging_steps=1,
        save_strategy="steps" if tc.save_steps else "no",
        save_steps=tc.save_steps or 500,
        report_to=[],
        seed=tc.seed,
        data_seed=tc.seed,
        bf16=bf16,
        use_cpu=not use_cuda,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer_ref: dict[str, Any] = {}
    callback = _step_logger(out, episodes, trainer_ref, progress, result.steps)
    trainer_cls = _trainer_class()
    trainer = trainer_cls(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        environment_factory=env_factory(
            retriever, topk=topk, max_searches=cfg.solver.max_searches, passage_chars=cfg.solver.passage_chars
        ),
        peft_config=peft_config,
        callbacks=[callback],
    )
    trainer_ref["trainer"] = trainer
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # our StepLogger prints one readable line per step
    before = _snapshot(trainer.model)
    try:
        if tc.steps > 0:
            say(
                f"GRPO: {tc.steps} steps x {tc.prompts_per_step} questions x {tc.num_generations} rollouts "
                f"(max {tc.max_turns} tool turns, {tc.max_completion_length} tokens)"
            )
            trainer.train()
    finally:
        callback.close()  # idempotent: file.close() twice is fine
    result.param_change = _change(trainer.model, before)
    result.mask = getattr(trainer, "mask_audit", MaskAudit())
    result.last_rollouts = getattr(trainer, "last_rollouts", [])
    _write_csv(out / "train_log.csv", result.steps)

    # -- checkpoint ----------------------------------------------------------------------
    final = trainer.model
    if hasattr(final, "merge_and_unload") and cfg.train.lora.merge:
        final = final.merge_and_unload()
    final.save_pretrained(result.checkpoint)
    tok.save_pretrained(result.checkpoint)
    result.seconds = time.perf_counter() - t_start
    meta = {"base_model": tc.model, "data": str(data), "protocol": "tools", **result.summary()}
    (result.checkpoint / "sagegen_train.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(result.summary(), indent=2), encoding="utf-8")
    say(f"checkpoint: {result.checkpoint}")
    return result
