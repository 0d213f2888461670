"""Inference engine: NumPyro NUTS on JAX, results as an ArviZ DataTree, and diagnostics.

The engine knows models and arrays, not reports. x64 is switched on here (``numpyro.enable_x64``)
because the law's ridge needs float64 on CPU; seeds are explicit (``SamplerSettings.seed``).

Usage: ``tree, timings = run_nuts(model, data, settings, coords, dims, cache_key=structure_key(spec))``
"""

from __future__ import annotations

import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import arviz_base
import arviz_stats
import jax
import numpy as np
import numpyro
import pandas as pd
from jax.flatten_util import ravel_pytree
from numpyro.infer import init_to_mean, init_to_median
from numpyro.infer.hmc import hmc
from numpyro.infer.util import initialize_model

from .spec import SamplerSettings

__all__ = ["Diagnostics", "run_nuts", "run_nuts_batched", "run_svi", "PARETO_K_MAX", "ConvergenceWarning", "RHAT_MAX", "ESS_MIN", "diagnose", "warn_if_bad"]

RHAT_MAX = 1.01
ESS_MIN = 400
#: Largest PSIS Pareto k of an approximate (SVI) posterior that we call reliable (Yao et al. 2018).
PARETO_K_MAX = 0.7


class ConvergenceWarning(UserWarning):
    """The sampler's diagnostics say the posterior may not be trustworthy."""


@dataclass(frozen=True)
class Diagnostics:
    """R-hat, bulk/tail ESS per variable, divergences and tree-depth hits.

    Usage: ``fit.diagnostics.ok``, ``fit.diagnostics.table``, ``print(fit.diagnostics)``
    """

    table: pd.DataFrame  # one row per scalar posterior quantity: ess_bulk, ess_tail, r_hat
    n_divergent: int
    n_max_treedepth: int
    n_draws: int
    max_tree_depth: int
    pareto_k: float | None = None  # approximate fits (engine="svi"): PSIS k of the approximation; None for NUTS

    @property
    def max_rhat(self) -> float:
        return float(self.table["r_hat"].max())

    @property
    def min_ess_bulk(self) -> float:
        return float(self.table["ess_bulk"].min())

    @property
    def min_ess_tail(self) -> float:
        return float(self.table["ess_tail"].min())

    def problems(self) -> list[str]:
        """Plain-words description of each problem, with a suggested action. Usage: ``diag.problems()``."""
        out = []
        if self.pareto_k is not None:
            if not self.pareto_k <= PARETO_K_MAX:
                out.append(f"The SVI approximation is unreliable (PSIS Pareto k = {self.pareto_k:.2f} > {PARETO_K_MAX}): "
                           "its bands may be too narrow or shifted. Refit with NUTS (the default engine) before "
                           "relying on them.")
            return out
        if not np.isfinite(self.max_rhat) or self.max_rhat > RHAT_MAX:
            worst = self.table["r_hat"].fillna(np.inf).idxmax()
            out.append(f"R-hat is {self.max_rhat:.3f} for {worst} (> {RHAT_MAX}): the chains disagree, so the "
                       "posterior is not reliable. Run longer (more warmup and draws), or check the priors "
                       "and the data for several competing fits.")
        if not np.isfinite(self.min_ess_bulk) or self.min_ess_bulk < ESS_MIN or self.min_ess_tail < ESS_MIN:
            worst = self.table["ess_bulk"].fillna(-1).idxmin()
            out.append(f"Effective sample size is low (bulk {self.min_ess_bulk:.0f} for {worst}, tail "
                       f"{self.min_ess_tail:.0f}; want >= {ESS_MIN}): bands and intervals are noisy. "
                       "Increase draws.")
        if self.n_divergent:
            out.append(f"{self.n_divergent} of {self.n_draws} draws diverged: the sampler missed part of the "
                       "posterior. Raise target_accept (the default is 0.99; try 0.995), use "
                       "likelihood='student_t' for outliers, or tighten the priors; with few runs per curve "
                       "and few curves the spread between curves may not be identified (pool fewer factors).")
        if self.n_max_treedepth:
            out.append(f"{self.n_max_treedepth} of {self.n_draws} draws hit the maximum tree depth "
                       f"({self.max_tree_depth}): sampling is inefficient. Raise max_tree_depth.")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()

    def __str__(self) -> str:
        if self.pareto_k is not None:
            return (f"approximate posterior (SVI, full-rank Gaussian): PSIS Pareto k {self.pareto_k:.2f} "
                    f"(reliable <= {PARETO_K_MAX}); R-hat and ESS do not apply"
                    + "".join("\n  WARNING: " + p for p in self.problems()))
        head = (f"max R-hat {self.max_rhat:.3f}, min bulk ESS {self.min_ess_bulk:.0f}, "
                f"min tail ESS {self.min_ess_tail:.0f}, divergences {self.n_divergent}, "
                f"max tree depth hits {self.n_max_treedepth}")
        return head + "".join("\n  WARNING: " + p for p in self.problems())


