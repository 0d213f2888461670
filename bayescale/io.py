"""Saved fits: one file holding the posterior and everything needed to forecast, plan and report.

Usage:
    from bayescale.io import save_fit, load_fit
    save_fit(fit, "fits/gadre.nc")
    fit = load_fit("fits/gadre.nc")
    fit.forecast([1e22], group=("rpj", "c4_val"))

File format (``FORMAT_VERSION`` 2): a single netCDF-3 file (64-bit offset), written and read by
xarray's built-in netCDF writer (the ``scipy`` engine; netCDF-4 needs ``netCDF4`` or ``h5netcdf``,
which bayescale does not depend on). netCDF-3 has no groups, so the ArviZ DataTree ``fit.tree`` is
flattened: variable ``v`` of group ``/posterior`` is stored as ``posterior.v`` with dimensions
``posterior.<dim>``; ``xarray.open_dataset(path)`` shows them. Global attributes:

- ``bayescale_format``: ``"bayescale.fit"`` (the marker ``load_fit`` checks),
- ``bayescale_format_version``: the format version (``load_fit`` refuses newer versions),
- ``bayescale_metadata``: JSON with the tree layout (group and variable names, dims, dtypes,
  attributes) and the fit's non-array parts: ``RunTable`` (scale, response, groups, notes),
  ``ModelSpec`` (incl. ``Priors``), ``SamplerSettings``, ``Diagnostics`` (counts), ``timings`` and,
  from version 2, ``calibration`` (an ``ExtrapolationCalibration`` or null; version-1 files load
  without one).

The run table (``runs.data``, ``runs.duplicates``) and ``diagnostics.table`` are stored as Parquet
bytes in variables ``bayescale.table.<key>``, so every column keeps its exact dtype and value; object
columns Arrow cannot hold (Python ints beyond int64, mixed types) are kept in the JSON instead.
Writes are atomic: the file is written to a temporary file in the target directory and moved
onto ``path`` with ``os.replace``, so an existing file is never left half-written.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
from dataclasses import fields, is_dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .extrapolation import ExtrapolationCalibration
from .fit import Fit
from .inference import Diagnostics
from .runs import RunTable
from .spec import ModelSpec, Priors, SamplerSettings

__all__ = ["save_fit", "load_fit", "save_calibration", "load_calibration", "FitFileError", "FORMAT_NAME",
           "FORMAT_VERSION"]

#: Marker stored in every saved fit (global attribute ``bayescale_format``).
FORMAT_NAME = "bayescale.fit"
#: Version of the file layout; bumped on any incompatible change. ``load_fit`` reads versions 1..this.
FORMAT_VERSION = 2

_TABLE_PREFIX = "bayescale.table."
# Dataclasses a saved fit may contain; only these are rebuilt on load (never arbitrary classes).
_CLASSES = {cls.__name__: cls for cls in (RunTable, ModelSpec, Priors, SamplerSettings, Diagnostics,
                                          ExtrapolationCalibration)}
_TAGS = ("__tuple__", "__dict__", "__dataclass__", "__table__", "__ndarray__")


class FitFileError(ValueError):
    """A file is not a readable bayescale fit (wrong kind of file, newer format, damaged)."""


# ---- JSON encoding of the fit's non-array parts ----------------------------------------------
def _encode(obj, tables: dict, where: str = "fit"):
    """A JSON-able form of ``obj``: tuples, dataclasses, DataFrames and arrays are tagged so that
    ``_decode`` rebuilds them exactly (DataFrames go to ``tables`` and are stored as Parquet)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)  # json writes repr(float): exact round trip, NaN/Infinity included
    if isinstance(obj, pd.DataFrame):
        key = where if where not in tables else f"{where}.{len(tables)}"
        tables[key] = obj
        return {"__table__": key}
    if is_dataclass(obj) and not isinstance(obj, type):
        name = type(obj).__name__
        if _CLASSES.get(name) is not type(obj):
            raise TypeError(f"cannot save an object of type {type(obj).__qualname__} in a fit file")
        return {"__dataclass__": name, "fields": {f.name: _encode(getattr(obj, f.name), tables, f"{where}.{f.name}")
                                                    for f in fields(obj)}}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tables, f"{where}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tables, f"{where}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tables, f"{where}.{k}") for k, v in obj.items()}
        return {"__dict__": [[_encode(k, tables, where), _encode(v, tables, f"{where}.{i}")]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "biufUS":
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str}
    raise TypeError(f"cannot save a value of type {type(obj).__qualname__} in a fit file: {obj!r:.80}")


def _decode(obj, tables: dict):
    """Inverse of ``_encode``."""
    if isinstance(obj, list):
        return [_decode(v, tables) for v in obj]
    if not isinstance(obj, dict):
        return obj
    tag = next((t for t in _TAGS if t in obj), None)
    if tag is None:
        return {k: _decode(v, tables) for k, v in obj.items()}
    if tag == "__tuple__":
        return tuple(_decode(v, tables) for v in obj["__tuple__"])
    if tag == "__dict__":
        return {_hashable(_decode(k, tables)): _decode(v, tables) for k, v in obj["__dict__"]}
    if tag == "__table__":
        return tables[obj["__table__"]]
    if tag == "__ndarray__":
        return np.asarray(obj["__ndarray__"], dtype=np.dtype(obj["dtype"]))
    cls = _CLASSES.get(obj["__dataclass__"])
    if cls is None:
        raise FitFileError(f"unknown object type {obj['__dataclass__']!r}")
    values = {k: _decode(v, tables) for k, v in obj["fields"].items()}
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise FitFileError(f"{cls.__name__} has no field(s) {sorted(unknown)}: the file was written by "
                           "another version of bayescale")
    try:
        return cls(**values)
    except TypeError as exc:
        raise FitFileError(f"cannot rebuild {cls.__name__}: {exc}") from exc


def _hashable(key):
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def _table_bytes(df: pd.DataFrame, what: str) -> tuple[np.ndarray, dict]:
    """A DataFrame as Parquet bytes plus what Parquet cannot hold: the column names (any hashable) and
    object columns Arrow cannot convert (e.g. Python ints beyond int64, mixed types), kept as JSON."""
    import pyarrow as pa

    names = list(df.columns)
    df = df.set_axis([f"c{i}" for i in range(len(names))], axis=1)
    side = {}
    for key in df.columns:
        if df[key].dtype == object:
            try:
                pa.array(df[key], from_pandas=True)
            except (pa.ArrowException, OverflowError, TypeError, ValueError):
                try:
                    side[key] = _encode(df[key].tolist(), {})
                except TypeError:
                    name = names[int(key[1:])]
                    warnings.warn(f"{what}: column {name!r} holds objects that cannot be saved exactly; "
                                  "it is saved as text", UserWarning, stacklevel=4)
                    side[key] = df[key].astype(str).tolist()
    buf = io.BytesIO()
    df.drop(columns=list(side)).to_parquet(buf, engine="pyarrow")
    info = {"columns": _encode(names, {}), "object_columns": side}
    return np.frombuffer(buf.getvalue(), dtype=np.uint8).view(np.int8), info  # netCDF-3 has no unsigned bytes


def _table_from_bytes(values: np.ndarray, info: dict) -> pd.DataFrame:
    """Inverse of ``_table_bytes``."""
    df = pd.read_parquet(io.BytesIO(np.ascontiguousarray(values, dtype=np.int8).tobytes()), engine="pyarrow")
    for key, column in info["object_columns"].items():
        df[key] = pd.Series(_decode(column, {}), index=df.index, dtype=object)
    names = _decode(info["columns"], {})
    df = df[[f"c{i}" for i in range(len(names))]]
    df.columns = pd.Index(names)
    return df


# ---- the DataTree, flattened for netCDF-3 -----------------------------------------------------
def _nc3_values(values: np.ndarray) -> np.ndarray:
    """Values as netCDF-3 can store them (it lacks 64-bit and unsigned integers); dtype restored on load."""
    if values.dtype.kind in "iu" and values.dtype not in (np.int8, np.int16, np.int32):
        if values.size and (values.min() < np.iinfo(np.int32).min or values.max() > np.iinfo(np.int32).max):
            if np.abs(values).max() > 2 ** 53:
                raise ValueError(f"integer values beyond +-2**53 cannot be saved (dtype {values.dtype})")
            return values.astype(np.float64)
        return values.astype(np.int32)
    return values


def _flatten_tree(tree) -> tuple[dict, list]:
    """The tree's variables as flat netCDF-3 variables, and the layout needed to rebuild the tree."""
    flat, layout = {}, []
    for node in tree.subtree:
        ds = node.to_dataset(inherit=False)
        prefix = "_root." if node.path == "/" else node.path.strip("/").replace("/", ".") + "."
        entry = {"path": node.path, "attrs": dict(ds.attrs), "coords": list(ds.coords), "variables": []}
        for name, var in ds.variables.items():
            values = np.asarray(var.values)
            if values.dtype.kind not in "biufUSO":
                raise ValueError(f"cannot save variable {name!r} of group {node.path!r}: dtype {values.dtype}")
            key = prefix + str(name)
            if key in flat:
                raise ValueError(f"cannot save variable {name!r} of group {node.path!r}: name clash on {key!r}")
            flat[key] = xr.Variable([prefix + str(d) for d in var.dims], _nc3_values(values))
            entry["variables"].append({"name": name, "key": key, "dims": list(var.dims), "dtype": values.dtype.str,
                                       "attrs": dict(var.attrs)})
        layout.append(entry)
    return flat, layout


def _rebuild_tree(flat: xr.Dataset, layout: list):
    """Inverse of ``_flatten_tree``."""
    nodes = {}
    for entry in layout:
        coords, data_vars = {}, {}
        for var in entry["variables"]:
            values = np.array(flat[var["key"]].values, copy=True)
            dtype = np.dtype(var["dtype"])
            if dtype.kind != "O":  # undo netCDF-3's dtypes (int32 for int64, objects for strings)
                values = values.astype(dtype)
            target = coords if var["name"] in entry["coords"] else data_vars
            target[var["name"]] = xr.Variable(var["dims"], values, attrs=var["attrs"])
        nodes[entry["path"]] = xr.Dataset(data_vars, coords=coords, attrs=entry["attrs"])
    return xr.DataTree.from_dict(nodes)


# ---- files ---------------------------------------------------------------------------------
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory + ``os.replace``).

    On any failure the temporary file is removed and an existing ``path`` is left untouched; the
    parent directory is created if needed. Usage: ``atomic_write_bytes("out.csv", text.encode())``
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    tmp = tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp.name, mode)  # NamedTemporaryFile creates 0600
        os.replace(tmp.name, path)
    except BaseException:
        Path(tmp.name).unlink(missing_ok=True)
        raise
    return path


