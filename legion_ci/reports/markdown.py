"""The Markdown summary: stages, outputs, metrics with their baseline deltas, gates."""

from __future__ import annotations

from legion_ci.records import RunRecord

_ICON = {"succeeded": "✅", "failed": "❌", "cancelled": "⛔", "skipped": "⏭️", "running": "⏳"}


def _num(value: float) -> str:
    return f"{value:.6g}"


def render_markdown(record: RunRecord) -> str:
    model = record.model
    lines = [
        f"## legion-ci: {model['name']} {model['version']} — {record.status}",
        "",
        f"Run `{record.id}`"
        + (f" at commit `{record.git_commit[:12]}`" if record.git_commit else ""),
        "",
        "| stage | integration | status | duration |",
        "| --- | --- | --- | --- |",
    ]
    for name, stage in record.stages.items():
        duration = f"{stage.duration_s:.1f} s" if stage.duration_s is not None else ""
        lines.append(
            f"| {name} | {stage.integration} | {_ICON.get(stage.status, '')} {stage.status}"
            f" | {duration} |"
        )
    for name, stage in record.stages.items():
        if stage.error:
            lines += ["", f"**{name} failed:** `{stage.error.splitlines()[0]}`"]
        if stage.metrics:
            base = (stage.baseline or {}).get("metrics") or {}
            source = (stage.baseline or {}).get("source")
            lines += ["", f"### {name} metrics", ""]
            if source:
                lines += [
                    f"| metric | value | baseline ({source}) | delta |",
                    "| --- | --- | --- | --- |",
                ]
            else:
                lines += ["| metric | value |", "| --- | --- |"]
            for metric, value in sorted(stage.metrics.items()):
                if source:
                    if metric in base:
                        delta = value - base[metric]
                        lines.append(
                            f"| {metric} | {_num(value)} | {_num(base[metric])}"
                            f" | {'+' if delta >= 0 else ''}{_num(delta)} |"
                        )
                    else:
                        lines.append(f"| {metric} | {_num(value)} | — | — |")
                else:
                    lines.append(f"| {metric} | {_num(value)} |")
        if stage.gates:
            lines += ["", f"### {name} gates", ""]
            lines += [f"- {'✅' if g['ok'] else '❌'} {g['message']}" for g in stage.gates]
        if stage.tags:
            lines += ["", f"<details><summary>{name} tags</summary>", ""]
            lines += [f"- `{k}`: `{v}`" for k, v in sorted(stage.tags.items())]
            lines += ["", "</details>"]
        shown = {k: v for k, v in stage.outputs.items() if isinstance(v, (str, int, float))}
        if shown:
            lines += ["", f"### {name} outputs", ""]
            lines += [f"- `{k}`: `{v}`" for k, v in shown.items()]
    from legion_ci.reports.trends import render_trends

    trend = render_trends(record)
    return "\n".join(lines) + "\n" + (f"\n{trend}" if trend else "")
