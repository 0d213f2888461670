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

Four laws are registered (``LAWS``; see ``Law``). Two are sums of saturating terms:

- ``"saturating"``: ``L(x) = L_inf + a x^-alpha`` (one covariate, the run table's scale), with a
  5-point grid spanning the fitted log-scale range;
- ``"chinchilla"``: ``L(N, D) = E + A/N^alpha + B/D^beta`` (parameters and tokens, Hoffmann et
  al. 2022) with one-point grids at the data's mean log N and log D: ``loss_mid`` is the loss at
  that reference point and ``log_slope_N``/``log_slope_D`` the logs of the partial slopes there.
  A min-to-max grid per covariate (the one-variable choice) puts the corners of the N x D grid
  outside the data, so its mean level is pinned down less well: it took 2.5x (Chinchilla) to 11x
  (a Porian et al. configuration) more leapfrog steps per draw; sampling E, log R_N, log R_D
  directly took 7-11x more (``studies/chinchilla_parametrization.py``).

and two are other one-covariate forms on the same reference idea (``PowerLaw``, ``BrokenPowerLaw``):

- ``"power"``: ``L(x) = a x^-alpha`` (no floor), sampled as ``loss_mid`` (the loss at the data's mean
  log-scale, a one-point grid at u = 0) and ``log_alpha``; ``log L`` is linear in the centred u, so
  level and exponent are nearly uncorrelated;
- ``"broken"``: the smoothly broken power law with one break (Caballero et al. 2022, BNSL)
  ``L(x) = L_inf + b x^-c0 (1 + (x/d1)^(1/f1))^(-c1 f1)``, whose reducible part is the shape
  ``S(u) = R(u)/R(0)``; with ``B = 1 - S`` in place of the saturating basis the same grid moments give
  ``loss_mid`` and ``log_slope`` (mean level and least-squares slope over the 5-point grid), and the
  shape is set by ``log_alpha`` (c0, the exponent before the break), ``log_alpha_jump`` (c1 > 0, the
  exponent's increase at the break), ``u_break`` (log d1 in centred log-x units) and ``log_sharpness``
  (log f1, the break's width in log-x units). See ``BrokenPowerLaw`` for the priors and why.

Usage: ``saturating_loss(u, loss_mid=3.5, slope=0.3, alpha=0.2, grid=np.linspace(-3, 3, 5))``,
``get_law("chinchilla").natural(theta, grids, log_refs)``
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["saturating_loss", "saturating_term", "floor_and_reducible", "natural_params", "log_scale_to_reach",
           "broken_shape_log", "response_scales", "Law", "SaturatingLaw", "PowerLaw", "BrokenPowerLaw", "LAWS", "SATURATING",
           "CHINCHILLA", "POWER", "BROKEN", "get_law", "LOG_EXPONENT_PRIOR", "at_rows"]

#: Default prior of a saturating law's log exponents: exponents 0.06-1.1 (95%), the range seen in
#: LM scaling laws for N, D and C.
LOG_EXPONENT_PRIOR = (float(np.log(0.25)), 0.75)


def _b(u, alpha, xp):
    return -xp.expm1(-alpha * u) / alpha


def _basis_moments(alpha, grid, xp):
    """mean_g B and beta = cov_g(B, g)/var(g) (B'(g0) for a one-point grid), broadcast over ``alpha``."""
    grid = xp.asarray(grid)
    if grid.shape[-1] == 1:
        g0 = grid[..., 0]
        return _b(g0, alpha, xp), xp.exp(-alpha * g0)
    return _grid_moments(_b(grid, alpha[..., None], xp), grid)


def _grid_moments(b, grid):
    """Mean over a multi-point grid and least-squares slope on it of basis values ``b`` (..., n_grid)."""
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


def response_scales(y) -> dict:
    """``mean``, ``range`` and ``sd`` of the response, floored at 1e-3 of its mean magnitude (prior scales).

    Usage: ``response_scales(runs.data["loss"])["range"]``
    """
    y = np.asarray(y, dtype=np.float64)
    tiny = 1e-3 * float(np.abs(y).mean())
    return {"mean": float(np.mean(y)), "range": max(float(np.ptp(y)), tiny), "sd": max(float(np.std(y)), tiny)}


def broken_shape_log(u, alpha, jump, u_break, sharpness, xp=np):
    """log of the broken law's reducible part relative to u = 0, ``log S(u) = log R(u) - log R(0)``.

    ``S(u) = exp(-c0 u) (1 + exp((u - u1)/f1))^(-c1 f1) / (1 + exp(-u1/f1))^(-c1 f1)``: slope -c0 in
    log-log before the break at ``u1``, -(c0 + c1) after it, over a width ~``f1`` (log-x units).
    Usage: ``broken_shape_log(u, 0.1, 2.0, 0.3, 0.05)``
    """
    def softplus(z):
        return xp.logaddexp(0.0, z)
    return -alpha * u - jump * sharpness * (softplus((u - u_break) / sharpness) - softplus(-u_break / sharpness))


def _bisect_decreasing(f, lo: float, hi: float, shape, iterations: int = 100) -> np.ndarray:
    """Root of elementwise decreasing ``f`` on [lo, hi] (NumPy arrays of ``shape``; clipped to the bracket)."""
    lo, hi = np.full(shape, lo), np.full(shape, hi)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            above = f(mid) > 0
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return 0.5 * (lo + hi)


def at_rows(values, cell):
    """Per-cell ``values`` (..., n_cells) at the rows: ``values[..., cell]`` for a row -> cell index, or
    ``values[..., :, None]`` (broadcasting over a (n_cells, width) layout) when ``cell`` is None.

    The by-cell layout (``bayescale.model.model_data``) makes the gradient a sum over an axis instead of a
    scatter-add over rows. Usage: ``at_rows(theta["loss_mid"], cell)``
    """
    return values[..., :, None] if cell is None else values[..., cell]


@dataclass(frozen=True)
class Law:
    """A registered functional form: covariates, sampled parameters, mean function, natural parameters.

    Subclasses (``SaturatingLaw``, ``PowerLaw``, ``BrokenPowerLaw``) define ``params`` (sampled per
    cell, in model order; the first is always ``loss_mid``), ``natural_names``, ``pinned`` (the
    parameters the data pin down, always sampled centred), ``mean``, ``natural`` and
    ``default_priors``. ``roles`` says which run-table column feeds each covariate (``"scale"``:
    ``RunTable.scale``; ``"params"``/``"tokens"``: ``RunTable.params_col``/``tokens_col``);
    ``covariates`` are their model-data names (centred logs); ``one_point_grid``: the reference grid
    is the reference point itself, or 5 points spanning the data.
    Usage: ``law = get_law("chinchilla"); law.mean(theta, {"uN": uN, "uD": uD}, law_grids)``
    """

    name: str
    formula: str
    roles: tuple[str, ...]
    covariates: tuple[str, ...]
    one_point_grid: bool

    @property
    def params(self) -> tuple[str, ...]:
        """Sampled per-cell parameters, in model order. Usage: ``law.params``."""
        raise NotImplementedError

    @property
    def natural_names(self) -> tuple[str, ...]:
        """Natural parameters, e.g. ``("E", "A", "B", "alpha", "beta")``. Usage: ``law.natural_names``."""
        raise NotImplementedError

    @property
    def pinned(self) -> tuple[str, ...]:
        """Parameters the data pin down (centred unless they vary across curves by less than their
        per-curve error, ``bayescale.centring``). Usage: ``law.pinned``."""
        return ("loss_mid",)

    def mean(self, theta: Mapping, covariates: Mapping, grids: Sequence, xp=np):
        """Expected loss from sampled parameters ``theta`` and centred log covariates. Usage: see subclasses."""
        raise NotImplementedError

    def mean_by_cell(self, theta: Mapping, covariates: Mapping, grids: Sequence, cell, xp=np):
        """``mean`` of per-row covariates from per-cell parameters (``theta[p]``: (..., n_cells); ``cell``: row -> cell,
        or None when the covariates are laid out by cell, (n_cells, width): see ``at_rows``).

        Laws override it to compute what depends only on the cell once per cell, not once per row.
        Usage: ``law.mean_by_cell(theta_cells, {"u": u}, grids, cell_index)``
        """
        return self.mean({k: at_rows(v, cell) for k, v in theta.items()}, covariates, grids, xp)

    def natural(self, theta: Mapping, grids: Sequence, log_refs: Sequence[float], xp=np) -> dict:
        """Natural parameters from sampled ones. Usage: ``law.natural(theta, grids, log_refs)["alpha"]``."""
        raise NotImplementedError

    def default_priors(self, y: np.ndarray, log_covariates: Sequence[np.ndarray],
                       log_refs: Sequence[float]) -> tuple[dict, dict]:
        """Scale-aware defaults: ({param: (loc, scale)} of the population means, {param: group spread}).

        ``y``: the response; ``log_covariates``: log of each covariate column; ``log_refs``: their
        reference values (the centring). Usage: ``law.default_priors(y, [np.log(x)], [np.log(x).mean()])``
        """
        raise NotImplementedError

    def log_scale_to_reach(self, target: float, theta: Mapping, grids: Sequence) -> np.ndarray:
        """Centred log-scale where a one-covariate law reaches ``target`` (``inf``: never). Usage: see subclasses."""
        raise NotImplementedError(f"the {self.name!r} law has no inverse (needs one covariate and a decreasing form)")


@dataclass(frozen=True)
class SaturatingLaw(Law):
    """A sum of saturating power-law terms, ``L = E + sum_j R_j exp(-alpha_j u_j)`` (see the module doc).

    Sampled parameters (``params``): ``loss_mid``, then one log slope per covariate, then one log
    exponent per covariate. Natural parameters (``natural_names``): the floor, one coefficient per
    covariate (per unit of the raw column), one exponent per covariate.
    Usage: ``law.mean({"loss_mid": 3.0, "log_slope": -1.0, "log_alpha": -1.2}, {"u": u}, [grid])``
    """

    slopes: tuple[str, ...]          # sampled log slopes, one per covariate
    exponents: tuple[str, ...]       # sampled log exponents, one per covariate
    floor_name: str
    coefficient_names: tuple[str, ...]
    exponent_names: tuple[str, ...]

    @property
    def params(self) -> tuple[str, ...]:
        return ("loss_mid", *self.slopes, *self.exponents)

    @property
    def natural_names(self) -> tuple[str, ...]:
        return (self.floor_name, *self.coefficient_names, *self.exponent_names)

    @property
    def pinned(self) -> tuple[str, ...]:
        return ("loss_mid", *self.slopes)

    def mean(self, theta: Mapping, covariates: Mapping, grids: Sequence, xp=np):
        out = theta["loss_mid"]
        for cov, slope, expo, grid in zip(self.covariates, self.slopes, self.exponents, grids):
            out = out + saturating_term(covariates[cov], xp.exp(theta[slope]), xp.exp(theta[expo]), grid, xp)
        return out

    def mean_by_cell(self, theta: Mapping, covariates: Mapping, grids: Sequence, cell, xp=np):
        # saturating_term with the grid moments once per cell: 1 expm1 per row instead of 6
        out = at_rows(theta["loss_mid"], cell)
        for cov, slope, expo, grid in zip(self.covariates, self.slopes, self.exponents, grids):
            alpha = xp.exp(theta[expo])
            b_mean, beta = _basis_moments(alpha, grid, xp)
            coef = xp.exp(theta[slope]) / beta
            out = out - at_rows(coef, cell) * (_b(covariates[cov], at_rows(alpha, cell), xp) - at_rows(b_mean, cell))
        return out

    def natural(self, theta: Mapping, grids: Sequence, log_refs: Sequence[float], xp=np) -> dict:
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

    def default_priors(self, y, log_covariates, log_refs) -> tuple[dict, dict]:
        """``loss_mid ~ Normal(mean loss, loss range)``; each log slope ``~ Normal(log(loss range / log range
        of its covariate), 1)``; each log exponent ``~ LOG_EXPONENT_PRIOR``; group spreads sd(loss), 0.5, 0.35."""
        sc = response_scales(y)
        slopes = {name: (float(np.log(sc["range"] / max(float(np.ptp(x)), 1e-6))), 1.0)
                  for name, x in zip(self.slopes, log_covariates)}
        priors = {"loss_mid": (sc["mean"], sc["range"]), **slopes, **dict.fromkeys(self.exponents, LOG_EXPONENT_PRIOR)}
        group_sd = {"loss_mid": sc["sd"], **dict.fromkeys(self.slopes, 0.5), **dict.fromkeys(self.exponents, 0.35)}
        return priors, group_sd

    def log_scale_to_reach(self, target, theta, grids) -> np.ndarray:
        """Closed form (``log_scale_to_reach``); one covariate only. Usage: ``SATURATING.log_scale_to_reach(2.5, theta, grids)``."""
        if len(self.covariates) != 1:
            super().log_scale_to_reach(target, theta, grids)
        return log_scale_to_reach(target, theta["loss_mid"], np.exp(theta[self.slopes[0]]),
                                  np.exp(theta[self.exponents[0]]), grids[0])


@dataclass(frozen=True)
class PowerLaw(Law):
    """Pure power law ``L(x) = a x^-alpha`` (no floor), one covariate (the scale).

    Sampled: ``loss_mid`` (the loss at the one-point grid g0, the data's mean log-scale) and
    ``log_alpha``: ``L(u) = loss_mid exp(-alpha (u - g0))``. As ``log L`` is linear in the centred u,
    level and exponent are nearly uncorrelated. As for the saturating law, the exponent is centred
    only for dense curves: centring it on 4-point curves (Gadre et al.) gave 34 of 800 divergent draws.
    Natural: ``a = loss_mid exp(alpha (g0 + log_x_ref))`` (per unit of the scale) and ``alpha``; the floor is 0.
    Usage: ``POWER.mean({"loss_mid": 3.0, "log_alpha": np.log(0.05)}, {"u": u}, [np.zeros(1)])``
    """

    @property
    def params(self) -> tuple[str, ...]:
        return ("loss_mid", "log_alpha")

    @property
    def natural_names(self) -> tuple[str, ...]:
        return ("a", "alpha")

    def mean(self, theta: Mapping, covariates: Mapping, grids: Sequence, xp=np):
        g0 = xp.asarray(grids[0])[..., 0]
        return theta["loss_mid"] * xp.exp(-xp.exp(theta["log_alpha"]) * (covariates[self.covariates[0]] - g0))

    def natural(self, theta: Mapping, grids: Sequence, log_refs: Sequence[float], xp=np) -> dict:
        alpha = xp.exp(theta["log_alpha"])
        g0 = xp.asarray(grids[0])[..., 0]
        return {"a": theta["loss_mid"] * xp.exp(alpha * (g0 + log_refs[0])), "alpha": alpha}

    def default_priors(self, y, log_covariates, log_refs) -> tuple[dict, dict]:
        """``loss_mid ~ Normal(mean loss, loss range)``; ``log_alpha ~ Normal(log(log-loss range / log-scale
        range), 1)`` (the data's log-log slope, give or take e; ``LOG_EXPONENT_PRIOR`` if a loss is <= 0)."""
        sc = response_scales(y)
        y = np.asarray(y, dtype=np.float64)
        x_range = max(float(np.ptp(log_covariates[0])), 1e-6)
        log_alpha = (float(np.log(max(float(np.ptp(np.log(y))), 1e-6) / x_range)), 1.0) if np.all(y > 0) \
            else LOG_EXPONENT_PRIOR
        return ({"loss_mid": (sc["mean"], sc["range"]), "log_alpha": log_alpha},
                {"loss_mid": sc["sd"], "log_alpha": 0.35})

    def log_scale_to_reach(self, target, theta, grids) -> np.ndarray:
        """Closed form; ``inf`` when target <= 0. Usage: ``POWER.log_scale_to_reach(2.5, theta, grids)``."""
        alpha, level = np.exp(theta["log_alpha"]), np.asarray(theta["loss_mid"], dtype=np.float64)
        ok = (np.asarray(target) > 0) & (level > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.asarray(grids[0])[0] + np.log(np.where(ok, level, 1.0) / np.where(ok, target, 1.0)) / alpha
        return np.where(ok, u, np.inf)


@dataclass(frozen=True)
class BrokenPowerLaw(Law):
    """Smoothly broken power law with one break (Caballero et al. 2022, BNSL), one covariate (the scale):

        L(x) = L_inf + b x^-c0 (1 + (x/d1)^(1/f1))^(-c1 f1).

    Written on the saturating law's reference machinery: with ``S(u)`` the reducible part relative to
    u = 0 (``broken_shape_log``) and basis ``B = 1 - S``, ``L(u) = loss_mid - slope (B(u) - mean_g B) /
    beta_g`` over the 5-point grid spanning the data, so ``loss_mid`` and ``log_slope`` are the mean
    level and least-squares slope over the data (pinned down, see ``Law.pinned``) and the shape parameters
    only bend the curve. Sampled shape parameters and default priors (x = log-scale, range = its range):

    - ``log_alpha`` (c0, exponent before the break): ``Normal(log 0.25, 1)``;
    - ``log_alpha_jump`` (c1 > 0, the exponent's increase at the break): ``Normal(log(3 / range), 1)``:
      a break that visibly steepens the curve within the data. c1 > 0 by construction: a break to a
      *steeper* law (the "emergence"-like drop the BNSL paper fits); flattening is the floor's job;
    - ``u_break`` (log d1 - log_x_ref): ``Normal(middle of the data, range / 4)``, i.e. the break is a
      priori inside the data (outside it, it cannot be told from a power law);
    - ``log_sharpness`` (log f1, the break's width in log-x units): ``Normal(log(range / 20), 0.75)``.
      Sampled, not fixed: on the BNSL 4-digit addition data (14 fitted points) least squares puts f1 at
      range/26 (RMSE 0.0012); with f1 fixed at range/50 or range/19 the best RMSE is 8x or 5x larger.
      The strong prior ties it to the data's span, so it stays identified when the break is flat.

    Group spreads: sd(loss), 0.5, 0.35, 0.5, range / 8, 0.35. Natural parameters: ``loss_floor``
    (L_inf), ``b`` (per unit of the scale), ``c0``, ``c1``, ``d1`` (scale units), ``f1``.
    Usage: ``fit_law(runs, law="broken")``
    """

    @property
    def params(self) -> tuple[str, ...]:
        return ("loss_mid", "log_slope", "log_alpha", "log_alpha_jump", "u_break", "log_sharpness")

    @property
    def natural_names(self) -> tuple[str, ...]:
        return ("loss_floor", "b", "c0", "c1", "d1", "f1")

    @property
    def pinned(self) -> tuple[str, ...]:
        return ("loss_mid", "log_slope")

    @staticmethod
    def _shape(theta: Mapping, xp):
        return (xp.exp(theta["log_alpha"]), xp.exp(theta["log_alpha_jump"]), xp.asarray(theta["u_break"]),
                xp.exp(theta["log_sharpness"]))

    def _moments(self, shape, grid, xp):
        """(mean_g B, beta_g) of the basis ``B = 1 - S`` over the grid."""
        grid = xp.asarray(grid)
        b_grid = -xp.expm1(broken_shape_log(grid, *(xp.asarray(p)[..., None] for p in shape), xp=xp))
        return _grid_moments(b_grid, grid)

    def mean(self, theta: Mapping, covariates: Mapping, grids: Sequence, xp=np):
        shape = self._shape(theta, xp)
        b_mean, beta = self._moments(shape, grids[0], xp)
        b_u = -xp.expm1(broken_shape_log(covariates[self.covariates[0]], *shape, xp=xp))
        return theta["loss_mid"] - xp.exp(theta["log_slope"]) * (b_u - b_mean) / beta

    def natural(self, theta: Mapping, grids: Sequence, log_refs: Sequence[float], xp=np) -> dict:
        c0, c1, u1, f1 = shape = self._shape(theta, xp)
        b_mean, beta = self._moments(shape, grids[0], xp)
        reducible = xp.exp(theta["log_slope"]) / beta          # R(u = 0)
        floor = theta["loss_mid"] - reducible * (1.0 - b_mean)
        b = reducible * xp.exp(c0 * log_refs[0] + c1 * f1 * xp.logaddexp(0.0, -u1 / f1))
        return {"loss_floor": floor, "b": b, "c0": c0, "c1": c1, "d1": xp.exp(u1 + log_refs[0]), "f1": f1}

    def default_priors(self, y, log_covariates, log_refs) -> tuple[dict, dict]:
        sc = response_scales(y)
        x = np.asarray(log_covariates[0], dtype=np.float64)
        x_range = max(float(np.ptp(x)), 1e-6)
        middle = 0.5 * (float(x.min()) + float(x.max())) - float(log_refs[0])
        priors = {"loss_mid": (sc["mean"], sc["range"]), "log_slope": (float(np.log(sc["range"] / x_range)), 1.0),
                  "log_alpha": (float(np.log(0.25)), 1.0), "log_alpha_jump": (float(np.log(3.0 / x_range)), 1.0),
                  "u_break": (middle, x_range / 4), "log_sharpness": (float(np.log(x_range / 20)), 0.75)}
        group_sd = {"loss_mid": sc["sd"], "log_slope": 0.5, "log_alpha": 0.35, "log_alpha_jump": 0.5,
                    "u_break": x_range / 8, "log_sharpness": 0.35}
        return priors, group_sd

    def log_scale_to_reach(self, target, theta, grids) -> np.ndarray:
        """Solved by bisection (the law decreases); ``inf`` when target <= L_inf.

        Usage: ``BROKEN.log_scale_to_reach(1.0, theta, grids)``
        """
        theta = {k: np.asarray(v, dtype=np.float64) for k, v in theta.items()}
        floor = self.natural(theta, grids, [0.0])["loss_floor"]
        shape = np.broadcast(*theta.values()).shape
        u = _bisect_decreasing(lambda u: self.mean(theta, {self.covariates[0]: u}, grids) - target,
                               -1e3, 1e4, shape)
        return np.where(target > floor, u, np.inf)


SATURATING = SaturatingLaw(name="saturating", formula="L = L_inf + a * x^-alpha", roles=("scale",), covariates=("u",),
                           slopes=("log_slope",), exponents=("log_alpha",), floor_name="loss_floor",
                           coefficient_names=("a",), exponent_names=("alpha",), one_point_grid=False)

CHINCHILLA = SaturatingLaw(name="chinchilla", formula="L = E + A / N^alpha + B / D^beta", roles=("params", "tokens"),
                           covariates=("uN", "uD"), slopes=("log_slope_N", "log_slope_D"),
                           exponents=("log_alpha", "log_beta"), floor_name="E", coefficient_names=("A", "B"),
                           exponent_names=("alpha", "beta"), one_point_grid=True)

POWER = PowerLaw(name="power", formula="L = a * x^-alpha", roles=("scale",), covariates=("u",), one_point_grid=True)

BROKEN = BrokenPowerLaw(name="broken", formula="L = L_inf + b * x^-c0 * (1 + (x/d1)^(1/f1))^(-c1*f1)",
                        roles=("scale",), covariates=("u",), one_point_grid=False)

#: Registered laws by name (``fit_law(runs, law=...)``).
LAWS = {law.name: law for law in (SATURATING, CHINCHILLA, POWER, BROKEN)}


def get_law(law: str | Law) -> Law:
    """The registered law called ``law`` (or ``law`` itself). Usage: ``get_law("broken")``."""
    if isinstance(law, Law):
        return law
    try:
        return LAWS[law]
    except KeyError:
        raise ValueError(f"unknown law {law!r}; registered laws: {sorted(LAWS)}") from None
