#!/usr/bin/env bash
# Install the CPU build of PyTorch when this machine has no NVIDIA GPU and torch is not installed yet.
# Usage: bash scripts/torch_cpu.sh [PYTHON]   (default: python on PATH; installs into its environment)
#
# Why: pip's default torch on Linux x86-64 is the CUDA build (with it a test venv grows from ~0.3 GB to
# ~6.9 GB). The extras that need torch (dense, train) accept the CPU build, so installing it first keeps
# them from pulling CUDA. Nothing happens where torch is installed (any build) or `nvidia-smi` exists.
# Where the CPU build comes from, in order: a CPU wheel among pip's find-links (an offline wheel folder;
# this project's CI machines keep one and cannot reach PyTorch's index), else PyTorch's CPU index.
set -euo pipefail
py=${1:-python}
if "$py" -c "import torch" 2>/dev/null; then
  exit 0
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  exit 0
fi
tag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
links="${PIP_FIND_LINKS:-} $("$py" -m pip config list 2>/dev/null | sed -n "s/^[^=]*find-links='\(.*\)'$/\1/p" | tr '\n' ' ')"
wheel=""
for dir in $links; do
  dir=${dir#file://}
  for w in "$dir"/torch-*+cpu-"$tag"-"$tag"-*"$(uname -m)".whl; do
    if [ -f "$w" ]; then wheel=$w; fi
  done
done
if [ -n "$wheel" ]; then
  echo "no NVIDIA GPU: installing the CPU build of torch ($(basename "$wheel"))" >&2
  "$py" -m pip install -q "$wheel"
else
  echo "no NVIDIA GPU: installing the CPU build of torch from https://download.pytorch.org/whl/cpu" >&2
  "$py" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
if ! "$py" -W ignore -c "import sys, torch; sys.exit(torch.version.cuda is not None)"; then
  echo "warning: the torch just installed is a CUDA build; see docs/getting-started.md" >&2
fi
