"""The inference engine: compiled-sampler reuse, batched fits (fit_many), the approximate SVI path."""

import warnings
from dataclasses import replace

import numpy as np
import pytest

from bayescale import ConvergenceWarning, SamplerSettings, fit_law, fit_many, load_fit, load_runs, save_fit
from bayescale import inference
from bayescale.simulate import simulate_runs
from bayescale.spec import MODE_MIN_RUNS_PER_CURVE

SMALL = SamplerSettings(chains=2, warmup=300, draws=300)


def _table(seed: int, lo: float = 1e18, hi: float = 1e21, n_groups: int = 2):
    df, _ = simulate_runs(n_groups, np.geomspace(lo, hi, 6), noise_sd=0.02, seed=seed)
    return load_runs(df, scale="compute_flops", groups=["family"] if n_groups > 1 else ())


def test_refit_same_shape_compiles_nothing_and_uses_the_new_numbers():
    """A refit reuses the compiled sampler; its draws equal a freshly compiled fit's, so no number
    of the first table (priors, grids, covariates) is baked into the compiled program."""
    fit_law(_table(0), settings=SMALL)
    other = _table(1, lo=1e19, hi=1e23)  # other values, other scale range -> other priors and grids
    reused = fit_law(other, settings=SMALL)
    assert reused.timings["compile"] < 0.1, reused.timings
    inference._PROGRAMS.clear()
    fresh = fit_law(other, settings=SMALL)
    for name in ("mu", "sigma", "cell_centered"):
        assert np.array_equal(reused.tree.posterior[name].values, fresh.tree.posterior[name].values), name


