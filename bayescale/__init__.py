"""bayescale: Bayesian scaling laws with honest uncertainty.

Usage:
    from bayescale import load_runs, fit_law
    fit = fit_law(load_runs("runs.csv", scale="compute_flops", groups=["eval_set"]))
    fit.forecast([1e22], group="c4_val")
"""

import os as _os
import sys as _sys

# Chains run in parallel on CPU through one XLA host device per chain. XLA reads this flag once,
# when JAX starts its CPU backend, so it is set here, before bayescale imports JAX, and only if
# JAX is not imported yet and the user has not set it. See bayescale.inference.
if "jax" not in _sys.modules and "xla_force_host_platform_device_count" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

from .fit import Fit, fit_law  # noqa: E402
from .inference import ConvergenceWarning, Diagnostics
from .runs import RunTable, RunTableError, load_runs
from .spec import ModelSpec, Priors, SamplerSettings

__all__ = ["load_runs", "RunTable", "RunTableError", "fit_law", "Fit", "ModelSpec", "Priors",
           "SamplerSettings", "Diagnostics", "ConvergenceWarning"]
