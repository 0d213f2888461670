"""Bounded downstream metrics: sigmoid laws, emergence thresholds, loss -> metric chained forecasts.

Law (per cell, e.g. per task, or per family x task), with ``z`` a centred covariate:

    m(z) = chance + (ceiling - chance) * sigmoid(k * (z - z_star))

- ``link="log"``: ``z = log(x) - ref`` for a scale ``x`` (compute, params); ``exp(z_star + ref)`` is
  the scale where the metric is halfway from chance to ceiling;
- ``link="loss"``: ``z = -(loss - ref)``: the metric rises as the loss falls (the loss -> metric link).

Sampled per cell, in a reference parametrization (the idea of ``bayescale.laws``): ``level``, the logit of
the fraction of the chance-to-ceiling range the expected metric has reached at a reference point ``z_ref``
of the covariate (default: the median of the fitted covariate values), and ``log_k``, the log of the
slope in logit units per unit of ``z``. Then ``logit((m - chance) / (ceiling - chance)) = level + k (z - z_ref)``
and ``z_star = z_ref - level / k`` (``natural_params``). Sampling ``z_star`` directly leaves a ridge when
a cell's curve is flat at chance over the data (any ``z_star`` far enough past the data, traded against
``k``); with ``level`` the data bound one parameter from above and ``k`` is left to its prior, and for
rising curves ``level`` and ``log_k`` are nearly uncorrelated (level at the data's centre, slope). On
Gadre et al.'s link fit this halved the leapfrog steps per draw (``studies/metric_parametrization.py``).
Both are assembled by the same hierarchy as the loss laws (``bayescale.model.cell_values``: population
mean, zero-sum crossed factor effects when there are two or more grouping factors, cell effects;
centred when the median cell has >= 8 distinct covariate values, else non-centred). Default priors
(weakly informative): population mean ``level ~ N(0, 2)`` (a fraction of the range between about 2%
and 98% at the reference, 2 sd), ``log_k ~ N(log(4 / covariate range), 1)`` (about 4 logit units over
the data); spreads ``HalfNormal(3)`` (level) and ``HalfNormal(1)`` (log_k) per factor, half that for
cells. ``chance`` comes from a column (one value per cell) or a number; ``ceiling`` is fixed (default 1).

Observation model: with a count of test examples (``n_examples``) the number of correct answers is
``"binomial"`` or ``"beta_binomial"`` (binomial plus extra model-to-model spread, the default: two
models at the same scale differ by more than test-set sampling); without it, ``"beta"`` on the
metric (clipped to [1e-3, 1 - 1e-3]).

Usage:
    mfit = fit_metric(df, x="compute_flops", groups=["task"], chance="chance_level", n_examples="n_examples")
    mfit.thresholds()                               # per task: halfway / clearly-above-chance scale, verdicts
    mfit.emergence_probability(1e23)                # P(task has emerged by a budget)
    link = fit_metric(df, x="c4_val_loss", link="loss", groups=["task"], ...)
    link.chained_forecast(loss_fit, {"params": [7e9], "tokens": [1.4e11]}, group="mmlu")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from scipy import optimize, special, stats

from .inference import Diagnostics, diagnose, run_nuts, warn_if_bad
from .fit import _interval_columns
from .model import _split, cell_values, new_cell_draws, sample_hierarchy
from .spec import SamplerSettings, crossed_effects

__all__ = ["MetricSpec", "MetricFit", "fit_metric", "sigmoid_metric", "natural_params", "LEVELS", "curve_fit_sigmoid",
           "predict_sigmoid", "plot_emergence"]

#: Default threshold levels, as fractions of the way from chance to ceiling.
LEVELS = {"half": 0.5, "clear": 0.1}
_EPS = 1e-3


#: Default priors of the sampled parameters (``log_k``'s location is set from the covariate range).
_PRIORS = {"level": (0.0, 2.0), "log_k": (None, 1.0), "group_sd": {"level": 3.0, "log_k": 1.0},
           "log_phi": (5.0, 2.0)}


#: A factor's effects are sampled centred (``fit_metric``) from this many levels and rows in its median level.
FACTOR_LEVELS_CENTRED, FACTOR_ROWS_CENTRED = 10, 20


def sigmoid_metric(z, chance, ceiling, z_star, k, xp=np):
    """Expected metric at centred covariate ``z``. Usage: ``sigmoid_metric(z, 0.25, 1.0, 0.3, 2.0)``."""
    return chance + (ceiling - chance) / (1.0 + xp.exp(-k * (z - z_star)))


def natural_params(level, log_k, z_ref, xp=np):
    """``(z_star, k)`` from the sampled ``level`` (logit of the fraction of the chance-to-ceiling range
    reached at ``z_ref``) and ``log_k``: ``k = exp(log_k)``, ``z_star = z_ref - level / k``.

    Usage: ``z_star, k = natural_params(-2.0, 0.5, 0.0)``
    """
    k = xp.exp(log_k)
    return z_ref - level / k, k


@dataclass(frozen=True)
class MetricSpec:
    """What ``fit_metric`` fits: covariate, link, grouping, chance per cell, priors, likelihood.

    Duck-types the attributes ``bayescale.model.cell_values`` reads (``law_params``, ``groups``,
    ``cells``, ``centered``). Usage: ``mfit.spec.cells``
    """

    x: str
    metric: str
    link: str                       # "log" or "loss"
    ref: float                      # covariate reference: mean log x, or mean loss
    groups: tuple[str, ...]
    levels: dict
    cells: tuple[tuple[str, ...], ...]
    chance: tuple[float, ...]       # per cell
    ceiling: float
    likelihood: str                 # "binomial", "beta_binomial", "beta"
    n_examples: str | None
    priors: dict                    # name -> (loc, scale) for mu; "group_sd" -> {param: sd}; "log_phi"
    centered: tuple[str, ...] = ("level", "log_k")
    z_range: tuple[float, float] = (0.0, 0.0)
    z_ref: float = 0.0              # centred covariate where ``level`` is measured
    law_params: tuple[str, ...] = ("level", "log_k")
    centered_factors: tuple[str, ...] = ()  # factors whose zero-sum effects are sampled centred
    factor_effects: bool | None = None      # crossed-factor effects (``bayescale.spec.crossed_effects``)

    @property
    def cell_labels(self) -> list[str]:
        """One label per cell, e.g. ``"rpj|mmlu"``. Usage: ``spec.cell_labels``."""
        return ["|".join(c) for c in self.cells]

    def cell_level_codes(self) -> np.ndarray:
        """Level index of each cell per factor, (n_cells, n_factors). Usage: internal."""
        return np.array([[self.levels[g].index(c[j]) for j, g in enumerate(self.groups)] for c in self.cells],
                        dtype=np.int64).reshape(len(self.cells), len(self.groups))

    def to_z(self, x) -> np.ndarray:
        """Centred covariate of raw values (scales or losses). Usage: ``spec.to_z([1e21])``."""
        x = np.asarray(x, dtype=np.float64)
        return np.log(x) - self.ref if self.link == "log" else -(x - self.ref)

    def from_z(self, z) -> np.ndarray:
        """Raw covariate from centred values (inverse of ``to_z``). Usage: internal."""
        z = np.asarray(z, dtype=np.float64)
        return np.exp(np.minimum(z + self.ref, 700.0)) if self.link == "log" else self.ref - z


def _chance_per_cell(data: pd.DataFrame, groups, cells, chance) -> tuple[float, ...]:
    if not isinstance(chance, str):
        return tuple(float(chance) for _ in cells)
    out = []
    for cell in cells:
        mask = np.ones(len(data), bool)
        for g, lv in zip(groups, cell):
            mask &= data[g].to_numpy() == lv
        vals = np.unique(data.loc[mask, chance].to_numpy(float))
        if len(vals) != 1 or not np.isfinite(vals[0]):
            raise ValueError(f"cell {cell}: column {chance!r} must hold one finite chance level, got {vals[:3]}; "
                             "drop the cell or pass chance=<number>")
        out.append(float(vals[0]))
    return tuple(out)


def _prepare(df: pd.DataFrame, x, metric, groups, chance, n_examples, link, ceiling, likelihood,
             centered, reference=0.5, centered_factors="auto") -> tuple[MetricSpec, pd.DataFrame]:
    if link not in ("log", "loss"):
        raise ValueError(f"link must be 'log' (scale covariate) or 'loss', got {link!r}")
    cols = [x, metric, *groups] + ([chance] if isinstance(chance, str) else []) + ([n_examples] if n_examples else [])
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the table; available: {list(df.columns)}")
    data = df.dropna(subset=[x, metric]).copy()
    for g in groups:
        data[g] = data[g].astype(str)
    xv = data[x].to_numpy(float)
    if link == "log" and np.any(xv <= 0):
        raise ValueError(f"column {x!r} must be > 0 for link='log'")
    if likelihood == "auto":
        likelihood = "beta_binomial" if n_examples else "beta"
    if likelihood in ("binomial", "beta_binomial") and not n_examples:
        raise ValueError(f"likelihood={likelihood!r} needs n_examples=<column of test-set sizes>")
    if likelihood not in ("binomial", "beta_binomial", "beta"):
        raise ValueError(f"likelihood must be 'auto', 'binomial', 'beta_binomial' or 'beta', got {likelihood!r}")
    levels = {g: sorted(data[g].unique().tolist()) for g in groups}
    cells = tuple(sorted(set(data[list(groups)].itertuples(index=False, name=None)))) if groups else ((),)
    chances = _chance_per_cell(data, groups, cells, chance)
    ref = float(np.mean(np.log(xv))) if link == "log" else float(np.mean(xv))
    z = np.log(xv) - ref if link == "log" else -(xv - ref)
    width = max(float(np.ptp(z)), 1e-3)
    if not 0 <= float(reference) <= 1:
        raise ValueError(f"reference is a quantile of the fitted covariate values, in [0, 1]; got {reference}")
    z_ref = float(np.quantile(z, float(reference)))
    priors = {**{k: v for k, v in _PRIORS.items() if k != "log_k"},
              "log_k": (float(np.log(4.0 / width)), _PRIORS["log_k"][1]), "group_sd": dict(_PRIORS["group_sd"])}
    if centered == "auto":
        per_cell = data.groupby(list(groups))[x].nunique() if groups else pd.Series([len(np.unique(xv))])
        centered = ("level", "log_k") if float(np.median(per_cell)) >= 8 else ()
    factor_effects = crossed_effects(groups, levels)
    if centered_factors == "auto":
        centered_factors = tuple(g for g in groups if factor_effects and len(levels[g]) >= FACTOR_LEVELS_CENTRED
                                 and float(np.median(data.groupby(g).size())) >= FACTOR_ROWS_CENTRED)
    spec = MetricSpec(x=x, metric=metric, link=link, ref=ref, groups=tuple(groups), levels=levels, cells=cells,
                      chance=chances, ceiling=float(ceiling), likelihood=likelihood, n_examples=n_examples,
                      priors=priors, centered=tuple(centered), z_range=(float(z.min()), float(z.max())),
                      z_ref=z_ref, centered_factors=tuple(centered_factors),
                      factor_effects=factor_effects)
    return spec, data


def _model_data(spec: MetricSpec, data: pd.DataFrame, with_response: bool = True) -> dict:
    index = {c: k for k, c in enumerate(spec.cells)}
    keys = data[list(spec.groups)].itertuples(index=False, name=None) if spec.groups else [()] * len(data)
    cell = np.array([index[tuple(k)] for k in keys], dtype=np.int64)
    out = {"cell": cell, "cell_levels": spec.cell_level_codes(), "z": spec.to_z(data[spec.x].to_numpy(float))}
    m = data[spec.metric].to_numpy(float)
    if spec.n_examples:
        n = np.maximum(np.round(data[spec.n_examples].to_numpy(float)), 1).astype(np.int64)
        out["n"] = n
        out["y"] = np.clip(np.round(m * n), 0, n).astype(np.int64) if with_response else None
    else:
        out["y"] = np.clip(m, _EPS, 1 - _EPS) if with_response else None
    return out


def _build_model(spec: MetricSpec):
    pri = spec.priors
    loc = np.array([pri[p][0] for p in spec.law_params])
    scale = np.array([pri[p][1] for p in spec.law_params])
    group_sd = np.array([pri["group_sd"][p] for p in spec.law_params])
    chance = jnp.asarray(spec.chance)
    ceiling = spec.ceiling

    def model(cell, cell_levels, z, y=None, n=None):
        theta = sample_hierarchy(spec, loc, scale, group_sd, cell_levels)[..., cell]
        z_star, k = natural_params(theta[0], theta[1], spec.z_ref, xp=jnp)
        p = sigmoid_metric(z, chance[cell], ceiling, z_star, k, xp=jnp)
        p = jnp.clip(p, _EPS / 10, 1 - _EPS / 10)
        if spec.likelihood == "binomial":
            noise = dist.Binomial(n, probs=p)
        else:
            phi = jnp.exp(numpyro.sample("log_phi", dist.Normal(*pri["log_phi"])))
            if spec.likelihood == "beta_binomial":
                noise = dist.BetaBinomial(p * phi, (1 - p) * phi, n)
            else:
                noise = dist.Beta(p * phi, (1 - p) * phi)
        with numpyro.plate("obs_plate", cell.shape[0]):
            numpyro.sample("obs", noise, obs=y)

    return model




@dataclass
class MetricFit:
    """A fitted hierarchical sigmoid metric law. Usage: ``mfit.forecast([1e22], group="mmlu")``."""

    data: pd.DataFrame
    spec: MetricSpec
    settings: SamplerSettings
    tree: object
    diagnostics: Diagnostics
    timings: dict = field(default_factory=dict)

    def _flat(self, name: str) -> np.ndarray:
        v = np.asarray(self.tree.posterior[name].values)
        return v.reshape(-1, *v.shape[2:])

    def _cell(self, group) -> tuple[int | None, tuple]:
        if group is None and not self.spec.groups:
            return 0, ()
        key = (group,) if isinstance(group, str) else tuple(group) if group is not None else (None,) * len(
            self.spec.groups)
        if isinstance(group, dict):
            key = tuple(group.get(g) for g in self.spec.groups)
        if len(key) != len(self.spec.groups):
            raise ValueError(f"group {group!r} must give one level per factor {list(self.spec.groups)}")
        key = tuple(None if k is None else str(k) for k in key)
        return (self.spec.cells.index(key) if key in self.spec.cells else None), key

    def theta_draws(self, group=None, seed: int = 0) -> dict:
        """Draws of ``z_star`` and ``k`` (from the sampled ``level`` and ``log_k``; also ``level`` and
        ``chance``) for a cell; unseen levels come from the hierarchy.

        Usage: ``mfit.theta_draws(("rpj", "mmlu"))["z_star"]``
        """
        k, key = self._cell(group)
        if k is not None:
            level, lk = self._flat("level")[:, k], self._flat("log_k")[:, k]
            chance = self.spec.chance[k]
        else:
            value = new_cell_draws(self._flat, self.spec, key, np.random.default_rng(seed))
            level, lk = value[:, 0], value[:, 1]
            chance = self._chance_of(key, group)
        z_star, k_ = natural_params(level, lk, self.spec.z_ref)
        return {"z_star": z_star, "k": k_, "level": level, "chance": chance}

    def cell_diagnostics(self) -> pd.DataFrame:
        """Per cell: worst R-hat and bulk / tail ESS of its ``level`` and ``log_k`` (which include the
        population and factor effects), and whether they meet the thresholds of ``bayescale.inference``;
        with the cell's data: ``n_x`` (distinct covariate values) and ``max_frac`` (largest observed
        fraction of the chance-to-ceiling range), which tell a cell with little signal.

        Usage: ``mfit.cell_diagnostics().query("not ok")``
        """
        from .inference import ESS_MIN, RHAT_MAX

        tab = self.diagnostics.table
        rows = []
        for k, (cell, label) in enumerate(zip(self.spec.cells, self.spec.cell_labels)):
            names = [f"{p}[{label}]" for p in self.spec.law_params]
            if not self.spec.groups:  # one curve: its quantities, however ArviZ labels the one cell
                names = [i for i in tab.index if str(i).split("[")[0] in self.spec.law_params]
            part = tab.loc[names]
            mask = np.ones(len(self.data), bool)
            for g, lv in zip(self.spec.groups, cell):
                mask &= (self.data[g] == lv).to_numpy()
            chance = self.spec.chance[k]
            frac = (self.data.loc[mask, self.spec.metric].to_numpy(float) - chance) / (self.spec.ceiling - chance)
            rows.append({**dict(zip(self.spec.groups, cell)), "max_rhat": float(part["r_hat"].max()),
                         "min_ess_bulk": float(part["ess_bulk"].min()), "min_ess_tail": float(part["ess_tail"].min()),
                         "n_x": int(self.data.loc[mask, self.spec.x].nunique()), "max_frac": float(frac.max())})
        out = pd.DataFrame(rows)
        out["ok"] = (out["max_rhat"] <= RHAT_MAX) & (out[["min_ess_bulk", "min_ess_tail"]].min(axis=1) >= ESS_MIN)
        return out

    def _chance_of(self, key: tuple, group) -> float:
        """Chance level of an unseen cell: the one shared by the fitted cells with its known levels
        (all known levels first, then each known factor alone, last factor first)."""
        known = [(i, lv) for i, (g, lv) in enumerate(zip(self.spec.groups, key)) if lv in self.spec.levels[g]]
        for subset in [known] + [[k] for k in reversed(known)]:
            same = {c for j, c in enumerate(self.spec.chance) if all(self.spec.cells[j][i] == lv for i, lv in subset)}
            if len(same) == 1:
                return same.pop()
        raise ValueError(f"no unique chance level for unseen group {group!r}")

    def curve_draws(self, x, group=None, seed: int = 0) -> np.ndarray:
        """Expected-metric draws (draws, len(x)) at raw covariate values.

        Usage: ``mfit.curve_draws([1e22], "mmlu")``
        """
        t = self.theta_draws(group, seed)
        z = self.spec.to_z(np.atleast_1d(x))[None, :]
        return sigmoid_metric(z, t["chance"], self.spec.ceiling, t["z_star"][:, None], t["k"][:, None])

    def _obs_noise(self, mean: np.ndarray, n_examples, rng) -> np.ndarray:
        """A new model's observed metric around expected ``mean`` (same shape)."""
        p = np.clip(mean, _EPS / 10, 1 - _EPS / 10)
        if self.spec.likelihood != "binomial":
            phi = np.exp(self._flat("log_phi"))[:, None]
            p = rng.beta(p * phi, (1 - p) * phi)
            p = np.clip(p, 1e-12, 1 - 1e-12)
        if self.spec.likelihood == "beta" or n_examples is None:
            return p
        n = np.broadcast_to(np.asarray(n_examples, dtype=np.int64), p.shape)
        return rng.binomial(n, p) / n

    def _summarize(self, values: dict, law: np.ndarray, pred: np.ndarray, group, intervals) -> pd.DataFrame:
        _, key = self._cell(group)
        out = {**values, **{g: (lv if lv is not None else "(new)") for g, lv in zip(self.spec.groups, key)},
               "median": np.median(law, axis=0), "mean": law.mean(axis=0)}
        out.update(_interval_columns("", law, intervals))
        out.update(_interval_columns("pred_", pred, intervals))
        return pd.DataFrame(out)

    def forecast(self, x, group=None, n_examples=None, intervals: Sequence[float] = (0.5, 0.9),
                 seed: int = 0) -> pd.DataFrame:
        """Metric forecast at covariate values ``x``: credible band of the curve, predictive band of a new model.

        ``n_examples``: test-set size for the predictive band (binomial noise); None: curve + spread only.
        Usage: ``mfit.forecast([1e22, 1e23], group="mmlu", n_examples=14042)``
        """
        x = np.atleast_1d(np.asarray(x, dtype=np.float64))
        law = self.curve_draws(x, group, seed)
        pred = self._obs_noise(law, n_examples, np.random.default_rng(seed))
        return self._summarize({self.spec.x: x}, law, pred, group, intervals)

    # ---- emergence thresholds ---------------------------------------------------------------
    def threshold_draws(self, level: float = 0.5, group=None, seed: int = 0) -> np.ndarray:
        """Draws of the covariate where the expected metric is ``level`` of the way from chance to ceiling.

        For ``link="log"`` a scale (e.g. FLOPs), for ``link="loss"`` a loss.
        Usage: ``mfit.threshold_draws(0.1, group="mmlu")``
        """
        if not 0 < level < 1:
            raise ValueError(f"level is a fraction of the chance-to-ceiling range, in (0, 1); got {level}")
        t = self.theta_draws(group, seed)
        return self.spec.from_z(self.spec.z_ref + (special.logit(level) - t["level"]) / t["k"])

    def _range(self, group) -> tuple[float, float]:
        k, key = self._cell(group)
        mask = np.ones(len(self.data), bool)
        for g, lv in zip(self.spec.groups, key):
            if lv is not None:
                mask &= (self.data[g] == lv).to_numpy()
        x = self.data.loc[mask if mask.any() else slice(None), self.spec.x].to_numpy(float)
        return float(x.min()), float(x.max())

    def thresholds(self, levels: dict | None = None, groups: Sequence | None = None, interval: float = 0.9,
                   decide: float = 0.5) -> pd.DataFrame:
        """Per cell and level: threshold posterior and an honest verdict.

        ``levels``: {name: fraction of the chance-to-ceiling range} (default ``LEVELS``: ``half`` 0.5,
        ``clear`` 0.1 = clearly above chance). Columns: group columns, ``level``, ``metric_at_level``,
        ``data_min``/``data_max`` (covariate range of the cell's data, ``x``-units), ``p_beyond_data``
        (posterior probability that the threshold lies past the data, i.e. not reached in the data),
        ``p_before_data``, ``verdict``, and ``median``/``lower_XX``/``upper_XX`` (only when the verdict is
        ``"emerged in range"``), ``lower_bound`` with ``p_above_lower_bound`` (for ``"not emerged in range"``:
        the largest observed scale, or for a loss link the smallest observed loss, and the posterior
        probability that the threshold lies beyond it). Verdicts (with ``decide`` = 0.5):
        ``"not emerged in range"`` when ``p_beyond_data >= decide``, ``"above level before range"`` when
        ``p_before_data >= decide``, else ``"emerged in range"``.
        Usage: ``mfit.thresholds(levels={"half": 0.5}, groups=[("rpj", "mmlu")])``
        """
        levels = levels or LEVELS
        rows = []
        tag = f"{round(100 * interval):d}"
        for group in (groups if groups is not None else (self.spec.cells if self.spec.groups else [None])):
            lo_x, hi_x = self._range(group)
            k, key = self._cell(group)
            chance = self.theta_draws(group)["chance"]
            for name, frac in levels.items():
                d = self.threshold_draws(frac, group)
                if self.spec.link == "log":
                    beyond, before, bound = d > hi_x, d < lo_x, hi_x
                else:  # lower loss = further along
                    beyond, before, bound = d < lo_x, d > hi_x, lo_x
                row = {**dict(zip(self.spec.groups, key)), "level": name,
                       "metric_at_level": chance + frac * (self.spec.ceiling - chance),
                       "data_min": lo_x, "data_max": hi_x,
                       "p_beyond_data": float(beyond.mean()), "p_before_data": float(before.mean())}
                if row["p_beyond_data"] >= decide:
                    row.update(verdict="not emerged in range", lower_bound=bound,
                               p_above_lower_bound=row["p_beyond_data"])
                elif row["p_before_data"] >= decide:
                    row.update(verdict="above level before range")
                else:
                    lo, hi = np.quantile(d, [(1 - interval) / 2, (1 + interval) / 2])
                    row.update(verdict="emerged in range", median=float(np.median(d)),
                               **{f"lower_{tag}": float(lo), f"upper_{tag}": float(hi)})
                rows.append(row)
        cols = [*self.spec.groups, "level", "verdict", "median", f"lower_{tag}", f"upper_{tag}", "lower_bound",
                "p_above_lower_bound", "p_beyond_data", "p_before_data", "metric_at_level", "data_min", "data_max"]
        return pd.DataFrame(rows).reindex(columns=cols)

    def emergence_probability(self, budget, level: float = 0.1, group=None) -> np.ndarray:
        """P(the expected metric has reached ``level`` of its range at covariate value(s) ``budget``).

        For ``link="loss"``, ``budget`` is a loss (reached when the threshold loss >= budget).
        Usage: ``mfit.emergence_probability([1e22, 1e23], level=0.1, group="mmlu")``
        """
        d = self.threshold_draws(level, group)[:, None]
        b = np.atleast_1d(np.asarray(budget, dtype=np.float64))[None, :]
        return np.mean(d <= b if self.spec.link == "log" else d >= b, axis=0)

    # ---- chained forecasts ------------------------------------------------------------------
    def chained_draws(self, loss_fit, scales, group=None, loss_group=None, seed: int = 0,
                      predictive: bool = False, n_examples=None) -> np.ndarray:
        """Metric draws at ``scales`` through a loss law (``bayescale.Fit``) and this loss -> metric link.

        Draws of the two posteriors are paired after a random permutation (they come from separate
        fits, so the pairs are draws from the product of the posteriors). ``predictive=True`` adds a new
        model's loss noise (the loss fit's ``sigma``) and metric noise. Shape (draws, n_scales).
        Usage: ``link.chained_draws(loss_fit, {"params": [7e9], "tokens": [1.4e11]}, ("rpj", "mmlu"), "rpj")``
        """
        if self.spec.link != "loss":
            raise ValueError("chained forecasts need a loss -> metric link: fit_metric(..., link='loss')")
        rng = np.random.default_rng(seed)
        loss = loss_fit.law_draws(scales, loss_group, seed=seed)
        if predictive:
            loss = loss + loss_fit._noise(loss.shape, rng)
        t = self.theta_draws(group, seed)
        s = min(len(loss), len(t["z_star"]))
        i, j = rng.permutation(len(loss))[:s], rng.permutation(len(t["z_star"]))[:s]
        z = self.spec.to_z(loss[i])
        mean = sigmoid_metric(z, t["chance"], self.spec.ceiling, t["z_star"][j, None], t["k"][j, None])
        if not predictive:
            return mean
        if self.spec.likelihood != "binomial":
            phi = np.exp(self._flat("log_phi"))[j, None]
            p = np.clip(mean, _EPS / 10, 1 - _EPS / 10)
            mean = np.clip(rng.beta(p * phi, (1 - p) * phi), 1e-12, 1 - 1e-12)
        if n_examples is not None and self.spec.likelihood != "beta":
            n = np.broadcast_to(np.asarray(n_examples, dtype=np.int64), mean.shape)
            mean = rng.binomial(n, mean) / n
        return mean

    def chained_forecast(self, loss_fit, scales, group=None, loss_group=None, n_examples=None,
                         intervals: Sequence[float] = (0.5, 0.9), seed: int = 0) -> pd.DataFrame:
        """Chained forecast table: band of the expected metric and predictive band of a new model.

        Usage: ``link.chained_forecast(loss_fit, [1e22], group="mmlu", n_examples=14042)``
        """
        law = self.chained_draws(loss_fit, scales, group, loss_group, seed)
        pred = self.chained_draws(loss_fit, scales, group, loss_group, seed + 1, predictive=True,
                                  n_examples=n_examples)
        values = scales if isinstance(scales, dict) else {"scale": np.atleast_1d(np.asarray(scales, float))}
        return self._summarize({k: np.atleast_1d(v) for k, v in values.items()}, law, pred, group, intervals)


