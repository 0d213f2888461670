"""Functional forms, written once as array math (NumPy or JAX through ``xp``).

Every law here is a *sum of saturating power-law terms* in centred log covariates,

    L = E + sum_j R_j * exp(-alpha_j * u_j),      u_j = log(x_j) - log_ref_j,

sampled in a *reference parametrization* that removes the notorious floor / coefficient /
exponent ridge. For each term, with a fixed reference grid ``g_j`` of centred log values,
write ``B(u) = (1 - exp(-alpha*u)) / alpha`` (which tends to ``u`` as alpha -> 0) and

    L(u) = loss_mid - sum_j slope_j * (B(u_j) - mean_g B) / beta_g(alpha_j),

where ``beta_g = cov_g(B, g) / var(g)`` is B's least-squares slope over the grid. Then

- ``loss_mid`` = the law's mean loss over the grid (pinned down by the data),
- ``slope_j``  = the law's least-squares slope -dL/du_j over grid j (pinned down by the data),
- ``alpha_j``  = the exponent, i.e. the curvature left over (weakly identified with few points).

Changing alpha_j then bends the curve without moving its level or average slope over the
data, so the parameters are nearly orthogonal in the posterior (the orthogonal polynomial
idea applied to the power law). A *one-point* grid ``(g0,)`` is the limit of a grid shrinking
to g0: ``loss_mid`` is the loss at g0 and ``slope_j`` the partial slope -dL/du_j there
(``mean_g B = B(g0)``, ``beta_g = B'(g0)``). The natural parameters follow exactly.

Two laws are registered (``LAWS``; see ``Law``):

- ``"saturating"``: ``L(x) = L_inf + a x^-alpha`` (one covariate, the run table's scale), with a
  5-point grid spanning the fitted log-scale range;
- ``"chinchilla"``: ``L(N, D) = E + A/N^alpha + B/D^beta`` (parameters and tokens, Hoffmann et
  al. 2022) with one-point grids at the data's mean log N and log D: ``loss_mid`` is the loss at
  that reference point and ``log_slope_N``/``log_slope_D`` the logs of the partial slopes there.
  A min-to-max grid per covariate (the one-variable choice) puts the corners of the N x D grid
  outside the data, so its mean level is pinned down less well: it took 2.5x (Chinchilla) to 11x
  (a Porian et al. configuration) more leapfrog steps per draw; sampling E, log R_N, log R_D
  directly took 7-11x more (``studies/chinchilla_parametrization.py``).

Usage: ``saturating_loss(u, loss_mid=3.5, slope=0.3, alpha=0.2, grid=np.linspace(-3, 3, 5))``,
``get_law("chinchilla").natural(theta, grids, log_refs)``
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["saturating_loss", "saturating_term", "floor_and_reducible", "natural_params", "log_scale_to_reach",
           "Law", "LAWS", "SATURATING", "CHINCHILLA", "get_law"]


def _b(u, alpha, xp):
    return -xp.expm1(-alpha * u) / alpha


def _basis_moments(alpha, grid, xp):
    """mean_g B and beta = cov_g(B, g)/var(g) (B'(g0) for a one-point grid), broadcast over ``alpha``."""
    grid = xp.asarray(grid)
    if grid.shape[-1] == 1:
        g0 = grid[..., 0]
        return _b(g0, alpha, xp), xp.exp(-alpha * g0)
    b = _b(grid, alpha[..., None], xp)
    b_mean = b.mean(axis=-1)
    g_c = grid - grid.mean()
    beta = ((b - b_mean[..., None]) * g_c).mean(axis=-1) / (g_c * g_c).mean()
    return b_mean, beta


def saturating_term(u, slope, alpha, grid, xp=np):
    """One term of a law, ``R exp(-alpha u)`` minus its level over ``grid``.

    Usage: ``saturating_term(u, 0.3, 0.2, grid)``
    """
    b_mean, beta = _basis_moments(xp.asarray(alpha), grid, xp)
    return -slope * (_b(u, alpha, xp) - b_mean) / beta


def saturating_loss(u, loss_mid, slope, alpha, grid, xp=np):
    """Expected loss at centred log-scale ``u``. Usage: ``saturating_loss(u, 3.5, 0.3, 0.2, grid)``."""
    return loss_mid + saturating_term(u, slope, alpha, grid, xp)


def _term_offsets(slope, alpha, grid, xp):
    """(R, shift) of one term: ``term(u) = R exp(-alpha u) + shift``."""
    b_mean, beta = _basis_moments(xp.asarray(alpha), grid, xp)
    reducible = slope / (beta * alpha)
    return reducible, slope * b_mean / beta - reducible


def floor_and_reducible(loss_mid, slope, alpha, grid, xp=np):
    """(L_inf, R0) with ``L(u) = L_inf + R0 * exp(-alpha * u)``. Usage: ``floor_and_reducible(m, s, al, grid)``."""
    reducible, shift = _term_offsets(slope, alpha, grid, xp)
    return loss_mid + shift, reducible


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


@dataclass(frozen=True)
class Law:
    """A registered law: its covariates, sampled parameters, mean function and natural parameters.

    Sampled parameters (``params``): ``loss_mid``, then one log slope per covariate, then one log
    exponent per covariate. ``roles`` says which run-table column feeds each covariate
    (``"scale"``: ``RunTable.scale``; ``"params"``/``"tokens"``: ``RunTable.params_col``/``tokens_col``).
    Natural parameters (``natural_names``): the floor, one coefficient per covariate (per unit of
    the raw column), one exponent per covariate.
    Usage: ``law = get_law("chinchilla"); law.mean(theta, {"uN": uN, "uD": uD}, law_grids)``
    """

    name: str
    formula: str
    roles: tuple[str, ...]
    covariates: tuple[str, ...]      # model-data names of the centred log covariates
    slopes: tuple[str, ...]          # sampled log slopes, one per covariate
    exponents: tuple[str, ...]       # sampled log exponents, one per covariate
    floor_name: str
    coefficient_names: tuple[str, ...]
    exponent_names: tuple[str, ...]
    one_point_grid: bool             # reference grid: the reference point itself, or points spanning the data

    @property
    def params(self) -> tuple[str, ...]:
        """Sampled per-cell parameters, in model order. Usage: ``law.params``."""
        return ("loss_mid", *self.slopes, *self.exponents)

    @property
    def natural_names(self) -> tuple[str, ...]:
        """Natural parameters, e.g. ``("E", "A", "B", "alpha", "beta")``. Usage: ``law.natural_names``."""
        return (self.floor_name, *self.coefficient_names, *self.exponent_names)

    def mean(self, theta: Mapping, covariates: Mapping, grids: Sequence, xp=np):
        """Expected loss from sampled parameters ``theta`` (log slopes, log exponents) and covariates.

        Usage: ``law.mean({"loss_mid": 3.0, "log_slope": -1.0, "log_alpha": -1.2}, {"u": u}, [grid])``
        """
        out = theta["loss_mid"]
        for cov, slope, expo, grid in zip(self.covariates, self.slopes, self.exponents, grids):
            out = out + saturating_term(covariates[cov], xp.exp(theta[slope]), xp.exp(theta[expo]), grid, xp)
        return out

    def natural(self, theta: Mapping, grids: Sequence, log_refs: Sequence[float], xp=np) -> dict:
        """Natural parameters from sampled ones. Usage: ``law.natural(theta, grids, log_refs)["E"]``."""
        floor = theta["loss_mid"]
        out = {}
        for slope, expo, grid, ref, coef, name in zip(self.slopes, self.exponents, grids, log_refs,
                                                      self.coefficient_names, self.exponent_names):
            alpha = xp.exp(theta[expo])
            reducible, shift = _term_offsets(xp.exp(theta[slope]), alpha, grid, xp)
            floor = floor + shift
            out[coef] = reducible * xp.exp(alpha * ref)
            out[name] = alpha
        return {self.floor_name: floor, **{k: out[k] for k in (*self.coefficient_names, *self.exponent_names)}}


SATURATING = Law(name="saturating", formula="L = L_inf + a * x^-alpha", roles=("scale",), covariates=("u",),
                 slopes=("log_slope",), exponents=("log_alpha",), floor_name="loss_floor",
                 coefficient_names=("a",), exponent_names=("alpha",), one_point_grid=False)

CHINCHILLA = Law(name="chinchilla", formula="L = E + A / N^alpha + B / D^beta", roles=("params", "tokens"),
                 covariates=("uN", "uD"), slopes=("log_slope_N", "log_slope_D"), exponents=("log_alpha", "log_beta"),
                 floor_name="E", coefficient_names=("A", "B"), exponent_names=("alpha", "beta"), one_point_grid=True)

#: Registered laws by name (``fit_law(runs, law=...)``).
LAWS = {law.name: law for law in (SATURATING, CHINCHILLA)}


def get_law(law: str | Law) -> Law:
    """The registered law called ``law`` (or ``law`` itself). Usage: ``get_law("chinchilla")``."""
    if isinstance(law, Law):
        return law
    try:
        return LAWS[law]
    except KeyError:
        raise ValueError(f"unknown law {law!r}; registered laws: {sorted(LAWS)}") from None
