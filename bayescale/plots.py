"""Figures of a fit: forecast bands per cell, parameter posteriors, rank plots, PPC.

Every function takes a ``Fit`` and returns a ``matplotlib.figure.Figure``; nothing is written
to disk and no global backend is chosen. Figures built here are plain ``Figure`` objects (not
registered with pyplot); figures built by ArviZ are detached from pyplot before returning.

Usage:
    from bayescale import plots
    fig = plots.plot_fit_bands(fit, extrapolate_to=1e23)
    fig.savefig("bands.png", dpi=120)
"""

from __future__ import annotations

import math

import arviz as az
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

__all__ = ["plot_fit_bands", "plot_param_posteriors", "plot_trace_rank", "plot_ppc"]

_BAND, _PRED, _EXTRA = "C0", "C0", "0.5"


def _cell_groups(fit) -> list:
    """The ``group`` argument of ``fit.forecast`` for each fitted cell (None if no factors)."""
    return list(fit.spec.cells) if fit.spec.groups else [None]


def _cell_mask(df: pd.DataFrame, groups, cell) -> np.ndarray:
    mask = np.ones(len(df), bool)
    for factor, level in zip(groups, cell or ()):
        mask &= (df[factor].astype(str) == level).to_numpy()
    return mask


def _draw_band(ax, fit, group, scales, runs: pd.DataFrame, heldout: pd.DataFrame | None, title: str,
               run_color: str = "k") -> None:
    """One panel: 90% predictive band, 90% credible band, median, runs, extrapolation region."""
    fc = fit.forecast(scales, group=group, intervals=(0.9,))
    max_fitted = scales[-1] / fc["scale_over_max_fitted"].iloc[-1]
    ax.fill_between(scales, fc["pred_lower_90"], fc["pred_upper_90"], color=_PRED, alpha=0.12, lw=0)
    ax.fill_between(scales, fc["lower_90"], fc["upper_90"], color=_BAND, alpha=0.35, lw=0)
    ax.plot(scales, fc["median"], color=_BAND, lw=1.2)
    ax.axvspan(max_fitted, scales[-1], color=_EXTRA, alpha=0.15, lw=0)
    ax.text(0.98, 0.97, "extrapolation", transform=ax.transAxes, ha="right", va="top", fontsize=6, color="0.35")
    ax.plot(runs[fit.runs.scale], runs[fit.runs.response], "o", ms=3, color=run_color)
    if heldout is not None and len(heldout):
        ax.plot(heldout[fit.runs.scale], heldout[fit.runs.response], "x", ms=5, mew=1.5, color="red")
    ax.set_xscale("log")
    ax.set_title(title, fontsize=7)
    ax.tick_params(labelsize=6)


