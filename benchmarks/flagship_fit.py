"""Benchmark: wall time of the flagship fit to its first forecast, with and without JIT compilation.

Flagship fit: Gadre et al. losses (``data/gadre_loss.csv.gz``), M = 20, models < 1e9 params (96 runs,
24 curves, train_dataset x eval_set), scale compute_flops, default ``SamplerSettings``.

Each case runs in a fresh Python process, so the clock starts at process start:
- cold: an empty compile cache (everything JIT-compiled in the process);
- warm: a second process with the same on-disk compile cache (what a user sees on every later run);
and, inside the warm process, a second fit of the same data (the process is already warmed up).
For each: seconds from process start to the first forecast, ``import bayescale``, ``fit_law``,
of which sampling (compile + warmup + draws) and JAX compilation; min bulk ESS per second of
sampling with and without compilation; diagnostics. In the same run, the alternative: a
per-curve ``scipy.optimize.curve_fit`` (``bayescale.baselines``). No timing is asserted.

Usage: ``python benchmarks/flagship_fit.py``  (about 1 minute on 2 cores)
"""

import time

T0 = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "gadre_loss.csv.gz"
QUERY = "tokens_per_param == 20 and params < 1e9"
GROUPS = ["train_dataset", "eval_set"]
TARGET_S = 15.0


def child() -> None:
    """One process: import, load, fit, forecast (twice); print a JSON line of timings."""
    import_start = time.perf_counter()
    import bayescale
    imported = time.perf_counter()
    out = {"import": imported - import_start, "interpreter": import_start - T0}
    for i in (1, 2):
        t = time.perf_counter()
        runs = bayescale.load_runs(DATA, scale="compute_flops", groups=GROUPS, query=QUERY)
        fit = bayescale.fit_law(runs, settings=bayescale.SamplerSettings(seed=0))
        fc = fit.forecast([1e21, 1e22], group=("rpj", "c4_val"))
        done = time.perf_counter()
        d, tm = fit.diagnostics, fit.timings
        out[f"fit{i}"] = {
            "to_first_forecast": done - T0 if i == 1 else None, "load_fit_forecast": done - t,
            "sampling": tm["sampling"], "compile": tm["compile"], "max_rhat": d.max_rhat,
            "min_ess_bulk": d.min_ess_bulk, "min_ess_tail": d.min_ess_tail, "divergences": d.n_divergent,
            "treedepth_hits": d.n_max_treedepth, "median_1e22": float(fc["median"].iloc[1]),
            "ess_per_s": d.min_ess_bulk / tm["sampling"],
            "ess_per_s_no_compile": d.min_ess_bulk / max(tm["sampling"] - tm["compile"], 1e-9)}
    print("RESULT " + json.dumps(out))


def run_child(cache: str) -> dict:
    env = {**os.environ, "BAYESCALE_COMPILE_CACHE": cache}
    proc = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def curve_fit_baseline() -> tuple[float, int]:
    import numpy as np
    import pandas as pd

    from bayescale.baselines import curve_fit_group
    df = pd.read_csv(DATA).query(QUERY)
    t = time.perf_counter()
    n = sum(1 for _, part in df.groupby(GROUPS) if curve_fit_group(np.log(part["compute_flops"].to_numpy(float)), part["loss"].to_numpy(float)) is not None)
    return time.perf_counter() - t, n


def main() -> None:
    print(f"cpu cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as cache:
        cold, warm = run_child(cache), run_child(cache)
    rows = [("cold process (empty compile cache)", cold["fit1"], cold["import"]),
            ("warm process (on-disk compile cache)", warm["fit1"], warm["import"]),
            ("second fit in the warm process", warm["fit2"], None)]
    print(f"\n{'case':40s} {'start->forecast':>15s} {'import':>7s} {'fit+fc':>7s} {'sampling':>9s} "
          f"{'compile':>8s} {'minESS':>7s} {'ESS/s':>7s} {'ESS/s-JIT':>9s} {'R-hat':>6s} {'div':>4s}")
    for name, r, imp in rows:
        start = f"{r['to_first_forecast']:.1f}" if r["to_first_forecast"] else "-"
        print(f"{name:40s} {start:>15s} {(f'{imp:.1f}' if imp else '-'):>7s} {r['load_fit_forecast']:7.1f} "
              f"{r['sampling']:9.1f} {r['compile']:8.1f} {r['min_ess_bulk']:7.0f} {r['ess_per_s']:7.0f} "
              f"{r['ess_per_s_no_compile']:9.0f} {r['max_rhat']:6.3f} {r['divergences']:4d}")
    cf_s, n_ok = curve_fit_baseline()
    print(f"\nalternative, same run: scipy curve_fit per curve: {n_ok}/24 curves fitted in {cf_s:.2f} s "
          "(one point estimate per curve, no uncertainty)")
    for name, r in (("cold", cold["fit1"]), ("warm", warm["fit1"])):
        verdict = "met" if r["to_first_forecast"] <= TARGET_S else "NOT met"
        print(f"target: first forecast within {TARGET_S:.0f} s ({name}): {r['to_first_forecast']:.1f} s -> {verdict}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    child() if "--child" in sys.argv else main()
