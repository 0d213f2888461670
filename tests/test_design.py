"""Experiment design (bayescale.design): preposterior ranking of candidate runs by importance reweighting."""

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from bayescale import SamplerSettings, fit_law, load_runs
from bayescale.design import ReweightingWarning, band_width, rank_candidates, refit_with_runs
from bayescale.simulate import simulate_from_fit, simulate_runs

SCALES = np.geomspace(1e18, 1e20, 4)
TARGET = 1e22  # 100x the largest fitted scale
SHORT = SamplerSettings(chains=2, warmup=300, draws=300, seed=0)


@pytest.fixture(scope="module")
def fit():
    df, _ = simulate_runs(4, SCALES, noise_sd=0.02, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains: convergence warnings are expected
        return fit_law(load_runs(df, scale="compute_flops", groups=["family"]), settings=SHORT)


def _cands(rows, cost=None):
    df = pd.DataFrame(rows, columns=["family", "compute_flops"])
    if cost is not None:
        df["cost"] = cost
    return df


@pytest.mark.filterwarnings("ignore::bayescale.design.ReweightingWarning")  # a run far below the data pins
def test_run_at_target_beats_far_run_in_other_group(fit):
    table = rank_candidates(fit, _cands([("A", TARGET), ("B", 1e16)], cost=1.0), TARGET, "A", n_sims=100)
    by = table.set_index("family")
    se = np.hypot(by.loc["A", "shrinkage_se"], by.loc["B", "shrinkage_se"])
    assert by.loc["A", "shrinkage"] > by.loc["B", "shrinkage"] + 4 * se
    assert by.loc["A", "shrinkage_frac"] > 0.2  # a run at the target pins the law there
    assert list(table["family"]) == ["A", "B"]  # equal costs: ranked by shrinkage
    assert np.allclose(table["current_width"], band_width(fit, TARGET, "A"))


@pytest.mark.filterwarnings("ignore::bayescale.design.ReweightingWarning")  # the run at 1e17 pins curve C
def test_shrinkage_nonnegative_in_expectation(fit):
    cands = _cands([("A", 1e19), ("A", 1e21), ("B", 1e21), ("C", 1e17), ("new", 1e21)])
    table = rank_candidates(fit, cands, TARGET, "A", n_sims=200)
    assert (table["shrinkage"] > -3 * table["shrinkage_se"]).all(), table[["family", "shrinkage", "shrinkage_se"]]
    assert (table["expected_width"] > 0).all() and (table["ess_median"] > 0).all()
    pop = rank_candidates(fit, cands, TARGET, None, band="predictive", n_sims=200)
    assert (pop["shrinkage"] > -3 * pop["shrinkage_se"]).all(), pop[["family", "shrinkage", "shrinkage_se"]]


def test_ranking_is_by_shrinkage_per_cost(fit):
    # the run at the target shrinks most, but at 1000x the cost of a run inside the data range
    cands = _cands([("A", TARGET), ("A", 1e20), ("A", 1e20)], cost=[1e22, 1e19, 2e19])
    table = rank_candidates(fit, cands, TARGET, "A", n_sims=100)
    assert table["shrinkage_per_cost"].is_monotonic_decreasing
    assert np.allclose(table["shrinkage_per_cost"], table["shrinkage"] / table["cost"])
    assert np.allclose(table["shrinkage_per_cost_se"], table["shrinkage_se"] / table["cost"])
    assert list(table["candidate"]) == [1, 2, 0]  # the same run at twice the cost ranks below
    assert table.loc[table["candidate"] == 0, "shrinkage"].item() == table["shrinkage"].max()
    # cost defaults to the scale column when that is compute
    default = rank_candidates(fit, cands.drop(columns="cost"), TARGET, "A", n_sims=20)
    assert np.allclose(default.sort_values("candidate")["cost"], cands["compute_flops"])


def test_same_seed_same_table(fit):
    cands = _cands([("A", 1e21), ("new", 1e21)])
    a = rank_candidates(fit, cands, TARGET, "A", n_sims=50, seed=3)
    b = rank_candidates(fit, cands, TARGET, "A", n_sims=50, seed=3)
    pd.testing.assert_frame_equal(a, b)


def test_unseen_group_candidate_informs_its_own_new_curve(fit):
    cands = _cands([("new", TARGET), ("A", TARGET)])
    with pytest.warns(ReweightingWarning, match="candidate 0"):  # pinning a new curve moves the posterior far
        table = rank_candidates(fit, cands, TARGET, "new", n_sims=100)
    by = table.set_index("family")
    assert bool(by.loc["new", "new_group"]) and not bool(by.loc["A", "new_group"])
    assert by.loc["new", "shrinkage_frac"] > 0.5  # the run observes the target curve itself
    assert by.loc["A", "shrinkage_frac"] < 0.2    # another curve says little about a new one


@pytest.mark.filterwarnings("ignore::bayescale.design.ReweightingWarning")
def test_run_observed_on_several_curves_is_one_candidate(fit):
    cands = pd.DataFrame({"family": ["A", "B", "A", "C"], "compute_flops": [1e21, 1e21, 1e21, 1e21],
                          "run": ["both", "both", "A only", "C only"]})
    table = rank_candidates(fit, cands, TARGET, "A", run="run", n_sims=200).set_index("candidate")
    assert table.loc["both", "family"] == "A+B" and table.loc["both", "n_rows"] == 2
    assert table.loc["both", "compute_flops"] == 1e21 and table.loc["both", "cost"] == 1e21
    se = np.hypot(table.loc["both", "shrinkage_se"], table.loc["C only", "shrinkage_se"])
    assert table.loc["both", "shrinkage"] > table.loc["C only", "shrinkage"] + 4 * se  # it observes A
    se = np.hypot(table.loc["both", "shrinkage_se"], table.loc["A only", "shrinkage_se"])
    assert table.loc["both", "shrinkage"] > table.loc["A only", "shrinkage"] - 3 * se  # B's row adds, never removes
    with pytest.raises(ValueError, match=r"run 'both': its rows \[0, 1\] give different costs"):
        rank_candidates(fit, cands.assign(cost=[1.0, 2.0, 1.0, 1.0]), TARGET, "A", run="run", n_sims=10)
    with pytest.raises(ValueError, match="lack the run column 'job'"):
        rank_candidates(fit, cands, TARGET, "A", run="job", n_sims=10)


@pytest.mark.parametrize("change, match", [
    (lambda d: d.drop(columns="family"), r"lack column\(s\) \['family'\]"),
    (lambda d: d.assign(cost=[1.0, 0.0]), r"column 'cost', row 1: value 0\.0 must be a finite number > 0"),
    (lambda d: d.assign(cost=[1.0, "x"]), r"column 'cost', row 1: value 'x'"),
    (lambda d: d.assign(compute_flops=[-1.0, 1e20]), r"column 'compute_flops', row 0: value -1\.0"),
    (lambda d: d.assign(family=["A", None]), r"column 'family', row 1: value (None|nan) is a missing group label"),
    (lambda d: d.set_axis(["r1", "r2"]).assign(cost=[np.inf, 1.0]), r"column 'cost', row 'r1': value inf"),
])
def test_bad_candidates_name_column_row_value(fit, change, match):
    with pytest.raises(ValueError, match=match):
        rank_candidates(fit, change(_cands([("A", 1e20), ("B", 1e20)], cost=1.0)), TARGET, "A", n_sims=10)


def test_bad_arguments(fit):
    cands = _cands([("A", 1e20)], cost=1.0)
    with pytest.raises(ValueError, match="band must be"):
        rank_candidates(fit, cands, TARGET, "A", band="wide")
    with pytest.raises(ValueError, match="scales must be finite and > 0"):
        rank_candidates(fit, cands, -1.0, "A")
    with pytest.raises(ValueError, match="non-empty DataFrame"):
        rank_candidates(fit, cands.iloc[:0], TARGET, "A")
    with pytest.raises(ValueError, match="mass must be in"):
        rank_candidates(fit, cands, TARGET, "A", mass=1.5)


def test_cost_needed_when_scale_is_not_compute(fit):
    by_params = replace(fit, spec=replace(fit.spec, scale="params", covariates=("params",)))  # same fit, scale column "params"
    with pytest.raises(ValueError, match=r"lack the cost column 'cost' \(FLOPs\)"):
        rank_candidates(by_params, pd.DataFrame({"family": ["A"], "params": [1e20]}), TARGET, "A")


@pytest.mark.slow
def test_predicted_shrinkage_matches_refits(fit):
    """Simulate the candidate run from the fit, refit with it, and compare realised with predicted shrinkage."""
    scale, reps = 1e21, 10
    pred = rank_candidates(fit, _cands([("A", scale)]), TARGET, "A", n_sims=400).iloc[0]
    current = band_width(fit, TARGET, "A")
    widths = []
    for r in range(reps):
        new_run, _ = simulate_from_fit(fit, [scale], seed=100 + r, groups=[("A",)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            refit = refit_with_runs(fit, new_run)
        assert refit.spec.priors == fit.spec.priors and refit.spec.grid == fit.spec.grid
        assert refit.runs.n_rows == fit.runs.n_rows + 1
        widths.append(band_width(refit, TARGET, "A"))
    realised = current - np.asarray(widths)
    # realised - predicted = E[W] - mean refit width: the current width cancels, E[W]'s error remains
    se = np.hypot(pred["expected_width_se"], realised.std(ddof=1) / np.sqrt(reps))
    assert abs(realised.mean() - pred["shrinkage"]) < 3 * se, (realised.mean(), pred["shrinkage"], se)
    assert realised.mean() > 0.1 * current  # the run does shrink the band
