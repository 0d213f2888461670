"""HTML report of a bounded-metric fit: diagnostics, emergence curves with bands, thresholds, tables.

Usage:
    from bayescale.metrics_report import write_metric_report
    write_metric_report(mfit, "reports/emergence.html", tables={"errors": df}, extra_fits={"loss law": fit})
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .metrics import MetricFit, plot_emergence
from .io import atomic_write_bytes
from .report import _CSS, _png, _table

__all__ = ["write_metric_report", "emergence_section"]


def _diag_html(name: str, diag) -> list[str]:
    problems = diag.problems()
    cls = "problems" if problems else "ok"
    body = html.escape(str(diag)).replace("\n", "<br>")
    return [f"<h3>{html.escape(name)}</h3>", f'<div class="{cls}">{body}</div>']


def emergence_section(mfit: MetricFit, groups=None, extend_to: float | None = None, level: float = 0.1,
                      max_panels: int = 36) -> list[str]:
    """HTML parts: emergence curves (90% bands) and the threshold table. Usage: ``"".join(emergence_section(mfit))``."""
    unit = "scale" if mfit.spec.link == "log" else "loss"
    return ["<h2>Emergence curves</h2>",
            f"<p>Expected metric, median and 90% credible band, against the {unit} ({html.escape(mfit.spec.x)}); "
            "dots: data; dotted: chance; dashed: median threshold "
            f"({level:.0%} of the way from chance to ceiling) when it lies in the data; titles give the verdict.</p>",
            _png(plot_emergence(mfit, groups=groups, extend_to=extend_to, level=level, max_panels=max_panels)),
            "<h2>Emergence thresholds</h2>",
            "<p>'not emerged in range': the threshold lies beyond the data with posterior probability "
            "p_above_lower_bound; no threshold value is given, only that bound.</p>",
            _table(mfit.thresholds(), index=False)]


def write_metric_report(mfit: MetricFit, path, *, title: str = "bayescale metric report", tables: dict | None = None,
                        extra_fits: dict | None = None, notes: list[str] | None = None, groups=None,
                        extend_to: float | None = None, emergence: bool = True) -> Path:
    """Write a self-contained HTML report of a ``MetricFit`` (atomic write) and return its path.

    ``extra_fits``: {name: fit with ``.diagnostics``} shown in the diagnostics section (e.g. the loss law
    of a chained forecast). ``emergence``: include the emergence curves and threshold table.
    Usage: ``write_metric_report(mfit, "out.html", tables={"coverage": df})``
    """
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="meta">generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by bayescale</p>',
             "<h2>Data</h2>",
             f"<p>{len(mfit.data)} rows, {len(mfit.spec.cells)} cells ({', '.join(mfit.spec.groups) or 'one curve'}), "
             f"covariate {html.escape(mfit.spec.x)} (link '{mfit.spec.link}'), likelihood "
             f"'{mfit.spec.likelihood}', ceiling {mfit.spec.ceiling}.</p>",
             "<h2>Diagnostics</h2>"]
    parts += _diag_html("metric law", mfit.diagnostics)
    for name, fit in (extra_fits or {}).items():
        parts += _diag_html(name, fit.diagnostics)
    if emergence:
        parts += emergence_section(mfit, groups=groups, extend_to=extend_to)
    if tables:
        parts.append("<h2>Tables</h2>")
        for name, df in tables.items():
            parts += [f"<h3>{html.escape(str(name))}</h3>", _table(pd.DataFrame(df))]
    if notes:
        parts += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>"]
    text = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(parts) + "\n</body>\n</html>\n")
    return atomic_write_bytes(path, text.encode("utf-8"))
