#!/usr/bin/env bash
# The GPU check, one prepared script run from the repo root on a CUDA machine; everything it
# writes lands in $OUT, and every timing row is appended to a CSV the moment it is measured,
# so a run cut short by a timeout still returns what it measured. About 5 minutes on an
# H200 (each step has its own timeout; the total stays under 6 minutes):
#   0. wheels from .whl/ (hydra-core, omegaconf, ...), and mamba-ssm from its source
#      distribution .whl/mamba_ssm-*.tar.gz: its Python ops (the Triton decode kernel) at
#      once, and its CUDA extension selective_scan_cuda either carried prebuilt
#      (.whl/selective_scan_cuda*.so, built for this machine's torch) or compiled here for
#      sm_90 in the background while the steps below run (real-valued A only: the
#      complex-A backward units take longest and Mamba does not use them);
#   1. the kernel tests, compiled (the correctness grid; autotuning off: each grid case
#      would otherwise tune anew);
#   2. the benchmark (+preset=gpu_quick): long shapes and every autotune candidate checked
#      against the float64 reference, then timings: the main shape with every candidate,
#      the length sweep, one decode step against mamba-ssm's Triton kernel;
#   3. mamba-ssm's CUDA scan on the same shapes, once its extension is there.
set -o pipefail
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
START=$SECONDS
export PYTHONUNBUFFERED=1
SITE=/tmp/site
mkdir -p "$SITE"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || exit 1
fi
export PYTHONPATH=$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}
{ nvidia-smi -L; nproc; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
  2>&1 | tee "$OUT/machine.txt"

# 0. mamba-ssm: its sources on the path; the CUDA extension prebuilt or built in the background.
SDIST=$(compgen -G ".whl/mamba_ssm-*.tar.gz" | head -n 1)
BUILD_PID=""
if [[ -n "$SDIST" ]]; then
  mkdir -p /tmp/mamba && tar -xzf "$SDIST" -C /tmp/mamba
  export PYTHONPATH=$PYTHONPATH:$(ls -d /tmp/mamba/mamba_ssm-*)
  if compgen -G ".whl/selective_scan_cuda*.so" > /dev/null; then
    cp .whl/selective_scan_cuda*.so "$SITE"/
    echo "mamba-ssm CUDA extension: prebuilt, carried" | tee "$OUT/mamba_build.log"
  elif [[ "${MAMBA_BUILD:-1}" == "1" ]]; then
    echo "mamba-ssm CUDA extension: building for sm_90 in the background" | tee "$OUT/mamba_build.log"
    ( timeout "${MAMBA_BUILD_TIMEOUT:-290}" python3 -m kernels.bench.mamba_build --sdist "$SDIST" \
        --out /tmp/mamba_build --arch 90 --jobs "${MAMBA_BUILD_JOBS:-12}" --real-only \
      && cp /tmp/mamba_build/selective_scan_cuda*.so "$SITE"/ ) >> "$OUT/mamba_build.log" 2>&1 &
    BUILD_PID=$!
  fi
fi

# 1. The kernel tests, compiled. PYTEST_SELECT narrows them with -k (e.g. "l1n").
KERNELS_TRITON_AUTOTUNE=0 timeout "${PYTEST_TIMEOUT:-140}" python3 -m pytest -q -rfE \
  -p no:cacheprovider ${PYTEST_SELECT:+-k "$PYTEST_SELECT"} \
  tests/kernels/test_selective_scan_triton.py tests/kernels/test_state_update.py \
  tests/kernels/test_causal_conv1d.py tests/kernels/test_selective_scan_errors.py \
  2>&1 | tee "$OUT/pytest_kernels.log" | tail -n 40

# 2. Correctness of the long shapes and every candidate, then the timings (bench/kernel_bench.csv).
timeout "${BENCH_TIMEOUT:-150}" python3 experiments/bench_kernels.py +preset=gpu_quick \
  hydra.run.dir="$OUT/bench" hydra.output_subdir=null ${BENCH_OVERRIDES:-} 2>&1 | tee "$OUT/bench.log"

# 3. mamba-ssm's CUDA kernel on the same shapes (bench_mamba/kernel_bench.csv).
if [[ -n "$BUILD_PID" ]]; then
  wait "$BUILD_PID"; echo "mamba-ssm build exit $? after $((SECONDS - START)) s" | tee -a "$OUT/mamba_build.log"
fi
if [[ -z "$BUILD_PID" ]]; then
  :  # prebuilt (timed in step 2 already) or no sources carried
elif python3 -c "import selective_scan_cuda" 2>> "$OUT/mamba_build.log"; then
  timeout "${MAMBA_BENCH_TIMEOUT:-40}" python3 experiments/bench_kernels.py +preset=gpu_quick \
    backends=[mamba_cuda] variants=false check.enabled=false decode_shapes=[] \
    hydra.run.dir="$OUT/bench_mamba" hydra.output_subdir=null 2>&1 | tee "$OUT/bench_mamba.log"
else
  echo "mamba-ssm CUDA extension not importable: no mamba_cuda rows (see mamba_build.log)" \
    | tee -a "$OUT/mamba_build.log"
fi
echo "gpu_check: $((SECONDS - START)) s" | tee -a "$OUT/machine.txt"