def plot_fit_bands(fit, heldout: pd.DataFrame | None = None, extrapolate_to: float | None = None,
                   max_panels: int = 24) -> Figure:
    """One panel per cell: runs, law median, 90% credible and 90% predictive bands, on a log axis.

    The grey region is extrapolation (beyond the cell's largest fitted run). ``heldout`` (group
    columns, scale, response) is drawn as red crosses; held-out rows of levels the fit has not
    seen go to the last panel, the population-level forecast for a new group (when there are
    grouping factors). ``extrapolate_to`` defaults to 100x the largest run.
    Usage: ``plot_fit_bands(fit, heldout=test_runs, extrapolate_to=1e23)``
    """
    data, groups = fit.runs.data, fit.spec.groups
    scale_col = fit.runs.scale
    lo, hi = float(data[scale_col].min()), float(data[scale_col].max())
    top = float(extrapolate_to) if extrapolate_to is not None else 100 * hi
    if heldout is not None:
        missing = [c for c in (*groups, scale_col, fit.runs.response) if c not in heldout.columns]
        if missing:
            raise ValueError(f"heldout is missing column(s) {missing}")
        top = max(top, float(heldout[scale_col].max()))
    scales = np.geomspace(lo, max(top, hi * 1.0001), 80)
    cells = _cell_groups(fit)
    shown = cells[:max_panels]
    n = len(shown) + (1 if groups else 0)
    ncols = min(5, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(2.9 * ncols, 2.4 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    for ax, cell, label in zip(axes, shown, fit.spec.cell_labels):
        held = heldout[_cell_mask(heldout, groups, cell)] if heldout is not None else None
        _draw_band(ax, fit, cell, scales, data[_cell_mask(data, groups, cell)], held, label)
    if groups:
        held = None
        if heldout is not None:
            known = np.zeros(len(heldout), bool)
            for cell in cells:
                known |= _cell_mask(heldout, groups, cell)
            held = heldout[~known]
        _draw_band(axes[n - 1], fit, None, scales, data, held, "population: a new group (grey: all runs)", "0.75")
    for ax in axes[:n]:
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(fit.runs.response, fontsize=7)
        if ax.get_subplotspec().is_last_row() or ax is axes[n - 1]:
            ax.set_xlabel(scale_col, fontsize=7)
    handles = [Line2D([], [], ls="", marker="o", ms=3, color="k", label="fitted runs"),
               Line2D([], [], color=_BAND, lw=1.2, label="law median"),
               Patch(color=_BAND, alpha=0.35, label="90% credible band (law)"),
               Patch(color=_PRED, alpha=0.12, label="90% predictive band (new run)"),
               Patch(color=_EXTRA, alpha=0.15, label="extrapolation")]
    if heldout is not None:
        handles.append(Line2D([], [], ls="", marker="x", mew=1.5, color="red", label="held-out runs"))
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize=7, frameon=False)
    if len(cells) > len(shown):
        fig.suptitle(f"showing {len(shown)} of {len(cells)} cells (max_panels={max_panels})", fontsize=8)
    return fig


def _flat_cells(fit, name: str) -> np.ndarray:
    """Posterior draws of a per-cell variable, shape (chain*draw, cell)."""
    values = np.asarray(fit.tree.posterior[name].values)
    return values.reshape(-1, values.shape[-1])


def plot_param_posteriors(fit) -> Figure:
    """Forest plot of L_inf, a (log axis) and alpha per cell: median, 50% and 90% intervals.

    Drawn with matplotlib because ``az.plot_forest`` puts all variables on one shared x axis,
    which is unreadable when ``a`` is orders of magnitude larger than ``alpha``.
    Usage: ``plot_param_posteriors(fit).savefig("params.png")``
    """
    labels = fit.spec.cell_labels
    y = np.arange(len(labels))[::-1]
    fig = Figure(figsize=(10, 1.2 + 0.22 * len(labels)), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    for ax, (name, title) in zip(axes, [("loss_floor", "L_inf (loss floor)"), ("a", "a"), ("alpha", "alpha")]):
        q = np.quantile(_flat_cells(fit, name), [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
        ax.hlines(y, q[0], q[4], color="C0", lw=1)
        ax.hlines(y, q[1], q[3], color="C0", lw=3.5)
        ax.plot(q[2], y, "o", ms=3.5, color="white", mec="C0")
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=7)
        if name == "a":
            ax.set_xscale("log")
    axes[0].set_yticks(y, labels)
    fig.suptitle("posterior median, 50% (thick) and 90% (thin) intervals per cell", fontsize=9)
    return fig


def _detach(pc) -> Figure:
    """The matplotlib Figure of an arviz-plots PlotCollection, closed in pyplot's registry."""
    import matplotlib.pyplot as plt

    fig = pc.get_viz("figure")
    plt.close(fig)
    return fig


def plot_trace_rank(fit, var_names=("mu", "sd_cell", "sigma")) -> Figure:
    """ArviZ rank plots (chains' rank ECDF differences) of the hyper-parameters.

    Names absent from the posterior (e.g. ``nu`` for a normal likelihood) are skipped.
    Usage: ``plot_trace_rank(fit, var_names=("mu", "sd_cell", "sd_eval_set", "sigma"))``
    """
    names = [v for v in var_names if v in fit.tree.posterior.data_vars]
    if not names:
        raise ValueError(f"none of {list(var_names)} is in the posterior")
    n_panels = sum(int(np.prod([s for d, s in fit.tree.posterior[v].sizes.items() if d not in ("chain", "draw")]))
                   for v in names)
    ncols = min(4, n_panels)
    figsize = (3.3 * ncols, 2.3 * math.ceil(n_panels / ncols))
    pc = az.plot_rank(fit.tree, var_names=names, backend="matplotlib", col_wrap=ncols,
                      figure_kwargs={"figsize": figsize, "layout": "constrained"})
    return _detach(pc)


def plot_ppc(fit, interval: float = 0.9) -> Figure:
    """Observed loss of each run against its posterior predictive interval, by cell and scale.

    Everything is centred on each run's predictive median (so the narrow intervals are visible
    next to a wide loss range). Thin bars: ``interval`` (90%) predictive interval; thick bars:
    50%; dots: observed runs, red where outside the interval. The title gives the coverage.
    Usage: ``plot_ppc(fit).savefig("ppc.png")``
    """
    pred = np.asarray(fit.tree.posterior_predictive["obs"].values)
    pred = pred.reshape(-1, pred.shape[-1])
    obs = np.asarray(fit.tree.observed_data["obs"].values)
    data = fit.runs.data
    codes = fit.runs.cell_codes()
    order = np.lexsort((data[fit.runs.scale].to_numpy(), codes))
    qs = np.quantile(pred[:, order], [(1 - interval) / 2, 0.25, 0.5, 0.75, (1 + interval) / 2], axis=0)
    lo, q25, q75, hi = qs[[0, 1, 3, 4]] - qs[2]  # centred on the predictive median: bands stay visible
    y = obs[order] - qs[2]
    inside = (y >= lo) & (y <= hi)
    inside50 = (y >= q25) & (y <= q75)
    x = np.arange(len(y))
    fig = Figure(figsize=(max(6.0, 0.09 * len(y) + 2), 4.2), layout="constrained")
    ax = fig.subplots()
    ax.vlines(x, lo, hi, color="C0", lw=1, alpha=0.6)
    ax.vlines(x, q25, q75, color="C0", lw=3, alpha=0.6)
    ax.plot(x[inside], y[inside], "o", ms=3, color="k")
    ax.plot(x[~inside], y[~inside], "o", ms=4, color="red")
    sorted_codes = codes[order]
    bounds = np.flatnonzero(np.diff(sorted_codes)) + 0.5
    for b in bounds:
        ax.axvline(b, color="0.8", lw=0.6)
    starts = np.concatenate([[-0.5], bounds, [len(y) - 0.5]])
    ax.set_xticks((starts[:-1] + starts[1:]) / 2, [fit.spec.cell_labels[c] for c in np.unique(sorted_codes)],
                  rotation=60, ha="right", fontsize=6)
    ax.set_xlim(-1, len(y))
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_ylabel(f"observed {fit.runs.response} - predictive median")
    tag = round(100 * interval)
    ax.set_title(f"posterior predictive check: {tag}% interval covers {inside.sum()}/{len(y)} runs "
                 f"({inside.mean():.0%}); 50% covers {inside50.mean():.0%}", fontsize=9)
    return fig
