#!/usr/bin/env bash
# The GPU benchmarks of issue #6 in one sitting (README "Large tables and GPUs"); each configuration
# runs under `timeout` (rc 124: killed, counts as not finished). Needs a CUDA JAX and bayescale's
# dependencies importable by $PYTHON (default python3).
# Usage: bash benchmarks/gpu.sh [LOGFILE]
set -u
log=${1:-/dev/null}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}
B="$py benchmarks/large_tables.py --warmup 1000 --draws 1000 --target-accept 0.99"  # the package's defaults
run() { local t=$1; shift; echo "== timeout $t $*"; timeout "$t" "$@"; echo "-> rc $?"; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  run 120 $py benchmarks/step_cost.py --rows 1e5,1e6 --precision float64  # where a step's time goes
  run 130 $B --rows 1e6 --precision float64
  run 130 $B --rows 1e6 --precision float64 --init mode  # the mode start that met (a) at 1e5 rows on CPU
  run 160 $py benchmarks/engines.py --only-many --n-fits 100 --loop-fits 5 --timeout 50
} 2>&1 | tee "$log"