def diagnose(tree, settings: SamplerSettings, pareto_k: float | None = None) -> Diagnostics:
    """Diagnostics from ArviZ's summary and the sampler's per-draw stats. Usage: ``diagnose(tree, settings)``.

    ``pareto_k``: an approximate (SVI) fit's PSIS k; its draws are independent, so there is no
    sampler to diagnose and the k decides (``Diagnostics.problems``).
    """
    if pareto_k is not None:
        n = int(tree.posterior.sizes["chain"] * tree.posterior.sizes["draw"])
        return Diagnostics(table=pd.DataFrame(columns=["ess_bulk", "ess_tail", "r_hat"], dtype=float), n_divergent=0,
                           n_max_treedepth=0, n_draws=n, max_tree_depth=settings.max_tree_depth,
                           pareto_k=float(pareto_k))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = arviz_stats.summary(tree, kind="diagnostics", round_to="none")
    table = table[["ess_bulk", "ess_tail", "r_hat"]].astype(float)
    steps = np.asarray(tree.sample_stats["n_steps"].values)
    return Diagnostics(
        table=table,
        n_divergent=int(np.sum(tree.sample_stats["diverging"].values)),
        n_max_treedepth=int(np.sum(steps >= 2 ** settings.max_tree_depth - 1)),
        n_draws=int(steps.size),
        max_tree_depth=settings.max_tree_depth,
    )


def _use_compile_cache() -> None:
    """Keep compiled kernels on disk so later processes skip most JIT time.

    Uses ``$BAYESCALE_COMPILE_CACHE`` or ``~/.cache/bayescale/jax``; set the variable to ``0``
    to disable; a cache directory the user configured in JAX is left alone.
    """
    where = os.environ.get("BAYESCALE_COMPILE_CACHE", str(Path.home() / ".cache" / "bayescale" / "jax"))
    if where == "0" or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


#: Compiled samplers by (model structure, settings): refits on data of the same shape reuse them.
_PROGRAMS: dict = {}


#: Parallel chains on CPU (one XLA host device each) grew resident memory by ~50 MB/s on a 100,000-row
#: table until the process was killed (flat at 10,000 rows; vectorized chains flat at both; the same
#: with two host devices, with ``jax.shard_map`` and with one ``jax.jit`` call per device; flat with
#: one device). So on CPU "auto" runs the chains of tables this large on one device ("sequential":
#: the calls are dispatched at once, and memory stays flat; 54 s against 107 s for vectorized chains
#: on 1e5 rows with 100 + 100 draws), and an explicit "parallel" warns. The threshold lies between
#: the two measured sizes (benchmarks/HISTORY.md).
CPU_PARALLEL_MEMORY_ROWS = 50_000


def _cpu_table_too_large_for_parallel(n_rows: int) -> bool:
    return jax.default_backend() == "cpu" and n_rows >= CPU_PARALLEL_MEMORY_ROWS


