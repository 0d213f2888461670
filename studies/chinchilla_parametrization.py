"""Study: which sampled parameters make NUTS mix for L(N, D) = E + A/N^alpha + B/D^beta.

All variants write the law as ``E + R_N exp(-alpha uN) + R_D exp(-beta uD)`` with ``uN``, ``uD`` the
log N and log D centred at the data's means, in float64, with 4 chains x 1000 warmup + 1000 draws,
target_accept 0.95, same seed. They differ in what is sampled (see ``bayescale.laws``):

- point (bayescale's default): ``loss_mid`` = the loss at the reference point (uN, uD) = (0, 0), the
  logs of the partial slopes -dL/du there, log alpha, log beta (one-point reference grids);
- minmax: the one-variable law's choice per covariate: a 5-point grid from min to max of the data,
  ``loss_mid`` = the mean loss over the 5 x 5 product grid, least-squares slopes over the grids;
- quantile: as minmax with grids at the 10%..90% quantiles of the data;
- natural: E, log R_N, log R_D, log alpha, log beta (a direct NumPyro model written here).

Datasets: the Chinchilla points (all 245, and Epoch's 240) with a Student-t likelihood; a simulated
IsoFLOP campaign (3 budgets x 6 sizes, Hoffmann's Approach 3 truth, noise 0.01) with a Normal one;
one of Porian et al.'s configurations (owt2, Kaplan setup, 113 runs) with a Student-t one.
Prints per variant and dataset: max R-hat and min bulk ESS over the sampled and derived quantities,
divergences, mean leapfrog steps per draw and wall time (compilation included).

Usage: ``python studies/chinchilla_parametrization.py [--quick]`` (about 4 minutes on 2 cores;
``--quick``: 300 warmup + 300 draws)
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from pathlib import Path

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from numpyro.infer import MCMC, NUTS, init_to_median

from bayescale import ConvergenceWarning, ModelSpec, SamplerSettings, fit_law, load_runs
from bayescale.simulate import simulate_isoflop_runs

ROOT = Path(__file__).resolve().parents[1]
PORIAN_CONFIG = "owt2|base|long|kaplan|kaplan|train"


def datasets() -> dict:
    chin = load_runs(ROOT / "data" / "chinchilla_epoch.csv.gz", scale="compute_flops")
    porian = load_runs(ROOT / "data" / "porian_isoflop.csv.gz", scale="flops_budget",
                       query=f"config_id == {PORIAN_CONFIG!r}")
    sim = load_runs(simulate_isoflop_runs([1e18, 1e19, 1e20], 6, noise_sd=0.01, seed=0), scale="compute_flops")
    return {"chinchilla 245 (t)": (chin, "student_t"),
            "chinchilla 240 (t)": (chin.subset(~chin.data["row_id"].isin(range(5)).to_numpy()), "student_t"),
            "simulated 18 (normal)": (sim, "normal"),
            "porian owt2 kaplan (t)": (porian, "student_t")}


def grid_spec(runs, likelihood: str, kind: str) -> ModelSpec:
    """bayescale's spec with its reference grids replaced (``point`` keeps the default)."""
    spec = ModelSpec.from_runs(runs, law="chinchilla", likelihood=likelihood)
    if kind == "point":
        return spec
    grids = []
    for col, ref in zip(spec.covariate_columns, spec.law_log_refs):
        u = np.log(runs.data[col].to_numpy(np.float64)) - ref
        pts = np.linspace(u.min(), u.max(), 5) if kind == "minmax" else np.quantile(u, np.linspace(0.1, 0.9, 5))
        grids.append(tuple(float(g) for g in pts))
    return dataclasses.replace(spec, grids=tuple(grids), grid=grids[0])


