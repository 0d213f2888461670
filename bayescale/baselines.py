"""Point-fit baselines that users would otherwise run: ``scipy.optimize.curve_fit`` per group.

Fits ``L = L_inf + a * x**-alpha`` per group, in centred log-scale for numerical stability,
with ``L_inf`` bounded to [0, min loss) and alpha to (0, 5). The delta-method band is what a
careful user of curve_fit would report: parameter covariance from ``pcov`` pushed through
the law, plus the residual noise for a new run.

Usage: ``pred = curve_fit_forecast(fit_df, new_df, scale="compute_flops", groups=["eval_set"])``
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

__all__ = ["curve_fit_group", "curve_fit_forecast", "huber_fit", "huber_law", "huber_bootstrap", "HUBER_DELTA"]


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


# ---- Huber-loss L-BFGS grid fit (Hoffmann et al. 2022; Besiroglu et al. 2024) and its bootstrap -----------

#: Huber delta on log-loss residuals, as in Hoffmann et al. (2022) and Besiroglu et al. (2024).
HUBER_DELTA = 1e-3


def _huber_objective(theta: np.ndarray, u: np.ndarray, log_y: np.ndarray, delta: float):
    """Huber loss of ``log L = logsumexp(e, a_j - alpha_j u_j) - log y`` and its gradient.

    ``theta = (e, a_1..a_k, alpha_1..alpha_k)``; ``u`` has shape (n, k) (centred log covariates).
    """
    k = u.shape[1]
    e, a, alpha = theta[0], theta[1:1 + k], theta[1 + k:]
    terms = np.column_stack([np.full(len(u), e), a[None, :] - alpha[None, :] * u])
    top = terms.max(axis=1, keepdims=True)
    w = np.exp(terms - top)
    lse = top[:, 0] + np.log(w.sum(axis=1))
    w = w / w.sum(axis=1, keepdims=True)
    r = lse - log_y
    small = np.abs(r) <= delta
    value = np.sum(np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)))
    h = np.clip(r, -delta, delta)
    grad = np.concatenate([[np.sum(h * w[:, 0])], (h[:, None] * w[:, 1:]).sum(axis=0),
                           -(h[:, None] * w[:, 1:] * u).sum(axis=0)])
    return value, grad


def huber_law(theta: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Loss of the fitted law ``exp(e) + sum_j exp(a_j - alpha_j u_j)`` at centred log covariates ``u`` (n, k).

    Usage: ``huber_law(fit["theta"], np.log(x)[:, None] - fit["center"])``
    """
    theta = np.asarray(theta, dtype=np.float64)
    k = u.shape[1]
    return np.exp(theta[0]) + np.exp(theta[1:1 + k][None, :] - theta[1 + k:][None, :] * u).sum(axis=1)


def huber_fit(log_x: np.ndarray, loss: np.ndarray, *, delta: float = HUBER_DELTA,
              inits: Sequence[np.ndarray] | None = None) -> dict | None:
    """Huber-loss fit of ``L = E + sum_j A_j x_j^-alpha_j`` by L-BFGS-B from a grid of initialisations.

    The method of Hoffmann et al. (2022, Approach 3) as replicated by Besiroglu et al. (2024): Huber
    loss (``delta`` = 1e-3) on log-loss residuals, ``log L = LSE(e, a_j - alpha_j log x_j)``, best of a
    grid of starts. Covariates are centred (``u = log x - mean log x``) so that one grid fits any units;
    ``a_j`` is then the log reducible loss at the data's centre. ``log_x``: (n,) or (n, k).
    Returns ``{"theta", "center", "objective", "resid_log"}`` or None when every start fails.
    Usage: ``huber_fit(np.log(x), y)``, ``huber_fit(np.log(np.column_stack([N, D])), y)``
    """
    log_x = np.asarray(log_x, dtype=np.float64)
    log_x = log_x[:, None] if log_x.ndim == 1 else log_x
    loss = np.asarray(loss, dtype=np.float64)
    center = log_x.mean(axis=0)
    u, log_y, k = log_x - center, np.log(loss), log_x.shape[1]
    if inits is None:
        e_grid = np.log(loss.min() * np.array([0.1, 0.4, 0.7, 0.95]))
        a_grid = [-4.0, -2.5, -1.0, 0.5] if k == 1 else [-3.0, -1.0, 0.5]
        al_grid = [0.05, 0.15, 0.3, 0.6, 1.2] if k == 1 else [0.1, 0.3, 0.8]
        inits = [np.array([e, *a, *al]) for e in e_grid for a in itertools.product(a_grid, repeat=k)
                 for al in itertools.product(al_grid, repeat=k)]
    bounds = [(None, None)] * (1 + k) + [(1e-4, 5.0)] * k
    best = None
    for x0 in inits:
        try:
            res = optimize.minimize(_huber_objective, x0, args=(u, log_y, delta), jac=True, method="L-BFGS-B",
                                    bounds=bounds, options={"maxiter": 1000})
        except (ValueError, FloatingPointError):  # pragma: no cover - defensive
            continue
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best = res
    if best is None:
        return None
    return {"theta": best.x, "center": center, "objective": float(best.fun),
            "resid_log": log_y - np.log(huber_law(best.x, u))}


def huber_bootstrap(log_x: np.ndarray, loss: np.ndarray, new_log_x: np.ndarray, *, n_boot: int = 200,
                    seed: int = 0, delta: float = HUBER_DELTA) -> dict | None:
    """Huber point fit plus a nonparametric bootstrap (runs resampled with replacement, each refit by L-BFGS-B
    from the point fit) at ``new_log_x``.

    Returns ``{"point": (m,), "law": (n_boot, m), "predictive": (n_boot, m)}``: the point forecast, the
    bootstrap draws of the law and of a new run (law times a resampled log-residual of the point fit), or
    None when the point fit fails. Usage: ``huber_bootstrap(np.log(x), y, np.log(x_new), n_boot=200)``
    """
    log_x = np.asarray(log_x, dtype=np.float64)
    log_x = log_x[:, None] if log_x.ndim == 1 else log_x
    new_log_x = np.asarray(new_log_x, dtype=np.float64)
    new_log_x = new_log_x[:, None] if new_log_x.ndim == 1 else new_log_x
    point = huber_fit(log_x, loss, delta=delta)
    if point is None:
        return None
    rng = np.random.default_rng(seed)
    n, u_new = len(loss), new_log_x - point["center"]
    point_law = huber_law(point["theta"], u_new)
    loss = np.asarray(loss, dtype=np.float64)
    law = np.empty((n_boot, len(new_log_x)))
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        start = _recentre(point["theta"], point["center"], log_x[idx].mean(axis=0))  # same law, new centre
        res = huber_fit(log_x[idx], loss[idx], delta=delta, inits=[start])
        law[b] = point_law if res is None else huber_law(res["theta"], new_log_x - res["center"])
    resid = rng.choice(point["resid_log"], size=law.shape)
    return {"point": point_law, "law": law, "predictive": law * np.exp(resid)}


def _recentre(theta: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Same law, covariates centred at ``new`` instead of ``old``: a_j -> a_j - alpha_j (new_j - old_j)."""
    k = len(old)
    out = np.array(theta, dtype=np.float64)
    out[1:1 + k] = theta[1:1 + k] - theta[1 + k:] * (new - old)
    return out
