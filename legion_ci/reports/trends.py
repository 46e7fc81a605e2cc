"""The gated metrics of a model's recent runs against the baseline, as Mermaid charts.

GitHub renders a ```mermaid block natively in job summaries and pull request comments, so the
trend needs no image to host. Mermaid's `xychart-beta` has no legend: each chart holds one
metric, the runs as bars and the baseline as a line, and the title says which is which.
"""

from __future__ import annotations

import math
from pathlib import Path

from legion_ci.records import RunRecord, list_records

RECENT_RUNS = 10


def _num(value: float) -> str:
    return f"{value:.6g}"


def _label(text: str) -> str:
    # Mermaid strings cannot escape a double quote; metric names rarely hold one.
    return text.replace('"', "'")


def gated_metrics(record: RunRecord) -> list[str]:
    """The metrics the train stage gates on, in the order the gates name them."""
    train = record.stages.get("train")
    if train is None:
        return []
    return list(dict.fromkeys(g["metric"] for g in train.gates if "metric" in g))


def recent_runs(
    record: RunRecord, history: list[RunRecord] | None = None, limit: int = RECENT_RUNS
) -> list[RunRecord]:
    """This model's runs with train metrics, oldest first, ending with `record` itself."""
    if history is None:
        history = list_records(Path(record.workspace))
    runs = [
        r
        for r in history
        if r.id != record.id
        and r.model.get("name") == record.model.get("name")
        and r.stages.get("train") is not None
        and r.stages["train"].metrics
    ]
    return [*runs, record][-limit:]


def metric_points(metric: str, runs: list[RunRecord]) -> list[tuple[str, float]]:
    """(run id, value) of each run with a finite value of the train metric, in order."""
    return [
        (r.id, r.stages["train"].metrics[metric])
        for r in runs
        if math.isfinite(r.stages["train"].metrics.get(metric, math.nan))
    ]


def _chart(metric: str, runs: list[RunRecord], baseline: float | None) -> list[str]:
    points = metric_points(metric, runs)
    if not points:
        return []
    values = [v for _, v in points] + ([baseline] if baseline is not None else [])
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or abs(high) * 0.1 or 1.0
    # Bars grow from the axis minimum: start at zero for non-negative metrics so that their
    # heights compare, otherwise just below the lowest value.
    floor = 0.0 if low >= 0 else low - pad
    title = f"{metric}: last {len(points)} run{'s' if len(points) != 1 else ''} (bars)"
    if baseline is not None:
        title += f", baseline {_num(baseline)} (line)"
    lines = [
        "```mermaid",
        "xychart-beta",
        f'    title "{_label(title)}"',
        # Run ids end with a random suffix, unique enough to tell the bars apart.
        "    x-axis [" + ", ".join(f'"{run_id[-6:]}"' for run_id, _ in points) + "]",
        f'    y-axis "{_label(metric)}" {_num(floor)} --> {_num(high + pad)}',
        "    bar [" + ", ".join(_num(v) for _, v in points) + "]",
    ]
    if baseline is not None:
        lines.append("    line [" + ", ".join(_num(baseline) for _ in points) + "]")
    lines.append("```")
    return lines


def render_trends(
    record: RunRecord, history: list[RunRecord] | None = None, limit: int = RECENT_RUNS
) -> str:
    """A Markdown section with one chart per gated metric, or "" without gates or metrics."""
    metrics = gated_metrics(record)
    train = record.stages.get("train")
    if not metrics or train is None or not train.metrics:
        return ""
    runs = recent_runs(record, history, limit)
    baseline = (train.baseline or {}).get("metrics") or {}
    charts: list[str] = []
    for metric in metrics:
        value = baseline.get(metric)
        chart = _chart(metric, runs, float(value) if isinstance(value, (int, float)) else None)
        if chart:
            charts += ["", *chart]
    if not charts:
        return ""
    return "\n".join(["### train trend", *charts]) + "\n"
