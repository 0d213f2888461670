"""The run table: validated input for scaling-law fits.

Usage: ``runs = load_runs("runs.csv", scale="compute_flops", groups=["eval_set"])``
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["RunTable", "RunTableError", "load_runs"]

_SUFFIXES = (".csv", ".csv.gz", ".parquet")
MIN_DISTINCT_SCALES = 3  # a 3-parameter law needs at least 3 distinct scale values


class RunTableError(ValueError):
    """Raised when a run table fails validation; the message names column, row and value."""


@dataclass(frozen=True, eq=False)
class RunTable:
    """Validated runs. Usage: ``load_runs(df, scale="params").log_scale()``.

    ``params_col`` and ``tokens_col`` name the parameter and token columns that two-variable
    laws (``fit_law(runs, law="chinchilla")``) read; they are validated when such a law is fitted.
    """

    data: pd.DataFrame
    scale: str
    response: str
    groups: tuple[str, ...]
    duplicates: pd.DataFrame
    notes: tuple[str, ...]
    params_col: str = "params"
    tokens_col: str = "tokens"

    @property
    def n_rows(self) -> int:
        """Number of runs. Usage: ``runs.n_rows``."""
        return len(self.data)

    def levels(self, factor: str) -> list[str]:
        """Sorted unique levels of a grouping column. Usage: ``runs.levels("eval_set")``."""
        if factor not in self.groups:
            raise KeyError(f"{factor!r} is not a grouping column; groups are {list(self.groups)}")
        return sorted(self.data[factor].unique().tolist())

    def codes(self) -> np.ndarray:
        """Level index per row and factor, shape (n_rows, len(groups)). Usage: ``runs.codes()[:, 0]``."""
        cols = [pd.Categorical(self.data[g], categories=self.levels(g)).codes for g in self.groups]
        return np.column_stack(cols).astype(np.int64) if cols else np.zeros((self.n_rows, 0), np.int64)

    def _cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        codes = self.codes()
        if not self.groups:
            return codes[:1], np.zeros(self.n_rows, np.int64), np.array([self.n_rows])
        radix = tuple(codes.max(axis=0) + 1)  # levels come from these rows, so every level occurs; one integer
        # per row, in the same (lexicographic) order as the rows of codes
        keys, inverse, counts = np.unique(np.ravel_multi_index(codes.T, radix), return_inverse=True, return_counts=True)
        return np.column_stack(np.unravel_index(keys, radix)), inverse.reshape(-1).astype(np.int64), counts

    def cells(self) -> pd.DataFrame:
        """One row per observed level combination (sorted) plus "n_points". Usage: ``runs.cells()``."""
        uniq, _, counts = self._cells()
        levels = {g: self.levels(g) for g in self.groups}
        out = pd.DataFrame({g: [levels[g][c] for c in uniq[:, j]] for j, g in enumerate(self.groups)})
        out["n_points"] = counts.astype(np.int64)
        return out

    def cell_codes(self) -> np.ndarray:
        """Cell id (row of ``cells()``) of each run. Usage: ``runs.cell_codes()``."""
        return self._cells()[1]

    def log_scale(self) -> np.ndarray:
        """Natural log of the scale column. Usage: ``x = runs.log_scale()``."""
        return np.log(self.data[self.scale].to_numpy(dtype=np.float64))

    def subset(self, mask) -> RunTable:
        """Runs where ``mask`` is True. Usage: ``runs.subset(runs.data["eval_set"] == "c4_val")``."""
        if isinstance(mask, pd.Series):
            mask = mask.reindex(self.data.index)
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (self.n_rows,):
            raise ValueError(f"mask must be a boolean array of length {self.n_rows}")
        if not mask.any():
            raise RunTableError("subset is empty: the mask selects no rows")
        data = self.data[mask].reset_index(drop=True)
        dups = self.duplicates[self.duplicates["row"].isin(data["row"])].reset_index(drop=True)
        return replace(self, data=data, duplicates=dups)


def _fmt(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _check(bad: np.ndarray, col: str, rows: np.ndarray, values, what: str) -> None:
    """Raise for the first True in ``bad``, saying how many rows are bad in total."""
    idx = np.flatnonzero(bad)
    if len(idx):
        more = len(idx) - 1
        tail = f" (and {more} more row{'s' if more > 1 else ''})" if more else ""
        raise RunTableError(f"column {col!r}, row {rows[idx[0]]}: value {_fmt(values[idx[0]])} {what}{tail}")


def _positive_floats(df: pd.DataFrame, col: str, hint: str = "") -> np.ndarray:
    """Convert a column to finite, positive float64 values, or raise RunTableError."""
    s, rows = df[col], df["row"].to_numpy()
    if pd.api.types.is_bool_dtype(s.dtype):
        _check(np.ones(len(s), bool), col, rows, s.to_numpy(object), "is not a number (booleans are not numbers)")
    if pd.api.types.is_numeric_dtype(s.dtype):
        vals = s.to_numpy(dtype=np.float64, na_value=np.nan)
    else:  # object / str / categorical: convert element-wise
        raw = s.to_numpy(dtype=object)
        vals, bad = np.full(len(raw), np.nan), np.zeros(len(raw), bool)
        for i, v in enumerate(raw):
            if isinstance(v, (bool, np.bool_)):
                bad[i] = True
            elif not (np.ndim(v) == 0 and pd.isna(v)):
                try:
                    vals[i] = float(pd.to_numeric(v))
                except (TypeError, ValueError):
                    bad[i] = True
        _check(bad, col, rows, raw, "is not a number")
    _check(~np.isfinite(vals), col, rows, vals, "is not finite")
    _check(vals <= 0, col, rows, vals, "must be > 0" + hint)
    return vals


def _read(source: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source.copy(deep=True)
    path = Path(source)
    name = path.name.lower()
    if not name.endswith(_SUFFIXES):
        raise ValueError(f"unsupported run table file {str(path)!r}: expected one of {', '.join(_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"run table file not found: {str(path)!r}")
    return pd.read_parquet(path) if name.endswith(".parquet") else pd.read_csv(path)


def _cell_name(groups: Sequence[str], key) -> str:
    key = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{g}={k}" for g, k in zip(groups, key)) if groups else "(all rows)"


def load_runs(source: str | os.PathLike | pd.DataFrame, *, scale: str, response: str = "loss",
              groups: Sequence[str] = (), derive_compute: bool = False,
              params_col: str = "params", tokens_col: str = "tokens",
              flops_per_param_token: float = 6.0,
              min_points_per_group: int | None = None, query: str | None = None) -> RunTable:
    """Load and validate a run table from a DataFrame, .csv, .csv.gz or .parquet file.

    ``params_col``/``tokens_col`` name the columns of parameters N and tokens D: used to derive
    ``scale`` = ``flops_per_param_token`` * N * D with ``derive_compute=True``, and by two-variable
    laws (``fit_law(runs, law="chinchilla")``), which fit L(N, D) with ``scale`` (compute) kept
    for reports.
    Usage: ``load_runs("gadre_loss.csv", scale="compute_flops", groups=["eval_set"])``,
    ``load_runs("chinchilla.csv", scale="compute_flops", params_col="params", tokens_col="tokens")``
    """
    groups = (groups,) if isinstance(groups, str) else tuple(groups)
    key = [*groups, scale, response]
    if len(set(key)) != len(key):
        raise ValueError(f"scale, response and group columns must be distinct, got {key}")
    df = _read(source)
    if "row" in df.columns:
        raise RunTableError("column 'row' is reserved for the original row position; rename it")
    df = df.reset_index(drop=True)
    df["row"] = np.arange(len(df), dtype=np.int64)
    notes: list[str] = []
    if query is not None:
        n_before = len(df)
        try:
            df = df.query(query)
        except Exception as exc:
            raise RunTableError(f"query {query!r} failed: {exc}") from exc
        notes.append(f"applied query {query!r}: kept {len(df)} of {n_before} rows")

    needed = [*groups, response] + ([params_col, tokens_col] if derive_compute else [scale])
    missing = [c for c in dict.fromkeys(needed) if c not in df.columns]
    if missing:
        raise RunTableError(f"missing column(s) {', '.join(map(repr, missing))}; "
                            f"available columns: {', '.join(map(str, df.columns.drop('row')))}")
    if df.empty:
        raise RunTableError("run table is empty" + (f" after query {query!r}" if query else ""))

    if derive_compute:
        if scale in df.columns:
            raise ValueError(f"column {scale!r} already exists; derive_compute will not overwrite it")
        df[params_col] = _positive_floats(df, params_col)
        df[tokens_col] = _positive_floats(df, tokens_col)
        df[scale] = flops_per_param_token * df[params_col] * df[tokens_col]
        k = f"{flops_per_param_token:g}"
        notes.append(f"derived {scale} = {k} * {params_col} * {tokens_col} (C = {k}ND)")
    df[scale] = _positive_floats(df, scale, " (scales are fitted on a log axis)")
    df[response] = _positive_floats(df, response)
    rows = df["row"].to_numpy()
    for g in groups:
        _check(df[g].isna().to_numpy(), g, rows, df[g].to_numpy(object), "is a missing group label")
        df[g] = df[g].astype(str)

    n_distinct = df[scale].nunique()
    if n_distinct < MIN_DISTINCT_SCALES:
        raise RunTableError(f"column {scale!r} has only {n_distinct} distinct value(s); at least "
                            f"{MIN_DISTINCT_SCALES} are needed to fit a 3-parameter scaling law")

    stats = (df.groupby(list(groups), sort=True)[scale].agg(["nunique", "size"]) if groups
             else pd.DataFrame({"nunique": [n_distinct], "size": [len(df)]}, index=["all"]))
    if min_points_per_group is not None:
        too_few = stats[stats["nunique"] < min_points_per_group]
        if len(too_few):
            cell, (nu, size) = next(too_few.iterrows())
            more = f" (and {len(too_few) - 1} more cells)" if len(too_few) > 1 else ""
            raise RunTableError(f"cell {_cell_name(groups, cell)} has {nu} distinct {scale!r} value(s) "
                                f"({size} points); min_points_per_group={min_points_per_group}{more}")
    sparse = stats[stats["nunique"] < MIN_DISTINCT_SCALES]
    if len(sparse):
        listed = "; ".join(f"{_cell_name(groups, c)} ({nu} distinct {scale} values, {sz} points)"
                           for c, (nu, sz) in sparse.iterrows())
        msg = (f"{len(sparse)} cell(s) have fewer than {MIN_DISTINCT_SCALES} distinct {scale!r} values and are "
               f"pooling-only: their curve is informed mainly by the population level: {listed}")
        warnings.warn(msg, UserWarning, stacklevel=2)
        notes.append(msg)

    dup_mask = df.duplicated(key, keep="first").to_numpy()
    duplicates = df.loc[dup_mask, ["row", *key]].reset_index(drop=True)
    if len(duplicates):
        first = ", ".join(map(str, duplicates["row"].head(5))) + (", ..." if len(duplicates) > 5 else "")
        msg = (f"{len(duplicates)} row(s) duplicate another row in ({', '.join(key)}); "
               f"kept in the data; original rows: {first}")
        warnings.warn(msg, UserWarning, stacklevel=2)
        notes.append(msg)

    others = [c for c in df.columns if c not in key and c != "row"]
    data = df[[*key, *others, "row"]].reset_index(drop=True)
    return RunTable(data, scale, response, groups, duplicates, tuple(notes), params_col, tokens_col)
