"""Backtests: fit on the smaller scales, forecast the held-out largest ones, score against point-fit baselines.

Methods in one table (``Backtest.table``), all fitted on the same training runs:

- ``bayescale``: the hierarchical fit (``fit_law``); median of the law, predictive bands of a new
  run, log predictive density averaged over posterior draws;
- ``bayescale_calibrated``: the same fit, its bands widened by the extrapolation error learned from
  the training runs alone (``calibrate_extrapolation``: a second backtest inside the training runs,
  holding out each group's largest training scale; ``bayescale.extrapolation``);
- added afterwards by ``with_calibration`` (not a ``METHODS`` entry): the same fit with any other
  extrapolation error, e.g. ``transfer_calibration`` of other datasets' backtests (how far laws
  drifted beyond the data in other studies; ``studies/backtest.py`` scores it leave-one-dataset-out);
- ``curve_fit``: ``scipy.optimize.curve_fit`` per group with delta-method bands (Student-t with the
  residual degrees of freedom; ``bayescale.baselines``); one-variable law only;
- ``huber``: the Huber-loss (delta 1e-3 on log loss) L-BFGS-B grid fit of Hoffmann et al. (2022) /
  Besiroglu et al. (2024), per group; a point forecast, so no bands and no density;
- ``huber_bootstrap``: bootstrap bands around that point fit (runs resampled within a group, refit,
  plus a resampled log residual for a new run); its density is a Normal with the bootstrap's
  mean and sd.

Scores per method (held-out runs): ``median_abs_rel_err_%`` and ``mean_abs_rel_err_%`` of the median
(point) forecast, ``coverage_50/80/90`` of the central predictive bands (nominal 0.5/0.8/0.9),
``mean_lpd`` (held-out log predictive density per run, nats; higher is better), ``n_scored``,
``n_failed`` (held-out runs a method could not forecast, e.g. a group with too few training runs).

Usage:
    runs = load_runs("data/gadre_loss.csv.gz", scale="compute_flops", groups=["train_dataset", "eval_set"],
                     query="tokens_per_param == 20")
    bt = backtest(runs, holdout=2)                 # hold out each curve's 2 largest scales
    print(bt.to_markdown())
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import special, stats

from .baselines import _predict, curve_fit_group, huber_bootstrap
from .extrapolation import (ExtrapolationCalibration, extrapolation_distance, predictive_logpdf, tau_loglik,
                            tau_posterior, tau_weights)
from .fit import Fit, fit_law
from .inference import ConvergenceWarning
from .runs import RunTable
from .spec import ModelSpec, Priors, SamplerSettings

__all__ = ["backtest", "Backtest", "calibrate_extrapolation", "transfer_calibration", "leave_one_out_calibrations",
           "with_calibration", "extrapolation_loglik", "holdout_mask", "score_predictions", "METHODS"]

#: Methods of a backtest, in table order.
METHODS = ("bayescale", "bayescale_calibrated", "curve_fit", "huber", "huber_bootstrap")

_INTERVALS = (0.5, 0.8, 0.9)


def holdout_mask(runs: RunTable, holdout: int | float | np.ndarray) -> np.ndarray:
    """Boolean mask of the held-out runs. Usage: ``holdout_mask(runs, 2)``.

    ``holdout``: an ``int`` k holds out each group's k largest distinct scales (top-k models per
    curve); a ``float`` holds out every run with scale > ``holdout`` (a scale cut); a boolean array
    is used as is.
    """
    scale = runs.data[runs.scale].to_numpy(np.float64)
    if isinstance(holdout, (bool, np.bool_)):
        raise TypeError("holdout must be an int (top-k scales per group), a float (scale cut) or a boolean mask")
    if isinstance(holdout, (int, np.integer)):
        if holdout < 1:
            raise ValueError(f"holdout as top-k needs k >= 1, got {holdout}")
        keys = runs.data[list(runs.groups)].astype(str).agg("|".join, axis=1) if runs.groups else \
            pd.Series("all", index=runs.data.index)
        mask = np.zeros(len(scale), dtype=bool)
        for _, idx in keys.groupby(keys).groups.items():
            pos = runs.data.index.get_indexer(idx)
            top = np.unique(scale[pos])[-int(holdout):]
            mask[pos] = np.isin(scale[pos], top)
        return mask
    if isinstance(holdout, (float, np.floating)):
        return scale > float(holdout)
    mask = np.asarray(holdout)
    if mask.dtype != bool or mask.shape != scale.shape:
        raise ValueError(f"holdout mask must be boolean of length {len(scale)}")
    return mask


@dataclass
class Backtest:
    """Result of ``backtest``: the score table, per-run predictions and the Bayesian fit.

    ``predictions``: one row per held-out run and method with ``y``, ``median``,
    ``lower_XX``/``upper_XX`` (predictive bands) and ``lpd``. Usage: ``print(bt.to_markdown())``
    """

    table: pd.DataFrame
    predictions: pd.DataFrame
    fit: Fit
    n_train: int
    n_heldout: int
    notes: list = field(default_factory=list)
    calibration: ExtrapolationCalibration | None = None
    runs: RunTable | None = None            # the whole run table
    heldout: pd.DataFrame | None = None     # its held-out rows

    def to_markdown(self, label: str | None = None) -> str:
        """The score table as a markdown table (optionally with a leading ``dataset`` column)."""
        table = self.table if label is None else self.table.assign(dataset=label)[["dataset", *self.table.columns]]
        return markdown_table(table)


def markdown_table(table: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (no extra dependency). Usage: ``markdown_table(df)``."""
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "n/a" if not np.isfinite(v) else f"{v:.3f}"
        return str(v)
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def score_predictions(pred: pd.DataFrame, intervals: Sequence[float] = _INTERVALS) -> dict:
    """Scores of one method's predictions (columns ``y``, ``median``, bands, ``lpd``). Usage: internal."""
    y, med = pred["y"].to_numpy(float), pred["median"].to_numpy(float)
    ok = np.isfinite(med)
    rel = np.abs(med[ok] - y[ok]) / np.abs(y[ok])
    out = {"n_scored": int(ok.sum()), "n_failed": int((~ok).sum()),
           "median_abs_rel_err_%": 100 * float(np.median(rel)) if ok.any() else np.nan,
           "mean_abs_rel_err_%": 100 * float(np.mean(rel)) if ok.any() else np.nan}
    for mass in intervals:
        tag = f"{round(100 * mass):d}"
        lo, hi = pred[f"lower_{tag}"].to_numpy(float)[ok], pred[f"upper_{tag}"].to_numpy(float)[ok]
        out[f"coverage_{tag}"] = float(np.mean((lo <= y[ok]) & (y[ok] <= hi))) if np.isfinite(lo).any() else np.nan
    lpd = pred["lpd"].to_numpy(float)[ok]
    out["mean_lpd"] = float(np.mean(lpd)) if np.isfinite(lpd).all() and ok.any() else np.nan
    return out