def _add_cell_quantities(tree, spec: MetricSpec):
    post = tree.posterior.to_dataset()
    draws = {name: post[name].values for name in post.data_vars}
    theta = cell_values(draws, spec, spec.cell_level_codes())
    theta = np.broadcast_to(theta, theta.shape[:-1] + (len(spec.cells),))
    post = post.assign({p: (("chain", "draw", "cell"), theta[..., i, :]) for i, p in enumerate(spec.law_params)})
    tree["posterior"] = post.assign_coords(cell=spec.cell_labels)
    return tree


def fit_metric(df: pd.DataFrame, *, x: str, metric: str = "metric", groups: Sequence[str] = ("task",),
               chance: str | float = "chance_level", n_examples: str | None = None, link: str = "log",
               ceiling: float = 1.0, likelihood: str = "auto", centered: str | tuple = "auto",
               settings: SamplerSettings | None = None, priors: dict | None = None,
               reference: float = 0.5, centered_factors: str | tuple = "auto") -> MetricFit:
    """Fit ``m = chance + (ceiling - chance) * sigmoid(k (z - z_star))`` hierarchically over ``groups`` with NUTS.

    ``x``: covariate column (a scale with ``link="log"``, a loss with ``link="loss"``). ``chance``: column or
    number. ``n_examples``: column of test-set sizes (binomial-type likelihood) or None (Beta).
    Sampled per cell: ``level`` (logit of the fraction of the range reached at the reference point) and
    ``log_k``; see the module docstring. ``centered``: ``"auto"`` centres ``level`` and ``log_k`` when the
    median cell has >= 8 distinct covariate values, else both non-centred; or a tuple of names.
    ``priors``: overrides of the defaults (``level`` ~ N(0, 2), ``log_k`` ~ N(log(4 / range), 1),
    ``log_phi`` ~ N(5, 2), ``group_sd`` {"level": 3, "log_k": 1}). ``reference``: quantile of the fitted
    covariate values (in ``z``: log scale, or minus the loss) where ``level`` is measured.
    ``centered_factors`` (two or more factors): ``"auto"`` samples a factor's zero-sum effects centred when
    it has >= ``FACTOR_LEVELS_CENTRED`` levels (its spread is then pinned down) and its median level has
    >= ``FACTOR_ROWS_CENTRED`` rows (so is each effect; non-centred effects then mix badly: ObsScaling's
    28 families), else non-centred; or a tuple of factor names.
    Usage: ``fit_metric(df, x="compute_flops", groups=["task"], n_examples="n_examples")``
    """
    spec, data = _prepare(df, x, metric, tuple(groups), chance, n_examples, link, ceiling, likelihood, centered,
                          reference, centered_factors)
    if priors:
        spec = MetricSpec(**{**spec.__dict__, "priors": {**spec.priors, **priors}})
    settings = (settings or SamplerSettings()).resolved(loss_law=False)
    centered_idx, non_idx = _split(spec)
    coords = {"metric_param": list(spec.law_params), "cell": spec.cell_labels,
              "centered_param": [spec.law_params[i] for i in centered_idx],
              "noncentered_param": [spec.law_params[i] for i in non_idx],
              **{f"{g}_level": spec.levels[g] for g in spec.groups}}
    dims = {"mu": ["metric_param"], "sd_cell": ["metric_param"], "cell_centered": ["centered_param", "cell"],
            "z_cell": ["noncentered_param", "cell"]}
    for g in spec.groups:
        dims.update({f"sd_{g}": ["metric_param"], f"z_{g}": ["metric_param", f"{g}_level"],
                     f"effect_{g}": ["metric_param", f"{g}_level"]})
    md = _model_data(spec, data)
    tree, timings = run_nuts(_build_model(spec), md, settings, coords, dims)
    tree = _add_cell_quantities(tree, spec)
    diagnostics = diagnose(tree, settings)
    warn_if_bad(diagnostics)
    return MetricFit(data=data, spec=spec, settings=settings, tree=tree, diagnostics=diagnostics, timings=timings)