def natural_model(uN, uD, y_loc, y_range, likelihood, y=None):
    """E, log R_N, log R_D, log alpha, log beta sampled directly (centred covariates)."""
    e = numpyro.sample("E", dist.Normal(y_loc, y_range))
    log_rn = numpyro.sample("log_R_N", dist.Normal(np.log(y_range), 2.0))
    log_rd = numpyro.sample("log_R_D", dist.Normal(np.log(y_range), 2.0))
    alpha = jnp.exp(numpyro.sample("log_alpha", dist.Normal(np.log(0.25), 0.75)))
    beta = jnp.exp(numpyro.sample("log_beta", dist.Normal(np.log(0.25), 0.75)))
    mean = e + jnp.exp(log_rn - alpha * uN) + jnp.exp(log_rd - beta * uD)
    sigma = numpyro.sample("sigma", dist.HalfNormal(0.1 * y_range / 4))
    if likelihood == "student_t":
        nu = numpyro.sample("nu", dist.Gamma(2.0, 0.1))
        numpyro.sample("obs", dist.StudentT(nu, mean, sigma), obs=y)
    else:
        numpyro.sample("obs", dist.Normal(mean, sigma), obs=y)


def run_natural(runs, likelihood: str, settings: SamplerSettings) -> dict:
    numpyro.enable_x64()
    n, d = runs.data["params"].to_numpy(np.float64), runs.data["tokens"].to_numpy(np.float64)
    y = runs.data["loss"].to_numpy(np.float64)
    args = dict(uN=np.log(n) - np.log(n).mean(), uD=np.log(d) - np.log(d).mean(), y_loc=float(y.min()),
                y_range=float(np.ptp(y)), likelihood=likelihood, y=y)
    kernel = NUTS(natural_model, target_accept_prob=settings.target_accept, init_strategy=init_to_median(num_samples=15))
    mcmc = MCMC(kernel, num_warmup=settings.warmup, num_samples=settings.draws, num_chains=settings.chains,
                chain_method="parallel" if jax.local_device_count() >= settings.chains else "vectorized",
                progress_bar=False)
    t0 = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(settings.seed), **args, extra_fields=("diverging", "num_steps"))
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    wall = time.perf_counter() - t0
    stats = mcmc.get_extra_fields(group_by_chain=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.summary(az.from_dict({"posterior": samples}), kind="diagnostics", round_to="none")
    return {"max_rhat": table["r_hat"].max(), "min_ess_bulk": table["ess_bulk"].min(),
            "divergences": int(np.sum(stats["diverging"])), "mean_steps": float(np.mean(stats["num_steps"])),
            "wall_s": wall}


def run_bayescale(runs, likelihood: str, kind: str, settings: SamplerSettings) -> dict:
    spec = grid_spec(runs, likelihood, kind)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = fit_law(runs, spec=spec, settings=dataclasses.replace(settings, posterior_predictive=False))
    d = fit.diagnostics
    return {"max_rhat": d.max_rhat, "min_ess_bulk": d.min_ess_bulk, "divergences": d.n_divergent,
            "mean_steps": float(np.mean(fit.tree.sample_stats["n_steps"].values)),
            "wall_s": time.perf_counter() - t0}


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n = 300 if args.quick else 1000
    settings = SamplerSettings(warmup=n, draws=n, seed=args.seed)
    rows = []
    for data_label, (runs, likelihood) in datasets().items():
        for kind in ("point", "minmax", "quantile", "natural"):
            res = (run_natural(runs, likelihood, settings) if kind == "natural"
                   else run_bayescale(runs, likelihood, kind, settings))
            rows.append({"data": data_label, "variant": kind, **res})
            print(f"{data_label:24s} {kind:9s} max R-hat {res['max_rhat']:.3f}  min bulk ESS {res['min_ess_bulk']:6.0f}  "
                  f"divergences {res['divergences']:3d}  steps/draw {res['mean_steps']:6.1f}  {res['wall_s']:5.1f} s",
                  flush=True)
    return pd.DataFrame(rows)


if __name__ == "__main__":
    main()
