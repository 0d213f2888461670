"""Fitting and the fit object: forecasts with bands, inverse planning, summaries.

Usage:
    runs = load_runs("runs.csv", scale="compute_flops", groups=["eval_set"])
    fit = fit_law(runs)
    fit.forecast([1e21, 1e22], group="c4_val")
    fit.required_scale(2.8, group="c4_val")

Two-variable law L(N, D) = E + A/N^alpha + B/D^beta and compute-optimal allocation:
    fit = fit_law(load_runs("chinchilla.csv", scale="compute_flops"), law="chinchilla", likelihood="student_t")
    fit.forecast({"params": [7e10], "tokens": [1.4e12]})
    fit.compute_optimal([5.76e23])          # N_opt, D_opt, tokens per parameter, loss, exponents a, b
    fit.required_compute(1.9)               # budget to reach a loss at the optimal allocation
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import arviz_base
import numpy as np
import pandas as pd

from . import allocation
from .extrapolation import SEARCH_E_FOLDS, extrapolation_distance, first_crossing
from .inference import Diagnostics, diagnose, run_nuts, run_nuts_batched, run_svi, warn_if_bad
from .model import build_model, cell_values, model_data, new_cell_draws, structure_key
from .runs import RunTable
from .spec import ModelSpec, Priors, SamplerSettings

__all__ = ["Fit", "fit_law", "fit_many", "POPULATION"]

#: Label used in forecast tables for a level the fit has not seen.
POPULATION = "(new)"


def _interval_columns(prefix: str, draws: np.ndarray, intervals: Sequence[float], method: str = "linear") -> dict:
    out = {}
    for mass in intervals:
        lo, hi = np.quantile(draws, [(1 - mass) / 2, (1 + mass) / 2], axis=0, method=method)
        tag = f"{round(100 * mass):d}"
        out[f"{prefix}lower_{tag}"], out[f"{prefix}upper_{tag}"] = lo, hi
    return out


@dataclass
class Fit:
    """A fitted hierarchical law: posterior (ArviZ DataTree), diagnostics, forecasts.

    Usage: ``fit.forecast(np.geomspace(1e20, 1e22, 5), group=("rpj", "c4_val"))``
    """

    runs: RunTable
    spec: ModelSpec
    settings: SamplerSettings
    tree: object  # arviz DataTree: posterior, posterior_predictive, observed_data, sample_stats
    diagnostics: Diagnostics
    timings: dict = field(default_factory=dict)  # seconds: "sampling" (incl. "compile"), see run_nuts
    #: the extrapolation error learned for this fit (``calibrate_extrapolation``), kept with it by
    #: ``save_fit``; forecasts use it only when passed: ``fit.forecast(x, calibration=fit.calibration)``
    calibration: object = None

    # ---- posterior draws -------------------------------------------------------------
    def _flat(self, name: str) -> np.ndarray:
        """Posterior draws of one variable, (chain*draw, ...)."""
        values = np.asarray(self.tree.posterior[name].values)
        return values.reshape(-1, *values.shape[2:])

    def _resolve(self, group) -> dict:
        """Normalise ``group`` to {factor: level or None (unseen)}."""
        factors = self.spec.groups
        if group is None:
            return dict.fromkeys(factors)
        if not factors:
            raise ValueError(f"this fit has no grouping factors; use group=None, not {group!r}")
        if isinstance(group, str):
            group = (group,)
        if not isinstance(group, dict):
            if len(group) != len(factors):
                raise ValueError(f"group {group!r} must give one level per factor {list(factors)}")
            group = dict(zip(factors, group))
        unknown = set(group) - set(factors)
        if unknown:
            raise ValueError(f"unknown grouping factor(s) {sorted(unknown)}; factors are {list(factors)}")
        return {f: (str(group[f]) if group.get(f) is not None else None) for f in factors}

    def param_draws(self, group=None, seed: int = 0) -> dict:
        """Draws of the law's parameters for a group; unseen levels come from the population.

        Keys: the sampled parameters with logs undone (``log_slope`` -> ``slope``): for the default
        law ``loss_mid``, ``slope``, ``alpha``; for ``"chinchilla"`` ``loss_mid``, ``slope_N``,
        ``slope_D``, ``alpha``, ``beta`` (see ``bayescale.laws``; ``natural_draws`` gives E, A, B, ...).
        ``group``: None (a new group: population-level), a level (one factor), a tuple of levels
        or a dict {factor: level}; a level the fit has not seen is drawn from the hierarchy.
        Usage: ``fit.param_draws({"eval_set": "c4_val", "train_dataset": "rpj"})``
        """
        theta = self._theta_draws(group, seed)
        return {k.removeprefix("log_"): (np.exp(v) if k.startswith("log_") else v) for k, v in theta.items()}

    def _theta_draws(self, group=None, seed: int = 0) -> dict:
        """Draws of the sampled law parameters (log slopes, log exponents) for a group, {name: (S,)}."""
        params = self.spec.law_params
        resolved = self._resolve(group)
        levels = tuple(resolved[f] for f in self.spec.groups)
        if not self.spec.groups or levels in self.spec.cells:
            k = self.spec.cells.index(levels) if self.spec.groups else 0
            theta = [self._flat(name)[:, k] for name in params]
        else:
            value = new_cell_draws(self._flat, self.spec, levels, np.random.default_rng(seed))
            theta = [value[:, i] for i in range(len(params))]
        return dict(zip(params, theta))

    def noise_draws(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Posterior draws of the noise sd and of the Student-t degrees of freedom (``None`` for a Normal
        likelihood), each (draws,). Usage: ``sigma, nu = fit.noise_draws()``"""
        return self._flat("sigma"), (self._flat("nu") if self.spec.likelihood == "student_t" else None)

    def _noise(self, shape, rng) -> np.ndarray:
        sigma, nu = self.noise_draws()
        return new_run_noise(sigma[:, None], None if nu is None else nu[:, None], shape, rng)

    def _group_columns(self, group) -> dict:
        """Group columns of a result table, and ``new_group``: True where a level was not fitted."""
        resolved = self._resolve(group)
        levels = tuple(resolved[f] for f in self.spec.groups)
        out = {f: (level if level is not None else POPULATION) for f, level in resolved.items()}
        out["new_group"] = bool(self.spec.groups) and levels not in self.spec.cells
        return out

    # ---- forecasts -----------------------------------------------------------------------
    def _covariates(self, scales) -> tuple[dict, dict]:
        """Raw covariate columns {column: (n,)} from ``scales``, validated."""
        columns = self.spec.covariate_columns
        if len(columns) == 1:
            values = {"scale": np.atleast_1d(np.asarray(scales, dtype=np.float64))}
        else:
            if isinstance(scales, pd.DataFrame):
                scales = {c: scales[c].to_numpy() for c in scales.columns}
            if not isinstance(scales, dict) or any(c not in scales for c in columns):
                raise ValueError(f"the {self.spec.law!r} law needs scales as a dict or DataFrame with columns "
                                 f"{list(columns)}, e.g. "
                                 f"fit.forecast({{{columns[0]!r}: [7e10], {columns[1]!r}: [1.4e12]}})")
            arrays = np.broadcast_arrays(*[np.atleast_1d(np.asarray(scales[c], dtype=np.float64)) for c in columns])
            values = dict(zip(columns, arrays))
        for v in values.values():
            if np.any(~np.isfinite(v)) or np.any(v <= 0):
                raise ValueError(f"scales must be finite and > 0, got {v[(~np.isfinite(v)) | (v <= 0)][:3]}")
        return values

    def law_draws(self, scales, group=None, seed: int = 0) -> np.ndarray:
        """Posterior draws of the law (expected loss), shape (draws, len(scales)).

        ``scales``: raw values of the scale column, or for a multi-covariate law a dict/DataFrame
        with its columns (e.g. ``{"params": ..., "tokens": ...}``).
        Usage: ``fit.law_draws([1e21, 1e22], group="c4_val")``
        """
        values = self._covariates(scales)
        theta = {k: v[:, None] for k, v in self._theta_draws(group, seed=seed).items()}
        law = self.spec.law_def
        cov = {name: np.log(x)[None, :] - ref
               for name, x, ref in zip(law.covariates, values.values(), self.spec.law_log_refs)}
        return law.mean(theta, cov, self.spec.law_grids)

    def forecast(self, scales, group=None, intervals: Sequence[float] = (0.5, 0.9), seed: int = 0,
                 calibration=None) -> pd.DataFrame:
        """Law and new-run forecasts at ``scales`` (raw units of the scale column).

        Columns: ``scale``, the group columns (``"(new)"`` for ``None``), ``new_group`` (True
        when the curve was not fitted, so its forecast comes from the population level),
        ``median``, ``mean``, ``lower_XX``/``upper_XX`` (credible band of the law),
        ``pred_lower_XX``/``pred_upper_XX`` (predictive band of a new run), and
        ``scale_over_max_fitted`` (> 1 means extrapolation beyond the group's largest run).
        For a two-variable law ``scales`` is a dict or DataFrame with the law's columns (e.g.
        ``params``, ``tokens``), which replace ``scale`` in the output, and
        ``scale_over_max_fitted`` compares the product N*D (i.e. compute) with the largest fitted one.
        ``calibration``: an ``ExtrapolationCalibration`` (``bayescale.backtest.calibrate_extrapolation``);
        with it both bands include the law's extrapolation error, which grows with the log of
        ``scale_over_max_fitted`` (without it they assume the law holds beyond the data); the
        ``median`` and ``mean`` stay the law's (the extrapolation error has mean zero).
        Usage: ``fit.forecast([1e21, 1e22], group="c4_val", intervals=(0.8, 0.95))``,
        ``fit.forecast({"params": [7e10], "tokens": [1.4e12]})``, ``fit.forecast(x, calibration=cal)``
        """
        values = self._covariates(scales)
        rng = np.random.default_rng(seed)
        law = self.law_draws(values if len(values) > 1 else values["scale"], group, seed=seed)
        ratio = self._ratio(values, group)
        out = {**values, **self._group_columns(group),
               "median": np.median(law, axis=0), "mean": law.mean(axis=0)}
        noise = self._noise(law.shape, rng)
        if calibration is not None:
            tau = calibration.draws(law.shape[0], rng)[:, None]
            law = law + tau * extrapolation_distance(ratio) * np.abs(law) * rng.standard_normal(law.shape)
        pred = law + noise
        out.update(_interval_columns("", law, intervals))
        out.update(_interval_columns("pred_", pred, intervals))
        out["scale_over_max_fitted"] = ratio
        return pd.DataFrame(out)

    def scale_over_max_fitted(self, scales, group=None) -> np.ndarray:
        """Each scale over the group's largest fitted one (two-variable law: the products N*D).
        Usage: ``fit.scale_over_max_fitted([1e22], group="c4_val")``"""
        return self._ratio(self._covariates(scales), group)

    def _ratio(self, values: dict, group) -> np.ndarray:
        """``scale_over_max_fitted`` of covariates already validated by ``_covariates``."""
        return np.prod(list(values.values()), axis=0) / self._max_fitted_scale(group)

    def _max_fitted_scale(self, group) -> float:
        """Largest fitted scale of the group (for several covariates: largest product of them)."""
        data = self.runs.data
        mask = np.ones(len(data), bool)
        for factor, level in self._resolve(group).items():
            if level is not None:
                mask &= (data[factor] == level).to_numpy()
        scales = np.prod([data[c].to_numpy(np.float64) for c in self.spec.covariate_columns], axis=0)
        return float(scales[mask].max() if mask.any() else scales.max())

    def required_scale(self, target_loss: float, group=None, intervals: Sequence[float] = (0.5, 0.9),
                       return_draws: bool = False, calibration=None, seed: int = 0):
        """Posterior of the scale at which the law reaches ``target_loss``.

        Returns a one-row DataFrame: ``prob_unreachable`` (posterior probability that the
        target is below L_inf; below 0 for the pure power law), ``median`` and interval columns of the
        required scale in the scale column's units (``inf`` where the quantile falls among unreachable
        draws). With ``return_draws=True`` returns the draws instead (``inf`` = unreachable).
        One-variable laws only; the broken law is inverted by bisection (``Law.log_scale_to_reach``).
        ``calibration`` (``calibrate_extrapolation``): include the law's extrapolation error beyond the
        group's largest run (one path per draw, see ``bayescale.extrapolation``; searched up to
        ``SEARCH_E_FOLDS`` e-folds beyond the data); ``prob_unreachable`` is then the probability that
        the path does not reach the target there.
        Usage: ``fit.required_scale(2.5, group="c4_val")``, ``fit.required_scale(2.5, calibration=cal)``
        """
        law = self.spec.law_def
        if len(law.covariates) != 1:
            raise ValueError(f"required_scale needs a one-variable law; for the {self.spec.law!r} law use "
                             "fit.required_compute(target_loss) (budget at the compute-optimal allocation)")
        u = law.log_scale_to_reach(float(target_loss), self._theta_draws(group, seed), self.spec.law_grids)
        log_x = u + self.spec.log_x_ref
        if calibration is not None:
            log_x = self._calibrated_crossing(float(target_loss), group, log_x, calibration, seed)
        draws = np.exp(np.minimum(log_x, 700.0))
        draws[~np.isfinite(log_x)] = np.inf
        if return_draws:
            return draws
        out = {"target_loss": [float(target_loss)], **{k: [v] for k, v in self._group_columns(group).items()},
               "prob_unreachable": [float(np.mean(~np.isfinite(draws)))],
               "median": [float(np.quantile(draws, 0.5, method="inverted_cdf"))]}
        # inverted_cdf: no interpolation, so quantiles among unreachable (inf) draws are inf, not nan
        out.update({k: [float(v)] for k, v in _interval_columns("", draws, intervals, "inverted_cdf").items()})
        return pd.DataFrame(out)

    def _calibrated_crossing(self, target: float, group, log_x: np.ndarray, calibration, seed: int) -> np.ndarray:
        """Log scale where each draw's path with extrapolation error first reaches ``target``: the law's
        own root inside the data, else the first crossing on a grid of 0.05 e-folds beyond it."""
        log_max = np.log(self._max_fitted_scale(group))
        grid = log_max + np.arange(0.0, SEARCH_E_FOLDS + 1e-9, 0.05)
        law = self.law_draws(np.exp(grid), group, seed=seed)
        rng = np.random.default_rng(seed)
        tau = calibration.draws(law.shape[0], rng)[:, None]
        paths = law + tau * (grid - log_max)[None, :] * np.abs(law) * rng.standard_normal((law.shape[0], 1))
        return np.where(log_x <= log_max, log_x, first_crossing(grid, paths, target))

    # ---- summaries -----------------------------------------------------------------------
    def natural_draws(self, group=None, seed: int = 0) -> dict:
        """Draws of the natural parameters for a group: L_inf (``loss_floor``), ``a``, ``alpha``, or for
        ``"chinchilla"`` ``E``, ``A``, ``B``, ``alpha``, ``beta``. Usage: ``fit.natural_draws("c4_val")``."""
        return self.spec.law_def.natural(self._theta_draws(group, seed), self.spec.law_grids, self.spec.law_log_refs)

    # ---- compute-optimal allocation (two-variable laws) -----------------------------------
    def _allocation_draws(self, group, seed: int) -> dict:
        if self.spec.law != "chinchilla":
            raise ValueError("compute-optimal allocation needs the two-variable law "
                             "(fit_law(runs, law='chinchilla')); "
                             f"this fit uses {self.spec.law!r}")
        return self.natural_draws(group, seed)

    def compute_optimal(self, compute, group=None, intervals: Sequence[float] = (0.8,),
                        flops_per_param_token: float = 6.0, flops_per_token=None, seed: int = 0) -> pd.DataFrame:
        """Posterior of the compute-optimal allocation at budgets ``compute`` (FLOPs), one row per budget.

        Columns: ``compute``, group columns, then for each of ``n_opt``, ``d_opt``,
        ``tokens_per_param``, ``loss_opt``, ``a`` (N_opt ~ C^a), ``b`` (D_opt ~ C^b): ``<q>_median``
        and ``<q>_lower_XX``/``<q>_upper_XX``. C = ``flops_per_param_token`` * N * D, or
        ``C = flops_per_token(N) * D`` when a callable is given (solved numerically).
        See ``bayescale.allocation``. Usage: ``fit.compute_optimal([5.76e23], intervals=(0.8, 0.95))``
        """
        alloc = allocation.optimal_allocation(self._allocation_draws(group, seed), compute,
                                              flops_per_param_token=flops_per_param_token,
                                              flops_per_token=flops_per_token)
        return allocation.summarize(alloc, intervals, leading={**self._group_columns(group)})

    def required_compute(self, target_loss, group=None, intervals: Sequence[float] = (0.8,),
                         flops_per_param_token: float = 6.0, return_draws: bool = False, seed: int = 0):
        """Posterior of the budget C (FLOPs) that reaches ``target_loss`` at the compute-optimal allocation.

        One row per target: ``prob_unreachable`` (target <= E), ``median`` and interval columns
        (``inf`` where the quantile falls among unreachable draws). ``return_draws=True``: draws,
        shape (draws, n_targets). Usage: ``fit.required_compute([2.0, 1.95])``
        """
        draws = allocation.required_compute(self._allocation_draws(group, seed), target_loss,
                                            flops_per_param_token=flops_per_param_token)
        if return_draws:
            return draws
        targets = np.atleast_1d(np.asarray(target_loss, dtype=np.float64))
        out = {"target_loss": targets, **self._group_columns(group),
               "prob_unreachable": np.mean(~np.isfinite(draws), axis=0),
               "median": np.quantile(draws, 0.5, axis=0, method="inverted_cdf")}
        out.update(_interval_columns("", draws, intervals, "inverted_cdf"))
        return pd.DataFrame(out)

    def summary(self, interval: float = 0.9) -> pd.DataFrame:
        """Per fitted curve: median and interval of the natural parameters (L_inf, a, alpha; or
        E, A, B, alpha, beta), with R-hat and ESS.

        Usage: ``print(fit.summary())``
        """
        rows = []
        lo_q, hi_q = (1 - interval) / 2, (1 + interval) / 2
        tag = f"{round(100 * interval):d}"
        for k, cell in enumerate(self.spec.cells if self.spec.groups else [()]):
            for name in self.spec.law_def.natural_names:
                draws = self._flat(name)[:, k]
                key = f"{name}[{self.spec.cell_labels[k]}]" if self.spec.groups else f"{name}[all]"
                diag = self.diagnostics.table.loc[key] if key in self.diagnostics.table.index else None
                rows.append({**dict(zip(self.spec.groups, cell)), "param": name,
                             "median": np.median(draws), f"lower_{tag}": np.quantile(draws, lo_q),
                             f"upper_{tag}": np.quantile(draws, hi_q),
                             "r_hat": None if diag is None else diag["r_hat"],
                             "ess_bulk": None if diag is None else diag["ess_bulk"]})
        return pd.DataFrame(rows)


