#!/usr/bin/env bash
# The GPU check, run from the repo root on a CUDA machine (writes logs and results to $OUT):
#   1. the kernel tests, which on CUDA check the compiled Triton kernels;
#   2. the gpu_quick benchmark: correctness grid, then the timing table, CSV and plots.
# Wheels for packages that machine lacks (hydra-core, omegaconf, ...) may sit in .whl/.
set -o pipefail
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
  2>&1 | tee "$OUT/machine.txt"
# PYTEST_SELECT narrows the tests with -k (e.g. "l1n"), to fit a short GPU lease.
timeout "${PYTEST_TIMEOUT:-200}" python3 -m pytest -q -rfE -p no:cacheprovider ${PYTEST_SELECT:+-k "$PYTEST_SELECT"} \
  tests/kernels/test_selective_scan_triton.py tests/kernels/test_state_update.py \
  tests/kernels/test_causal_conv1d.py tests/kernels/test_selective_scan_errors.py \
  2>&1 | tee "$OUT/pytest_kernels.log" | tail -n 60
timeout "${BENCH_TIMEOUT:-200}" python3 experiments/bench_kernels.py +preset=gpu_quick \
  hydra.run.dir="$OUT/bench" hydra.output_subdir=null ${BENCH_OVERRIDES:-} 2>&1 | tee "$OUT/bench.log"
