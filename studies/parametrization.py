"""Study: the L_inf / a / alpha ridge, a naive NumPyro model that does not mix, and bayescale's fix.

Data (fixed seed): 8 curves x 250 runs = 2,000 rows, scales geometric over 1e17..1e21 FLOPs, truth
per curve L_inf ~ U(1.7, 2.1), alpha ~ U(0.2, 0.4), reducible loss at 1e17 ~ U(1, 3) nats, Gaussian
noise sd 0.015 (``bayescale.simulate.simulate_runs``).

Variants (all 4 chains, ``chain_method="vectorized"``, same warmup/draws, same sampler seed):

- a: naive NumPyro model written here: per-curve L_inf, log a, alpha with a non-centred hierarchy
  ``theta_g = mu + sd * z_g``, law ``L_inf + exp(log a - alpha * log x)`` in uncentred log x,
  float32 (JAX's default), NUTS defaults (target_accept 0.8) started at prior medians as bayescale is;
- b: ``bayescale.fit_law`` with default settings (float64, reference parametrization, centred
  cell effects for the level and slope, target_accept 0.95, includes the posterior predictive);
- c: as a, in float64 (is it precision?);
- d: as a, with centred log x, ``log x - mean(log x)`` (is it the a/alpha correlation?);
- e: as a, centred log x and float64 (both; not run unless asked with ``--variants``).

Prints the truth, then per variant: max R-hat and min bulk ESS over all posterior quantities
(ArviZ ``az.summary(kind="diagnostics")``), min bulk ESS of the per-curve L_inf and alpha alone,
divergences, tree-depth hits, wall time, and how many of the 8 true alpha and L_inf values the
90% equal-tailed intervals cover.

Usage: ``python studies/parametrization.py [--quick] [--variants a,b,c,d] [--seed 0]``
(``--quick``: 300 warmup + 300 draws instead of 1000 + 1000; each naive fit can take minutes.)
"""

from __future__ import annotations

import argparse
import time
import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from numpyro.infer import MCMC, NUTS, init_to_median

from bayescale import SamplerSettings, fit_law, load_runs
from bayescale.simulate import simulate_runs

N_GROUPS, RUNS_PER_GROUP = 8, 250
SCALES = np.geomspace(1e17, 1e21, RUNS_PER_GROUP)
NOISE_SD = 0.015
GROUP = "family"
SCALE = "compute_flops"
INTERVAL = 0.9

#: variant -> (label, centred log x, float64); "b" is bayescale.
NAIVE = {
    "a": ("naive: raw log x, float32", False, False),
    "c": ("naive: raw log x, float64", False, True),
    "d": ("naive: centred log x, float32", True, False),
    "e": ("naive: centred log x, float64", True, True),
}
LABELS = {**{k: v[0] for k, v in NAIVE.items()}, "b": "bayescale fit_law (defaults)"}


