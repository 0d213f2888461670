"""NumPyro model built from a ``ModelSpec``: a plain function over arrays.

Hierarchy, for each sampled law parameter p (``spec.law_params``: for the default law
loss_mid, log_slope, log_alpha; see ``bayescale.laws``) and cell k (an observed combination of
group levels):

    p[k] = mu_p + sum_f sd_{p,f} * z_{p,f}[level_f(k)] + cell effect,
    cell effect ~ Normal(0, sd_{p,cell})

Factor effects exist with two or more grouping factors (crossed design) of >= 3 levels each
(``has_factor_effects``; with fewer the cells are pooled directly) and sum to zero over the levels
(``ZeroSumNormal``: no ridge between mu and the effects); with one factor the cells are its levels.
Parameters the data pin down (``spec.centered``: by default the level and slope over the fitted
range where they vary across curves more than their per-curve error, ``bayescale.centring``, and the
exponent for dense curves) are centred at the cell level; the others are non-centred. This, the
reference parametrization of ``bayescale.laws`` and float64 make the model mix (see
``studies/parametrization.py``). The law parameters share vector-valued sample
sites, which keeps the JAX graph (and compile time) small. The law's mean
function comes from ``spec.law_def`` and its covariates (``u``; or ``uN``, ``uD``) from ``model_data``;
large tables are laid out by cell (``pad_index``), so the law's gradient needs no scatter over rows.

Everything the model takes from the data (covariates, cells, the scale-aware prior constants and the
reference grids) is a model argument (``model_data``); the model function itself depends only on
the spec's structure (``structure_key``), so one compiled sampler serves every data set of the same
shape (``bayescale.inference.run_nuts(..., cache_key=structure_key(spec))``).

Usage: ``MCMC(NUTS(build_model(spec)), ...).run(key, **model_data(runs, spec))``
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from numpyro.distributions.transforms import ZeroSumTransform

from .runs import RunTable
from .spec import ModelSpec, law_log_covariates

__all__ = ["build_model", "model_data", "prior_arrays", "structure_key", "cell_values", "sample_hierarchy",
           "new_cell_draws", "has_factor_effects"]


#: Tables with at least this many rows are laid out by cell for sampling (``model_data``).
BY_CELL_MIN_ROWS = 1000


def model_data(runs: RunTable, spec: ModelSpec, with_response: bool = True, layout: str = "auto") -> dict:
    """Arrays the model takes, for ``runs`` coded by ``spec``'s levels.

    Per row: covariates, ``cell``, ``y``. ``layout="by_cell"`` adds ``pad_index`` (n_cells, width: the
    rows of each cell, padded) and ``pad_mask``, and the model then evaluates the law on that grid, so
    its gradient is a sum along an axis rather than a scatter-add over rows (2.5x cheaper on CPU at
    1e4-1e5 rows; on a GPU it avoids serialized deterministic scatters). ``"auto"``: by cell for tables
    of >= ``BY_CELL_MIN_ROWS`` rows whose padding adds at most half the rows; ``"rows"``: never.
    Usage: ``model_data(runs, spec)``
    """
    if layout not in ("auto", "rows", "by_cell"):
        raise ValueError(f"layout must be 'auto', 'rows' or 'by_cell', got {layout!r}")
    cell = _cell_of_rows(runs, spec)
    law = spec.law_def
    out = {name: x - ref for name, x, ref in zip(law.covariates, law_log_covariates(runs, law), spec.law_log_refs)}
    out.update({"cell": cell, "cell_levels": spec.cell_level_codes()})
    out["y"] = runs.data[runs.response].to_numpy(np.float64) if with_response else None
    out["priors"] = prior_arrays(spec)
    out["grids"] = spec.law_grids
    out["pad_index"] = out["pad_mask"] = None
    counts = np.bincount(cell, minlength=len(spec.cells))
    width = int(counts.max()) if len(cell) else 0
    if layout == "by_cell" or (layout == "auto" and len(cell) >= BY_CELL_MIN_ROWS
                               and counts.size * width <= 1.5 * len(cell)):
        order = np.argsort(cell, kind="stable")
        pos = np.arange(len(cell)) - np.repeat(np.cumsum(counts) - counts, counts)
        out["pad_index"] = np.zeros((counts.size, width), dtype=np.int64)
        out["pad_index"][cell[order], pos] = order
        out["pad_mask"] = np.zeros((counts.size, width), dtype=bool)
        out["pad_mask"][cell[order], pos] = True
    return out


def _cell_of_rows(runs: RunTable, spec: ModelSpec) -> np.ndarray:
    """Index into ``spec.cells`` of each run (one hashed lookup, not a Python loop over rows)."""
    if not spec.groups:
        return np.zeros(runs.n_rows, dtype=np.int64)
    cells = pd.MultiIndex.from_tuples(spec.cells, names=list(spec.groups))
    cell = cells.get_indexer(pd.MultiIndex.from_frame(runs.data[list(spec.groups)]))
    if (cell < 0).any():
        i = int(np.flatnonzero(cell < 0)[0])
        values = tuple(runs.data[list(spec.groups)].iloc[i])
        row = int(runs.data["row"].iloc[i]) if "row" in runs.data else i  # the input file's data row
        raise ValueError(f"row {row}: columns {list(spec.groups)} = {values} is not one of the model's curves "
                         f"({len(spec.cells)} cells, e.g. {spec.cells[0]})")
    return cell.astype(np.int64)


def prior_arrays(spec: ModelSpec) -> dict:
    """The prior's numbers as arrays (model arguments, not constants of the compiled model).

    Usage: ``prior_arrays(spec)["loc"]``
    """
    pri, law = spec.priors, spec.law_def
    missing = [p for p in law.params if p not in pri.group_sd]
    if missing:
        raise ValueError(f"priors.group_sd lacks {missing}; it needs one spread per law parameter {list(law.params)}")
    return {"loc": np.array([pri.loc_scale(p)[0] for p in law.params], dtype=np.float64),
            "scale": np.array([pri.loc_scale(p)[1] for p in law.params], dtype=np.float64),
            "group_sd": np.array([pri.group_sd[p] for p in law.params], dtype=np.float64),
            "noise_sd": np.float64(pri.noise_sd), "nu_shape": np.float64(pri.nu_shape),
            "nu_rate": np.float64(pri.nu_rate),
            **({} if pri.noise is None else {"noise_log": np.array([np.log(pri.noise[0]), pri.noise[1]])})}


def structure_key(spec: ModelSpec) -> tuple:
    """What the compiled model depends on: law, factors, level and cell counts, centring, likelihood.

    Two specs with the same key share one compiled sampler. Usage: ``run_nuts(..., cache_key=structure_key(spec))``
    """
    return ("law", spec.law, spec.groups, tuple(len(spec.levels[g]) for g in spec.groups), len(spec.cells),
            tuple(spec.centered), spec.likelihood, has_factor_effects(spec), spec.priors.noise is not None)


def _split(spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    params = spec.law_params
    centered = [i for i, p in enumerate(params) if p in spec.centered]
    return np.array(centered, dtype=int), np.array([i for i in range(len(params)) if i not in centered], dtype=int)


def has_factor_effects(spec) -> bool:
    """Whether the hierarchy has per-factor effects (``spec.factor_effects``, set from the data when the
    spec is made: ``bayescale.spec.crossed_effects``; None, in fits saved before it: two or more factors).

    Usage: ``has_factor_effects(fit.spec)``
    """
    return len(spec.groups) >= 2 if spec.factor_effects is None else bool(spec.factor_effects)


def _base(draws: dict, spec: ModelSpec, cell_levels, xp):
    """mu plus the factor effects, shape (..., n_params, n_cells)."""
    base = draws["mu"][..., :, None] + xp.zeros((len(spec.law_params), len(spec.cells)))
    if has_factor_effects(spec):
        for f, factor in enumerate(spec.groups):
            base = base + draws[f"sd_{factor}"][..., :, None] * draws[f"z_{factor}"][..., cell_levels[:, f]]
    return base


def cell_values(draws: dict, spec: ModelSpec, cell_levels, xp=np):
    """Law parameters per cell, shape (..., n_params, n_cells), from the sampled sites.

    The one place where the hierarchy is assembled: the model calls it with ``jnp``,
    the fit object with ``np`` on posterior draws. Usage: ``cell_values(samples, spec, codes)``
    """
    base = _base(draws, spec, cell_levels, xp)
    if not spec.groups:
        return base
    centered, noncentered = _split(spec)
    parts = {int(i): draws["cell_centered"][..., j : j + 1, :] for j, i in enumerate(centered)}
    if len(noncentered):
        noncentered_vals = base[..., noncentered, :] + draws["sd_cell"][..., noncentered, None] * draws["z_cell"]
        parts.update({int(i): noncentered_vals[..., j : j + 1, :] for j, i in enumerate(noncentered)})
    return xp.concatenate([parts[i] for i in range(len(spec.law_params))], axis=-2)


def new_cell_draws(flat, spec, levels: tuple, rng: np.random.Generator) -> np.ndarray:
    """Posterior draws of the parameters of a cell the fit has not seen, shape (n_draws, n_params).

    Population mean, plus the fitted effect of each seen level and a fresh draw for each unseen
    one, plus a fresh cell effect: the hierarchy's forecast for a new curve. ``flat(name)`` returns
    a site's draws as (n_draws, ...); ``levels`` gives one level (or None) per factor.
    Usage: ``new_cell_draws(fit._flat, fit.spec, ("rpj", None), np.random.default_rng(0))``
    """
    value = flat("mu")
    if has_factor_effects(spec):
        for factor, level in zip(spec.groups, levels):
            sd = flat(f"sd_{factor}")
            if level in spec.levels[factor]:
                z = flat(f"z_{factor}")[..., spec.levels[factor].index(level)]
            else:
                z = rng.standard_normal(sd.shape)
            value = value + sd * z
    sd_cell = flat("sd_cell") if spec.groups else np.zeros_like(value)
    return value + sd_cell * rng.standard_normal(sd_cell.shape)


def sample_hierarchy(spec, loc, scale, group_sd, cell_levels):
    """Sample the hierarchy's sites and return the per-cell parameters, shape (n_params, n_cells).

    Population means ``Normal(loc, scale)``; with two or more factors a zero-sum effect per factor
    with spread ``HalfNormal(group_sd)`` (non-centred ``z_f``, or centred ``effect_f`` for the factors
    in ``spec.centered_factors``, with ``z_f = effect_f / sd_f`` recorded); cell effects with spread
    ``HalfNormal(group_sd / 2)``, centred for ``spec.centered``, non-centred otherwise. Shared by every
    NumPyro model in bayescale (loss laws here, bounded metrics in ``bayescale.metrics``); ``spec`` needs
    ``law_params``, ``groups``, ``levels``, ``cells`` and ``centered``.
    Usage: inside a model, ``theta = sample_hierarchy(spec, loc, scale, group_sd, cell_levels)``
    """
    centered, noncentered = _split(spec)
    n_cells, n_par = len(spec.cells), len(spec.law_params)
    draws = {"mu": numpyro.sample("mu", dist.Normal(loc, scale).to_event(1))}
    if spec.groups:
        if has_factor_effects(spec):
            for factor in spec.groups:
                draws[f"sd_{factor}"] = numpyro.sample(f"sd_{factor}", dist.HalfNormal(group_sd).to_event(1))
                n_levels = len(spec.levels[factor])
                if factor in spec.centered_factors:  # data-rich levels: sample the effects
                    sd = draws[f"sd_{factor}"][:, None]
                    zero_sum = dist.TransformedDistribution(  # ZeroSumNormal(sd_p) for each law parameter p
                        dist.Normal(0.0, sd).expand((n_par, n_levels - 1)).to_event(1), ZeroSumTransform(1))
                    effect = numpyro.sample(f"effect_{factor}", zero_sum.to_event(1))
                    draws[f"z_{factor}"] = numpyro.deterministic(f"z_{factor}", effect / sd)
                else:
                    draws[f"z_{factor}"] = numpyro.sample(
                        f"z_{factor}", dist.ZeroSumNormal(1.0, event_shape=(n_levels,)).expand([n_par]).to_event(1))
        draws["sd_cell"] = sd_cell = numpyro.sample("sd_cell", dist.HalfNormal(group_sd / 2).to_event(1))
        if len(centered):
            base = _base(draws, spec, cell_levels, jnp)
            draws["cell_centered"] = numpyro.sample(
                "cell_centered", dist.Normal(base[centered], sd_cell[centered, None]).to_event(2))
        if len(noncentered):
            draws["z_cell"] = numpyro.sample(
                "z_cell", dist.Normal(jnp.zeros((len(noncentered), n_cells)), 1.0).to_event(2))
    return cell_values(draws, spec, cell_levels, jnp)


def build_model(spec: ModelSpec):
    """The NumPyro model function for ``spec``: ``model(cell, cell_levels, priors, grids, y=None, **covariates)``.

    Only the spec's structure (``structure_key``) is baked in; numbers come from ``model_data``.
    Usage: ``model = build_model(spec); model(**model_data(runs, spec))``
    """
    law = spec.law_def

    def model(cell, cell_levels, priors, grids, y=None, pad_index=None, pad_mask=None, **covariates):
        theta = sample_hierarchy(spec, priors["loc"], priors["scale"], priors["group_sd"], cell_levels)
        if pad_index is not None:  # by-cell layout: gather the data (not the parameters) onto the grid
            covariates = {k: v[pad_index] for k, v in covariates.items()}
            y, cell = (None if y is None else y[pad_index]), None
        mean = law.mean_by_cell(dict(zip(law.params, theta)), covariates, grids, cell, xp=jnp)
        sigma = numpyro.sample("sigma", dist.HalfNormal(priors["noise_sd"]) if "noise_log" not in priors
                               else dist.LogNormal(priors["noise_log"][0], priors["noise_log"][1]))
        if spec.likelihood == "student_t":
            nu = numpyro.sample("nu", dist.Gamma(priors["nu_shape"], priors["nu_rate"]))
            noise = dist.StudentT(nu, mean, sigma)
        else:
            noise = dist.Normal(mean, sigma)
        if pad_index is not None:
            numpyro.sample("obs", noise.mask(pad_mask).to_event(2), obs=y)
        else:
            with numpyro.plate("runs", cell.shape[0]):
                numpyro.sample("obs", noise, obs=y)

    return model
