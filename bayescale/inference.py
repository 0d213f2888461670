"""Inference engine: NumPyro NUTS on JAX, results as an ArviZ DataTree, and diagnostics.

The engine knows models and arrays, not reports. x64 is switched on here (``numpyro.enable_x64``)
because the law's ridge needs float64 on CPU; seeds are explicit (``SamplerSettings.seed``).

Usage: ``tree, mcmc, timings = run_nuts(model, data, settings, coords, dims)``
"""

from __future__ import annotations

import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import arviz as az
import jax
import numpy as np
import numpyro
import pandas as pd
from numpyro.infer import MCMC, NUTS, init_to_median

from .spec import SamplerSettings

__all__ = ["Diagnostics", "run_nuts", "ConvergenceWarning", "RHAT_MAX", "ESS_MIN", "diagnose", "warn_if_bad"]

RHAT_MAX = 1.01
ESS_MIN = 400


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
                       "posterior. Raise target_accept (e.g. 0.99), use likelihood='student_t' for outliers, "
                       "or tighten the priors.")
        if self.n_max_treedepth:
            out.append(f"{self.n_max_treedepth} of {self.n_draws} draws hit the maximum tree depth "
                       f"({self.max_tree_depth}): sampling is inefficient. Raise max_tree_depth.")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()

    def __str__(self) -> str:
        head = (f"max R-hat {self.max_rhat:.3f}, min bulk ESS {self.min_ess_bulk:.0f}, "
                f"min tail ESS {self.min_ess_tail:.0f}, divergences {self.n_divergent}, "
                f"max tree depth hits {self.n_max_treedepth}")
        return head + "".join("\n  WARNING: " + p for p in self.problems())


def diagnose(tree, settings: SamplerSettings) -> Diagnostics:
    """Diagnostics from ArviZ's summary and the sampler's per-draw stats. Usage: ``diagnose(tree, settings)``."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = az.summary(tree, kind="diagnostics", round_to="none")
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


def run_nuts(model, data: dict, settings: SamplerSettings, coords: dict, dims: dict):
    """Sample ``model(**data)`` with NUTS; return (DataTree, MCMC, timings in seconds).

    The DataTree holds ``posterior``, ``sample_stats`` (``diverging``, ``n_steps``) and
    ``observed_data`` (``obs``, when ``data`` has ``y``). ``timings``: ``sampling`` (compilation +
    warmup + draws, waited for: JAX runs asynchronously) and ``compile`` (the part JAX reports as
    tracing, lowering and compiling).
    Usage: ``tree, mcmc, timings = run_nuts(model, data, SamplerSettings(seed=1), coords, dims)``
    """
    numpyro.enable_x64(settings.precision == "float64")
    _use_compile_cache()
    chain_method = settings.chain_method
    if chain_method == "auto":
        chain_method = "parallel" if jax.local_device_count() >= settings.chains > 1 else "vectorized"
    kernel = NUTS(model, target_accept_prob=settings.target_accept, max_tree_depth=settings.max_tree_depth,
                  init_strategy=init_to_median(num_samples=15))
    mcmc = MCMC(kernel, num_warmup=settings.warmup, num_samples=settings.draws, num_chains=settings.chains,
                chain_method=chain_method, progress_bar=settings.progress_bar)
    with _compile_clock() as compile_s:
        t0 = time.perf_counter()
        mcmc.run(jax.random.PRNGKey(settings.seed), **data, extra_fields=("diverging", "num_steps"))
        samples = jax.device_get(mcmc.get_samples(group_by_chain=True))
        timings = {"sampling": time.perf_counter() - t0}
    timings["compile"] = compile_s[0]
    stats = jax.device_get(mcmc.get_extra_fields(group_by_chain=True))
    groups = {"posterior": {k: np.asarray(v) for k, v in samples.items()},
              "sample_stats": {"diverging": np.asarray(stats["diverging"]), "n_steps": np.asarray(stats["num_steps"])}}
    if data.get("y") is not None:
        groups["observed_data"] = {"obs": np.asarray(data["y"])}
    tree = az.from_dict(groups, coords=coords, dims={**dims, "obs": ["run"]})
    return tree, mcmc, timings


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