def simulate(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """2,000 runs of 8 curves with known truth (``bayescale.simulate.simulate_runs``)."""
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(0.2, 0.4, N_GROUPS)
    truth = pd.DataFrame({
        GROUP: [chr(ord("A") + i) for i in range(N_GROUPS)],
        "loss_floor": rng.uniform(1.7, 2.1, N_GROUPS),
        "a": rng.uniform(1.0, 3.0, N_GROUPS) * np.exp(alpha * np.log(SCALES.min())),  # a x_min^-alpha = R0
        "alpha": alpha,
    })
    runs, truth = simulate_runs(law_params=truth, scales=SCALES, noise_sd=NOISE_SD, scale_name=SCALE,
                                seed=seed + 1)
    return runs, truth


def naive_model(log_x, group, n_groups: int, y=None):
    """Per-curve L_inf, log a, alpha; non-centred hierarchy; what a first NumPyro attempt looks like."""
    def hierarchical(name, loc, scale, sd_scale):
        mu = numpyro.sample(f"mu_{name}", dist.Normal(loc, scale))
        sd = numpyro.sample(f"sd_{name}", dist.HalfNormal(sd_scale))
        with numpyro.plate("curves", n_groups):
            z = numpyro.sample(f"z_{name}", dist.Normal(0.0, 1.0))
        return numpyro.deterministic(name, mu + sd * z)

    loss_floor = hierarchical("loss_floor", 2.0, 1.0, 0.5)
    log_a = hierarchical("log_a", 0.0, 10.0, 5.0)
    alpha = hierarchical("alpha", 0.3, 0.3, 0.2)
    sigma = numpyro.sample("sigma", dist.HalfNormal(0.1))
    mean = loss_floor[group] + jnp.exp(log_a[group] - alpha[group] * log_x)
    with numpyro.plate("runs", log_x.shape[0]):
        numpyro.sample("obs", dist.Normal(mean, sigma), obs=y)


def coverage(draws: np.ndarray, truth: np.ndarray) -> int:
    """How many curves' true value lies in the equal-tailed INTERVAL of draws (n_draws, n_curves)."""
    lo, hi = np.quantile(draws, [(1 - INTERVAL) / 2, (1 + INTERVAL) / 2], axis=0)
    return int(np.sum((lo <= truth) & (truth <= hi)))


def summarize(table: pd.DataFrame, posterior, truth: pd.DataFrame, *, n_divergent: int, n_max_depth: int,
              wall: float, dtype) -> dict:
    """One row of the results table from a diagnostics table and a posterior with per-curve quantities."""
    per_curve = table[table.index.str.startswith(("loss_floor[", "alpha["))]
    flat = {name: np.asarray(posterior[name].values).reshape(-1, N_GROUPS) for name in ("loss_floor", "alpha")}
    return {
        "dtype": str(dtype),
        "max R-hat": float(table["r_hat"].max()),
        "min bulk ESS": float(table["ess_bulk"].min()),
        "min bulk ESS (L_inf, alpha)": float(per_curve["ess_bulk"].min()),
        "divergences": n_divergent,
        "max-depth hits": n_max_depth,
        "wall [s]": wall,
        f"alpha in {INTERVAL:.0%}": f"{coverage(flat['alpha'], truth['alpha'].to_numpy())}/{N_GROUPS}",
        f"L_inf in {INTERVAL:.0%}": f"{coverage(flat['loss_floor'], truth['loss_floor'].to_numpy())}/{N_GROUPS}",
    }


def diagnostics_table(tree) -> pd.DataFrame:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = az.summary(tree, kind="diagnostics", round_to="none")
    return table[["ess_bulk", "ess_tail", "r_hat"]].astype(float)


def fit_naive(runs: pd.DataFrame, truth: pd.DataFrame, *, centred: bool, x64: bool, warmup: int, draws: int,
              seed: int, max_tree_depth: int) -> dict:
    """Variants a, c, d, e: the naive model in the requested precision, diagnosed with ArviZ."""
    jax.config.update("jax_enable_x64", x64)  # bayescale switches x64 on globally; set it for each variant
    ftype = np.float64 if x64 else np.float32
    levels = truth[GROUP].tolist()
    log_x = np.log(runs[SCALE].to_numpy(np.float64))
    if centred:
        log_x = log_x - log_x.mean()
    data = {"log_x": jnp.asarray(log_x.astype(ftype)), "y": jnp.asarray(runs["loss"].to_numpy(ftype)),
            "group": jnp.asarray(pd.Categorical(runs[GROUP], categories=levels).codes.astype(np.int32)),
            "n_groups": len(levels)}
    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(naive_model, max_tree_depth=max_tree_depth, init_strategy=init_to_median(num_samples=15)), num_warmup=warmup, num_samples=draws,
                num_chains=4, chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), **data, extra_fields=("diverging", "num_steps"))
    dims = {name: [GROUP] for name in ("loss_floor", "log_a", "alpha", "z_loss_floor", "z_log_a", "z_alpha")}
    tree = az.from_numpyro(mcmc, coords={GROUP: levels}, dims=dims)
    table = diagnostics_table(tree)
    wall = time.perf_counter() - t0
    extra = mcmc.get_extra_fields()
    return summarize(table, tree.posterior, truth, n_divergent=int(np.sum(extra["diverging"])),
                     n_max_depth=int(np.sum(np.asarray(extra["num_steps"]) >= 2 ** max_tree_depth - 1)),
                     wall=wall, dtype=mcmc.get_samples()["alpha"].dtype)