def new_run_noise(sigma, nu, shape, rng) -> np.ndarray:
    """Deviation of a new run from the law: Normal, or Student-t when ``nu`` is given. Usage: internal."""
    if nu is not None:
        return sigma * rng.standard_t(np.broadcast_to(nu, shape), size=shape)
    return sigma * rng.standard_normal(shape)


def fitted_means(post, spec: ModelSpec, data: dict) -> np.ndarray:
    """The law at every fitted run for every posterior draw, shape (chain, draw, run).

    ``post``: a posterior with the per-cell law parameters (``_add_cell_quantities``); ``data``:
    ``model_data(runs, spec)``. Usage: ``fitted_means(fit.tree.posterior, fit.spec, model_data(fit.runs, fit.spec))``
    """
    law = spec.law_def
    theta = {name: np.asarray(post[name].values) for name in law.params}  # (chain, draw, cell)
    return law.mean_by_cell(theta, {c: data[c] for c in law.covariates}, spec.law_grids, data["cell"])


def _add_posterior_predictive(tree, spec: ModelSpec, data: dict, seed: int):
    """Replicated losses of the fitted runs, one per posterior draw (NumPy; no extra JIT)."""
    post = tree.posterior
    mean = fitted_means(post, spec, data)
    nu = post["nu"].values[..., None] if spec.likelihood == "student_t" else None
    obs = mean + new_run_noise(post["sigma"].values[..., None], nu, mean.shape, np.random.default_rng(seed))
    tree["posterior_predictive"] = arviz_base.from_dict({"posterior_predictive": {"obs": obs}},
                                                        dims={"obs": ["run"]})["posterior_predictive"]
    return tree


