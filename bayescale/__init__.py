"""bayescale: Bayesian scaling laws with honest uncertainty.

Usage:
    from bayescale import load_runs, fit_law
    fit = fit_law(load_runs("runs.csv", scale="compute_flops", groups=["eval_set"]))
    fit.forecast([1e22], group="c4_val")
"""

import os as _os
import sys as _sys

# XLA reads its flags once, when JAX starts a backend, so they are set here, before bayescale
# imports JAX, only if JAX is not imported yet, and never over a flag the user has set:
# - one XLA host device per chain, so chains run in parallel on CPU (see bayescale.inference);
# - deterministic GPU reductions, so the same seed gives the same draws on a GPU too (without it,
#   repeated fits on an H200 differed; with it they were identical).
_FLAGS = {"xla_force_host_platform_device_count": "4", "xla_gpu_deterministic_ops": "true"}
if "jax" not in _sys.modules:
    _flags = _os.environ.get("XLA_FLAGS", "")
    _flags += "".join(f" --{k}={v}" for k, v in _FLAGS.items() if k not in _flags)
    _os.environ["XLA_FLAGS"] = _flags.strip()

from .fit import Fit, fit_law, fit_many  # noqa: E402
from .backtest import backtest, calibrate_extrapolation
from .design import rank_candidates
from .inference import ConvergenceWarning, Diagnostics
from .io import load_fit, save_fit
from .runs import RunTable, RunTableError, load_runs
from .spec import ModelSpec, Priors, SamplerSettings

__all__ = ["load_runs", "RunTable", "RunTableError", "fit_law", "fit_many", "Fit", "ModelSpec", "Priors",
           "SamplerSettings", "Diagnostics", "ConvergenceWarning", "save_fit", "load_fit",
           "rank_candidates", "backtest", "calibrate_extrapolation"]