def save_fit(fit: Fit, path: str | os.PathLike) -> Path:
    """Save a fit (posterior, run table, spec, settings, diagnostics, timings) to one file.

    The write is atomic: a failure never leaves a half-written file nor destroys an existing one.
    Returns the path. Usage: ``save_fit(fit, "fits/gadre.nc")``
    """
    tables: dict = {}
    parts = {f.name: _encode(getattr(fit, f.name), tables, f.name) for f in fields(Fit) if f.name != "tree"}
    flat, layout = _flatten_tree(fit.tree)
    table_info = {}
    for key, df in tables.items():
        values, table_info[key] = _table_bytes(df, f"table {key}")
        flat[_TABLE_PREFIX + key] = xr.Variable([_TABLE_PREFIX + key + ".bytes"], values)
    layout_tables: dict = {}
    layout = _encode(layout, layout_tables)  # attrs may hold tuples or arrays
    if layout_tables:
        raise ValueError(f"cannot save DataFrames held in DataTree attributes: {sorted(layout_tables)}")
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "bayescale_version": _version(),
                "tree": layout, "fit": parts, "tables": table_info}
    ds = xr.Dataset(flat, attrs={"bayescale_format": FORMAT_NAME, "bayescale_format_version": FORMAT_VERSION,
                                 "bayescale_metadata": json.dumps(metadata, allow_nan=True)})
    data = bytes(ds.to_netcdf(engine="scipy", format="NETCDF3_64BIT"))
    return atomic_write_bytes(path, data)


