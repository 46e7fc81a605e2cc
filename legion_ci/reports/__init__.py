"""Reports written after every run or stage: JSON, JUnit XML, Markdown, GitHub outputs."""

from __future__ import annotations

import json
import shutil
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
    write_atomic(folder / "summary.json", clean(json.dumps(summary(record), indent=2)))
    write_atomic(folder / "junit.xml", clean(render_junit(record)))
    write_atomic(folder / "summary.md", clean(render_markdown(record)))
    latest = Path(record.workspace) / "reports"
    latest.mkdir(parents=True, exist_ok=True)
    for name in ("summary.json", "junit.xml", "summary.md"):
        tmp = latest / f".{name}.tmp"
        shutil.copyfile(folder / name, tmp)
        tmp.replace(latest / name)
    return folder
