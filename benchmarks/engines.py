"""Benchmark: bayescale's engine side by side with PyMC, nutpie and a hand-written PyMC model (CPU).

All in one run (each case in a fresh subprocess, so compilation and peak memory are its own):

(a) the same hierarchical model (bayescale's spec: reference parametrization, partial pooling over
    8 simulated curves) sampled by bayescale's engine (NumPyro NUTS, one compiled JAX program, default
    settings: ``init="auto"`` starts the chains at the posterior mode, with its Laplace diagonal as the
    initial metric, when every curve has >= 100 runs, i.e. from 1e3 rows here; ``bayescale_reg``: the
    same with ``SamplerSettings(regularize_mass_matrix=True)``, the default before 2026-11-26 for loss
    laws; ``bayescale_prior``: with ``SamplerSettings(init="prior_mean")``, the earlier default
    start (``bayescale_mode`` in older logs: ``init="mode"``, the default now for these tables)),
    by PyMC's NUTS (``build_pymc_model`` + ``pm.sample``) and by nutpie (same PyMC model);
(b) bayescale end to end (``fit_law``) against what a user would otherwise write by hand: a
    straightforward PyMC model of ``L = L_inf + a * x^-alpha`` (centred normal hierarchies on
    L_inf, log a, log alpha; x in units of the smallest scale) sampled with PyMC's defaults.

Every sampler: 4 chains x (warmup + draws) as given (default 1000 + 1000). Reported per case: wall
time with compilation, sampling time without it, min bulk ESS over all sampled parameters, min
bulk ESS per second (with and without compilation), max R-hat, divergences, peak resident memory
of the process (and its worker processes). A fit with R-hat > 1.01 or any divergence counts as
0 ESS/s ("converged" column), as the issue asks. Then:

- refit: ``fit_law`` on a second table of the same shape (new values) in the same process:
  compile time and wall time of the first and second fit;
- many fits: 100 small independent fits (one curve x 8 scales each) with ``fit_many`` (one
  vectorized program) against a Python loop of ``fit_law`` (compiled once, then reused).

Usage: ``python benchmarks/engines.py`` (full, about an hour on 2 cores),
``python benchmarks/engines.py --rows 1e2,1e3 --draws 500 --skip-many`` (quick)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from dataclasses import replace

import numpy as np

N_CURVES = 8
CASES = ("bayescale", "bayescale_reg", "bayescale_prior", "pymc", "nutpie", "handwritten")


def _table(rows: int, seed: int = 0):
    from bayescale import load_runs
    from bayescale.simulate import simulate_runs

    df, _ = simulate_runs(N_CURVES, np.geomspace(1e18, 1e21, max(rows // N_CURVES, 3)), noise_sd=0.01, seed=seed)
    return load_runs(df, scale="compute_flops", groups=["family"])


def _peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024  # Linux: kilobytes; workers counted at their own peak


def _score(tree, wall: float, sampling: float, names=None) -> dict:
    import arviz as az

    post = tree.posterior.to_dataset()
    post = post if names is None else post[names]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.summary(post, kind="diagnostics", round_to="none")
    ess, rhat = float(table["ess_bulk"].min()), float(table["r_hat"].max())
    div = int(np.sum(tree.sample_stats["diverging"].values))
    ok = rhat <= 1.01 and div == 0
    return {"wall_s": wall, "sampling_s": sampling, "compile_s": wall - sampling, "min_ess_bulk": ess,
            "max_rhat": rhat, "divergences": div, "converged": ok,
            "ess_per_s": ess / wall if ok else 0.0, "ess_per_s_no_compile": ess / sampling if ok else 0.0}


def _sampled(tree) -> list[str]:
    """The model's own sampled sites (not derived per-cell quantities)."""
    return [v for v in ("mu", "sd_cell", "cell_centered", "z_cell", "sigma") if v in tree.posterior]


