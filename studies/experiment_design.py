"""Experiment design study: which next run shrinks the 6.9B forecast band most per FLOP, and does it?

Data: the flagship's fitted runs (``data/gadre_loss.csv.gz``, M = 20, models < 1e9 params: 24 curves
of train dataset x eval set, 4 models each). Target: the 90% credible band of the law for one curve
(default ``rpj|c4_val``) at the 6.9B model's compute (5.7e21 FLOPs, 280x the largest fitted run).
Candidates: single runs at intermediate compute (6e19 to 1e21 FLOPs, i.e. 0.8B-3B models at M = 20)
in the target curve, in curves sharing its train dataset or its eval set, in an unrelated curve and in
an eval set the fit has never seen; cost = the run's compute.

1. ``bayescale.design.rank_candidates`` ranks them by predicted shrinkage per FLOP (importance
   reweighting of the posterior draws, no refits).
2. Check: for the top candidate(s), simulate the run's outcome ``--reps`` times from the fit
   (``simulate_from_fit``: one posterior draw each, plus noise), refit with it added
   (``refit_with_runs``: same model, priors and sampler settings), and measure the band at the
   target. Realised shrinkage (current width - mean refit width; standard error sd/sqrt(R), which
   includes the refits' own Monte Carlo noise) is compared with the predicted one (current width -
   E[W]; the error of E[W]: simulated outcomes and posterior draws). The current width cancels in
   the difference. Agreement: the difference is within 2 combined standard errors.

Sampler: 2 chains x (500 + 500) draws for the fit and every refit, so that the refits run in a few
minutes on 2 cores (``--full``: the flagship's 4 x (1000 + 1000)).

Usage: ``python studies/experiment_design.py [--reps 8] [--check 1] [--seed 0] [--full]``
(``--check k``: refit-check the top k candidates, plus the one with the largest absolute shrinkage).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bayescale import SamplerSettings, fit_law, load_runs
from bayescale.design import band_width, rank_candidates, refit_with_runs
from bayescale.simulate import simulate_from_fit

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "gadre_loss.csv.gz"
GROUPS = ["train_dataset", "eval_set"]
SCALE = "compute_flops"
TARGET_COMPUTE = 5.6957e21  # the 6.9B model at M = 20 (6 N D)
TARGET = ("rpj", "c4_val")
C_1B4 = 2.4876e20  # the 1.4B model at M = 20


def candidate_table() -> pd.DataFrame:
    """Candidate runs (group, compute); cost defaults to the compute."""
    rows = [("rpj", "c4_val", 6e19), ("rpj", "c4_val", C_1B4), ("rpj", "c4_val", 1e21),
            ("rpj", "paloma_c4_en", C_1B4), ("c4_original", "c4_val", C_1B4), ("rw_original", "paloma_ptb", C_1B4),
            ("rpj", "paloma_ptb", C_1B4), ("rpj", "new_eval_set", C_1B4), ("rpj", "c4_val", 1e19)]
    return pd.DataFrame(rows, columns=[*GROUPS, SCALE])


def check(fit, row: pd.Series, current: float, reps: int, seed: int) -> dict:
    """Simulate the candidate's outcome ``reps`` times, refit with it, return realised shrinkage stats."""
    cell = tuple(row[g] for g in GROUPS)
    widths, times = [], []
    for r in range(reps):
        new_run, _ = simulate_from_fit(fit, [row[SCALE]], seed=seed + 1000 + r, groups=[cell])
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pooling-only note for a one-run new curve
            refit = refit_with_runs(fit, new_run)
        times.append(time.perf_counter() - t0)
        widths.append(band_width(refit, TARGET_COMPUTE, TARGET))
        d = refit.diagnostics
        print(f"  refit {r + 1}/{reps}: y = {new_run[fit.spec.response].iloc[0]:.4f}, width {widths[-1]:.4f} "
              f"({times[-1]:.0f} s; R-hat {d.table['r_hat'].max():.3f}, divergences {d.n_divergent})")
    shrink = current - np.asarray(widths)
    return {"realised": float(shrink.mean()), "realised_se": float(shrink.std(ddof=1) / np.sqrt(reps)),
            "refit_s": float(np.mean(times))}


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=8, help="refits per checked candidate")
    parser.add_argument("--check", type=int, default=1, help="how many top candidates to check by refitting")
    parser.add_argument("--n-sims", type=int, default=400, help="simulated outcomes per candidate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", action="store_true", help="the flagship's 4 x (1000 + 1000) draws")
    args = parser.parse_args(argv)
    settings = (SamplerSettings(seed=args.seed) if args.full
                else SamplerSettings(chains=2, warmup=500, draws=500, seed=args.seed))

    runs = load_runs(DATA, scale=SCALE, groups=GROUPS, query="tokens_per_param == 20 and params < 1e9")
    t0 = time.perf_counter()
    fit = fit_law(runs, settings=settings)
    print(f"fit: {runs.n_rows} runs, {len(runs.cells())} curves, {settings.chains} x ({settings.warmup} + "
          f"{settings.draws}) draws, {time.perf_counter() - t0:.0f} s; {fit.diagnostics}")
    fc = fit.forecast([TARGET_COMPUTE], group=TARGET, intervals=(0.9,)).iloc[0]
    print(f"target: {'|'.join(TARGET)} at {TARGET_COMPUTE:.2e} FLOPs (6.9B model): law median {fc['median']:.3f}, "
          f"90% credible band [{fc['lower_90']:.3f}, {fc['upper_90']:.3f}]")

    t0 = time.perf_counter()
    table = rank_candidates(fit, candidate_table(), TARGET_COMPUTE, TARGET, n_sims=args.n_sims, seed=args.seed)
    print(f"\nranking ({args.n_sims} simulated outcomes per candidate, {time.perf_counter() - t0:.1f} s):")
    show = table.assign(cost=table["cost"].map("{:.2e}".format), compute_flops=table[SCALE].map("{:.2e}".format),
                        shrinkage_per_EFLOP=1e18 * table["shrinkage_per_cost"],
                        per_EFLOP_se=1e18 * table["shrinkage_per_cost_se"])
    cols = ["rank", *GROUPS, SCALE, "expected_width", "shrinkage", "shrinkage_se", "shrinkage_frac",
            "shrinkage_per_EFLOP", "per_EFLOP_se", "ess_median"]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(show[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    current = float(table["current_width"].iloc[0])
    print(f"current width: {current:.4f} nats")

    if args.check <= 0:
        return table
    checked = table.head(args.check).copy()
    if table["shrinkage"].idxmax() not in checked.index:  # also check the largest absolute shrinkage
        checked = pd.concat([checked, table.loc[[table["shrinkage"].idxmax()]]])
    results = []
    for _, row in checked.iterrows():
        print(f"\ncheck rank {row['rank']}: {row['train_dataset']}|{row['eval_set']} at {row[SCALE]:.2e}, "
              f"{args.reps} refits")
        res = check(fit, row, current, args.reps, args.seed)
        # realised - predicted = E[W] - mean refit width (the current width cancels)
        se = float(np.hypot(row["expected_width_se"], res["realised_se"]))
        results.append({"rank": row["rank"], "curve": f"{row['train_dataset']}|{row['eval_set']}",
                        "compute_flops": f"{row[SCALE]:.2e}", "predicted": row["shrinkage"],
                        "predicted_se": row["expected_width_se"], "realised": res["realised"],
                        "realised_se": res["realised_se"], "diff_in_se": (res["realised"] - row["shrinkage"]) / se,
                        "agree_2se": abs(res["realised"] - row["shrinkage"]) <= 2 * se})
    results = pd.DataFrame(results)
    print("\npredicted vs realised shrinkage of the 90% credible band width (nats); errors: predicted_se = "
          "Monte Carlo error of E[W] (outcomes + posterior draws), realised_se = sd / sqrt(R) over the refits:")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(results.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return results


if __name__ == "__main__":
    main()
