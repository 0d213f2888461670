"""Experiment design: which next run shrinks the forecast band at a target scale most per unit of compute.

Preposterior analysis by importance reweighting, no refits. For a candidate run (scale, group):

1. draw S outcomes ``y_s`` from the fit's posterior predictive at the candidate (a posterior draw,
   its law at the candidate's scale, plus the fit's noise: Normal or Student-t);
2. reweight every posterior draw ``i`` by the likelihood of ``y_s`` under it,
   ``w_si ∝ p(y_s | theta_i)`` (the posterior after adding the run, up to Monte Carlo error);
3. the band at the target is the central ``mass`` (default 90%) interval of the target draws
   under weights ``w_s``; its width (averaged over the target scales) is ``W_s``;
4. expected width ``E[W] = mean_s W_s``; expected shrinkage = current width - ``E[W]``.

Error bars: the Monte Carlo error over the S outcomes, ``sd_s(W_s) / sqrt(S)``, combined with the
error of the finite posterior sample, estimated by repeating steps 3-4 on batches of the draws
(halves of chains; batch means). ``shrinkage_se`` is the error of the shrinkage itself (it
includes the current width's error); ``expected_width_se`` that of ``E[W]``, which is what counts
when candidates are compared with each other, or with refits of the same fit (realised shrinkage =
the same current width - refit width): the current width cancels there.

``band="credible"`` (default) is the band of the law (expected loss) at the target: the part
of the forecast uncertainty that more runs can remove. ``band="predictive"`` is the band of a
new run there (law plus noise; each posterior draw carries one fixed noise draw).

Reweighting is reliable only while the new run does not move the posterior far: each candidate
reports the Kish effective sample size of its weights (median and minimum over the S outcomes),
and a ``ReweightingWarning`` is raised when the median falls below ``min_ess``.
Candidates in group levels the fit has not seen work: their curve is drawn from the hierarchy
(``bayescale.model.new_cell_draws``, ``n_effect_draws`` draws of the new effects per posterior
draw; the likelihood is averaged over them unless the target shares the effect), so the run
informs the population and, through it, the target. ``refit_with_runs`` refits with simulated runs added, to check a prediction.

Usage:
    cands = pd.DataFrame({"train_dataset": ["rpj", "rpj"], "eval_set": ["c4_val", "paloma_ptb"],
                          "compute_flops": [2.5e20, 2.5e20]})      # cost defaults to compute_flops
    table = rank_candidates(fit, cands, target=5.7e21, target_group=("rpj", "c4_val"))
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
from scipy.special import gammaln, logsumexp

from .fit import Fit, fit_law, new_run_noise
from .model import has_factor_effects, new_cell_draws
from .runs import load_runs
from .spec import ModelSpec, SamplerSettings

__all__ = ["rank_candidates", "band_width", "refit_with_runs", "ReweightingWarning"]

_POPULATION = "\0population"  # internal level label of target_group=None (a fresh level per factor)


class ReweightingWarning(UserWarning):
    """Importance weights too concentrated (small effective sample size) for a reliable prediction."""


# ---- joint posterior draws of several curves ------------------------------------------------------
def _cell_key(fit: Fit, group) -> tuple:
    """One level per factor (None -> a private unseen level), as in ``Fit._resolve``."""
    resolved = fit._resolve(group)
    return tuple(_POPULATION if resolved[f] is None else resolved[f] for f in fit.spec.groups)


def _fresh_effects(spec, cell: tuple) -> set:
    """Random effects a curve draws afresh: its cell effect if unseen, and each unseen level's effect."""
    if not spec.groups or cell in spec.cells:
        return set()
    out = {("cell", cell)}
    if has_factor_effects(spec):
        out |= {(f, level) for f, level in zip(spec.groups, cell) if level not in spec.levels[f]}
    return out


