"""The pure power law and the broken power law: exact forms, recovery, LOO across forms, saved fits."""

import numpy as np
import pandas as pd
import pytest

from bayescale import SamplerSettings, fit_law, load_runs
from bayescale.compare import compare_fits
from bayescale.io import load_fit, save_fit
from bayescale.laws import BROKEN, POWER, get_law
from bayescale.spec import ModelSpec

pytestmark = pytest.mark.filterwarnings("ignore::bayescale.compare.LOOWarning")

GRID = np.linspace(-2.0, 2.5, 5)
LOG_X_REF = 7.0
SETTINGS = SamplerSettings(chains=2, warmup=300, draws=300, seed=0)


def broken_natural(x, loss_floor, b, c0, c1, d1, f1):
    """BNSL with one break (Caballero et al. 2022), written out directly."""
    return loss_floor + b * x ** -c0 * (1 + (x / d1) ** (1 / f1)) ** (-c1 * f1)


# ---- exact forms ------------------------------------------------------------------------------
@pytest.mark.parametrize("g0", [0.0, 0.8])
@pytest.mark.parametrize("loss_mid,alpha", [(3.0, 0.05), (0.7, 0.9), (5.0, 1e-4)])
def test_power_mean_equals_its_natural_form(loss_mid, alpha, g0):
    theta = {"loss_mid": loss_mid, "log_alpha": np.log(alpha)}
    grids = [np.array([g0])]
    nat = POWER.natural(theta, grids, [LOG_X_REF])
    assert list(nat) == list(POWER.natural_names) == ["a", "alpha"]
    u = np.linspace(-5, 10, 31)
    x = np.exp(u + LOG_X_REF)
    np.testing.assert_allclose(POWER.mean(theta, {"u": u}, grids), nat["a"] * x ** -nat["alpha"], rtol=1e-12)
    assert POWER.mean(theta, {"u": np.array(g0)}, grids) == pytest.approx(loss_mid, rel=1e-14)  # level at g0


BROKEN_THETAS = [
    {"loss_mid": 1.7, "log_slope": np.log(0.8), "log_alpha": np.log(0.06), "log_alpha_jump": np.log(5.0),
     "u_break": 0.1, "log_sharpness": np.log(0.06)},                       # sharp "emergence" break
    {"loss_mid": 3.2, "log_slope": np.log(0.2), "log_alpha": np.log(0.3), "log_alpha_jump": np.log(0.4),
     "u_break": -1.5, "log_sharpness": np.log(1.0)},                       # gentle break, early
    {"loss_mid": 2.5, "log_slope": np.log(0.1), "log_alpha": np.log(1e-3), "log_alpha_jump": np.log(1e-3),
     "u_break": 3.0, "log_sharpness": np.log(0.3)},                        # nearly flat exponents
]


@pytest.mark.parametrize("theta", BROKEN_THETAS)
def test_broken_mean_equals_its_natural_form(theta):
    nat = BROKEN.natural(theta, [GRID], [LOG_X_REF])
    assert list(nat) == list(BROKEN.natural_names)
    u = np.linspace(-4, 6, 41)
    x = np.exp(u + LOG_X_REF)
    scale = abs(nat["loss_floor"]) + nat["b"] * x.min() ** -nat["c0"]  # cancellation as exponents -> 0
    np.testing.assert_allclose(BROKEN.mean(theta, {"u": u}, [GRID]), broken_natural(x, **nat),
                               rtol=1e-10, atol=1e-12 * scale)
    assert nat["d1"] == pytest.approx(np.exp(theta["u_break"] + LOG_X_REF))


@pytest.mark.parametrize("theta", BROKEN_THETAS[:2])
def test_broken_parameters_mean_what_they_say(theta):
    """loss_mid is the mean loss over the grid, slope the least-squares slope -dL/du there."""
    loss = BROKEN.mean(theta, {"u": GRID}, [GRID])
    assert loss.mean() == pytest.approx(theta["loss_mid"], abs=1e-12)
    assert -np.polyfit(GRID, loss, 1)[0] == pytest.approx(np.exp(theta["log_slope"]), rel=1e-9)