def _add_cell_quantities(tree, spec: ModelSpec):
    """Add per-cell law parameters and natural parameters (L_inf, a, alpha; or E, A, B, ...) to the posterior."""
    post = tree.posterior.to_dataset()
    draws = {name: post[name].values for name in post.data_vars}
    theta = cell_values(draws, spec, spec.cell_level_codes())  # (chain, draw, n_params, cell)
    theta = np.broadcast_to(theta, theta.shape[:-1] + (len(spec.cells),))
    new = {name: theta[..., i, :] for i, name in enumerate(spec.law_params)}
    new.update(spec.law_def.natural(new, spec.law_grids, spec.law_log_refs))
    post = post.assign({k: (("chain", "draw", "cell"), v) for k, v in new.items()})
    tree["posterior"] = post.assign_coords(cell=spec.cell_labels)
    return tree


def _coords_dims(spec: ModelSpec) -> tuple[dict, dict]:
    """ArviZ coords and dims of the model's sites."""
    params = spec.law_params
    centered = [p for p in params if p in spec.centered]
    coords = {"law_param": list(params), "cell": spec.cell_labels, "centered_param": centered,
              "noncentered_param": [p for p in params if p not in centered],
              **{f"{g}_level": spec.levels[g] for g in spec.groups}}
    dims = {"mu": ["law_param"], "sd_cell": ["law_param"], "cell_centered": ["centered_param", "cell"],
            "z_cell": ["noncentered_param", "cell"]}
    if len(centered) == len(params):
        del coords["noncentered_param"], dims["z_cell"]
    if not centered:
        del coords["centered_param"], dims["cell_centered"]
    for g in spec.groups:
        dims.update({f"sd_{g}": ["law_param"], f"z_{g}": ["law_param", f"{g}_level"]})
    return coords, dims


