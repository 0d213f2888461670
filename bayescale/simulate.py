"""Simulated scaling-law campaigns with known truth, for tests, recovery checks and planning.

Each group (curve) follows the saturating law in its natural form
``L(x) = L_inf + a * x**(-alpha)`` plus Gaussian noise. Per-group truth is drawn from a
population (``DEFAULT_POPULATION``) or given explicitly as ``law_params``.

``simulate_isoflop_runs`` simulates IsoFLOP campaigns of the two-variable law
``L(N, D) = E + A/N^alpha + B/D^beta`` (``fit_law(..., law="chinchilla")``).

``simulate_from_fit`` draws a whole run database from a fitted posterior (one posterior draw of the
population, every curve's law and the noise): ``simulate_from_fit(fit, np.geomspace(1e20, 1e22, 5), seed=1)``.

Usage:
    from bayescale.simulate import simulate_runs
    runs_df, truth = simulate_runs(6, seed=1)                # 6 groups x 6 scales, 1e18..1e21 FLOPs
    fit = fit_law(load_runs(runs_df, scale="compute_flops", groups=["family"]))
    iso_df = simulate_isoflop_runs([1e18, 1e19, 1e20], seed=0)
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["simulate_runs", "simulate_isoflop_runs", "simulate_from_fit", "natural_loss", "DEFAULT_POPULATION", "DEFAULT_SCALES",
           "CHINCHILLA_TRUTH"]

#: Default scales of every group: 6 points, geometric from 1e18 to 1e21 (e.g. training FLOPs).
DEFAULT_SCALES = tuple(np.geomspace(1e18, 1e21, 6).tolist())

#: Default population of per-group truth (all draws independent across groups):
#:
#: - ``loss_floor``: L_inf ~ Normal(mean, sd) = Normal(1.8, 0.2) nats,
#: - ``alpha``: alpha ~ LogNormal(log(median), sd of log) = median 0.3, 90% of draws in 0.20-0.45,
#: - ``reducible_at_min``: the reducible loss ``a * x_min**-alpha`` at the smallest scale
#:   ~ Uniform(1, 3) nats, which fixes ``a = R0 * x_min**alpha``.
#:
#: Override any subset with ``simulate_runs(population={"alpha": (0.5, 0.1)})``.
DEFAULT_POPULATION = {
    "loss_floor": (1.8, 0.2),
    "alpha": (0.3, 0.25),
    "reducible_at_min": (1.0, 3.0),
}

_TRUTH_COLUMNS = ("loss_floor", "a", "alpha")


def natural_loss(scales, loss_floor, a, alpha) -> np.ndarray:
    """The law in natural form, ``loss_floor + a * scales**(-alpha)``, broadcasting NumPy-style.

    Computed as ``a * exp(-alpha * log x)`` so that large scales (1e24 and beyond) stay finite.
    Usage: ``natural_loss(np.geomspace(1e18, 1e22, 5), 1.8, 4e5, 0.3)``
    """
    scales = np.asarray(scales, dtype=np.float64)
    return np.asarray(loss_floor) + np.asarray(a) * np.exp(-np.asarray(alpha) * np.log(scales))


def _labels(n: int) -> list[str]:
    """``A, B, ..., Z, AA, AB, ...``: sortable group labels in creation order for n <= 26."""
    out = []
    for width in itertools.count(1):
        for combo in itertools.product(string.ascii_uppercase, repeat=width):
            if len(out) == n:
                return out
            out.append("".join(combo))
    return out  # pragma: no cover


def _group_table(n_groups: int | dict, group_name: str) -> pd.DataFrame:
    """One row per simulated curve, with its group column(s)."""
    if isinstance(n_groups, dict):
        if not n_groups:
            raise ValueError("n_groups as a dict needs at least one factor, e.g. {'family': 4}")
        levels = {}
        for factor, n in n_groups.items():
            if int(n) < 1:
                raise ValueError(f"factor {factor!r} needs at least one level, got {n}")
            levels[factor] = [f"{factor}{i}" for i in range(int(n))]
        rows = list(itertools.product(*levels.values()))
        return pd.DataFrame(rows, columns=list(levels))
    if int(n_groups) < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    return pd.DataFrame({group_name: _labels(int(n_groups))})


def simulate_runs(
    n_groups: int | dict = 8,
    scales: Sequence[float] | np.ndarray = DEFAULT_SCALES,
    *,
    law_params: pd.DataFrame | None = None,
    population: dict | None = None,
    noise_sd: float = 0.01,
    scale_name: str = "compute_flops",
    group_name: str = "family",
    seed: int = 0,
    missing_frac: float = 0.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate runs of several curves from the law ``L_inf + a * x**-alpha`` plus noise.

    - ``n_groups``: number of curves, labelled ``"A", "B", ...`` in column ``group_name``; or a
      dict ``{factor: n_levels}`` for a crossed design with one curve per level combination
      (levels ``"<factor>0", "<factor>1", ...``; ``group_name`` is then unused).
    - ``scales``: the scales every curve is run at (default ``DEFAULT_SCALES``).
    - ``law_params``: the truth itself, one row per curve with its group column(s) and
      ``loss_floor``, ``a``, ``alpha``; ``n_groups`` and ``population`` are then ignored.
    - ``population``: overrides of ``DEFAULT_POPULATION`` (same keys and meaning).
    - ``noise_sd``: sd of the Gaussian noise added to each run's loss (nats).
    - ``missing_frac``: fraction of runs dropped uniformly at random (``round(frac * n)``
      runs), to mimic an incomplete campaign; a curve may end up with fewer than 3 scales.

    Returns ``(runs, truth)``: ``runs`` has the group column(s), ``scale_name`` and ``loss``;
    ``truth`` has the group column(s), ``loss_floor``, ``a`` and ``alpha``. Same seed, same output.

    Usage:
        runs_df, truth = simulate_runs(6, np.geomspace(1e18, 1e21, 6), noise_sd=0.02, seed=3)
        runs_df, truth = simulate_runs({"dataset": 2, "eval_set": 3}, seed=0)
        runs_df, truth = simulate_runs(law_params=pd.DataFrame(
            {"family": ["A"], "loss_floor": [1.7], "a": [4e5], "alpha": [0.3]}))
    """
    scales = np.asarray(scales, dtype=np.float64).ravel()
    if scales.size == 0 or np.any(~np.isfinite(scales)) or np.any(scales <= 0):
        raise ValueError("scales must be a non-empty sequence of finite values > 0")
    if not 0.0 <= missing_frac < 1.0:
        raise ValueError(f"missing_frac must be in [0, 1), got {missing_frac}")
    if noise_sd < 0:
        raise ValueError(f"noise_sd must be >= 0, got {noise_sd}")
    rng = np.random.default_rng(seed)

    if law_params is not None:
        missing = [c for c in _TRUTH_COLUMNS if c not in law_params.columns]
        if missing:
            raise ValueError(f"law_params lacks column(s) {missing}; it needs {list(_TRUTH_COLUMNS)}")
        group_cols = [c for c in law_params.columns if c not in _TRUTH_COLUMNS]
        if not group_cols:
            raise ValueError("law_params needs at least one group column besides loss_floor, a, alpha")
        truth = law_params[[*group_cols, *_TRUTH_COLUMNS]].reset_index(drop=True).copy()
        truth[group_cols] = truth[group_cols].astype(str)
    else:
        pop = {**DEFAULT_POPULATION, **(population or {})}
        unknown = set(pop) - set(DEFAULT_POPULATION)
        if unknown:
            raise ValueError(f"unknown population key(s) {sorted(unknown)}; known: {list(DEFAULT_POPULATION)}")
        truth = _group_table(n_groups, group_name)
        group_cols = list(truth.columns)
        n = len(truth)
        floor = rng.normal(*pop["loss_floor"], size=n)
        alpha = np.exp(rng.normal(np.log(pop["alpha"][0]), pop["alpha"][1], size=n))
        reducible = rng.uniform(*pop["reducible_at_min"], size=n)
        truth["loss_floor"] = floor
        truth["a"] = reducible * np.exp(alpha * np.log(scales.min()))  # a * x_min**-alpha = R0
        truth["alpha"] = alpha

    n_curves, n_scales = len(truth), scales.size
    mean = natural_loss(scales[None, :], truth["loss_floor"].to_numpy()[:, None],
                        truth["a"].to_numpy()[:, None], truth["alpha"].to_numpy()[:, None])
    loss = mean + noise_sd * rng.standard_normal(mean.shape)
    runs = truth.loc[np.repeat(np.arange(n_curves), n_scales), group_cols].reset_index(drop=True)
    runs[scale_name] = np.tile(scales, n_curves)
    runs["loss"] = loss.ravel()
    n_drop = int(round(missing_frac * len(runs)))
    if n_drop:
        drop = rng.choice(len(runs), size=n_drop, replace=False)
        runs = runs.drop(index=drop).reset_index(drop=True)
    return runs, truth