def test_mass_matrix_shrinkage_is_decided_per_model_and_reaches_the_sampler():
    """None -> off for loss laws in float64, on in float32 and for metric fits; a fit records the value
    it used; the engine refuses an undecided value; the two choices give different draws."""
    assert SamplerSettings().resolved(loss_law=True).regularize_mass_matrix is False
    assert SamplerSettings(precision="float32").resolved(loss_law=True).regularize_mass_matrix is True
    assert SamplerSettings().resolved(loss_law=False).regularize_mass_matrix is True
    assert SamplerSettings(regularize_mass_matrix=True).resolved(loss_law=True).regularize_mass_matrix is True
    with pytest.raises(ValueError, match="resolved"):
        inference.run_nuts(None, {}, SamplerSettings(), {}, {})
    table = _table(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        default = fit_law(table, settings=SMALL)
        shrunk = fit_law(table, settings=replace(SMALL, regularize_mass_matrix=True))
    assert default.settings.regularize_mass_matrix is False and shrunk.settings.regularize_mass_matrix is True
    assert not np.array_equal(default.tree.posterior["sigma"].values, shrunk.tree.posterior["sigma"].values)


def test_large_cpu_tables_run_chains_on_one_device_and_explicit_parallel_warns(monkeypatch):
    monkeypatch.setattr(inference, "CPU_PARALLEL_MEMORY_ROWS", 10)  # the real threshold is 50,000 runs
    auto = SamplerSettings()
    assert inference._chain_method(auto, 9) == "parallel" and inference._chain_method(auto, 10) == "sequential"
    assert inference._chain_method(replace(auto, chain_method="parallel"), 10) == "parallel"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        one_device = fit_law(_table(0), settings=SMALL)
        parallel = fit_law(_table(0), settings=replace(SMALL, chain_method="parallel"))
    memory = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(memory) == 1 and "chain_method='auto'" in str(memory[0].message), memory
    # the same posterior wherever the chains run (not the same draws: the programs differ in rounding,
    # which NUTS amplifies): means within 4 Monte Carlo standard errors, from each fit's bulk ESS
    for name in ("alpha[A]", "alpha[B]", "loss_floor[A]", "sigma"):
        var, _, level = name.partition("[")
        draws = [f.tree.posterior[var].sel({f.tree.posterior[var].dims[-1]: level[:-1]}) if level
                 else f.tree.posterior[var] for f in (one_device, parallel)]
        se2 = [float(d.values.var()) / f.diagnostics.table.loc[name, "ess_bulk"]
               for d, f in zip(draws, (one_device, parallel))]
        assert abs(float(draws[0].mean()) - float(draws[1].mean())) < 4 * np.sqrt(sum(se2)), name


def test_init_at_the_mode_gives_the_same_posterior():
    """``init="mode"`` (Laplace start and metric; what "auto" picks for curves of >= 100 runs) samples the
    posterior the prior-mean start samples."""
    df, _ = simulate_runs(2, np.geomspace(1e18, 1e21, MODE_MIN_RUNS_PER_CURVE), noise_sd=0.02, seed=2)
    rich = load_runs(df, scale="compute_flops", groups=["family"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        prior = fit_law(rich, settings=SamplerSettings(seed=3, init="prior_mean"))
        mode = fit_law(rich, settings=SamplerSettings(seed=3))
    assert (prior.settings.init, mode.settings.init) == ("prior_mean", "mode")
    assert SamplerSettings().resolved(loss_law=True, runs_per_curve=MODE_MIN_RUNS_PER_CURVE - 1).init == "prior_mean"
    assert SamplerSettings().resolved(loss_law=False, runs_per_curve=10**4).init == "prior_mean"
    assert prior.diagnostics.ok and mode.diagnostics.ok, (prior.diagnostics, mode.diagnostics)
    for name in ("alpha[A]", "alpha[B]", "loss_floor[A]", "sigma"):
        var, _, level = name.partition("[")
        draws = [f.tree.posterior[var].sel({f.tree.posterior[var].dims[-1]: level[:-1]}) if level
                 else f.tree.posterior[var] for f in (prior, mode)]
        se2 = [float(d.values.var()) / f.diagnostics.table.loc[name, "ess_bulk"] for d, f in zip(draws, (prior, mode))]
        assert abs(float(draws[0].mean()) - float(draws[1].mean())) < 4 * np.sqrt(sum(se2)), name
    with pytest.raises(ValueError, match="init must be"):
        fit_law(_table(2), settings=replace(SMALL, init="median"))


def test_fit_many_matches_separate_fits():
    tables = [_table(s, n_groups=1) for s in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        batched = fit_many(tables, settings=SamplerSettings())
        single = [fit_law(t, settings=SamplerSettings()) for t in tables]
    for b, s in zip(batched, single):
        assert b.diagnostics.ok and s.diagnostics.ok, (b.diagnostics, s.diagnostics)
        for name in ("loss_floor", "alpha"):
            xb, xs = (f.tree.posterior[name].values.ravel() for f in (b, s))
            # both have bulk ESS >= 400, so each mean's Monte Carlo error is <= sd / 20
            assert abs(xb.mean() - xs.mean()) < 4 * np.sqrt(2) * xs.std() / 20, name
    assert batched[0].timings["batch"] == 3


def test_fit_many_needs_one_shape():
    with pytest.raises(ValueError, match="one structure"):
        fit_many([_table(0, n_groups=1), _table(1, n_groups=2)], settings=SMALL)


def test_svi_is_checked_by_pareto_k(tmp_path):
    runs = _table(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_law(runs, settings=SamplerSettings(engine="svi", svi_steps=2000, draws=500))
    k = fit.diagnostics.pareto_k
    assert np.isfinite(k) and "approximate posterior" in str(fit.diagnostics)
    warned = any(issubclass(w.category, ConvergenceWarning) and "Pareto k" in str(w.message) for w in caught)
    assert warned == (k > inference.PARETO_K_MAX) and fit.diagnostics.ok == (k <= inference.PARETO_K_MAX)
    table = fit.forecast([1e22], group=runs.levels("family")[0])
    assert (table["pred_lower_90"] < table["median"]).all() and (table["median"] < table["pred_upper_90"]).all()
    save_fit(fit, tmp_path / "svi.nc")
    again = load_fit(tmp_path / "svi.nc")
    assert again.diagnostics.pareto_k == k


@pytest.mark.parametrize("law,likelihood", [("saturating", "normal"), ("broken", "student_t")])
def test_by_cell_layout_gives_the_same_log_density(law, likelihood):
    """The by-cell layout (padded grid, no scatter in the gradient) is the same model as the per-row one."""
    import jax
    from numpyro.infer.util import initialize_model

    from bayescale.model import build_model, model_data
    from bayescale.spec import ModelSpec

    df, _ = simulate_runs(3, np.geomspace(1e18, 1e21, 9), noise_sd=0.02, seed=4)
    df = df.drop(index=df.index[[1, 2, 5]])  # unequal rows per curve: the grid is padded
    runs = load_runs(df, scale="compute_flops", groups=["family"])
    spec = ModelSpec.from_runs(runs, law=law, likelihood=likelihood)
    rows, by_cell = model_data(runs, spec, layout="rows"), model_data(runs, spec, layout="by_cell")
    assert rows["pad_index"] is None and by_cell["pad_mask"].sum() == len(df) < by_cell["pad_mask"].size
    model = build_model(spec)
    potentials = []
    for data in (rows, by_cell):
        kwargs = {k: v for k, v in data.items() if v is not None}
        info = initialize_model(jax.random.PRNGKey(0), model, model_kwargs=kwargs)
        point = jax.tree.map(lambda v: v + 0.1, info.param_info.z)  # not the init point: noise in every site
        potentials.append(float(info.potential_fn(point)))
    assert np.isclose(potentials[0], potentials[1], rtol=1e-10), potentials
    big, _ = simulate_runs(4, np.geomspace(1e18, 1e21, 300), noise_sd=0.02, seed=0)
    big_runs = load_runs(big, scale="compute_flops", groups=["family"])
    assert model_data(big_runs, ModelSpec.from_runs(big_runs))["pad_index"] is not None  # auto: by cell


def _crossed(n: int, n_scales: int, seed: int):
    """An n x n crossed design (factors "data", "eval") of simulated curves."""
    df, _ = simulate_runs(n * n, np.geomspace(1e18, 1e21, n_scales), noise_sd=0.02, seed=seed)
    codes = {f: i for i, f in enumerate(sorted(df["family"].unique()))}
    df["data"] = df["family"].map(lambda f: "abc"[codes[f] // n])
    df["eval"] = df["family"].map(lambda f: "xyz"[codes[f] % n])
    return load_runs(df, scale="compute_flops", groups=["data", "eval"])


def test_crossed_factors_with_two_levels_pool_the_curves_directly():
    """A 2 x 2 crossed design has no per-factor effects (a spread from one zero-sum degree of freedom does
    not mix); its curves are pooled directly, and unseen combinations still get a forecast."""
    from bayescale.spec import ModelSpec

    runs = _crossed(2, 6, seed=2)
    assert ModelSpec.from_runs(runs).factor_effects is False
    fit = fit_law(runs, settings=SMALL)
    assert "sd_data" not in fit.tree.posterior and "sd_cell" in fit.tree.posterior
    new = fit.forecast([1e22], group=("c", "x"))
    seen = fit.forecast([1e22], group=("a", "x"))
    assert (new["upper_90"] - new["lower_90"]).iloc[0] > (seen["upper_90"] - seen["lower_90"]).iloc[0]
    assert ModelSpec.from_runs(_crossed(3, 4, seed=3)).factor_effects is True


def test_chains_start_apart_near_the_prior_mean_and_only_where_the_density_is_finite():
    import jax
    import jax.numpy as jnp

    z = {"a": jnp.zeros(3), "b": jnp.ones(2)}
    starts = [inference._jittered(z, jax.random.PRNGKey(k), lambda v: jnp.sum(v["a"] ** 2)) for k in range(4)]
    moved = np.array([np.concatenate([s["a"], s["b"] - 1.0]) for s in starts])
    assert np.all(np.abs(moved) <= inference.INIT_JITTER) and np.all(np.abs(moved) > 0)
    assert len({tuple(m) for m in moved}) == 4  # every chain starts elsewhere
    stuck = inference._jittered(z, jax.random.PRNGKey(0), lambda v: jnp.inf)
    assert all(np.array_equal(stuck[k], z[k]) for k in z)
