"""Command line interface: fit a run table, then forecast, plan and report from the saved fit.

Usage:
    bayescale fit runs.csv --scale compute_flops --groups train_dataset,eval_set -o fit.nc
    bayescale fit --config study.toml                  # same keys as the options, see below
    bayescale forecast fit.nc --scales 1e22 1e23 --group rpj,c4_val [--calibrate] [-o forecast.csv]
    bayescale plan fit.nc --target-loss 2.8 --group rpj,c4_val [--calibrate] [-o plan.csv]
    bayescale calibrate fit.nc [--from ref.json] [-o fit.nc]   # save the extrapolation error with the fit
    bayescale report fit.nc [-o fit.html]
    bayescale simulate --n-groups 6 --seed 1 -o runs.csv [--truth truth.csv]

(also ``python -m bayescale.cli ...``). Tables go to stdout as CSV unless ``-o`` is given;
progress messages, warnings and errors go to stderr.

Groups (``--group``, repeatable): levels in the order of the fit's grouping factors, comma
separated (``rpj,c4_val``), or ``factor=level`` pairs (``train_dataset=rpj,eval_set=c4_val``);
``(new)`` stands for a level the fit has not seen (forecast from the population). Without
``--group``: every fitted curve. ``--calibrate`` (forecast, plan) adds the law's extrapolation error:
the one ``bayescale calibrate`` saved in the fit file, else one learned on the spot (one more fit).

Config files (``--config``, JSON or TOML) hold the options of ``fit`` as keys: ``runs``, ``out``,
``scale``, ``response``, ``groups`` (list or comma-separated string), ``query``, ``likelihood``,
``seed``, ``chains``, ``warmup``, ``draws``, ``target_accept``, ``max_tree_depth``,
``regularize_mass_matrix`` (see ``SamplerSettings``), ``progress``;
relative ``runs``/``out`` paths are relative to the config file; command line options win.

Exit codes:
    0  success (for fit: the sampler's diagnostics show no problem)
    1  unexpected internal error (a bug: a traceback is printed)
    2  bad input or usage: missing/invalid file, run table error, unknown group, bad option
    3  fit only: the fit was saved, but its diagnostics report convergence problems
       (the ConvergenceWarnings: R-hat, ESS, divergences, tree depth); rerun with more draws
    130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
import warnings
from contextlib import contextmanager
from pathlib import Path

from .spec import SamplerSettings

__all__ = ["main", "EXIT_OK", "EXIT_ERROR", "EXIT_BAD_INPUT", "EXIT_NOT_CONVERGED"]

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_NOT_CONVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
PROG = "bayescale"
NEW = "(new)"  # same label as bayescale.fit.POPULATION

_FIT_KEYS = {"runs": str, "out": str, "scale": str, "response": str, "groups": (list, str), "query": str,
             "likelihood": str, "seed": int, "chains": int, "warmup": int, "draws": int,
             "target_accept": (float, int), "max_tree_depth": int, "regularize_mass_matrix": bool,
             "progress": bool}
_SAMPLER = SamplerSettings()  # the sampler's defaults live in one place
_FIT_DEFAULTS = {"out": "fit.nc", "response": "loss", "groups": [], "query": None, "likelihood": "normal",
                 **{k: getattr(_SAMPLER, k) for k in ("seed", "chains", "warmup", "draws", "target_accept",
                                                       "max_tree_depth", "regularize_mass_matrix")},
                 "progress": False}


class CLIError(Exception):
    """Bad input: printed as one ``bayescale: error: ...`` line, exit code 2."""


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


@contextmanager
def _bad_input(what: str = ""):
    """Turn the library's input errors (ValueError incl. RunTableError/FitFileError, OSError) into CLIError."""
    try:
        yield
    except CLIError:
        raise
    except OSError as exc:
        detail = exc.strerror or str(exc)
        name = f": {exc.filename}" if exc.filename and str(exc.filename) not in detail else ""
        raise CLIError(f"{what}{detail}{name}") from exc
    except ValueError as exc:  # RunTableError, FitFileError and the library's argument checks
        raise CLIError(f"{what}{exc}") from exc


