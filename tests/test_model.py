"""Fits, diagnostics, forecasts and inverse planning (real data where it matters, small synthetic fits elsewhere)."""

import warnings

import numpy as np
import pandas as pd
import pytest

from bayescale import ConvergenceWarning, SamplerSettings, fit_law, load_runs
from bayescale.fit import POPULATION
from bayescale.inference import ESS_MIN, RHAT_MAX
from bayescale.simulate import simulate_runs

GROUP = ("rpj", "c4_val")
SMALL = SamplerSettings(chains=2, warmup=300, draws=300, seed=0)


def width(fc: pd.DataFrame, prefix: str = "", mass: int = 90) -> np.ndarray:
    return (fc[f"{prefix}upper_{mass}"] - fc[f"{prefix}lower_{mass}"]).to_numpy()


# ---- real data: the flagship configuration --------------------------------------------------
def test_flagship_fit_converges_on_real_data(gadre_fit):
    d = gadre_fit.diagnostics
    assert d.max_rhat <= RHAT_MAX, str(d)
    assert d.min_ess_bulk >= ESS_MIN and d.min_ess_tail >= ESS_MIN, str(d)
    assert d.n_divergent == 0 and d.n_max_treedepth == 0, str(d)
    assert d.ok and d.problems() == []
    # every sampled and derived quantity is diagnosed, including the per-curve L_inf, a, alpha
    assert {"loss_floor[rpj|c4_val]", "alpha[rpj|c4_val]", "a[rpj|c4_val]", "sigma"} <= set(d.table.index)


def test_band_width_grows_with_extrapolation_distance(gadre_fit):
    x_max = gadre_fit.runs.data["compute_flops"].max()
    fc = gadre_fit.forecast(x_max * np.array([1.0, 3.0, 10.0, 30.0, 100.0]), group=GROUP)
    for prefix in ("", "pred_"):
        assert np.all(np.diff(width(fc, prefix)) > 0), fc
    assert np.all(width(fc, "pred_") >= width(fc)), "a new run's band must contain the law's band"
    assert np.all(width(fc, mass=50) < width(fc, mass=90))
    assert np.all((fc["lower_90"] <= fc["median"]) & (fc["median"] <= fc["upper_90"]))
    np.testing.assert_allclose(fc["scale_over_max_fitted"], [1, 3, 10, 30, 100])


def test_population_forecast_is_wider_than_a_fitted_group(gadre_fit):
    scales = np.geomspace(1e19, 1e22, 4)
    fitted = gadre_fit.forecast(scales, group=GROUP)
    new_eval = gadre_fit.forecast(scales, group=("rpj", "some_new_eval"))
    new_both = gadre_fit.forecast(scales, group=("new_dataset", "some_new_eval"))
    assert new_eval["eval_set"].eq("some_new_eval").all() and new_eval["new_group"].all()
    assert not fitted["new_group"].any()
    assert np.all(width(new_eval) > width(fitted))
    assert np.all(width(new_both) > width(fitted))
    population = gadre_fit.forecast(scales, group=None)
    assert population["eval_set"].eq(POPULATION).all() and population["new_group"].all()
    np.testing.assert_allclose(width(population), width(new_both), rtol=0.1)  # both: a new curve


def test_forecast_matches_the_data_it_was_fitted_on(gadre_fit):
    """In the fitted range the law's band sits on the data (the curves really are fitted)."""
    data = gadre_fit.runs.data
    part = data[(data.train_dataset == GROUP[0]) & (data.eval_set == GROUP[1])]
    fc = gadre_fit.forecast(part["compute_flops"].to_numpy(), group=GROUP)
    rel = np.abs(fc["median"].to_numpy() - part["loss"].to_numpy()) / part["loss"].to_numpy()
    assert rel.max() < 0.02
    covered = (fc["pred_lower_90"].to_numpy() <= part["loss"].to_numpy()) & (
        part["loss"].to_numpy() <= fc["pred_upper_90"].to_numpy())
    assert covered.sum() >= 3


def test_required_scale_inverts_the_forecast(gadre_fit):
    x_max = gadre_fit.runs.data["compute_flops"].max()
    target = float(gadre_fit.forecast([30 * x_max], group=GROUP)["median"].iloc[0])
    out = gadre_fit.required_scale(target, group=GROUP, intervals=(0.9,))
    assert list(out.columns[:4]) == ["target_loss", "train_dataset", "eval_set", "new_group"]
    assert out["prob_unreachable"].iloc[0] < 0.05
    assert out["lower_90"].iloc[0] < 30 * x_max < out["upper_90"].iloc[0]
    assert out["median"].iloc[0] == pytest.approx(30 * x_max, rel=0.25)
    draws = gadre_fit.required_scale(target, group=GROUP, return_draws=True)
    assert draws.shape == (4000,) and np.all(draws > 0)