def _group_keys(runs: RunTable, data: pd.DataFrame):
    return list(data.groupby(list(runs.groups)).groups.items()) if runs.groups else [((), data.index)]


def _heldout_groups(fit: Fit, runs: RunTable, heldout: pd.DataFrame):
    """Per held-out group: (index, group, scales, observed losses), as ``Fit.forecast`` takes them."""
    cols = fit.spec.covariate_columns
    for key, idx in _group_keys(runs, heldout):
        part = heldout.loc[idx]
        scales = part[cols[0]].to_numpy(float) if len(cols) == 1 else {c: part[c].to_numpy(float) for c in cols}
        group = None if not fit.spec.groups else (key if isinstance(key, tuple) else (key,))
        yield idx, group, scales, part[runs.response].to_numpy(float)


def _noise_draws(fit: Fit):
    """``fit.noise_draws()`` as columns (draws, 1), to broadcast against law draws (draws, runs)."""
    sigma, nu = fit.noise_draws()
    return sigma[:, None], (None if nu is None else nu[:, None])


def _bayes_predictions(fit: Fit, runs: RunTable, heldout: pd.DataFrame, intervals, seed: int,
                       calibration: ExtrapolationCalibration | None = None) -> pd.DataFrame:
    rows, (sigma, nu) = [], _noise_draws(fit)
    rng = np.random.default_rng(seed)
    for idx, group, scales, y in _heldout_groups(fit, runs, heldout):
        fc = fit.forecast(scales, group=group, intervals=intervals, seed=seed, calibration=calibration)
        mu = fit.law_draws(scales, group=group, seed=seed)  # (S, n)
        tau = 0.0 if calibration is None else calibration.draws(mu.shape[0], rng)[:, None]
        logp = predictive_logpdf(y, mu, sigma, nu, extrapolation_distance(fc["scale_over_max_fitted"]), tau)
        frame = {"y": y, "median": fc["median"].to_numpy()}
        for mass in intervals:
            tag = f"{round(100 * mass):d}"
            frame[f"lower_{tag}"] = fc[f"pred_lower_{tag}"].to_numpy()
            frame[f"upper_{tag}"] = fc[f"pred_upper_{tag}"].to_numpy()
        frame["lpd"] = special.logsumexp(logp, axis=0) - np.log(logp.shape[0])
        rows.append(pd.DataFrame(frame, index=idx))
    return pd.concat(rows).loc[heldout.index]


