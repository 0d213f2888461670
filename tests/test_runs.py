"""Tests for bayescale.runs: loading and validating run tables."""

import copy
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayescale.runs import RunTable, RunTableError, load_runs

GADRE = Path(__file__).resolve().parents[1] / "data" / "gadre_loss.csv.gz"  # bundled copy


def make_df() -> pd.DataFrame:
    """Two eval sets x two datasets, 3 distinct params each, no duplicates."""
    rows = []
    for ds in ["c4", "rpj"]:
        for ev in ["val", "openlm"]:
            for i, n in enumerate([1e6, 1e7, 1e8]):
                rows.append({"dataset": ds, "eval_set": ev, "params": n, "tokens": 20 * n,
                             "loss": 4.0 - 0.5 * i + (ds == "rpj") * 0.1 + (ev == "val") * 0.2, "extra": f"{ds}-{ev}-{i}"})
    return pd.DataFrame(rows)


def load_quiet(source, **kw) -> RunTable:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean table must not warn
        return load_runs(source, **kw)


# ---------------------------------------------------------------- basics

def test_basic_load_structure():
    df = make_df()
    rt = load_quiet(df, scale="params", groups=["dataset", "eval_set"])
    assert isinstance(rt, RunTable)
    assert rt.n_rows == 12 and rt.scale == "params" and rt.response == "loss"
    assert rt.groups == ("dataset", "eval_set")
    assert list(rt.data.columns[:4]) == ["dataset", "eval_set", "params", "loss"]
    assert {"tokens", "extra", "row"} <= set(rt.data.columns)
    assert list(rt.data.index) == list(range(12))
    assert list(rt.data["row"]) == list(range(12))
    assert rt.data["params"].dtype == np.float64 and rt.data["loss"].dtype == np.float64
    assert rt.duplicates.empty and rt.notes == ()
    np.testing.assert_allclose(rt.log_scale(), np.log(df["params"].to_numpy()))
    assert rt.log_scale().dtype == np.float64


def test_input_dataframe_never_modified():
    df = make_df()
    df.loc[0, "loss"] = np.nan  # will fail validation: must still not touch df
    df.index = df.index + 100
    before = copy.deepcopy(df)
    load_quiet(df.drop(index=100), scale="params", groups=["eval_set"])
    with pytest.raises(RunTableError):
        load_runs(df, scale="params")
    load_quiet(df.drop(index=100), scale="compute", derive_compute=True, query="params > 0")
    pd.testing.assert_frame_equal(df, before)
    assert list(df.columns) == list(before.columns)


def test_groups_as_single_string_and_str_labels():
    df = make_df()
    df["size_class"] = np.repeat([1, 2, 10, 1], 3)  # ints -> str labels, sorted as strings
    rt = load_quiet(df, scale="params", groups="size_class")
    assert rt.groups == ("size_class",)
    assert rt.levels("size_class") == ["1", "10", "2"]
    assert rt.data["size_class"].map(type).eq(str).all()


def test_levels_codes_cells_consistency():
    df = make_df().sample(frac=1.0, random_state=0).reset_index(drop=True)
    df = df.iloc[:-1]  # rpj/val etc. now unbalanced; still 2x2 cells
    with pytest.warns(UserWarning, match="pooling-only"):
        rt = load_runs(df, scale="params", groups=["eval_set", "dataset"])
    assert rt.levels("eval_set") == ["openlm", "val"]
    assert rt.levels("dataset") == ["c4", "rpj"]
    codes = rt.codes()
    assert codes.shape == (rt.n_rows, 2) and codes.dtype.kind == "i"
    for j, g in enumerate(rt.groups):
        assert [rt.levels(g)[c] for c in codes[:, j]] == rt.data[g].tolist()
    cells = rt.cells()
    assert list(cells.columns) == ["eval_set", "dataset", "n_points"]
    assert list(cells.index) == list(range(4))
    assert cells[["eval_set", "dataset"]].values.tolist() == [
        ["openlm", "c4"], ["openlm", "rpj"], ["val", "c4"], ["val", "rpj"]]
    cc = rt.cell_codes()
    assert cc.shape == (rt.n_rows,) and cc.dtype.kind == "i"
    for i in range(rt.n_rows):
        cell = cells.iloc[cc[i]]
        assert (cell["eval_set"], cell["dataset"]) == (rt.data.at[i, "eval_set"], rt.data.at[i, "dataset"])
    assert cells["n_points"].sum() == rt.n_rows
    assert sorted(cells["n_points"]) == [2, 3, 3, 3]
    np.testing.assert_array_equal(np.bincount(cc), cells["n_points"].to_numpy())
    with pytest.raises(KeyError, match="not a grouping column"):
        rt.levels("params")


