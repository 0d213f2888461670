"""Tests for bayescale.plots and bayescale.report on one small synthetic fit."""

import html
import os
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from bayescale import SamplerSettings, fit_law, load_runs, plots
from bayescale.report import write_report

pytestmark = pytest.mark.filterwarnings("ignore::bayescale.inference.ConvergenceWarning")

SCALES = np.geomspace(1e18, 1e21, 6)
TRUE = {"A": (1.8, 1000.0, 0.15), "B": (2.1, 800.0, 0.14)}  # L_inf, a, alpha per group


def law(x, e, a, alpha):
    return e + a * x ** -alpha


def make_df(scales=SCALES, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame([{"eval_set": g, "compute": x, "loss": law(x, *p) + rng.normal(0, 0.01)}
                         for g, p in TRUE.items() for x in scales])


@pytest.fixture(scope="module")
def fit():
    runs = load_runs(make_df(), scale="compute", groups=["eval_set"])
    return fit_law(runs, settings=SamplerSettings(chains=2, warmup=200, draws=200, seed=0))


@pytest.fixture(scope="module")
def heldout():
    return make_df(scales=[1e22, 1e23], seed=1)


@pytest.fixture(scope="module")
def report_text(fit, heldout, tmp_path_factory):
    path = tmp_path_factory.mktemp("rep") / "new" / "sub" / "report.html"  # parents do not exist yet
    out = write_report(fit, path, title="Synthetic <test> report", heldout=heldout,
                       tables={"errors & coverage": pd.DataFrame({"err": [0.01, 0.02]})},
                       notes=["first note", "a <b>tagged</b> note"])
    assert out == path and path.is_file()
    return path.read_text(encoding="utf-8")


def test_report_is_self_contained_html_with_all_sections(report_text):
    assert report_text.startswith("<!DOCTYPE html>") and report_text.rstrip().endswith("</html>")
    for heading in ["Data", "Diagnostics", "Fit and forecast bands", "Parameter posteriors", "Rank plots",
                    "Posterior predictive check", "Parameter summary", "Tables", "Notes"]:
        assert f"<h2>{heading}</h2>" in report_text, heading
    assert report_text.count("data:image/png;base64,") >= 4
    assert not re.search(r"(src|href)=\"(https?:)?//", report_text)  # no external resources
    # caller's title, tables and notes are present and escaped
    assert "<h1>Synthetic &lt;test&gt; report</h1>" in report_text
    assert "<h3>errors &amp; coverage</h3>" in report_text
    assert "a &lt;b&gt;tagged&lt;/b&gt; note" in report_text and "<b>tagged</b>" not in report_text


def test_report_shows_diagnostics_numbers(fit, report_text):
    diag = fit.diagnostics
    assert html.escape(str(diag)) in report_text
    assert f"max R-hat {diag.max_rhat:.3f}" in report_text
    assert f"divergences {diag.n_divergent}" in report_text
    for problem in diag.problems():
        assert html.escape(problem) in report_text
    worst_rhat = diag.table["r_hat"].idxmax()
    worst_ess = diag.table["ess_bulk"].idxmin()
    assert html.escape(worst_rhat) in report_text and html.escape(worst_ess) in report_text
    assert f"{diag.max_rhat:.4g}" in report_text
    assert f"{len(fit.runs.data)} runs in 2 cell(s)" in report_text


def test_failed_render_leaves_old_report_untouched(fit, tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_bytes(b"<html>old report</html>")

    def boom(*args, **kwargs):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(plots, "plot_ppc", boom)
    with pytest.raises(RuntimeError, match="plot failed"):
        write_report(fit, path)
    assert path.read_bytes() == b"<html>old report</html>"
    assert os.listdir(tmp_path) == ["report.html"]
    assert plt.get_fignums() == []


def test_failed_write_removes_temp_file(fit, tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_bytes(b"old")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)  # the atomic writer (bayescale.io) calls os.replace
    with pytest.raises(OSError, match="disk full"):
        write_report(fit, path)
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["report.html"]


def test_plot_functions_return_figures(fit, heldout):
    bands = plots.plot_fit_bands(fit, heldout=heldout, extrapolate_to=1e23)
    assert isinstance(bands, Figure) and len(bands.axes) == 3  # 2 cells + population panel
    assert all(ax.get_xscale() == "log" for ax in bands.axes)
    assert bands.axes[0].get_xlim()[1] >= 1e23
    assert len(plots.plot_fit_bands(fit, max_panels=1).axes) == 2

    params = plots.plot_param_posteriors(fit)
    assert isinstance(params, Figure) and len(params.axes) == 3
    assert params.axes[1].get_xscale() == "log"  # a

    rank = plots.plot_trace_rank(fit)
    assert isinstance(rank, Figure) and len([ax for ax in rank.axes if ax.axison]) >= 7  # mu x3, sd_cell x3, sigma

    ppc = plots.plot_ppc(fit)
    assert isinstance(ppc, Figure) and len(ppc.axes) >= 1
    assert re.search(r"covers \d+/12 runs", ppc.axes[0].get_title())
    assert plt.get_fignums() == []  # nothing left registered with pyplot
