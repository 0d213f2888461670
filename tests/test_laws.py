"""The reference parametrization of the saturating law is exactly L_inf + a * x**-alpha."""

import numpy as np
import pytest

from bayescale.laws import log_scale_to_reach, natural_params, saturating_loss

GRID = np.linspace(-3.0, 3.0, 5)
LOG_X_REF = 45.0


@pytest.mark.parametrize("loss_mid,slope,alpha", [(3.0, 0.3, 0.2), (2.5, 0.05, 1.2), (4.0, 1.0, 1e-4)])
def test_reference_form_equals_natural_form(loss_mid, slope, alpha):
    u = np.linspace(-5, 10, 31)
    nat = natural_params(loss_mid, slope, alpha, GRID, LOG_X_REF)
    x = np.exp(u + LOG_X_REF)
    expected = nat["loss_floor"] + nat["a"] * x ** (-nat["alpha"])
    np.testing.assert_allclose(saturating_loss(u, loss_mid, slope, alpha, GRID), expected, rtol=1e-9, atol=1e-8)  # cancellation as alpha -> 0


def test_parameters_mean_what_they_say():
    """loss_mid is the mean loss over the grid, slope the least-squares slope -dL/du there."""
    loss = saturating_loss(GRID, 3.0, 0.3, 0.4, GRID)
    assert loss.mean() == pytest.approx(3.0, abs=1e-12)
    assert -np.polyfit(GRID, loss, 1)[0] == pytest.approx(0.3, rel=1e-10)


def test_log_scale_to_reach_inverts_the_law():
    u = log_scale_to_reach(np.array([2.9, 2.6]), 3.0, 0.3, 0.3, GRID)
    np.testing.assert_allclose(saturating_loss(u, 3.0, 0.3, 0.3, GRID), [2.9, 2.6], rtol=1e-10)
    floor = natural_params(3.0, 0.3, 0.3, GRID, LOG_X_REF)["loss_floor"]
    assert np.isinf(log_scale_to_reach(floor - 0.01, 3.0, 0.3, 0.3, GRID))


# ---- the law registry and the two-variable law -------------------------------------------------
from bayescale.laws import CHINCHILLA, SATURATING, get_law  # noqa: E402


def test_saturating_law_object_is_the_one_variable_form():
    theta = {"loss_mid": 3.0, "log_slope": np.log(0.3), "log_alpha": np.log(0.2)}
    u = np.linspace(-5, 10, 31)
    np.testing.assert_allclose(SATURATING.mean(theta, {"u": u}, [GRID]), saturating_loss(u, 3.0, 0.3, 0.2, GRID),
                               rtol=1e-14)
    nat = SATURATING.natural(theta, [GRID], [LOG_X_REF])
    expected = natural_params(3.0, 0.3, 0.2, GRID, LOG_X_REF)
    assert list(nat) == list(SATURATING.natural_names) == ["loss_floor", "a", "alpha"]
    for k in nat:
        assert nat[k] == pytest.approx(expected[k], rel=1e-12)
    assert SATURATING.params == ("loss_mid", "log_slope", "log_alpha")


@pytest.mark.parametrize("grid", [(0.0,), (0.7,), tuple(np.linspace(-2.0, 3.0, 5))])
def test_chinchilla_reference_form_equals_natural_form(grid):
    theta = {"loss_mid": 2.6, "log_slope_N": np.log(0.12), "log_slope_D": np.log(0.15),
             "log_alpha": np.log(0.34), "log_beta": np.log(0.37)}
    refs = (np.log(1e9), np.log(2e10))
    grids = [np.asarray(grid), np.asarray(grid)]
    nat = CHINCHILLA.natural(theta, grids, refs)
    n, d = np.geomspace(1e7, 1e12, 7), np.geomspace(1e8, 1e13, 7)
    natural = nat["E"] + nat["A"] * n ** -nat["alpha"] + nat["B"] * d ** -nat["beta"]
    cov = {"uN": np.log(n) - refs[0], "uD": np.log(d) - refs[1]}
    np.testing.assert_allclose(CHINCHILLA.mean(theta, cov, grids), natural, rtol=1e-12)


def test_one_point_grid_means_value_and_partial_slopes_at_the_reference():
    theta = {"loss_mid": 2.6, "log_slope_N": np.log(0.12), "log_slope_D": np.log(0.15),
             "log_alpha": np.log(0.34), "log_beta": np.log(0.37)}
    grids = [np.zeros(1), np.zeros(1)]
    f = lambda un, ud: CHINCHILLA.mean(theta, {"uN": np.asarray(un), "uD": np.asarray(ud)}, grids)  # noqa: E731
    h = 1e-6
    assert f(0.0, 0.0) == pytest.approx(2.6, abs=1e-12)
    assert -(f(h, 0.0) - f(-h, 0.0)) / (2 * h) == pytest.approx(0.12, rel=1e-7)
    assert -(f(0.0, h) - f(0.0, -h)) / (2 * h) == pytest.approx(0.15, rel=1e-7)
    assert get_law("chinchilla") is CHINCHILLA
    with pytest.raises(ValueError, match="unknown law"):
        get_law("kaplan")


@pytest.mark.parametrize("name", ["saturating", "chinchilla", "power", "broken"])
def test_mean_by_cell_equals_mean_of_gathered_parameters(name):
    """The model's per-cell evaluation (``Law.mean_by_cell``) is the law's ``mean``, row by row."""
    from bayescale.laws import get_law

    law, rng = get_law(name), np.random.default_rng(0)
    n_cells, n_rows = 3, 40
    theta = {p: rng.normal(-1.0 if p != "loss_mid" else 3.0, 0.3, size=(2, n_cells)) for p in law.params}
    cell = rng.integers(0, n_cells, n_rows)
    covariates = {c: rng.uniform(-3, 3, n_rows) for c in law.covariates}
    grids = [np.zeros(1) if law.one_point_grid else np.linspace(-3, 3, 5) for _ in law.covariates]
    by_cell = law.mean_by_cell(theta, covariates, grids, cell)
    by_row = law.mean({p: v[..., cell] for p, v in theta.items()}, covariates, grids)
    assert by_cell.shape == (2, n_rows) and np.allclose(by_cell, by_row, rtol=1e-12, atol=1e-12)
