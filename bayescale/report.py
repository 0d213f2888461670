"""Self-contained HTML report of a fit: data, diagnostics, figures, tables and notes.

Usage:
    from bayescale.report import write_report
    write_report(fit, "reports/gadre.html", heldout=test_df, tables={"errors": err_df}, notes=["..."])
    write_report(chinchilla_fit, "reports/chinchilla.html", allocation={"budgets": [6e18, 1e20, 3e21]})
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from . import plots
from .io import atomic_write_bytes

__all__ = ["write_report", "ALLOCATION_OPTIONS"]

#: Keys of ``write_report(..., allocation={...})`` (all optional).
ALLOCATION_OPTIONS = ("budgets", "compute_range", "table_budgets", "target_losses", "group", "interval",
                      "flops_per_param_token", "references")

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1400px; margin: 1.5em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #ccc; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table.dataframe { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
table.dataframe th, table.dataframe td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
table.dataframe thead th { background: #f2f2f2; }
pre { background: #f7f7f7; padding: 0.6em; white-space: pre-wrap; }
.problems { background: #fff3cd; border: 1px solid #e0b200; padding: 0.4em 1em; margin: 0.6em 0; }
.ok { background: #e6f4ea; border: 1px solid #6cbf84; padding: 0.4em 1em; margin: 0.6em 0; }
img { max-width: 100%; } .meta { color: #666; font-size: 0.85em; }
"""


