"""Backtest study: forecast each dataset's largest models from the smaller ones, bayescale vs point fits.

Datasets (``data/``, provenance in data/README.md):

- ``gadre_loss.csv.gz``: Gadre et al. (2024) losses at M = 20 tokens/param, compute scale, curves =
  train dataset x eval set (24 curves x 6 models); held out: each curve's 2 largest models (1.4B, 6.9B);
- ``pythia_lambada.csv.gz``: Pythia (Biderman et al. 2023) final checkpoints, LAMBADA log-perplexity,
  parameter scale, curves = deduplicated or not x 0/5-shot (4 x 8 models); held out: 2 largest (6.9B, 12B);
- ``moe_routed_final.csv.gz``: routed LMs (Clark et al. 2022 grid), final validation loss, dense-parameter
  scale, curves = router x number of experts (28 curves x 5-6 sizes); held out: the largest (1.3B);
- ``datablations_single_epoch.csv.gz``: Muennighoff et al. (2023) single-epoch runs, two-variable law
  L(N, D) (one curve, Student-t); held out: runs above 7e20 FLOPs (3 runs, up to 9.3e21); the
  extrapolation error is learned by holding out the training runs above 2e20 FLOPs (6 runs at 6e20;
  the largest training scale alone is one run of an IsoFLOP set, no further out than its neighbours).

Every method is fitted on the same training runs (``bayescale.backtest``); bayescale uses default
sampler settings (4 x 1000 + 1000, seed 0) and the Normal likelihood unless noted.
``bayescale_calibrated`` adds the extrapolation error learned from the training runs alone (a refit
without each curve's largest training scale; ``bayescale.backtest.calibrate_extrapolation``);
``bayescale_transfer`` adds the extrapolation error learned from the OTHER datasets' backtests (their
held-out runs; ``bayescale.backtest.transfer_calibration``), leave one dataset out, so no dataset's
held-out runs inform its own bands.
Writes ``reports/backtest.md`` (the table README.md shows) and ``reports/extrapolation_reference.json``
(the extrapolation error of all the datasets' backtests, for new campaigns: ``bayescale.io.load_calibration``).

Usage: ``python studies/backtest.py [--out reports/backtest.md] [--n-boot 200] [--only gadre,pythia]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bayescale import SamplerSettings, load_runs
from bayescale.backtest import backtest, leave_one_out_calibrations, markdown_table, with_calibration
from bayescale.io import atomic_write_bytes, save_calibration

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
SHARED = ROOT.parent / "shared" / "data"


def prepare_data() -> None:
    """Write the derived data files from the shared snapshot when they are missing (see data/README.md)."""
    out = DATA / "pythia_lambada.csv.gz"
    if not out.exists():
        p = pd.read_csv(SHARED / "pythia_evals.csv", low_memory=False)
        p = p[(p.task == "lambada_openai") & (p.metric_name == "ppl") & (p.checkpoint_step == 143000)
              & p.family.isin(["pythia", "pythia-deduped"])].copy()
        p["log_ppl"] = np.log(p["metric"])
        cols = ["family", "model", "params", "params_no_embed", "checkpoint_step", "tokens", "compute_flops",
                "num_fewshot", "task", "metric", "log_ppl"]
        p[cols].sort_values(["family", "num_fewshot", "params"]).to_csv(out, index=False)
    out = DATA / "moe_routed_final.csv.gz"
    if not out.exists():
        m = pd.read_csv(SHARED / "moe_routed_lm.csv")
        last = m[m.groupby(["run_id", "eval_set"]).checkpoint_step.transform("max") == m.checkpoint_step]
        v = last[(last.eval_set == "validation") & (last.top_k == 1) & (last.routing_frequency == 0.5)
                 & (last.seed == 42)]
        v.sort_values(["architecture", "num_experts", "params"]).to_csv(out, index=False)
    out = DATA / "datablations_single_epoch.csv.gz"
    if not out.exists():
        d = pd.read_csv(SHARED / "datablations_data_constrained.csv")
        d[d.epochs == 1].sort_values("compute_flops").to_csv(out, index=False)


def datasets() -> dict:
    """name -> (run table, backtest keyword arguments, description)."""
    return {
        "gadre": (load_runs(DATA / "gadre_loss.csv.gz", scale="compute_flops", groups=["train_dataset", "eval_set"],
                            query="tokens_per_param == 20"),
                  {"holdout": 2}, "Gadre losses M=20, 24 curves, hold out 1.4B+6.9B (top-2)"),
        "pythia": (load_runs(DATA / "pythia_lambada.csv.gz", scale="params", response="log_ppl",
                             groups=["family", "num_fewshot"]),
                   {"holdout": 2}, "Pythia LAMBADA log-ppl, 4 curves, hold out 6.9B+12B (top-2)"),
        "moe": (load_runs(DATA / "moe_routed_final.csv.gz", scale="params", groups=["architecture", "num_experts"]),
                {"holdout": 1}, "routed LMs, val loss, 28 curves, hold out 1.3B (top-1)"),
        "datablations": (load_runs(DATA / "datablations_single_epoch.csv.gz", scale="compute_flops"),
                         {"holdout": 7e20, "law": "chinchilla", "likelihood": "student_t", "calibration_holdout": 2e20},
                         "data-constrained single-epoch, L(N,D), hold out C > 7e20 (3 runs)"),
    }


def pooled_coverage(table: pd.DataFrame) -> pd.DataFrame:
    """Per method, the 90% band coverage over every held-out run of every dataset it scored."""
    rows = []
    for method, part in table.groupby("method", sort=False):
        part = part[part["coverage_90"].notna()]
        covered = float(np.round((part["coverage_90"] * part["n_scored"]).sum()))
        n = int(part["n_scored"].sum())
        rows.append({"method": method, "datasets": len(part), "n_scored": n, "covered_90": int(covered),
                     "coverage_90": covered / n if n else np.nan})
    return pd.DataFrame(rows)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "reports" / "backtest.md"))
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated subset of datasets")
    args = parser.parse_args(argv)
    prepare_data()
    tables, lines, bts, whats = [], [], {}, {}
    for name, (runs, kwargs, what) in datasets().items():
        if args.only and name not in args.only.split(","):
            continue
        t0 = time.perf_counter()
        bts[name] = backtest(runs, settings=SamplerSettings(seed=args.seed), n_boot=args.n_boot, seed=args.seed,
                             **kwargs)
        whats[name] = what
        print(f"\n== {name}: {what}; {time.perf_counter() - t0:.0f} s")
    reference = None
    if len(bts) > 1:  # leave one dataset out: the extrapolation error of the others' backtests
        each, reference = leave_one_out_calibrations(list(bts.values()))
        bts = {name: with_calibration(bt, "bayescale_transfer", cal, seed=args.seed)
               for (name, bt), cal in zip(bts.items(), each)}
    for name, bt in bts.items():
        what = whats[name]
        print(f"\n== {name}: {what}; train {bt.n_train} runs, held out {bt.n_heldout}")
        print(f"bayescale diagnostics: {bt.fit.diagnostics}")
        print(f"extrapolation-error refit: {bt.calibration.diagnostics}")
        for note in bt.notes:
            print("note:", note)
        print(bt.to_markdown(name))
        tables.append(bt.table.assign(dataset=name))
        transfer = next((n for n in bt.notes if n.startswith("bayescale_transfer: ")), None)
        lines.append(f"- `{name}`: {what}; {bt.n_train} training runs, {bt.n_heldout} held out; bayescale "
                     f"max R-hat {bt.fit.diagnostics.max_rhat:.3f}, min bulk ESS {bt.fit.diagnostics.min_ess_bulk:.0f}, "
                     f"{bt.fit.diagnostics.n_divergent} divergences; {bt.calibration} (that refit: max R-hat "
                     f"{bt.calibration.diagnostics.max_rhat:.3f}, min bulk ESS {bt.calibration.diagnostics.min_ess_bulk:.0f}, "
                     f"{bt.calibration.diagnostics.n_divergent} divergences)"
                     + (f"; from the other datasets' backtests ({transfer})" if transfer else ""))
    table = pd.concat(tables, ignore_index=True)
    table = table[["dataset", *[c for c in table.columns if c != "dataset"]]]
    pooled = pooled_coverage(table)
    text = (markdown_table(table) + "\n\nPooled over the datasets (each held-out run counts once):\n\n"
            + markdown_table(pooled) + "\n\n" + "\n".join(lines) + "\n")
    if reference is not None:  # what a new campaign would use: the drift of every dataset here
        path = save_calibration(reference, Path(args.out).with_name("extrapolation_reference.json"))
        text += f"\nFrom all {len(bts)} datasets' backtests ({path.name}): {reference}\n"
    atomic_write_bytes(args.out, text.encode("utf-8"))
    print(f"\n{text}\ntable written: {args.out}")
    return table


if __name__ == "__main__":
    main()