def _finish(runs: RunTable, spec: ModelSpec, settings: SamplerSettings, tree, data: dict, timings: dict,
            warn: bool = True, pareto_k: float | None = None) -> Fit:
    """Posterior quantities, posterior predictive and diagnostics of a sampled tree -> ``Fit``."""
    tree = _add_cell_quantities(tree, spec)
    if settings.posterior_predictive:
        tree = _add_posterior_predictive(tree, spec, data, settings.seed)
    diagnostics = diagnose(tree, settings, pareto_k)
    if warn:
        warn_if_bad(diagnostics)
    return Fit(runs=runs, spec=spec, settings=settings, tree=tree, diagnostics=diagnostics, timings=timings)


def _fewest_runs(data: dict) -> int:
    """Runs of the smallest curve in ``model_data``'s arrays."""
    return int(np.bincount(data["cell"], minlength=len(data["cell_levels"])).min())


def fit_law(runs: RunTable, *, likelihood: str = "normal", priors: Priors | None = None,
            settings: SamplerSettings | None = None, spec: ModelSpec | None = None, law: str = "saturating") -> Fit:
    """Fit a hierarchical law with NUTS: by default ``L = L_inf + a * x**-alpha`` in the scale column;
    ``law="chinchilla"``: ``L = E + A/N**alpha + B/D**beta`` in the run table's ``params_col`` and
    ``tokens_col`` (same hierarchy, priors and likelihoods; see ``bayescale.laws``).

    The compiled sampler is kept for the process: a refit on a table of the same shape (same
    curves, runs and settings; new values) starts sampling at once, without compiling.
    Usage: ``fit = fit_law(runs, likelihood="student_t", settings=SamplerSettings(seed=1))``,
    ``fit_law(runs, law="chinchilla", likelihood="student_t")``
    """
    spec = spec or ModelSpec.from_runs(runs, likelihood=likelihood, priors=priors, law=law)
    coords, dims = _coords_dims(spec)
    data = model_data(runs, spec)
    settings = (settings or SamplerSettings()).resolved(loss_law=True, runs_per_curve=_fewest_runs(data))
    pareto_k = None
    if settings.engine == "numpyro":
        tree, timings = run_nuts(build_model(spec), data, settings, coords, dims, cache_key=structure_key(spec))
    elif settings.engine == "svi":  # approximate: full-rank Gaussian, checked by its PSIS Pareto k
        tree, timings, pareto_k = run_svi(build_model(spec), data, settings, coords, dims)
    else:  # the same spec as a pymc.Model, sampled by PyMC's NUTS or nutpie
        from .pymc_model import run_pymc
        tree, timings = run_pymc(spec, data, settings, coords, dims)
    return _finish(runs, spec, settings, tree, data, timings, pareto_k=pareto_k)