def load_fit(path: str | os.PathLike) -> Fit:
    """Load a fit saved by ``save_fit``; forecasts, plans and summaries equal the original's.

    Raises ``FileNotFoundError`` for a missing file and ``FitFileError`` for a file that is not a
    bayescale fit or was written by a newer format version. Usage: ``fit = load_fit("fits/gadre.nc")``
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fit file not found: {str(path)!r}")
    raw = path.read_bytes()
    if not raw.startswith(b"CDF"):
        raise FitFileError(f"{str(path)!r} is not a bayescale fit file (not a netCDF-3 file; "
                           "fits are written by bayescale.io.save_fit or 'bayescale fit')")
    try:
        with xr.open_dataset(io.BytesIO(raw), engine="scipy") as ds:
            ds = ds.load()
    except Exception as exc:  # scipy/xarray raise various types on damaged files
        raise FitFileError(f"{str(path)!r} is not a readable netCDF file: {exc}") from exc
    if ds.attrs.get("bayescale_format") != FORMAT_NAME:
        raise FitFileError(f"{str(path)!r} is a netCDF file but not a bayescale fit "
                           "(no 'bayescale_format' attribute)")
    version = ds.attrs.get("bayescale_format_version")
    if not isinstance(version, (int, np.integer)) or not 1 <= int(version) <= FORMAT_VERSION:
        shown = int(version) if isinstance(version, (int, np.integer)) else repr(version)
        raise FitFileError(f"{str(path)!r} has fit format version {shown}; this bayescale ({_version()}) "
                           f"reads versions 1 to {FORMAT_VERSION}" + (": upgrade bayescale" if isinstance(
                               version, (int, np.integer)) and version > FORMAT_VERSION else ""))
    try:
        meta = json.loads(ds.attrs["bayescale_metadata"])
        tables = {key: _table_from_bytes(ds[_TABLE_PREFIX + key].values, info) for key, info in meta["tables"].items()}
        tree = _rebuild_tree(ds, _decode(meta["tree"], {}))
        parts = {k: _decode(v, tables) for k, v in meta["fit"].items()}
        return Fit(tree=tree, **parts)
    except FitFileError as exc:
        raise FitFileError(f"{str(path)!r}: {exc}") from exc
    except (KeyError, ValueError, TypeError) as exc:
        raise FitFileError(f"{str(path)!r} is a damaged bayescale fit file: {exc!r}") from exc


_CALIBRATION_FORMAT = "bayescale.extrapolation"


def save_calibration(calibration: ExtrapolationCalibration, path: str | os.PathLike) -> Path:
    """Save an extrapolation error on its own (JSON, the fit files' encoding; atomic), e.g. a
    ``transfer_calibration`` learned from past campaigns, to apply to new fits. The inner refit's
    diagnostics are not kept (their summary is). Usage: ``save_calibration(cal, "reports/extrapolation_reference.json")``"""
    doc = {"format": _CALIBRATION_FORMAT, "calibration": _encode(replace(calibration, diagnostics=None), {}),
           "summary": str(calibration)}
    return atomic_write_bytes(path, json.dumps(doc, indent=1).encode("utf-8"))


def load_calibration(path: str | os.PathLike) -> ExtrapolationCalibration:
    """Load an extrapolation error saved by ``save_calibration``. Usage: ``fit.forecast(x, calibration=load_calibration(p))``"""
    try:
        doc = json.loads(Path(path).read_text())
        if doc.get("format") != _CALIBRATION_FORMAT:
            raise FitFileError(f"{str(path)!r} is not a bayescale extrapolation-error file")
        calibration = _decode(doc["calibration"], {})
        if not isinstance(calibration, ExtrapolationCalibration):
            raise FitFileError(f"{str(path)!r} holds no extrapolation error")
        return calibration
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise FitFileError(f"{str(path)!r} is not a readable bayescale extrapolation-error file: {exc!r}") from exc


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("bayescale")
    except Exception:  # not installed (e.g. run from a source tree)
        return "unknown"
