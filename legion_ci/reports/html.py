"""summary.html: one self-contained page for hosts that cannot draw Mermaid (Jenkins, GitLab).

The stage table, the gates, and for each gated metric its recent runs against the baseline as
an inline SVG chart rendered by matplotlib (Agg, imported only here, when a chart is drawn: it
costs about a second). No script, no stylesheet or font from anywhere else: the page opens
from an artifact store or a file as it is. The record is redacted before it gets here, and
every text is HTML-escaped (matplotlib escapes what it writes into the SVG).
"""

from __future__ import annotations

import html
import io

from legion_ci.records import RunRecord
from legion_ci.reports.trends import gated_metrics, metric_points, recent_runs

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: left; }
.failed, .cancelled { color: #b00; } .succeeded { color: #070; }
figure { margin: 1em 0; } svg { max-width: 100%; height: auto; }
"""


def chart_svg(metric: str, runs: list[RunRecord], baseline: float | None) -> str:
    """One metric over `runs` (one marker per run, oldest first) and the baseline as a
    dashed line; an <svg> element, or "" when no run has the metric. The run markers are in
    the SVG group `runs-<metric>`, the baseline in `baseline-<metric>`."""
    points = metric_points(metric, runs)
    if not points:
        return ""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    settings = {
        # Without a salt, matplotlib makes SVG ids from random data: the same run would give
        # a different page each time.
        "svg.hashsalt": "legion-ci",
        # Text stays text: no glyph outlines, the page stays small, the names searchable.
        "svg.fonttype": "none",
    }
    # rc_context and a canvas of its own (Agg, no GUI), not pyplot and matplotlib.use():
    # nothing global changes for a program that calls legion-ci's API in-process.
    with matplotlib.rc_context(settings):
        figure = Figure(figsize=(6, 2.6))
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        labels = [run_id[-6:] for run_id, _ in points]
        (line,) = axes.plot(labels, [v for _, v in points], marker="o", label=metric)
        line.set_gid(f"runs-{metric}")
        if baseline is not None:
            guide = axes.axhline(baseline, linestyle="--", color="gray", label="baseline")
            guide.set_gid(f"baseline-{metric}")
        axes.set_title(f"{metric}: last {len(points)} run{'s' if len(points) != 1 else ''}")
        axes.legend(loc="best", fontsize="small")
        axes.tick_params(axis="x", labelsize="small")
        figure.tight_layout()
        buffer = io.StringIO()
        # No metadata block (creator, date): the page holds the chart and nothing else.
        figure.savefig(
            buffer,
            format="svg",
            metadata={"Creator": None, "Date": None, "Format": None, "Type": None},
        )
    text = buffer.getvalue()
    # The <svg> element alone: an XML declaration or DOCTYPE is not allowed inside HTML.
    return text[text.index("<svg") :]


def render_html(record: RunRecord) -> str:
    e = html.escape
    model = record.model
    title = f"legion-ci: {model.get('name', '')} {model.get('version', '')} — {record.status}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>Run <code>{e(record.id)}</code></p>",
        '<table id="stages"><tr><th>stage</th><th>integration</th><th>status</th>'
        "<th>duration</th><th>error</th></tr>",
    ]
    for name, stage in record.stages.items():
        duration = f"{stage.duration_s:.1f} s" if stage.duration_s is not None else ""
        error = stage.error.splitlines()[0] if stage.error else ""
        parts.append(
            f"<tr><td>{e(name)}</td><td>{e(str(stage.integration or ''))}</td>"
            f'<td class="{e(stage.status)}">{e(stage.status)}</td><td>{duration}</td>'
            f"<td>{e(error)}</td></tr>"
        )
    parts.append("</table>")
    train = record.stages.get("train")
    if train is not None and train.gates:
        parts += ['<h2>Gates</h2><ul id="gates">']
        parts += [
            f'<li class="{"succeeded" if g.get("ok") else "failed"}">'
            f"{'passed' if g.get('ok') else 'FAILED'}: {e(str(g.get('message', '')))}</li>"
            for g in train.gates
        ]
        parts.append("</ul>")
    if train is not None and train.metrics:
        runs = recent_runs(record)
        baseline = (train.baseline or {}).get("metrics") or {}
        charts = []
        for metric in gated_metrics(record):
            value = baseline.get(metric)
            svg = chart_svg(metric, runs, float(value) if isinstance(value, (int, float)) else None)
            if svg:
                charts.append(f'<figure id="chart-{e(metric)}">{svg}</figure>')
        if charts:
            parts += ["<h2>Gated metrics: recent runs and the baseline</h2>", *charts]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
