"""Functional forms, written once as array math (NumPy, JAX or PyTensor through ``xp``).

The saturating law ``L(x) = L_inf + a * x**(-alpha)`` is sampled in a *reference
parametrization* that removes the notorious L_inf / a / alpha ridge. With centred
log-scale ``u = log(x) - log_x_ref`` and a fixed grid ``g`` of points spanning the fitted
log-scale range (``ModelSpec.grid``), write ``B(u) = (1 - exp(-alpha*u)) / alpha``
(which tends to ``u`` as alpha -> 0) and

- ``loss_mid`` = the law's mean loss over the grid (pinned down by the data),
- ``slope``    = the law's least-squares slope -dL/du over the grid (pinned down by the data),
- ``alpha``    = the exponent, i.e. the curvature left over (weakly identified with few points),

    L(u) = loss_mid - slope * (B(u) - mean_g B) / beta(alpha),  beta = cov_g(B, g) / var(g).

Changing alpha then bends the curve without moving its level or average slope over the
data, so the three parameters are nearly orthogonal in the posterior (the orthogonal
polynomial idea applied to the power law). The natural parameters follow exactly.

Usage: ``saturating_loss(u, loss_mid=3.5, slope=0.3, alpha=0.2, grid=np.linspace(-3, 3, 5))``
"""

from __future__ import annotations

import numpy as np

__all__ = ["saturating_loss", "floor_and_reducible", "natural_params", "log_scale_to_reach"]


def _b(u, alpha, xp):
    return -xp.expm1(-alpha * u) / alpha


def _basis_moments(alpha, grid, xp):
    """mean_g B and beta = cov_g(B, g)/var(g), broadcast over ``alpha``."""
    grid = xp.asarray(grid)
    b = _b(grid, alpha[..., None], xp)
    b_mean = b.mean(axis=-1)
    g_c = grid - grid.mean()
    beta = ((b - b_mean[..., None]) * g_c).mean(axis=-1) / (g_c * g_c).mean()
    return b_mean, beta


def saturating_loss(u, loss_mid, slope, alpha, grid, xp=np):
    """Expected loss at centred log-scale ``u``. Usage: ``saturating_loss(u, 3.5, 0.3, 0.2, grid)``."""
    b_mean, beta = _basis_moments(xp.asarray(alpha), grid, xp)
    return loss_mid - slope * (_b(u, alpha, xp) - b_mean) / beta


def floor_and_reducible(loss_mid, slope, alpha, grid, xp=np):
    """(L_inf, R0) with ``L(u) = L_inf + R0 * exp(-alpha * u)``. Usage: ``floor_and_reducible(m, s, al, grid)``."""
    b_mean, beta = _basis_moments(xp.asarray(alpha), grid, xp)
    reducible = slope / (beta * alpha)
    return loss_mid + slope * b_mean / beta - reducible, reducible


def natural_params(loss_mid, slope, alpha, grid, log_x_ref: float, xp=np) -> dict:
    """``loss_floor`` (L_inf), ``a`` (per unit of the raw scale) and ``alpha``.

    Usage: ``natural_params(m, s, alpha, grid, log_x_ref=41.3)``
    """
    floor, reducible = floor_and_reducible(loss_mid, slope, alpha, grid, xp)
    return {"loss_floor": floor, "a": reducible * xp.exp(alpha * log_x_ref), "alpha": alpha}


def log_scale_to_reach(target, loss_mid, slope, alpha, grid):
    """Centred log-scale ``u`` where the law reaches ``target``; ``inf`` when target <= L_inf.

    Usage: ``u = log_scale_to_reach(2.5, m, s, alpha, grid)``
    """
    floor, reducible = floor_and_reducible(loss_mid, slope, alpha, grid)
    gap = (target - floor) / reducible
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap > 0, -np.log(np.where(gap > 0, gap, 1.0)) / alpha, np.inf)
