"""Tests for bayescale.io: exact round trip of saved fits, atomic writes, clear errors on bad files."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from bayescale import SamplerSettings, fit_law, load_runs
from bayescale.io import FORMAT_VERSION, FitFileError, load_calibration, load_fit, save_calibration, save_fit
from bayescale.simulate import simulate_runs

pytestmark = pytest.mark.filterwarnings("ignore::bayescale.inference.ConvergenceWarning")


@pytest.fixture(scope="module")
def fit():
    """Two crossed factors, Student-t noise, extra columns of several dtypes, one duplicate run."""
    df, _ = simulate_runs({"dataset": 2, "eval_set": 2}, np.geomspace(1e18, 1e21, 4), seed=3)
    df["step"] = np.arange(len(df), dtype=np.int64) * 1000
    df["flag"] = df.index % 2 == 0
    df["note"] = [f"run {i}" for i in range(len(df))]
    df["flops_exact"] = pd.Series([6 * 10**18 * (i + 2) for i in range(len(df))], dtype=object)  # > int64
    df["mixed"] = pd.Series([i if i % 2 else f"x{i}" for i in range(len(df))], dtype=object)
    df = pd.concat([df, df.iloc[[0]]], ignore_index=True)  # a duplicate: RunTable.duplicates is not empty
    with pytest.warns(UserWarning, match="duplicate"):
        runs = load_runs(df, scale="compute_flops", groups=["dataset", "eval_set"])
    return fit_law(runs, likelihood="student_t", settings=SamplerSettings(chains=2, warmup=200, draws=200, seed=1))


@pytest.fixture(scope="module")
def saved(fit, tmp_path_factory):
    path = tmp_path_factory.mktemp("io") / "fit.nc"
    assert save_fit(fit, path) == path
    return path


def test_round_trip_forecasts_plans_and_summaries_are_identical(fit, saved):
    loaded = load_fit(saved)
    groups = [("dataset0", "eval_set1"), {"dataset": "dataset1", "eval_set": "unseen"}, None]
    for group in groups:
        pd.testing.assert_frame_equal(loaded.forecast([1e19, 1e22, 1e24], group=group, intervals=(0.5, 0.8, 0.95)),
                                      fit.forecast([1e19, 1e22, 1e24], group=group, intervals=(0.5, 0.8, 0.95)),
                                      check_exact=True)
        pd.testing.assert_frame_equal(loaded.required_scale(2.0, group=group), fit.required_scale(2.0, group=group),
                                      check_exact=True)
        np.testing.assert_array_equal(loaded.required_scale(2.2, group=group, return_draws=True),
                                      fit.required_scale(2.2, group=group, return_draws=True))
    pd.testing.assert_frame_equal(loaded.summary(), fit.summary(), check_exact=True)
    pd.testing.assert_frame_equal(loaded.diagnostics.table, fit.diagnostics.table, check_exact=True)


def test_round_trip_keeps_every_part(fit, saved):
    loaded = load_fit(saved)
    assert loaded.spec == fit.spec and loaded.settings == fit.settings and loaded.timings == fit.timings
    assert isinstance(loaded.spec.groups, tuple) and isinstance(loaded.spec.cells[0], tuple)
    assert loaded.spec.priors.group_sd == fit.spec.priors.group_sd
    for name in ("n_divergent", "n_max_treedepth", "n_draws", "max_tree_depth"):
        assert getattr(loaded.diagnostics, name) == getattr(fit.diagnostics, name)
    assert str(loaded.diagnostics) == str(fit.diagnostics)
    runs, orig = loaded.runs, fit.runs
    assert (runs.scale, runs.response, runs.groups, runs.notes) == (orig.scale, orig.response, orig.groups, orig.notes)
    pd.testing.assert_frame_equal(runs.data, orig.data, check_exact=True)  # dtypes included
    pd.testing.assert_frame_equal(runs.duplicates, orig.duplicates, check_exact=True)
    assert len(runs.duplicates) == 1
    np.testing.assert_array_equal(runs.cell_codes(), orig.cell_codes())
    # the posterior: all groups, values, coordinates, attributes and dtypes
    assert [n.path for n in loaded.tree.subtree] == [n.path for n in fit.tree.subtree]
    xr.testing.assert_identical(loaded.tree, fit.tree)
    for node in fit.tree.subtree:
        for name, var in node.to_dataset(inherit=False).variables.items():
            assert loaded.tree[node.path].to_dataset(inherit=False)[name].dtype == var.dtype, (node.path, name)


def test_saved_file_is_netcdf_with_marker_and_version(saved):
    with xr.open_dataset(saved, engine="scipy") as ds:
        assert ds.attrs["bayescale_format"] == "bayescale.fit"
        assert ds.attrs["bayescale_format_version"] == FORMAT_VERSION
        assert "posterior.loss_floor" in ds and "bayescale.table.runs.data" in ds


def test_not_a_fit_gives_clear_errors(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_fit(tmp_path / "missing.nc")
    csv = tmp_path / "runs.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(FitFileError, match="not a bayescale fit file"):
        load_fit(csv)
    other = tmp_path / "other.nc"
    xr.Dataset({"x": ("i", np.arange(3.0))}).to_netcdf(other, engine="scipy")
    with pytest.raises(FitFileError, match="not a bayescale fit"):
        load_fit(other)
    damaged = tmp_path / "damaged.nc"
    raw = saved.read_bytes()
    damaged.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FitFileError, match="damaged.nc"):
        load_fit(damaged)


def test_newer_format_version_is_refused(saved, tmp_path):
    with xr.open_dataset(saved, engine="scipy") as ds:
        ds = ds.load()
    ds.attrs["bayescale_format_version"] = FORMAT_VERSION + 1
    newer = tmp_path / "newer.nc"
    ds.to_netcdf(newer, engine="scipy")
    with pytest.raises(FitFileError, match=f"version {FORMAT_VERSION + 1}.*upgrade"):
        load_fit(newer)


def _temp_files(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(fit, saved, tmp_path, monkeypatch):
    path = tmp_path / "fit.nc"
    path.write_bytes(saved.read_bytes())
    os.chmod(path, 0o640)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)  # the temporary file is written, then the write fails
    with pytest.raises(OSError, match="No space left"):
        save_fit(fit, path)
    assert path.read_bytes() == before and not _temp_files(tmp_path)
    monkeypatch.undo()

    monkeypatch.setattr(os, "replace", fail)  # the move onto the target fails
    with pytest.raises(OSError):
        save_fit(fit, path)
    assert path.read_bytes() == before and not _temp_files(tmp_path)
    monkeypatch.undo()

    monkeypatch.setattr(xr.Dataset, "to_netcdf", fail)  # serialisation fails: nothing is created
    with pytest.raises(OSError):
        save_fit(fit, tmp_path / "new.nc")
    assert not (tmp_path / "new.nc").exists() and not _temp_files(tmp_path)
    monkeypatch.undo()

    save_fit(fit, path)  # a successful overwrite keeps the file's permissions
    assert load_fit(path).spec == fit.spec and (path.stat().st_mode & 0o777) == 0o640 and not _temp_files(tmp_path)


def test_calibration_is_saved_and_version_1_files_load_without_one(fit, tmp_path):
    from dataclasses import replace

    from bayescale.extrapolation import ExtrapolationCalibration

    grid = np.linspace(0.0, 0.2, 11)
    cal = ExtrapolationCalibration(grid, np.full(11, 1 / 11), 0.05, 4, (0.5, 1.5), diagnostics=fit.diagnostics)
    path = save_fit(replace(fit, calibration=cal), tmp_path / "cal.nc")
    loaded = load_fit(path)
    np.testing.assert_array_equal(loaded.calibration.weights, cal.weights)
    assert loaded.calibration.distance_range == (0.5, 1.5) and loaded.calibration.n_runs == 4
    pd.testing.assert_frame_equal(loaded.calibration.diagnostics.table, fit.diagnostics.table)
    pd.testing.assert_frame_equal(loaded.forecast([1e23], group=("dataset0", "eval_set0"), calibration=loaded.calibration),
                                  fit.forecast([1e23], group=("dataset0", "eval_set0"), calibration=cal))
    # a version-1 file (written before calibrations were saved) has no such entry
    with xr.open_dataset(path, engine="scipy") as ds:
        ds = ds.load()
    meta = json.loads(ds.attrs["bayescale_metadata"])
    del meta["fit"]["calibration"]
    ds.attrs.update(bayescale_format_version=1, bayescale_metadata=json.dumps(meta))
    ds.to_netcdf(tmp_path / "v1.nc", engine="scipy", format="NETCDF3_64BIT")
    assert load_fit(tmp_path / "v1.nc").calibration is None


def test_calibration_file_round_trip_and_errors(tmp_path):
    from bayescale.extrapolation import ExtrapolationCalibration

    grid = np.linspace(0.0, 1.0, 801)
    weights = np.exp(-0.5 * ((grid - 0.01) / 0.003) ** 2)
    cal = ExtrapolationCalibration(grid, weights / weights.sum(), 0.05, 87, (0.42, 5.64))
    loaded = load_calibration(save_calibration(cal, tmp_path / "ref.json"))
    np.testing.assert_array_equal(loaded.weights, cal.weights)
    np.testing.assert_array_equal(loaded.grid, cal.grid)
    assert str(loaded) == str(cal)
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(FitFileError, match="not a bayescale extrapolation-error file"):
        load_calibration(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(FitFileError, match="not a readable"):
        load_calibration(tmp_path / "broken.json")
