"""Fitting and the fit object: forecasts with bands, inverse planning, summaries.

Usage:
    runs = load_runs("runs.csv", scale="compute_flops", groups=["eval_set"])
    fit = fit_law(runs)
    fit.forecast([1e21, 1e22], group="c4_val")
    fit.required_scale(2.8, group="c4_val")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import arviz as az
import numpy as np
import pandas as pd

from .inference import Diagnostics, diagnose, run_nuts, warn_if_bad
from .laws import log_scale_to_reach, natural_params, saturating_loss
from .model import build_model, cell_values, model_data
from .runs import RunTable
from .spec import LAW_PARAMS, ModelSpec, Priors, SamplerSettings

__all__ = ["Fit", "fit_law", "POPULATION"]

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
        """Draws of loss_mid, slope, alpha for a group; unseen levels come from the population.

        ``group``: None (a new group: population-level), a level (one factor), a tuple of levels
        or a dict {factor: level}; a level the fit has not seen is drawn from the hierarchy.
        Usage: ``fit.param_draws({"eval_set": "c4_val", "train_dataset": "rpj"})``
        """
        resolved = self._resolve(group)
        levels = tuple(resolved[f] for f in self.spec.groups)
        if not self.spec.groups or levels in self.spec.cells:
            k = self.spec.cells.index(levels) if self.spec.groups else 0
            theta = [self._flat(name)[:, k] for name in LAW_PARAMS]
        else:
            rng = np.random.default_rng(seed)
            value = self._flat("mu")
            if len(self.spec.groups) >= 2:
                for factor, level in resolved.items():
                    sd = self._flat(f"sd_{factor}")
                    if level in self.spec.levels[factor]:
                        z = self._flat(f"z_{factor}")[..., self.spec.levels[factor].index(level)]
                    else:
                        z = rng.standard_normal(sd.shape)
                    value = value + sd * z
            sd_cell = self._flat("sd_cell")
            value = value + sd_cell * rng.standard_normal(sd_cell.shape)
            theta = [value[:, i] for i in range(len(LAW_PARAMS))]
        return {"loss_mid": theta[0], "slope": np.exp(theta[1]), "alpha": np.exp(theta[2])}

    def _noise(self, shape, rng) -> np.ndarray:
        nu = self._flat("nu")[:, None] if self.spec.likelihood == "student_t" else None
        return new_run_noise(self._flat("sigma")[:, None], nu, shape, rng)

    def _group_columns(self, group) -> dict:
        """Group columns of a result table, and ``new_group``: True where a level was not fitted."""
        resolved = self._resolve(group)
        levels = tuple(resolved[f] for f in self.spec.groups)
        out = {f: (level if level is not None else POPULATION) for f, level in resolved.items()}
        out["new_group"] = bool(self.spec.groups) and levels not in self.spec.cells
        return out

    # ---- forecasts -----------------------------------------------------------------------
    def forecast(self, scales, group=None, intervals: Sequence[float] = (0.5, 0.9), seed: int = 0) -> pd.DataFrame:
        """Law and new-run forecasts at ``scales`` (raw units of the scale column).

        Columns: ``scale``, the group columns (``"(new)"`` for ``None``), ``new_group`` (True
        when the curve was not fitted, so its forecast comes from the population level),
        ``median``, ``mean``, ``lower_XX``/``upper_XX`` (credible band of the law),
        ``pred_lower_XX``/``pred_upper_XX`` (predictive band of a new run), and
        ``scale_over_max_fitted`` (> 1 means extrapolation beyond the group's largest run).
        Usage: ``fit.forecast([1e21, 1e22], group="c4_val", intervals=(0.8, 0.95))``
        """
        scales = np.atleast_1d(np.asarray(scales, dtype=np.float64))
        if np.any(~np.isfinite(scales)) or np.any(scales <= 0):
            raise ValueError(f"scales must be finite and > 0, got {scales[(~np.isfinite(scales)) | (scales <= 0)][:3]}")
        rng = np.random.default_rng(seed)
        p = self.param_draws(group, seed=seed)
        u = np.log(scales)[None, :] - self.spec.log_x_ref
        law = saturating_loss(u, p["loss_mid"][:, None], p["slope"][:, None], p["alpha"][:, None], self.spec.grid)
        pred = law + self._noise(law.shape, rng)
        out = {"scale": scales, **self._group_columns(group),
               "median": np.median(law, axis=0), "mean": law.mean(axis=0)}
        out.update(_interval_columns("", law, intervals))
        out.update(_interval_columns("pred_", pred, intervals))
        out["scale_over_max_fitted"] = scales / self._max_fitted_scale(group)
        return pd.DataFrame(out)

    def _max_fitted_scale(self, group) -> float:
        data = self.runs.data
        mask = np.ones(len(data), bool)
        for factor, level in self._resolve(group).items():
            if level is not None:
                mask &= (data[factor] == level).to_numpy()
        scales = data[self.runs.scale].to_numpy()
        return float(scales[mask].max() if mask.any() else scales.max())

    def required_scale(self, target_loss: float, group=None, intervals: Sequence[float] = (0.5, 0.9),
                       return_draws: bool = False):
        """Posterior of the scale at which the law reaches ``target_loss``.

        Returns a one-row DataFrame: ``prob_unreachable`` (posterior probability that the
        target is below L_inf), ``median`` and interval columns of the required scale in the
        scale column's units (``inf`` where the quantile falls among unreachable draws).
        With ``return_draws=True`` returns the draws instead (``inf`` = unreachable).
        Usage: ``fit.required_scale(2.5, group="c4_val")``
        """
        p = self.param_draws(group)
        u = log_scale_to_reach(float(target_loss), p["loss_mid"], p["slope"], p["alpha"], self.spec.grid)
        draws = np.exp(np.minimum(u + self.spec.log_x_ref, 700.0))
        draws[~np.isfinite(u)] = np.inf
        if return_draws:
            return draws
        out = {"target_loss": [float(target_loss)], **{k: [v] for k, v in self._group_columns(group).items()},
               "prob_unreachable": [float(np.mean(~np.isfinite(draws)))],
               "median": [float(np.quantile(draws, 0.5, method="inverted_cdf"))]}
        # inverted_cdf: no interpolation, so quantiles among unreachable (inf) draws are inf, not nan
        out.update({k: [float(v)] for k, v in _interval_columns("", draws, intervals, "inverted_cdf").items()})
        return pd.DataFrame(out)

    # ---- summaries -----------------------------------------------------------------------
    def natural_draws(self, group=None) -> dict:
        """Draws of L_inf (``loss_floor``), ``a`` and ``alpha`` for a group. Usage: ``fit.natural_draws("c4_val")``."""
        p = self.param_draws(group)
        return natural_params(p["loss_mid"], p["slope"], p["alpha"], self.spec.grid, self.spec.log_x_ref)

    def summary(self, interval: float = 0.9) -> pd.DataFrame:
        """Per fitted curve: median and interval of L_inf, a, alpha, with R-hat and ESS.

        Usage: ``print(fit.summary())``
        """
        rows = []
        lo_q, hi_q = (1 - interval) / 2, (1 + interval) / 2
        tag = f"{round(100 * interval):d}"
        for k, cell in enumerate(self.spec.cells if self.spec.groups else [()]):
            for name in ("loss_floor", "a", "alpha"):
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


def _add_posterior_predictive(tree, spec: ModelSpec, data: dict, seed: int):
    """Replicated losses of the fitted runs, one per posterior draw (NumPy; no extra JIT)."""
    post = tree.posterior
    theta = np.stack([post[name].values for name in LAW_PARAMS], axis=-2)[..., data["cell"]]  # (c, d, 3, n)
    mean = saturating_loss(data["u"], theta[..., 0, :], np.exp(theta[..., 1, :]), np.exp(theta[..., 2, :]),
                           spec.grid)
    nu = post["nu"].values[..., None] if spec.likelihood == "student_t" else None
    obs = mean + new_run_noise(post["sigma"].values[..., None], nu, mean.shape, np.random.default_rng(seed))
    tree["posterior_predictive"] = az.from_dict({"posterior_predictive": {"obs": obs}},
                                                dims={"obs": ["run"]})["posterior_predictive"]
    return tree


def _add_cell_quantities(tree, spec: ModelSpec):
    """Add per-cell law parameters and L_inf, a, alpha to the posterior (numpy, after sampling)."""
    post = tree.posterior.to_dataset()
    draws = {name: post[name].values for name in post.data_vars}
    theta = cell_values(draws, spec, spec.cell_level_codes())  # (chain, draw, 3, cell)
    theta = np.broadcast_to(theta, theta.shape[:-1] + (len(spec.cells),))
    new = {name: theta[..., i, :] for i, name in enumerate(LAW_PARAMS)}
    new.update(natural_params(new["loss_mid"], np.exp(new["log_slope"]), np.exp(new["log_alpha"]),
                              spec.grid, spec.log_x_ref))
    post = post.assign({k: (("chain", "draw", "cell"), v) for k, v in new.items()})
    tree["posterior"] = post.assign_coords(cell=spec.cell_labels)
    return tree


def fit_law(runs: RunTable, *, likelihood: str = "normal", priors: Priors | None = None,
            settings: SamplerSettings | None = None, spec: ModelSpec | None = None) -> Fit:
    """Fit the hierarchical saturating law ``L = L_inf + a * x**-alpha`` with NUTS.

    Usage: ``fit = fit_law(runs, likelihood="student_t", settings=SamplerSettings(seed=1))``
    """
    spec = spec or ModelSpec.from_runs(runs, likelihood=likelihood, priors=priors)
    settings = settings or SamplerSettings()
    centered = [p for p in LAW_PARAMS if p in spec.centered]
    coords = {"law_param": list(LAW_PARAMS), "cell": spec.cell_labels, "centered_param": centered,
              "noncentered_param": [p for p in LAW_PARAMS if p not in centered],
              **{f"{g}_level": spec.levels[g] for g in spec.groups}}
    dims = {"mu": ["law_param"], "sd_cell": ["law_param"], "cell_centered": ["centered_param", "cell"],
            "z_cell": ["noncentered_param", "cell"]}
    if len(centered) == len(LAW_PARAMS):
        del coords["noncentered_param"], dims["z_cell"]
    for g in spec.groups:
        dims.update({f"sd_{g}": ["law_param"], f"z_{g}": ["law_param", f"{g}_level"]})
    data = model_data(runs, spec)
    tree, _, timings = run_nuts(build_model(spec), data, settings, coords, dims)
    tree = _add_cell_quantities(tree, spec)
    if settings.posterior_predictive:
        tree = _add_posterior_predictive(tree, spec, data, settings.seed)
    diagnostics = diagnose(tree, settings)
    warn_if_bad(diagnostics)
    return Fit(runs=runs, spec=spec, settings=settings, tree=tree, diagnostics=diagnostics, timings=timings)
