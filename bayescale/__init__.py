"""bayescale: Bayesian scaling laws with honest uncertainty.

Usage:
    from bayescale import load_runs, fit_law
    fit = fit_law(load_runs("runs.csv", scale="compute_flops", groups=["eval_set"]))
    fit.forecast([1e22], group="c4_val")
"""

from .fit import Fit, fit_law
from .inference import ConvergenceWarning, Diagnostics
from .runs import RunTable, RunTableError, load_runs
from .spec import ModelSpec, Priors, SamplerSettings

__all__ = ["load_runs", "RunTable", "RunTableError", "fit_law", "Fit", "ModelSpec", "Priors",
           "SamplerSettings", "Diagnostics", "ConvergenceWarning"]
