#!/usr/bin/env bash
# The accelerator section of the benchmarks, as one short script: the machine, then minibatch SVI
# step cost against hand-written (GPU cases), sampler step cost on the device and on the host CPU,
# and first-call compile times. Each part has its own time limit; its output goes to $OUT (or ./device-out).
#   bash benchmarks/device.sh          # up to 8 minutes on one GPU (the sampler part may hit its limit)
set -u
OUT=${OUT:-device-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  $PY -c 'import jax, flax, numpyro, optax, blackjax; print("jax", jax.__version__, jax.devices(), "| flax", flax.__version__, "| numpyro", numpyro.__version__, "| optax", optax.__version__, "| blackjax", blackjax.__version__)'
  nproc; } 2>&1 | tee "$OUT/machine.txt"
timeout 150 $PY benchmarks/svi_step.py --gpu --out "$OUT/SVI_STEP_GPU.md" 2>&1 | tee "$OUT/svi_step.log"
timeout 200 $PY benchmarks/step_cost.py 2>&1 | tee "$OUT/step_cost.log"
timeout 100 $PY benchmarks/compile_times.py --methods svi nuts mclmc map 2>&1 | tee "$OUT/compile.log"
