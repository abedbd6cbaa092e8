#!/usr/bin/env bash
# Build the side virtual environment the verl conformance tests run in (tests/integrations/test_verl_conformance.py).
# verl pins its own transformers/numpy/ray ranges, which may clash with the main venv, so it lives apart.
# Usage: bash scripts/verl_env.sh [DIR] [VERL_VERSION]   (defaults: .venv-verl, 0.9.1)
# Prints the interpreter path last; point the tests at it with SAGEGEN_VERL_PYTHON=DIR/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.venv-verl}
version=${2:-0.9.1}
start=$(date +%s)
if [ ! -x "$dir/bin/python" ]; then
  python3 -m venv "$dir"
fi
"$dir/bin/python" -m pip install -q -U pip
# CPU build of torch first, so verl's dependencies never ask for the CUDA one.
"$dir/bin/python" -m pip install -q "torch==2.13.0"
# verl 0.7.x pins numpy<2 but not pyarrow/datasets, whose current releases need numpy 2; pin them to
# releases that still run on numpy 1 (checked with 0.7.1: the conformance tests pass).
extra=()
case "$version" in 0.7.*) extra=("pyarrow<21" "datasets<4.3") ;; esac
"$dir/bin/python" -m pip install -q "verl==$version" ${extra[@]+"${extra[@]}"}
# What sagegen's tool class and reward function import inside verl; the tests put this checkout's
# src/ on PYTHONPATH rather than installing sagegen here, so the side venv never goes stale.
"$dir/bin/python" -m pip install -q "pydantic>=2.6" "pyyaml>=6" "jinja2>=3.1" "httpx>=0.27"
"$dir/bin/python" -c "import verl, torch; print('verl', verl.__version__, 'torch', torch.__version__)"
echo "verl side venv built in $(( $(date +%s) - start )) s" >&2
echo "$dir/bin/python"
