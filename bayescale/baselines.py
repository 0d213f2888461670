"""Point-fit baselines that users would otherwise run: ``scipy.optimize.curve_fit`` per group.

Fits ``L = L_inf + a * x**-alpha`` per group, in centred log-scale for numerical stability,
with ``L_inf`` bounded to [0, min loss) and alpha to (0, 5). The delta-method band is what a
careful user of curve_fit would report: parameter covariance from ``pcov`` pushed through
the law, plus the residual noise for a new run.

Usage: ``pred = curve_fit_forecast(fit_df, new_df, scale="compute_flops", groups=["eval_set"])``
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

__all__ = ["curve_fit_group", "curve_fit_forecast"]


def _law(u, loss_floor, log_reducible, alpha):
    return loss_floor + np.exp(log_reducible - alpha * u)


def curve_fit_group(log_x: np.ndarray, loss: np.ndarray) -> dict | None:
    """Least-squares fit of one curve; None when it fails. Usage: ``curve_fit_group(np.log(x), y)``."""
    center = float(np.mean(log_x))
    u = log_x - center
    floor0 = 0.8 * float(loss.min())
    p0 = (floor0, np.log(max(float(loss.mean()) - floor0, 1e-3)), 0.3)
    bounds = ([0.0, -20.0, 1e-4], [float(loss.min()), 20.0, 5.0])
    try:
        popt, pcov = optimize.curve_fit(_law, u, loss, p0=p0, bounds=bounds, maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    dof = max(len(loss) - 3, 1)
    resid_sd = float(np.sqrt(np.sum((loss - _law(u, *popt)) ** 2) / dof))
    return {"center": center, "popt": popt, "pcov": pcov, "resid_sd": resid_sd, "dof": dof}


def _predict(result: dict, log_x: np.ndarray, interval: float) -> dict:
    u = log_x - result["center"]
    mean = _law(u, *result["popt"])
    eps = 1e-6
    jac = np.stack([(_law(u, *(result["popt"] + eps * np.eye(3)[i])) - mean) / eps for i in range(3)], axis=-1)
    pcov = np.where(np.isfinite(result["pcov"]), result["pcov"], 0.0)
    var = np.einsum("ni,ij,nj->n", jac, pcov, jac) + result["resid_sd"] ** 2
    half = stats.t.ppf((1 + interval) / 2, result["dof"]) * np.sqrt(var)
    return {"median": mean, "lower": mean - half, "upper": mean + half}


def curve_fit_forecast(train: pd.DataFrame, new: pd.DataFrame, *, scale: str, response: str = "loss",
                       groups: Sequence[str] = (), interval: float = 0.9) -> pd.DataFrame:
    """Per-group curve_fit on ``train``; point forecast and delta-method band on ``new``'s rows.

    Returns ``new``'s index with columns ``cf_median``, ``cf_lower``, ``cf_upper`` (NaN where the fit
    failed or the group has no training runs). Usage: see module docstring.
    """
    out = pd.DataFrame(index=new.index, columns=["cf_median", "cf_lower", "cf_upper"], dtype=float)
    keys = list(groups) if groups else None
    train_groups = dict(iter(train.groupby(keys))) if keys else {(): train}
    new_groups = new.groupby(keys) if keys else [((), new)]
    for key, rows in new_groups:
        part = train_groups.get(key)
        if part is None or len(part) < 3:
            continue
        result = curve_fit_group(np.log(part[scale].to_numpy(float)), part[response].to_numpy(float))
        if result is None:
            continue
        pred = _predict(result, np.log(rows[scale].to_numpy(float)), interval)
        out.loc[rows.index, ["cf_median", "cf_lower", "cf_upper"]] = np.column_stack(
            [pred["median"], pred["lower"], pred["upper"]])
    return out