def _warn_cpu_memory(method: str, n_rows: int) -> None:
    if method == "parallel" and _cpu_table_too_large_for_parallel(n_rows):
        warnings.warn(f"{n_rows:,} runs with parallel chains on CPU: at 100,000 runs their memory grew by about "
                      "50 MB/s until the process was killed. Use SamplerSettings(chain_method='auto') (or "
                      "'sequential': flat memory) or a GPU.", ResourceWarning, stacklevel=4)


def _chain_method(settings: SamplerSettings, n_rows: int) -> str:
    """The chain method "auto" stands for: parallel with one device per chain (on CPU, sequential for
    tables of >= ``CPU_PARALLEL_MEMORY_ROWS`` runs), else vectorized. Usage: ``_chain_method(settings, len(y))``"""
    if settings.chain_method != "auto":
        return settings.chain_method
    if _cpu_table_too_large_for_parallel(n_rows):
        return "sequential"
    return "parallel" if jax.local_device_count() >= settings.chains > 1 else "vectorized"


#: Chains start at the prior mean moved by Uniform(-INIT_JITTER, INIT_JITTER) in every unconstrained
#: coordinate. The mean, not the median of 15 prior draws as before: drawing from the prior inside the
#: sampling program doubled its compile time (flagship: 5.8 s vs 2.8 s), most of a cold start.
INIT_JITTER = 1.0
#: ``SamplerSettings(init="mode")``: Adam steps (learning rate ``MODE_LR``, unconstrained space) from the
#: prior mean to the posterior mode.
MODE_STEPS = 1500
MODE_LR = 0.02
#: Hessian columns computed at once for ``init="mode"`` (bounds memory: each holds the table's intermediates).
HESSIAN_BATCH = 16


def _jittered(z: dict, key, potential_fn) -> dict:
    """``z`` (unconstrained) plus Uniform(-INIT_JITTER, INIT_JITTER) noise, so that chains start apart;
    ``z`` itself where the moved point has no finite log density."""
    flat, unravel = ravel_pytree(z)
    moved = flat + jax.random.uniform(key, flat.shape, flat.dtype, -INIT_JITTER, INIT_JITTER)
    return unravel(jax.numpy.where(jax.numpy.isfinite(potential_fn(unravel(moved))), moved, flat))


def _mode_start(z: dict, key, potential_fn) -> tuple[dict, jax.Array]:
    """(start, inverse metric diagonal) for ``init="mode"``: the posterior mode (Adam from ``z``), moved
    by one draw of the Laplace approximation with variances 1 / the Hessian's diagonal there (unit
    variance where that is not positive and finite); ``z`` itself if the search ends where the log
    density is not finite."""
    jnp = jax.numpy
    flat, unravel = ravel_pytree(z)
    potential = lambda x: potential_fn(unravel(x))  # noqa: E731
    grad = jax.grad(potential)

    def adam(carry, i):
        x, m, v = carry
        g = grad(x)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g ** 2
        step = MODE_LR * (m / (1 - 0.9 ** (i + 1))) / (jnp.sqrt(v / (1 - 0.999 ** (i + 1))) + 1e-8)
        return (x - step, m, v), None

    (mode, _, _), _ = jax.lax.scan(adam, (flat, jnp.zeros_like(flat), jnp.zeros_like(flat)), jnp.arange(MODE_STEPS))
    mode = jnp.where(jnp.all(jnp.isfinite(mode)) & jnp.isfinite(potential(mode)), mode, flat)
    hvp = lambda v: jax.jvp(grad, (mode,), (v,))[1]  # noqa: E731  (one Hessian column)
    curvature = jax.lax.map(lambda e: e @ hvp(e), jnp.eye(flat.size, dtype=flat.dtype), batch_size=HESSIAN_BATCH)
    inverse = jnp.where(jnp.isfinite(curvature) & (curvature > 0), 1.0 / curvature, 1.0)
    moved = mode + jnp.sqrt(inverse) * jax.random.normal(key, mode.shape, mode.dtype)
    return unravel(jnp.where(jnp.isfinite(potential(moved)), moved, mode)), inverse