def _joint_theta(fit: Fit, cells: Sequence[tuple], rng: np.random.Generator, n_rep: int) -> dict:
    """{cell: (n_rep or 1, n_draws, n_params)} law-parameter draws of several curves, from the *same*
    posterior draws.

    Fitted curves: their posterior draws (leading axis 1). Unseen curves: ``n_rep`` replicates of
    ``new_cell_draws`` per posterior draw; within a replicate an unseen level shared by two curves
    has one effect (not two independent ones), so a run in a new level informs a target there.
    """
    spec = fit.spec
    unique = list(dict.fromkeys(cells))
    unseen = [c for c in unique if _fresh_effects(spec, c)]
    out = {c: np.stack([v for v in fit._theta_draws(c if spec.groups else None).values()], axis=1)[None]
           for c in unique if c not in unseen}
    new_levels = {f: sorted({c[j] for c in unseen} - set(spec.levels[f])) for j, f in enumerate(spec.groups)}
    spec_new = replace(spec, levels={f: list(spec.levels[f]) + new_levels[f] for f in spec.groups})
    reps = {c: [] for c in unseen}
    for _ in range(n_rep if unseen else 0):
        z_new = {}
        if has_factor_effects(spec):  # factor effects exist: one draw per unseen level and replicate
            z_new = {f: rng.standard_normal(fit._flat(f"z_{f}").shape[:-1] + (len(levels),))
                     for f, levels in new_levels.items() if levels}

        def flat(name, z_new=z_new):
            value = fit._flat(name)
            factor = name.removeprefix("z_")
            return np.concatenate([value, z_new[factor]], axis=-1) if factor in z_new and name != "z_cell" else value

        for c in unseen:
            reps[c].append(new_cell_draws(flat, spec_new, c, rng))
    out.update({c: np.stack(v) for c, v in reps.items()})
    return out


def _law(fit: Fit, theta: np.ndarray, covariates: dict) -> np.ndarray:
    """Law at raw covariates {column: (n,)} for draws ``theta`` (..., n_params): shape (..., n)."""
    spec, law = fit.spec, fit.spec.law_def
    th = {p: theta[..., i, None] for i, p in enumerate(spec.law_params)}
    cov = {name: np.log(np.asarray(covariates[col], np.float64)) - ref
           for name, col, ref in zip(law.covariates, spec.covariate_columns, spec.law_log_refs)}
    return law.mean(th, cov, spec.law_grids)


def _target_covariates(fit: Fit, target) -> dict:
    """Raw target covariates {column: (n,)}, validated by the fit (``Fit._covariates``)."""
    values = fit._covariates(target)
    if len(values) == 1:
        return {fit.spec.covariate_columns[0]: values["scale"]}
    return values


def _target_draws(fit: Fit, theta: np.ndarray, covariates: dict, band: str, rng) -> np.ndarray:
    """Draws whose band is measured, (reps * n_draws, n_targets): the law, or the law plus one noise
    draw each; row ``k * n_draws + i`` belongs to posterior draw ``i``."""
    if band not in ("credible", "predictive"):
        raise ValueError(f"band must be 'credible' or 'predictive', got {band!r}")
    q = _law(fit, theta, covariates)  # (reps, n_draws, n_targets)
    if band == "predictive":
        sigma, nu = fit.noise_draws()
        q = q + new_run_noise(sigma[:, None], None if nu is None else nu[:, None], q.shape, rng)
    return q.reshape(-1, q.shape[-1])


