"""End-to-end tests of the ``bayescale`` CLI (subprocesses) plus quick in-process checks of its input handling."""

import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayescale import cli
from bayescale.io import load_fit

ROOT = Path(__file__).resolve().parents[1]
GADRE = ROOT / "data" / "gadre_loss.csv.gz"
QUERY = "tokens_per_param == 20 and params < 1e9 and eval_set == 'c4_val'"  # 3 curves x 4 runs
TINY = ["--chains", "2", "--warmup", "200", "--draws", "100", "--seed", "0"]


def run_cli(*args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "bayescale.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def fitted(workdir):
    """``bayescale fit`` on the shipped data; 100 draws per chain cannot reach the ESS target: exit 3."""
    proc = run_cli("fit", GADRE, "--scale", "compute_flops", "--groups", "train_dataset", "--query", QUERY, *TINY,
                   "-o", "fits/gadre.nc", cwd=workdir)
    assert proc.returncode == cli.EXIT_NOT_CONVERGED, proc.stderr
    return workdir / "fits" / "gadre.nc", proc


def test_fit_writes_a_saved_fit_and_reports_progress_and_diagnostics(fitted):
    path, proc = fitted
    fit = load_fit(path)
    assert fit.spec.groups == ("train_dataset",) and len(fit.spec.cells) == 3 and fit.runs.n_rows == 12
    assert (fit.settings.chains, fit.settings.warmup, fit.settings.draws) == (2, 200, 100)
    assert "diagnostics: max R-hat" in proc.stdout and "WARNING" in proc.stdout
    for stage in ("loading runs", "sampling: 12 runs in 3 curve(s)", "writing fit", "exit code 3"):
        assert stage in proc.stderr, stage
    assert "Traceback" not in proc.stderr


def test_forecast_plan_and_report_from_the_saved_fit(fitted, workdir):
    path, _ = fitted
    fit = load_fit(path)
    proc = run_cli("forecast", path, "--scales", "1e21", "1e22", "--group", "rpj", "--group", "(new)",
                   "-o", "forecast.csv", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(workdir / "forecast.csv")
    expected = pd.concat([fit.forecast([1e21, 1e22], group=g) for g in ("rpj", None)], ignore_index=True)
    assert list(table.columns) == list(expected.columns)
    assert table["train_dataset"].tolist() == ["rpj", "rpj", "(new)", "(new)"]
    np.testing.assert_allclose(table[["median", "pred_lower_90", "pred_upper_90"]].to_numpy(),
                               expected[["median", "pred_lower_90", "pred_upper_90"]].to_numpy(), rtol=1e-12)

    proc = run_cli("plan", path, "--target-loss", "2.6", "--group", "train_dataset=rw_original", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    plan = pd.read_csv(io.StringIO(proc.stdout))  # CSV on stdout
    expected = fit.required_scale(2.6, group="rw_original")
    assert plan["train_dataset"].tolist() == ["rw_original"]
    np.testing.assert_allclose(plan["median"], expected["median"], rtol=1e-12)

    proc = run_cli("report", path, "-o", "report.html", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_bad_run_table_exits_2_with_one_clear_line(workdir):
    bad = workdir / "bad.csv"
    pd.DataFrame({"family": ["A"] * 4, "compute": [1e18, 1e19, 1e20, 1e21], "loss": [3.0, 2.5, -2.2, 2.0]}).to_csv(
        bad, index=False)
    proc = run_cli("fit", bad, "--scale", "compute", "--groups", "family", "-o", "never.nc", cwd=workdir)
    assert proc.returncode == cli.EXIT_BAD_INPUT
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert errors == ["bayescale: error: column 'loss', row 2: value -2.2 must be > 0"], proc.stderr
    assert "Traceback" not in proc.stderr and not (workdir / "never.nc").exists()


def test_simulate_writes_runs_and_truth(workdir):
    proc = run_cli("simulate", "--n-groups", "dataset=2,eval_set=2", "--scales", "1e18", "1e19", "1e20",
                   "--seed", "4", "-o", "sim.csv", "--truth", "truth.csv", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    runs, truth = pd.read_csv(workdir / "sim.csv"), pd.read_csv(workdir / "truth.csv")
    assert len(runs) == 12 and len(truth) == 4 and {"dataset", "eval_set", "compute_flops", "loss"} <= set(runs)


# ---- in-process: input handling (no sampling) ------------------------------------------------
def run_main(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args, message", [
    (["fit", GADRE, "--scale", "compute_flops", "--groups", "no_such_column"], "missing column(s) 'no_such_column'"),
    (["fit", "missing.csv", "--scale", "x"], "run table file not found: 'missing.csv'"),
    (["fit", GADRE, "--scale", "compute_flops", "--query", "params <"], "query 'params <' failed"),
    (["fit", "--scale", "x"], "no run table"),
    (["forecast", "missing.nc", "--scales", "1e21"], "fit file not found"),
    (["forecast", GADRE, "--scales", "1e21"], "is not a bayescale fit file"),
    (["simulate", "--n-groups", "many"], "--n-groups 'many'"),
])
def test_bad_input_exits_2(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(capsys, *args)
    assert code == 2 and err.splitlines()[-1].startswith("bayescale: error: ") and message in err, err


@pytest.mark.parametrize("group, message", [
    ("rpjx", "level 'rpjx' of 'train_dataset' is not in the fit; fitted levels: c4_original, rpj, rw_original"),
    ("rpj,c4_val", "gives 2 level(s); the fit has 1 factor(s)"),
    ("eval_set=c4_val", "unknown factor(s) ['eval_set']"),
])
def test_bad_group_exits_2(capsys, fitted, group, message):
    code, out, err = run_main(capsys, "forecast", fitted[0], "--scales", "1e21", "--group", group)
    assert code == 2 and message in err and not out, err
    code, out, err = run_main(capsys, "plan", fitted[0], "--target-loss", "2.5", "--group", group)
    assert code == 2 and message in err, err


def test_config_file_and_exit_code_0_when_converged(capsys, fitted, tmp_path, monkeypatch):
    """A TOML config (Parquet runs) drives ``fit``; a fit without problems exits 0 (sampling stubbed)."""
    import bayescale.fit

    saved = load_fit(fitted[0])
    good = replace(saved.diagnostics, n_divergent=0,
                   table=saved.diagnostics.table.assign(r_hat=1.0, ess_bulk=1000.0, ess_tail=1000.0))
    calls = []

    def fake_fit_law(runs, *, likelihood, settings):
        calls.append((runs, likelihood, settings))
        return replace(saved, diagnostics=good, settings=settings)

    monkeypatch.setattr(bayescale.fit, "fit_law", fake_fit_law)
    study = tmp_path / "study"
    study.mkdir()
    pd.read_csv(GADRE).astype({"compute_flops": float}).to_parquet(study / "runs.parquet")
    (study / "study.toml").write_text(
        'runs = "runs.parquet"\nout = "out/fit.nc"\nscale = "compute_flops"\ngroups = ["train_dataset"]\n'
        f'query = "{QUERY}"\nlikelihood = "student_t"\nchains = 3\ndraws = 50\ntarget-accept = 0.9\n'
        'regularize_mass_matrix = false\n')
    code, out, err = run_main(capsys, "fit", "--config", study / "study.toml", "--seed", "7")
    assert code == 0, err
    runs, likelihood, settings = calls[0]
    assert runs.n_rows == 12 and likelihood == "student_t"
    assert (settings.chains, settings.draws, settings.seed, settings.target_accept) == (3, 50, 7, 0.9)
    assert settings.regularize_mass_matrix is False
    assert (study / "out" / "fit.nc").is_file() and "diagnostics:" in out

    (study / "bad.json").write_text(json.dumps({"runs": "runs.parquet", "scale": "compute_flops", "chainz": 2}))
    code, out, err = run_main(capsys, "fit", "--config", study / "bad.json")
    assert code == 2 and "unknown key 'chainz'" in err


def test_forecast_calibrate_widens_the_bands_beyond_the_data(capsys, fitted, tmp_path):
    """``--calibrate`` refits without each curve's largest scale and widens the bands beyond the fitted runs."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the refit has 3 runs per curve and tiny settings: it warns
        code, out, err = run_main(capsys, "forecast", fitted[0], "--scales", "1e17", "1e22", "--group", "rpj",
                                  "--calibrate", "-o", tmp_path / "cal.csv")
    assert code == 0, err
    assert "extrapolation error:" in err and "% per decade beyond the data" in err
    cal = pd.read_csv(tmp_path / "cal.csv")
    plain = load_fit(fitted[0]).forecast([1e17, 1e22], group="rpj")
    width = lambda t: (t["pred_upper_90"] - t["pred_lower_90"]).to_numpy()  # noqa: E731
    assert cal["scale_over_max_fitted"].iloc[0] < 1 < cal["scale_over_max_fitted"].iloc[1]
    np.testing.assert_allclose(width(cal)[0], width(plain)[0])  # inside the data: unchanged
    assert width(cal)[1] > width(plain)[1]
    np.testing.assert_allclose(cal["median"], plain["median"])


def test_plan_calibrate_includes_the_extrapolation_error(capsys, fitted, tmp_path):
    """``plan --calibrate``: the same refit, then the required scale with the law's extrapolation error."""
    import warnings

    fit = load_fit(fitted[0])
    target = 0.97 * float(fit.runs.data.loc[fit.runs.data["train_dataset"] == "rpj", "loss"].min())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the refit has 3 runs per curve and tiny settings: it warns
        code, out, err = run_main(capsys, "plan", fitted[0], "--target-loss", str(target), "--group", "rpj",
                                  "--intervals", "0.5", "--calibrate", "-o", tmp_path / "plan.csv")
    assert code == 0, err
    assert "extrapolation error:" in err
    cal, plain = pd.read_csv(tmp_path / "plan.csv"), fit.required_scale(target, group="rpj", intervals=(0.5,))
    assert cal["lower_50"].iloc[0] < plain["lower_50"].iloc[0]  # law too pessimistic in some draws: sooner
    assert cal["prob_unreachable"].iloc[0] >= plain["prob_unreachable"].iloc[0]


def test_calibrate_saves_the_extrapolation_error_that_forecast_then_uses(capsys, fitted, tmp_path):
    """``calibrate`` writes a new fit file holding the calibration; ``forecast --calibrate`` uses it, no refit."""
    import warnings

    out = tmp_path / "calibrated.nc"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, stdout, err = run_main(capsys, "calibrate", fitted[0], "-o", out)
    assert code == 0, err
    assert "% per decade beyond the data" in stdout
    saved = load_fit(out)
    assert saved.calibration is not None and load_fit(fitted[0]).calibration is None  # the input is untouched
    code, _, err = run_main(capsys, "forecast", out, "--scales", "1e22", "--group", "rpj", "--calibrate",
                            "-o", tmp_path / "fc.csv")
    assert code == 0, err
    assert "using the saved extrapolation error" in err and "refit without" not in err
    expected = saved.forecast([1e22], group="rpj", calibration=saved.calibration)
    np.testing.assert_allclose(pd.read_csv(tmp_path / "fc.csv")["pred_upper_90"], expected["pred_upper_90"])


def test_calibrate_from_a_saved_calibration_file(capsys, fitted, tmp_path):
    from bayescale.extrapolation import ExtrapolationCalibration
    from bayescale.io import save_calibration

    ref = ExtrapolationCalibration(np.array([0.01, 0.01 + 1e-12]), np.array([1.0, 0.0]), 0.05, 87, (0.4, 5.6))
    save_calibration(ref, tmp_path / "ref.json")
    code, stdout, err = run_main(capsys, "calibrate", fitted[0], "--from", tmp_path / "ref.json",
                                 "-o", tmp_path / "with_ref.nc")
    assert code == 0, err
    assert "refit without" not in err and "2.30% per decade" in stdout and "learned from 87" in stdout
    np.testing.assert_array_equal(load_fit(tmp_path / "with_ref.nc").calibration.grid, ref.grid)
    code, _, err = run_main(capsys, "calibrate", fitted[0], "--from", tmp_path / "missing.json", "-o", tmp_path / "x.nc")
    assert code == cli.EXIT_BAD_INPUT and "missing.json" in err and not (tmp_path / "x.nc").exists()
