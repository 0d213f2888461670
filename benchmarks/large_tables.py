"""Benchmark: bayescale's NUTS on large run tables (simulated), on whatever device JAX sees.

Table: ``simulate_runs`` with 100 curves (one grouping factor) and rows/100 scales per curve,
geometric over 1e18..1e21 (like every checkpoint of every model), noise sd 0.01. Default
``SamplerSettings`` (4 chains x 1000 + 1000) except ``precision``. For each size and precision:
wall time of ``fit_law`` (JIT included), sampling time with and without JAX compilation, min bulk
ESS and min bulk ESS per second, max R-hat, divergences. No timing is asserted.

Usage: ``python benchmarks/large_tables.py --rows 1e2,1e3,1e4,1e5 --precision float64,float32``
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np

import bayescale
from bayescale import SamplerSettings, fit_law, load_runs
from bayescale.simulate import simulate_runs

N_CURVES = 100


def one(rows: int, precision: str, seed: int = 0) -> dict:
    per_curve = max(rows // N_CURVES, 3)
    df, _ = simulate_runs(N_CURVES, np.geomspace(1e18, 1e21, per_curve), noise_sd=0.01, seed=seed)
    runs = load_runs(df, scale="compute_flops", groups=["family"])
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_law(runs, settings=SamplerSettings(seed=seed, precision=precision, posterior_predictive=False))
    wall = time.perf_counter() - t0
    d, tm = fit.diagnostics, fit.timings
    run_s = max(tm["sampling"] - tm["compile"], 1e-9)
    return {"rows": len(df), "precision": precision, "fit_law_s": wall, "sampling_s": tm["sampling"],
            "compile_s": tm["compile"], "min_ess_bulk": d.min_ess_bulk, "ess_per_s": d.min_ess_bulk / tm["sampling"],
            "ess_per_s_no_jit": d.min_ess_bulk / run_s, "max_rhat": d.max_rhat, "divergences": d.n_divergent,
            "mean_steps": float(fit.tree.sample_stats["n_steps"].mean()),
            "warnings": sum(w.category.__name__ == "ConvergenceWarning" for w in caught)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1e2,1e3,1e4,1e5")
    parser.add_argument("--precision", default="float64")
    args = parser.parse_args(argv)
    import jax
    print(f"bayescale {bayescale.__version__ if hasattr(bayescale, '__version__') else ''} jax {jax.__version__}; "
          f"devices {jax.devices()}; {platform.processor() or platform.machine()}")
    print(f"{'rows':>8s} {'prec':>8s} {'fit_law s':>9s} {'sampling':>8s} {'compile':>7s} {'steps':>6s} "
          f"{'minESS':>7s} {'ESS/s':>7s} {'ESS/s-JIT':>9s} {'R-hat':>6s} {'div':>4s}", flush=True)
    for rows in (int(float(r)) for r in args.rows.split(",")):
        for precision in args.precision.split(","):
            r = one(rows, precision)
            print(f"{r['rows']:8d} {precision:>8s} {r['fit_law_s']:9.1f} {r['sampling_s']:8.1f} {r['compile_s']:7.1f} "
                  f"{r['mean_steps']:6.0f} {r['min_ess_bulk']:7.0f} {r['ess_per_s']:7.1f} {r['ess_per_s_no_jit']:9.1f} "
                  f"{r['max_rhat']:6.3f} {r['divergences']:4d}", flush=True)


if __name__ == "__main__":
    main()
