"""Extrapolation error (bayescale.extrapolation, calibrate_extrapolation): tau's posterior and wider bands."""

import warnings

import numpy as np
import pytest

from bayescale import SamplerSettings, load_runs
from bayescale.backtest import calibrate_extrapolation
from bayescale.extrapolation import ExtrapolationCalibration, extrapolation_distance, first_crossing, tau_posterior
from bayescale.fit import fit_law
from bayescale.simulate import simulate_runs

SMALL = SamplerSettings(chains=2, warmup=200, draws=200, seed=0)
GRID = np.linspace(0.0, 0.2, 801)


def _simulated_errors(tau_true: float, n: int = 300, seed: int = 0):
    """Held-out runs at 0-4 e-folds beyond the data whose law is off by tau_true per e-fold."""
    rng = np.random.default_rng(seed)
    mu_true = rng.uniform(2.0, 3.0, n)
    dist = rng.uniform(0.0, 4.0, n)
    sigma = 0.01
    y = mu_true * (1 + tau_true * dist * rng.standard_normal(n)) + sigma * rng.standard_normal(n)
    mu = mu_true[None, :] + 0.002 * rng.standard_normal((200, n))  # a sharp posterior of the law
    return y, mu, np.full((200, 1), sigma), dist


@pytest.mark.parametrize("tau_true", [0.0, 0.02])
def test_tau_posterior_recovers_the_extrapolation_error(tau_true):
    y, mu, sigma, dist = _simulated_errors(tau_true)
    w = tau_posterior(y, mu, sigma, None, dist, prior_scale=0.05, grid=GRID)
    cal = ExtrapolationCalibration(GRID, w, 0.05, len(y), (0.0, 4.0))
    lo, hi = cal.quantile([0.005, 0.995])
    assert lo <= tau_true <= hi  # the truth inside the 99% interval
    assert hi - lo < 0.01  # and 300 runs pin it to well under 1% per e-fold
    draws = cal.draws(20000, np.random.default_rng(1))
    assert draws.min() >= 0 and abs(np.median(draws) - cal.quantile(0.5)) < 2 * (GRID[1] - GRID[0]) + 1e-4


def test_no_extrapolation_leaves_the_prior():
    y, mu, sigma, dist = _simulated_errors(0.05)
    w = tau_posterior(y, mu, sigma, None, np.zeros_like(dist), prior_scale=0.05, grid=GRID)
    prior = np.exp(-0.5 * (GRID / 0.05) ** 2)
    np.testing.assert_allclose(w, prior / prior.sum(), rtol=1e-9)


def test_extrapolation_distance():
    np.testing.assert_allclose(extrapolation_distance([0.1, 1.0, np.e, 100.0]), [0, 0, 1, np.log(100)])


@pytest.fixture(scope="module")
def bent_runs():
    """3 curves whose exponent steepens with scale, so the saturating law fitted below 1e20 is off beyond."""
    df, _ = simulate_runs(3, np.geomspace(1e17, 1e22, 9), noise_sd=0.004, seed=2)
    x = df["compute_flops"].to_numpy()
    df = df.assign(loss=df["loss"] - 0.01 * np.log(np.maximum(x / 1e19, 1.0)) ** 1.5)
    return load_runs(df, scale="compute_flops", groups=["family"])


