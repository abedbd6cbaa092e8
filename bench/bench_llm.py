"""Embedded LLM throughput: decode tokens/s and prompt tokens/s of the llama.cpp backend.

    python bench/bench_llm.py [--model PATH.gguf] [--threads N] [--tokens 128] [--repeats 3]

Prints one JSON line. Decode speed is measured on a short prompt (generation dominates);
prompt speed on a ~1000-token prompt with one generated token, on a fresh context each time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

from sagegen.config import LLMConfig
from sagegen.llm.llamacpp import LlamaCppBackend


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    llm = LlamaCppBackend(LLMConfig(model=args.model, n_threads=args.threads, n_ctx=4096, cache=False))
    t0 = time.monotonic()
    loaded = llm.load()
    load_s = time.monotonic() - t0
    await llm.complete([{"role": "user", "content": "Hi"}], max_tokens=4)  # warm-up (page-in)

    story = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    decode = []
    for i in range(args.repeats):
        c = await llm.complete(story, max_tokens=args.tokens, temperature=0.8, seed=i)
        decode.append(c.completion_tokens / c.seconds)

    long_prompt = [{"role": "user", "content": "Summarise: " + "The river flows past the old mill. " * 110}]
    prompt = []
    for _ in range(args.repeats):
        loaded.llama.reset()  # no prefix reuse: time the whole prompt
        c = await llm.complete(long_prompt, max_tokens=1, temperature=0.0)
        prompt.append(c.prompt_tokens / c.seconds)

    print(
        json.dumps(
            {
                "model": llm.name,
                "threads": llm.n_threads,
                "cpus": os.cpu_count(),
                "load_s": round(load_s, 2),
                "decode_tokens_per_s": round(statistics.median(decode), 1),
                "decode_runs": [round(x, 1) for x in decode],
                "prompt_tokens_per_s": round(statistics.median(prompt), 1),
                "prompt_tokens": c.prompt_tokens,
                "loadavg_1m": round(os.getloadavg()[0], 2),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
