"""Chinchilla replication: L(N, D) = E + A/N^alpha + B/D^beta on Hoffmann et al.'s Fig. 4 points.

Data: ``data/chinchilla_epoch.csv.gz`` (Besiroglu et al. 2024's reconstruction of Hoffmann et al.
2022, Fig. 4: 245 runs, one family; see data/README.md). Epoch refitted these points with a Huber
loss on log-loss after dropping the 5 highest-loss runs (row_id 0-4, all at C ~ 1e19 with fewer
than 1e9 tokens). Here the Bayesian analogue of Huber, a Student-t likelihood (``nu`` estimated),
is fitted with default sampler settings (4 chains x 1000 draws) to:

- all 245 runs (the headline fit: no runs dropped by hand),
- the 240 runs Epoch kept,
- all 245 runs with a Normal likelihood (what the outliers do without a robust likelihood).

Prints, side by side: Hoffmann et al.'s Approach 3, Epoch's refit (with SEs), and each fit's posterior
median with 80% interval; how far (in Epoch SEs) our medians of E, alpha and beta are from Epoch's;
how the 5 outliers sit in the fits (residual in units of sigma, Student-t weight); then the
compute-optimal allocation at Gopher's budget C = 5.76e23 FLOP (N_opt, D_opt, tokens per parameter,
loss, exponents a and b) with 80% intervals, next to the published parameters' point values.
Writes an HTML report of the headline fit with the IsoFLOP / frontier section.

Usage: ``python studies/chinchilla.py [--out reports/chinchilla.html] [--seed 0]``
(about a minute on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bayescale import SamplerSettings, fit_law, load_runs
from bayescale import allocation as al
from bayescale.report import write_report

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "chinchilla_epoch.csv.gz"
GOPHER_BUDGET = 5.76e23
OUTLIER_ROWS = (0, 1, 2, 3, 4)  # the 5 highest-loss runs, dropped by Epoch
PARAMS = ("E", "A", "B", "alpha", "beta")
HOFFMANN = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
EPOCH = {"E": 1.817, "A": 482.0, "B": 2085.4, "alpha": 0.348, "beta": 0.366}
EPOCH_SE = {"E": 0.026, "A": 124.5, "B": 1293.3, "alpha": 0.015, "beta": 0.021}
ISOFLOP_BUDGETS = (6e18, 3e19, 1e20, 6e20, 3e21)  # five of Hoffmann et al.'s nine IsoFLOP budgets


def flat(fit, name: str) -> np.ndarray:
    """All posterior draws of a scalar variable, chains pooled."""
    return np.asarray(fit.tree.posterior[name].values).ravel()


def interval_text(draws: np.ndarray, mass: float = 0.8, fmt: str = "{:.4g}") -> str:
    lo, med, hi = np.quantile(draws, [(1 - mass) / 2, 0.5, (1 + mass) / 2])
    return f"{fmt.format(med)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def parameter_table(fits: dict) -> pd.DataFrame:
    """Published values and our posterior medians [80% interval], one row per parameter."""
    rows = []
    for p in PARAMS:
        row = {"param": p, "Hoffmann A3": f"{HOFFMANN[p]:.4g}", "Epoch refit (SE)": f"{EPOCH[p]:.4g} ({EPOCH_SE[p]:.3g})"}
        for label, fit in fits.items():
            row[label] = interval_text(fit.natural_draws()[p])
        rows.append(row)
    return pd.DataFrame(rows)


def distance_table(fits: dict) -> pd.DataFrame:
    """(our median - Epoch's estimate) / Epoch's SE for E, alpha, beta."""
    return pd.DataFrame([{"fit": label, **{p: (np.median(fit.natural_draws()[p]) - EPOCH[p]) / EPOCH_SE[p]
                                           for p in ("E", "alpha", "beta")}} for label, fit in fits.items()])


def outlier_table(fits: dict, runs) -> pd.DataFrame:
    """The 5 dropped runs in each fit: observed loss, law median, residual / sigma, Student-t weight.

    The weight is the posterior mean of (nu + 1) / (nu + (r / sigma)^2), the factor by which the
    Student-t likelihood down-weights a run relative to a Normal one (1: full weight).
    """
    data = runs.data
    part = data[data["row_id"].isin(OUTLIER_ROWS)]
    rows = []
    for label, fit in fits.items():
        law = fit.law_draws({"params": part["params"].to_numpy(), "tokens": part["tokens"].to_numpy()})
        sigma = flat(fit, "sigma")[:, None]
        z = (part["loss"].to_numpy()[None, :] - law) / sigma
        nu = flat(fit, "nu")[:, None] if fit.spec.likelihood == "student_t" else None
        weight = (np.mean((nu + 1) / (nu + z ** 2), axis=0)
                  if fit.spec.likelihood == "student_t" else np.ones(len(part)))
        for j, (_, run) in enumerate(part.iterrows()):
            rows.append({"fit": label, "row_id": int(run["row_id"]), "params": run["params"], "tokens": run["tokens"],
                         "loss": run["loss"], "law_median": float(np.median(law[:, j])),
                         "residual_over_sigma": float(np.median(z[:, j])), "weight": float(weight[j]),
                         "in_fit": bool(run["row_id"] in fit.runs.data["row_id"].to_numpy())})
    return pd.DataFrame(rows)


def allocation_table(fits: dict, compute: float = GOPHER_BUDGET) -> pd.DataFrame:
    """N_opt, D_opt, tokens per parameter, loss at the optimum, a and b at ``compute``."""
    rows = []
    for label, params in (("Hoffmann A3 (point)", HOFFMANN), ("Epoch refit (point)", EPOCH)):
        alloc = al.optimal_allocation({k: np.array([v]) for k, v in params.items()}, [compute])
        rows.append({"fit": label, **{q: f"{alloc[q][0, 0]:.4g}" for q in al.QUANTITIES}})
    for label, fit in fits.items():
        alloc = al.optimal_allocation(fit.natural_draws(), [compute])
        rows.append({"fit": label, **{q: interval_text(alloc[q][:, 0]) for q in al.QUANTITIES}})
    return pd.DataFrame(rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "reports" / "chinchilla.html"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = SamplerSettings(seed=args.seed)

    runs = load_runs(DATA, scale="compute_flops", params_col="params", tokens_col="tokens")
    kept = runs.subset(~runs.data["row_id"].isin(OUTLIER_ROWS).to_numpy())
    configs = {"ours: t, all 245": (runs, "student_t"), "ours: t, Epoch's 240": (kept, "student_t"),
               "ours: normal, all 245": (runs, "normal")}
    fits = {}
    for label, (table, likelihood) in configs.items():
        t0 = time.perf_counter()
        fits[label] = fit_law(table, law="chinchilla", likelihood=likelihood, settings=settings)
        d = fits[label].diagnostics
        print(f"{label}: {table.n_rows} runs, {time.perf_counter() - t0:.1f} s; {d}")
    headline = fits["ours: t, all 245"]
    nu = {label: interval_text(flat(f, "nu")) for label, f in fits.items() if f.spec.likelihood == "student_t"}
    print("Student-t degrees of freedom nu, median [80%]: " + "; ".join(f"{k}: {v}" for k, v in nu.items()))

    tables = {"Parameters: published vs posterior median [80% interval]": parameter_table(fits),
              "Distance from Epoch's refit, in Epoch SEs (|.| <= 2 is the acceptance band)": distance_table(fits),
              "The 5 runs Epoch dropped": outlier_table(fits, runs),
              f"Compute-optimal allocation at C = {GOPHER_BUDGET:.3g} FLOP (C = 6ND), median [80%]": allocation_table(fits)}
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 40):
        for name, df in tables.items():
            print(f"\n{name}\n{df.to_string(index=False, float_format=lambda v: f'{v:.3g}')}")

    notes = [f"{label}: {f.diagnostics}" for label, f in fits.items()]
    notes.append("Likelihood: Student-t on the loss with nu estimated (the Bayesian analogue of Epoch's Huber loss "
                 "on log-loss); the report's figures and diagnostics are those of the fit to all 245 runs.")
    path = write_report(headline, args.out, title="bayescale: Chinchilla replication (Hoffmann et al. 2022, Fig. 4 "
                        "points reconstructed by Epoch)", tables=tables, notes=notes,
                        allocation={"budgets": list(ISOFLOP_BUDGETS), "compute_range": (1e18, 1e26),
                                    "table_budgets": [1e21, 1e22, GOPHER_BUDGET, 1e24, 1e25],
                                    "target_losses": [2.0, 1.95, 1.9], "interval": 0.8,
                                    "references": {"Hoffmann A3": HOFFMANN, "Epoch refit": EPOCH}})
    print(f"\nreport written: {path}")
    return {"fits": fits, "tables": tables}


if __name__ == "__main__":
    main()