def calibrate_extrapolation(fit: Fit | RunTable, *, law: str = "saturating", likelihood: str = "normal",
                            priors: Priors | None = None, settings: SamplerSettings | None = None,
                            holdout: int | float | np.ndarray = 1, prior_scale: float = 0.05,
                            grid_size: int = 801) -> ExtrapolationCalibration:
    """Learn the law's extrapolation error from the runs themselves (a backtest inside the data).

    Refits without ``holdout`` (default: each group's largest scale), forecasts those runs at their
    distance beyond the refit's data, and returns the posterior of ``tau`` (relative sd per e-fold,
    see ``bayescale.extrapolation``). ``prior_scale``: sd of tau's half-normal prior (0.05, i.e. a
    law off by about 11% per decade of extrapolation is one prior sd). Pass the result to
    ``fit.forecast(..., calibration=cal)``.

    Given the ``Fit`` to calibrate (recommended), the refit takes its runs, law, likelihood and settings
    (``law`` and ``likelihood`` are then ignored), and its noise prior is that fit's noise posterior
    (``Priors.noise``: a LogNormal matched to the draws of log sigma): the run-to-run noise is measured
    on all runs, and curves left with as few runs as the law has parameters (Gadre's: 3) then cannot fit
    their runs exactly at a noise near zero, a funnel in which NUTS does not mix. Given a ``RunTable``,
    the refit uses the keyword arguments and the default noise prior.
    Usage: ``cal = calibrate_extrapolation(fit); fit.forecast([1e23], calibration=cal)``
    """
    noise = None
    if isinstance(fit, Fit):
        runs, law, likelihood, settings = fit.runs, fit.spec.law, fit.spec.likelihood, settings or fit.settings
        log_sigma = np.log(fit.noise_draws()[0])
        noise = (float(np.exp(log_sigma.mean())), max(float(log_sigma.std()), 1e-3))
    else:
        runs = fit
    mask = holdout_mask(runs, holdout)
    if mask.all() or not mask.any():
        raise ValueError(f"holdout={holdout!r} holds out {int(mask.sum())} of {len(mask)} runs; need some of each")
    kept = runs.subset(~mask)
    spec = ModelSpec.from_runs(kept, likelihood=likelihood, priors=priors, law=law)
    fit = fit_law(kept, settings=settings, spec=spec if noise is None else spec.with_priors(noise=noise))
    sigma, nu = _noise_draws(fit)
    y, mu, dist = _heldout_law_draws(fit, runs, runs.data[mask])
    if not fit.diagnostics.ok:
        warnings.warn(f"the refit without the held-out scales (which the extrapolation error is learned from) did not pass "
                      f"the convergence checks ({fit.diagnostics.max_rhat:.3f} max R-hat, "
                      f"{fit.diagnostics.n_divergent} divergences): treat the calibrated bands with caution",
                      ConvergenceWarning, stacklevel=2)
    if not np.any(dist > 0):
        warnings.warn("no held-out run lies beyond its refit's largest scale, so the data say nothing about the "
                      "extrapolation error: its posterior is the prior", UserWarning, stacklevel=2)
    grid = np.linspace(0.0, 20 * prior_scale, grid_size)
    weights = tau_posterior(y, mu, sigma, nu, dist, prior_scale, grid)
    return ExtrapolationCalibration(grid=grid, weights=weights, prior_scale=prior_scale, n_runs=len(y),
                                    distance_range=(float(dist.min()), float(dist.max())),
                                    diagnostics=fit.diagnostics)


