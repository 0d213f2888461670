"""Which per-curve parameters to sample centred, chosen from the data (``ModelSpec.from_runs`` calls it).

A curve-level parameter is best sampled centred when the data pin each curve's value down more
tightly than the values vary across curves, and non-centred otherwise (Papaspiliopoulos, Roberts and
Skold 2007): centred, curves that all share one slope open a funnel at a near-zero spread, where NUTS
diverges; non-centred, curves the data pin down make long, narrow trajectories (tree-depth hits).

The law's pinned parameters (level and log slopes over the data, ``Law.pinned``) are compared by
a per-curve fit of the law: least squares, regularised by the population prior (a per-curve Laplace
approximation), with the noise pooled over the curves that have more runs than parameters. The spread
across curves is what the fits vary by beyond the factor effects (crossed designs) or their mean, less
their standard errors' share; a parameter is centred when that spread is at least
``CENTER_MIN_SIGNAL`` times its rms standard error.

Usage: ``pinned_centring(runs, law, logs, refs, grids, priors, factor_effects)`` (internal)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize

from .laws import Law
from .runs import RunTable

__all__ = ["CENTER_MIN_SIGNAL", "MIN_SPREAD_DOF", "MAX_RUNS_PER_CURVE", "pinned_centring"]

#: Centre a pinned parameter when its spread across curves is at least this many standard errors:
#: 1, where the data and the population weigh equally (the theory's crossover). Measured signals at
#: the backtest's training runs (``studies/backtest.py``, seed 0): routed LMs' log slope 0.8 (centred:
#: 12 divergences; non-centred: 2) and level 2.4 (both non-centred: every draw hits the tree-depth cap);
#: Gadre's log slope 3.4 (5.0 on all six models, where non-centring made 1022 of 4000 draws hit the
#: cap). Pythia's 4 curves (3 degrees of freedom) keep the default, centred (1-5 divergences; non-centred
#: 0 at seeds 0-1).
CENTER_MIN_SIGNAL = 1.0
#: The spread across curves needs at least this many degrees of freedom (curves less factor levels) to
#: overrule the default (centred): with fewer its estimate is off by more than half (relative sd > 0.6),
#: e.g. Pythia's 4 curves or a 3-curve simulation, where one draw of the data flips the choice.
MIN_SPREAD_DOF = 5
#: Curves with more runs are thinned to this many for the decision (1e6 rows: 0.94 s -> 0.39 s); the
#: standard errors are then those of 1000 runs, which changes the choice only near the crossover.
MAX_RUNS_PER_CURVE = 1000


def _thin(idx: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    """At most ``MAX_RUNS_PER_CURVE`` of a curve's rows, evenly spaced along its first covariate."""
    if len(idx) <= MAX_RUNS_PER_CURVE:
        return idx
    order = idx[np.argsort(log_x[idx], kind="stable")]
    return order[np.linspace(0, len(order) - 1, MAX_RUNS_PER_CURVE).round().astype(int)]


def _fit_curve(law: Law, u: dict, y: np.ndarray, grids, loc, scale, sigma: float):
    """Per-curve MAP of the law's parameters under Normal(loc, scale) priors: (theta, its Laplace
    covariance, the residuals)."""
    def residuals(theta):
        mean = law.mean(dict(zip(law.params, theta)), u, grids)
        return np.concatenate([(mean - y) / sigma, (theta - loc) / scale])

    res = optimize.least_squares(residuals, loc, method="trf", x_scale=scale)
    jac = res.jac
    return res.x, np.linalg.pinv(jac.T @ jac), residuals(res.x)[: len(y)] * sigma


def pinned_centring(runs: RunTable, law: Law, logs: list, refs: list, grids, priors,
                    factor_effects: bool) -> tuple[str, ...]:
    """The law's pinned parameters to sample centred (all of them when the data cannot tell: under
    ``MIN_SPREAD_DOF`` degrees of freedom for the spread, or under 3 for the noise). Usage: see the module docstring."""
    pinned = law.pinned
    if not runs.groups:
        return pinned
    u_all = {name: x - r for name, x, r in zip(law.covariates, logs, refs)}
    y_all = runs.data[runs.response].to_numpy(np.float64)
    loc = np.array([priors.loc_scale(p)[0] for p in law.params])
    scale = np.array([priors.loc_scale(p)[1] for p in law.params])
    groups = runs.data[list(runs.groups)].groupby(list(runs.groups), sort=False).indices
    curves = [(k if isinstance(k, tuple) else (k,), _thin(idx, logs[0])) for k, idx in groups.items()]
    n_par = len(law.params)
    dof = sum(len(idx) - n_par for _, idx in curves if len(idx) > n_par)
    if len(curves) < 3 or dof < 3:
        return pinned
    sigma = float(priors.noise_sd)
    for _ in range(2):  # noise from the per-curve fits, then the fits again at that noise
        fits = [_fit_curve(law, {k: v[idx] for k, v in u_all.items()}, y_all[idx], grids, loc, scale, sigma)
                for _, idx in curves]
        rss = sum(float(np.sum(r ** 2)) for (_, idx), (_, _, r) in zip(curves, fits) if len(idx) > n_par)
        sigma = max(np.sqrt(rss / dof), 1e-12)
    which = [law.params.index(p) for p in pinned]
    est = np.array([theta[which] for theta, _, _ in fits])
    se2 = np.array([np.diag(cov)[which] for _, cov, _ in fits])
    design = np.ones((len(curves), 1))
    if factor_effects:
        codes = pd.DataFrame([k for k, _ in curves], columns=list(runs.groups)).astype(str)
        design = np.column_stack([design, pd.get_dummies(codes, drop_first=True).to_numpy(np.float64)])
    rank = np.linalg.matrix_rank(design)
    if len(curves) - rank < MIN_SPREAD_DOF:
        return pinned
    resid = est - design @ np.linalg.lstsq(design, est, rcond=None)[0]
    spread2 = np.maximum(np.sum(resid ** 2, axis=0) / (len(curves) - rank) - se2.mean(axis=0), 0.0)
    signal = np.sqrt(spread2 / se2.mean(axis=0))
    return tuple(p for p, s in zip(pinned, signal) if s >= CENTER_MIN_SIGNAL)
