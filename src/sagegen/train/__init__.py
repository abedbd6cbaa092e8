"""Training search agents on sagegen data.

- ``sagegen.llm.hf_models`` (outside this package, shared with the transformers LLM backend): load a
  policy (SmolLM2 from its GGUF, a tiny random Llama, any HF folder).
- ``data``: read dataset.jsonl / verl parquet / FlashRAG JSONL into training rows.
- ``tools``: the search tool (one environment per rollout) over any sagegen Retriever.
- ``rewards``: outcome rewards (EM / F1 / LLM judge) and an optional format reward.
- ``masking``: checks, on token ids, that retrieved passages are excluded from the loss.
- ``sft``: a short supervised warm-up on tool-calling trajectories before RL.
- ``grpo``: ``train()``, the TRL GRPO loop with the search tool, logging and checkpoints.
- the cluster recipe (verl / Search-R1) lives with the other verl code in ``sagegen.integrations.verl``.

Heavy imports (torch, transformers, trl, peft) happen inside these modules, never in
``sagegen`` itself, so the core stays light.
"""
