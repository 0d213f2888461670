"""Simulation-based calibration (SBC; Talts et al. 2018) of bayescale's model on a design.

For each replication: draw all parameters and a data set from the model's prior (NumPyro
``Predictive`` on ``build_model(spec)`` with ``spec.priors``), refit with NUTS, and record the rank of
the true value among (thinned) posterior draws. If the sampler and the model are calibrated, each
quantity's ranks are uniform on ``0..L``; ``SBCResult.tests`` gives a chi-square test on binned
ranks and a Kolmogorov-Smirnov test on randomised fractional ranks ``(rank + U) / (L + 1)``.

Quantities ranked: the population means of the law's sampled parameters (``mu_loss_mid``,
``mu_log_slope``, ``mu_log_alpha``; for ``"chinchilla"`` also ``_N``/``_D`` slopes and ``log_beta``),
the noise ``sigma``, and the first curve's law parameters (``cell0_<param>``) when there are groups.

The design (groups, scales, priors, reference grids) is fixed by a template run table: its
responses only set the scale-aware default priors (``bayescale.spec.default_priors``).

Usage:
    template = load_runs(simulate_runs(1, seed=0)[0], scale="compute_flops")
    res = sbc(template, n_reps=100, settings=SamplerSettings(chains=2, warmup=300, draws=300))
    print(res.tests)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import jax
import numpy as np
import numpyro
import pandas as pd
from numpyro.diagnostics import split_gelman_rubin
from numpyro.infer import Predictive
from scipy import stats

from .inference import run_nuts_batched
from .model import build_model, cell_values, model_data, structure_key
from .runs import RunTable
from .spec import ModelSpec, SamplerSettings

__all__ = ["sbc", "SBCResult", "rank_uniformity"]

#: Small sampler for SBC replications (many fits): 2 chains x (300 warmup + 300 draws).
SBC_SETTINGS = SamplerSettings(chains=2, warmup=300, draws=300)


@dataclass
class SBCResult:
    """Ranks and uniformity tests of an SBC run.

    ``ranks``: one row per replication, one column per quantity (0..``n_thin``), plus
    ``max_rhat`` and ``divergences`` of that refit. ``tests``: one row per quantity with ``chi2_p``
    and ``ks_p``. Usage: ``res.tests``, ``res.ranks["mu_log_alpha"].hist()``
    """

    ranks: pd.DataFrame
    tests: pd.DataFrame
    n_thin: int
    spec: ModelSpec


def rank_uniformity(ranks: np.ndarray, n_thin: int, bins: int | None = None, seed: int = 0) -> dict:
    """Chi-square (binned) and KS (randomised fractional ranks) p-values for ranks on ``0..n_thin``.

    Usage: ``rank_uniformity(np.array([3, 50, 97]), n_thin=99)``
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    n = len(ranks)
    bins = bins or int(max(2, min(20, n // 5)))
    frac = (ranks + np.random.default_rng(seed).uniform(size=n)) / (n_thin + 1)
    counts = np.histogram(frac, bins=bins, range=(0.0, 1.0))[0]
    chi2 = stats.chisquare(counts)
    return {"n": n, "bins": bins, "chi2": float(chi2.statistic), "chi2_p": float(chi2.pvalue),
            "ks": float(stats.kstest(frac, "uniform").statistic), "ks_p": float(stats.kstest(frac, "uniform").pvalue)}


def _truths(prior: dict, spec: ModelSpec, codes: np.ndarray) -> dict:
    """Per-replication true values of the ranked quantities, {name: (n_reps,)}."""
    out = {f"mu_{p}": np.asarray(prior["mu"])[:, i] for i, p in enumerate(spec.law_params)}
    out["sigma"] = np.asarray(prior["sigma"])
    if spec.groups:
        theta = cell_values({k: np.asarray(v) for k, v in prior.items()}, spec, codes)  # (reps, params, cells)
        out.update({f"cell0_{p}": theta[:, i, 0] for i, p in enumerate(spec.law_params)})
    return out


def _posterior(samples: dict, spec: ModelSpec) -> dict:
    """Flattened posterior draws of the ranked quantities from grouped-by-chain samples."""
    mu = samples["mu"].reshape(-1, len(spec.law_params))
    out = {f"mu_{p}": mu[:, i] for i, p in enumerate(spec.law_params)}
    out["sigma"] = samples["sigma"].ravel()
    if spec.groups:
        theta = cell_values(samples, spec, spec.cell_level_codes())  # (chain, draw, params, cells)
        out.update({f"cell0_{p}": theta[..., i, 0].ravel() for i, p in enumerate(spec.law_params)})
    return out


def sbc(template: RunTable, *, law: str = "saturating", likelihood: str = "normal", n_reps: int = 100,
        settings: SamplerSettings | None = None, n_thin: int = 99, seed: int = 0,
        spec: ModelSpec | None = None, batch: int = 25) -> SBCResult:
    """Simulation-based calibration of the model for ``template``'s design (see module docstring).

    ``settings``: sampler of each refit (default ``SBC_SETTINGS``); ``n_thin``: posterior draws kept
    (equally spaced) per refit, so ranks lie on ``0..n_thin``; ``spec``: use this spec (priors,
    grids) instead of ``ModelSpec.from_runs(template, law=law, likelihood=likelihood)``; ``batch``:
    replications refitted together in one vectorized program (``bayescale.inference.run_nuts_batched``).
    Usage: ``sbc(template, n_reps=200, seed=1).tests``
    """
    spec = spec or ModelSpec.from_runs(template, law=law, likelihood=likelihood)
    settings = (settings or SBC_SETTINGS).resolved(loss_law=True)
    numpyro.enable_x64(settings.precision == "float64")
    data = model_data(template, spec, with_response=False, layout="rows")  # prior draws of y by row
    prior = Predictive(build_model(spec), num_samples=n_reps)(jax.random.PRNGKey(seed), **data)
    prior = {k: np.asarray(v) for k, v in prior.items()}
    truths = _truths(prior, spec, spec.cell_level_codes())
    # Refits in vectorized batches of one shape: the sampler is compiled once for the whole run.
    model, chunk = build_model(spec), max(1, min(batch, n_reps))
    rows = []
    for start in range(0, n_reps, chunk):
        reps = list(range(start, min(start + chunk, n_reps)))
        padded = reps + [reps[-1]] * (chunk - len(reps))  # keep the shape (no recompiling); extras dropped
        trees, _ = run_nuts_batched(model, [{**data, "y": prior["obs"][r]} for r in padded],
                                    replace(settings, seed=seed + 1 + start), [{}] * chunk, {},
                                    cache_key=("sbc", structure_key(spec)))
        for r, tree in zip(reps, trees):
            samples = {k: np.asarray(v.values) for k, v in tree.posterior.items()}
            draws = _posterior(samples, spec)
            n_draws = len(draws["sigma"])
            keep = np.linspace(0, n_draws - 1, min(n_thin, n_draws)).round().astype(int)
            row = {name: int(np.sum(values[keep] < truths[name][r])) for name, values in draws.items()}
            rhat = [float(np.max(split_gelman_rubin(samples[k]))) for k in ("mu", "sigma")] \
                if settings.chains > 1 else [np.nan]
            row.update(max_rhat=max(rhat), divergences=int(np.sum(tree.sample_stats["diverging"].values)))
            rows.append(row)
    ranks = pd.DataFrame(rows)
    L = min(n_thin, settings.chains * settings.draws)
    tests = pd.DataFrame([{"quantity": name, **rank_uniformity(ranks[name].to_numpy(), L, seed=seed)}
                          for name in truths])
    return SBCResult(ranks=ranks, tests=tests, n_thin=L, spec=spec)