# ---- weighted bands ------------------------------------------------------------------------------
def _widths(q: np.ndarray, weights: np.ndarray, mass: float, column=None) -> np.ndarray:
    """Width of the central ``mass`` interval of the draws ``q`` (M, n_targets) under each row of
    ``weights`` (S, n_w), averaged over targets: shape (S,). Draw ``j`` has weight
    ``weights[:, column[j]]`` (default ``column[j] = j``). Quantiles are inverted-CDF (the smallest
    draw whose cumulative weight reaches the level), one rule for weighted and plain bands."""
    if not 0 < mass < 1:
        raise ValueError(f"mass must be in (0, 1), got {mass}")
    column = np.arange(len(q)) if column is None else column
    w = np.asarray(weights, np.float64)
    out = np.zeros(len(w))
    chunk = max(1, 2_000_000 // len(q))
    for t in range(q.shape[1]):
        order = np.argsort(q[:, t], kind="stable")
        sorted_q, sorted_col = q[order, t], column[order]
        for a in range(0, len(w), chunk):
            cum = np.cumsum(w[a:a + chunk][:, sorted_col], axis=1)
            cum /= cum[:, -1:]
            lo, hi = (np.minimum((cum < level - 1e-12).sum(axis=1), len(q) - 1)
                      for level in ((1 - mass) / 2, (1 + mass) / 2))
            out[a:a + chunk] += sorted_q[hi] - sorted_q[lo]
    return out / q.shape[1]


def _batch_widths(q: np.ndarray, weights: np.ndarray, mass: float, column, n_draws: int,
                  n_batches: int) -> np.ndarray:
    """``_widths`` on contiguous batches of the posterior draws (chain-major, so whole chains or
    halves of chains), shape (n_batches, S): their spread estimates the Monte Carlo error that
    the finite, autocorrelated posterior sample adds."""
    row_draw = np.arange(len(q)) % n_draws
    start = np.arange(n_batches + 1) * n_draws // n_batches
    out = np.full((n_batches, len(weights)), np.nan)
    for b in range(n_batches):
        rows = np.flatnonzero((row_draw >= start[b]) & (row_draw < start[b + 1]))
        if column is None:  # one weight per row
            w_b, col_b = weights[:, rows], None
        else:               # one weight per posterior draw
            w_b, col_b = weights[:, start[b]:start[b + 1]], row_draw[rows] - start[b]
        ok = w_b.sum(axis=1) > 0
        out[b, ok] = _widths(q[rows], w_b[ok], mass, col_b)
    return out


def _log_lik(y: np.ndarray, mean: np.ndarray, sigma: np.ndarray, nu: np.ndarray | None) -> np.ndarray:
    """log p(y_s | draw), shape (S, *mean.shape), Normal or Student-t with location ``mean`` and
    scale ``sigma`` (both indexed by posterior draw on the last axis)."""
    z = (y.reshape(-1, *[1] * mean.ndim) - mean) / sigma
    if nu is None:
        return -0.5 * z**2 - np.log(sigma)
    return gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * np.log(nu * np.pi) - np.log(sigma) \
        - (nu + 1) / 2 * np.log1p(z**2 / nu)


def band_width(fit: Fit, target, target_group=None, *, band: str = "credible", mass: float = 0.9,
               n_effect_draws: int = 16, seed: int = 0) -> float:
    """Width of the fit's central ``mass`` band at ``target`` scale(s), averaged over them.

    The same rule as ``rank_candidates`` (inverted-CDF quantiles of the posterior draws), so a
    refit's width is comparable with the predicted one. ``target_group``: a fitted group, an unseen
    one or None (population; ``n_effect_draws`` draws of its effects per posterior draw).
    Usage: ``band_width(fit, 5.7e21, ("rpj", "c4_val"))``
    """
    rng = np.random.default_rng(seed)
    cell = _cell_key(fit, target_group)
    theta = _joint_theta(fit, [cell], rng, n_effect_draws)[cell]
    q = _target_draws(fit, theta, _target_covariates(fit, target), band, rng)
    return float(_widths(q, np.ones((1, len(q))), mass)[0])


# ---- candidates ---------------------------------------------------------------------------------
def _fmt(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _joined(values: pd.Series):
    """The value of a candidate's rows, or their distinct values joined by "+"."""
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else "+".join(map(str, distinct))


def _compute_like(column: str) -> bool:
    name = column.lower()
    return "flop" in name or "compute" in name


def _validate(fit: Fit, candidates: pd.DataFrame, cost: str) -> pd.DataFrame:
    """Check the candidate table; return it with group columns as str and a float ``cost`` column."""
    if not isinstance(candidates, pd.DataFrame) or len(candidates) == 0:
        raise ValueError("candidates must be a non-empty DataFrame with one row per candidate run")
    spec = fit.spec
    needed = [*spec.groups, *spec.covariate_columns]
    missing = [c for c in needed if c not in candidates.columns]
    if missing:
        raise ValueError(f"candidates lack column(s) {missing}; they need {needed} (the fit's group and "
                         f"scale columns) and a cost column {cost!r}")
    out = candidates.copy()
    rows = list(out.index)
    if cost not in out.columns:
        if len(spec.covariate_columns) == 1 and _compute_like(spec.covariate_columns[0]):
            out[cost] = out[spec.covariate_columns[0]]
        else:
            raise ValueError(f"candidates lack the cost column {cost!r} (FLOPs); it defaults to the scale "
                             f"column only when that is compute, and {list(spec.covariate_columns)} is not")
    for g in spec.groups:
        bad = out[g].isna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"candidates column {g!r}, row {rows[i]!r}: value {_fmt(out[g].iloc[i])} is a missing "
                             "group label")
        out[g] = out[g].astype(str)
    for col in [*spec.covariate_columns, cost]:
        values = pd.to_numeric(out[col], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(values) | (values <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"candidates column {col!r}, row {rows[i]!r}: value {_fmt(out[col].iloc[i])} must be "
                             "a finite number > 0")
        out[col] = values
    return out


def rank_candidates(fit: Fit, candidates: pd.DataFrame, target, target_group=None, *, cost: str = "cost",
                    run: str | None = None, band: str = "credible", mass: float = 0.9, n_sims: int = 200,
                    n_effect_draws: int = 16, seed: int = 0, min_ess: float = 100.0) -> pd.DataFrame:
    """Rank candidate next runs by the expected shrinkage of the forecast band at ``target`` per unit of cost.

    - ``candidates``: one row per candidate run, with the fit's group column(s), its scale column(s)
      (for ``law="chinchilla"`` the params and tokens columns) and ``cost`` (FLOPs, > 0; defaults
      to the scale column when that is compute, i.e. its name contains "flop" or "compute").
      Unseen group levels are allowed. ``run``: a column whose rows with one value form one candidate
      (one training run observed on several curves, e.g. evaluated on several eval sets: outcomes
      drawn jointly, likelihoods multiplied; its rows must give one cost). Each row concentrates
      the weights further: on the flagship fit (1,000 draws) one row kept a median ESS of 260-840,
      a run observed on all 8 eval sets 2-100, so check large bundles by refitting.
    - ``target``: scale(s) where the band matters (raw units; a dict for two-variable laws);
      with several, widths are averaged over them. ``target_group``: the curve (a fitted or
      unseen group, or None for a new group: the population forecast).
    - ``band``: ``"credible"`` (the law's band, default) or ``"predictive"`` (a new run's);
      ``mass``: the band's central mass (0.9).
    - ``n_sims``: simulated outcomes per candidate (S); ``n_effect_draws``: draws of an unseen
      curve's effects per posterior draw (its likelihood is averaged over them);
      ``min_ess``: warn (``ReweightingWarning``) when the median effective sample size of the
      weights, in posterior draws, is below it.

    Returns one row per candidate, best first: ``rank``, ``candidate`` (the input's index, or the
    ``run`` value), group and scale columns (a run's distinct values joined by "+"), ``n_rows``, ``cost``, ``new_group``, ``current_width``, ``expected_width`` and
    ``expected_width_se``, ``shrinkage`` (current - expected width) and ``shrinkage_se`` (Monte
    Carlo standard errors: outcomes and posterior draws, see the module docstring),
    ``shrinkage_frac`` (of the current width), ``shrinkage_per_cost`` (the ranking key, width
    units per FLOP) and ``shrinkage_per_cost_se``, ``ess_median``, ``ess_min``. See the module docstring
    for the method. Same seed, same table.
    Usage: ``rank_candidates(fit, cands, target=5.7e21, target_group=("rpj", "c4_val"))``
    """
    if int(n_sims) < 2 or int(n_effect_draws) < 1:
        raise ValueError(f"need n_sims >= 2 and n_effect_draws >= 1, got {n_sims} and {n_effect_draws}")
    n_sims = int(n_sims)
    spec = fit.spec
    cands = _validate(fit, candidates, cost)
    if run is not None and run not in cands.columns:
        raise ValueError(f"candidates lack the run column {run!r}")
    if not cands.index.is_unique:
        raise ValueError("candidates need a unique index (it labels the candidates); use reset_index()")
    rng = np.random.default_rng(seed)
    target_cell = _cell_key(fit, target_group)
    cand_cells = [tuple(r) for r in cands[list(spec.groups)].itertuples(index=False, name=None)] \
        if spec.groups else [()] * len(cands)
    theta = _joint_theta(fit, [target_cell, *cand_cells], rng, int(n_effect_draws))
    q = _target_draws(fit, theta[target_cell], _target_covariates(fit, target), band, rng)
    sigma, nu = fit.noise_draws()
    n_draws = len(sigma)
    current = float(_widths(q, np.ones((1, len(q))), mass)[0])
    chains = int(fit.tree.posterior.sizes["chain"])
    n_batches = 2 * chains if chains > 1 else 4
    current_b = _batch_widths(q, np.ones((1, len(q))), mass, None, n_draws, n_batches)[:, 0]

    cands["_cell"] = cand_cells
    bundles = [(label, cands.loc[[label]]) for label in cands.index] if run is None \
        else list(cands.groupby(run, sort=False))
    rows = []
    for label, part in bundles:
        if part[cost].nunique() > 1:
            raise ValueError(f"candidates run {label!r}: its rows {list(part.index)} give different costs "
                             f"{part[cost].tolist()}; one run has one cost")
        cells = list(part["_cell"])
        # law at each row's scale, (rows, reps, draws); reps > 1 where a row's curve is unseen
        means = [_law(fit, theta[cell], {c: [r[c]] for c in spec.covariate_columns})[..., 0]
                 for cell, (_, r) in zip(cells, part.iterrows())]
        n_rep = max(m.shape[0] for m in means)
        means = np.stack([np.broadcast_to(m, (n_rep, n_draws)) for m in means])
        pick = rng.choice(n_rep * n_draws, size=n_sims, replace=n_sims > n_rep * n_draws)
        rep, draw = np.divmod(pick, n_draws)  # one joint draw per outcome; independent noise per row
        y = means[:, rep, draw] + new_run_noise(sigma[draw], None if nu is None else nu[draw],
                                                (len(cells), n_sims), rng)
        log_lik = sum(_log_lik(y_row, m, sigma, nu) for y_row, m in zip(y, means))  # (S, reps, draws)
        if set().union(*(_fresh_effects(spec, c) for c in cells)) & _fresh_effects(spec, target_cell):
            # run and target share an unseen effect: weigh each (replicate, draw) pair of the target
            log_w, column = log_lik.reshape(n_sims, -1), None
        else:  # the target does not depend on the run's fresh effects: average them out per draw
            log_w = logsumexp(log_lik, axis=1)
            column = np.arange(len(q)) % n_draws
        w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
        ess = w.sum(axis=1) ** 2 / (w**2).sum(axis=1) * n_draws / w.shape[1]  # in posterior draws
        widths = _widths(q, w, mass, column)
        expected, se_sims = float(widths.mean()), float(widths.std(ddof=1) / np.sqrt(n_sims))
        expected_b = np.nanmean(_batch_widths(q, w, mass, column, n_draws, n_batches), axis=1)
        se_w = np.sqrt(se_sims**2 + np.var(expected_b, ddof=1) / n_batches)
        se = np.sqrt(se_sims**2 + np.var(current_b - expected_b, ddof=1) / n_batches)
        shrink, run_cost = current - expected, float(part[cost].iloc[0])
        rows.append({"candidate": label, **{c: _joined(part[c]) for c in [*spec.groups, *spec.covariate_columns]},
                     "n_rows": len(part), "cost": run_cost,
                     "new_group": any(bool(spec.groups) and c not in spec.cells for c in cells),
                     "current_width": current, "expected_width": expected, "expected_width_se": float(se_w),
                     "shrinkage": shrink, "shrinkage_se": float(se), "shrinkage_frac": shrink / current,
                     "shrinkage_per_cost": shrink / run_cost, "shrinkage_per_cost_se": float(se) / run_cost,
                     "ess_median": float(np.median(ess)), "ess_min": float(ess.min())})
        if np.median(ess) < min_ess:
            warnings.warn(f"candidate {label!r}: median effective sample size of the importance weights is "
                          f"{np.median(ess):.0f} (< {min_ess:g} of {n_draws} draws): the run would move the "
                          "posterior far and its predicted shrinkage is unreliable; check it with refit_with_runs",
                          ReweightingWarning, stacklevel=2)
    out = pd.DataFrame(rows).sort_values("shrinkage_per_cost", ascending=False, kind="stable")
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    out.attrs.update(target=target, target_group=target_group, band=band, mass=mass, n_sims=n_sims)
    return out.reset_index(drop=True)


# ---- checking a prediction --------------------------------------------------------------------------
def refit_with_runs(fit: Fit, new_runs: pd.DataFrame, settings: SamplerSettings | None = None) -> Fit:
    """Refit ``fit``'s model with ``new_runs`` (group, scale and response columns) added to its run table.

    The same model as the original fit: its likelihood, law, priors, reference point and grid
    are kept (``ModelSpec.from_runs`` would re-derive them from the augmented data, changing the
    prior), only new levels and curves are added. ``settings`` default to the fit's.
    Usage: ``refit = refit_with_runs(fit, runs_df)``, e.g. with ``runs_df`` from ``simulate_from_fit``
    """
    old = fit.runs
    columns = [*old.groups, *fit.spec.covariate_columns, old.scale, old.response]
    missing = [c for c in dict.fromkeys(columns) if c not in new_runs.columns]
    if missing:
        raise ValueError(f"new_runs lack column(s) {missing}")
    data = pd.concat([old.data.drop(columns="row"), new_runs[list(dict.fromkeys(columns))]], ignore_index=True)
    runs = load_runs(data, scale=old.scale, response=old.response, groups=old.groups,
                     params_col=old.params_col, tokens_col=old.tokens_col)
    base = ModelSpec.from_runs(runs, likelihood=fit.spec.likelihood, law=fit.spec.law)
    s = fit.spec
    spec = replace(base, priors=s.priors, log_x_ref=s.log_x_ref, grid=s.grid, log_refs=s.log_refs,
                   grids=s.grids, centered=s.centered)
    return fit_law(runs, spec=spec, settings=settings or fit.settings)
