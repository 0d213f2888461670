"""Law comparison by PSIS-LOO: pure power law vs saturating law vs broken power law (issue #5).

Two datasets, each fitted with the three one-covariate forms of ``bayescale.laws``:

- ``bnsl``: Caballero et al. 2022 (BNSL), 4-digit addition, test cross-entropy vs training examples
  (``data/bnsl_4digit_addition.csv.gz``): the 14 points the paper fits, one curve with a sharp break;
  the paper's 3 extrapolation points are held back and scored.
- ``gadre``: Gadre et al. 2024, the flagship subset (``studies/gadre_flagship.py``): M = 20, models
  below 1e9 parameters, 24 curves (train dataset x eval set) of 4 runs; the 1.4B and 6.9B models
  (48 runs) are held back and scored.

Prints per dataset and law: sampler diagnostics (max R-hat, min bulk/tail ESS, divergences, time),
the ``compare_fits`` table (ArviZ PSIS-LOO: elpd_loo, p_loo, elpd_diff, dse, weight, ...), Pareto-k
counts (good <= 0.5 < ok <= 0.7 < bad), and the held-back runs' median absolute relative error and
90% predictive-band coverage.

Usage: ``python studies/law_comparison.py [--datasets bnsl gadre] [--chains 4 --warmup 1000 --draws 1000] [--seed 0]``
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bayescale import SamplerSettings, fit_law, load_runs
from bayescale.compare import PARETO_K_MAX, compare_fits, loo

ROOT = Path(__file__).resolve().parents[1]
LAWS = ("power", "saturating", "broken")


def load(dataset: str):
    """(fitted runs, held-back rows) of a dataset."""
    if dataset == "bnsl":
        runs = load_runs(ROOT / "data" / "bnsl_4digit_addition.csv.gz", scale="train_examples",
                         response="test_cross_entropy")
        fit_mask = (runs.data["paper_split"] == "fit").to_numpy()
    elif dataset == "gadre":
        runs = load_runs(ROOT / "data" / "gadre_loss.csv.gz", scale="compute_flops",
                         groups=["train_dataset", "eval_set"], query="tokens_per_param == 20")
        fit_mask = (runs.data["params"] < 1e9).to_numpy()
    else:
        raise ValueError(f"unknown dataset {dataset!r}")
    return runs.subset(fit_mask), runs.data[~fit_mask].copy()


def heldout_scores(fit, heldout: pd.DataFrame) -> dict:
    """Median absolute relative error (%) of the forecast median and 90% predictive-band coverage."""
    scale, response, groups = fit.runs.scale, fit.runs.response, list(fit.spec.groups)
    parts = heldout.groupby(groups) if groups else [(None, heldout)]
    err, hit = [], []
    for key, part in parts:
        fc = fit.forecast(part[scale].to_numpy(), group=key, intervals=(0.9,))
        y = part[response].to_numpy()
        err += list(np.abs(fc["median"].to_numpy() - y) / y)
        hit += list((fc["pred_lower_90"].to_numpy() <= y) & (y <= fc["pred_upper_90"].to_numpy()))
    return {"heldout_mare_%": 100 * float(np.median(err)), "heldout_cover_90": float(np.mean(hit))}


def compare_dataset(dataset: str, settings: SamplerSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit the three laws; return (per-law diagnostics and scores, LOO comparison table)."""
    train, heldout = load(dataset)
    print(f"\n=== {dataset}: {train.n_rows} runs in {len(train.cells())} curve(s); {len(heldout)} held back ===")
    fits, rows = {}, []
    for law in LAWS:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the diagnostics are printed below
            fits[law] = fit = fit_law(train, law=law, settings=settings)
        d = fit.diagnostics
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pareto k is counted below
            k = np.asarray(loo(fit, law).pareto_k).ravel()
        rows.append({"law": law, "seconds": time.perf_counter() - t0, "max_rhat": d.max_rhat,
                     "min_ess_bulk": d.min_ess_bulk, "min_ess_tail": d.min_ess_tail, "divergences": d.n_divergent,
                     "k<=0.5": int(np.sum(k <= 0.5)), "0.5<k<=0.7": int(np.sum((k > 0.5) & (k <= PARETO_K_MAX))),
                     "k>0.7": int(np.sum(k > PARETO_K_MAX)), **heldout_scores(fit, heldout)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = compare_fits(fits, round_to="none")
    return pd.DataFrame(rows).set_index("law"), table


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["bnsl", "gadre"], choices=["bnsl", "gadre"])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = SamplerSettings(chains=args.chains, warmup=args.warmup, draws=args.draws, seed=args.seed)
    print(f"settings: {args.chains} chains x ({args.warmup} warmup + {args.draws} draws), seed {args.seed}")
    out = {}
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        for dataset in args.datasets:
            diag, table = compare_dataset(dataset, settings)
            print("\ndiagnostics, Pareto k counts and held-back scores:")
            print(diag.to_string())
            print("\nPSIS-LOO comparison (arviz.compare; elpd_diff in nats, dse its standard error):")
            print(table.drop(columns=[c for c in ("imaginary", "scale") if c in table.columns]).to_string())
            out[dataset] = (diag, table)
    return out


if __name__ == "__main__":
    main()
