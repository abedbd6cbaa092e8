"""Check, on token ids, that retrieved passages are excluded from the policy loss.

In TRL 1.16's multi-turn tool loop (``GRPOTrainer._tool_call_loop``) each rollout's completion is
``model turn + tool block + model turn + ...``; the tool block is the chat template's rendering of
the tool messages (``<|im_end|>\\n<|im_start|>user\\n<tool_response>\\n{result}\\n</tool_response>
<|im_end|>\\n<|im_start|>assistant\\n`` for the Qwen2.5 template), tokenised on its own and given
``tool_mask = 0``. The loss uses ``completion_mask * tool_mask``.

``audit`` takes the ids and the effective loss mask of each rollout, splits them into maximal
masked (0) and trained (1) runs, and checks that every result string the search tool returned
(recorded by ``SearchEnv``) lies inside the decoding of one masked run, i.e. that no token which
produced passage text is trained on. The trainer runs it on every batch and logs the counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class MaskAudit:
    rollouts: int = 0
    tool_results: int = 0  # result strings checked
    masked_tokens: int = 0  # completion tokens excluded from the loss
    trained_tokens: int = 0  # completion tokens in the loss
    leaked_results: int = 0  # results in the sequence but NOT inside a masked run (must be 0)
    dropped_results: int = 0  # results TRL rolled back (they would have overflowed max_completion_length)

    def add(self, other: MaskAudit) -> None:
        for k in (
            "rollouts",
            "tool_results",
            "masked_tokens",
            "trained_tokens",
            "leaked_results",
            "dropped_results",
        ):
            setattr(self, k, getattr(self, k) + getattr(other, k))


def runs(mask: Sequence[int]) -> list[tuple[int, int, int]]:
    """Maximal runs ``(value, start, end)`` of a 0/1 mask."""
    out: list[tuple[int, int, int]] = []
    start = 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            out.append((int(mask[start]), start, i))
            start = i
    return out


def audit(
    tokenizer: Any,
    completion_ids: Sequence[Sequence[int]],
    loss_mask: Sequence[Sequence[int]],
    tool_results: Sequence[Sequence[str]],
) -> MaskAudit:
    """Audit rollouts: ids and loss mask are per rollout, trimmed of padding; results per rollout."""
    report = MaskAudit()
    for ids, mask, results in zip(completion_ids, loss_mask, tool_results, strict=True):
        report.rollouts += 1
        report.masked_tokens += sum(1 for m in mask if not m)
        report.trained_tokens += sum(1 for m in mask if m)
        masked_texts = [
            tokenizer.decode(list(ids[s:e]), skip_special_tokens=False) for v, s, e in runs(mask) if v == 0
        ]
        full = tokenizer.decode(list(ids), skip_special_tokens=False)
        for result in results:
            report.tool_results += 1
            text = result.strip()
            if any(text in t for t in masked_texts):
                continue
            if text in full:
                report.leaked_results += 1
            else:
                report.dropped_results += 1
    return report
