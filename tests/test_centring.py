"""Data-driven centring of the pinned parameters (``bayescale.centring``): the rule, and models without centred sites."""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from bayescale import SamplerSettings, fit_law, load_runs
from bayescale.backtest import holdout_mask
from bayescale.model import model_data
from bayescale.pymc_model import build_pymc_model
from bayescale.simulate import simulate_runs
from bayescale.spec import ModelSpec

DATA = Path(__file__).resolve().parents[1] / "data"
SCALES = np.geomspace(1e18, 1e21, 6)


def crossed_truth(a, floors) -> pd.DataFrame:
    """4 datasets x 3 eval sets with the given coefficients ``a`` and floors, alpha 0.3."""
    cells = [(f"d{i}", f"e{j}") for i in range(4) for j in range(3)]
    return pd.DataFrame({"dataset": [c[0] for c in cells], "eval_set": [c[1] for c in cells],
                         "loss_floor": floors, "a": a, "alpha": 0.3})


def spec_of(truth, scales=SCALES, noise_sd=0.005) -> ModelSpec:
    df, _ = simulate_runs(scales=scales, law_params=truth, noise_sd=noise_sd, seed=1)
    return ModelSpec.from_runs(load_runs(df, scale="compute_flops", groups=["dataset", "eval_set"]))


def test_shared_slopes_are_non_centred_distinct_ones_centred():
    rng = np.random.default_rng(0)
    floors = rng.uniform(1.5, 3.0, 12)
    same = spec_of(crossed_truth(np.full(12, 2e5), floors))
    assert same.centered == ("loss_mid",), same.centered  # one slope for all curves: a funnel if centred
    distinct = spec_of(crossed_truth(2e5 * np.exp(rng.normal(0.0, 0.8, 12)), floors))
    assert distinct.centered == ("loss_mid", "log_slope"), distinct.centered


def test_too_few_runs_to_tell_centres_the_pinned_parameters():
    truth = crossed_truth(np.full(12, 2e5), np.full(12, 2.0))
    assert spec_of(truth, scales=SCALES[:3]).centered == ("loss_mid", "log_slope")  # 3 runs, 3 parameters


def test_real_data_decisions():
    """Routed LMs share their log slopes beyond the router and expert-count effects; Gadre's curves do not."""
    moe = load_runs(DATA / "moe_routed_final.csv.gz", scale="params", groups=["architecture", "num_experts"])
    assert ModelSpec.from_runs(moe.subset(~holdout_mask(moe, 1))).centered == ("loss_mid",)
    gadre = load_runs(DATA / "gadre_loss.csv.gz", scale="compute_flops", groups=["train_dataset", "eval_set"],
                      query="tokens_per_param == 20")
    assert ModelSpec.from_runs(gadre).centered == ("loss_mid", "log_slope")


def test_a_model_without_centred_parameters_samples_in_both_engines():
    df, _ = simulate_runs(3, SCALES, noise_sd=0.01, seed=3)
    runs = load_runs(df, scale="compute_flops", groups=["family"])
    spec = dataclasses.replace(ModelSpec.from_runs(runs), centered=())
    names = {v.name for v in build_pymc_model(spec, model_data(runs, spec)).free_RVs}
    assert names == {"mu", "sd_cell", "z_cell", "sigma"}
    fit = fit_law(runs, spec=spec, settings=SamplerSettings(chains=2, warmup=300, draws=300, seed=0))
    assert "cell_centered" not in fit.tree.posterior and fit.tree.posterior["z_cell"].shape[-2:] == (3, 3)
    assert np.isfinite(fit.forecast([1e22], group=("A",))["median"]).all()
