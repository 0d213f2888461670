"""Compute-optimal allocation for ``L(N, D) = E + A/N^alpha + B/D^beta``, on posterior draws.

Every function takes ``draws``: a dict of arrays ``E``, ``A``, ``B``, ``alpha``, ``beta`` of equal
shape (S,), e.g. ``fit.natural_draws()`` of a ``law="chinchilla"`` fit, and works draw by draw,
so every result is a posterior (take quantiles over axis 0).

With compute ``C = k N D`` (``k = flops_per_param_token``, 6 by default) the loss along the
IsoFLOP curve is minimised, in closed form, at

    N_opt = G (C/k)^a,  D_opt = (C/k)^b / G,  G = (alpha A / (beta B))^(1/(alpha+beta)),
    a = beta/(alpha+beta),  b = alpha/(alpha+beta),

and the loss at the optimum is ``L*(C) = E + K (C/k)^-gamma`` with ``gamma = alpha beta/(alpha+beta)``
and ``K = A G^-alpha + B G^beta``, which inverts to the budget that reaches a target loss.
With a user-supplied ``flops_per_token(N)`` (C = flops_per_token(N) * D, e.g. ``6N`` plus an
attention term) the optimum is found numerically per draw (grid search, then golden section
on log N). Everything is computed in logs, so large budgets do not overflow.

Usage:
    draws = fit.natural_draws()
    alloc = optimal_allocation(draws, [1e21, 5.76e23])   # dict of (S, 2) arrays
    summarize(alloc, intervals=(0.8,))                      # one row per budget
    required_compute(draws, 1.9)                            # (S, 1) budgets, inf if 1.9 <= E
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["optimal_allocation", "required_compute", "isoflop_loss", "loss_at", "exponents", "summarize",
           "QUANTITIES"]

#: Quantities returned by ``optimal_allocation`` (besides ``compute``), in table order.
QUANTITIES = ("n_opt", "d_opt", "tokens_per_param", "loss_opt", "a", "b")


def _col(draws: Mapping, name: str) -> np.ndarray:
    return np.asarray(draws[name], dtype=np.float64).reshape(-1, 1)


def exponents(draws: Mapping) -> dict:
    """Allocation exponents ``a = beta/(alpha+beta)`` (N_opt ~ C^a) and ``b = alpha/(alpha+beta)``.

    Usage: ``exponents(fit.natural_draws())["a"]``
    """
    alpha, beta = np.asarray(draws["alpha"], np.float64), np.asarray(draws["beta"], np.float64)
    return {"a": beta / (alpha + beta), "b": alpha / (alpha + beta)}


def loss_at(draws: Mapping, n_params, tokens) -> np.ndarray:
    """The law per draw at (N, D), broadcast to shape (S, ...). Usage: ``loss_at(draws, 7e10, 1.4e12)``."""
    log_n = np.log(np.asarray(n_params, np.float64))[None, ...]
    log_d = np.log(np.asarray(tokens, np.float64))[None, ...]
    shape = (-1,) + (1,) * max(log_n.ndim - 1, log_d.ndim - 1)
    get = lambda k: np.asarray(draws[k], np.float64).reshape(shape)  # noqa: E731
    return (get("E") + np.exp(np.log(get("A")) - get("alpha") * log_n)
            + np.exp(np.log(get("B")) - get("beta") * log_d))


def isoflop_loss(draws: Mapping, compute: float, n_params, flops_per_param_token: float = 6.0,
                 flops_per_token: Callable | None = None) -> np.ndarray:
    """Loss along the IsoFLOP curve of budget ``compute`` at model sizes ``n_params``, shape (S, len(n)).

    Tokens are ``D = C / (k N)``, or ``C / flops_per_token(N)``.
    Usage: ``isoflop_loss(draws, 1e21, np.geomspace(1e8, 1e11, 50))``
    """
    n = np.atleast_1d(np.asarray(n_params, np.float64))
    per_token = flops_per_token(n) if flops_per_token is not None else flops_per_param_token * n
    return loss_at(draws, n, float(compute) / np.asarray(per_token, np.float64))


def _log_g(draws: Mapping) -> np.ndarray:
    alpha, beta = _col(draws, "alpha"), _col(draws, "beta")
    return (np.log(alpha) + np.log(_col(draws, "A")) - np.log(beta) - np.log(_col(draws, "B"))) / (alpha + beta)


def _golden_min(f: Callable, lo: np.ndarray, hi: np.ndarray, iters: int = 80) -> np.ndarray:
    """Vectorised golden-section search of a unimodal ``f`` on [lo, hi] (elementwise)."""
    ratio = (np.sqrt(5.0) - 1) / 2
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        left = fc < fd                                   # the minimum lies in [lo, d]
        lo, hi = np.where(left, lo, c), np.where(left, d, hi)
        x = np.where(left, hi - ratio * (hi - lo), lo + ratio * (hi - lo))
        fx = f(x)
        c, d, fc, fd = (np.where(left, x, d), np.where(left, c, x),
                        np.where(left, fx, fd), np.where(left, fc, fx))
    return (lo + hi) / 2


def _numeric_log_n(draws: Mapping, compute: float, flops_per_token: Callable, guess: np.ndarray) -> np.ndarray:
    """log N_opt per draw for one budget with C = flops_per_token(N) * D (grid, then golden section)."""
    E, A, B, alpha, beta = (_col(draws, k) for k in ("E", "A", "B", "alpha", "beta"))

    def loss(log_n):
        n = np.exp(log_n)
        log_d = np.log(compute) - np.log(np.asarray(flops_per_token(n), np.float64))
        return E + np.exp(np.log(A) - alpha * log_n) + np.exp(np.log(B) - beta * log_d)

    offsets = np.linspace(-10.0, 10.0, 201)
    grid = guess + offsets[None, :]                     # (S, 201), a factor e^10 either side
    best = np.argmin(loss(grid), axis=1)[:, None]
    step = offsets[1] - offsets[0]
    centre = np.take_along_axis(grid, best, axis=1)
    return _golden_min(loss, centre - step, centre + step)


def optimal_allocation(draws: Mapping, compute, flops_per_param_token: float = 6.0,
                       flops_per_token: Callable | None = None) -> dict:
    """Posterior of the compute-optimal allocation at each budget in ``compute`` (FLOPs).

    Returns a dict: ``compute`` (n,) and arrays of shape (S, n): ``n_opt``, ``d_opt``,
    ``tokens_per_param`` (D/N), ``loss_opt`` (the law at the optimum), ``a``, ``b`` (exponents,
    constant over budgets; with ``flops_per_token`` they are the large-N limit, 6N-like cost).
    Usage: ``optimal_allocation(fit.natural_draws(), np.geomspace(1e20, 1e25, 11))``
    """
    compute = np.atleast_1d(np.asarray(compute, np.float64))
    if np.any(~np.isfinite(compute)) or np.any(compute <= 0):
        raise ValueError(f"compute must be finite and > 0, got {compute}")
    alpha, beta = _col(draws, "alpha"), _col(draws, "beta")
    a, b = beta / (alpha + beta), alpha / (alpha + beta)
    log_x = np.log(compute / flops_per_param_token)[None, :]
    log_n = _log_g(draws) + a * log_x                   # (S, n)
    if flops_per_token is None:
        log_d = log_x - log_n
    else:
        log_n = np.column_stack([_numeric_log_n(draws, c, flops_per_token, log_n[:, [j]])
                                 for j, c in enumerate(compute)])
        log_d = np.log(compute)[None, :] - np.log(np.asarray(flops_per_token(np.exp(log_n)), np.float64))
    n_opt, d_opt = np.exp(log_n), np.exp(log_d)
    loss = (_col(draws, "E") + np.exp(np.log(_col(draws, "A")) - alpha * log_n)
            + np.exp(np.log(_col(draws, "B")) - beta * log_d))
    ones = np.ones_like(n_opt)
    return {"compute": compute, "n_opt": n_opt, "d_opt": d_opt, "tokens_per_param": d_opt / n_opt,
            "loss_opt": loss, "a": a * ones, "b": b * ones}


def required_compute(draws: Mapping, target_loss, flops_per_param_token: float = 6.0) -> np.ndarray:
    """Budget C (FLOPs) at which the compute-optimal loss reaches ``target_loss``, shape (S, n_targets).

    ``inf`` for draws whose floor E is at or above the target (unreachable at any budget).
    Usage: ``required_compute(fit.natural_draws(), [2.0, 1.9])``
    """
    targets = np.atleast_1d(np.asarray(target_loss, np.float64))[None, :]
    E, A, B, alpha, beta = (_col(draws, k) for k in ("E", "A", "B", "alpha", "beta"))
    log_g = _log_g(draws)
    gamma = alpha * beta / (alpha + beta)
    log_k = np.logaddexp(np.log(A) - alpha * log_g, np.log(B) + beta * log_g)
    gap = targets - E
    with np.errstate(divide="ignore", invalid="ignore"):
        log_x = (log_k - np.log(np.where(gap > 0, gap, 1.0))) / gamma
        out = flops_per_param_token * np.exp(np.minimum(log_x, 700.0))
    return np.where(gap > 0, out, np.inf)


def summarize(alloc: Mapping, intervals: Sequence[float] = (0.8,), leading: Mapping | None = None) -> pd.DataFrame:
    """One row per budget: median and equal-tailed intervals of each quantity of ``optimal_allocation``.

    Columns: ``compute``, the ``leading`` columns (e.g. group labels), then per quantity
    ``<q>_median``, ``<q>_lower_XX``, ``<q>_upper_XX``. Usage: ``summarize(alloc, (0.8, 0.95))``
    """
    out = {"compute": alloc["compute"], **(leading or {})}
    for q in QUANTITIES:
        draws = alloc[q]
        out[f"{q}_median"] = np.median(draws, axis=0)
        for mass in intervals:
            lo, hi = np.quantile(draws, [(1 - mass) / 2, (1 + mass) / 2], axis=0)
            tag = f"{round(100 * mass):d}"
            out[f"{q}_lower_{tag}"], out[f"{q}_upper_{tag}"] = lo, hi
    return pd.DataFrame(out)