def case(name: str, rows: int, warmup: int, draws: int) -> dict:
    """One case in this process; returns its figures."""
    from bayescale import SamplerSettings, fit_law
    from bayescale.model import model_data
    from bayescale.spec import ModelSpec

    runs = _table(rows)
    settings = SamplerSettings(warmup=warmup, draws=draws, posterior_predictive=False)
    warnings.simplefilter("ignore")
    if name in ("bayescale", "bayescale_reg", "bayescale_prior"):
        if name == "bayescale_reg":  # the option SamplerSettings(regularize_mass_matrix=True)
            settings = replace(settings, regularize_mass_matrix=True)
        if name == "bayescale_prior":  # the option SamplerSettings(init="prior_mean")
            settings = replace(settings, init="prior_mean")
        t0 = time.perf_counter()
        fit = fit_law(runs, settings=settings)
        wall = time.perf_counter() - t0
        out = _score(fit.tree, wall, wall - fit.timings["compile"], _sampled(fit.tree))
    elif name in ("pymc", "nutpie"):
        import pymc as pm

        from bayescale.pymc_model import build_pymc_model

        spec = ModelSpec.from_runs(runs)
        model = build_pymc_model(spec, model_data(runs, spec))
        t0 = time.perf_counter()
        if name == "pymc":
            with model:
                tree = pm.sample(draws=draws, tune=warmup, chains=4, target_accept=settings.target_accept,
                                 random_seed=0, progressbar=False, compute_convergence_checks=False)
            sampling = _pymc_sampling_time(tree)
        else:
            import nutpie

            compiled = nutpie.compile_pymc_model(model)
            t1 = time.perf_counter()
            tree = nutpie.sample(compiled, draws=draws, tune=warmup, chains=4, seed=0, progress_bar=False,
                                 target_accept=settings.target_accept)
            sampling = time.perf_counter() - t1
        out = _score(tree, time.perf_counter() - t0, sampling, _sampled(tree))
    elif name == "handwritten":
        out = _handwritten(runs, warmup, draws)
    else:
        raise ValueError(name)
    return {"case": name, "rows": runs.n_rows, **out, "peak_mb": _peak_mb()}


def _handwritten(runs, warmup: int, draws: int) -> dict:
    """What a user would write in PyMC without bayescale: the law as written, PyMC defaults."""
    import pymc as pm

    df = runs.data
    curve, curves = np.unique(df["family"].to_numpy(), return_inverse=True)[::-1]
    x = df["compute_flops"].to_numpy() / df["compute_flops"].min()
    y = df["loss"].to_numpy()
    with pm.Model(coords={"curve": list(curves)}):
        l_mu, l_sd = pm.Normal("L_inf_mu", y.min(), 1.0), pm.HalfNormal("L_inf_sd", 1.0)
        a_mu, a_sd = pm.Normal("log_a_mu", 0.0, 2.0), pm.HalfNormal("log_a_sd", 1.0)
        al_mu, al_sd = pm.Normal("log_alpha_mu", np.log(0.3), 1.0), pm.HalfNormal("log_alpha_sd", 0.5)
        l_inf = pm.Normal("L_inf", l_mu, l_sd, dims="curve")
        a = pm.math.exp(pm.Normal("log_a", a_mu, a_sd, dims="curve"))
        alpha = pm.math.exp(pm.Normal("log_alpha", al_mu, al_sd, dims="curve"))
        sigma = pm.HalfNormal("sigma", 1.0)
        pm.Normal("loss", l_inf[curve] + a[curve] * x ** (-alpha[curve]), sigma, observed=y)
        t0 = time.perf_counter()
        tree = pm.sample(draws=draws, tune=warmup, random_seed=0, progressbar=False, compute_convergence_checks=False)
    return _score(tree, time.perf_counter() - t0, _pymc_sampling_time(tree))


def _pymc_sampling_time(tree) -> float:
    """PyMC's own clock of the sampling loop (after compilation and initialisation)."""
    for node in (tree.posterior, tree.sample_stats, tree):
        if "sampling_time" in node.attrs:
            return float(node.attrs["sampling_time"])
    raise KeyError("PyMC recorded no sampling_time")


def refit(rows: int, warmup: int, draws: int) -> dict:
    """Two fits of the same shape in one process: the second compiles nothing."""
    from bayescale import SamplerSettings, fit_law

    settings = SamplerSettings(warmup=warmup, draws=draws, posterior_predictive=False)
    out = {}
    for i, seed in enumerate((0, 1)):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_law(_table(rows, seed=seed), settings=settings)
        out[f"fit{i + 1}_wall_s"], out[f"fit{i + 1}_compile_s"] = time.perf_counter() - t0, fit.timings["compile"]
    return {"rows": rows, **out}


def many(n_fits: int, warmup: int, draws: int, loop_fits: int | None = None) -> dict:
    """``n_fits`` one-curve fits: ``fit_many`` (one vectorized program) vs a loop of ``fit_law``.

    ``loop_fits``: time the loop on the first ``loop_fits`` tables only and scale the fits after the
    first (which compiles) to ``n_fits`` (for slow devices; the output says so)."""
    from bayescale import SamplerSettings, fit_law, fit_many, load_runs
    from bayescale.simulate import simulate_runs

    tables = [load_runs(simulate_runs(1, np.geomspace(1e18, 1e21, 8), noise_sd=0.02, seed=s)[0],
                        scale="compute_flops", groups=()) for s in range(n_fits)]
    settings = SamplerSettings(warmup=warmup, draws=draws)
    t0 = time.perf_counter()
    batched = fit_many(tables, settings=settings)
    t_vec = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        looped = [fit_law(tables[0], settings=settings)]  # compiles: counted once, not scaled
        t_first, t1 = time.perf_counter() - t0, time.perf_counter()
        looped += [fit_law(t, settings=settings) for t in tables[1:loop_fits or n_fits]]
        t_loop = t_first + (time.perf_counter() - t1) * (n_fits - 1) / max(len(looped) - 1, 1)
    gap = [float(np.max(np.abs(b.tree.posterior["alpha"].median().values - f.tree.posterior["alpha"].median().values)))
           for b, f in zip(batched, looped)]
    return {"n_fits": n_fits, "vectorized_s": t_vec, "vectorized_compile_s": batched[0].timings["compile"],
            "loop_s": t_loop, "speedup": t_loop / t_vec, "loop_fits_timed": len(looped),
            "vectorized_ok": sum(f.diagnostics.ok for f in batched), "loop_ok": sum(f.diagnostics.ok for f in looped),
            "max_alpha_median_gap": max(gap)}


