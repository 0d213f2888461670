"""Two-variable law L(N, D) = E + A/N^alpha + B/D^beta and compute-optimal allocation (small fits)."""

import dataclasses
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from bayescale import ConvergenceWarning, RunTableError, SamplerSettings, fit_law, load_runs
from bayescale import allocation as al
from bayescale.simulate import CHINCHILLA_TRUTH, simulate_isoflop_runs

TRUTH = CHINCHILLA_TRUTH                      # E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28
BUDGETS = [1e18, 1e19, 1e20]                  # 3 IsoFLOP profiles x 6 model sizes = 18 runs
SMALL = SamplerSettings(chains=2, warmup=300, draws=300, seed=0)


def analytic(compute, p=TRUTH, k=6.0) -> dict:
    """N_opt, D_opt and the loss at the optimum from the closed form, written out independently."""
    g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    n = g * (np.asarray(compute) / k) ** (p["beta"] / (p["alpha"] + p["beta"]))
    d = np.asarray(compute) / (k * n)
    return {"n_opt": n, "d_opt": d, "loss_opt": p["E"] + p["A"] * n ** -p["alpha"] + p["B"] * d ** -p["beta"]}


@pytest.fixture(scope="module")
def sim_fit():
    df = simulate_isoflop_runs(BUDGETS, 6, noise_sd=0.01, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # default sampler: 4,000 draws, so the 2.5% / 97.5% quantiles the tests check are well estimated
        return fit_law(load_runs(df, scale="compute_flops"), law="chinchilla", settings=SamplerSettings(seed=0))


def test_fit_recovers_the_law_and_mixes(sim_fit):
    d = sim_fit.diagnostics
    assert d.max_rhat < 1.05 and d.n_divergent == 0, str(d)
    assert set(sim_fit.spec.law_params) == {"loss_mid", "log_slope_N", "log_slope_D", "log_alpha", "log_beta"}
    s = sim_fit.summary(0.95).set_index("param")
    assert list(s.index) == ["E", "A", "B", "alpha", "beta"]
    for name in ("E", "alpha", "beta"):
        assert s.loc[name, "lower_95"] <= TRUTH[name] <= s.loc[name, "upper_95"], s


@pytest.mark.parametrize("compute", [1e19, 1e21])  # inside the data, and 10x beyond the largest budget
def test_posterior_of_n_opt_covers_the_analytic_optimum(sim_fit, compute):
    """One simulated dataset: each 95% interval misses its truth with probability 5% (seeds fixed)."""
    table = sim_fit.compute_optimal([compute], intervals=(0.95,))
    truth = analytic(compute)
    for q in ("n_opt", "d_opt", "loss_opt"):
        lo, hi = table[f"{q}_lower_95"].iloc[0], table[f"{q}_upper_95"].iloc[0]
        assert lo <= truth[q] <= hi, (q, lo, truth[q], hi)
    a = TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"])
    assert table["a_lower_95"].iloc[0] <= a <= table["a_upper_95"].iloc[0]
    np.testing.assert_allclose(table["a_median"] + table["b_median"], 1.0, atol=0.02)


def test_bands_widen_with_extrapolation(sim_fit):
    table = sim_fit.compute_optimal([1e19, 1e21, 1e23], intervals=(0.9,))
    log_width = np.log(table["n_opt_upper_90"] / table["n_opt_lower_90"]).to_numpy()
    assert np.all(np.diff(log_width) > 0), table


@pytest.mark.parametrize("compute", [1e19, 5.76e23])
def test_loss_at_n_opt_is_the_minimum_along_the_isoflop_curve(sim_fit, compute):
    draws = sim_fit.natural_draws()
    alloc = al.optimal_allocation(draws, [compute])
    n_opt, loss_opt = alloc["n_opt"][:, 0], alloc["loss_opt"][:, 0]
    n_grid = np.geomspace(n_opt.min() / 30, n_opt.max() * 30, 4001)
    loss = al.isoflop_loss(draws, compute, n_grid)                    # (draws, grid)
    assert np.all(loss_opt <= loss.min(axis=1) + 1e-12)              # no point on the curve is lower
    step = np.log(n_grid[1] / n_grid[0])
    assert np.all(np.abs(np.log(n_grid[loss.argmin(axis=1)] / n_opt)) <= step)  # the grid minimum is at N_opt
    np.testing.assert_allclose(6 * n_opt * alloc["d_opt"][:, 0], compute, rtol=1e-12)


def test_numeric_optimum_with_a_flops_per_token_function(sim_fit):
    draws = {k: v[:200] for k, v in sim_fit.natural_draws().items()}
    closed = al.optimal_allocation(draws, [1e20, 1e23])
    numeric = al.optimal_allocation(draws, [1e20, 1e23], flops_per_token=lambda n: 6 * n)
    for q in ("n_opt", "d_opt", "loss_opt"):
        np.testing.assert_allclose(numeric[q], closed[q], rtol=1e-6)
    # a cost that is not proportional to N (e.g. attention FLOPs per token): still the minimum along C = f(N) D
    per_token = lambda n: 6 * n + 2e9  # noqa: E731
    alloc = al.optimal_allocation(draws, [1e21], flops_per_token=per_token)
    n_grid = np.geomspace(alloc["n_opt"].min() / 30, alloc["n_opt"].max() * 30, 3001)
    loss = al.isoflop_loss(draws, 1e21, n_grid, flops_per_token=per_token)
    assert np.all(alloc["loss_opt"][:, 0] <= loss.min(axis=1) + 1e-12)
    np.testing.assert_allclose(per_token(alloc["n_opt"]) * alloc["d_opt"], 1e21, rtol=1e-12)


def test_required_compute_inverts_the_optimal_loss(sim_fit):
    draws = sim_fit.natural_draws()
    alloc = al.optimal_allocation(draws, [3e21])
    c = al.required_compute(draws, alloc["loss_opt"][:, 0])               # (draws, draws): each draw, each target
    np.testing.assert_allclose(np.diag(c), 3e21, rtol=1e-9)
    below = al.required_compute(draws, [np.min(draws["E"]) - 0.01])
    assert np.all(np.isinf(below))
    out = sim_fit.required_compute([2.3, 1.0], intervals=(0.95,))
    truth = al.required_compute({k: np.array([v]) for k, v in TRUTH.items()}, 2.3)[0, 0]
    assert out["lower_95"].iloc[0] <= truth <= out["upper_95"].iloc[0]
    assert out["prob_unreachable"].iloc[1] == 1.0 and np.isinf(out["median"].iloc[1])
    draws_out = sim_fit.required_compute(2.3, return_draws=True)
    assert draws_out.shape == (4000, 1)


def test_closed_form_against_published_numbers():
    """Hoffmann et al.'s Approach 3 values give a = 0.45 (beta/(alpha+beta)), as the paper reports (0.46)."""
    draws = {k: np.array([v]) for k, v in TRUTH.items()}
    alloc = al.optimal_allocation(draws, [5.76e23])
    assert alloc["a"][0, 0] == pytest.approx(0.28 / 0.62) and alloc["b"][0, 0] == pytest.approx(0.34 / 0.62)
    for q, v in analytic(5.76e23).items():
        assert alloc[q][0, 0] == pytest.approx(float(v), rel=1e-12)
    assert al.exponents(draws)["a"][0] == pytest.approx(0.28 / 0.62)


def test_forecast_and_errors_of_the_two_variable_fit(sim_fit):
    fc = sim_fit.forecast({"params": [1e8, 1e9], "tokens": [2e9, 2e10]}, intervals=(0.9,))
    assert list(fc.columns[:2]) == ["params", "tokens"]
    truth = TRUTH["E"] + TRUTH["A"] * np.array([1e8, 1e9]) ** -0.34 + TRUTH["B"] * np.array([2e9, 2e10]) ** -0.28
    assert np.all((fc["pred_lower_90"] <= truth) & (truth <= fc["pred_upper_90"]))
    np.testing.assert_allclose(fc["scale_over_max_fitted"], 6 * np.array([1e8 * 2e9, 1e9 * 2e10]) / 1e20)
    with pytest.raises(ValueError, match="needs scales as a dict"):
        sim_fit.forecast([1e20])
    with pytest.raises(ValueError, match="use fit.required_compute"):
        sim_fit.required_scale(2.5)
    one_var = dataclasses.replace(sim_fit, spec=dataclasses.replace(sim_fit.spec, law="saturating"))
    with pytest.raises(ValueError, match="needs the two-variable law"):
        one_var.compute_optimal([1e21])


def test_missing_token_column_is_reported_before_sampling():
    df = simulate_isoflop_runs(BUDGETS, 4, seed=1).drop(columns=["tokens"])
    with pytest.raises(RunTableError, match="needs column 'tokens'"):
        fit_law(load_runs(df, scale="compute_flops"), law="chinchilla", settings=SMALL)
    df = simulate_isoflop_runs(BUDGETS, 4, seed=1).rename(columns={"params": "n", "tokens": "d"})
    runs = load_runs(df, scale="compute_flops", params_col="n", tokens_col="d")
    from bayescale.spec import ModelSpec
    spec = ModelSpec.from_runs(runs, law="chinchilla")
    assert spec.covariate_columns == ("n", "d") and spec.grids == ((0.0,), (0.0,))
    assert spec.with_priors(log_beta=(-1.0, 0.3)).priors.loc_scale("log_beta") == (-1.0, 0.3)
    with pytest.raises(ValueError, match="unknown prior"):
        spec.with_priors(log_gamma=(0.0, 1.0))


def test_hierarchical_student_t_fit_with_groups_and_report(tmp_path):
    """Two campaigns that differ in E: per-group allocation, population draws, and the report section."""
    df = simulate_isoflop_runs(BUDGETS, 5, groups={"A": {}, "B": {"E": 1.9}}, noise_sd=0.01, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = fit_law(load_runs(df, scale="compute_flops", groups=["family"]), law="chinchilla",
                      likelihood="student_t", settings=SamplerSettings(chains=2, warmup=200, draws=200, seed=0))
    assert "nu" in fit.tree.posterior and fit.tree.posterior["E"].shape[-1] == 2
    e = {g: np.median(fit.natural_draws(g)["E"]) for g in ("A", "B")}
    assert e["B"] - e["A"] == pytest.approx(0.2, abs=0.1)
    per_group = pd.concat([fit.compute_optimal([1e21], group=g) for g in ("A", "B", None)])
    assert per_group["family"].tolist() == ["A", "B", "(new)"] and per_group["new_group"].tolist() == [False, False, True]
    width = np.log(per_group["n_opt_upper_80"] / per_group["n_opt_lower_80"]).to_numpy()
    assert width[2] > width[:2].max()                                  # a new campaign is less certain

    from bayescale.report import write_report
    path = write_report(fit, tmp_path / "chin.html", allocation={"budgets": [1e18, 1e20], "target_losses": [2.6],
                                                                   "references": {"truth": TRUTH}})
    text = path.read_text()
    for heading in ("Compute-optimal allocation", "Parameter posteriors", "Posterior predictive check"):
        assert f"<h2>{heading}</h2>" in text
    assert "<h2>Fit and forecast bands</h2>" not in text
    assert len(re.findall("data:image/png;base64,", text)) >= 5
    with pytest.raises(ValueError, match="unknown allocation option"):
        write_report(fit, tmp_path / "bad.html", allocation={"budget": [1e20]})


def test_saved_two_variable_fit_round_trips(sim_fit, tmp_path):
    from bayescale.io import load_fit, save_fit

    save_fit(sim_fit, tmp_path / "chin.nc")
    back = load_fit(tmp_path / "chin.nc")
    assert back.spec == sim_fit.spec and back.spec.law == "chinchilla"
    pd.testing.assert_frame_equal(back.compute_optimal([1e21, 1e23]), sim_fit.compute_optimal([1e21, 1e23]))


# ---- real data: the acceptance configuration of issue #3 -------------------------------------
EPOCH = {"E": (1.817, 0.026), "alpha": (0.348, 0.015), "beta": (0.366, 0.021)}  # Epoch's refit (SE)


def test_chinchilla_points_default_fit_converges_and_agrees_with_epoch():
    """All 245 reconstructed Chinchilla runs, Student-t, default sampler settings (about 10 s)."""
    from pathlib import Path

    from bayescale.inference import ESS_MIN, RHAT_MAX

    runs = load_runs(Path(__file__).resolve().parents[1] / "data" / "chinchilla_epoch.csv.gz", scale="compute_flops")
    fit = fit_law(runs, law="chinchilla", likelihood="student_t", settings=SamplerSettings(seed=0))
    d = fit.diagnostics
    assert d.max_rhat <= RHAT_MAX and d.min_ess_bulk >= ESS_MIN and d.n_divergent == 0, str(d)
    draws = fit.natural_draws()
    for name, (value, se) in EPOCH.items():
        assert abs(np.median(draws[name]) - value) <= 2 * se, (name, np.median(draws[name]))