def test_inverses_reach_the_target_or_say_unreachable():
    theta = {k: np.array([v]) for k, v in BROKEN_THETAS[0].items()}
    floor = BROKEN.natural(theta, [GRID], [0.0])["loss_floor"][0]
    for target in (2.5, 1.0, floor + 0.01):
        u = BROKEN.log_scale_to_reach(target, theta, [GRID])
        assert BROKEN.mean(theta, {"u": u}, [GRID])[0] == pytest.approx(target, rel=1e-9)
    assert np.isinf(BROKEN.log_scale_to_reach(floor - 0.01, theta, [GRID])).all()
    power = {"loss_mid": np.array([3.0, 3.0]), "log_alpha": np.log([0.05, 0.5])}
    u = POWER.log_scale_to_reach(2.0, power, [np.zeros(1)])
    np.testing.assert_allclose(POWER.mean(power, {"u": u}, [np.zeros(1)]), 2.0, rtol=1e-12)
    assert np.isinf(POWER.log_scale_to_reach(0.0, power, [np.zeros(1)])).all()


def test_pytensor_namespace_gives_the_same_broken_mean():
    pytensor = pytest.importorskip("pytensor")
    from bayescale.pymc_model import PT

    u = np.linspace(-3, 3, 7)
    theta = BROKEN_THETAS[0]
    expr = BROKEN.mean({k: pytensor.shared(np.float64(v)) for k, v in theta.items()}, {"u": u}, [GRID], xp=PT)
    np.testing.assert_allclose(expr.eval(mode="FAST_COMPILE"), BROKEN.mean(theta, {"u": u}, [GRID]), rtol=1e-12)


# ---- simulated curves -------------------------------------------------------------------------
def _runs(x, mean, seed: int, noise: float):
    y = mean + np.random.default_rng(seed).normal(0.0, noise, x.size)
    return load_runs(pd.DataFrame({"x": x, "loss": y}), scale="x")


BROKEN_TRUTH = {"loss_floor": 0.5, "b": 40.0, "c0": 0.15, "c1": 1.5, "d1": 1e3, "f1": 0.3}
POWER_TRUTH = {"a": 9.0, "alpha": 0.12}
SATURATING_TRUTH = {"loss_floor": 1.8, "a": 40.0, "alpha": 0.5}
X = np.geomspace(1e2, 1e4, 24)


@pytest.fixture(scope="module")
def broken_runs():
    return _runs(X, broken_natural(X, **BROKEN_TRUTH), seed=1, noise=0.01)


@pytest.fixture(scope="module")
def broken_fits(broken_runs):
    """The broken-law curve fitted by each one-covariate form."""
    return {law: fit_law(broken_runs, law=law, settings=SETTINGS) for law in ("broken", "saturating", "power")}


@pytest.fixture(scope="module")
def power_fit():
    x = np.geomspace(1e2, 1e5, 12)
    return fit_law(_runs(x, POWER_TRUTH["a"] * x ** -POWER_TRUTH["alpha"], seed=2, noise=0.02), law="power",
                   settings=SETTINGS)


def _covers(fit, truth: dict, mass: float = 0.95) -> dict:
    draws = fit.natural_draws()
    return {k: bool(np.quantile(draws[k], (1 - mass) / 2) <= v <= np.quantile(draws[k], (1 + mass) / 2))
            for k, v in truth.items()}


def test_power_law_recovers_its_parameters(power_fit):
    assert power_fit.diagnostics.n_divergent == 0 and power_fit.diagnostics.max_rhat < 1.05
    assert all(_covers(power_fit, POWER_TRUTH).values()), _covers(power_fit, POWER_TRUTH)
    assert list(power_fit.summary()["param"]) == ["a", "alpha"]