def test_no_groups_cells():
    rt = load_quiet(make_df(), scale="params")
    assert rt.codes().shape == (12, 0)
    np.testing.assert_array_equal(rt.cell_codes(), np.zeros(12, dtype=int))
    cells = rt.cells()
    assert list(cells.columns) == ["n_points"] and cells["n_points"].tolist() == [12]


def test_subset():
    rt = load_quiet(make_df(), scale="params", groups=["dataset", "eval_set"], derive_compute=False)
    mask = rt.data["dataset"] == "rpj"
    sub = rt.subset(mask)
    assert sub.n_rows == 6 and list(sub.data.index) == list(range(6))
    assert sub.levels("dataset") == ["rpj"]
    assert sub.cells()["dataset"].tolist() == ["rpj", "rpj"]
    assert sorted(set(sub.cell_codes())) == [0, 1]
    assert sub.data["row"].tolist() == list(range(6, 12))
    assert sub.notes == rt.notes and sub.groups == rt.groups
    sub2 = rt.subset(mask.to_numpy())
    pd.testing.assert_frame_equal(sub.data, sub2.data)
    with pytest.raises(ValueError, match="boolean"):
        rt.subset([0, 1])
    with pytest.raises(RunTableError, match="empty"):
        rt.subset(np.zeros(rt.n_rows, bool))


def test_subset_keeps_notes_and_filters_duplicates():
    df = pd.concat([make_df(), make_df().iloc[[0, 4]]], ignore_index=True)
    with pytest.warns(UserWarning, match="duplicate"):
        rt = load_runs(df, scale="params", groups=["dataset"], derive_compute=False)
    sub = rt.subset(rt.data["eval_set"] == "val")
    assert sub.notes == rt.notes
    assert sub.duplicates["row"].tolist() == [12]


# ---------------------------------------------------------------- query / derive

def test_query_applied_first_and_rows_are_original_positions():
    df = make_df()
    rt = load_quiet(df, scale="params", query="dataset == 'rpj' and eval_set == 'openlm'")
    assert rt.n_rows == 3
    assert rt.data["row"].tolist() == [9, 10, 11]
    assert rt.data["extra"].tolist() == df["extra"].iloc[9:12].tolist()  # input order kept
    assert any("query" in n and "kept 3 of 12" in n for n in rt.notes)


def test_query_error_in_later_row_reports_original_row():
    df = make_df()
    df.loc[10, "loss"] = -2.0
    with pytest.raises(RunTableError, match=r"column 'loss', row 10: value -2.0 must be > 0"):
        load_runs(df, scale="params", query="dataset == 'rpj'")


def test_query_empty_and_invalid():
    with pytest.raises(RunTableError, match="empty after query"):
        load_runs(make_df(), scale="params", query="params < 0")
    with pytest.raises(RunTableError, match="query 'nonexistent > 1' failed"):
        load_runs(make_df(), scale="params", query="nonexistent > 1")


def test_empty_table():
    with pytest.raises(RunTableError, match="empty"):
        load_runs(make_df().iloc[:0], scale="params")


def test_derive_compute_values_and_note():
    df = make_df().drop(columns="tokens")
    df["tokens"] = (df["params"] * 20).astype("int64")
    df["params"] = df["params"].astype("int64")
    rt = load_quiet(df, scale="compute_flops", derive_compute=True, groups=["eval_set"])
    np.testing.assert_allclose(rt.data["compute_flops"], 6.0 * df["params"] * df["tokens"])
    assert "derived compute_flops = 6 * params * tokens (C = 6ND)" in rt.notes
    assert rt.scale == "compute_flops" and "compute_flops" in rt.data.columns[:2].tolist()


def test_derive_compute_custom_columns_and_factor():
    df = make_df().rename(columns={"params": "N", "tokens": "D"})
    rt = load_quiet(df, scale="C", derive_compute=True, params_col="N", tokens_col="D",
                    flops_per_param_token=8)
    np.testing.assert_allclose(rt.data["C"], 8 * df["N"] * df["D"])
    assert "derived C = 8 * N * D (C = 8ND)" in rt.notes


def test_derive_compute_refuses_overwrite():
    df = make_df()
    df["compute_flops"] = 1.0
    with pytest.raises(ValueError, match="'compute_flops' already exists"):
        load_runs(df, scale="compute_flops", derive_compute=True)


