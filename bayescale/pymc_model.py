"""The PyMC route: the same ``ModelSpec`` as a ``pymc.Model``, sampled by PyMC's NUTS or nutpie.

Same sites, names, priors and hierarchy as ``bayescale.model`` (the hierarchy comes from
``model.cell_values`` and the law from ``laws.Law.mean``, both evaluated with PyTensor: there is
no second copy of the functional forms). Use it to extend a model in PyMC or to sample with
PyMC's samplers; ``fit_law(runs, settings=SamplerSettings(engine="nutpie"))`` returns the usual
``Fit``.

Usage:
    spec = ModelSpec.from_runs(runs)
    with build_pymc_model(spec, model_data(runs, spec)) as pm_model:
        idata = pm.sample()
"""

from __future__ import annotations

import time
import types

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from .model import _base, _split, cell_values, has_factor_effects
from .spec import ModelSpec, SamplerSettings

__all__ = ["build_pymc_model", "run_pymc"]


def _asarray(x):
    """Constants stay NumPy (so shapes are static); symbolic values stay symbolic."""
    return x if isinstance(x, pt.TensorVariable) else np.asarray(x)


#: The array namespace ``laws`` and ``model.cell_values`` need, in PyTensor.
PT = types.SimpleNamespace(asarray=_asarray, exp=pt.exp, expm1=pt.expm1, zeros=pt.zeros,
                           concatenate=pt.concatenate, logaddexp=pt.logaddexp)


def build_pymc_model(spec: ModelSpec, data: dict, coords: dict | None = None) -> pm.Model:
    """A ``pymc.Model`` of ``spec`` on ``data`` (from ``bayescale.model.model_data``).

    Usage: ``with build_pymc_model(spec, model_data(runs, spec)): idata = pm.sample()``
    """
    pri, law = spec.priors, spec.law_def
    params = law.params
    loc = np.array([pri.loc_scale(p)[0] for p in params])
    scale = np.array([pri.loc_scale(p)[1] for p in params])
    group_sd = np.array([pri.group_sd[p] for p in params])
    centered, noncentered = _split(spec)
    n_par, n_cells = len(params), len(spec.cells)
    cell_levels = data["cell_levels"]
    with pm.Model(coords=coords or {}) as model:
        draws = {"mu": pm.Normal("mu", loc, scale, shape=n_par)}
        if spec.groups:
            if has_factor_effects(spec):
                for factor in spec.groups:
                    draws[f"sd_{factor}"] = pm.HalfNormal(f"sd_{factor}", group_sd, shape=n_par)
                    draws[f"z_{factor}"] = pm.ZeroSumNormal(f"z_{factor}", sigma=1.0, n_zerosum_axes=1,
                                                            shape=(n_par, len(spec.levels[factor])))
            draws["sd_cell"] = sd_cell = pm.HalfNormal("sd_cell", group_sd / 2, shape=n_par)
            base = _base(draws, spec, cell_levels, PT)
            if len(centered):
                draws["cell_centered"] = pm.Normal("cell_centered", base[centered], sd_cell[centered][:, None],
                                                   shape=(len(centered), n_cells))
            if len(noncentered):
                draws["z_cell"] = pm.Normal("z_cell", 0.0, 1.0, shape=(len(noncentered), n_cells))
        theta = cell_values(draws, spec, cell_levels, PT)
        covariates = {name: data[name] for name in law.covariates}
        mean = law.mean_by_cell({p: theta[i] for i, p in enumerate(params)}, covariates, spec.law_grids,
                                data["cell"], xp=PT)
        sigma = (pm.HalfNormal("sigma", pri.noise_sd) if pri.noise is None
                 else pm.LogNormal("sigma", mu=np.log(pri.noise[0]), sigma=pri.noise[1]))
        if spec.likelihood == "student_t":
            nu = pm.Gamma("nu", alpha=pri.nu_shape, beta=pri.nu_rate)
            pm.StudentT("obs", nu=nu, mu=mean, sigma=sigma, observed=data["y"])
        else:
            pm.Normal("obs", mu=mean, sigma=sigma, observed=data["y"])
    return model


def run_pymc(spec: ModelSpec, data: dict, settings: SamplerSettings, coords: dict, dims: dict):
    """Sample the PyMC model with ``settings.engine`` ("pymc" or "nutpie"); return (DataTree, timings).

    The DataTree has the same groups and names as ``bayescale.inference.run_nuts``'s.
    Usage: ``tree, timings = run_pymc(spec, data, SamplerSettings(engine="nutpie"), coords, dims)``
    """
    import arviz_base

    if settings.engine == "nutpie":
        import importlib.util
        if importlib.util.find_spec("nutpie") is None:
            raise ImportError("engine='nutpie' needs the nutpie package: pip install nutpie")
    model = build_pymc_model(spec, data)
    t0 = time.perf_counter()
    with model:
        raw = pm.sample(draws=settings.draws, tune=settings.warmup, chains=settings.chains,
                        cores=min(settings.chains, 4), random_seed=settings.seed, progressbar=settings.progress_bar,
                        nuts_sampler=settings.engine, target_accept=settings.target_accept,
                        compute_convergence_checks=False,
                        **({"max_treedepth": settings.max_tree_depth} if settings.engine == "pymc" else {}))
    timings = {"sampling": time.perf_counter() - t0, "compile": float("nan")}
    post, stats = raw["posterior"], raw["sample_stats"]
    groups = {"posterior": {name: post[name].values for name in post.data_vars},
              "sample_stats": {"diverging": stats["diverging"].values, "n_steps": stats["n_steps"].values}}
    groups["observed_data"] = {"obs": np.asarray(data["y"])}
    tree = arviz_base.from_dict(groups, coords=coords, dims={**dims, "obs": ["run"]})
    return tree, timings