def _one_chain(model, settings: SamplerSettings, tick):
    """A pure function (rng_key, model kwargs) -> (samples, diverging, n_steps) for one NUTS chain.

    Initialisation (the prior mean, jittered: ``_jittered``; or the mode: ``_mode_start``), warmup with
    step-size and diagonal (or dense) mass-matrix adaptation, and the draws, all in one traceable function
    of the data: it can be jitted once and reused, vmapped over data sets, or pmapped over chains.
    """
    def run(rng_key, kwargs):
        key_init, key_jitter, key_run = jax.random.split(rng_key, 3)
        info = initialize_model(key_init, model, init_strategy=init_to_mean, dynamic_args=True, model_kwargs=kwargs)
        init_kernel, sample_kernel = hmc(potential_fn_gen=info.potential_fn, algo="NUTS")
        dense = [tuple(sorted(info.param_info.z))] if settings.dense_mass else []
        potential, metric = info.potential_fn(**kwargs), {}
        if settings.init == "mode":
            start, inverse = _mode_start(info.param_info.z, key_jitter, potential)
            if not settings.dense_mass:
                metric = {"inverse_mass_matrix": inverse}
        else:
            start = _jittered(info.param_info.z, key_jitter, potential)
        state = init_kernel(start, settings.warmup, target_accept_prob=settings.target_accept, dense_mass=dense,
                            trajectory_length=None, max_tree_depth=settings.max_tree_depth, model_kwargs=kwargs,
                            regularize_mass_matrix=settings.regularize_mass_matrix, rng_key=key_run, **metric)

        def step(s, i):  # one loop over warmup and draws: the NUTS kernel is traced (and compiled) once
            s = tick(i, sample_kernel(s, model_kwargs=kwargs))
            return s, (s.z, s.diverging, s.num_steps)

        _, out = jax.lax.scan(step, state, jax.numpy.arange(settings.warmup + settings.draws))
        z, diverging, n_steps = jax.tree.map(lambda x: x[settings.warmup:], out)
        return jax.vmap(info.postprocess_fn(**kwargs))(z), diverging, n_steps

    return run