def fit_bayescale(runs: pd.DataFrame, truth: pd.DataFrame, *, warmup: int, draws: int, seed: int) -> dict:
    """Variant b: ``fit_law`` with default settings (warmup/draws as the other variants)."""
    t0 = time.perf_counter()
    table = load_runs(runs, scale=SCALE, groups=[GROUP])
    fit = fit_law(table, settings=SamplerSettings(warmup=warmup, draws=draws, seed=seed))
    wall = time.perf_counter() - t0
    d = fit.diagnostics
    posterior = fit.tree.posterior.sel(cell=truth[GROUP].tolist())  # cells are the levels: one factor
    return summarize(d.table, posterior, truth, n_divergent=d.n_divergent, n_max_depth=d.n_max_treedepth,
                     wall=wall, dtype=posterior["mu"].dtype)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 warmup + 300 draws (default 1000 + 1000)")
    parser.add_argument("--warmup", type=int, default=None, help="override warmup (per chain)")
    parser.add_argument("--draws", type=int, default=None, help="override draws (per chain)")
    parser.add_argument("--variants", default="a,b,c,d", help="comma-separated subset of a,b,c,d,e")
    parser.add_argument("--seed", type=int, default=0, help="simulation and sampler seed")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in LABELS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {sorted(LABELS)}")
    warmup = args.warmup or (300 if args.quick else 1000)
    draws = args.draws or (300 if args.quick else 1000)

    runs, truth = simulate(args.seed)
    print(f"simulated {len(runs)} runs: {N_GROUPS} curves x {RUNS_PER_GROUP} scales in "
          f"[{SCALES.min():.0e}, {SCALES.max():.0e}] {SCALE}, noise sd {NOISE_SD}, seed {args.seed}")
    with pd.option_context("display.width", 200):
        print(truth.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"sampler: 4 chains x ({warmup} warmup + {draws} draws), vectorized, seed {args.seed}; "
          f"jax {jax.__version__}, numpyro {numpyro.__version__}, devices {jax.devices()}\n")

    # float32 variants first: fit_law switches JAX to float64 for the rest of the process
    # (fit_naive sets the precision explicitly anyway; the dtype column shows what was used).
    order = sorted(variants, key=lambda v: (v == "b" or (v in NAIVE and NAIVE[v][2]), v))
    results = {}
    for v in order:
        print(f"fitting {v}: {LABELS[v]} ...", flush=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if v == "b":
                results[v] = fit_bayescale(runs, truth, warmup=warmup, draws=draws, seed=args.seed)
            else:
                _, centred, x64 = NAIVE[v]
                results[v] = fit_naive(runs, truth, centred=centred, x64=x64, warmup=warmup, draws=draws,
                                       seed=args.seed, max_tree_depth=SamplerSettings().max_tree_depth)
        for msg in dict.fromkeys(str(w.message).splitlines()[0] for w in caught
                                 if issubclass(w.category, UserWarning)):
            print(f"  warning: {msg}")
        print(f"  done in {results[v]['wall [s]']:.1f} s", flush=True)

    table = pd.DataFrame([{"variant": f"{v}  {LABELS[v]}", **results[v]} for v in variants])
    print()
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.to_string(index=False, formatters={
            "max R-hat": "{:.3f}".format, "min bulk ESS": "{:.0f}".format,
            "min bulk ESS (L_inf, alpha)": "{:.0f}".format, "wall [s]": "{:.1f}".format}))
    print(f"\nR-hat and ESS from az.summary(kind='diagnostics') over every posterior quantity (sampled and "
          f"per-curve derived); ESS is out of {4 * draws} draws. Wall time includes compilation and diagnostics; "
          "b also includes its posterior predictive.")
    return table


if __name__ == "__main__":
    main()
