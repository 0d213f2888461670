"""Benchmark: bayescale's NUTS on large run tables (simulated), on whatever device JAX sees.

Table: ``simulate_runs`` with 100 curves (one grouping factor) and rows/100 scales per curve,
geometric over 1e18..1e21 (like every checkpoint of every model), noise sd 0.01. 4 chains x
(``--warmup`` + ``--draws``; default 1000 + 1000), ``--dense`` for a dense mass matrix. For each
size and precision: wall time of ``fit_law`` (JIT included), sampling time with and without JAX
compilation, mean leapfrog steps per draw, min bulk ESS and min bulk ESS per second, max R-hat,
divergences. ``--layout rows`` keeps the per-row layout (the law's gradient is a scatter-add over rows)
instead of the by-cell grid ``bayescale.model.model_data`` picks for tables of >= 1e3 rows. ``--svi``: also the approximate path (``SamplerSettings(engine="svi")``) on the same
table, with its PSIS Pareto k and its error against the NUTS fit: largest absolute gap between
the two posterior medians of alpha and of the forecast at 10x the largest scale, in units of the
NUTS posterior sd, and the ratio of the two 90% forecast band widths. No timing is asserted.

Usage: ``python benchmarks/large_tables.py --rows 1e2,1e3,1e4,1e5 --precision float64,float32``,
``python benchmarks/large_tables.py --rows 1e6 --precision float32 --warmup 500 --draws 500 --svi``
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np

import bayescale
import bayescale.model
from bayescale import SamplerSettings, fit_law, load_runs
from bayescale.simulate import simulate_runs

N_CURVES = 100


def one(rows: int, precision: str, seed: int = 0, warmup: int = 1000, draws: int = 1000, dense: bool = False,
        engine: str = "numpyro", target_accept: float = 0.95, regularize: bool | None = None,
        init: str = "auto") -> tuple[dict, object]:
    per_curve = max(rows // N_CURVES, 3)
    df, _ = simulate_runs(N_CURVES, np.geomspace(1e18, 1e21, per_curve), noise_sd=0.01, seed=seed)
    runs = load_runs(df, scale="compute_flops", groups=["family"])
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_law(runs, settings=SamplerSettings(seed=seed, precision=precision, posterior_predictive=False,
                                                     warmup=warmup, draws=draws, dense_mass=dense, engine=engine,
                                                     target_accept=target_accept,
                                                     regularize_mass_matrix=regularize, init=init))
    wall = time.perf_counter() - t0
    d, tm = fit.diagnostics, fit.timings
    if engine == "svi":
        return {"rows": len(df), "precision": precision, "fit_law_s": wall, "compile_s": tm["compile"],
                "pareto_k": d.pareto_k}, fit
    run_s = max(tm["sampling"] - tm["compile"], 1e-9)
    return {"rows": len(df), "precision": precision, "fit_law_s": wall, "sampling_s": tm["sampling"],
            "compile_s": tm["compile"], "min_ess_bulk": d.min_ess_bulk, "ess_per_s": d.min_ess_bulk / tm["sampling"],
            "ess_per_s_no_jit": d.min_ess_bulk / run_s, "max_rhat": d.max_rhat, "divergences": d.n_divergent,
            "mean_steps": float(fit.tree.sample_stats["n_steps"].mean()), "init": fit.settings.init,
            "warnings": sum(w.category.__name__ == "ConvergenceWarning" for w in caught)}, fit


def approximation_error(approx, exact) -> dict:
    """Gaps between an approximate fit and NUTS: alpha per curve and the forecast at 10x the largest scale."""
    a_alpha, e_alpha = (f.tree.posterior["alpha"].stack(s=("chain", "draw")).values for f in (approx, exact))
    gap_alpha = np.abs(np.median(a_alpha, -1) - np.median(e_alpha, -1)) / e_alpha.std(-1)
    x = [10 * float(exact.runs.data[exact.runs.scale].max())]
    gaps, ratios = [], []
    for level in exact.spec.levels["family"][:20]:
        fa, fe = approx.forecast(x, group=level).iloc[0], exact.forecast(x, group=level).iloc[0]
        sd = (fe["upper_90"] - fe["lower_90"]) / 3.29
        gaps.append(abs(fa["median"] - fe["median"]) / sd)
        ratios.append((fa["upper_90"] - fa["lower_90"]) / (fe["upper_90"] - fe["lower_90"]))
    return {"max_gap_alpha_sd": float(gap_alpha.max()), "max_gap_forecast_sd": float(max(gaps)),
            "band_ratio_min": float(min(ratios)), "band_ratio_max": float(max(ratios))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1e2,1e3,1e4,1e5")
    parser.add_argument("--precision", default="float64")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--dense", action="store_true", help="dense mass matrix")
    parser.add_argument("--init", default="auto", choices=["auto", "prior_mean", "mode"],
                        help="where chains start (SamplerSettings.init; auto: the mode for curves of >= 100 runs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated table and of the sampler")
    parser.add_argument("--target-accept", type=float, default=0.95)
    parser.add_argument("--svi", action="store_true", help="also the approximate SVI path, with its error vs NUTS")
    parser.add_argument("--layout", default="auto", choices=["auto", "rows"],
                        help="data layout for sampling: auto (by cell from 1e3 rows) or rows (per-row gather/scatter)")
    parser.add_argument("--regularize", default="default", choices=["default", "on", "off"],
                        help="mass-matrix shrinkage (SamplerSettings.regularize_mass_matrix): the default (off for float64 "
                             "loss laws), on, or off")
    args = parser.parse_args(argv)
    regularize = {"default": None, "on": True, "off": False}[args.regularize]
    if args.layout == "rows":
        bayescale.model.BY_CELL_MIN_ROWS = 10**15
    import jax
    print(f"bayescale {bayescale.__version__ if hasattr(bayescale, '__version__') else ''} jax {jax.__version__}; "
          f"devices {jax.devices()}; {platform.processor() or platform.machine()}; 4 chains x ({args.warmup} + "
          f"{args.draws}), target_accept {args.target_accept}{', dense mass' if args.dense else ''}, layout {args.layout}, "
          f"mass-matrix shrinkage {args.regularize}, init {args.init}, seed {args.seed}")
    print(f"{'rows':>8s} {'prec':>8s} {'fit_law s':>9s} {'sampling':>8s} {'compile':>7s} {'steps':>6s} "
          f"{'minESS':>7s} {'ESS/s':>7s} {'ESS/s-JIT':>9s} {'R-hat':>6s} {'div':>4s} init", flush=True)
    for rows in (int(float(r)) for r in args.rows.split(",")):
        for precision in args.precision.split(","):
            r, fit = one(rows, precision, seed=args.seed, warmup=args.warmup, draws=args.draws, dense=args.dense,
                         target_accept=args.target_accept, regularize=regularize, init=args.init)
            print(f"{r['rows']:8d} {precision:>8s} {r['fit_law_s']:9.1f} {r['sampling_s']:8.1f} {r['compile_s']:7.1f} "
                  f"{r['mean_steps']:6.0f} {r['min_ess_bulk']:7.0f} {r['ess_per_s']:7.1f} {r['ess_per_s_no_jit']:9.1f} "
                  f"{r['max_rhat']:6.3f} {r['divergences']:4d} {r['init']}", flush=True)
            if args.svi:
                a, approx = one(rows, precision, engine="svi", draws=args.draws)
                err = approximation_error(approx, fit)
                print(f"{'':8s} {'svi':>8s} {a['fit_law_s']:9.1f} {'':8s} {a['compile_s']:7.1f}  Pareto k {a['pareto_k']:.2f}; "
                      f"vs NUTS: alpha median gap <= {err['max_gap_alpha_sd']:.2f} sd, 10x forecast median gap <= "
                      f"{err['max_gap_forecast_sd']:.2f} sd, 90% band width ratio {err['band_ratio_min']:.2f}-"
                      f"{err['band_ratio_max']:.2f}", flush=True)


if __name__ == "__main__":
    main()
