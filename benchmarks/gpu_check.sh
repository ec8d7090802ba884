#!/usr/bin/env bash
# The prepared GPU check (README, "On a GPU"), in order: the cuda tests, then benchmarks/gpu_check.py
# (SmolLM2-135M decoding against AR and HF assisted, the verify cost of a Llama-2-7B-shaped target,
# each policy's tree-building time). One Markdown table file: benchmarks/results/gpu-check.md.
# Budgeted for under 10 minutes on one H100/H200. Needs a CUDA build of the pinned torch in $PYTHON's env.
#   benchmarks/gpu_check.sh [gpu_check.py options, e.g. --spec-bench PATH --out FILE]
#   PYTHON=python3 WORK=/tmp/gpu-check benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
WORK=${WORK:-out/gpu-check}
mkdir -p "$WORK"
start=$(date +%s)

echo "== cuda tests" >&2
OPTTREE_CUDA_REPORT="$WORK/cuda-report.json" "$PYTHON" -m pytest -q -rs -m cuda -p no:cacheprovider \
    --junitxml="$WORK/cuda-tests.xml" tests/test_cuda.py
tests_rc=$?

echo "== gpu_check.py" >&2
"$PYTHON" benchmarks/gpu_check.py --device cuda --work "$WORK" --tests-xml "$WORK/cuda-tests.xml" \
    --cuda-report "$WORK/cuda-report.json" --tests-rc "$tests_rc" "$@"
rc=$?

echo "gpu_check.sh: $(( $(date +%s) - start )) s in all (cuda tests exit $tests_rc, driver exit $rc)" >&2
[ "$rc" -ne 0 ] && exit "$rc"
exit "$tests_rc"