def _print_warnings(caught) -> None:
    from .inference import ConvergenceWarning

    seen = set()
    for w in caught:
        text = str(w.message)
        if not issubclass(w.category, ConvergenceWarning) and text not in seen:
            seen.add(text)
            _say(f"warning: {text}")


def _write_table(df, out: str | None) -> None:
    """A DataFrame as CSV: to ``out`` (atomically) or to stdout."""
    from .io import atomic_write_bytes

    if out is None:
        df.to_csv(sys.stdout, index=False)
        sys.stdout.flush()
        return
    with _bad_input(f"cannot write {out!r}: "):
        atomic_write_bytes(out, df.to_csv(index=False).encode("utf-8"))
    _say(f"wrote {out}")


def _split(values) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``."""
    if isinstance(values, str):
        values = [values]
    return [part.strip() for v in values or () for part in str(v).split(",") if part.strip()]


# ---- fit ------------------------------------------------------------------------------------
def _read_config(path: str) -> dict:
    """Keys of a JSON or TOML study config, checked against the ``fit`` options."""
    p = Path(path)
    with _bad_input(f"cannot read config {path!r}: "):
        text = p.read_text(encoding="utf-8")
    try:
        conf = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise CLIError(f"config {path!r} is not valid {'TOML' if p.suffix.lower() == '.toml' else 'JSON'}: {exc}")
    if not isinstance(conf, dict):
        raise CLIError(f"config {path!r} must hold a table/object of options, got {type(conf).__name__}")
    out = {}
    for key, value in conf.items():
        k = key.replace("-", "_")
        if k not in _FIT_KEYS:
            raise CLIError(f"config {path!r}: unknown key {key!r}; known keys: {', '.join(_FIT_KEYS)}")
        types = _FIT_KEYS[k]
        if (isinstance(value, bool) and types is not bool) or not isinstance(value, types):
            raise CLIError(f"config {path!r}: key {key!r} has value {value!r}, expected "
                           f"{' or '.join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))}")
        if k in ("runs", "out"):
            value = str(p.parent / value)  # relative to the config file (absolute paths stay absolute)
        out[k] = value
    return out


def _cmd_fit(args) -> int:
    conf = _FIT_DEFAULTS | (_read_config(args.config) if args.config else {})
    conf |= {k: v for k, v in vars(args).items() if k in _FIT_KEYS and v is not None}
    if not conf.get("runs"):
        raise CLIError("no run table: give RUNS (a .csv, .csv.gz or .parquet file) or 'runs' in --config")
    if not conf.get("scale"):
        raise CLIError("no scale column: give --scale (e.g. --scale compute_flops) or 'scale' in --config")
    for key in ("chains", "warmup", "draws"):
        if conf[key] < (0 if key == "warmup" else 1):
            raise CLIError(f"--{key} must be >= {0 if key == 'warmup' else 1}, got {conf[key]}")
    if conf["likelihood"] not in ("normal", "student_t"):
        raise CLIError(f"likelihood must be 'normal' or 'student_t', got {conf['likelihood']!r}")

    from .fit import fit_law
    from .io import save_fit
    from .runs import load_runs
    from .spec import SamplerSettings

    groups = _split(conf["groups"])
    _say(f"loading runs from {conf['runs']}")
    with _bad_input(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        runs = load_runs(conf["runs"], scale=conf["scale"], response=conf["response"], groups=groups,
                         query=conf["query"])
    _print_warnings(caught)
    settings = SamplerSettings(chains=conf["chains"], warmup=conf["warmup"], draws=conf["draws"], seed=conf["seed"],
                               target_accept=float(conf["target_accept"]), max_tree_depth=conf["max_tree_depth"],
                               regularize_mass_matrix=conf["regularize_mass_matrix"],
                               progress_bar=bool(conf["progress"]))
    n_curves = len(runs.cells())
    _say(f"sampling: {runs.n_rows} runs in {n_curves} curve(s), {settings.chains} chains x {settings.draws} "
         f"draws ({settings.warmup} warmup), likelihood {conf['likelihood']}, seed {settings.seed}")
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        fit = fit_law(runs, likelihood=conf["likelihood"], settings=settings)
    _print_warnings(caught)
    _say(f"sampled in {time.perf_counter() - t0:.1f} s")
    _say(f"writing fit to {conf['out']}")
    with _bad_input(f"cannot write fit {conf['out']!r}: "):
        save_fit(fit, conf["out"])
    print(f"fit: {conf['out']}")
    print(f"diagnostics: {fit.diagnostics}")
    problems = fit.diagnostics.problems()
    if problems:
        _say(f"warning: the fit did not converge well ({len(problems)} problem(s), see diagnostics); "
             f"exit code {EXIT_NOT_CONVERGED}")
        return EXIT_NOT_CONVERGED
    return EXIT_OK


# ---- forecast / plan / report -----------------------------------------------------------------
def _load(path: str):
    from .io import load_fit

    _say(f"loading fit {path}")
    with _bad_input():
        return load_fit(path)


def _parse_group(fit, text: str):
    """One ``--group`` value as the ``group`` argument of ``Fit.forecast``; CLIError if it is not valid."""
    factors = list(fit.spec.groups)
    if not factors:
        raise CLIError(f"this fit has no grouping factors; drop --group {text!r}")
    parts = [p.strip() for p in text.split(",")]
    keyed = ["=" in p for p in parts]
    if any(keyed) and not all(keyed):
        raise CLIError(f"--group {text!r}: give either levels (a,b) or factor=level pairs, not both")
    if all(keyed):
        pairs = dict(p.split("=", 1) for p in parts)
        pairs = {k.strip(): v.strip() for k, v in pairs.items()}
        unknown = [k for k in pairs if k not in factors]
        missing = [f for f in factors if f not in pairs]
        if unknown or missing:
            raise CLIError(f"--group {text!r}: " + (f"unknown factor(s) {unknown}; " if unknown else "")
                           + (f"missing factor(s) {missing}; " if missing else "")
                           + f"the fit's factors are {factors} (use {NEW} for an unseen level)")
        levels = [pairs[f] for f in factors]
    else:
        if len(parts) != len(factors):
            raise CLIError(f"--group {text!r} gives {len(parts)} level(s); the fit has {len(factors)} factor(s) "
                           f"{factors}: give one level per factor, comma separated")
        levels = parts
    for factor, level in zip(factors, levels):
        if level != NEW and level not in fit.spec.levels[factor]:
            raise CLIError(f"--group {text!r}: level {level!r} of {factor!r} is not in the fit; fitted levels: "
                           f"{', '.join(fit.spec.levels[factor])} (use {NEW} to forecast an unseen level)")
    return tuple(None if level == NEW else level for level in levels)


def _groups(fit, texts) -> list:
    if texts:
        return [_parse_group(fit, t) for t in texts]
    return list(fit.spec.cells) if fit.spec.groups else [None]


def _intervals(values) -> tuple[float, ...]:
    if any(not 0 < v < 1 for v in values):
        raise CLIError(f"--intervals must lie strictly between 0 and 1, got {values}")
    return tuple(values)


def _learn_calibration(fit):
    from .backtest import calibrate_extrapolation

    _say("learning the extrapolation error: refit without each curve's largest scale")
    with _bad_input():
        calibration = calibrate_extrapolation(fit)
    _say(f"{calibration}; that refit: {calibration.diagnostics}")
    return calibration


def _calibration(fit, wanted: bool):
    """With ``--calibrate``: the extrapolation error saved with the fit (``bayescale calibrate``), else
    learned now (one more fit); without it None."""
    if not wanted:
        return None
    if fit.calibration is not None:
        _say(f"using the saved extrapolation error: {fit.calibration}")
        return fit.calibration
    return _learn_calibration(fit)


def _cmd_calibrate(args) -> int:
    from .io import load_calibration, save_fit

    fit = _load(args.fit)
    if args.source:
        _say(f"taking the extrapolation error from {args.source}")
        with _bad_input():
            fit.calibration = load_calibration(args.source)
    else:
        fit.calibration = _learn_calibration(fit)
    out = args.out or args.fit
    _say(f"writing fit with its extrapolation error to {out}")
    with _bad_input(f"cannot write fit {out!r}: "):
        save_fit(fit, out)
    print(str(fit.calibration))
    return EXIT_OK


def _cmd_forecast(args) -> int:
    import pandas as pd

    fit = _load(args.fit)
    intervals = _intervals(args.intervals)
    calibration = _calibration(fit, args.calibrate)
    with _bad_input():
        table = pd.concat([fit.forecast(args.scales, group=g, intervals=intervals, seed=args.seed,
                                        calibration=calibration)
                           for g in _groups(fit, args.group)], ignore_index=True)
    _write_table(table, args.out)
    return EXIT_OK


def _cmd_plan(args) -> int:
    import pandas as pd

    fit = _load(args.fit)
    intervals = _intervals(args.intervals)
    calibration = _calibration(fit, args.calibrate)
    with _bad_input():
        table = pd.concat([fit.required_scale(t, group=g, intervals=intervals, calibration=calibration)
                           for g in _groups(fit, args.group) for t in args.target_loss], ignore_index=True)
    _write_table(table, args.out)
    return EXIT_OK


def _cmd_report(args) -> int:
    from .report import write_report

    fit = _load(args.fit)
    out = args.out or str(Path(args.fit).with_suffix(".html"))
    _say(f"writing report to {out}")
    with _bad_input(f"cannot write report {out!r}: "):
        write_report(fit, out, title=args.title or f"bayescale report: {Path(args.fit).name}")
    print(f"report: {out}")
    return EXIT_OK


# ---- simulate ---------------------------------------------------------------------------------
def _n_groups(text: str):
    """``"6"`` -> 6; ``"dataset=2,eval_set=3"`` -> {"dataset": 2, "eval_set": 3}."""
    try:
        if "=" not in text:
            return int(text)
        return {k.strip(): int(v) for k, v in (p.split("=", 1) for p in text.split(","))}
    except ValueError:
        raise CLIError(f"--n-groups {text!r}: expected a count (6) or factor=count pairs (dataset=2,eval_set=3)")


def _cmd_simulate(args) -> int:
    from .simulate import DEFAULT_SCALES, simulate_runs

    with _bad_input():
        runs, truth = simulate_runs(_n_groups(args.n_groups), args.scales or DEFAULT_SCALES, noise_sd=args.noise_sd,
                                    scale_name=args.scale_name, group_name=args.group_name, seed=args.seed,
                                    missing_frac=args.missing_frac)
    _write_table(runs, args.out)
    if args.truth:
        _write_table(truth, args.truth)
    return EXIT_OK


# ---- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``bayescale`` argument parser. Usage: ``build_parser().parse_args(["fit", "--help"])``."""
    doc = __doc__.split("Exit codes:")
    parser = argparse.ArgumentParser(prog=PROG, description=doc[0].splitlines()[0], epilog="exit codes:" + doc[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("fit", help="fit a run table and save the fit", description="Fit the hierarchical law to a "
                       "run table (.csv, .csv.gz, .parquet) and save the fit; prints diagnostics. Exit 3 if the "
                       "fit converged badly.")
    p.add_argument("runs", nargs="?", help="run table file (or 'runs' in --config)")
    p.add_argument("--config", help="JSON or TOML file with the options below as keys (options given here win)")
    p.add_argument("-o", "--out", help="saved fit to write (default fit.nc)")
    p.add_argument("--scale", help="scale column, e.g. compute_flops")
    p.add_argument("--response", help="loss column (default loss)")
    p.add_argument("--groups", action="append", help="grouping column(s), comma separated or repeated")
    p.add_argument("--query", help="pandas query selecting the runs, e.g. \"params < 1e9\"")
    p.add_argument("--likelihood", choices=["normal", "student_t"], help="default normal")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--chains", type=int, help="default 4")
    p.add_argument("--warmup", type=int, help="default 1000")
    p.add_argument("--draws", type=int, help="default 1000")
    p.add_argument("--target-accept", type=float, dest="target_accept", help=f"default {_SAMPLER.target_accept}")
    p.add_argument("--max-tree-depth", type=int, dest="max_tree_depth", help="default 10")
    p.add_argument("--progress", action="store_true", default=None, help="show the sampler's progress bar")
    p.set_defaults(func=_cmd_fit)

    group_help = f"curve: levels 'a,b' or pairs 'factor=a,...', {NEW} for unseen; repeatable; default: all fitted"
    p = sub.add_parser("forecast", help="forecast losses at given scales from a saved fit",
                       description="Law and new-run forecast bands at --scales, as CSV.")
    p.add_argument("fit", help="saved fit (from 'bayescale fit')")
    p.add_argument("--scales", type=float, nargs="+", required=True, help="scales in the scale column's units")
    p.add_argument("--group", action="append", help=group_help)
    p.add_argument("--intervals", type=float, nargs="+", default=[0.5, 0.9], help="band masses (default 0.5 0.9)")
    p.add_argument("--seed", type=int, default=0, help="seed of the new-run noise draws (default 0)")
    p.add_argument("--calibrate", action="store_true",
                   help="widen the bands beyond the data by the extrapolation error: the one saved by "
                        "'bayescale calibrate', else learned now (one more fit)")
    p.add_argument("-o", "--out", help="CSV file to write (default: stdout)")
    p.set_defaults(func=_cmd_forecast)

    p = sub.add_parser("plan", help="scale needed to reach a target loss",
                       description="Posterior of the scale at which the law reaches --target-loss, as CSV.")
    p.add_argument("fit", help="saved fit (from 'bayescale fit')")
    p.add_argument("--target-loss", type=float, nargs="+", required=True, dest="target_loss", help="target loss(es)")
    p.add_argument("--group", action="append", help=group_help)
    p.add_argument("--intervals", type=float, nargs="+", default=[0.5, 0.9], help="band masses (default 0.5 0.9)")
    p.add_argument("--calibrate", action="store_true",
                   help="include the extrapolation error beyond the data: the one saved by "
                        "'bayescale calibrate', else learned now (one more fit)")
    p.add_argument("-o", "--out", help="CSV file to write (default: stdout)")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("calibrate", help="learn the extrapolation error and save it with the fit",
                       description="Refit without each curve's largest scale, learn how far the law drifts beyond "
                                   "the data (bayescale.backtest.calibrate_extrapolation) and save it in the fit "
                                   "file, where forecast/plan --calibrate find it.")
    p.add_argument("fit", help="saved fit (from 'bayescale fit')")
    p.add_argument("--from", dest="source", help="take it from a file saved by bayescale.io.save_calibration "
                   "instead (e.g. reports/extrapolation_reference.json: the drift of the shipped datasets' backtests)")
    p.add_argument("-o", "--out", help="fit file to write (default: overwrite the input, atomically)")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("report", help="HTML report of a saved fit", description="Write a self-contained HTML report.")
    p.add_argument("fit", help="saved fit (from 'bayescale fit')")
    p.add_argument("-o", "--out", help="HTML file (default: the fit's path with .html)")
    p.add_argument("--title", help="report title")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("simulate", help="simulate a run table with known truth",
                       description="Simulated runs of several curves (bayescale.simulate.simulate_runs), as CSV.")
    p.add_argument("--n-groups", default="8", dest="n_groups", help="number of curves (8), or factor=levels pairs "
                   "for a crossed design: dataset=2,eval_set=3")
    p.add_argument("--scales", type=float, nargs="+", help="scales of every curve (default 6 from 1e18 to 1e21)")
    p.add_argument("--noise-sd", type=float, default=0.01, dest="noise_sd", help="default 0.01")
    p.add_argument("--missing-frac", type=float, default=0.0, dest="missing_frac", help="fraction of runs dropped")
    p.add_argument("--scale-name", default="compute_flops", dest="scale_name", help="default compute_flops")
    p.add_argument("--group-name", default="family", dest="group_name", help="default family")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument("-o", "--out", help="CSV file for the runs (default: stdout)")
    p.add_argument("--truth", help="CSV file for the true law parameters of each curve")
    p.set_defaults(func=_cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring). Usage: ``main(["plan", "fit.nc", ...])``."""
    args = build_parser().parse_args(argv)  # usage errors: argparse prints them and exits with 2
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `bayescale forecast ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
