"""Reports written after every run or stage: JSON, JUnit XML, Markdown, HTML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from legion_ci.atomic import write_atomic
from legion_ci.records import RunRecord


def summary(record: RunRecord) -> dict[str, Any]:
    data = record.to_dict()
    data["outputs"] = {name: stage.outputs for name, stage in record.stages.items()}
    return data


def redacted(record: RunRecord) -> RunRecord:
    """A copy of the record with every secret redacted, for rendering: redacting the data
    before it is rendered means JSON, XML or Markdown escaping cannot disguise a secret.
    Identifiers a secret shares are kept for what the tool reads back (GITHUB_OUTPUT); what
    people read (reports, the console, the step summary) is redacted again as text."""
    from legion_ci.records import RECORD_IDENTIFIER_FIELDS
    from legion_ci.redact import ACTIVE

    return RunRecord.from_dict(
        ACTIVE.fields(record.to_dict(), RECORD_IDENTIFIER_FIELDS, record.kept_identifiers())
    )


def write_reports(record: RunRecord) -> Path:
    """Write summary.json, junit.xml, summary.md and summary.html into the run folder and the
    workspace."""
    from legion_ci.reports.html import render_html
    from legion_ci.reports.junit import render_junit
    from legion_ci.reports.markdown import render_markdown

    # Where to write comes from the record as it is (a secret may share the workspace's path);
    # what is written, from the redacted copy.
    folder, workspace = record.folder / "reports", Path(record.workspace)
    record = redacted(record)
    reports = {
        "summary.json": json.dumps(summary(record), indent=2),
        "junit.xml": render_junit(record),
        "summary.md": render_markdown(record),
        "summary.html": render_html(record),
    }
    # The run's own copy, and the latest run's at a stable path for CI globs.
    for target in (folder, workspace / "reports"):
        for name, text in reports.items():
            write_atomic(target / name, text)
    return folder