def fit_many(tables: Sequence[RunTable], *, likelihood: str = "normal", settings: SamplerSettings | None = None,
             law: str = "saturating", warn: bool = False) -> list[Fit]:
    """Independent fits of many run tables of the same shape, sampled together in one vectorized program.

    Each table gets its own spec (its own scale-aware priors; the first table's centring, see
    ``bayescale.centring``) and its own ``Fit`` with diagnostics;
    the tables must have the same structure (curves, runs per curve): e.g. one table per simulated
    data set, per bootstrap resample or per candidate design. Much faster than a loop of
    ``fit_law`` for many small fits (``benchmarks/engines.py``). ``warn=True`` emits each fit's
    ``ConvergenceWarning`` messages; by default check ``fit.diagnostics.ok``.
    Usage: ``fits = fit_many([runs_a, runs_b], settings=SamplerSettings(seed=0))``
    """
    settings = settings or SamplerSettings()
    if settings.engine != "numpyro":
        raise ValueError(f"fit_many samples with bayescale's NumPyro engine; got engine={settings.engine!r}")
    specs = [ModelSpec.from_runs(r, likelihood=likelihood, law=law) for r in tables]
    specs = [replace(s, centered=specs[0].centered) for s in specs]  # one parametrization: the first table's
    keys = {structure_key(s) for s in specs}
    if len(keys) > 1:
        raise ValueError(f"fit_many needs tables of one structure (same law, factors, levels and curves); got "
                         f"{len(keys)} different ones: fit them in separate calls")
    datas = [model_data(r, s) for r, s in zip(tables, specs)]
    settings = settings.resolved(loss_law=True, runs_per_curve=min(_fewest_runs(d) for d in datas))
    coords_dims = [_coords_dims(s) for s in specs]
    trees, timings = run_nuts_batched(build_model(specs[0]), datas, settings, [c for c, _ in coords_dims],
                                      coords_dims[0][1], cache_key=structure_key(specs[0]))
    return [_finish(r, s, settings, t, d, {**timings, "batch": len(tables)}, warn=warn)
            for r, s, t, d in zip(tables, specs, trees, datas)]