def test_derive_compute_validates_params_and_tokens():
    df = make_df()
    df["tokens"] = df["tokens"].astype(object)
    df.loc[4, "tokens"] = "lots"
    with pytest.raises(RunTableError, match=r"column 'tokens', row 4: value 'lots' is not a number"):
        load_runs(df, scale="compute_flops", derive_compute=True)
    df = make_df()
    df.loc[[3, 5], "params"] = [0.0, -5.0]
    with pytest.raises(RunTableError,
                       match=r"column 'params', row 3: value 0.0 must be > 0 \(and 1 more row\)"):
        load_runs(df, scale="compute_flops", derive_compute=True)
    with pytest.raises(RunTableError, match=r"missing column\(s\) 'tokens'"):
        load_runs(make_df().drop(columns="tokens"), scale="compute_flops", derive_compute=True)


# ---------------------------------------------------------------- validation errors

def test_missing_columns_lists_missing_and_available():
    with pytest.raises(RunTableError) as exc:
        load_runs(make_df(), scale="flops", response="ppl", groups=["eval_set", "arch"])
    msg = str(exc.value)
    assert "'arch'" in msg and "'ppl'" in msg and "'flops'" in msg
    assert "available columns: dataset, eval_set, params, tokens, loss, extra" in msg


def test_non_numeric_string():
    df = make_df()
    df["params"] = df["params"].astype(str)  # numeric strings are accepted...
    rt = load_quiet(df, scale="params")
    assert rt.data["params"].dtype == np.float64
    df.loc[[3, 8, 9], "params"] = ["abc", "x", "1e9"]  # ...others are not
    with pytest.raises(RunTableError,
                       match=r"^column 'params', row 3: value 'abc' is not a number \(and 1 more row\)$"):
        load_runs(df, scale="params")


def test_non_numeric_in_object_response():
    df = make_df()
    df["loss"] = df["loss"].astype(object)
    df.loc[6, "loss"] = "n/a"
    with pytest.raises(RunTableError, match=r"column 'loss', row 6: value 'n/a' is not a number$"):
        load_runs(df, scale="params")


def test_nan_and_inf():
    df = make_df()
    df.loc[[2, 5, 7, 8, 11], "loss"] = [np.nan, np.inf, -np.inf, np.nan, np.nan]
    with pytest.raises(RunTableError,
                       match=r"^column 'loss', row 2: value nan is not finite \(and 4 more rows\)$"):
        load_runs(df, scale="params")
    df = make_df()
    df.loc[5, "params"] = np.inf
    with pytest.raises(RunTableError, match=r"column 'params', row 5: value inf is not finite"):
        load_runs(df, scale="params")
    df = make_df()
    df["loss"] = df["loss"].astype(object)
    df.loc[1, "loss"] = None
    with pytest.raises(RunTableError, match=r"column 'loss', row 1: value nan is not finite"):
        load_runs(df, scale="params")


def test_non_positive_scale_and_response():
    df = make_df().rename(columns={"params": "compute_flops"})
    df.loc[5, "compute_flops"] = -1.0
    with pytest.raises(RunTableError, match=re.escape(
            "column 'compute_flops', row 5: value -1.0 must be > 0 (scales are fitted on a log axis)")):
        load_runs(df, scale="compute_flops")
    df = make_df()
    df.loc[2, "loss"] = 0.0
    with pytest.raises(RunTableError, match=r"^column 'loss', row 2: value 0.0 must be > 0$"):
        load_runs(df, scale="params")


def test_bool_scale_is_error():
    df = make_df()
    df["flag"] = [True, False, True] * 4
    with pytest.raises(RunTableError, match=r"column 'flag', row 0: value True is not a number"):
        load_runs(df, scale="flag")
    df["params"] = df["params"].astype(object)
    df.loc[7, "params"] = True
    with pytest.raises(RunTableError, match=r"column 'params', row 7: value True is not a number"):
        load_runs(df, scale="params")


def test_missing_group_label():
    df = make_df()
    df.loc[[4, 9], "eval_set"] = None
    with pytest.raises(RunTableError, match=r"column 'eval_set', row 4: value .* is a missing group label "
                                            r"\(and 1 more row\)"):
        load_runs(df, scale="params", groups=["dataset", "eval_set"])


def test_fewer_than_three_distinct_scales():
    df = make_df()
    df.loc[df["params"] == 1e8, "params"] = 1e7
    with pytest.raises(RunTableError, match=r"column 'params' has only 2 distinct value\(s\); at least 3"):
        load_runs(df, scale="params")


def test_sparse_cells_warn_by_default():
    df = make_df()
    df = df[~((df["dataset"] == "rpj") & (df["eval_set"] == "val") & (df["params"] == 1e8))]
    with pytest.warns(UserWarning, match=r"pooling-only: their curve is informed mainly by the population level") as rec:
        rt = load_runs(df, scale="params", groups=["dataset", "eval_set"])
    msg = str(rec[0].message)
    assert "1 cell(s)" in msg and "dataset=rpj, eval_set=val (2 distinct params values, 2 points)" in msg
    assert rt.n_rows == 11 and any("pooling-only" in n for n in rt.notes)


