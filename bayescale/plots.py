"""Figures of a fit: forecast bands per cell, parameter posteriors, rank plots, PPC, and for
two-variable laws IsoFLOP curves and the compute-optimal frontier.

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

from . import allocation

__all__ = ["plot_fit_bands", "plot_param_posteriors", "plot_trace_rank", "plot_ppc", "plot_isoflop",
           "plot_optimal_frontier"]

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
    if len(fit.spec.covariate_columns) > 1:
        raise ValueError(f"plot_fit_bands needs a one-variable law; for the {fit.spec.law!r} law use "
                         "plot_isoflop(fit) and plot_optimal_frontier(fit)")
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


_TITLES = {"loss_floor": "L_inf (loss floor)", "E": "E (loss floor)"}


def plot_param_posteriors(fit) -> Figure:
    """Forest plot of the natural parameters per cell (L_inf, a (log axis), alpha; or E, A, B, alpha,
    beta): median, 50% and 90% intervals.

    Drawn with matplotlib because ``az.plot_forest`` puts all variables on one shared x axis,
    which is unreadable when ``a`` is orders of magnitude larger than ``alpha``.
    Usage: ``plot_param_posteriors(fit).savefig("params.png")``
    """
    law = fit.spec.law_def
    labels = fit.spec.cell_labels
    y = np.arange(len(labels))[::-1]
    names = law.natural_names
    fig = Figure(figsize=(10 * len(names) / 3, 1.2 + 0.22 * len(labels)), layout="constrained")
    axes = fig.subplots(1, len(names), sharey=True)
    for ax, name in zip(axes, names):
        title = _TITLES.get(name, name)
        q = np.quantile(_flat_cells(fit, name), [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
        ax.hlines(y, q[0], q[4], color="C0", lw=1)
        ax.hlines(y, q[1], q[3], color="C0", lw=3.5)
        ax.plot(q[2], y, "o", ms=3.5, color="white", mec="C0")
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=7)
        if name in law.coefficient_names:
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


# ---- compute-optimal allocation (two-variable laws) -------------------------------------------
def _run_compute(fit, flops_per_param_token: float) -> np.ndarray:
    """Compute of each fitted run, k * N * D, from the law's covariate columns."""
    data = fit.runs.data
    n, d = (data[c].to_numpy(np.float64) for c in fit.spec.covariate_columns)
    return flops_per_param_token * n * d


def _check_two_variable(fit) -> None:
    if fit.spec.law != "chinchilla":
        raise ValueError(f"needs a two-variable law (fit_law(runs, law='chinchilla')); this fit uses {fit.spec.law!r}")


def _group_mask(fit, group) -> np.ndarray:
    data = fit.runs.data
    mask = np.ones(len(data), bool)
    for factor, level in fit._resolve(group).items():
        if level is not None:
            mask &= (data[factor] == level).to_numpy()
    return mask


def _format_flops(c: float) -> str:
    exp = math.floor(math.log10(c))
    mant = c / 10 ** exp
    return f"{mant:.3g}e{exp}" if abs(mant - 1) > 1e-9 else f"1e{exp}"


def plot_isoflop(fit, budgets=None, group=None, interval: float = 0.9, flops_per_param_token: float = 6.0,
                 n_range: tuple[float, float] | None = None, run_tolerance: float = 0.1) -> Figure:
    """IsoFLOP curves: loss against model size N at fixed budgets C (D = C / (k N)), with bands.

    Per budget: posterior median of the law (line), ``interval`` credible band (shaded), and the
    compute-optimal N_opt (dot at the median, horizontal bar: its ``interval``). Fitted runs whose
    compute k*N*D lies within ``run_tolerance`` decades of a budget are drawn in its colour.
    ``budgets`` defaults to 5 budgets spread over the fitted runs' compute.
    Usage: ``plot_isoflop(fit, budgets=[6e18, 1e20, 3e21]).savefig("isoflop.png")``
    """
    _check_two_variable(fit)
    draws = fit.natural_draws(group)
    compute = _run_compute(fit, flops_per_param_token)
    mask = _group_mask(fit, group)
    n_col, _ = fit.spec.covariate_columns
    n_runs = fit.runs.data[n_col].to_numpy(np.float64)
    if budgets is None:
        lo, hi = np.quantile(np.log10(compute[mask]), [0.05, 0.95])
        budgets = 10 ** np.linspace(lo, hi, 5)
    budgets = np.sort(np.atleast_1d(np.asarray(budgets, np.float64)))
    alloc = allocation.optimal_allocation(draws, budgets, flops_per_param_token)
    if n_range is None:
        n_lo, n_hi = n_runs[mask].min() / 3, n_runs[mask].max() * 3
        n_lo = min(n_lo, float(np.quantile(alloc["n_opt"], 0.05)) / 3)
        n_hi = max(n_hi, float(np.quantile(alloc["n_opt"], 0.95)) * 3)
        n_range = (n_lo, n_hi)
    n_grid = np.geomspace(*n_range, 120)
    q_lo, q_hi = (1 - interval) / 2, (1 + interval) / 2
    fig = Figure(figsize=(7.5, 5.0), layout="constrained")
    ax = fig.subplots()
    colors = [_color(i, len(budgets)) for i in range(len(budgets))]
    for j, (c, color) in enumerate(zip(budgets, colors)):
        loss = allocation.isoflop_loss(draws, c, n_grid, flops_per_param_token)
        lo, med, hi = np.quantile(loss, [q_lo, 0.5, q_hi], axis=0)
        ax.fill_between(n_grid, lo, hi, color=color, alpha=0.25, lw=0)
        ax.plot(n_grid, med, color=color, lw=1.2, label=f"C = {_format_flops(c)}")
        near = mask & (np.abs(np.log10(compute / c)) <= run_tolerance)
        ax.plot(n_runs[near], fit.runs.data[fit.runs.response].to_numpy()[near], "o", ms=3.5, color=color,
                mec="k", mew=0.4)
        n_lo_opt, n_med, n_hi_opt = np.quantile(alloc["n_opt"][:, j], [q_lo, 0.5, q_hi])
        l_med = np.median(alloc["loss_opt"][:, j])
        ax.errorbar([n_med], [l_med], xerr=[[n_med - n_lo_opt], [n_hi_opt - n_med]], fmt="o", ms=5,
                    color=color, mec="k", capsize=2, lw=1.2)
    ax.set_xscale("log")
    shown = fit.runs.data[fit.runs.response].to_numpy()[mask]
    ax.set_ylim(min(np.quantile(alloc["loss_opt"], 0.01), shown.min()) - 0.05,
                max(np.quantile(shown, 0.95), np.median(alloc["loss_opt"], axis=0).max()) + 0.25)
    ax.set_xlabel(f"model size N ({n_col})")
    ax.set_ylabel(fit.runs.response)
    ax.set_title(f"IsoFLOP curves (C = {flops_per_param_token:g} N D): median, {round(100 * interval)}% band; "
                 f"dots with bars: N_opt and its {round(100 * interval)}% interval", fontsize=8)
    ax.legend(fontsize=7, ncols=2, frameon=False)
    ax.grid(alpha=0.3, which="both", lw=0.4)
    return fig


