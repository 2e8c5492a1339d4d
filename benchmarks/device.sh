#!/usr/bin/env bash
# The accelerator section of the benchmarks, as one short script: the machine, then minibatch SVI
# step cost against hand-written (GPU cases), sampler step cost on the device and on the host CPU,
# and first-call compile times. Each part has its own time limit; its output goes to $OUT (or ./device-out).
#   bash benchmarks/device.sh                     # up to 8 minutes on one GPU (the sampler part may hit its limit)
#   PARTS="compile steps" bash benchmarks/device.sh   # some parts only: svi, steps, compile
set -u
PARTS=${PARTS:-svi steps compile}
CASES=${CASES:-nuts:1 nuts:8 mclmc:1 mclmc:8}
STEP_ARGS=${STEP_ARGS:-}
METHODS=${METHODS:-svi nuts mclmc map}
OUT=${OUT:-device-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  $PY -c 'import jax, flax, numpyro, optax, blackjax; print("jax", jax.__version__, jax.devices(), "| flax", flax.__version__, "| numpyro", numpyro.__version__, "| optax", optax.__version__, "| blackjax", blackjax.__version__)'
  nproc; } 2>&1 | tee "$OUT/machine.txt"
has() { case " $PARTS " in *" $1 "*) return 0;; esac; return 1; }
if has svi; then timeout 150 $PY benchmarks/svi_step.py --gpu --out "$OUT/SVI_STEP_GPU.md" 2>&1 | tee "$OUT/svi_step.log"; fi
# shellcheck disable=SC2086  # CASES, STEP_ARGS and METHODS are word lists
if has steps; then timeout 200 $PY benchmarks/step_cost.py --cases $CASES $STEP_ARGS 2>&1 | tee "$OUT/step_cost.log"; fi
# shellcheck disable=SC2086
if has compile; then timeout "${COMPILE_LIMIT:-100}" $PY benchmarks/compile_times.py --methods $METHODS 2>&1 | tee "$OUT/compile.log"; fi
