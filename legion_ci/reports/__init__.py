"""Reports written after every run or stage: JSON, JUnit XML, Markdown, GitHub outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from legion_ci.atomic import write_atomic
from legion_ci.runner.records import RunRecord


def summary(record: RunRecord) -> dict[str, Any]:
    data = record.to_dict()
    data["outputs"] = {name: stage.outputs for name, stage in record.stages.items()}
    return data


def write_reports(record: RunRecord, redact: Any = None) -> Path:
    """Write summary.json, junit.xml and summary.md into the run folder and the workspace."""
    from legion_ci.reports.junit import render_junit
    from legion_ci.reports.markdown import render_markdown

    def clean(text: str) -> str:
        return redact(text) if redact else text

    folder = record.folder / "reports"
    reports = {
        "summary.json": clean(json.dumps(summary(record), indent=2)),
        "junit.xml": clean(render_junit(record)),
        "summary.md": clean(render_markdown(record)),
    }
    # The run's own copy, and the latest run's at a stable path for CI globs.
    for target in (folder, Path(record.workspace) / "reports"):
        for name, text in reports.items():
            write_atomic(target / name, text)
    return folder