def test_min_points_per_group_raises():
    df = make_df()
    df = df[~((df["dataset"] == "rpj") & (df["params"] == 1e8))]
    with pytest.raises(RunTableError, match=r"cell dataset=rpj, eval_set=openlm has 2 distinct 'params' "
                                            r"value\(s\) \(2 points\); min_points_per_group=3 \(and 1 more cells\)"):
        load_runs(df, scale="params", groups=["dataset", "eval_set"], min_points_per_group=3)
    with pytest.raises(RunTableError, match=r"cell dataset=c4 has 3 distinct"):
        load_runs(make_df(), scale="params", groups=["dataset"], min_points_per_group=4)
    load_quiet(make_df(), scale="params", groups=["dataset"], min_points_per_group=3)


def test_duplicates_collected_and_warned():
    df = make_df()
    df = pd.concat([df, df.iloc[[1, 4]], df.iloc[[1]]], ignore_index=True)
    df.loc[12:, "extra"] = "copy"  # non-key columns do not matter
    with pytest.warns(UserWarning, match=r"3 row\(s\) duplicate another row .*original rows: 12, 13, 14"):
        rt = load_runs(df, scale="params", groups=["dataset", "eval_set"])
    assert rt.n_rows == 15  # kept in the data
    assert list(rt.duplicates.columns) == ["row", "dataset", "eval_set", "params", "loss"]
    assert rt.duplicates["row"].tolist() == [12, 13, 14]
    assert rt.duplicates["params"].tolist() == [1e7, 1e7, 1e7]


def test_same_scale_different_response_is_not_duplicate():
    df = make_df()
    extra = df.iloc[[0]].assign(loss=9.0)
    rt = load_quiet(pd.concat([df, extra], ignore_index=True), scale="params", groups=["dataset", "eval_set"])
    assert rt.duplicates.empty and rt.n_rows == 13


def test_reserved_and_overlapping_columns():
    with pytest.raises(RunTableError, match="'row' is reserved"):
        load_runs(make_df().assign(row=1), scale="params")
    with pytest.raises(ValueError, match="must be distinct"):
        load_runs(make_df(), scale="params", groups=["params"])


# ---------------------------------------------------------------- files

@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_file_round_trip(tmp_path, suffix):
    df = make_df()
    path = tmp_path / f"runs{suffix}"
    if suffix == ".parquet":
        df.to_parquet(path)
    else:
        df.to_csv(path, index=False)
    from_file = load_quiet(path, scale="params", groups=["dataset", "eval_set"])
    from_df = load_quiet(df, scale="params", groups=["dataset", "eval_set"])
    cols = ["dataset", "eval_set", "params", "loss", "row"]
    pd.testing.assert_frame_equal(from_file.data[cols], from_df.data[cols], check_dtype=False)
    assert load_quiet(str(path), scale="params").n_rows == 12


def test_bad_suffix_and_missing_file(tmp_path):
    bad = tmp_path / "runs.xlsx"
    bad.write_text("x")
    with pytest.raises(ValueError, match=r"runs\.xlsx.*\.csv, \.csv\.gz, \.parquet"):
        load_runs(bad, scale="params")
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_runs(missing, scale="params")


def test_real_gadre_dataset():
    rt = load_quiet(GADRE, scale="compute_flops", groups=["train_dataset", "eval_set"],
                    query="tokens_per_param == 20")
    raw = pd.read_csv(GADRE)  # the bundled copy is always there
    assert rt.n_rows == int((raw["tokens_per_param"] == 20).sum()) > 0
    assert (rt.data["loss"] > 0).all() and np.isfinite(rt.log_scale()).all()
    assert rt.cells()["n_points"].sum() == rt.n_rows
    np.testing.assert_array_equal(rt.data["row"], np.flatnonzero(raw["tokens_per_param"] == 20))
    derived = load_quiet(raw.drop(columns="compute_flops"), scale="compute_flops", derive_compute=True,
                         groups=["eval_set"])
    np.testing.assert_allclose(derived.data["compute_flops"], 6.0 * raw["params"] * raw["tokens"])


def test_single_level_grouping_factor_is_refused():
    from bayescale import fit_law
    from bayescale.simulate import simulate_runs

    df, _ = simulate_runs(1, np.geomspace(1e18, 1e21, 6), noise_sd=0.02, seed=0)
    runs = load_runs(df, scale="compute_flops", groups=["family"])
    with pytest.raises(ValueError, match="'family' has one level"):
        fit_law(runs)