def _progress(settings: SamplerSettings, n_chains_total: int):
    """(tick, close): ``tick(i, state)`` reports every 1% of iterations to one tqdm bar when asked."""
    if not settings.progress_bar:
        return (lambda i, s: s), (lambda: None)
    from tqdm.auto import tqdm

    total = settings.warmup + settings.draws
    every = max(1, total // 100)
    bar = tqdm(total=total * n_chains_total, desc="NUTS (warmup + draws, all chains)", unit="it")

    def tick(i, s):
        jax.lax.cond((i + 1) % every == 0, lambda: jax.debug.callback(lambda: bar.update(every)), lambda: None)
        return s

    return tick, bar.close


def _program(model, settings: SamplerSettings, method: str, batched: bool, cache_key, tick):
    """The compiled sampler: f(keys, kwargs); keys (chains[, batch], 2); cached by ``cache_key``."""
    key = None
    if cache_key is not None and not settings.progress_bar:
        key = (cache_key, settings.chains, settings.warmup, settings.draws, settings.target_accept,
               settings.max_tree_depth, settings.dense_mass, settings.regularize_mass_matrix, settings.precision,
               settings.init, method, batched)
        if key in _PROGRAMS:
            return _PROGRAMS[key]
    chain = _one_chain(model, settings, tick)
    per_chain = jax.vmap(chain, in_axes=(0, 0)) if batched else chain
    if method == "parallel":
        program = jax.pmap(per_chain, in_axes=(0, None))
    elif method == "vectorized":
        program = jax.jit(jax.vmap(per_chain, in_axes=(0, None)))
    elif method == "sequential":
        jitted = jax.jit(per_chain)

        def program(keys, kwargs):
            outs = [jitted(k, kwargs) for k in keys]
            return jax.tree.map(lambda *xs: jax.numpy.stack(xs), *outs)
    else:
        raise ValueError(f"chain_method must be auto, parallel, vectorized or sequential, got {method!r}")
    if key is not None:
        _PROGRAMS[key] = program
    return program


def _sample(model, kwargs: dict, settings: SamplerSettings, cache_key, batch: int | None):
    """Run the compiled sampler; outputs by chain first: samples (chains[, batch], draws, ...)."""
    if settings.regularize_mass_matrix is None or settings.init == "auto":
        raise ValueError("settings.regularize_mass_matrix or init is undecided: decide them first with "
                         "settings.resolved(loss_law=..., runs_per_curve=...) (fit_law and fit_metric do)")
    numpyro.enable_x64(settings.precision == "float64")
    _use_compile_cache()
    n_rows = int(np.size(kwargs.get("y", ())))
    method = _chain_method(settings, n_rows)
    _warn_cpu_memory(method, n_rows)
    tick, close = _progress(settings, settings.chains * (batch or 1))
    program = _program(model, settings, method, batch is not None, cache_key, tick)
    keys = jax.random.split(jax.random.PRNGKey(settings.seed), settings.chains)
    if batch is not None:
        keys = jax.vmap(lambda k: jax.random.split(k, batch))(keys)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    with _compile_clock() as compile_s:
        t0 = time.perf_counter()
        try:
            out = jax.device_get(program(keys, kwargs))
        finally:
            close()
        timings = {"sampling": time.perf_counter() - t0}
    timings["compile"] = compile_s[0]
    return out, timings


def _tree(samples: dict, diverging, n_steps, y, coords: dict, dims: dict):
    """DataTree of draws; ``sample_stats`` only for a sampler that has them (not SVI)."""
    groups = {"posterior": {k: np.asarray(v) for k, v in samples.items()}}
    if diverging is not None:
        groups["sample_stats"] = {"diverging": np.asarray(diverging), "n_steps": np.asarray(n_steps)}
    if y is not None:
        groups["observed_data"] = {"obs": np.asarray(y)}
    return arviz_base.from_dict(groups, coords=coords, dims={**dims, "obs": ["run"]})


def run_nuts(model, data: dict, settings: SamplerSettings, coords: dict, dims: dict, cache_key=None):
    """Sample ``model(**data)`` with NUTS; return (DataTree, timings in seconds).

    The DataTree holds ``posterior``, ``sample_stats`` (``diverging``, ``n_steps``) and
    ``observed_data`` (``obs``, when ``data`` has ``y``). ``timings``: ``sampling`` (compilation +
    warmup + draws, waited for: JAX runs asynchronously) and ``compile`` (the part JAX reports as
    tracing, lowering and compiling). With a ``cache_key`` (the model's structure, e.g.
    ``bayescale.model.structure_key(spec)``), the compiled sampler is kept for this process, so a
    refit on data of the same shape does not compile again: ``model`` must then take every number
    that depends on the data as an argument.
    Usage: ``tree, timings = run_nuts(model, data, SamplerSettings(seed=1), coords, dims)``
    """
    (samples, diverging, n_steps), timings = _sample(model, data, settings, cache_key, None)
    return _tree(samples, diverging, n_steps, data.get("y"), coords, dims), timings


def run_nuts_batched(model, datas: list[dict], settings: SamplerSettings, coords: list[dict], dims: dict,
                     cache_key=None):
    """Independent NUTS fits of one model on several data sets of the same shape, in one program.

    Every chain of every fit runs in one vectorized (vmapped) computation: for many small fits this
    is much faster than a Python loop. Returns (list of DataTrees, timings for the whole batch).
    Usage: ``trees, timings = run_nuts_batched(model, [data1, data2], settings, [coords1, coords2], dims)``
    """
    if not datas:
        raise ValueError("run_nuts_batched needs at least one data set")
    shapes = [jax.tree.map(np.shape, {k: v for k, v in d.items() if v is not None}) for d in datas]
    for i, shape in enumerate(shapes):
        if shape != shapes[0]:
            raise ValueError(f"data set {i} has array shapes {shape}, data set 0 has {shapes[0]}; a batched fit "
                             "needs the same shapes (same runs per curve and curves); fit others separately")
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]),
                           *[{k: v for k, v in d.items() if v is not None} for d in datas])
    (samples, diverging, n_steps), timings = _sample(model, stacked, settings, cache_key, len(datas))

    def fit_i(x, i):  # (chains, batch, draws, ...) -> (chains, draws, ...)
        return np.asarray(x)[:, i]

    trees = [_tree({k: fit_i(v, i) for k, v in samples.items()}, fit_i(diverging, i), fit_i(n_steps, i),
                   datas[i].get("y"), coords[i], dims) for i in range(len(datas))]
    return trees, timings


