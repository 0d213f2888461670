"""IsoFLOP check: the exponent a of N_opt ~ C^a on Porian et al.'s (2024) IsoFLOP profiles.

Data: ``data/porian_isoflop.csv.gz`` (15 analysis configurations x 11-12 budgets, 1.25e16-2.56e19
FLOPs, 1,745 runs; see data/README.md). Hierarchical fits of L(N, D) = E + A/N^alpha + B/D^beta
with the configurations as groups (partial pooling of the five law parameters across them), a
Student-t likelihood and 4 chains x 2000 draws (1000 warmup), to

- all runs, and
- the near-optimal runs only: those within ``--within`` (3%) of the lowest loss of their budget and
  configuration (the part of each IsoFLOP profile that an IsoFLOP analysis uses).

Per configuration the posterior of a = beta/(alpha+beta) is compared with:

- Porian et al.'s published exponents (``fit_results['basic']`` in their pickles, IsoFLOP approach),
  known for 10 of the 15 configurations;
- a quick IsoFLOP-parabola estimate computed here (per budget, a quadratic in log N through the 7
  runs nearest the lowest loss; its vertex is N*(C); then least squares of log N* on log C). This is
  a re-implementation for orientation, not Porian et al.'s exact procedure.

Prints the table and diagnostics; writes an HTML report of the all-runs fit whose allocation
section shows the configuration ``--group`` (default: Porian et al.'s corrected setup, tuned
hyper-parameters).

Usage: ``python studies/porian_isoflop.py [--out reports/porian_isoflop.html] [--draws 2000] [--within 0.03]``
(about 4 minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bayescale import SamplerSettings, fit_law, load_runs
from bayescale.report import write_report

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "porian_isoflop.csv.gz"
GROUP = "config_id"

#: Published exponents a (N* ~ C^a), Porian et al. 2024, ``fit_results['basic']`` (see data/README.md).
PUBLISHED_A = {
    "rw|base|long|kaplan|kaplan|train": 0.834, "rw|base|long|kaplan|standard|val": 0.701,
    "rw|base|short|kaplan|standard|val": 0.604, "rw|base|short|chinchilla|standard|val": 0.571,
    "rw|tuned|short|const|standard|val": 0.497,
    "owt2|base|long|kaplan|kaplan|train": 0.870, "owt2|base|long|kaplan|standard|val": 0.700,
    "owt2|base|short|kaplan|standard|val": 0.602, "owt2|base|short|chinchilla|standard|val": 0.569,
    "owt2|tuned|short|const|standard|val": 0.518,
}


def parabola_exponent(part: pd.DataFrame, k: int = 7) -> tuple[float, int]:
    """IsoFLOP-parabola estimate of a for one configuration: (a, number of budgets used)."""
    log_c, log_n_star = [], []
    for budget, runs in part.groupby("flops_budget"):
        runs = runs.sort_values("params")
        x, y = np.log(runs["params"].to_numpy()), runs["loss"].to_numpy()
        if len(x) < 4:
            continue
        i = int(np.argmin(y))
        lo = max(0, min(i - k // 2, len(x) - k))
        xs, ys = x[lo:lo + k], y[lo:lo + k]
        c2, c1, _ = np.polyfit(xs, ys, 2)
        vertex = -c1 / (2 * c2) if c2 > 0 else np.nan
        if np.isfinite(vertex) and xs.min() <= vertex <= xs.max():
            log_c.append(np.log(budget))
            log_n_star.append(vertex)
    if len(log_c) < 3:
        return np.nan, len(log_c)
    return float(np.polyfit(log_c, log_n_star, 1)[0]), len(log_c)


def exponent_table(fits: dict, data: pd.DataFrame, interval: float = 0.9) -> pd.DataFrame:
    """Per configuration: published a, each fit's posterior median and interval of a, parabola a."""
    rows = []
    tag = round(100 * interval)
    configs = next(iter(fits.values())).spec.levels[GROUP]
    for config in [*configs, None]:
        published = PUBLISHED_A.get(config, np.nan)
        row = {GROUP: config or "(new configuration: population)", "published_a": published}
        for label, fit in fits.items():
            table = fit.compute_optimal([1e19], group=config, intervals=(interval,))
            lo, hi = table[f"a_lower_{tag}"].iloc[0], table[f"a_upper_{tag}"].iloc[0]
            row[f"a ({label})"] = f"{table['a_median'].iloc[0]:.3f} [{lo:.3f}, {hi:.3f}]"
            row[f"covers ({label})"] = bool(lo <= published <= hi) if np.isfinite(published) else None
        row["parabola_a"], row["parabola_budgets"] = parabola_exponent(data[data[GROUP] == config]) if config \
            else (np.nan, 0)
        rows.append(row)
    return pd.DataFrame(rows)


def near_optimal(runs, within: float):
    """Runs within ``within`` (relative) of the lowest loss of their budget and configuration."""
    data = runs.data
    best = data.groupby([GROUP, "flops_budget"])["loss"].transform("min")
    return runs.subset((data["loss"] <= (1 + within) * best).to_numpy())


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "reports" / "porian_isoflop.html"))
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group", default="rw|tuned|short|const|standard|val")
    parser.add_argument("--within", type=float, default=0.03)
    args = parser.parse_args(argv)

    runs = load_runs(DATA, scale="flops_budget", groups=[GROUP])
    subsets = {"all runs": runs, f"within {100 * args.within:g}% of budget min": near_optimal(runs, args.within)}
    fits = {}
    for label, table in subsets.items():
        t0 = time.perf_counter()
        fits[label] = fit = fit_law(table, law="chinchilla", likelihood="student_t",
                                    settings=SamplerSettings(draws=args.draws, seed=args.seed))
        nu = np.asarray(fit.tree.posterior["nu"].values).ravel()
        print(f"{label}: {table.n_rows} runs, {len(fit.spec.cells)} configurations; fit {time.perf_counter() - t0:.1f} s; "
              f"Student-t nu median {np.median(nu):.2f}\n  diagnostics: {fit.diagnostics}")
    table = exponent_table(fits, runs.data)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    known = table[np.isfinite(table["published_a"])]
    for label in fits:
        medians = known[f"a ({label})"].str.split(" ").str[0].astype(float)
        print(f"{label}: published a inside the 90% interval for {int(known[f'covers ({label})'].astype(bool).sum())} "
              f"of {len(known)} configurations; median |posterior median - published| = "
              f"{np.median(np.abs(medians - known['published_a'])):.3f}")
    print(f"parabola: median |parabola - published| = {np.median(np.abs(known['parabola_a'] - known['published_a'])):.3f}")
    fit = fits["all runs"]

    budgets = sorted(runs.data["flops_budget"].unique())[::2]
    path = write_report(fit, args.out, title="bayescale: IsoFLOP check on Porian et al. 2024",
                        tables={"Exponent a of N_opt ~ C^a per configuration": table},
                        notes=[f"Allocation section: configuration {args.group}; figures and diagnostics: the fit "
                               "to all runs.", *[f"{k}: {f.diagnostics}" for k, f in fits.items()],
                               "parabola_a: quick IsoFLOP-parabola re-implementation, not Porian et al.'s procedure."],
                        allocation={"budgets": budgets, "group": args.group, "table_budgets": [1e19, 1e21, 1e23]})
    print(f"report written: {path}")
    return table


if __name__ == "__main__":
    main()