def test_calibrated_forecast_widens_only_beyond_the_data(bent_runs, bent_fit):
    fit = bent_fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = calibrate_extrapolation(fit)
    assert cal.n_runs == 3 and cal.distance_range[0] > 0
    assert cal.quantile(0.05) > 0.002  # the bend is seen inside the training runs
    assert isinstance(cal.diagnostics.max_rhat, float)
    scales = np.array([1e19, 1e20, 1e22, 1e24])
    plain = fit.forecast(scales, group="A", intervals=(0.9,))
    wide = fit.forecast(scales, group="A", intervals=(0.9,), calibration=cal)
    width = lambda fc: (fc["pred_upper_90"] - fc["pred_lower_90"]).to_numpy()  # noqa: E731
    inside = plain["scale_over_max_fitted"].to_numpy() <= 1
    np.testing.assert_allclose(width(wide)[inside], width(plain)[inside])  # same draws inside the data
    assert np.all(width(wide)[~inside] > 1.5 * width(plain)[~inside])
    assert np.all(np.diff(width(wide)[~inside] / width(plain)[~inside]) > 0)  # grows with the distance
    # the held-out runs (1e21-1e22) fall outside the plain 90% band more often than the calibrated one
    held = bent_runs.data[bent_runs.data["compute_flops"] >= 1e21]
    miss = {}
    for name, c in (("plain", None), ("calibrated", cal)):
        fc = [fit.forecast(p["compute_flops"].to_numpy(), group=g, intervals=(0.9,), calibration=c)
              for g, p in held.groupby("family")]
        y = np.concatenate([p["loss"].to_numpy() for _, p in held.groupby("family")])
        lo = np.concatenate([f["pred_lower_90"].to_numpy() for f in fc])
        hi = np.concatenate([f["pred_upper_90"].to_numpy() for f in fc])
        miss[name] = int(np.sum((y < lo) | (y > hi)))
    assert miss["calibrated"] < miss["plain"]


def test_calibration_without_extrapolating_runs_warns(bent_runs):
    mask = np.zeros(bent_runs.n_rows, bool)
    mask[bent_runs.data["compute_flops"].to_numpy() <= 1e17] = True  # hold out the smallest runs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", UserWarning)
        with pytest.warns(UserWarning, match="posterior is the prior"):
            calibrate_extrapolation(bent_runs, settings=SMALL, holdout=mask)


def test_first_crossing():
    grid = np.linspace(0.0, 10.0, 101)
    paths = np.stack([3.0 - 0.1 * grid, np.full_like(grid, 3.0), 1.0 + 0 * grid])
    np.testing.assert_allclose(first_crossing(grid, paths, 2.45), [5.5, np.inf, 0.0])


def _fixed_tau(tau: float) -> ExtrapolationCalibration:
    """A calibration whose posterior is ``tau`` (one grid cell of width 1e-12)."""
    return ExtrapolationCalibration(np.array([tau, tau + 1e-12]), np.array([1.0, 0.0]), 0.05, 1, (1.0, 1.0))


@pytest.fixture(scope="module")
def bent_fit(bent_runs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_law(bent_runs.subset(bent_runs.data["compute_flops"] < 1e21), settings=SMALL)


def test_required_scale_with_the_extrapolation_error(bent_fit):
    target = float(bent_fit.forecast([1e23], group="A")["median"].iloc[0])  # ~1.5 decades beyond the data
    plain = bent_fit.required_scale(target, group="A", return_draws=True)
    none = bent_fit.required_scale(target, group="A", return_draws=True, calibration=_fixed_tau(0.0))
    ok = np.isfinite(plain)
    assert ok.mean() > 0.9 and np.array_equal(ok, np.isfinite(none))
    assert np.max(np.abs(np.log(none[ok] / plain[ok]))) < 0.01  # no extrapolation error: the law's roots
    cal = _fixed_tau(0.02)
    wide = bent_fit.required_scale(target, group="A", return_draws=True, calibration=cal)
    quartile = lambda d: np.quantile(d, 0.25, method="inverted_cdf")  # noqa: E731
    assert quartile(wide) < quartile(plain)  # draws whose law is too pessimistic get there sooner,
    assert np.mean(~np.isfinite(wide)) > np.mean(~np.isfinite(plain)) + 0.05  # too optimistic ones later or never
    # one path per draw: P(required scale <= x) is the forecast's P(loss at x <= target)
    x = float(np.quantile(wide, 0.5))
    law = bent_fit.law_draws([x], group="A")[:, 0]
    rng = np.random.default_rng(5)
    d = extrapolation_distance(bent_fit.scale_over_max_fitted([x], group="A"))[0]
    p = np.mean(law + cal.draws(len(law), rng) * d * np.abs(law) * rng.standard_normal(len(law)) <= target)
    assert abs(p - 0.5) < 4 * np.sqrt(2 * 0.25 / len(law)) + 1 / len(law)  # two independent Monte Carlo halves
    table = bent_fit.required_scale(target, group="A", calibration=cal, intervals=(0.9,))
    assert table["lower_90"].iloc[0] < table["median"].iloc[0] < table["upper_90"].iloc[0]
