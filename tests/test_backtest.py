"""Backtests (bayescale.backtest), the Huber-loss baseline and simulate_from_fit (issue #5)."""

import warnings

import numpy as np
import pandas as pd
import pytest

from bayescale import SamplerSettings, load_runs
from bayescale.backtest import (METHODS, backtest, extrapolation_loglik, holdout_mask, leave_one_out_calibrations,
                                markdown_table, transfer_calibration, with_calibration)
from bayescale.extrapolation import ExtrapolationCalibration
from bayescale.baselines import huber_bootstrap, huber_fit, huber_law
from bayescale.simulate import simulate_from_fit, simulate_runs

SMALL = SamplerSettings(chains=2, warmup=200, draws=200, seed=0)


@pytest.fixture(scope="module")
def sim_runs():
    df, truth = simulate_runs(3, np.geomspace(1e18, 1e21, 6), noise_sd=0.01, seed=1)
    return load_runs(df, scale="compute_flops", groups=["family"]), truth


@pytest.fixture(scope="module")
def small_backtest(sim_runs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return backtest(sim_runs[0], holdout=2, settings=SMALL, n_boot=20)


def test_holdout_mask_topk_cut_and_mask(sim_runs):
    runs = sim_runs[0]
    top2 = holdout_mask(runs, 2)
    largest = np.geomspace(1e18, 1e21, 6)[-2:]
    assert top2.sum() == 6 and np.allclose(np.unique(runs.data.loc[top2, "compute_flops"]), largest)
    assert holdout_mask(runs, 5e20).sum() == 3
    mask = np.zeros(runs.n_rows, bool)
    mask[0] = True
    assert holdout_mask(runs, mask).sum() == 1
    with pytest.raises(ValueError):
        holdout_mask(runs, 0)
    with pytest.raises(ValueError):
        backtest(runs, holdout=1e30)


def test_huber_fit_recovers_law():
    x = np.geomspace(1e18, 1e21, 8)
    y = (1.8 + 2.0 * (x / 1e18) ** -0.3) * np.exp(0.001 * np.random.default_rng(0).standard_normal(8))
    fit = huber_fit(np.log(x), y)  # the default grid of 80 starts
    assert np.exp(fit["theta"][0]) == pytest.approx(1.8, rel=0.03)
    assert fit["theta"][2] == pytest.approx(0.3, rel=0.1)
    u = np.log(x)[:, None] - fit["center"]
    np.testing.assert_allclose(huber_law(fit["theta"], u), y, rtol=3e-3)
    boot = huber_bootstrap(np.log(x[:6]), y[:6], np.log(x[6:]), n_boot=10, seed=0)
    assert boot["law"].shape == (10, 2) and boot["predictive"].shape == (10, 2)
    np.testing.assert_allclose(boot["point"], y[6:], rtol=0.01)


def test_huber_fit_two_variables():
    n, d = np.geomspace(1e8, 1e10, 4), np.geomspace(1e9, 1e11, 4)
    nn, dd = (a.ravel() for a in np.meshgrid(n, d))
    y = 1.69 + 406.4 * nn ** -0.34 + 410.7 * dd ** -0.28
    fit = huber_fit(np.log(np.column_stack([nn, dd])), y,
                    inits=[np.array([0.5, a, b, al, be]) for a in (-2.0, 0.0) for b in (-2.0, 0.0)
                           for al in (0.2, 0.5) for be in (0.2, 0.5)])
    assert np.exp(fit["theta"][0]) == pytest.approx(1.69, rel=0.02)
    assert fit["theta"][3:] == pytest.approx([0.34, 0.28], rel=0.05)


def test_backtest_table_and_predictions(small_backtest):
    bt = small_backtest
    assert list(bt.table["method"]) == list(METHODS)
    assert bt.n_heldout == 6 and bt.n_train == 12
    cols = {"n_scored", "n_failed", "median_abs_rel_err_%", "coverage_50", "coverage_80", "coverage_90", "mean_lpd"}
    assert cols <= set(bt.table.columns)
    row = bt.table.set_index("method").loc["bayescale"]
    assert row["n_scored"] == 6 and row["n_failed"] == 0
    assert 0 <= row["coverage_50"] <= row["coverage_80"] <= row["coverage_90"] <= 1
    assert row["median_abs_rel_err_%"] < 10 and np.isfinite(row["mean_lpd"])
    assert np.isnan(bt.table.set_index("method").loc["huber", "coverage_90"])  # a point fit has no band
    assert len(bt.predictions) == 6 * len(METHODS)
    bands = bt.predictions.query("method == 'bayescale'")
    assert (bands["lower_50"] <= bands["upper_50"]).all() and (bands["lower_90"] <= bands["lower_50"]).all()
    cal = bt.predictions.query("method == 'bayescale_calibrated'")
    np.testing.assert_allclose(cal["median"].to_numpy(), bands["median"].to_numpy())  # same point forecast
    assert (cal["upper_90"] - cal["lower_90"]).mean() > (bands["upper_90"] - bands["lower_90"]).mean()
    assert bt.calibration is not None and any("extrapolation error" in n for n in bt.notes)
    md = bt.to_markdown("sim")
    assert md.startswith("| dataset | method |") and md.count("\n") == 1 + len(METHODS)


def test_markdown_table_formats_nan():
    assert "n/a" in markdown_table(pd.DataFrame({"a": [np.nan], "b": ["x"]}))


def test_simulate_from_fit(small_backtest):
    fit = small_backtest.fit
    scales = np.geomspace(1e19, 1e22, 4)
    runs, truth = simulate_from_fit(fit, scales, seed=3)
    assert len(runs) == 4 * len(fit.spec.cells) and set(runs.columns) == {"family", "compute_flops", "loss"}
    assert list(truth.columns[:4]) == ["family", "loss_floor", "a", "alpha"] and truth["draw"].nunique() == 1
    again, _ = simulate_from_fit(fit, scales, seed=3)
    pd.testing.assert_frame_equal(runs, again)
    # the simulated runs scatter around the chosen draw's law
    row = truth.iloc[0]
    law = row["loss_floor"] + row["a"] * scales ** -row["alpha"]
    sigma = fit._flat("sigma")[int(row["draw"])]
    assert np.all(np.abs(runs.loc[runs["family"] == row["family"], "loss"].to_numpy() - law) < 6 * sigma)
    new, _ = simulate_from_fit(fit, scales, seed=0, groups=["Z"])  # an unseen curve: from the population
    assert set(new["family"]) == {"Z"}
    with pytest.raises(ValueError):
        simulate_from_fit(fit, scales, draw=10**9)


def test_loo_and_compare(small_backtest):
    from bayescale.compare import compare_fits, log_likelihood, loo

    fit = small_backtest.fit
    ll = log_likelihood(fit)
    assert ll.shape == (2, 200, fit.runs.n_rows) and np.isfinite(ll).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = loo(fit)
        table = compare_fits({"a": fit, "b": fit})
    assert np.isfinite(res.elpd) and len(np.asarray(res.pareto_k).ravel()) == fit.runs.n_rows
    assert {"elpd", "n_bad_pareto_k"} <= set(table.columns) or "n_bad_pareto_k" in table.columns


def test_transfer_calibration_and_with_calibration(small_backtest):
    bt = small_backtest
    cal = transfer_calibration([bt])
    assert cal.n_runs == bt.n_heldout and cal.diagnostics is None and cal.distance_range[0] > 0
    assert cal.weights.sum() == pytest.approx(1.0)
    grid = cal.grid
    loglik = extrapolation_loglik(bt, grid)
    twice = transfer_calibration([bt, bt])  # the likelihood of two campaigns is the product of theirs
    prior = -0.5 * (grid / cal.prior_scale) ** 2
    expected = np.exp(2 * loglik + prior - np.max(2 * loglik + prior))
    np.testing.assert_allclose(twice.weights, expected / expected.sum(), rtol=1e-8, atol=1e-300)
    with pytest.raises(ValueError):
        transfer_calibration([])
    each, everything = leave_one_out_calibrations([bt, bt])  # each from the other; and from both
    for c in each:
        np.testing.assert_array_equal(c.weights, cal.weights)
    np.testing.assert_array_equal(everything.weights, twice.weights)
    assert everything.n_runs == 2 * bt.n_heldout
    with pytest.raises(ValueError):
        leave_one_out_calibrations([bt])
    # a fixed extrapolation error of 5% per e-fold widens every held-out band (all lie beyond the data)
    fixed = ExtrapolationCalibration(np.array([0.05, 0.05 + 1e-12]), np.array([1.0, 0.0]), 0.05, 1, (1.0, 1.0))
    wide = with_calibration(bt, "fixed", fixed)
    assert list(wide.table["method"]) == [*bt.table["method"], "fixed"] and len(bt.table) + 1 == len(wide.table)
    width = lambda m: (wide.predictions.query("method == @m").eval("upper_90 - lower_90")).to_numpy()  # noqa: E731
    assert np.all(width("fixed") > 1.2 * width("bayescale"))
    row = wide.table.set_index("method").loc["fixed"]
    assert row["n_scored"] == bt.n_heldout and row["coverage_90"] >= wide.table.set_index("method").loc["bayescale", "coverage_90"]