def test_broken_law_recovers_its_parameters(broken_fits):
    fit = broken_fits["broken"]
    assert fit.diagnostics.n_divergent == 0 and fit.diagnostics.max_rhat < 1.05
    assert all(_covers(fit, BROKEN_TRUTH).values()), _covers(fit, BROKEN_TRUTH)


def test_loo_prefers_the_broken_law_on_a_broken_curve(broken_fits):
    table = compare_fits(broken_fits)
    assert table.index[0] == "broken"
    assert (table["elpd_diff"].iloc[1:].abs() > 4 * table["dse"].iloc[1:]).all()  # clear, not a coin toss


def test_loo_prefers_the_floor_when_there_is_one():
    x = np.geomspace(1e2, 1e5, 12)
    runs = _runs(x, SATURATING_TRUTH["loss_floor"] + SATURATING_TRUTH["a"] * x ** -SATURATING_TRUTH["alpha"],
                 seed=3, noise=0.01)
    table = compare_fits({law: fit_law(runs, law=law, settings=SETTINGS) for law in ("saturating", "power")})
    assert table.index[0] == "saturating"
    assert abs(table["elpd_diff"].iloc[1]) > 4 * table["dse"].iloc[1]


def test_new_laws_have_default_priors_for_every_parameter(broken_runs):
    for name in ("power", "broken"):
        spec = ModelSpec.from_runs(broken_runs, law=name)
        law = get_law(name)
        assert spec.law_params == law.params and set(law.pinned) <= set(spec.centered)
        for p in law.params:
            loc, scale = spec.priors.loc_scale(p)
            assert np.isfinite(loc) and scale > 0 and spec.priors.group_sd[p] > 0
    spec = ModelSpec.from_runs(broken_runs, law="broken")
    lo, hi = np.log(X).min() - spec.log_x_ref, np.log(X).max() - spec.log_x_ref
    loc, scale = spec.priors.loc_scale("u_break")
    assert lo < loc < hi and loc - 2 * scale == pytest.approx(lo) and loc + 2 * scale == pytest.approx(hi)
    assert spec.with_priors(log_sharpness=(-1.0, 0.2)).priors.loc_scale("log_sharpness") == (-1.0, 0.2)


def test_broken_fit_forecasts_plans_and_round_trips(broken_fits, tmp_path):
    fit = broken_fits["broken"]
    fc = fit.forecast([2e4, 5e4])
    truth = broken_natural(np.array([2e4, 5e4]), **BROKEN_TRUTH)
    assert ((fc["pred_lower_90"] < truth) & (truth < fc["pred_upper_90"])).all()
    need = fit.required_scale(1.0)
    assert need["lower_90"][0] < need["median"][0] < need["upper_90"][0]
    loaded = load_fit(save_fit(fit, tmp_path / "broken.nc"))
    assert loaded.spec == fit.spec and loaded.spec.law == "broken"
    pd.testing.assert_frame_equal(loaded.forecast([2e4, 5e4]), fc)
    pd.testing.assert_frame_equal(loaded.summary(), fit.summary())
    pd.testing.assert_frame_equal(loaded.required_scale(1.0), need)
    for k, v in fit.natural_draws().items():
        np.testing.assert_array_equal(loaded.natural_draws()[k], v)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::bayescale.inference.ConvergenceWarning")
def test_broken_law_recovery_across_seeds():
    """Coverage of the 90% intervals of the natural parameters over 10 simulated broken curves."""
    hits = []
    for seed in range(10):
        runs = _runs(X, broken_natural(X, **BROKEN_TRUTH), seed=100 + seed, noise=0.01)
        fit = fit_law(runs, law="broken", settings=SamplerSettings(chains=2, warmup=500, draws=500, seed=seed))
        hits += list(_covers(fit, BROKEN_TRUTH, mass=0.9).values())
    assert 0.75 <= np.mean(hits) <= 1.0, np.mean(hits)