def _heldout_law_draws(fit: Fit, runs: RunTable, heldout: pd.DataFrame):
    """Held-out runs' values (n,), the fit's law draws at them (S, n) and their e-folds beyond the data (n,)."""
    ys, mus, dists = [], [], []
    for _, group, scales, y in _heldout_groups(fit, runs, heldout):
        ys.append(y)
        mus.append(fit.law_draws(scales, group=group))
        dists.append(extrapolation_distance(fit.scale_over_max_fitted(scales, group)))
    return np.concatenate(ys), np.concatenate(mus, axis=1), np.concatenate(dists)


def extrapolation_loglik(bt: Backtest, grid: np.ndarray) -> np.ndarray:
    """Log likelihood of each extrapolation error ``tau`` in ``grid`` given a backtest's held-out runs
    (``bayescale.extrapolation.tau_loglik``). Usage: ``extrapolation_loglik(bt, np.linspace(0, 1, 801))``"""
    return _evidence(bt, grid)[0]


def _evidence(bt: Backtest, grid: np.ndarray):
    """(log likelihood over ``grid``, distances, runs) of a backtest's held-out runs."""
    y, mu, dist = _heldout_law_draws(bt.fit, bt.runs, bt.heldout)
    sigma, nu = _noise_draws(bt.fit)
    return tau_loglik(y, mu, sigma, nu, dist, grid), dist, bt.n_heldout


def _pooled(evidence: list, grid: np.ndarray, prior_scale: float) -> ExtrapolationCalibration:
    dists = np.concatenate([e[1] for e in evidence])
    return ExtrapolationCalibration(grid=grid, weights=tau_weights(sum(e[0] for e in evidence), prior_scale, grid),
                                    prior_scale=prior_scale, n_runs=int(sum(e[2] for e in evidence)),
                                    distance_range=(float(dists.min()), float(dists.max())))


def transfer_calibration(backtests: Sequence[Backtest], prior_scale: float = 0.05,
                         grid_size: int = 801) -> ExtrapolationCalibration:
    """The extrapolation error learned from other campaigns' backtests: how far laws fitted to the
    smaller runs of past studies drifted at their held-out largest runs.

    Same ``tau`` (relative sd per e-fold beyond the data) and prior as ``calibrate_extrapolation``, but
    its likelihood is the held-out runs of ``backtests`` (their fits' forecasts, any law), not a refit
    inside the data to be forecast. It assumes the drift per e-fold of the scale column carries over
    between studies (the shipped datasets' scales all move with compute: compute itself, or parameters
    at a fixed token count). Usage: ``cal = transfer_calibration([bt_a, bt_b]); fit.forecast(x, calibration=cal)``
    """
    if not backtests:
        raise ValueError("transfer_calibration needs at least one backtest")
    grid = np.linspace(0.0, 20 * prior_scale, grid_size)
    return _pooled([_evidence(bt, grid) for bt in backtests], grid, prior_scale)


def leave_one_out_calibrations(backtests: Sequence[Backtest], prior_scale: float = 0.05, grid_size: int = 801
                               ) -> tuple[list[ExtrapolationCalibration], ExtrapolationCalibration]:
    """For each backtest, ``transfer_calibration`` of the others; and that of all of them. Each backtest's
    likelihood is computed once. Usage: ``each, everything = leave_one_out_calibrations([bt_a, bt_b, bt_c])``"""
    if len(backtests) < 2:
        raise ValueError("leave_one_out_calibrations needs at least two backtests")
    grid = np.linspace(0.0, 20 * prior_scale, grid_size)
    evidence = [_evidence(bt, grid) for bt in backtests]
    each = [_pooled(evidence[:i] + evidence[i + 1:], grid, prior_scale) for i in range(len(evidence))]
    return each, _pooled(evidence, grid, prior_scale)


