"""The PyMC route: the same spec as a pymc.Model; its posterior agrees with NumPyro's within Monte Carlo error."""

import arviz as az
import numpy as np
import pytest

from bayescale import SamplerSettings, fit_law, load_runs
from bayescale.model import model_data
from bayescale.pymc_model import build_pymc_model
from bayescale.simulate import simulate_runs
from bayescale.spec import ModelSpec

QUANTITIES = ("loss_floor", "alpha", "loss_mid", "sigma")


@pytest.fixture(scope="module")
def runs():
    df, _ = simulate_runs(3, np.geomspace(1e18, 1e21, 6), noise_sd=0.01, seed=3)
    return load_runs(df, scale="compute_flops", groups=["family"])


def test_pymc_model_has_the_numpyro_sites(runs):
    spec = ModelSpec.from_runs(runs)
    model = build_pymc_model(spec, model_data(runs, spec))
    names = {v.name for v in model.free_RVs}
    assert names == {"mu", "sd_cell", "cell_centered", "z_cell", "sigma"}
    assert model["cell_centered"].type.shape == (2, 3)  # centred level and slope x 3 curves


def agree(runs, names, **settings) -> None:
    """Fit with both engines; posterior means must agree within 4 combined Monte Carlo standard errors."""
    fits = {eng: fit_law(runs, settings=SamplerSettings(engine=eng, **settings)) for eng in ("numpyro", "pymc")}
    for fit in fits.values():
        assert fit.diagnostics.ok, str(fit.diagnostics)  # comparing unconverged posteriors means nothing
    for name in names:
        means = {e: f.tree.posterior[name].mean(("chain", "draw")).values for e, f in fits.items()}
        mcse = {e: az.mcse(f.tree.posterior[name].to_dataset(), method="mean")[name].values for e, f in fits.items()}
        z = np.abs(means["numpyro"] - means["pymc"]) / np.sqrt(mcse["numpyro"] ** 2 + mcse["pymc"] ** 2)
        assert np.all(z < 4), f"{name}: numpyro {means['numpyro']}, pymc {means['pymc']}, z {z}"


def test_one_curve_pymc_and_numpyro_agree():
    df, _ = simulate_runs(1, np.geomspace(1e18, 1e21, 12), noise_sd=0.005, seed=5)
    one = load_runs(df.drop(columns="family"), scale="compute_flops")
    agree(one, ("loss_floor", "a", "alpha", "sigma"), seed=1)


@pytest.mark.slow
def test_hierarchical_pymc_and_numpyro_agree():
    # 4 curves. (On the 3-curve `runs` fixture NumPyro's default fit had 5 of 4000 divergent draws,
    # 1 at target_accept 0.99: few-curve hierarchies are an open mixing issue, not an engine one.)
    df, _ = simulate_runs(4, np.geomspace(1e18, 1e21, 6), noise_sd=0.01, seed=3)
    runs4 = load_runs(df, scale="compute_flops", groups=["family"])
    agree(runs4, QUANTITIES + ("mu", "sd_cell"), seed=1)


def test_noise_prior_is_the_same_lognormal_in_both_engines(runs):
    import numpyro
    import pymc as pm
    from scipy import stats

    from bayescale.model import build_model

    spec = ModelSpec.from_runs(runs).with_priors(noise=(0.02, 0.3))
    data = model_data(runs, spec)
    expected = stats.lognorm(0.3, scale=0.02).logpdf(0.015)
    trace = numpyro.handlers.trace(numpyro.handlers.seed(build_model(spec), 0)).get_trace(**data)
    np.testing.assert_allclose(float(trace["sigma"]["fn"].log_prob(0.015)), expected, rtol=1e-6)  # float32 unless x64
    np.testing.assert_allclose(float(pm.logp(build_pymc_model(spec, data)["sigma"], 0.015).eval()), expected, rtol=1e-9)
    with pytest.raises(ValueError, match=r"priors.noise must be \(median > 0"):
        spec.with_priors(noise=(0.0, 0.3))
