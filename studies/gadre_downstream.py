"""Downstream study: forecast Gadre et al.'s 1.4B and 6.9B models' task accuracies through their loss.

Data: ``data/gadre_downstream.csv.gz`` (46 tasks x 104 models, top-1 accuracy, ``n_examples``, chance
level, the model's C4 validation loss) and ``data/gadre_loss.csv.gz`` (C4 validation loss per model);
see data/README.md. Fitted: models < 1e9 parameters (4 shapes, all tokens-per-parameter settings).
Held back: the 1.4B and 6.9B models (9 models x 46 tasks).

Chained forecast (bayescale), per train dataset: loss law ``L = E + A/N^alpha + B/D^beta``
(``fit_law(law="chinchilla")`` on C4 validation loss) -> loss -> accuracy sigmoid link, hierarchical over tasks
(``bayescale.metrics.fit_metric(link="loss", groups=["task"])``, beta-binomial on correct answers),
paired posterior draws. Baseline in the same run: two-step point fit (scipy ``curve_fit`` of the same loss
law per train dataset, then of the sigmoid link per dataset x task; delta-method band of the link plus
its residual spread). Prints median absolute error (accuracy points) and 90% band coverage per task
category, the diagnostics (overall, and per task of each link fit: the tasks whose ``level``/``log_k``
miss R-hat <= 1.01 or ESS >= 400 are named, with their data), and the emergence verdicts (thresholds in
loss units) per task.

Usage: ``python studies/gadre_downstream.py [--out reports/gadre_downstream.html] [--seed 0] [--quick]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize

from bayescale import SamplerSettings, fit_law, load_runs
from bayescale.metrics import curve_fit_sigmoid, fit_metric, predict_sigmoid, score_metric_forecasts
from bayescale.metrics_report import write_metric_report

ROOT = Path(__file__).resolve().parents[1]
DOWNSTREAM = ROOT / "data" / "gadre_downstream.csv.gz"
LOSS = ROOT / "data" / "gadre_loss.csv.gz"
HOLDOUT_PARAMS = 1e9
LOSS_COL = "c4_val_loss"


def _chinchilla(X, E, a, alpha, b, beta):
    logn, logd = X
    return E + np.exp(a - alpha * (logn - 20)) + np.exp(b - beta * (logd - 23))


def point_loss_law(train: pd.DataFrame) -> dict:
    """scipy curve_fit of the Chinchilla law per train dataset: {dataset: popt}."""
    out = {}
    for ds, part in train.groupby("train_dataset"):
        X = (np.log(part["params"].to_numpy(float)), np.log(part["tokens"].to_numpy(float)))
        popt, _ = optimize.curve_fit(_chinchilla, X, part["loss"].to_numpy(float), p0=(2.0, 0.0, 0.3, 0.0, 0.3),
                                     bounds=([0, -10, 0.01, -10, 0.01], [5, 10, 2, 10, 2]), maxfev=50000)
        out[ds] = popt
    return out


def _diag_line(cd: pd.DataFrame) -> str:
    """One line: how many cells meet R-hat <= 1.01 and ESS >= 400, and which do not (with their data)."""
    bad = cd[~cd["ok"]].sort_values("max_rhat", ascending=False)
    head = f"{len(cd) - len(bad)} of {len(cd)} meet R-hat <= 1.01 and bulk/tail ESS >= 400"
    return head + "".join(
        f"\n    not: {r.task}: R-hat {r.max_rhat:.3f}, ESS {min(r.min_ess_bulk, r.min_ess_tail):.0f} "
        f"({r.n_x} distinct losses; best model {r.max_frac:.0%} of the chance-to-ceiling range)"
        for r in bad.itertuples())


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "reports" / "gadre_downstream.html"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", nargs="+", default=["c4_original", "rpj", "rw_original"])
    parser.add_argument("--tasks", nargs="*", default=None, help="subset of tasks (default: all 46)")
    parser.add_argument("--quick", action="store_true", help="2 chains x 300 draws (smoke test, not for results)")
    args = parser.parse_args(argv)
    settings = (SamplerSettings(chains=2, warmup=300, draws=300, seed=args.seed) if args.quick
                else SamplerSettings(seed=args.seed))

    down = pd.read_csv(DOWNSTREAM)
    down = down[down["train_dataset"].isin(args.datasets)]
    if args.tasks:
        down = down[down["task"].isin(args.tasks)]
    train, held = down[down["params"] < HOLDOUT_PARAMS], down[down["params"] >= HOLDOUT_PARAMS].copy()
    print(f"link: {len(train)} (model, task) rows, {train['task'].nunique()} tasks, datasets {args.datasets}; "
          f"held back {len(held)} rows ({held['model_id'].nunique()} models)")
    pos = {idx: i for i, idx in enumerate(held.index)}
    cols = {k: np.full(len(held), np.nan) for k in ("bs_median", "bs_lower", "bs_upper", "cf_median", "cf_lower",
                                                   "cf_upper")}
    links, loss_fits, diag_rows, cell_diag = {}, {}, [], []
    for ds in args.datasets:
        loss_runs = load_runs(LOSS, scale="compute_flops",
                              query=f"eval_set == 'c4_val' and params < {HOLDOUT_PARAMS} and train_dataset == '{ds}'")
        t0 = time.perf_counter()
        loss_fit = fit_law(loss_runs, law="chinchilla", settings=settings)
        t1 = time.perf_counter()
        link = fit_metric(train[train["train_dataset"] == ds], x=LOSS_COL, link="loss", groups=["task"],
                          chance="chance_level", n_examples="n_examples", settings=settings)
        t2 = time.perf_counter()
        loss_fits[ds], links[ds] = loss_fit, link
        for name, fit, secs in (("loss law", loss_fit, t1 - t0), ("link", link, t2 - t1)):
            d = fit.diagnostics
            diag_rows.append({"dataset": ds, "fit": name, "seconds": secs, "max_rhat": d.max_rhat,
                              "min_ess_bulk": d.min_ess_bulk, "divergences": d.n_divergent})
            print(f"[{ds}] {name} fit: {secs:.1f} s; {d}")
        cd = link.cell_diagnostics()
        cell_diag.append(cd.assign(train_dataset=ds))
        print(f"[{ds}] link per task: {_diag_line(cd)}")
        # chained forecasts of the held-back models (bayescale) and the two-step point fit (baseline)
        popt = point_loss_law(loss_runs.data)[ds]
        train_groups = dict(iter(train[train["train_dataset"] == ds].groupby("task")))
        for task, part in held[held["train_dataset"] == ds].groupby("task"):
            rows = [pos[i] for i in part.index]
            fc = link.chained_forecast(loss_fit, {"params": part["params"].to_numpy(float),
                                                  "tokens": part["tokens"].to_numpy(float)},
                                       group=task, n_examples=part["n_examples"].to_numpy(), intervals=(0.9,),
                                       seed=args.seed)
            cols["bs_median"][rows] = fc["median"]
            cols["bs_lower"][rows], cols["bs_upper"][rows] = fc["pred_lower_90"], fc["pred_upper_90"]
            tr = train_groups[task]
            ref = float(tr[LOSS_COL].mean())
            res = curve_fit_sigmoid(-(tr[LOSS_COL].to_numpy(float) - ref), tr["metric"].to_numpy(float),
                                    float(tr["chance_level"].iloc[0]))
            if res is None:
                continue
            loss_pred = _chinchilla((np.log(part["params"].to_numpy(float)), np.log(part["tokens"].to_numpy(float))),
                                    *popt)
            pred = predict_sigmoid(res, -(loss_pred - ref), 0.9)
            cols["cf_median"][rows], cols["cf_lower"][rows], cols["cf_upper"][rows] = (pred["median"], pred["lower"],
                                                                                     pred["upper"])
    for k, v in cols.items():
        held[k] = v

    table = []
    for cat, part in [("all", held), *held.groupby("task_category")]:
        table.append({"task_category": cat, "method": "bayescale chained (90% predictive)", **score_metric_forecasts(part, "bs")})
        table.append({"task_category": cat, "method": "two-step curve_fit (90% delta)", **score_metric_forecasts(part, "cf")})
    table = pd.DataFrame(table)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    thr = pd.concat([links[ds].thresholds().assign(train_dataset=ds) for ds in args.datasets], ignore_index=True)
    verdicts = thr.groupby(["level", "verdict"]).size().unstack(fill_value=0)
    print("emergence verdicts (loss thresholds, train dataset x task cells):\n" + verdicts.to_string())
    notes = [f"Emergence curves shown for train dataset {args.datasets[0]}; thresholds table covers all datasets.",
             f"Fitted on models < {HOLDOUT_PARAMS:.0e} params; held back {len(held)} (model, task) rows.",
             "Thresholds are losses (C4 validation): the metric rises as the loss falls; 'lower_bound' of a task "
             "that has not emerged is the smallest fitted loss."]
    diag = pd.DataFrame(diag_rows)
    cell_diag = pd.concat(cell_diag, ignore_index=True).sort_values("max_rhat", ascending=False)
    print(diag.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    ds0 = args.datasets[0]
    path = write_metric_report(links[ds0], args.out, title="bayescale: Gadre et al. downstream accuracy via loss",
                               tables={"Diagnostics per fit": diag,
                                       "Link diagnostics per task (level, log_k; max_frac: best model's "
                                       "fraction of the chance-to-ceiling range)": cell_diag,
                                       "Held-back 1.4B / 6.9B: chained vs two-step": table,
                                       "Emergence verdicts (counts)": verdicts, "Thresholds": thr},
                               extra_fits={f"loss law (C4 val, {ds0})": loss_fits[ds0]}, notes=notes)
    print(f"report written: {path}")
    return table


if __name__ == "__main__":
    main()