def with_calibration(bt: Backtest, method: str, calibration: ExtrapolationCalibration,
                     intervals: Sequence[float] = _INTERVALS, seed: int = 0) -> Backtest:
    """``bt`` with one more method scored: bayescale's fit with ``calibration``'s extrapolation error
    (e.g. ``transfer_calibration`` of other datasets' backtests). Usage: ``bt = with_calibration(bt, "bayescale_transfer", cal)``
    """
    pred = _bayes_predictions(bt.fit, bt.runs, bt.heldout, intervals, seed, calibration)
    row, frame = _scored(method, pred, bt.runs, bt.heldout, bt.fit.spec.covariate_columns, intervals)
    row = pd.DataFrame([row])[list(bt.table.columns)]
    return replace(bt, table=pd.concat([bt.table, row], ignore_index=True),
                   predictions=pd.concat([bt.predictions, frame], ignore_index=True),
                   notes=[*bt.notes, f"{method}: {calibration}"])


def _scored(method: str, pred: pd.DataFrame, runs: RunTable, heldout: pd.DataFrame, columns, intervals):
    """A method's score row and its predictions labelled with the method, groups and covariates."""
    pred = pred.assign(y=heldout[runs.response].to_numpy(float))
    frame = pred.assign(method=method).join(heldout[[*runs.groups, *dict.fromkeys([runs.scale, *columns])]])
    return {"method": method, **score_predictions(pred, intervals)}, frame


def _empty(index, intervals) -> pd.DataFrame:
    cols = ["median", *[f"{s}_{round(100 * m):d}" for m in intervals for s in ("lower", "upper")], "lpd"]
    return pd.DataFrame(np.nan, index=index, columns=cols)


def _curve_fit_predictions(runs, train, heldout, intervals) -> pd.DataFrame:
    out = _empty(heldout.index, intervals)
    train_groups = dict(_group_keys(runs, train))
    for key, idx in _group_keys(runs, heldout):
        tidx = train_groups.get(key)
        if tidx is None or len(tidx) < 3:
            continue
        res = curve_fit_group(np.log(train.loc[tidx, runs.scale].to_numpy(float)),
                              train.loc[tidx, runs.response].to_numpy(float))
        if res is None:
            continue
        log_x = np.log(heldout.loc[idx, runs.scale].to_numpy(float))
        y = heldout.loc[idx, runs.response].to_numpy(float)
        for mass in intervals:
            p = _predict(res, log_x, mass)
            tag = f"{round(100 * mass):d}"
            out.loc[idx, f"lower_{tag}"], out.loc[idx, f"upper_{tag}"] = p["lower"], p["upper"]
        p = _predict(res, log_x, 0.9)
        sd = (p["upper"] - p["median"]) / stats.t.ppf(0.95, res["dof"])
        out.loc[idx, "median"] = p["median"]
        out.loc[idx, "lpd"] = stats.t.logpdf(y, res["dof"], p["median"], sd)
    return out


def _huber_predictions(runs, train, heldout, columns, intervals, n_boot, seed) -> tuple[pd.DataFrame, pd.DataFrame]:
    point, boot = _empty(heldout.index, intervals), _empty(heldout.index, intervals)
    train_groups = dict(_group_keys(runs, train))
    for i, (key, idx) in enumerate(_group_keys(runs, heldout)):
        tidx = train_groups.get(key)
        if tidx is None or len(tidx) < 3:
            continue
        log_x = np.log(train.loc[tidx, columns].to_numpy(float))
        new = np.log(heldout.loc[idx, columns].to_numpy(float))
        res = huber_bootstrap(log_x, train.loc[tidx, runs.response].to_numpy(float), new, n_boot=n_boot,
                              seed=seed + i)
        if res is None:
            continue
        point.loc[idx, "median"] = res["point"]
        draws = res["predictive"]
        boot.loc[idx, "median"] = np.median(draws, axis=0)
        for mass in intervals:
            tag = f"{round(100 * mass):d}"
            boot.loc[idx, f"lower_{tag}"] = np.quantile(draws, (1 - mass) / 2, axis=0)
            boot.loc[idx, f"upper_{tag}"] = np.quantile(draws, (1 + mass) / 2, axis=0)
        y = heldout.loc[idx, runs.response].to_numpy(float)
        sd = np.maximum(draws.std(axis=0), 1e-12)
        boot.loc[idx, "lpd"] = stats.norm.logpdf(y, draws.mean(axis=0), sd)
    return point, boot


