"""Model comparison by PSIS-LOO (ArviZ), with Pareto-k warnings surfaced.

Pointwise log-likelihoods of the fitted runs are computed from the posterior (law mean per draw,
Normal or Student-t noise) and added to the fit's DataTree as ``log_likelihood``; ``loo`` wraps
``arviz.loo`` and ``compare_fits`` wraps ``arviz.compare``. Runs whose Pareto k exceeds 0.7 make the
PSIS estimate unreliable: a ``LOOWarning`` names how many and which, with a suggested action.

Usage:
    fits = {"normal": fit_law(runs), "student_t": fit_law(runs, likelihood="student_t")}
    print(compare_fits(fits))          # elpd_loo, p_loo, elpd_diff, weight, ..., n_bad_pareto_k
"""

from __future__ import annotations

import warnings

import arviz_base
import arviz_stats
import numpy as np
import pandas as pd
from scipy import stats

from .fit import Fit, fitted_means
from .model import model_data

__all__ = ["log_likelihood", "loo", "compare_fits", "LOOWarning", "PARETO_K_MAX"]

#: Pareto k above which PSIS-LOO is unreliable for a run (Vehtari et al. 2017/2024).
PARETO_K_MAX = 0.7


class LOOWarning(UserWarning):
    """PSIS-LOO is unreliable for some runs (Pareto k > 0.7)."""


def log_likelihood(fit: Fit) -> np.ndarray:
    """Pointwise log-likelihood of the fitted runs, shape (chain, draw, run). Usage: ``log_likelihood(fit)``."""
    spec, post = fit.spec, fit.tree.posterior
    data = model_data(fit.runs, spec)
    mean = fitted_means(post, spec, data)
    sigma = np.asarray(post["sigma"].values)[..., None]
    if spec.likelihood == "student_t":
        return stats.t.logpdf(data["y"], np.asarray(post["nu"].values)[..., None], mean, sigma)
    return stats.norm.logpdf(data["y"], mean, sigma)


def _with_log_likelihood(fit: Fit):
    tree = fit.tree
    if "log_likelihood" not in tree.children:
        tree["log_likelihood"] = arviz_base.from_dict({"log_likelihood": {"obs": log_likelihood(fit)}},
                                                      dims={"obs": ["run"]})["log_likelihood"]
    return tree


def loo(fit: Fit, name: str = "fit"):
    """PSIS-LOO of a fit (``arviz.loo`` result, ``pointwise=True``); warns when Pareto k > 0.7.

    Usage: ``res = loo(fit); res.elpd, res.pareto_k``
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = arviz_stats.loo(_with_log_likelihood(fit), pointwise=True)
    k = np.asarray(res.pareto_k).ravel()
    bad = np.flatnonzero(k > PARETO_K_MAX)
    if bad.size:
        rows = fit.runs.data["row"].to_numpy()[bad] if "row" in fit.runs.data else bad
        warnings.warn(f"{name}: PSIS-LOO is unreliable for {bad.size} of {k.size} runs (Pareto k > {PARETO_K_MAX}; "
                      f"input rows {[int(r) for r in rows[:10]]}): they are influential or the model misfits them. "
                      "Check those runs, try likelihood='student_t', or use K-fold cross-validation "
                      "(arviz.loo_kfold).",
                      LOOWarning, stacklevel=2)
    return res


def compare_fits(fits: dict[str, Fit], round_to: int | str = "auto") -> pd.DataFrame:
    """Rank fits of the same runs by PSIS-LOO (``arviz.compare``), plus ``n_bad_pareto_k`` per fit.

    Works across laws (e.g. ``{"power": ..., "saturating": ..., "broken": ...}`` of the same runs).
    ``round_to``: ArviZ's rounding ("auto": elpd to the digits its standard error supports; "none": raw).
    Usage: ``compare_fits({"normal": fit_a, "student_t": fit_b})``
    """
    results = {name: loo(fit, name) for name, fit in fits.items()}
    table = arviz_stats.compare(results, round_to=round_to)
    table["n_bad_pareto_k"] = [int(np.sum(np.asarray(results[n].pareto_k) > PARETO_K_MAX)) for n in table.index]
    return table