def _png(fig, dpi: int = 90) -> str:
    """A figure as an <img> tag with an embedded base64 PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode("ascii")}">'


def _table(df: pd.DataFrame, index: bool = True) -> str:
    return df.to_html(index=index, escape=True, float_format=lambda v: f"{v:.4g}", border=0, na_rep="")


def _data_section(fit) -> list[str]:
    runs = fit.runs
    data, scale = runs.data, runs.scale
    by_cell = runs.cells()
    if runs.groups:
        extent = data.groupby(list(runs.groups), sort=True)[scale].agg(["min", "max"]).reset_index()
        by_cell = by_cell.merge(extent, on=list(runs.groups), how="left")
    else:
        by_cell["min"], by_cell["max"] = data[scale].min(), data[scale].max()
    by_cell = by_cell.rename(columns={"min": f"min {scale}", "max": f"max {scale}"})
    facts = [f"{runs.n_rows} runs in {len(fit.spec.cell_labels)} cell(s)",
             f"grouping factors: {', '.join(runs.groups) or '(none)'}",
             f"{scale}: {data[scale].min():.4g} to {data[scale].max():.4g}",
             f"{runs.response}: {data[runs.response].min():.4g} to {data[runs.response].max():.4g}",
             f"likelihood: {fit.spec.likelihood}; sampler: {fit.settings.chains} chains x "
             f"{fit.settings.draws} draws ({fit.settings.warmup} warmup), seed {fit.settings.seed}"]
    out = ["<h2>Data</h2>", "<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in facts) + "</ul>"]
    if runs.notes:
        out.append("<p>Notes from loading:</p><ul>"
                   + "".join(f"<li>{html.escape(n)}</li>" for n in runs.notes) + "</ul>")
    out.append(_table(by_cell, index=False))
    return out


def _diagnostics_section(fit) -> list[str]:
    diag = fit.diagnostics
    problems = diag.problems()
    box = ('<div class="problems"><b>Problems</b><ul>' + "".join(f"<li>{html.escape(p)}</li>" for p in problems)
           + "</ul></div>") if problems else '<div class="ok">No convergence problems found.</div>'
    table = diag.table
    return ["<h2>Diagnostics</h2>", f"<pre>{html.escape(str(diag))}</pre>", box,
            "<h3>Worst 10 by R-hat</h3>", _table(table.sort_values("r_hat", ascending=False).head(10)),
            "<h3>Worst 10 by bulk ESS</h3>", _table(table.sort_values("ess_bulk").head(10))]


def _allocation_section(fit, options: dict) -> list[str]:
    """IsoFLOP curves, the optimal frontier and tables of the compute-optimal allocation."""
    unknown = set(options) - set(ALLOCATION_OPTIONS)
    if unknown:
        raise ValueError(f"unknown allocation option(s) {sorted(unknown)}; options: {list(ALLOCATION_OPTIONS)}")
    interval = float(options.get("interval", 0.9))
    k = float(options.get("flops_per_param_token", 6.0))
    group = options.get("group")
    tag = round(100 * interval)
    isoflop = plots.plot_isoflop(fit, budgets=options.get("budgets"), group=group, interval=interval,
                                 flops_per_param_token=k)
    frontier = plots.plot_optimal_frontier(fit, compute_range=options.get("compute_range"), group=group,
                                           interval=interval, flops_per_param_token=k,
                                           references=options.get("references"))
    out = ["<h2>Compute-optimal allocation</h2>",
           f"<p>{html.escape(f'Law {fit.spec.law_def.formula}, compute C = {k:g} N D. N_opt = G (C/{k:g})^a with '
                             'a = beta/(alpha+beta), computed per posterior draw; intervals are equal-tailed '
                             f'{tag}% credible intervals.')}</p>",
           "<h3>IsoFLOP curves</h3>", f"<p>{html.escape(f'Loss against N at fixed budgets: median, {tag}% band, '
                                                       'fitted runs near each budget, N_opt with its interval.')}</p>",
           _png(isoflop), "<h3>Optimal frontier</h3>",
           f"<p>{html.escape(f'N_opt, D_opt and the loss at the optimum against compute, {tag}% bands.')}</p>",
           _png(frontier)]
    budgets = options.get("table_budgets", options.get("budgets"))
    if budgets is not None:
        table = fit.compute_optimal(budgets, group=group, intervals=(interval,), flops_per_param_token=k)
        out += ["<h3>Allocation at selected budgets</h3>", _table(table.drop(columns=["new_group"]), index=False)]
    if options.get("target_losses") is not None:
        table = fit.required_compute(options["target_losses"], group=group, intervals=(interval,),
                                     flops_per_param_token=k)
        out += ["<h3>Budget needed to reach a target loss (at the optimal allocation)</h3>",
                _table(table.drop(columns=["new_group"]), index=False)]
    return out


def _render(fit, title: str, heldout, tables, notes, allocation=None) -> str:
    """The whole report as one HTML string (renders every figure; may raise)."""
    names = [{"loss_floor": "L_inf"}.get(n, n) for n in fit.spec.law_def.natural_names]
    figures = [] if len(fit.spec.covariate_columns) > 1 else [
        ("Fit and forecast bands", "Law median with 90% credible band (dark) and 90% predictive band of "
         "a new run (light) per cell; grey: extrapolation beyond the cell's largest fitted run"
         + ("; red crosses: held-out runs." if heldout is not None else "."),
         lambda: plots.plot_fit_bands(fit, heldout=heldout))]
    figures += [("Parameter posteriors", f"{', '.join(names[:-1])} and {names[-1]} per cell.",
                 lambda: plots.plot_param_posteriors(fit)),
               ("Rank plots", "Rank ECDF differences per chain for the hyper-parameters: lines outside the "
                "band (black) mean the chains disagree.", lambda: plots.plot_trace_rank(fit)),
               ("Posterior predictive check", "Observed runs against their posterior predictive intervals.",
                lambda: plots.plot_ppc(fit))]
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="meta">generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by bayescale</p>']
    parts += _data_section(fit)
    parts += _diagnostics_section(fit)
    for heading, caption, make in figures:
        parts += [f"<h2>{html.escape(heading)}</h2>", f"<p>{html.escape(caption)}</p>", _png(make())]
    if allocation is None:
        allocation = fit.spec.law == "chinchilla"
    if allocation:
        parts += _allocation_section(fit, allocation if isinstance(allocation, dict) else {})
    parts += ["<h2>Parameter summary</h2>", _table(fit.summary(), index=False)]
    if tables:
        parts.append("<h2>Tables</h2>")
        for name, df in tables.items():
            parts += [f"<h3>{html.escape(str(name))}</h3>", _table(df)]
    if notes:
        parts += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(parts) + "\n</body>\n</html>\n")


def write_report(fit, path, *, title: str = "bayescale report", heldout: pd.DataFrame | None = None,
                 tables: dict[str, pd.DataFrame] | None = None, notes: list[str] | None = None,
                 allocation: dict | bool | None = None) -> Path:
    """Write one self-contained HTML report (figures embedded as PNG) and return its path.

    ``allocation``: the "Compute-optimal allocation" section (IsoFLOP curves, optimal frontier,
    tables) of a two-variable fit: None (default) adds it for ``law="chinchilla"`` fits, False
    leaves it out, a dict sets its options (``ALLOCATION_OPTIONS``: ``budgets`` (IsoFLOP curves and
    table), ``compute_range`` (frontier), ``table_budgets``, ``target_losses``, ``group``,
    ``interval`` (0.9), ``flops_per_param_token`` (6), ``references`` {label: {E, A, B, alpha, beta}}).

    The report is rendered in memory, written to a temporary file in the target directory and
    moved onto ``path`` with ``os.replace``: a failure never leaves a half-written report and
    never destroys an existing one. The parent directory is created if needed.
    Usage: ``write_report(fit, "out/report.html", heldout=test_df, tables={"coverage": cov}, notes=["..."])``
    """
    text = _render(fit, title, heldout, tables, notes, allocation)
    return atomic_write_bytes(path, text.encode("utf-8"))