# ---- point-fit baseline ---------------------------------------------------------------------
def curve_fit_sigmoid(z: np.ndarray, m: np.ndarray, chance: float, ceiling: float = 1.0) -> dict | None:
    """Least-squares sigmoid in a centred covariate ``z`` (scipy ``curve_fit``); None on failure.

    Usage: ``res = curve_fit_sigmoid(np.log(C) - ref, acc, 0.25)``
    """
    def f(z, z_star, log_k):
        return sigmoid_metric(z, chance, ceiling, z_star, np.exp(log_k))

    width = max(float(np.ptp(z)), 1e-3)
    try:
        popt, pcov = optimize.curve_fit(f, z, m, p0=(float(z.max()), np.log(4 / width)),
                                        bounds=([-50 * width, -10], [50 * width, 10]), maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    dof = max(len(m) - 2, 1)
    resid_sd = float(np.sqrt(np.sum((m - f(z, *popt)) ** 2) / dof))
    return {"f": f, "popt": popt, "pcov": pcov, "resid_sd": resid_sd, "dof": dof}


def predict_sigmoid(res: dict, z: np.ndarray, interval: float = 0.9, extra_var=0.0) -> dict:
    """Point forecast and delta-method band (parameters + residual noise + ``extra_var``). Usage: internal."""
    f, popt = res["f"], res["popt"]
    mean = f(z, *popt)
    eps = 1e-6
    jac = np.stack([(f(z, *(popt + eps * np.eye(2)[i])) - mean) / eps for i in range(2)], axis=-1)
    pcov = np.where(np.isfinite(res["pcov"]), res["pcov"], 0.0)
    var = np.einsum("ni,ij,nj->n", jac, pcov, jac) + res["resid_sd"] ** 2 + extra_var
    half = stats.t.ppf((1 + interval) / 2, res["dof"]) * np.sqrt(var)
    return {"median": mean, "lower": mean - half, "upper": mean + half}


# ---- figure -------------------------------------------------------------------------------------
def plot_emergence(mfit: MetricFit, groups: Sequence | None = None, extend_to: float | None = None,
                   level: float = 0.1, ncols: int = 6, max_panels: int = 36):
    """Emergence curves: median and 90% band of the expected metric per cell, the data, chance, and the
    ``level`` threshold's median (dashed) when it is inside the data. Returns a ``matplotlib.figure.Figure``.

    Usage: ``plot_emergence(mfit, extend_to=1e25).savefig("emergence.png")``
    """
    from matplotlib.figure import Figure

    groups = list(groups if groups is not None else (mfit.spec.cells if mfit.spec.groups else [None]))[:max_panels]
    nrows = max(1, -(-len(groups) // ncols))
    fig = Figure(figsize=(2.4 * min(ncols, len(groups)), 2.0 * nrows))
    table = mfit.thresholds(levels={"level": level}, groups=groups)
    for i, group in enumerate(groups):
        ax = fig.add_subplot(nrows, min(ncols, len(groups)), i + 1)
        lo, hi = mfit._range(group)
        if extend_to is not None:
            hi = max(hi, extend_to) if mfit.spec.link == "log" else hi
            lo = min(lo, extend_to) if mfit.spec.link == "loss" else lo
        xs = np.geomspace(lo, hi, 60) if mfit.spec.link == "log" else np.linspace(lo, hi, 60)
        d = mfit.curve_draws(xs, group)
        q05, q50, q95 = np.quantile(d, [0.05, 0.5, 0.95], axis=0)
        ax.fill_between(xs, q05, q95, color="C0", alpha=0.3, lw=0)
        ax.plot(xs, q50, color="C0", lw=1.2)
        k, key = mfit._cell(group)
        mask = np.ones(len(mfit.data), bool)
        for g, lv in zip(mfit.spec.groups, key):
            mask &= (mfit.data[g] == lv).to_numpy()
        ax.plot(mfit.data.loc[mask, mfit.spec.x], mfit.data.loc[mask, mfit.spec.metric], "o", ms=2, color="k")
        ax.axhline(mfit.theta_draws(group)["chance"], color="0.5", lw=0.8, ls=":")
        row = table.iloc[i]
        if row["verdict"] == "emerged in range":
            ax.axvline(row["median"], color="C3", lw=0.8, ls="--")
        ax.set_title(f"{'|'.join(key) or 'all'}\n{row['verdict']}", fontsize=6)
        if mfit.spec.link == "log":
            ax.set_xscale("log")
        else:
            ax.invert_xaxis()
        ax.tick_params(labelsize=5)
    fig.tight_layout()
    return fig


def score_metric_forecasts(df: pd.DataFrame, prefix: str, truth: str = "metric") -> dict:
    """Median absolute error (in points) and 90% band coverage of one method's forecasts.

    ``df`` has ``truth`` and ``{prefix}_median``, ``{prefix}_lower``, ``{prefix}_upper``; rows
    whose median is not finite (a failed baseline fit) are left out and counted in ``n``.
    Usage: ``score_metric_forecasts(heldout, "bs")``
    """
    y, med = df[truth].to_numpy(), df[f"{prefix}_median"].to_numpy(float)
    lo, hi = df[f"{prefix}_lower"].to_numpy(float), df[f"{prefix}_upper"].to_numpy(float)
    ok = np.isfinite(med)
    return {"MAE_points": 100 * float(np.median(np.abs(med[ok] - y[ok]))),
            "coverage_90": float(np.mean((lo[ok] <= y[ok]) & (y[ok] <= hi[ok]))), "n": int(ok.sum())}
