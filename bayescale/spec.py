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

from .runs import RunTable

__all__ = ["Priors", "ModelSpec", "SamplerSettings", "default_priors", "LAW_PARAMS", "GRID_POINTS",
           "CENTER_ALPHA_MIN_SCALES"]

#: Sampled per-group quantities of the saturating law (see ``bayescale.laws``).
LAW_PARAMS = ("loss_mid", "log_slope", "log_alpha")

#: Number of points of the reference grid spanning the fitted log-scale range.
GRID_POINTS = 5

#: Curves with at least this many distinct scales (median over curves) pin down their exponent,
#: so it is sampled centred too; with fewer it is non-centred (see ``ModelSpec.centered``).
CENTER_ALPHA_MIN_SCALES = 8


@dataclass(frozen=True)
class Priors:
    """Priors of the hierarchical saturating law, as numbers you can read and override.

    Population means: ``Normal(loc, scale)`` on ``loss_mid`` (mean loss of the law over the
    fitted scale range), ``log_slope`` (log of its average -dL/dlog x there) and ``log_alpha``.
    Between-group spreads: ``HalfNormal(group_sd[p])`` for each grouping factor's effect
    and ``HalfNormal(group_sd[p] / 2)`` for the cell (interaction) effect.
    Noise: ``HalfNormal(noise_sd)``; Student-t degrees of freedom ``Gamma(nu_shape, nu_rate)``.

    Usage: ``replace(spec.priors, log_alpha=(np.log(0.3), 0.5))``
    """

    loss_mid: tuple[float, float]
    log_slope: tuple[float, float]
    log_alpha: tuple[float, float] = (float(np.log(0.25)), 0.75)
    group_sd: dict = field(default_factory=lambda: {"loss_mid": 1.0, "log_slope": 0.5, "log_alpha": 0.35})
    noise_sd: float = 0.1
    nu_shape: float = 2.0
    nu_rate: float = 0.1


def default_priors(runs: RunTable, log_x_ref: float) -> Priors:
    """Scale-aware defaults from the data's units. Usage: ``default_priors(runs, log_x_ref)``.

    - ``loss_mid ~ Normal(mean loss, loss range)``
    - ``log_slope ~ Normal(log(loss range / log-scale range), 1)``: a slope of the order
      the data show, give or take a factor e,
    - ``log_alpha ~ Normal(log 0.25, 0.75)``: exponents 0.06-1.1 (95%), the range seen in
      LM scaling laws for N, D and C,
    - group spreads: ``sd(loss)`` for ``loss_mid``, 0.5 for ``log_slope``, 0.35 for ``log_alpha``,
    - noise: ``HalfNormal(0.1 * sd(loss))``.
    """
    y = runs.data[runs.response].to_numpy(np.float64)
    u = runs.log_scale() - log_x_ref
    y_range = max(float(np.ptp(y)), 1e-3 * float(np.abs(y).mean()))
    u_range = max(float(np.ptp(u)), 1e-6)
    y_sd = max(float(np.std(y)), 1e-3 * float(np.abs(y).mean()))
    return Priors(
        loss_mid=(float(np.mean(y)), y_range),
        log_slope=(float(np.log(y_range / u_range)), 1.0),
        group_sd={"loss_mid": y_sd, "log_slope": 0.5, "log_alpha": 0.35},
        noise_sd=0.1 * y_sd,
    )


@dataclass(frozen=True)
class ModelSpec:
    """What to fit: the law, the grouping factors and their levels, priors and likelihood.

    ``centered`` lists the per-cell parameters sampled in the centred parametrization
    (those the data pin down); the others are non-centred. ``from_runs`` always centres the
    level and slope, and centres the exponent too when the median curve has at least
    ``CENTER_ALPHA_MIN_SCALES`` distinct scales (dense curves: non-centring them makes NUTS take
    several times more steps). Usage: ``ModelSpec.from_runs(runs)``.
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
    law: Literal["saturating"] = "saturating"
    centered: tuple[str, ...] = ("loss_mid", "log_slope")

    @classmethod
    def from_runs(cls, runs: RunTable, *, likelihood: str = "normal", priors: Priors | None = None,
                  log_x_ref: float | None = None) -> ModelSpec:
        """Spec for a run table. Usage: ``ModelSpec.from_runs(runs, likelihood="student_t")``."""
        if likelihood not in ("normal", "student_t"):
            raise ValueError(f"likelihood must be 'normal' or 'student_t', got {likelihood!r}")
        if log_x_ref is None:
            log_x_ref = float(np.mean(runs.log_scale()))
        cells = runs.cells()
        u = runs.log_scale() - log_x_ref
        grid = tuple(float(g) for g in np.linspace(u.min(), u.max(), GRID_POINTS))
        per_curve = runs.data.groupby(list(runs.groups))[runs.scale].nunique() if runs.groups else \
            runs.data[[runs.scale]].nunique()
        dense = float(np.median(per_curve)) >= CENTER_ALPHA_MIN_SCALES
        centered = ("loss_mid", "log_slope", "log_alpha") if dense else ("loss_mid", "log_slope")
        return cls(
            scale=runs.scale, response=runs.response, groups=runs.groups,
            levels={g: runs.levels(g) for g in runs.groups},
            cells=tuple(tuple(r) for r in cells[list(runs.groups)].itertuples(index=False)),
            log_x_ref=log_x_ref, grid=grid,
            priors=priors if priors is not None else default_priors(runs, log_x_ref),
            likelihood=likelihood, centered=centered,
        )

    @property
    def cell_labels(self) -> list[str]:
        """One label per fitted curve, e.g. ``"rpj|c4_val"``. Usage: ``spec.cell_labels``."""
        return ["|".join(c) for c in self.cells] if self.groups else ["all"]

    def cell_level_codes(self) -> np.ndarray:
        """Level index of each cell per factor, shape (n_cells, n_factors). Usage: internal."""
        return np.array([[self.levels[g].index(c[j]) for j, g in enumerate(self.groups)]
                         for c in self.cells], dtype=np.int64).reshape(len(self.cell_labels), len(self.groups))

    def with_priors(self, **changes) -> ModelSpec:
        """Copy with some priors replaced. Usage: ``spec.with_priors(log_alpha=(-1.5, 0.5))``."""
        return replace(self, priors=replace(self.priors, **changes))


@dataclass(frozen=True)
class SamplerSettings:
    """NUTS settings. Usage: ``SamplerSettings(chains=4, draws=1000, seed=1)``.

    Same seed and same data give identical draws. ``chain_method``: "auto" runs chains in
    parallel when JAX has one device per chain (on CPU bayescale asks XLA for 4 host devices
    at import), else "vectorized" (one device, e.g. a single GPU); "sequential" also works.
    """

    chains: int = 4
    warmup: int = 1000
    draws: int = 1000
    target_accept: float = 0.95
    max_tree_depth: int = 10
    seed: int = 0
    chain_method: Literal["auto", "vectorized", "parallel", "sequential"] = "auto"
    precision: Literal["float64", "float32"] = "float64"  # float32: faster on GPUs, less exact
    posterior_predictive: bool = True
    progress_bar: bool = False
