"""Bounded-metric laws (bayescale.metrics) on simulated tasks with known thresholds.

- threshold posteriors (halfway and clearly-above-chance levels) cover the truth at the nominal
  90% rate: exact two-sided binomial test at the 1% level over 2 x 12 intervals of one fit;
- a task that stays at chance in the data is reported "not emerged in range" with a lower bound;
- the chained loss -> metric band is at least as wide as either stage's band alone;
- the sampled ``level`` is the logit of the fraction of the range reached at the reference point.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit
from scipy.stats import binomtest

from bayescale import ConvergenceWarning, SamplerSettings, fit_law, load_runs
from bayescale.metrics import LEVELS, _prepare, fit_metric, plot_emergence, sigmoid_metric

SMALL = SamplerSettings(chains=4, warmup=400, draws=300, seed=0)
N_TASKS, N_EXAMPLES = 12, 400
LOG_X = np.linspace(np.log(1e18), np.log(1e23), 9)


def simulate_tasks(seed: int = 1) -> tuple[pd.DataFrame, dict]:
    """12 tasks with thresholds inside the data, plus one ("flat") whose threshold is far beyond it."""
    rng = np.random.default_rng(seed)
    ref = LOG_X.mean()
    rows, truth = [], {}
    z_stars = list(rng.uniform(-3.5, 3.5, N_TASKS)) + [15.0]  # flat: 15 e-folds past the middle
    ks = list(np.exp(rng.normal(0.0, 0.3, N_TASKS))) + [1.0]
    for t, (zs, k) in enumerate(zip(z_stars, ks)):
        name = f"task{t:02d}" if t < N_TASKS else "flat"
        chance = 0.25 if t % 2 else 0.0
        p = sigmoid_metric(LOG_X - ref, chance, 1.0, zs, k)
        correct = rng.binomial(N_EXAMPLES, p)
        rows += [{"task": name, "compute": np.exp(lx), "metric": c / N_EXAMPLES, "chance_level": chance,
                  "n_examples": N_EXAMPLES} for lx, c in zip(LOG_X, correct)]
        truth[name] = {lvl: float(np.exp(ref + zs + logit(f) / k)) for lvl, f in LEVELS.items()}
    return pd.DataFrame(rows), truth


@pytest.fixture(scope="module")
def task_fit():
    df, truth = simulate_tasks()
    mfit = fit_metric(df, x="compute", groups=["task"], n_examples="n_examples", likelihood="binomial",
                      settings=SMALL)
    return mfit, truth


def test_threshold_coverage(task_fit):
    mfit, truth = task_fit
    assert mfit.diagnostics.n_divergent == 0
    covered, n = 0, 0
    for t in range(N_TASKS):
        for level, frac in LEVELS.items():
            lo, hi = np.quantile(mfit.threshold_draws(frac, group=f"task{t:02d}"), [0.05, 0.95])
            covered += int(lo <= truth[f"task{t:02d}"][level] <= hi)
            n += 1
    assert binomtest(covered, n, 0.9).pvalue > 0.01, f"coverage {covered}/{n}"
    # verdicts: a threshold well inside the data (> 1 e-fold from its ends) is reported with its interval
    table = mfit.thresholds(groups=[f"task{t:02d}" for t in range(N_TASKS)])
    for _, row in table.iterrows():
        true = np.log(truth[row["task"]][row["level"]])
        if LOG_X.min() + 1 < true < LOG_X.max() - 1:
            assert row["verdict"] == "emerged in range", row.to_dict()
            assert row["lower_90"] < row["median"] < row["upper_90"]


def test_flat_task_not_emerged(task_fit):
    mfit, truth = task_fit
    table = mfit.thresholds(groups=["flat"])
    half = table.set_index("level").loc["half"]
    assert half["verdict"] == "not emerged in range"
    assert np.isnan(half["median"])  # no made-up number
    assert half["lower_bound"] == pytest.approx(np.exp(LOG_X.max()))
    assert half["p_above_lower_bound"] > 0.9
    assert truth["flat"]["half"] > half["lower_bound"]
    # the probability of having emerged by the largest observed budget is small
    assert mfit.emergence_probability(np.exp(LOG_X.max()), level=0.5, group="flat")[0] < 0.1


def test_forecast_and_plot(task_fit):
    mfit, _ = task_fit
    fc = mfit.forecast([1e20, 1e24], group="task01", n_examples=N_EXAMPLES)
    assert list(fc["task"]) == ["task01", "task01"]
    assert np.all(fc["pred_lower_90"] <= fc["lower_90"] + 1e-9) and np.all(fc["upper_90"] <= fc["pred_upper_90"] + 1e-9)
    assert np.all((fc["median"] >= 0.25) & (fc["median"] <= 1.0))
    with pytest.raises(ValueError, match="chance"):  # tasks differ in chance: an unseen task's is unknown
        mfit.forecast([1e21], group="unseen_task")
    fig = plot_emergence(mfit, groups=["task00", "flat"], extend_to=1e25)
    assert len(fig.axes) == 2


def test_reference_parametrization_and_cell_diagnostics(task_fit):
    mfit, _ = task_fit
    # level is the logit of the fraction of the range reached at z_ref; z_star, k follow from it
    t = mfit.theta_draws("task03")
    at_ref = sigmoid_metric(mfit.spec.z_ref, t["chance"], 1.0, t["z_star"], t["k"])
    np.testing.assert_allclose(logit((at_ref - t["chance"]) / (1.0 - t["chance"])), t["level"], atol=1e-8)
    cells = mfit.cell_diagnostics().set_index("task")
    assert len(cells) == N_TASKS + 1 and set(cells.columns) >= {"max_rhat", "min_ess_bulk", "ok", "n_x", "max_frac"}
    assert cells.loc["flat", "max_frac"] < 0.05 and cells.loc["flat", "n_x"] == len(LOG_X)


def test_chained_band_wider_than_each_stage():
    rng = np.random.default_rng(3)
    compute = np.geomspace(1e18, 1e21, 6)
    loss = 2.0 + 30.0 * compute ** -0.07 + rng.normal(0, 0.01, compute.size)
    loss_fit = fit_law(load_runs(pd.DataFrame({"compute": compute, "loss": loss}), scale="compute"),
                       settings=SamplerSettings(chains=4, warmup=800, draws=500, seed=0, target_accept=0.99))
    link_loss = np.linspace(loss.min() - 0.2, loss.max(), 10)
    p = sigmoid_metric(-(link_loss - link_loss.mean()), 0.25, 1.0, 0.1, 5.0)
    link_df = pd.DataFrame({"task": "t", "loss": link_loss, "metric": rng.binomial(300, p) / 300,
                            "chance_level": 0.25, "n_examples": 300})
    link = fit_metric(link_df, x="loss", link="loss", groups=[], n_examples="n_examples", settings=SMALL)
    target = [1e22, 1e23]
    chained = link.chained_draws(loss_fit, target)
    loss_draws = loss_fit.law_draws(target)
    t = link.theta_draws()
    link_only = link.curve_draws(np.median(loss_draws, axis=0)[:1])[:, 0]
    loss_only = sigmoid_metric(link.spec.to_z(loss_draws[:, 0]), 0.25, 1.0, np.median(t["z_star"]), np.median(t["k"]))

    def width(d):
        lo, hi = np.quantile(d, [0.05, 0.95])
        return hi - lo

    assert width(chained[:, 0]) >= width(link_only)
    assert width(chained[:, 0]) >= width(loss_only)
    fc = link.chained_forecast(loss_fit, target, n_examples=300)
    assert np.all(fc["pred_upper_90"] - fc["pred_lower_90"] >= fc["upper_90"] - fc["lower_90"] - 1e-9)
    with pytest.raises(ValueError, match="fraction"):
        link.threshold_draws(1.5)
    assert len(link.cell_diagnostics()) == 1


def test_family_effects_centred_when_data_rich():
    """Crossed family x task: a factor with >= 10 levels and >= 20 rows per level gets centred zero-sum
    effects (``effect_family``; ``z_family`` = effect / sd is recorded for the hierarchy's other uses),
    the fitted effects on ``level`` order the families as simulated, and a family not in the data still
    gets a (population) forecast. Mechanics only: on such tables (precise binomial data) the non-centred
    effects mix better at the default settings (README, "Downstream metrics"), so short chains here
    are not checked for convergence."""
    rng = np.random.default_rng(3)
    log_x = LOG_X[::2][:-1]  # 4 computes per curve, like the families of a real table
    ref, families = log_x.mean(), [f"f{i:02d}" for i in range(12)]
    shifts = dict(zip(families, np.linspace(-2, 2, len(families))))  # family effect on z_star
    rows = []
    for fam, shift in shifts.items():
        for t, (zs, k) in enumerate(zip(rng.uniform(-2, 2, 5), np.exp(rng.normal(0, 0.3, 5)))):
            p = sigmoid_metric(log_x - ref, 0.25, 1.0, zs - shift, k)
            rows += [{"family": fam, "task": f"t{t}", "compute": np.exp(lx), "metric": c / 100,
                      "chance_level": 0.25, "n_examples": 100} for lx, c in zip(log_x, rng.binomial(100, p))]
    df = pd.DataFrame(rows)

    def auto(table):
        return _prepare(table, "compute", "metric", ("family", "task"), "chance_level", "n_examples", "log", 1.0,
                        "auto", "auto")[0].centered_factors

    assert auto(df) == ("family",)  # 12 families of 20 rows; 5 tasks are too few levels
    assert auto(df[df["family"].isin(families[:6])]) == ()  # 6 families
    assert auto(df[df["task"].isin(["t0", "t1", "t2", "t3"])]) == ()  # 16 rows per family
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mfit = fit_metric(df, x="compute", groups=["family", "task"], n_examples="n_examples",
                          settings=SamplerSettings(chains=2, warmup=300, draws=300, seed=0))
    post = mfit.tree.posterior
    assert "effect_task" not in post and np.allclose(post["effect_family"] / post["sd_family"], post["z_family"])
    level_effect = post["effect_family"].sel(metric_param="level").mean(("chain", "draw")).values
    assert np.corrcoef(level_effect, list(shifts.values()))[0, 1] > 0.9, level_effect
    table = mfit.forecast([1e23], group=("new_family", "t0"))
    assert table["lower_90"].iloc[0] < table["median"].iloc[0] < table["upper_90"].iloc[0]
