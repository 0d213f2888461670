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
