"""Emergence study: benchmark and "emergent" BIG-bench task scores vs training compute across model families.

Data: ``data/obsscaling_base_llm.csv.gz`` (Ruan et al. 2024, Observational Scaling Laws; see data/README.md):
the 8 base benchmarks (TruthfulQA left out: no chance level) and the 2-shot emergent tasks of Wei et al.
(exact match / accuracy; the BLEU variant of ipa_transliterate, on a 0-100 scale, is left out). Rows
without a compute estimate are dropped. Fitted: models with C <= 8.4e22 FLOPs (Llama-2-7B, the paper's
cutoff); forecast: the larger ones.

bayescale: ``fit_metric(x="compute_flops", groups=["family", "task"])`` (family x task crossed, zero-sum
effects; Beta likelihood, as the test-set sizes are not in the data); forecasts of held-out models of
families not in the fitted set come from the hierarchy. Baseline in the same run: per-task scipy
``curve_fit`` of the same sigmoid in log compute (no family effects), delta-method band plus residual
spread. Prints median absolute error (score points) and 90% band coverage per task group and per task,
the diagnostics (overall, per task, and the family x task cells that miss R-hat <= 1.01 or ESS >= 400,
with their data), and per-task emergence thresholds (FLOPs) with verdicts.

Usage: ``python studies/obsscaling_emergence.py [--out reports/obsscaling_emergence.html] [--seed 0] [--quick]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bayescale import SamplerSettings
from bayescale.metrics import curve_fit_sigmoid, fit_metric, predict_sigmoid, score_metric_forecasts
from bayescale.metrics_report import write_metric_report

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "obsscaling_base_llm.csv.gz"
CUTOFF = 8.4e22
SOURCES = {"base_llm_benchmark_eval.csv": "benchmark", "base_llm_emergent_capability_eval.csv": "emergent"}


def load() -> pd.DataFrame:
    """Benchmark + emergent tasks with a chance level, a [0, 1] metric and a compute estimate."""
    df = pd.read_csv(DATA)
    df = df[df["source_file"].isin(SOURCES) & (df["metric_name"] != "bleu (2-shot)")].copy()
    df = df.dropna(subset=["compute_flops", "chance_level", "metric"])
    df = df[(df["metric"] >= 0) & (df["metric"] <= 1)]
    df["task_group"] = df["source_file"].map(SOURCES)
    return df.reset_index(drop=True)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "reports" / "obsscaling_emergence.html"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 chains x 300 draws (smoke test, not for results)")
    args = parser.parse_args(argv)
    settings = (SamplerSettings(chains=2, warmup=300, draws=300, seed=args.seed) if args.quick
                else SamplerSettings(seed=args.seed))

    df = load()
    train, held = df[df["compute_flops"] <= CUTOFF], df[df["compute_flops"] > CUTOFF].copy()
    print(f"fitting {len(train)} rows ({train['model'].nunique()} models, {train['family'].nunique()} families, "
          f"{train['task'].nunique()} tasks); holding back {len(held)} rows ({held['model'].nunique()} models, "
          f"C {held['compute_flops'].min():.2g}-{held['compute_flops'].max():.2g})")
    t0 = time.perf_counter()
    mfit = fit_metric(train, x="compute_flops", groups=["family", "task"], chance="chance_level", settings=settings)
    print(f"fit: {time.perf_counter() - t0:.1f} s\n  diagnostics: {mfit.diagnostics}")
    cells = mfit.cell_diagnostics()
    per_task = cells.groupby("task").agg(max_rhat=("max_rhat", "max"), min_ess_bulk=("min_ess_bulk", "min"),
                                         min_ess_tail=("min_ess_tail", "min"), cells=("ok", "size"),
                                         cells_not_ok=("ok", lambda s: int((~s).sum()))).reset_index()
    bad = cells[~cells["ok"]].sort_values("max_rhat", ascending=False)
    print(f"per task (family x task cells' level, log_k): {len(cells) - len(bad)} of {len(cells)} cells meet "
          f"R-hat <= 1.01 and bulk/tail ESS >= 400\n"
          + per_task.to_string(index=False, float_format=lambda v: f"{v:.3f}")
          + "".join(f"\n    not: {r.family}|{r.task}: R-hat {r.max_rhat:.3f}, ESS "
                    f"{min(r.min_ess_bulk, r.min_ess_tail):.0f} ({r.n_x} distinct computes; best model "
                    f"{r.max_frac:.0%} of the chance-to-ceiling range)" for r in bad.head(30).itertuples())
          + (f"\n    ... and {len(bad) - 30} more (report table)" if len(bad) > 30 else ""))

    out = {k: np.full(len(held), np.nan) for k in ("bs_median", "bs_lower", "bs_upper", "cf_median", "cf_lower",
                                                   "cf_upper")}
    pos = {idx: i for i, idx in enumerate(held.index)}
    for (fam, task), part in held.groupby(["family", "task"]):
        fc = mfit.forecast(part["compute_flops"].to_numpy(float), group=(fam, task), intervals=(0.9,),
                           seed=args.seed)
        rows = [pos[i] for i in part.index]
        out["bs_median"][rows] = fc["median"]
        out["bs_lower"][rows], out["bs_upper"][rows] = fc["pred_lower_90"], fc["pred_upper_90"]
    for task, part in held.groupby("task"):
        tr = train[train["task"] == task]
        ref = float(np.log(tr["compute_flops"]).mean())
        res = curve_fit_sigmoid(np.log(tr["compute_flops"].to_numpy(float)) - ref, tr["metric"].to_numpy(float),
                                float(tr["chance_level"].iloc[0]))
        if res is None:
            continue
        pred = predict_sigmoid(res, np.log(part["compute_flops"].to_numpy(float)) - ref, 0.9)
        rows = [pos[i] for i in part.index]
        out["cf_median"][rows], out["cf_lower"][rows], out["cf_upper"][rows] = (pred["median"], pred["lower"],
                                                                              pred["upper"])
    for k, v in out.items():
        held[k] = v

    table = []
    for name, part in [("all", held), *held.groupby("task_group"), *held.groupby("task")]:
        table.append({"tasks": name, "method": "bayescale (90% predictive)", **score_metric_forecasts(part, "bs")})
        table.append({"tasks": name, "method": "curve_fit per task (90% delta)", **score_metric_forecasts(part, "cf")})
    table = pd.DataFrame(table)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    # per-task emergence, population level over families (a new family of the same task)
    thr = []
    for task in sorted(train["task"].unique()):
        fam_new = {"family": "(new family)", "task": task}
        t = mfit.thresholds(groups=[fam_new])
        t["task"] = task
        t["p_emerged_by_1e24"] = [mfit.emergence_probability(1e24, level=f, group=fam_new)[0] for f in (0.5, 0.1)]
        thr.append(t)
    thr = pd.concat(thr, ignore_index=True).drop(columns=["family"])
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(thr[["task", "level", "verdict", "median", "lower_90", "upper_90", "lower_bound", "p_above_lower_bound",
                   "p_emerged_by_1e24"]].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    largest = train.groupby("task")["family"].agg(lambda s: s.value_counts().index[0])
    panels = [(largest[t], t) for t in sorted(train["task"].unique())]
    title = "bayescale: emergence of benchmark and BIG-bench tasks (ObsScaling)"
    path = write_metric_report(mfit, args.out, title=title,
                               tables={"Held-out models (C > 8.4e22): bayescale vs curve_fit": table,
                                       "Diagnostics per task (family x task cells' level, log_k)": per_task,
                                       "Cells missing R-hat <= 1.01 or ESS >= 400": bad,
                                       "Per-task thresholds (new family of the task)": thr},
                               groups=panels, extend_to=3e25,
                               notes=[f"Fitted on C <= {CUTOFF:.2g} FLOPs; panels: each task's best-covered family.",
                                      "Thresholds of a new family come from the hierarchy (family spread included)."])
    print(f"report written: {path}")
    return table


if __name__ == "__main__":
    main()