def _color(i: int, n: int):
    """Colour ``i`` of ``n`` along viridis (without touching pyplot's state)."""
    from matplotlib import colormaps

    return colormaps["viridis"](0.9 * i / max(n - 1, 1))


def plot_optimal_frontier(fit, compute_range: tuple[float, float] | None = None, group=None, interval: float = 0.9,
                          flops_per_param_token: float = 6.0, references: dict | None = None) -> Figure:
    """The compute-optimal frontier: N_opt(C), D_opt(C) and the loss at the optimum, with bands.

    Three log-log panels against compute C: posterior median and ``interval`` band of N_opt, D_opt
    and the optimal loss; the fitted runs (grey dots: their N, D and loss at their own compute);
    grey region: budgets beyond the largest fitted run. ``references``: {label: {"E", "A", "B",
    "alpha", "beta"}} (e.g. published fits), drawn as dashed lines. ``compute_range`` defaults
    to the smallest fitted run's compute up to 1000x the largest.
    Usage: ``plot_optimal_frontier(fit, (1e18, 1e25), references={"Hoffmann": {...}})``
    """
    _check_two_variable(fit)
    draws = fit.natural_draws(group)
    compute = _run_compute(fit, flops_per_param_token)
    mask = _group_mask(fit, group)
    if compute_range is None:
        compute_range = (compute[mask].min(), 1000 * compute[mask].max())
    grid = np.geomspace(*compute_range, 60)
    alloc = allocation.optimal_allocation(draws, grid, flops_per_param_token)
    q_lo, q_hi = (1 - interval) / 2, (1 + interval) / 2
    data = fit.runs.data
    n_col, d_col = fit.spec.covariate_columns
    observed = {"n_opt": data[n_col].to_numpy(np.float64), "d_opt": data[d_col].to_numpy(np.float64),
                "loss_opt": data[fit.runs.response].to_numpy(np.float64)}
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    titles = {"n_opt": f"N_opt ({n_col})", "d_opt": f"D_opt ({d_col})",
              "loss_opt": f"{fit.runs.response} at the optimum"}
    for ax, key in zip(axes, ("n_opt", "d_opt", "loss_opt")):
        lo, med, hi = np.quantile(alloc[key], [q_lo, 0.5, q_hi], axis=0)
        ax.plot(compute[mask], observed[key][mask], "o", ms=2.5, color="0.6", zorder=1)
        ax.fill_between(grid, lo, hi, color=_BAND, alpha=0.3, lw=0)
        ax.plot(grid, med, color=_BAND, lw=1.4)
        for i, (label, params) in enumerate((references or {}).items()):
            ref = allocation.optimal_allocation({k: np.atleast_1d(v) for k, v in params.items()}, grid,
                                                flops_per_param_token)
            ax.plot(grid, ref[key][0], ls="--", lw=1.1, color=f"C{i + 1}", label=label)
        ax.axvspan(compute[mask].max(), grid[-1], color=_EXTRA, alpha=0.15, lw=0)
        ax.set_xscale("log")
        if key != "loss_opt":
            ax.set_yscale("log")
        else:  # a few very high losses (e.g. outliers) would flatten the frontier
            top = max(float(np.quantile(observed[key][mask], 0.98)), float(hi.max()))
            ax.set_ylim(min(float(lo.min()), float(observed[key][mask].min())) - 0.05, top + 0.1)
        ax.set_xlabel(f"compute C = {flops_per_param_token:g} N D (FLOPs)", fontsize=8)
        ax.set_title(titles[key], fontsize=9)
        ax.grid(alpha=0.3, which="both", lw=0.4)
        ax.tick_params(labelsize=7)
    handles = [Line2D([], [], color=_BAND, lw=1.4, label="posterior median"),
               Patch(color=_BAND, alpha=0.3, label=f"{round(100 * interval)}% credible band"),
               Line2D([], [], ls="", marker="o", ms=3, color="0.6", label="fitted runs"),
               Patch(color=_EXTRA, alpha=0.15, label="beyond the largest fitted run")]
    handles += [Line2D([], [], ls="--", color=f"C{i + 1}", label=label) for i, label in enumerate(references or {})]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize=7, frameon=False)
    return fig
