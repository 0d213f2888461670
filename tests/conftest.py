"""Shared fits for the tests: built once per session (JAX compiles once, the disk cache helps reruns)."""

from pathlib import Path

import pytest

from bayescale import SamplerSettings, fit_law, load_runs

GADRE = Path(__file__).resolve().parents[1] / "data" / "gadre_loss.csv.gz"
GADRE_GROUPS = ["train_dataset", "eval_set"]


@pytest.fixture(scope="session")
def gadre_runs():
    """The flagship study's fitted runs: Gadre et al. losses, M = 20, models < 1e9 params (96 runs)."""
    return load_runs(GADRE, scale="compute_flops", groups=GADRE_GROUPS,
                     query="tokens_per_param == 20 and params < 1e9")


@pytest.fixture(scope="session")
def gadre_fit(gadre_runs):
    """Default-settings fit of the flagship data (the acceptance criterion's configuration)."""
    return fit_law(gadre_runs, settings=SamplerSettings(seed=0))
