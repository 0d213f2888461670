"""Benchmark: what one NUTS leapfrog step costs on a large table, against one gradient of the log density.

For each size and precision, on whatever device JAX sees, the table of ``large_tables.py`` (100
curves, rows/100 scales each):

- gradient: the model's log density and its gradient for 4 chains at once (vmapped, as the
  vectorized sampler evaluates them), timed inside one compiled loop of ``--evals`` evaluations, so
  no Python dispatch is counted; compile excluded;
- step: two short ``fit_law`` runs of the same seed (vectorized chains; ``--warmup`` + ``--draws``, then
  ``--warmup`` + 2 x ``--draws``). Their warmups and first draws are identical, so the difference of
  their sampling times (compilation excluded) over the difference of their leapfrog steps is the
  cost of a step. The vectorized chains step together, so an iteration counts the largest tree of
  the 4. Trees are capped at ``--max-tree-depth`` (default 6: 63 steps), which bounds the run time
  and leaves the cost of a step as it is.

A step that costs many gradients means the sampler's own work (tree building, many small kernels)
sets the speed, not the arithmetic over rows: on a GPU that is what to shrink for the 1e6-row
target of issue #6. No timing is asserted.

Usage: ``python benchmarks/step_cost.py`` (1e3 rows, CPU, ~1 min);
``python benchmarks/step_cost.py --rows 1e5,1e6 --precision float64,float32`` (GPU)
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import jax
import numpy as np
import numpyro
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import initialize_model

from bayescale import SamplerSettings, fit_law, load_runs
from bayescale.model import build_model, model_data
from bayescale.simulate import simulate_runs
from bayescale.spec import ModelSpec

N_CURVES, N_CHAINS = 100, 4


def gradient_seconds(runs, precision: str, evals: int) -> float:
    """Seconds per evaluation of the 4-chain log density and gradient, inside one compiled loop."""
    numpyro.enable_x64(precision == "float64")
    spec = ModelSpec.from_runs(runs)
    kwargs = {k: v for k, v in model_data(runs, spec).items() if v is not None}
    model = build_model(spec)
    info = initialize_model(jax.random.PRNGKey(0), model, dynamic_args=True, model_kwargs=kwargs)
    flat, unravel = ravel_pytree(info.param_info.z)
    start = flat[None] + 0.01 * jax.random.normal(jax.random.PRNGKey(1), (N_CHAINS, flat.size), flat.dtype)

    @jax.jit
    def loop(z, kw):
        grad = jax.vmap(jax.value_and_grad(lambda f: info.potential_fn(**kw)(unravel(f))))

        def body(_, z):
            _, g = grad(z)
            return z - 1e-12 * g  # depends on the gradient, so no evaluation is skipped

        return jax.lax.fori_loop(0, evals, body, z)

    jax.block_until_ready(loop(start, kwargs))  # compile
    t0 = time.perf_counter()
    jax.block_until_ready(loop(start, kwargs))
    return (time.perf_counter() - t0) / evals


def step_seconds(runs, precision: str, warmup: int, draws: int, depth: int) -> tuple[float, float, float]:
    """(seconds per leapfrog step, steps per iteration, sampling seconds of the longer fit)."""
    out = []
    for n in (draws, 2 * draws):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_law(runs, settings=SamplerSettings(warmup=warmup, draws=n, precision=precision,
                                                         chain_method="vectorized", posterior_predictive=False,
                                                         max_tree_depth=depth))
        steps = np.asarray(fit.tree.sample_stats["n_steps"].values).max(axis=0)  # per iteration, largest chain
        out.append((fit.timings["sampling"] - fit.timings["compile"], steps))
    (t1, s1), (t2, s2) = out
    if not np.array_equal(s1, s2[:draws]):
        print("  note: the two fits' first draws differ, so the step cost below is approximate")
    extra = s2[draws:]
    return (t2 - t1) / extra.sum(), float(extra.mean()), t2


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1e3")
    parser.add_argument("--precision", default="float64")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--evals", type=int, default=200)
    parser.add_argument("--max-tree-depth", type=int, default=6)
    args = parser.parse_args(argv)
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {dev.device_kind} ({platform.node()}); jax {jax.__version__}; "
          f"{N_CHAINS} chains x ({args.warmup} + {args.draws}); {N_CURVES} curves")
    print(f"{'rows':>9} {'precision':>9} {'gradient ms':>11} {'step ms':>8} {'step/grad':>9} "
          f"{'steps/iter':>10} {'sampling s':>10}")
    for rows in (int(float(r)) for r in args.rows.split(",")):
        df, _ = simulate_runs(N_CURVES, np.geomspace(1e18, 1e21, max(rows // N_CURVES, 3)), noise_sd=0.01, seed=0)
        runs = load_runs(df, scale="compute_flops", groups=["family"])
        for precision in args.precision.split(","):
            grad = gradient_seconds(runs, precision, args.evals)
            step, per_iteration, run_s = step_seconds(runs, precision, args.warmup, args.draws,
                                                      args.max_tree_depth)
            print(f"{len(df):>9} {precision:>9} {1e3 * grad:>11.3f} {1e3 * step:>8.3f} {step / grad:>9.1f} "
                  f"{per_iteration:>10.0f} {run_s:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