def backtest(runs: RunTable, *, law: str = "saturating", holdout: int | float | np.ndarray = 1,
             likelihood: str = "normal", settings: SamplerSettings | None = None,
             methods: Sequence[str] = METHODS, n_boot: int = 200, intervals: Sequence[float] = _INTERVALS,
             calibration_holdout: int | float = 1, seed: int = 0) -> Backtest:
    """Fit on all but the held-out (largest) scales, forecast the held-out runs, score every method.

    ``holdout``: top-k distinct scales per group (``int``), a scale cut (``float``: scale > cut is
    held out) or a boolean mask (see ``holdout_mask``). ``law``: ``"saturating"`` or
    ``"chinchilla"`` (curve_fit is skipped for the two-variable law). ``methods``: any of
    ``METHODS``; ``n_boot``: bootstrap replicates of the Huber fit; ``calibration_holdout``: what
    ``bayescale_calibrated`` holds out of the training runs to learn the extrapolation error.
    Usage: ``bt = backtest(runs, holdout=2, settings=SamplerSettings(seed=1)); print(bt.table)``
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; known: {list(METHODS)}")
    mask = holdout_mask(runs, holdout)
    if mask.all() or not mask.any():
        raise ValueError(f"holdout={holdout!r} holds out {int(mask.sum())} of {len(mask)} runs; need some of each")
    train, heldout = runs.subset(~mask), runs.data[mask].copy()
    fit = fit_law(train, law=law, likelihood=likelihood, settings=settings)
    columns = list(fit.spec.covariate_columns)
    preds, notes = {}, []
    if "bayescale" in methods:
        preds["bayescale"] = _bayes_predictions(fit, runs, heldout, intervals, seed)
    calibration = None
    if "bayescale_calibrated" in methods:
        calibration = calibrate_extrapolation(fit, settings=settings, holdout=calibration_holdout)
        preds["bayescale_calibrated"] = _bayes_predictions(fit, runs, heldout, intervals, seed, calibration)
        notes.append(str(calibration))
        if not calibration.diagnostics.ok:
            notes.append(f"the extrapolation-error refit did not pass the convergence checks: {calibration.diagnostics}")
    if "curve_fit" in methods:
        if len(columns) == 1:
            preds["curve_fit"] = _curve_fit_predictions(runs, train.data, heldout, intervals)
        else:
            notes.append(f"curve_fit skipped: it fits the one-variable law only, not {law!r}")
    if {"huber", "huber_bootstrap"} & set(methods):
        point, boot = _huber_predictions(runs, train.data, heldout, columns, intervals, n_boot, seed)
        if "huber" in methods:
            preds["huber"] = point
        if "huber_bootstrap" in methods:
            preds["huber_bootstrap"] = boot
    table, frames = [], []
    for name in (m for m in METHODS if m in preds):
        row, frame = _scored(name, preds[name], runs, heldout, columns, intervals)
        table.append(row)
        frames.append(frame)
    table = pd.DataFrame(table)
    first = ["method", "n_scored", "n_failed", "median_abs_rel_err_%", "mean_abs_rel_err_%"]
    table = table[first + [c for c in table.columns if c not in first]]
    return Backtest(table=table, predictions=pd.concat(frames, ignore_index=True), fit=fit, n_train=train.n_rows,
                    n_heldout=int(mask.sum()), notes=notes, calibration=calibration, runs=runs, heldout=heldout)