#: Default truth of ``simulate_isoflop_runs``: Hoffmann et al.'s (2022) Approach 3 values.
CHINCHILLA_TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def simulate_isoflop_runs(budgets: Sequence[float], n_per_budget: int = 6, *, truth: dict | None = None,
                          groups: dict[str, dict] | None = None, span: float = 10.0, noise_sd: float = 0.01,
                          flops_per_param_token: float = 6.0, seed: int = 0) -> pd.DataFrame:
    """Simulate IsoFLOP profiles of ``L(N, D) = E + A/N^alpha + B/D^beta`` plus Gaussian noise.

    Per budget C: ``n_per_budget`` model sizes geometric from N_opt(C)/span to N_opt(C)*span
    around the true optimum, tokens ``D = C / (k N)``. ``truth``: E, A, B, alpha, beta
    (default ``CHINCHILLA_TRUTH``); ``groups``: {label: truth overrides} simulates one campaign
    per label in column ``family``. Columns: [``family``], ``flops_budget``, ``params``, ``tokens``,
    ``compute_flops``, ``loss``. Same seed, same output.
    Usage: ``simulate_isoflop_runs([1e18, 1e19, 1e20], n_per_budget=6, noise_sd=0.01, seed=0)``
    """
    budgets = np.asarray(budgets, dtype=np.float64).ravel()
    if budgets.size == 0 or np.any(~np.isfinite(budgets)) or np.any(budgets <= 0):
        raise ValueError("budgets must be a non-empty sequence of finite values > 0")
    if noise_sd < 0 or span <= 1 or n_per_budget < 1:
        raise ValueError("need noise_sd >= 0, span > 1 and n_per_budget >= 1")
    rng = np.random.default_rng(seed)
    frames = []
    for label, overrides in (groups or {None: {}}).items():
        p = {**CHINCHILLA_TRUTH, **(truth or {}), **overrides}
        g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
        a = p["beta"] / (p["alpha"] + p["beta"])
        n_opt = g * (budgets / flops_per_param_token) ** a
        n = (n_opt[:, None] * np.geomspace(1 / span, span, n_per_budget)[None, :]).ravel()
        c = np.repeat(budgets, n_per_budget)
        d = c / (flops_per_param_token * n)
        loss = p["E"] + p["A"] * n ** -p["alpha"] + p["B"] * d ** -p["beta"] + noise_sd * rng.standard_normal(n.size)
        frame = pd.DataFrame({"flops_budget": c, "params": n, "tokens": d, "compute_flops": c, "loss": loss})
        if label is not None:
            frame.insert(0, "family", str(label))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def simulate_from_fit(fit, scales, seed: int = 0, *, groups: Sequence | None = None,
                      draw: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate a run database from a fitted posterior: one posterior draw, new runs at ``scales``.

    One draw (``draw``, or a random one from ``seed``) of all parameters is taken, so curves
    share that draw's population, noise level and (Student-t) degrees of freedom; every curve is
    run at every scale and gets the fit's noise (Normal or Student-t) around its law. A plausible
    replicate campaign under the fit: use it to ask what a backtest or a new design would show.

    - ``fit``: a ``bayescale.Fit`` (either law);
    - ``scales``: raw values of the scale column, or for ``"chinchilla"`` a dict/DataFrame with the
      run table's params and tokens columns (rows are runs);
    - ``groups``: curves to simulate, as group-level tuples (default: the fitted curves); an unseen
      level is drawn from the hierarchy, as in ``fit.forecast``.

    Returns ``(runs, truth)``: ``runs`` has the group columns, the covariate column(s) and the
    response column; ``truth`` has one row per curve with the draw's natural parameters
    (``loss_floor``, ``a``, ``alpha``; or ``E``, ``A``, ``B``, ``alpha``, ``beta``) and ``draw``.
    Usage: ``runs_df, truth = simulate_from_fit(fit, np.geomspace(1e19, 1e22, 6), seed=1)``
    """
    spec = fit.spec
    rng = np.random.default_rng(seed)
    n_draws = fit._flat("sigma").shape[0]
    d = int(rng.integers(n_draws)) if draw is None else int(draw)
    if not 0 <= d < n_draws:
        raise ValueError(f"draw must be in [0, {n_draws}), got {draw}")
    cells = list(spec.cells) if groups is None else [tuple(g) if isinstance(g, (tuple, list)) else (g,)
                                                     for g in groups]
    columns = spec.covariate_columns
    if len(columns) == 1:
        cov = {columns[0]: np.asarray(scales, dtype=np.float64).ravel()}
    else:
        frame = pd.DataFrame(scales)
        cov = {c: frame[c].to_numpy(np.float64) for c in columns}
    n = len(next(iter(cov.values())))
    sigma = fit._flat("sigma")[d]
    nu = fit._flat("nu")[d] if spec.likelihood == "student_t" else None
    law, frames, truth = spec.law_def, [], []
    for k, cell in enumerate(cells):
        group = cell if spec.groups else None
        theta = {name: v[d] for name, v in fit._theta_draws(group, seed=seed + k).items()}
        u = {name: np.log(cov[col]) - ref for name, col, ref in zip(law.covariates, columns, spec.law_log_refs)}
        mean = law.mean(theta, u, spec.law_grids)
        noise = sigma * (rng.standard_t(nu, size=n) if nu is not None else rng.standard_normal(n))
        frame = pd.DataFrame({**dict(zip(spec.groups, cell)), **cov, spec.response: mean + noise})
        frames.append(frame)
        natural = law.natural(theta, spec.law_grids, spec.law_log_refs)
        truth.append({**dict(zip(spec.groups, cell)), **{kk: float(v) for kk, v in natural.items()}, "draw": d})
    return pd.concat(frames, ignore_index=True), pd.DataFrame(truth)
