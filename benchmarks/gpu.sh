#!/usr/bin/env bash
# The GPU benchmarks of issue #6 in one sitting (README "Large tables and GPUs"); each configuration
# runs under `timeout` (rc 124: killed, counts as not finished). Needs a CUDA JAX and bayescale's
# dependencies importable by $PYTHON (default python3).
# Usage: bash benchmarks/gpu.sh [LOGFILE]
set -u
log=${1:-/dev/null}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}
L="$py benchmarks/large_tables.py --target-accept 0.99"  # 0.99: the package's default
run() { local t=$1; shift; echo "== timeout $t $*"; timeout "$t" "$@"; echo "-> rc $?"; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  # fit_law's defaults: 1000 + 1000 draws, init "auto" (the mode here: 10,000 runs per curve)
  run 100 $L --rows 1e6 --precision float64 --seed 0
  run 100 $L --rows 1e6 --precision float64 --seed 1
  # float32, without the mass-matrix shrinkage that float32 turns on by default
  run 90 $L --rows 1e6 --precision float32 --regularize off --warmup 500 --draws 500
} 2>&1 | tee "$log"