def test_required_scale_below_the_floor_is_unreachable(gadre_fit):
    out = gadre_fit.required_scale(0.05, group=GROUP)
    assert out["prob_unreachable"].iloc[0] == 1.0 and np.isinf(out["median"].iloc[0])
    floor = gadre_fit.natural_draws(GROUP)["loss_floor"]
    mid = float(np.median(floor))
    p = gadre_fit.required_scale(mid, group=GROUP)["prob_unreachable"].iloc[0]
    assert p == pytest.approx(np.mean(floor >= mid), abs=1e-12)


def test_summary_has_natural_parameters_per_curve(gadre_fit):
    s = gadre_fit.summary()
    assert len(s) == 3 * 24 and set(s["param"]) == {"loss_floor", "a", "alpha"}
    assert (s["lower_90"] <= s["median"]).all() and (s["median"] <= s["upper_90"]).all()
    assert s["r_hat"].max() <= RHAT_MAX


def test_bad_forecast_arguments_raise(gadre_fit):
    with pytest.raises(ValueError, match="scales must be finite and > 0"):
        gadre_fit.forecast([1e20, -1.0], group=GROUP)
    with pytest.raises(ValueError, match="one level per factor"):
        gadre_fit.forecast([1e20], group=("rpj",))
    with pytest.raises(ValueError, match="unknown grouping factor"):
        gadre_fit.forecast([1e20], group={"architecture": "x"})


# ---- small synthetic fits -------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim_df():
    df, _ = simulate_runs(3, np.geomspace(1e18, 1e21, 6), noise_sd=0.01, seed=4)
    return df


def test_same_seed_same_draws_different_seed_different_draws(sim_df):
    runs = load_runs(sim_df, scale="compute_flops", groups=["family"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = fit_law(runs, settings=SMALL)
        b = fit_law(runs, settings=SMALL)
        c = fit_law(runs, settings=SamplerSettings(chains=2, warmup=300, draws=300, seed=1))
    for name in ("mu", "alpha", "sigma"):
        np.testing.assert_array_equal(a.tree.posterior[name].values, b.tree.posterior[name].values)
    assert not np.array_equal(a.tree.posterior["alpha"].values, c.tree.posterior["alpha"].values)
    pd.testing.assert_frame_equal(a.forecast([1e22], group="A"), b.forecast([1e22], group="A"))


def test_fit_does_not_modify_the_input(sim_df):
    before = sim_df.copy(deep=True)
    runs = load_runs(sim_df, scale="compute_flops", groups=["family"])
    table_before = runs.data.copy(deep=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit_law(runs, settings=SMALL)
    pd.testing.assert_frame_equal(sim_df, before)
    pd.testing.assert_frame_equal(runs.data, table_before)


def test_bad_sampling_warns_in_plain_words(sim_df):
    runs = load_runs(sim_df, scale="compute_flops", groups=["family"])
    with pytest.warns(ConvergenceWarning) as record:
        fit = fit_law(runs, settings=SamplerSettings(chains=2, warmup=5, draws=20, seed=0))
    text = " ".join(str(w.message) for w in record)
    assert "Effective sample size is low" in text and "Increase draws" in text
    assert not fit.diagnostics.ok
    assert "WARNING" in str(fit.diagnostics)


def test_student_t_likelihood_and_one_group_fit(sim_df):
    runs = load_runs(sim_df[sim_df.family == "A"], scale="compute_flops")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = fit_law(runs, likelihood="student_t", settings=SMALL)
    assert "nu" in fit.tree.posterior and fit.spec.likelihood == "student_t"
    fc = fit.forecast([1e22, 1e23])
    assert np.all(width(fc, "pred_") >= width(fc))
    with pytest.raises(ValueError, match="no grouping factors"):
        fit.forecast([1e22], group="A")
    with pytest.raises(ValueError, match="likelihood must be"):
        fit_law(runs, likelihood="cauchy")


def test_model_data_codes_each_run_by_the_specs_curves_and_names_a_stranger():
    from bayescale.model import model_data
    from bayescale.spec import ModelSpec

    df, _ = simulate_runs(3, np.geomspace(1e18, 1e21, 4), noise_sd=0.01, seed=0)
    runs = load_runs(df, scale="compute_flops", groups=["family"])
    data = model_data(runs, ModelSpec.from_runs(runs))
    np.testing.assert_array_equal(data["cell"], runs.cell_codes())
    fewer = runs.subset(runs.data["family"] != runs.data["family"].iloc[-1])
    with pytest.raises(ValueError, match=r"row 8: columns \['family'\] = \('C',\) is not one of the model's curves"):
        model_data(runs, ModelSpec.from_runs(fewer))