def run_svi(model, data: dict, settings: SamplerSettings, coords: dict, dims: dict):
    """Approximate posterior for very large tables: NumPyro SVI with a full-rank Gaussian guide.

    ``settings.svi_steps`` Adam steps (learning rate 0.005) from the ``init_to_median`` point, then
    ``chains * draws`` independent draws from the guide. Its quality is measured, not assumed: the
    PSIS Pareto k of the importance ratios p(z, y) / q(z) over those draws (Yao et al. 2018; reliable
    when <= 0.7). Returns (DataTree, timings, pareto_k); the tree has one "chain" of independent draws.
    Usage: ``tree, timings, k = run_svi(model, data, SamplerSettings(engine="svi"), coords, dims)``
    """
    from arviz_stats.base import array_stats
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoMultivariateNormal

    numpyro.enable_x64(settings.precision == "float64")
    _use_compile_cache()
    kwargs = {k: v for k, v in data.items() if v is not None}
    key_fit, key_draw, key_init = jax.random.split(jax.random.PRNGKey(settings.seed), 3)
    guide = AutoMultivariateNormal(model, init_loc_fn=init_to_median(num_samples=15))
    n = settings.chains * settings.draws
    with _compile_clock() as compile_s:
        t0 = time.perf_counter()
        res = SVI(model, guide, numpyro.optim.Adam(0.005), Trace_ELBO()).run(
            key_fit, settings.svi_steps, progress_bar=settings.progress_bar, **kwargs)
        q = guide.get_posterior(res.params)
        info = initialize_model(key_init, model, dynamic_args=True, model_kwargs=kwargs)

        @jax.jit
        def draw(key, params_kwargs):
            flat = q.sample(key, (n,))
            z = jax.vmap(guide._unpack_latent)(flat)
            log_w = -jax.vmap(info.potential_fn(**params_kwargs))(z) - q.log_prob(flat)
            return jax.vmap(info.postprocess_fn(**params_kwargs))(z), log_w

        samples, log_w = jax.device_get(draw(key_draw, kwargs))
        timings = {"sampling": time.perf_counter() - t0, "svi_final_loss": float(res.losses[-1])}
    timings["compile"] = compile_s[0]
    _, k = array_stats.psislw(np.asarray(log_w, dtype=np.float64))
    samples = {name: np.asarray(v)[None] for name, v in samples.items()}
    return _tree(samples, None, None, data.get("y"), coords, dims), timings, float(k)


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


@contextmanager
def _compile_clock():
    """Sum of JAX's compile-time events inside the block, in a one-element list."""
    total = [0.0]

    def listener(event, duration, **_):
        if event in _COMPILE_EVENTS:
            total[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield total
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def warn_if_bad(diag: Diagnostics) -> None:
    """Emit one ``ConvergenceWarning`` per problem, in plain words. Usage: ``warn_if_bad(fit.diagnostics)``."""
    for problem in diag.problems():
        warnings.warn(problem, ConvergenceWarning, stacklevel=3)
