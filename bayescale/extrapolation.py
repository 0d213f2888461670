"""Extrapolation error: how far a law fitted to small runs drifts from the truth beyond them.

A fit's bands are conditional on the law holding beyond the data; at 10-300x the largest run the
law itself is the larger error (issue #5's backtests: bands covering 54-61% instead of 90%). The
extrapolation error is a relative discrepancy whose sd grows linearly in log-distance beyond the
group's largest fitted scale:

    y = mu(x) + tau * d(x) * |mu(x)| * z + noise,   z ~ Normal(0, 1),   d(x) = ln max(1, x / x_max),

so ``tau`` is the sd per e-fold of extrapolation (``tau * ln 10`` per decade). ``tau`` has a
half-normal prior and a grid posterior from the pointwise predictive densities of runs held out of
the training data itself (``bayescale.backtest.calibrate_extrapolation`` fits and scores them);
inside the fitted range (d = 0) nothing changes. A Student-t fit uses a t density with the
discrepancy added to its scale (an approximation of the convolution).

Usage:
    fit = fit_law(runs)
    cal = calibrate_extrapolation(fit)               # bayescale.backtest
    fit.forecast([1e23], group="c4_val", calibration=cal)
    fit.required_scale(2.5, group="c4_val", calibration=cal)

In inverse planning each posterior draw is one path, ``mu(x) * (1 + tau * d(x) * z)`` with one ``z``
per draw (the law is off by a fraction that grows with distance), so at every scale the path has the
forecast's distribution; the required scale is where the path first reaches the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

__all__ = ["ExtrapolationCalibration", "extrapolation_distance", "predictive_logpdf", "tau_loglik", "tau_weights",
           "tau_posterior", "first_crossing", "SEARCH_E_FOLDS"]

#: Inverse planning with the extrapolation error searches this many e-folds beyond the data (a factor
#: e^40 = 2e17 in scale); a target not reached there counts as unreachable.
SEARCH_E_FOLDS = 40.0


def extrapolation_distance(scale_over_max_fitted) -> np.ndarray:
    """E-folds beyond the largest fitted scale, ``ln max(1, ratio)`` (0 inside the data).
    Usage: ``extrapolation_distance(fc["scale_over_max_fitted"])``"""
    return np.log(np.maximum(np.asarray(scale_over_max_fitted, dtype=np.float64), 1.0))


def predictive_logpdf(y, mu, sigma, nu, distance, tau) -> np.ndarray:
    """Log density of runs ``y`` (n,) under law draws ``mu`` (S, n), noise ``sigma`` (S, 1), optional
    Student-t ``nu`` (S, 1), extrapolation ``distance`` (n,) and ``tau`` (scalar or (S, 1)); (S, n).
    Usage: ``predictive_logpdf(y, mu, sigma, None, d, 0.01)``
    """
    scale = np.sqrt(sigma ** 2 + (tau * distance * np.abs(mu)) ** 2)
    if nu is None:
        return stats.norm.logpdf(y, mu, scale)
    return stats.t.logpdf(y, nu, mu, scale)


def tau_loglik(y, mu, sigma, nu, distance, grid: np.ndarray) -> np.ndarray:
    """Log likelihood of each ``tau`` in ``grid``: the sum over runs of the log of each run's posterior
    predictive density (averaged over the draws). Usage: ``tau_loglik(y, mu, sigma, None, d, grid)``"""
    logp = np.empty(len(grid))
    for i, tau in enumerate(grid):
        dens = predictive_logpdf(y, mu, sigma, nu, distance, tau)
        logp[i] = np.sum(special.logsumexp(dens, axis=0) - np.log(dens.shape[0]))
    return logp


def tau_weights(loglik: np.ndarray, prior_scale: float, grid: np.ndarray) -> np.ndarray:
    """Grid posterior weights of ``tau``: half-normal prior times the likelihood. Usage: internal."""
    logp = loglik + stats.halfnorm.logpdf(grid, scale=prior_scale)
    w = np.exp(logp - logp.max())
    return w / w.sum()


def tau_posterior(y, mu, sigma, nu, distance, prior_scale: float, grid: np.ndarray) -> np.ndarray:
    """Grid posterior weights of ``tau`` from held-out runs (``tau_loglik``, ``tau_weights``). Usage: internal."""
    return tau_weights(tau_loglik(y, mu, sigma, nu, distance, grid), prior_scale, grid)


def first_crossing(log_x: np.ndarray, paths: np.ndarray, target: float) -> np.ndarray:
    """First ``log_x`` (G,) at which each path (S, G) falls to ``target``, linearly interpolated between
    grid points; ``inf`` where it never does. Usage: ``first_crossing(np.log(x), loss_paths, 2.5)``"""
    below = paths <= target
    hit = below.any(axis=1)
    j = np.argmax(below, axis=1)
    i = np.maximum(j - 1, 0)
    rows = np.arange(len(paths))
    y0, y1 = paths[rows, i], paths[rows, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where((j > 0) & (y0 != y1), (y0 - target) / (y0 - y1), 0.0)
    out = log_x[i] + np.clip(frac, 0.0, 1.0) * (log_x[j] - log_x[i])
    return np.where(hit, out, np.inf)


@dataclass
class ExtrapolationCalibration:
    """Posterior of the extrapolation error ``tau`` (relative sd per e-fold beyond the data).

    ``grid``/``weights``: the grid posterior; ``n_runs``: held-out runs it was learned from, at
    ``distance_range`` e-folds beyond their fits; ``diagnostics``: the inner fit's (None when learned
    from other campaigns' backtests, ``bayescale.backtest.transfer_calibration``).
    Usage: ``cal.summary()``, ``fit.forecast(x, calibration=cal)``
    """

    grid: np.ndarray
    weights: np.ndarray
    prior_scale: float
    n_runs: int
    distance_range: tuple
    diagnostics: object = None

    def draws(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` draws of ``tau`` (grid values jittered within their cell). Usage: ``cal.draws(4000, rng)``"""
        step = self.grid[1] - self.grid[0]
        pick = rng.choice(len(self.grid), size=n, p=self.weights)
        return np.maximum(self.grid[pick] + step * (rng.random(n) - 0.5), 0.0)

    def quantile(self, q) -> np.ndarray:
        """Posterior quantiles of ``tau``. Usage: ``cal.quantile([0.05, 0.5, 0.95])``"""
        return np.interp(q, np.cumsum(self.weights), self.grid)

    def summary(self) -> dict:
        """Median and 90% interval of ``tau``, per e-fold and as % per decade of extrapolation."""
        lo, med, hi = self.quantile([0.05, 0.5, 0.95])
        return {"tau_median": float(med), "tau_lower_90": float(lo), "tau_upper_90": float(hi),
                "pct_per_decade_median": float(100 * med * np.log(10)),
                "pct_per_decade_upper_90": float(100 * hi * np.log(10)),
                "n_runs": self.n_runs, "distance_e_folds": self.distance_range, "prior_scale": self.prior_scale}

    def __str__(self) -> str:
        s = self.summary()
        return (f"extrapolation error: {s['pct_per_decade_median']:.2f}% per decade beyond the data "
                f"(90% up to {s['pct_per_decade_upper_90']:.2f}%), learned from {self.n_runs} held-out runs "
                f"at {self.distance_range[0]:.2f}-{self.distance_range[1]:.2f} e-folds")
