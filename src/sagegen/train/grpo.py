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
- ``train_log.jsonl`` / ``train_log.csv``: one row per optimizer step, counted from 1 (reward,
  accuracy, searches per episode, loss, masked tokens, leaks, ``step_seconds`` = that step's wall
  time, ``elapsed_s`` = since GRPO began), for plots;
- ``episodes.jsonl``: every scored rollout (question, answer, gold, reward, searches), its ``step``
  the train_log step it was trained in;
- ``sft_log.jsonl``: the warm-up losses, when ``sft_warmup_steps > 0``;
- ``checkpoint-final/``: a Hugging Face folder (model + tokenizer with the tool chat template),
  loadable by ``sagegen eval -s llm.backend=transformers -s llm.model=<dir>``;
- ``summary.json``: the figures of the run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sagegen.config import Config
from sagegen.errors import ConfigError, mask_url_credentials
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

    class SearchGRPOTrainer(GRPOTrainer):
        mask_audit: MaskAudit
        last_rollouts: list[dict[str, Any]]

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
            out = super()._generate_and_score_completions(inputs)
            envs: list[object] = self.environments or []
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
    *,
    total: int,
) -> Any:
    """A callback writing one ``train_log`` row per optimizer step, and the rollouts it trained on.

    Steps count from 1 in both files: a rollout's ``step`` is the optimizer step it was trained in
    (the ``train_log`` row it belongs to), not TRL's 0-based ``global_step`` at scoring time.
    """
    from transformers import TrainerCallback

    jsonl = (out_dir / "train_log.jsonl").open("a", encoding="utf-8")
    ep_file = (out_dir / "episodes.jsonl").open("a", encoding="utf-8")
    start = [time.perf_counter()]  # reset when training begins (after the trainer's own setup)
    last = [start[0]]
    every = report_every(total)

    class StepLogger(TrainerCallback):
        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
        ) -> None:
            logs = logs or {}
            if "loss" not in logs and "reward" not in logs:
                return  # the end-of-training summary log
            eps = episodes.drain()
            for e in eps:
                ep_file.write(json.dumps({**asdict(e), "step": state.global_step}) + "\n")
            ep_file.flush()
            trainer = trainer_ref.get("trainer")
            batch = getattr(trainer, "_last_batch_audit", None) or MaskAudit()
            n = len(eps) or 1
            now = time.perf_counter()
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
                # Wall time of this step alone, and since training began (older logs: cumulative "seconds").
                "step_seconds": round(now - last[0], 2),
                "elapsed_s": round(now - start[0], 1),
            }
            last[0] = now
            rows.append(row)
            jsonl.write(json.dumps(row) + "\n")
            jsonl.flush()
            step = row["step"]
            if progress and (step == 1 or step % every == 0 or step >= total):

                def f(v: Any) -> str:
                    return "-" if v is None else f"{v:.3f}"

                progress(
                    f"step {step}/{total}: reward {f(row['reward'])} acc {f(row['accuracy'])} "
                    f"searches/ep {f(row['searches_per_episode'])} loss {f(row['loss'])} "
                    f"masked {row['masked_tool_tokens']} leaks {row['leaked_tool_results']} "
                    f"({row['step_seconds']:.1f}s/step, {timing(step, total, row['elapsed_s'])})"
                )

        def on_train_begin(self, *a: Any, **kw: Any) -> None:
            start[0] = last[0] = time.perf_counter()

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
    out = _fresh_output_dir(cfg, output_dir)
    from sagegen.train.data import load_rows

    rows = load_rows(data, max_searches=cfg.solver.max_searches, limit=tc.limit)
    say = progress or (lambda s: None)
    say(f"{len(rows)} training rows from {data}")

    import torch

    torch.manual_seed(tc.seed)
    if not torch.cuda.is_available():
        # Measured on 2 shared cores: 2 torch threads generate ~25x slower than 1 (they wait on each other).
        torch.set_num_threads(tc.threads or max(1, (os.cpu_count() or 2) // 2))
    if retriever is None:
        retriever = _build_retriever(cfg)
    model, tok, peft_config = _policy(cfg, model_and_tokenizer, say)
    result = TrainResult(output_dir=out, checkpoint=out / "checkpoint-final")
    if tc.sft_warmup_steps > 0:
        result.sft_losses = _sft_stage(cfg, model, tok, rows, retriever, out, say)
    trainer, callback = _grpo_trainer(cfg, model, tok, rows, retriever, peft_config, out, progress, result)
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
    with contextlib.suppress(OSError):  # TRL's own output folder: only intermediate checkpoints go there
        (out / "trainer").rmdir()
    _save_checkpoint(cfg, trainer, tok, data, result, time.perf_counter() - t_start)
    say(f"checkpoint: {result.checkpoint}")
    return result


def _fresh_output_dir(cfg: Config, output_dir: str | Path | None) -> Path:
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
    (out / "config.yaml").write_text(mask_url_credentials(cfg.dump()), encoding="utf-8")
    return out


def _policy(cfg: Config, given: tuple[Any, Any] | None, say: Progress) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, peft config still to apply)``; with a warm-up the adapter is applied here."""
    import torch

    from sagegen.llm.hf_models import load_policy

    tc = cfg.train
    if given is None:
        say(f"loading policy {tc.model}")
        model, tok = load_policy(tc.model, cache_dir=tc.model_cache_dir, seed=tc.seed, dtype=tc.dtype)
    else:
        model, tok = given
    if torch.cuda.is_available():
        model = model.to("cuda")
    peft_config = _peft_config(cfg)
    if peft_config is not None and tc.sft_warmup_steps > 0:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)  # the warm-up trains the same adapter RL continues
        peft_config = None
    return model, tok, peft_config


def report_every(total: int) -> int:
    """Print every step of a short run (up to 20 steps), else about ten lines (and always the last)."""
    return 1 if total <= 20 else math.ceil(total / 10)


def timing(step: int, total: int, elapsed: float) -> str:
    """``12.3s, ~40s left``: elapsed wall time and the remaining time at the mean pace so far."""
    left = elapsed / step * (total - step) if step else 0.0
    return f"{elapsed:.1f}s" + (f", ~{left:.0f}s left" if step < total else "")


def _sft_stage(
    cfg: Config,
    model: Any,
    tok: Any,
    rows: list[dict[str, Any]],
    retriever: Retriever,
    out: Path,
    say: Progress,
) -> list[float]:
    from sagegen.train.sft import build_warmup, load_sft_file, sft_warmup

    tc = cfg.train
    if tc.sft_data:
        convs = load_sft_file(tc.sft_data, max_searches=cfg.solver.max_searches)
        say(f"SFT warm-up on {len(convs)} trajectories from {tc.sft_data}")
    else:
        convs = build_warmup(
            rows,
            retriever,
            topk=cfg.solver.topk,  # retrieval.topk unless the solver sets its own
            passage_chars=cfg.solver.passage_chars,
            max_searches=cfg.solver.max_searches,
        )
        say(f"SFT warm-up on {len(convs)} trajectories built from the data (live searches)")
    total, every, t0 = tc.sft_warmup_steps, report_every(tc.sft_warmup_steps), time.perf_counter()
    with (out / "sft_log.jsonl").open("w", encoding="utf-8") as sft_log:

        def on_sft(step: int, loss: float) -> None:
            sft_log.write(json.dumps({"step": step, "loss": loss}) + "\n")
            sft_log.flush()
            if step == 1 or step % every == 0 or step == total:
                took = timing(step, total, time.perf_counter() - t0)
                say(f"sft step {step}/{total}: loss {loss:.4f} ({took})")

        return sft_warmup(
            model,
            tok,
            convs,
            steps=total,
            lr=tc.sft_learning_rate,
            batch_size=tc.sft_batch_size,
            seed=tc.seed,
            on_step=on_sft,
        )


def _reward_funcs(cfg: Config, episodes: EpisodeLog) -> tuple[list[Any], list[float]]:
    tc = cfg.train
    judge = _judge_llm(cfg) if tc.reward == "llm" else None
    funcs: list[Any] = [make_outcome_reward(tc.reward, log=episodes, judge_llm=judge, judge_cfg=cfg.judge)]
    weights = [1.0]
    if tc.format_reward > 0:
        funcs.append(format_reward)
        weights.append(tc.format_reward)
    return funcs, weights


def _grpo_trainer(
    cfg: Config,
    model: Any,
    tok: Any,
    rows: list[dict[str, Any]],
    retriever: Retriever,
    peft_config: Any,
    out: Path,
    progress: Progress | None,
    result: TrainResult,
) -> tuple[Any, Any]:
    """TRL's GRPO trainer with our step logger (returned too: the caller closes its files)."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback

    from sagegen.train.tools import env_factory

    tc = cfg.train
    episodes = EpisodeLog()
    reward_funcs, weights = _reward_funcs(cfg, episodes)
    trainer_ref: dict[str, Any] = {}
    callback = _step_logger(out, episodes, trainer_ref, progress, result.steps, total=max(tc.steps, 1))
    trainer = _trainer_class()(
        model=model,
        reward_funcs=reward_funcs,
        args=grpo_args(cfg, out, weights),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        environment_factory=env_factory(
            retriever,
            topk=cfg.solver.topk,  # retrieval.topk unless the solver sets its own
            max_searches=cfg.solver.max_searches,
            passage_chars=cfg.solver.passage_chars,
        ),
        peft_config=peft_config,
        callbacks=[callback],
    )
    trainer_ref["trainer"] = trainer
    trainer.remove_callback(PrinterCallback)  # our StepLogger prints one readable line per step
    return trainer, callback


def grpo_args(cfg: Config, out: Path, weights: list[float]) -> Any:
    import torch
    from trl import GRPOConfig

    tc = cfg.train
    use_cuda = torch.cuda.is_available()
    rollouts = tc.prompts_per_step * tc.num_generations
    # The loss pass holds full-vocabulary logits (and their gradient) for every rollout of the
    # micro-batch: 8 rollouts x 512 tokens x 49k vocabulary x 4 bytes is 0.8 GB per copy. On CPU,
    # where batching buys little, one rollout per micro-batch keeps one such copy an eighth of that;
    # the step is unchanged (TRL generates the whole group once, and its default "dapo" loss divides
    # by the active tokens of the whole step, so accumulated gradients equal the one-batch ones).
    micro = rollouts if use_cuda else 1
    return GRPOConfig(
        output_dir=str(out / "trainer"),
        max_steps=max(tc.steps, 1),
        learning_rate=tc.learning_rate,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=rollouts // micro,
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
        bf16=tc.dtype == "bfloat16" and use_cuda,
        use_cpu=not use_cuda,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def _save_checkpoint(
    cfg: Config, trainer: Any, tok: Any, data: str | Path, result: TrainResult, seconds: float
) -> None:
    final = trainer.model
    if hasattr(final, "merge_and_unload") and cfg.train.lora.merge:
        final = final.merge_and_unload()
    final.save_pretrained(result.checkpoint)
    tok.save_pretrained(result.checkpoint)
    result.seconds = seconds
    meta = {"base_model": cfg.train.model, "data": str(data), "protocol": "tools", **result.summary()}
    (result.checkpoint / "sagegen_train.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    (result.output_dir / "summary.json").write_text(json.dumps(result.summary(), indent=2), encoding="utf-8")
