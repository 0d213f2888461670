"""Model spec: functional form, grouping factors, priors and likelihood, as plain data.

The spec knows nothing about NumPyro; ``bayescale.model`` turns it into a model.
Default priors are scale-aware: they are derived from the run table's loss range and
log-scale range (see ``default_priors``), and are printed by ``print(spec.priors)``.

Usage: ``spec = ModelSpec.from_runs(runs, likelihood="student_t")``
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from .laws import LOG_EXPONENT_PRIOR, SATURATING, Law, get_law, response_scales
from .centring import pinned_centring
from .runs import RunTable, RunTableError, _positive_floats

__all__ = ["Priors", "ModelSpec", "SamplerSettings", "default_priors", "LAW_PARAMS", "GRID_POINTS",
           "CENTER_ALPHA_MIN_SCALES", "MIN_FACTOR_LEVELS", "crossed_effects"]

#: Sampled per-group quantities of the default (saturating) law; any law's are ``get_law(name).params``.
LAW_PARAMS = SATURATING.params

#: Number of points of the reference grid spanning the fitted log-scale range.
GRID_POINTS = 5

#: Curves with at least this many distinct scales (median over curves) pin down their exponent,
#: so it is sampled centred too; with fewer it is non-centred (see ``ModelSpec.centered``).
CENTER_ALPHA_MIN_SCALES = 8
#: ``SamplerSettings(init="auto")`` starts at the mode when every curve has at least this many runs:
#: simulated tables of 100 curves (``benchmarks/large_tables.py``), mode start with a 200-300 draw
#: warmup: 100 runs per curve mixed (R-hat 1.013), 10 per curve did not (R-hat 1.26, ESS 13).
MODE_MIN_RUNS_PER_CURVE = 100
#: Crossed factors get their own effects (and spreads) only when each has at least this many levels:
#: a spread estimated from two zero-sum effects (one degree of freedom) does not mix (Pythia's 2 x 2).
MIN_FACTOR_LEVELS = 3


@dataclass(frozen=True)
class Priors:
    """Priors of the hierarchical law, as numbers you can read and override.

    Population means: ``Normal(loc, scale)`` on each sampled law parameter: ``loss_mid`` (the
    law's level in the middle of the data, see ``bayescale.laws``), ``log_slope`` (log of its
    average -dL/dlog x there) and ``log_alpha``; parameters of other laws that are not fields
    here (the two-variable law's ``log_slope_N``, ``log_slope_D``, ``log_beta``) are in ``extra``.
    Between-group spreads: ``HalfNormal(group_sd[p])`` for each grouping factor's effect
    and ``HalfNormal(group_sd[p] / 2)`` for the cell (interaction) effect.
    Noise: ``HalfNormal(noise_sd)``, or ``LogNormal(log(noise[0]), noise[1])`` when ``noise`` (median,
    sd of log) is given (``calibrate_extrapolation`` sets it from a fit's noise posterior); Student-t
    degrees of freedom ``Gamma(nu_shape, nu_rate)``.

    Usage: ``replace(spec.priors, log_alpha=(np.log(0.3), 0.5))``, ``spec.with_priors(log_beta=(-1.0, 0.3))``
    """

    loss_mid: tuple[float, float]
    log_slope: tuple[float, float] | None = None  # None when the law has no such parameter
    log_alpha: tuple[float, float] = LOG_EXPONENT_PRIOR
    group_sd: dict = field(default_factory=lambda: {"loss_mid": 1.0, "log_slope": 0.5, "log_alpha": 0.35})
    noise_sd: float = 0.1
    noise: tuple[float, float] | None = None  # (median, sd of log): a LogNormal noise prior instead
    nu_shape: float = 2.0
    nu_rate: float = 0.1
    extra: dict = field(default_factory=dict)  # law parameter -> (loc, scale), for names that are not fields

    def __post_init__(self):
        if self.noise is not None and not (len(self.noise) == 2 and all(np.isfinite(self.noise))
                                           and self.noise[0] > 0 and self.noise[1] > 0):
            raise ValueError(f"priors.noise must be (median > 0, sd of log > 0), got {self.noise!r}")

    def loc_scale(self, name: str) -> tuple[float, float]:
        """(loc, scale) of the population mean of law parameter ``name``. Usage: ``priors.loc_scale("log_beta")``."""
        value = self.extra.get(name, getattr(self, name, None) if name in _PRIOR_FIELDS else None)
        if value is None:
            raise ValueError(f"no prior for law parameter {name!r}; "
                             f"give one with spec.with_priors({name}=(loc, scale))")
        return tuple(value)


_PRIOR_FIELDS = ("loss_mid", "log_slope", "log_alpha")


def law_columns(runs: RunTable, law: str | Law = "saturating") -> tuple[str, ...]:
    """Run-table columns feeding the law's covariates. Usage: ``law_columns(runs, "chinchilla")``."""
    by_role = {"scale": runs.scale, "params": runs.params_col, "tokens": runs.tokens_col}
    return tuple(by_role[r] for r in get_law(law).roles)


def law_log_covariates(runs: RunTable, law: str | Law = "saturating") -> list[np.ndarray]:
    """Natural logs of the law's covariate columns, validated (finite, > 0). Usage: internal."""
    out = []
    for col in law_columns(runs, law):
        if col == runs.scale:
            out.append(runs.log_scale())
            continue
        if col not in runs.data.columns:
            raise RunTableError(f"the {get_law(law).name!r} law needs column {col!r}, which the run table lacks; "
                                f"available columns: {', '.join(map(str, runs.data.columns.drop('row')))} "
                                "(name it with load_runs(..., params_col=..., tokens_col=...))")
        out.append(np.log(_positive_floats(runs.data, col, " (fitted on a log axis)")))
    return out


def default_priors(runs: RunTable, log_x_ref: float | None = None, law: str | Law = "saturating") -> Priors:
    """Scale-aware defaults from the data's units. Usage: ``default_priors(runs, law="chinchilla")``.

    - ``loss_mid ~ Normal(mean loss, loss range)``
    - each log slope ``~ Normal(log(loss range / log range of its covariate), 1)``: a slope of
      the order the data show, give or take a factor e,
    - each log exponent ``~ Normal(log 0.25, 0.75)``: exponents 0.06-1.1 (95%), the range seen in
      LM scaling laws for N, D and C,
    - group spreads: ``sd(loss)`` for ``loss_mid``, 0.5 for log slopes, 0.35 for log exponents,
    - noise: ``HalfNormal(0.1 * sd(loss))``.

    These are the saturating laws' (``"saturating"``, ``"chinchilla"``); each law states its own in
    ``Law.default_priors`` (``"power"``: ``PowerLaw``, ``"broken"``: ``BrokenPowerLaw``).
    ``log_x_ref``: centring of the first covariate (default: the data's mean log); only the broken
    law's break-location prior depends on it.
    """
    law = get_law(law)
    y = runs.data[runs.response].to_numpy(np.float64)
    logs = law_log_covariates(runs, law)
    refs = [float(np.mean(x)) for x in logs]
    if log_x_ref is not None:
        refs[0] = float(log_x_ref)
    priors, group_sd = law.default_priors(y, logs, refs)
    fields = {k: priors.pop(k) for k in _PRIOR_FIELDS if k in priors}
    return Priors(**fields, group_sd=group_sd, noise_sd=0.1 * response_scales(y)["sd"], extra=priors)


def crossed_effects(groups, levels: dict) -> bool:
    """Whether crossed factors get their own effects: two or more factors with >= ``MIN_FACTOR_LEVELS``
    levels each; otherwise the curves (cells) are pooled directly. Usage: ``crossed_effects(groups, levels)``
    """
    return len(groups) >= 2 and min(len(levels[g]) for g in groups) >= MIN_FACTOR_LEVELS


@dataclass(frozen=True)
class ModelSpec:
    """What to fit: the law, the grouping factors and their levels, priors and likelihood.

    ``centered`` lists the per-cell parameters sampled in the centred parametrization
    (those the data pin down); the others are non-centred. ``from_runs`` centres the level and
    slopes when the data pin each curve's value down better than the values vary across curves
    (``bayescale.centring``: curves sharing one slope open a funnel if centred), and centres the
    exponents when the median curve has at least ``CENTER_ALPHA_MIN_SCALES`` distinct scales (dense
    curves: non-centring them makes NUTS take several times more steps).

    Covariates: ``covariates`` (run-table columns, one per covariate of the law), ``log_refs``
    (their reference log values, the data's means) and ``grids`` (reference grids of centred
    log values, see ``bayescale.laws``). ``log_x_ref`` and ``grid`` are the first covariate's.
    Usage: ``ModelSpec.from_runs(runs)``, ``ModelSpec.from_runs(runs, law="chinchilla")``.
    """

    scale: str
    response: str
    groups: tuple[str, ...]
    levels: dict            # factor -> list of level labels
    cells: tuple[tuple[str, ...], ...]  # observed level combinations, the fitted curves
    log_x_ref: float
    grid: tuple[float, ...]  # reference grid of centred log-scales (see bayescale.laws)
    priors: Priors
    likelihood: Literal["normal", "student_t"] = "normal"
    law: Literal["saturating", "chinchilla", "power", "broken"] = "saturating"
    centered: tuple[str, ...] = ("loss_mid", "log_slope")
    covariates: tuple[str, ...] = ()            # empty: (scale,) (the saturating law)
    log_refs: tuple[float, ...] = ()            # empty: (log_x_ref,)
    grids: tuple[tuple[float, ...], ...] = ()   # empty: (grid,)
    factor_effects: bool | None = None          # crossed-factor effects; None: two or more factors (old fits)
    centered_factors: tuple[str, ...] = ()      # factors whose effects are sampled centred (metric fits use it)

    @classmethod
    def from_runs(cls, runs: RunTable, *, likelihood: str = "normal", priors: Priors | None = None,
                  log_x_ref: float | None = None, law: str = "saturating") -> ModelSpec:
        """Spec for a run table. Usage: ``ModelSpec.from_runs(runs, likelihood="student_t")``.

        ``law``: a registered law (``bayescale.laws.LAWS``): ``"saturating"`` (default),
        ``"chinchilla"`` (needs the run table's ``params_col`` and ``tokens_col``), ``"power"``
        (no floor) or ``"broken"`` (smoothly broken power law, one break).
        Centring: the law's ``pinned`` parameters as ``bayescale.centring.pinned_centring`` decides;
        the others for dense curves.
        ``log_x_ref``: reference log value of the first covariate (default: the data's mean).
        """
        if likelihood not in ("normal", "student_t"):
            raise ValueError(f"likelihood must be 'normal' or 'student_t', got {likelihood!r}")
        levels = {g: runs.levels(g) for g in runs.groups}
        for g, values in levels.items():
            if len(values) < 2:
                raise ValueError(f"grouping column {g!r} has one level ({values[0]!r}): there is nothing to "
                                 f"pool across, and a spread fitted from one curve does not mix; leave {g!r} out of "
                                 "groups (with no groups at all the table is fitted as one curve)")
        law_def = get_law(law)
        logs = law_log_covariates(runs, law_def)
        refs = [float(np.mean(x)) for x in logs]
        if log_x_ref is not None:
            refs[0] = float(log_x_ref)
        grids = []
        for x, ref in zip(logs, refs):
            u = x - ref
            points = np.zeros(1) if law_def.one_point_grid else np.linspace(u.min(), u.max(), GRID_POINTS)
            grids.append(tuple(float(g) for g in points))
        columns = law_columns(runs, law_def)
        keys = runs.data[list(runs.groups) + list(dict.fromkeys(columns))].drop_duplicates()
        per_curve = keys.groupby(list(runs.groups)).size() if runs.groups else [len(keys)]  # distinct scales
        dense = float(np.median(per_curve)) >= CENTER_ALPHA_MIN_SCALES
        factor_effects = crossed_effects(runs.groups, levels)
        priors = priors if priors is not None else default_priors(runs, log_x_ref=refs[0], law=law_def)
        pinned = pinned_centring(runs, law_def, logs, refs, grids, priors, factor_effects)
        centered = [p for p in law_def.params if p in pinned or (dense and p not in law_def.pinned)]
        cells = runs.cells()
        return cls(
            scale=runs.scale, response=runs.response, groups=runs.groups, levels=levels,
            cells=(tuple(tuple(r) for r in cells[list(runs.groups)].itertuples(index=False)) if runs.groups
                   else ((),)),  # a frame without columns iterates to no rows under some pandas versions
            log_x_ref=refs[0], grid=grids[0],
            priors=priors,
            likelihood=likelihood, law=law_def.name, centered=tuple(centered),
            covariates=columns, log_refs=tuple(refs), grids=tuple(grids),
            factor_effects=factor_effects,
        )

    @property
    def law_def(self) -> Law:
        """The law object (``bayescale.laws.Law``). Usage: ``spec.law_def.params``."""
        return get_law(self.law)

    @property
    def law_params(self) -> tuple[str, ...]:
        """Sampled per-cell law parameters. Usage: ``spec.law_params``."""
        return self.law_def.params

    @property
    def covariate_columns(self) -> tuple[str, ...]:
        """Run-table column of each covariate of the law. Usage: ``spec.covariate_columns``."""
        return self.covariates or (self.scale,)

    @property
    def law_log_refs(self) -> tuple[float, ...]:
        """Reference log value of each covariate. Usage: ``spec.law_log_refs``."""
        return self.log_refs or (self.log_x_ref,)

    @property
    def law_grids(self) -> tuple[np.ndarray, ...]:
        """Reference grid of each covariate, as arrays. Usage: ``law.mean(theta, cov, spec.law_grids)``."""
        return tuple(np.asarray(g, dtype=np.float64) for g in (self.grids or (self.grid,)))

    @property
    def cell_labels(self) -> list[str]:
        """One label per fitted curve, e.g. ``"rpj|c4_val"``. Usage: ``spec.cell_labels``."""
        return ["|".join(c) for c in self.cells] if self.groups else ["all"]

    def cell_level_codes(self) -> np.ndarray:
        """Level index of each cell per factor, shape (n_cells, n_factors). Usage: internal."""
        return np.array([[self.levels[g].index(c[j]) for j, g in enumerate(self.groups)]
                         for c in self.cells], dtype=np.int64).reshape(len(self.cell_labels), len(self.groups))

    def with_priors(self, **changes) -> ModelSpec:
        """Copy with some priors replaced (law parameters that are not ``Priors`` fields go to ``extra``).

        Usage: ``spec.with_priors(log_alpha=(-1.5, 0.5))``, ``spec.with_priors(log_beta=(-1.0, 0.3))``
        """
        names = set(self.priors.__dataclass_fields__)
        extra = {k: changes.pop(k) for k in list(changes) if k not in names}
        unknown = set(extra) - set(self.law_params)
        if unknown:
            raise ValueError(f"unknown prior(s) {sorted(unknown)}; "
                             f"the {self.law!r} law samples {list(self.law_params)}")
        if extra:
            changes["extra"] = {**self.priors.extra, **changes.get("extra", {}), **extra}
        return replace(self, priors=replace(self.priors, **changes))


@dataclass(frozen=True)
class SamplerSettings:
    """NUTS settings. Usage: ``SamplerSettings(chains=4, draws=1000, seed=1)``.

    Same seed and same data give identical draws. ``chain_method``: "auto" runs chains in
    parallel when JAX has one device per chain (on CPU bayescale asks XLA for 4 host devices
    at import), else "vectorized" (one device, e.g. a single GPU); on CPU, tables of >= 50,000
    runs get "sequential" (every chain on one device, dispatched at once: parallel host devices
    leaked memory there, ``inference.CPU_PARALLEL_MEMORY_ROWS``).
    """

    chains: int = 4
    warmup: int = 1000
    draws: int = 1000
    target_accept: float = 0.99  # 0.95 gave 1-2 divergences in 3 of 6 seeds on the flagship data; 0.99 none
    max_tree_depth: int = 10
    dense_mass: bool = False  # adapt a dense mass matrix (helps strongly correlated posteriors; costs O(dim^2))
    #: shrink each adapted variance toward 1e-3 with weight 5 / (n + 5) (Stan's and NumPyro's default).
    #: None (default): off for loss laws (``fit_law``, ``fit_many``) in float64; on for metric fits
    #: (``fit_metric``) and in float32. The shrinkage inflates the variances of parameters the data pin
    #: to an sd of ~0.01 or less, so the step size shrinks: on large loss tables NUTS then needs 2x (1e3
    #: runs) to 6x (1e4 runs) more time per effective draw. Without it, in float32, one chain of four
    #: got stuck on 30 curves x 1,000 runs (1 leapfrog step per draw, every draw divergent; most likely a
    #: zero variance from an early window with no accepted move); ObsScaling's metric fit mixes a little
    #: better with it. See README "Engines side by side".
    regularize_mass_matrix: bool | None = None
    #: where chains start (NumPyro engine): "prior_mean" (jittered, unit initial metric) or "mode": the
    #: posterior mode (``inference.MODE_STEPS`` Adam steps from the prior mean), moved by one draw of its
    #: Laplace approximation (diagonal: 1 / the potential's Hessian diagonal), which is also the initial
    #: metric; costs one Hessian (one gradient per parameter). "auto" (default): "mode" for loss laws
    #: whose every curve has >= ``MODE_MIN_RUNS_PER_CURVE`` runs, else "prior_mean". The mode start is
    #: what fits 1e6 rows on an H200 in 51-56 s with the default draws and 1e5 rows on 2 CPU cores at 2.7x
    #: PyMC's min-ESS/s (README "Large tables and GPUs"); it is bad for sparse hierarchies (few runs per
    #: curve), whose mode is the funnel's neck (spreads near zero).
    init: Literal["auto", "prior_mean", "mode"] = "auto"
    seed: int = 0
    chain_method: Literal["auto", "vectorized", "parallel", "sequential"] = "auto"
    precision: Literal["float64", "float32"] = "float64"  # float32: no faster on an H200, and stuck or slow on large tables (README)
    engine: Literal["numpyro", "pymc", "nutpie", "svi"] = "numpyro"  # pymc/nutpie: bayescale.pymc_model
    svi_steps: int = 20000  # engine="svi" (approximate, for very large tables): optimisation steps
    posterior_predictive: bool = True
    progress_bar: bool = False

    def __post_init__(self):
        if self.init not in ("auto", "prior_mean", "mode"):
            raise ValueError(f"init must be 'auto', 'prior_mean' or 'mode', got {self.init!r}")

    def resolved(self, loss_law: bool, runs_per_curve: int | None = None) -> SamplerSettings:
        """These settings with the per-model defaults decided (``regularize_mass_matrix``, ``init``);
        ``runs_per_curve``: the fewest runs of any curve (None: unknown, no mode start).

        Usage: ``settings.resolved(loss_law=True, runs_per_curve=40).init``
        """
        out = self
        if out.regularize_mass_matrix is None:
            out = replace(out, regularize_mass_matrix=not (loss_law and self.precision == "float64"))
        if out.init == "auto":
            rich = loss_law and runs_per_curve is not None and runs_per_curve >= MODE_MIN_RUNS_PER_CURVE
            out = replace(out, init="mode" if rich else "prior_mean")
        return out