def _child(args: list[str], timeout: float) -> dict | None:
    cmd = [sys.executable, __file__, "--child", *args]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ})
    except subprocess.TimeoutExpired:
        return {"timeout": True}
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode or not lines:
        return {"error": (res.stderr or res.stdout).strip().splitlines()[-1:]}
    return json.loads(lines[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1e2,1e3,1e4,1e5")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per case; slower cases are reported so")
    parser.add_argument("--n-fits", type=int, default=100)
    parser.add_argument("--skip-many", action="store_true")
    parser.add_argument("--loop-fits", type=int, default=None,
                        help="time the loop on this many fits and scale to --n-fits (slow devices)")
    parser.add_argument("--only-many", action="store_true", help="only the many-fits comparison")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        fn = {"case": lambda n, r: case(n, int(r), args.warmup, args.draws),
              "refit": lambda r: refit(int(r), args.warmup, args.draws),
              "many": lambda n: many(int(n), args.warmup, args.draws, args.loop_fits)}[kind]
        print(json.dumps(fn(*rest)), flush=True)
        return
    import jax

    common = ["--warmup", str(args.warmup), "--draws", str(args.draws)]
    print(f"CPU: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; jax {jax.__version__}; "
          f"4 chains x ({args.warmup} + {args.draws}); {N_CURVES} simulated curves; timeout {args.timeout:.0f} s/case")
    head = (f"{'rows':>7s} {'case':>12s} {'wall s':>8s} {'compile':>8s} {'sample':>8s} {'minESS':>7s} {'R-hat':>6s} "
            f"{'div':>5s} {'conv':>5s} {'ESS/s':>7s} {'ESS/s-c':>8s} {'peak MB':>8s}")
    print(head, flush=True)
    for rows in ([] if args.only_many else (int(float(r)) for r in args.rows.split(","))):
        for name in args.cases.split(","):
            r = _child(["case", name, str(rows), *common], args.timeout)
            if "timeout" in r or "error" in r:
                print(f"{rows:7d} {name:>12s} " + (f"did not finish in {args.timeout:.0f} s (counts as 0 ESS/s)"
                                                   if "timeout" in r else f"error: {r['error']}"), flush=True)
                continue
            print(f"{r['rows']:7d} {name:>12s} {r['wall_s']:8.1f} {r['compile_s']:8.1f} {r['sampling_s']:8.1f} "
                  f"{r['min_ess_bulk']:7.0f} {r['max_rhat']:6.3f} {r['divergences']:5d} {str(r['converged']):>5s} "
                  f"{r['ess_per_s']:7.1f} {r['ess_per_s_no_compile']:8.1f} {r['peak_mb']:8.0f}", flush=True)
    r = {} if args.only_many else _child(["refit", "1000", *common], args.timeout)
    if not args.only_many:
        print(f"\nrefit, same shape, new values ({r.get('rows')} rows): first fit {r.get('fit1_wall_s', float('nan')):.1f} s "
              f"(compile {r.get('fit1_compile_s', float('nan')):.1f} s), second fit "
              f"{r.get('fit2_wall_s', float('nan')):.1f} s (compile {r.get('fit2_compile_s', float('nan')):.2f} s)",
              flush=True)
    if not args.skip_many:
        loop = ["--loop-fits", str(args.loop_fits)] if args.loop_fits else []
        r = _child(["many", str(args.n_fits), *common, *loop], 3 * args.timeout)
        print(f"\n{args.n_fits} one-curve fits: fit_many {r.get('vectorized_s', float('nan')):.1f} s "
              f"(compile {r.get('vectorized_compile_s', float('nan')):.1f} s) vs loop of fit_law "
              f"{r.get('loop_s', float('nan')):.1f} s (timed on {r.get('loop_fits_timed')} fits, scaled to {args.n_fits}): "
              f"{r.get('speedup', float('nan')):.1f}x; fits passing all "
              f"diagnostics {r.get('vectorized_ok')} vs {r.get('loop_ok')}; largest gap between the two posterior "
              f"medians of alpha {r.get('max_alpha_median_gap', float('nan')):.4f}", flush=True)
    print(f"load at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
