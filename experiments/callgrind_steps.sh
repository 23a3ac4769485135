#!/usr/bin/env bash
# Instructions per forward + backward step of one Mamba layer (profile.scope=encoder: of
# one encoder), counted by callgrind:
# deterministic, unlike wall time on a shared machine.
#   bash experiments/callgrind_steps.sh 'profile.lengths=[64]' [more bench_encoders overrides]
# Runs `python experiments/bench_encoders.py mode=steps` twice under valgrind, one thread,
# with profile.steps=0 and profile.steps=$STEPS (default 5), and prints the difference
# over STEPS: the instructions of one step, start-up and warm-up excluded. The compiled
# ops are built for x86-64-v3 (KERNELS_MARCH), since valgrind does not run AVX-512.
set -euo pipefail
steps=${STEPS:-5}
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
python=$(python -c 'import sys; print(sys.executable)')  # the interpreter, not a shim
export KERNELS_MARCH=${KERNELS_MARCH:-x86-64-v3}
# Build the compiled ops first, outside valgrind: a build inside one of the two counted
# runs would land in the difference.
"$python" "$here/bench_encoders.py" mode=steps profile.steps=0 hydra.run.dir="$out/build" "$@" \
    >"$out/log.build" 2>&1 || { tail -20 "$out/log.build"; exit 1; }
for n in 0 "$steps"; do
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file="$out/cg.$n" \
        "$python" "$here/bench_encoders.py" mode=steps profile.threads=1 profile.steps="$n" \
        hydra.run.dir="$out/run$n" "$@" >"$out/log.$n" 2>&1 \
        || { tail -20 "$out/log.$n"; exit 1; }
done
total() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }
base=$(total "$out/cg.0")
with_steps=$(total "$out/cg.$steps")
echo "instructions per step: $(( (with_steps - base) / steps )) ($* ; $steps steps; files in $out)"
